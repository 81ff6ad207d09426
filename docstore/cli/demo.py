"""``immudoc demo``: a clinical trial told step by step on a temporary embedded database.

The same story as ``examples/clinical_trials.py``, shortened. The library is imported inside
:func:`run_demo`, so importing this module costs nothing.
"""

from __future__ import annotations

import base64
import json
import os
import struct
import tempfile
import time
import zlib
from collections.abc import Callable

PATIENT_SCHEMA = {
    "type": "object",
    "required": ["name", "site", "consent"],
    "properties": {
        "name": {"type": "string"},
        "site": {"enum": ["Oslo", "Bergen"]},
        "consent": {"type": "boolean"},
    },
}
VISIT_SCHEMA = {
    "type": "object",
    "required": ["patient", "day", "dosage"],
    "properties": {
        "patient": {"type": "string"},
        "day": {"type": "integer", "minimum": 0},
        "dosage": {
            "type": "object",
            "required": ["drug", "mg"],
            "properties": {"drug": {"type": "string"}, "mg": {"type": "number", "exclusiveMinimum": 0}},
        },
    },
}
PATIENTS = [  # id, visit id, name, site, first dose (mg)
    ("P-001", "V-0001", "Astrid Berg", "Oslo", 50),
    ("P-002", "V-0002", "Nils Dahl", "Oslo", 50),
    ("P-003", "V-0003", "Ingrid Lie", "Bergen", 25),
]


def run_demo(say: Callable[[str], None], directory: str | None = None) -> None:
    """Tell the story, printing each step with ``say``; in ``directory`` or a temporary one."""
    if directory is not None:
        _story(say, directory)
        return
    with tempfile.TemporaryDirectory(prefix="immudoc-demo-") as tmp:
        _story(say, tmp)


