"""The real ``immudoc`` process: pipes, exit codes, offline verification, tampering, terminals."""

from __future__ import annotations

import json
import shutil
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_testlib import on_terminal

REPO = Path(__file__).resolve().parents[2]

HEAVY = ("kvcore", "docstore.database", "docstore.collections", "docstore.proofs", "jsonschema_rs", "grpc", "orjson")


def test_help_is_light():
    """`immudoc --help` loads typer, not the library (the library is imported by commands)."""
    code = (
        "import sys\n"
        "sys.argv = ['immudoc', '--help']\n"
        "from docstore.cli import main\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert e.code in (0, None), e.code\n"
        f"loaded = sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} or m in {HEAVY!r}"
        " or any(m.startswith(h + '.') for h in " + repr(HEAVY) + "))\n"
        "print(json.dumps(loaded), file=sys.stderr)\n"
    )
    p = subprocess.run([sys.executable, "-c", "import json\n" + code], capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=60)
    assert p.returncode == 0, p.stderr
    assert "Exit codes:" in p.stdout
    assert json.loads(p.stderr.strip().splitlines()[-1]) == []


@pytest.fixture
def env(tmp_path):
    return {"IMMUDOC_DB": str(tmp_path / "db")}


def test_walkthrough_through_pipes(tmp_path, env, sub, check_error, patients, patient_schema):
    run = sub
    assert run(["init"], env=env).json()["created"] is True
    r = run(["collection", "create", "patients", "--schema", "-", "--index", "site"], input=json.dumps(patient_schema), env=env)
    assert r.code == 0, r.err
    jsonl = "".join(json.dumps(p) + "\n" for p in patients)
    r = run(["insert", "patients"], input=jsonl, env=env)  # JSON lines on stdin
    assert r.json() == ["p1", "p2", "p3"]
    found = run(["find", "patients", '{"site": "Oslo"}', "--sort", "-age"], env=env)  # a pipe: JSON
    assert [d["_id"] for d in found.json()] == ["p1", "p3"]

    state = tmp_path / "trusted.json"
    assert run(["state", "--save", str(state)], env=env).code == 0
    key = run(["key"], env=env).out.strip()  # plain text in a pipe too: the auditor pins it
    assert run(["update", "patients", "p1", '{"$set": {"dosage.mg": 25}}'], env=env).json()["dosage"]["mg"] == 25
    revs = run(["history", "patients", "p1"], env=env).json()
    assert [r["document"]["dosage"]["mg"] for r in revs] == [50, 25]
    then = run(["get", "patients", "p1", "--at-tx", str(revs[0]["tx_id"])], env=env).json()
    assert then["dosage"]["mg"] == 50

    proof = tmp_path / "proof.json"
    r = run(["prove", "patients", "p1", "--pointer", "/dosage/mg", "--known-state", str(state), "-o", str(proof)], env=env)
    assert r.code == 0 and r.json()["claim"] == 25

    # the auditor: another directory, no database anywhere, only the proof and the state
    auditor = tmp_path / "auditor"
    auditor.mkdir()
    r = run(["verify", str(proof), "--state", str(state), "--key", key], cwd=auditor,
            env={"IMMUDOC_DB": str(auditor / "none")})
    assert r.code == 0, r.err
    assert r.json()["value"] == 25
    assert list(auditor.iterdir()) == []  # verify opened and created nothing
    r = run(["verify", "-", "--state", str(state)], input=proof.read_text(), cwd=auditor,
            env={"IMMUDOC_VERIFIER_KEY": key})
    assert r.code == 0 and list(auditor.iterdir()) == []
    r = run(["verify", "-", "--state", str(state)], input=proof.read_text(), cwd=auditor)
    check_error(r, 5, "signed by a key you pin")  # the proof's state is newer: without the key, refused

    forged = json.loads(proof.read_text())
    forged["claim"] = 50
    r = run(["verify", "-", "--state", str(state), "--key", key], input=json.dumps(forged), cwd=auditor)
    check_error(r, 5, "verification failed", "value check failed")

    r = run(["consistency", str(state)], env=env)
    assert r.code == 0 and r.json()["consistent"] is True

    exported = run(["export", "patients"], env=env)
    run(["collection", "create", "copy"], env=env)
    assert run(["import", "copy", "-"], input=exported.out, env=env).json()["imported"] == 3
    assert run(["export", "copy"], env=env).out == exported.out

    assert run(["audit"], env=env).json()["ok"] is True
    check_error(run(["get", "patients", "nobody"], env=env), 3, "nobody")
    check_error(run(["insert", "patients"], input='{"name": 5, "site": "Oslo"}', env=env), 4, "schema")


