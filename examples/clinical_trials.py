"""A clinical trial on immudoc: schemas, atomic enrolment, corrections as revisions, time
travel, and a proof of one dosage that an auditor checks offline without seeing anything else.

    python examples/clinical_trials.py [DIRECTORY]

The database is created in DIRECTORY (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import base64
import json
import os
import struct
import sys
import tempfile
import zlib

import docstore
from docstore.proofs.trust import read_trust_file, write_checkpoint_file

PATIENT_SCHEMA = {
    "type": "object",
    "required": ["screening_no", "name", "site", "consent"],
    "properties": {
        "screening_no": {"type": "string", "pattern": "^S-[0-9]{3}$"},
        "name": {"type": "string"},
        "born": {"type": "integer", "minimum": 1900},
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
        "notes": {"type": "string"},
    },
}

ENROLMENT = {
    "Oslo": [
        ("P-001", "V-0001", "S-101", "Astrid Berg", 1961, 50, "baseline ECG normal"),
        ("P-002", "V-0002", "S-102", "Nils Dahl", 1958, 50, "transcribed from a paper form"),
    ],
    "Bergen": [
        ("P-003", "V-0003", "S-201", "Ingrid Lie", 1970, 25, "mild headache reported"),
    ],
}


def step(title: str) -> None:
    print(f"\n== {title}")


def main(directory: str) -> None:
    path = os.path.join(directory, "trial-db")
    auditor_state = os.path.join(directory, "auditor.checkpoint")
    print(f"database: {path}")

    with docstore.open(path) as db:
        step("1. Collections with JSON schemas and indexes")
        # every change of a patient or a visit must say why (21 CFR Part 11's audit trail)
        db.create_collection("patients", schema=PATIENT_SCHEMA, indexes=[{"field": "screening_no", "unique": True}, "site"],
                             require_reason=True)
        db.create_collection("visits", schema=VISIT_SCHEMA, indexes=["patient"], require_reason=True)
        print("patients:", db["patients"].indexes())
        print("visits:  ", db["visits"].indexes())

        step("2. Enrolment: each site's patients and first visits in one atomic transaction")
        for site, people in ENROLMENT.items():
            with db.transaction(user=f"coordinator@{site.lower()}", reason="enrolment") as tx:
                for pid, visit_id, screening, name, born, mg, notes in people:
                    tx["patients"].insert(
                        {"_id": pid, "screening_no": screening, "name": name, "born": born, "site": site, "consent": True}
                    )
                    tx["visits"].insert(
                        {"_id": visit_id, "patient": pid, "day": 0, "dosage": {"drug": "Xanomeline", "mg": mg}, "notes": notes}
                    )
            print(f"{site}: enrolled {[p[0] for p in people]} in transaction {tx.tx_id}")

        step("3. The schema refuses a bad visit, and nothing of its transaction is written")
        try:
            with db.transaction() as tx:
                tx["visits"].insert({"_id": "V-0004", "patient": "P-001", "day": 7, "dosage": {"drug": "Xanomeline", "mg": 50}})
                tx["visits"].insert({"_id": "V-0005", "patient": "P-002", "day": 7, "dosage": {"drug": "Xanomeline", "mg": "fifty"}})
        except docstore.SchemaError as e:
            print("SchemaError:", e)
        print("visits stored:", db["visits"].count(), "(V-0004 was not written either)")

        step("4. The auditor saves the signed checkpoint it trusts, and pins the database's verifier key")
        key = db.verifier_key()  # handed to the auditor out of band (e.g. printed in the trial protocol)
        write_checkpoint_file(auditor_state, db.checkpoint())
        trusted = read_trust_file(auditor_state).state
        before_correction = trusted.tx_id
        print(f"{auditor_state}:\n{open(auditor_state).read()}verifier key: {key}")

        step("5. A dosage correction and a consent withdrawal: new revisions, nothing overwritten, each with who and why")
        try:
            db["visits"].update("V-0002", {"$set": {"dosage.mg": 25}})
        except docstore.ReasonRequiredError as e:
            print("ReasonRequiredError:", e)
        visit = db["visits"].update(
            "V-0002", {"$set": {"dosage.mg": 25}}, user="dr.lee@oslo", reason="50 mg was a transcription error",
            meta={"meaning": "correction", "source": "paper CRF p. 4"},
        )
        print("V-0002 now:", visit["dosage"])
        db["patients"].update("P-003", {"$set": {"consent": False, "withdrawn_on": "2026-03-02"}},
                              user="coordinator@bergen", reason="participant withdrew consent")
        db["visits"].insert({"_id": "V-0004", "patient": "P-001", "day": 7, "dosage": {"drug": "Xanomeline", "mg": 50}},
                            user="coordinator@oslo", reason="day-7 visit")

        step("6. The history of patient P-003: what changed, who changed it, when and why")
        for rev in db["patients"].history("P-003"):
            doc = rev.document or {}
            print(f"revision {rev.revision} (transaction {rev.tx_id}): consent={doc.get('consent')} withdrawn_on={doc.get('withdrawn_on')}"
                  f" by {rev.user}: {rev.reason}")
        print("the audit trail, newest first:")
        for r in db.log(limit=3):
            print(f"  transaction {r['tx_id']}: {r['user']}: {r['reason']}" + (f" {r['meta']}" if r["meta"] else ""))

        step(f"7. Time travel: the trial as of transaction {before_correction}, before the correction")
        print("then:", db["visits"].get("V-0002", at_tx=before_correction)["dosage"])
        print("now: ", db["visits"].get("V-0002")["dosage"])
        high_then = [v["_id"] for v in db["visits"].find({"dosage.mg": {"$gte": 50}}, at_tx=before_correction)]
        high_now = [v["_id"] for v in db["visits"].find({"dosage.mg": {"$gte": 50}})]
        print("visits at 50 mg or more then:", high_then, " now:", high_now)
        print("consenting patients then:", db["patients"].count({"consent": True}, at_tx=before_correction),
              " now:", db["patients"].count({"consent": True}))

        step("8. P-003 asks for her identifying data to be erased (GDPR art. 17): her name and birth year, in every revision")
        try:
            db["patients"].erase("P-003", ["/name", "/born"])
        except docstore.ReasonRequiredError as e:
            print("ReasonRequiredError:", e)
        done = db["patients"].erase("P-003", ["/name", "/born"], user="dpo@sponsor", reason="erasure request of 2026-03-05")
        print(f"erased {done.erased} stored values in {done.revisions} revisions (transaction {done.tx})")
        print("P-003 now:", db["patients"].get("P-003"))
        print("her visits stay:", [v["_id"] for v in db["visits"].find({"patient": "P-003"})])
        for rec in db["patients"].erasures("P-003"):
            print(f"erasure record: transaction {rec['tx_id']} by {rec['user']}: {rec['reason']} {rec['pointers']}")
        files = [os.path.join(d, f) for d, _dirs, names in os.walk(path) for f in names]
        print("files of the database holding her name:", [f for f in files if b"Ingrid Lie" in open(f, "rb").read()] or "none")
        erased = db["patients"].prove("P-003", "/name")
        print("a proof of her name verifies as:", docstore.verify(erased, db.state()))

        step("9. A proof of one dosage for the auditor (JSON text)")
        proof = db["visits"].prove("V-0002", "/dosage/mg", known_state=trusted)
        proof_text = proof.to_json(indent=True)
        print(f"{len(proof_text.encode())} bytes; it discloses these properties:",
              json.loads(proof_text)["properties"])
        secrets = ["Xanomeline", "P-002", "Nils Dahl", "transcription error", "transcribed from a paper form", "S-102"]
        leaked = [s for s in secrets if s in proof_text]
        print("drug, patient, name, notes or correction note in the proof:", leaked or "none")
        assert not leaked

    step("10. The auditor verifies it offline: no database, only the proof, the saved checkpoint and the key")
    saved = read_trust_file(auditor_state).checkpoint
    value = docstore.verify(docstore.proofs.load(proof_text), saved, verifier_keys=[key])
    print(f"verified: V-0002 /dosage/mg = {value} (against trusted state {trusted.tx_id}: the proof's newer state "
          "is signed by the pinned key, and the bundled consistency proof shows it extends the saved one)")

    step("11. Tampering is caught")
    forged = json.loads(proof_text)
    forged["claim"] = 50
    try:
        docstore.verify(json.dumps(forged), saved, verifier_keys=[key])
    except docstore.VerificationError as e:
        print("a proof edited to claim 50 mg:", e)

    # An insider rewrites the stored dosage on disk, and even fixes the record's checksum.
    stored = json.loads(proof_text)["properties"][0]
    tamper(os.path.join(path, "ledger", "txlog"), base64.b64decode(stored[2]) + stored[1].encode(), b"75")
    with docstore.open(path, readonly=True) as db:
        print("a plain read serves what is on disk:", db["visits"].get("V-0002")["dosage"])
        print("audit:", db.audit())
    try:
        with docstore.open(path, readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as reader:
            reader["visits"].get("V-0002")
    except (docstore.VerificationError, docstore.CorruptDataError) as e:
        print("a verifying reader refuses it:", e)
    print("\ndone: the auditor learned one dosage, verified it, and caught both forgeries")


def tamper(txlog: str, stored: bytes, new_value: bytes) -> None:
    """Overwrite a stored value (salt || encoded) in the transaction log and fix the record's
    CRC, as a careful attacker would (record framing: docs/storage.md)."""
    data = bytearray(open(txlog, "rb").read())
    at = data.index(stored) + 16  # after the salt
    data[at : at + len(new_value)] = new_value
    pos = 0
    while pos < len(data):
        payload_len, extra_len, _crc = struct.unpack_from(">III", data, pos)
        end = pos + 12 + payload_len + extra_len
        if pos <= at < end:
            struct.pack_into(">I", data, pos + 8, zlib.crc32(bytes(data[pos + 12 : end])))
            break
        pos = end
    with open(txlog, "wb") as f:
        f.write(data)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="immudoc-trial-") as tmp:
            main(tmp)