def _story(say: Callable[[str], None], directory: str) -> None:
    import docstore
    from docstore.proofs.trust import read_trust_file, write_checkpoint_file

    started = time.perf_counter()
    path = os.path.join(directory, "trial")
    state_file = os.path.join(directory, "auditor.checkpoint")
    say("immudoc demo: a clinical trial on a verifiable document database")
    say(f"(a temporary database in {path})")

    with docstore.open(path) as db:
        db.create_collection("patients", schema=PATIENT_SCHEMA, indexes=["site"])
        db.create_collection("visits", schema=VISIT_SCHEMA, indexes=["patient"])
        say("\n1. Two collections with JSON schemas: patients (indexed by site), visits (by patient)")

        with db.transaction() as tx:
            for pid, vid, name, site, mg in PATIENTS:
                tx["patients"].insert({"_id": pid, "name": name, "site": site, "consent": True})
                tx["visits"].insert({"_id": vid, "patient": pid, "day": 0, "dosage": {"drug": "Xanomeline", "mg": mg}})
        say(f"2. Enrolled 3 patients with their first visits: 6 documents in one atomic transaction (transaction {tx.tx_id})")

        try:
            db["visits"].insert({"patient": "P-001", "day": 7, "dosage": {"drug": "Xanomeline", "mg": "fifty"}})
        except docstore.SchemaError as e:
            say(f"3. The schema refuses a bad visit: {e}")

        trusted = db.state()
        key = db.verifier_key()
        write_checkpoint_file(state_file, db.checkpoint(trusted))
        say(f"4. The auditor saves the signed checkpoint it trusts (transaction {trusted.tx_id}) and pins the "
            f"database's verifier key {key}")

        db["visits"].update("V-0002", {"$set": {"dosage.mg": 25, "correction": "transcription error"}},
                            user="dr.lee", reason="transcription error on the paper form")
        db["patients"].update("P-003", {"$set": {"consent": False}}, user="coordinator", reason="participant withdrew consent")
        say("5. A dosage correction (V-0002: 50 mg -> 25 mg) and a consent withdrawal (P-003): new revisions, "
            "each committed with who made it and why")

        revs = db["patients"].history("P-003")
        say("6. History of P-003: " + "; ".join(
            f"revision {r.revision} at transaction {r.tx_id}: consent={json.dumps((r.document or {}).get('consent'))}"
            + (f" (by {r.user}: {r.reason})" if r.user else "") for r in revs
        ))

        then = db["visits"].get("V-0002", at_tx=trusted.tx_id)["dosage"]["mg"]
        high_then = db["visits"].count({"dosage.mg": {"$gte": 50}}, at_tx=trusted.tx_id)
        high_now = db["visits"].count({"dosage.mg": {"$gte": 50}})
        say(f"7. Time travel to transaction {trusted.tx_id}: V-0002 had {then} mg; visits at 50 mg or more: "
            f"{high_then} then, {high_now} now")

        proof_text = db["visits"].prove("V-0002", "/dosage/mg", known_state=trusted).to_json(indent=True)
        disclosed = json.loads(proof_text)["properties"]
        hidden = [s for s in ("Xanomeline", "P-002", "Nils Dahl", "transcription error") if s in proof_text]
        say(f"8. A proof of V-0002's dosage for the auditor: {len(proof_text)} bytes of JSON disclosing only "
            f"{[p[0] + ' = ' + p[1] for p in disclosed]}; drug, patient, name, note in it: {hidden or 'none'}")
        latest_text = db["visits"].prove_latest("V-0002", "/dosage/mg", known_state=trusted).to_json()
        absent_text = db["patients"].prove_absent("P-004", known_state=trusted).to_json()

    saved = read_trust_file(state_file).checkpoint
    assert saved is not None, "the auditor saved a signed checkpoint"
    value = docstore.verify(docstore.proofs.load(proof_text), saved, verifier_keys=[key])
    say(f"9. The auditor verifies it offline, with only the proof, the saved checkpoint and the pinned key: "
        f"/dosage/mg = {value} (the proof's newer state is signed by that key and extends the saved one)")

    current = docstore.verify(latest_text, saved, verifier_keys=[key])
    assert docstore.verify(absent_text, saved, verifier_keys=[key]) is None
    say(f"10. Two proofs of the state now, checked the same way: V-0002's /dosage/mg is {current} in its latest "
        "revision (no later one hides), and there is no patient P-004: neither an inclusion proof nor immudb "
        "can show either")

    forged = json.loads(proof_text)
    forged["claim"] = 50
    try:
        docstore.verify(json.dumps(forged), saved, verifier_keys=[key])
    except docstore.VerificationError as e:
        say(f"11. A proof edited to claim 50 mg is rejected: {e}")

    salt, encoded = base64.b64decode(disclosed[0][2]), disclosed[0][1].encode()
    _rewrite_value(os.path.join(path, "ledger", "txlog"), salt + encoded, b"75")
    say("12. Someone rewrites the stored dosage on disk to 75 mg, fixing the record's checksum:")
    with docstore.open(path, readonly=True) as db:
        say(f"    a plain read still serves {db['visits'].get('V-0002')['dosage']['mg']} mg from its cache;")
        say(f"    `immudoc audit` would say: {db.audit()}")
    try:
        with docstore.open(path, readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as reader:
            reader["visits"].get("V-0002")
        say("    the verifying reader accepted it (unexpected!)")
    except (docstore.VerificationError, docstore.CorruptDataError) as e:
        say(f"    a verifying reader refuses it: {e}")

    say(f"\nDone in {(time.perf_counter() - started) * 1000:.0f} ms. Try it yourself: `immudoc --help`, and the "
        "walkthrough in the README.")


def _rewrite_value(txlog: str, stored: bytes, new_value: bytes) -> None:
    """Overwrite the value after a 16-byte salt in the transaction log and fix the CRC of its
    record (framing in docs/storage.md), as a careful attacker would."""
    rewrite_in_log(txlog, stored, 16, new_value)


def rewrite_in_log(txlog: str, find: bytes, skip: int, new: bytes) -> None:
    """Overwrite the bytes ``skip`` bytes into the first occurrence of ``find`` in the
    transaction log with ``new``, and fix the CRC of its record (an attacker's edit)."""
    with open(txlog, "rb") as f:
        data = bytearray(f.read())
    at = data.index(find) + skip
    data[at : at + len(new)] = new
    pos = 0
    while pos + 12 <= len(data):
        payload_len, extra_len, _crc = struct.unpack_from(">III", data, pos)
        end = pos + 12 + payload_len + extra_len
        if pos <= at < end:
            struct.pack_into(">I", data, pos + 8, zlib.crc32(bytes(data[pos + 12 : end])))
            break
        pos = end
    with open(txlog, "wb") as f:
        f.write(data)