def _records(txlog: bytes):
    """(start, end) of each record of a txlog (framing in docs/storage.md)."""
    pos, out = 0, []
    while pos + 12 <= len(txlog):
        plen = int.from_bytes(txlog[pos : pos + 4], "big")
        elen = int.from_bytes(txlog[pos + 4 : pos + 8], "big")
        out.append((pos, pos + 12 + plen + elen))
        pos += 12 + plen + elen
    return out


def _build(path, patients, state_file=None):
    """Three patients, one transaction each (built with the library: only the checks below
    need the real process)."""
    import docstore
    from docstore.proofs.trust import write_state_file

    with docstore.open(path) as db:
        coll = db.create_collection("patients")
        for p in patients:
            coll.insert(p)
        if state_file is not None:
            write_state_file(state_file, db.state())


@pytest.fixture
def tampered_setup(tmp_path, env, sub, patients):
    state = tmp_path / "state.json"
    _build(env["IMMUDOC_DB"], patients, state)
    assert sub(["audit"], env=env).code == 0
    return os.path.join(env["IMMUDOC_DB"], "ledger", "txlog"), state


def test_audit_fails_with_exit_5_when_a_byte_is_flipped(tampered_setup, env, sub, check_error):
    txlog, _state = tampered_setup
    data = bytearray(open(txlog, "rb").read())
    start, end = _records(bytes(data))[1]  # p1's transaction, not the last one
    at = data.index(b"Ada", start, end)
    data[at] ^= 0x01
    open(txlog, "wb").write(data)
    r = sub(["audit"], env=env)
    check_error(r, 5)
    assert "transaction 2" in r.err or "corrupt" in r.err.lower() or "crc" in r.err.lower(), r.err


def test_audit_fails_when_a_value_is_rewritten_with_a_fixed_checksum(tampered_setup, env, sub, check_error):
    from docstore.cli.demo import _rewrite_value

    txlog, state = tampered_setup
    data = open(txlog, "rb").read()
    start, end = _records(data)[1]
    at = data.index(b'"Oslo"', start, end)
    _rewrite_value(txlog, data[at - 16 : at + 6], b'"Bergn"')  # same length; CRC recomputed
    check_error(sub(["get", "patients", "p1"], env=env), 5, "patients/p1")  # read from the log: it does not decode
    r = sub(["audit"], env=env)
    check_error(r, 5, "audit FAILED", "transaction 2")
    assert r.json()["first_bad_tx"] == 2
    r = sub(["audit", "--state", str(state), "-f", "table"], env=env)
    check_error(r, 5, "audit FAILED")
    # a proof made from the rewritten ledger does not verify against the saved state
    proof = sub(["prove", "patients", "p1", "--pointer", "/site"], env=env)
    if proof.code == 0:
        r = sub(["verify", "-", "--state", str(state)], input=proof.out)
        check_error(r, 5)
    else:
        check_error(proof, 5)


