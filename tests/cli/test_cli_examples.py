"""The examples and `immudoc demo` run as real processes and tell their stories."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _example(name: str, *args: str):
    p = subprocess.run(
        [sys.executable, str(REPO / "examples" / name), *args],
        capture_output=True, text=True, timeout=120, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert p.returncode == 0, p.stdout + p.stderr
    return p.stdout


def test_clinical_trials(tmp_path):
    out = _example("clinical_trials.py", str(tmp_path))
    assert os.path.isdir(tmp_path / "trial-db" / "ledger")
    for line in [
        "Oslo: enrolled ['P-001', 'P-002'] in transaction 3",
        "Bergen: enrolled ['P-003'] in transaction 4",
        'SchemaError: document \'V-0005\' violates the collection schema: /dosage/mg: "fifty" is not of type "number"',
        "visits stored: 3 (V-0004 was not written either)",
        "V-0002 now: {'drug': 'Xanomeline', 'mg': 25}",
        "revision 1 (transaction 4): consent=True withdrawn_on=None by coordinator@bergen: enrolment",
        "revision 2 (transaction 6): consent=False withdrawn_on=2026-03-02 by coordinator@bergen: participant withdrew consent",
        "  transaction 5: dr.lee@oslo: 50 mg was a transcription error {'meaning': 'correction', 'source': 'paper CRF p. 4'}",
        "ReasonRequiredError: collection 'visits' requires a reason for every change of a document: give reason=... (--reason) to change 'V-0002'",
        "then: {'drug': 'Xanomeline', 'mg': 50}",
        "visits at 50 mg or more then: ['V-0001', 'V-0002']  now: ['V-0001', 'V-0004']",
        "consenting patients then: 3  now: 2",
        "drug, patient, name, notes or correction note in the proof: none",
        "verified: V-0002 /dosage/mg = 25 (against trusted state 4: the proof's newer state is signed by the pinned key, and the bundled consistency proof shows it extends the saved one)",
        "a plain read serves what is on disk: {'drug': 'Xanomeline', 'mg': 75}",
        "done: the auditor learned one dosage, verified it, and caught both forgeries",
        "erased 4 stored values in 2 revisions (transaction 8)",
        "her visits stay: ['V-0003']",
        "erasure record: transaction 8 by dpo@sponsor: erasure request of 2026-03-05 ['/born', '/name']",
        "files of the database holding her name: none",
        "a proof of her name verifies as: {'$erased': 8}",
    ]:
        assert line in out, line
    assert "it discloses these properties: [['/dosage/mg', '25', '" in out
    assert "a proof edited to claim 50 mg: value check failed" in out
    assert "audit: audit FAILED" in out
    assert "a verifying reader refuses it:" in out


def test_nft_marketplace(tmp_path):
    out = _example("nft_marketplace.py", str(tmp_path))
    assert os.path.isdir(tmp_path / "market-db" / "ledger")
    for line in [
        "bob buys nft-1 (transaction 7): {'ada': 220, 'bob': 380}",
        "cy tries to buy it too: nft-1 is not for sale (nothing written)",
        "orders for nft-1: 2",
        "revision 3 (transaction 7): owned by bob  [bob: buy nft-1]",
        "revision 6 (transaction 11): owned by ada",
        "proof: ",
        "verified offline: at transaction 7 nft-1 was owned by bob",
        "a forged claim that cy owned it: value check failed",
        "done",
    ]:
        assert line in out, line
    results = [line for line in out.splitlines() if line.startswith(("cy: ", "dee: "))]
    assert len(results) == 2
    assert sum("won (transaction 10)" in r for r in results) == 1
    assert sum("lost: ConflictError" in r for r in results) == 1


def test_examples_default_to_a_temporary_directory():
    out = _example("nft_marketplace.py")
    assert "immudoc-nft-" in out.splitlines()[0]


def test_demo_tells_the_story(sub):
    r = sub(["demo"])
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert lines[0] == "immudoc demo: a clinical trial on a verifiable document database"
    for n in range(1, 13):
        assert any(line.startswith(f"{n}. ") for line in lines), n
    assert any(line.startswith("10. Two proofs of the state now") and "is 25 in its latest revision" in line for line in lines)
    assert any(line.startswith("9. The auditor verifies it offline, with only the proof, the saved checkpoint and the pinned key: /dosage/mg = 25") for line in lines)
    assert "    a verifying reader refuses it: " in r.out
    assert any(line.startswith("6. History of P-003") and "(by coordinator: participant withdrew consent)" in line
               for line in lines)
    assert lines[-1].startswith("Done in ")
