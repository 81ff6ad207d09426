"""The embedded verifying reader (``docstore.open(..., verify=True)``): what it proves, what it
refuses, how its trusted state moves, and the database after a failed audit."""

from __future__ import annotations

import json
import warnings

import pytest

import docstore
import kvcore
from docstore import CorruptDataError, ProofUnavailableError, VerificationError
from docstore.proofs.trust import UnsignedStateWarning, read_trust_file, write_state_file


def _build(where):
    """A small database at ``where``: a directory, or a Place (tests/conftest.py)."""
    with (where.open() if hasattr(where, "backend") else docstore.open(where)) as db:
        c = db.create_collection("trials", schema={"type": "object"}, indexes=["site"])
        c.insert({"_id": "p1", "site": "Oslo", "dose": 5})
        c.insert({"_id": "p2", "site": "Bergen", "dose": 7})
        trusted = db.state()
        c.update("p1", {"$set": {"dose": 6}})
        return trusted, db.state(), db.verifier_key()


def test_reads_that_cannot_be_proven_refuse_unless_asked_not_to_verify(place, tmp_path):
    trusted, _now, key = _build(place)
    with place.open(readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as db:
        c = db["trials"]
        for read in (c.explain, c.info, lambda: c.count(at_tx=3), lambda: c.distinct("site", at_tx=3)):
            with pytest.raises(ProofUnavailableError, match="cannot be proven yet"):
                read()
        # a count and distinct values of the current state are proven complete (issue 16)
        assert c.count() == 2 and c.count({"site": "Oslo"}) == 1 and sorted(c.distinct("site")) == ["Bergen", "Oslo"]
        assert db.collections() == ["trials"]  # the list of collections, proven complete
        assert c.count(verify=False) == 2 and sorted(c.distinct("site", verify=False)) == ["Bergen", "Oslo"]
        assert c.explain({"site": "Oslo"}, verify=False)["plan"] == "index"
        assert c.info(verify=False)["count"] == 2 and db.collections(verify=False) == ["trials"]
        # what can be proven is: documents, history, the collection's definition
        assert c.get("p1")["dose"] == 6 and [d["_id"] for d in c.find({"site": "Oslo"})] == ["p1"]
        assert [r.document["dose"] for r in c.history("p1")] == [5, 6]
        assert c.schema == {"type": "object"} and c.indexes() == [{"field": "site", "unique": False}]


def test_a_newer_state_needs_the_pinned_key_or_an_explicit_opt_in(place, tmp_path):
    trusted, now, key = _build(place)
    f = tmp_path / "state.json"
    write_state_file(f, trusted)
    with place.open(readonly=True, verify=True, state_file=f) as db:
        # a get proves the revision is the current one: the current state must be signed, even
        # for a document unchanged since the trusted state (what is current is known only now)
        for doc_id in ("p1", "p2"):
            with pytest.raises(VerificationError, match="signed by a key you pin"):
                db["trials"].get(doc_id)
        assert db["trials"].get("p2", at_tx=trusted.tx_id)["dose"] == 7  # a past revision: no key needed
    assert read_trust_file(f).state == trusted
    with place.open(readonly=True, verify=True, state_file=f, verifier_key=key) as db:
        assert db["trials"].get("p1")["dose"] == 6
    record = read_trust_file(f)  # advanced to the signed checkpoint, the key pinned with it
    assert record.state == now and record.checkpoint is not None and record.verifier_keys == (key,)
    # a later reader needs no key argument: the file pins it
    with place.open(readonly=True, verify=True, state_file=f) as db:
        assert db.trusted_state == now and db["trials"].get("p1")["dose"] == 6
    # trust_unsigned: a consistency proof alone advances the state, and a warning says so
    g = tmp_path / "unsigned.json"
    write_state_file(g, trusted)
    with place.open(readonly=True, verify=True, state_file=g, trust_unsigned=True) as db:
        with pytest.warns(UnsignedStateWarning, match="without a signature"):
            assert db["trials"].get("p1")["dose"] == 6
    assert read_trust_file(g) == (now, None, ())


def test_the_empty_state_is_refused_unless_trusted_on_first_use(place, tmp_path):
    with place.open() as db:
        empty = db.state()
        db.create_collection("c").insert({"_id": "a"})
        key = db.verifier_key()
    assert empty.tx_id == 0
    with pytest.raises(VerificationError, match="transaction 0"):
        place.open(readonly=True, verify=True, trusted_state=empty)
    with place.open(readonly=True, verify=True, trusted_state=empty, verifier_key=key) as db:
        assert db["c"].get("a") == {"_id": "a"}  # every later state is signed by the pinned key
    f = tmp_path / "tofu.json"
    with place.open(readonly=True, verify=True, state_file=f, trust_on_first_use=True) as db:
        assert db["c"].get("a") == {"_id": "a"}
    record = read_trust_file(f)  # the current signed state and the database's key, pinned
    assert record.verifier_keys == (key,) and record.checkpoint is not None


def test_history_and_definitions_are_proven(place, tmp_path):
    trusted, _now, key = _build(place)
    # rewrite p1's first dose (5 -> 9) in the log, fixing the record's checksum
    from docstore.documents.records import SALT_BYTES  # noqa: F401  (documents.md: salt, then the value)

    with place.open(readonly=True) as db:
        stored = db["trials"].prove("p1", "/dose", at_tx=trusted.tx_id).properties[0]  # as written
    place.rewrite_value(stored.salt + stored.encoded, b"9")
    with place.open(readonly=True) as plain:
        assert [r.document["dose"] for r in plain["trials"].history("p1")][0] == 9  # served as stored
    with place.open(readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as db:
        with pytest.raises(VerificationError):
            db["trials"].history("p1")
        with pytest.raises(VerificationError):
            db["trials"].get("p1", at_tx=trusted.tx_id)


def test_a_definition_and_location_forged_in_the_derived_state_are_refused(tmp_path):
    """The derived state on disk rewritten through LMDB itself (a forger uses the real code):
    another schema, and p1's location pointed at its older revision. A plain reader serves
    both; a verifying one proves from the ledger and refuses or corrects them."""
    from docstore.documents.records import header_key
    from docstore.engine.store import Location, Store

    trusted, _now, key = _build(tmp_path / "db")
    with docstore.open(tmp_path / "db", readonly=True) as db:
        old = db.ledger.lookup(header_key("trials", "p1"), at_tx=trusted.tx_id)
    store = Store(str(tmp_path / "db"), readonly=False)
    with store.write() as txn:
        meta = dict(store.definition(txn, "trials"), schema={"type": "object", "required": ["forged"]})
        store.set_definition(txn, "trials", meta)
        n = store.location(txn, "trials", "p1").n
        store.put_location(txn, "trials", "p1", Location(old.tx_id, old.index, 1, n))
    store.close()
    with docstore.open(tmp_path / "db", readonly=True) as plain:
        assert plain["trials"].schema["required"] == ["forged"]
        assert plain["trials"].get("p1")["dose"] == 5  # the stale revision, served as current
    with docstore.open(tmp_path / "db", readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as db:
        with pytest.raises(VerificationError, match="definition"):
            db["trials"].schema
        assert db["trials"].get("p1")["dose"] == 6  # proven from the ledger, not the derived state
        # a find of the current state is proven from the state map (its root in the ledger):
        # the forged location is not what it reads
        assert [d["dose"] for d in db["trials"].find({"site": "Oslo"})] == [6]
        with db.transaction() as tx:
            with pytest.raises(VerificationError):
                tx["trials"].find_one({"site": "Oslo"})


def test_after_a_failed_audit_nothing_is_served_until_reopened(place):
    trusted, _now, key = _build(place)
    with place.open(readonly=True) as db:
        stored = db["trials"].prove("p2", "/dose").properties[0]
    place.rewrite_value(stored.salt + stored.encoded, b"8")
    for verify in (False, True):
        kw = {"verify": True, "trusted_state": trusted, "verifier_key": key} if verify else {}
        with place.open(readonly=True, **kw) as db:
            c = db["trials"]
            report = db.audit()
            assert not report.ok
            for read in (lambda: c.get("p1"), lambda: list(c.find()), lambda: c.history("p1"), db.state,
                         lambda: db["trials"], lambda: c.count(verify=False), db.checkpoint):
                with pytest.raises(CorruptDataError, match="audit failed"):
                    read()
            assert not db.audit().ok  # the audit itself may be run again
        with place.open(readonly=True) as db:  # a new handle reads again
            assert db["trials"].get("p1")["dose"] == 6


def test_a_write_through_a_verifying_database_is_read_back_proven(place, tmp_path):
    trusted, _now, key = _build(place)
    f = tmp_path / "state.json"
    write_state_file(f, trusted)
    with place.open(verify=True, state_file=f, verifier_key=key) as db:
        db["trials"].insert({"_id": "p9", "site": "Oslo"})
        assert db["trials"].get("p9") == {"_id": "p9", "site": "Oslo"}
        assert db.trusted_state == db.state()
    saved = json.loads(f.read_text())
    assert saved["tx_id"] == trusted.tx_id + 2 and saved["verifier_keys"] == [key]


def test_a_state_file_and_a_trusted_state_that_disagree_are_refused(place, tmp_path):
    trusted, now, key = _build(place)
    f = tmp_path / "state.json"
    write_state_file(f, now)
    forged = kvcore.State(trusted.tx_id, bytes(32))
    with place.open(readonly=True, verify=True, state_file=f, trusted_state=forged) as db:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with pytest.raises(VerificationError, match="not consistent"):
                db["trials"].get("p2")