def test_consistency_fails_for_a_rewritten_history(tampered_setup, env, tmp_path, sub, check_error, patients):
    _txlog, state = tampered_setup
    other = tmp_path / "other"
    _build(other, patients)  # the same documents and transactions, but other salts and times: other roots
    oenv = {"IMMUDOC_DB": str(other)}
    check_error(sub(["consistency", str(state)], env=oenv), 5, "differs")


def _run_on_terminal(args, env, input_file=None, timeout=60):
    """Run the command with stdout and stderr on a pseudo-terminal; returns (code, output)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "200", "NO_COLOR": "1", **env}
    argv = [sys.executable, "-c", "from docstore.cli import main; main()", *args]
    if not input_file:
        return on_terminal(argv, env=full_env, timeout=timeout)
    with open(input_file, "rb") as stdin:
        return on_terminal(argv, env=full_env, stdin=stdin, timeout=timeout)


def test_a_terminal_gets_tables_and_a_progress_bar(tmp_path, env, sub):
    sub(["init"], env=env)
    sub(["collection", "create", "patients"], env=env)
    big = tmp_path / "big.jsonl"
    big.write_text("".join(json.dumps({"_id": f"d{i:05d}", "n": i}) + "\n" for i in range(1200)))
    code, out = _run_on_terminal(["insert", "patients", str(big)], env)
    assert code == 0, out
    assert "inserting (one transaction)" in out
    assert "d00000" in out and "d01199" in out and "[" not in out.split("d00000")[0].split("\n")[-1]
    code, out = _run_on_terminal(["find", "patients", '{"n": {"$lt": 2}}'], env)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0].split() == ["_id", "n"] and lines[-1] == "(2 documents)"
    code, out = _run_on_terminal(["find", "patients", '{"n": 1}', "--format", "json"], env)
    assert json.loads(out) == [{"_id": "d00001", "n": 1}]
    code, out = _run_on_terminal(["count", "patients"], env)
    assert out.strip() == "1200"


def test_audit_shows_progress_on_a_terminal(tmp_path):
    import docstore

    path = tmp_path / "many"
    with docstore.open(path) as db:
        coll = db.create_collection("c")
        for i in range(1000):
            coll.insert({"n": i})
    code, out = _run_on_terminal(["audit"], {"IMMUDOC_DB": str(path)})
    assert code == 0, out
    assert "auditing" in out and "100%" in out
    assert "audit passed: 1001 transactions, 3001 entries" in out
    code, out = _run_on_terminal(["audit", "--format", "json"], {"IMMUDOC_DB": str(path)})
    assert json.loads(out[out.index("{"):])["ok"] is True
    # derived state gone (as in a database of an earlier version): the first command builds it
    # once, with a bar a stage; the next one opens without building anything
    shutil.rmtree(path / "state.lmdb")
    shutil.rmtree(path / "ledger" / "index.lmdb")
    code, out = _run_on_terminal(["count", "c"], {"IMMUDOC_DB": str(path)})
    assert code == 0, out
    assert "building the key index from the log" in out and "building the derived state from the log" in out
    assert out.strip().splitlines()[-1] == "1000"
    assert (path / "state.lmdb").is_dir() and (path / "ledger" / "index.lmdb").is_dir()
    code, out = _run_on_terminal(["count", "c"], {"IMMUDOC_DB": str(path)})
    assert out.strip() == "1000"


def test_a_command_on_a_database_of_the_earlier_format_upgrades_it_once(tmp_path, sub):
    import tarfile

    path = tmp_path / "v1"
    with tarfile.open(REPO / "tests" / "fixtures" / "db-v1.tar.gz") as tar:
        tar.extractall(path, filter="data")
    first = sub(["--db", str(path), "get", "people", "p0"])
    assert first.code == 0 and first.json()["email"] == "e0", first.err
    assert "earlier version" in first.err and (path / "state.lmdb").is_dir() and not (path / "docs.snap").exists()
    again = sub(["--db", str(path), "get", "people", "p0"])
    assert again.code == 0 and again.json() == first.json() and again.err == ""
