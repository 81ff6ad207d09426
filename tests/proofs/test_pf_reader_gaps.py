"""The embedded verifying reader, where a review found it weaker than promised: reads inside a
transaction, a ledger rolled back under a reader's state file, a given trusted state newer
than the saved one, commits racing a verified find, and the verifier's keyword."""

from __future__ import annotations

import shutil
import threading

import pytest

import docstore
from docstore import ProofUnavailableError, QueryError, VerificationError
from docstore.documents.records import Header, header_key
from docstore.engine.store import Location, Store
from docstore.proofs.trust import read_state_file, write_state_file


def _build(where):
    """A small database at ``where``: a directory, or a Place (tests/conftest.py)."""
    with (where.open() if hasattr(where, "backend") else docstore.open(where)) as db:
        c = db.create_collection("acct", indexes=["owner"])
        c.insert_many([{"_id": "a", "owner": "ann", "balance": 10}, {"_id": "b", "owner": "bob", "balance": 20}])
        trusted = db.state()
        c.update("a", {"$set": {"balance": 0}})
        return trusted, db.verifier_key()


def _stale_location(path, doc_id):
    """Point ``doc_id``'s location in the derived state at its first revision (LMDB itself)."""
    with docstore.open(path, readonly=True) as db:
        first = db.ledger.history(header_key("acct", doc_id))[0]
    store = Store(str(path), readonly=False)
    with store.write() as txn:
        store.put_location(txn, "acct", doc_id, Location(first.tx_id, first.index, 1, Header.decode(first.value).n))
    store.close()


def test_reads_inside_a_transaction_are_proven(tmp_path):
    path = tmp_path / "db"
    trusted, key = _build(path)
    _stale_location(path, "a")  # the derived state serves balance 10 for a, whose balance is 0
    with docstore.open(path, readonly=True) as plain:
        with plain.transaction() as tx:
            assert tx["acct"].get("a")["balance"] == 0  # (a transaction reads the ledger's snapshot)
            assert tx["acct"].find_one({"_id": "a"})["balance"] == 10  # a plain find: the derived state
    with docstore.open(path, verify=True, trusted_state=trusted, verifier_key=key) as db:
        tx = db.transaction()
        assert tx["acct"].get("b")["balance"] == 20  # proven
        for read in (lambda: list(tx["acct"].find()), lambda: tx["acct"].find_one({"owner": "ann"})):
            with pytest.raises(VerificationError):
                read()
        with pytest.raises(ProofUnavailableError):
            tx["acct"].count()
        with pytest.raises(ProofUnavailableError):
            tx["acct"].distinct("owner")
        with pytest.raises(QueryError):  # a malformed filter is a QueryError first, verifying or not
            tx["acct"].count({"$bad": 1})
        with pytest.raises(QueryError):
            db["acct"].count({"$bad": 1})
        tx.rollback()


def test_a_ledger_rolled_back_under_the_state_file_is_refused_by_state_checkpoint_and_audit(tmp_path):
    path = tmp_path / "db"
    with docstore.open(path) as db:
        db.create_collection("c").insert({"_id": "x", "n": 1})
        key = db.verifier_key()
    shutil.copytree(path, tmp_path / "old")  # a backup at transaction 2
    with docstore.open(path) as db:
        db["c"].update("x", {"$set": {"n": 2}})
        db["c"].update("x", {"$set": {"n": 3}})
        now = db.state()
    state_file = tmp_path / "reader.json"
    write_state_file(state_file, now)
    shutil.rmtree(path)
    shutil.copytree(tmp_path / "old", path)  # the operator restores the older copy
    with docstore.open(path, verify=True, state_file=state_file, verifier_key=key) as db:
        for read in (db.state, db.checkpoint, db.audit, lambda: db["c"].get("x")):
            with pytest.raises(VerificationError, match="lost transactions"):
                read()
    assert read_state_file(state_file) == now  # never rolled back


def test_state_and_checkpoint_of_a_verifying_reader_advance_its_trust(place):
    trusted, key = _build(place)
    with place.open(readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as db:
        assert db.trusted_state == trusted
        now = db.state()  # newer, signed by the pinned key: accepted
        assert now.tx_id > trusted.tx_id and db.trusted_state == now
        assert docstore.verify(db["acct"].prove("a"), now)["balance"] == 0
        assert db.checkpoint().startswith(db.origin + "\n")
    with place.open(readonly=True, verify=True, trusted_state=trusted) as db:  # no key pinned
        with pytest.raises(VerificationError):
            db.state()  # a newer state it cannot authenticate


def test_a_given_trusted_state_newer_than_the_state_file_is_linked_and_saved(place, tmp_path):
    older, key = _build(place)
    with place.open() as db:
        newer = db.state()
    state_file = tmp_path / "s.json"
    write_state_file(state_file, older)
    with place.open(readonly=True, verify=True, trusted_state=newer, state_file=state_file, verifier_key=key) as db:
        assert read_state_file(state_file) == older  # not saved before it is linked to the saved one
        assert db["acct"].get("a")["balance"] == 0
        assert db.trusted_state == newer
    assert read_state_file(state_file) == newer
    with docstore.open(tmp_path / "other") as other:  # a state of another ledger: refused, file kept
        other.create_collection("z").insert({"_id": "1"})
        other.create_collection("y").insert({"_id": "1"})
        foreign = other.state()
    write_state_file(state_file, older)
    with place.open(readonly=True, verify=True, trusted_state=foreign, state_file=state_file, verifier_key=key) as db:
        with pytest.raises(VerificationError):
            db["acct"].get("a")
    assert read_state_file(state_file) == older


def test_verified_finds_racing_commits_in_the_same_process_raise_no_false_alarm(place):
    with place.open() as db:
        db.create_collection("c", indexes=["g"]).insert_many([{"_id": f"d{i}", "g": i % 3, "n": 0} for i in range(30)])
        first, key = db.state(), db.verifier_key()
    with place.open(verify=True, trusted_state=first, verifier_key=key) as db:
        stop = threading.Event()
        errors: list[BaseException] = []

        def write() -> None:
            n = 0
            while not stop.is_set():
                n += 1
                db["c"].update(f"d{n % 30}", {"$set": {"n": n}})

        w = threading.Thread(target=write)
        w.start()
        try:
            finds = 0
            for _ in range(150):
                try:
                    assert len(list(db["c"].find({"g": 1}))) == 10
                    assert len(list(db["c"].find())) == 30
                    finds += 1
                except VerificationError as e:
                    errors.append(e)
        finally:
            stop.set()
            w.join()
    assert errors == [] and finds == 150


def test_verify_takes_the_trusted_state_by_either_name(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        db.create_collection("c").insert({"_id": "x", "n": 1})
        proof, state = db["c"].prove("x"), db.state()
    assert docstore.verify(proof, state) == docstore.verify(proof, trusted_state=state) == {"_id": "x", "n": 1}
    with pytest.raises(VerificationError, match="one trusted state"):
        docstore.verify(proof, state, trusted_state=state)
    with pytest.raises(VerificationError, match="one trusted state"):
        docstore.verify(proof)
