"""docstore.batch (library, no server): optimistic transactions committed in one call."""

from __future__ import annotations

import threading

import pytest

import docstore
from docstore import (
    CollectionNotFoundError,
    ConflictError,
    DocumentNotFoundError,
    DuplicateIdError,
    DuplicateKeyError,
    InvalidDocumentError,
    QueryError,
    SchemaError,
)
from docstore.batch import Read, Write, commit_batch, read_document


@pytest.fixture
def db(tmp_path):
    d = docstore.open(tmp_path / "db")
    d.create_collection("acc", schema={"type": "object", "properties": {"bal": {"type": "integer"}}}, indexes=[{"field": "email", "unique": True}])
    d.create_collection("log")
    d["acc"].insert_many([{"_id": "a", "bal": 100, "email": "a@x"}, {"_id": "b", "bal": 0, "email": "b@x"}])
    yield d
    d.close()


def test_read_document(db):
    snap = db.tx_id
    assert read_document(db, "acc", "a") == ({"_id": "a", "bal": 100, "email": "a@x"}, 1)
    db["acc"].update("a", {"$inc": {"bal": 1}})
    assert read_document(db, "acc", "a")[1] == 2
    assert read_document(db, "acc", "a", at_tx=snap) == ({"_id": "a", "bal": 100, "email": "a@x"}, 1)
    assert read_document(db, "acc", "zz") == (None, None)
    db["acc"].delete("b")
    assert read_document(db, "acc", "b") == (None, None)
    with pytest.raises(CollectionNotFoundError):
        read_document(db, "nope", "a")
    with pytest.raises(QueryError):
        read_document(db, "acc", "a", at_tx=10**6)


def test_commit_applies_reads_and_writes_atomically(db):
    snap = db.tx_id
    tx_id = commit_batch(
        db,
        snap,
        [Read("acc", "a", 1), Read("acc", "b", 1)],
        [
            Write("replace", "acc", "a", {"bal": 70, "email": "a@x"}),
            Write("replace", "acc", "b", {"bal": 30, "email": "b@x"}),
            Write("insert", "log", document={"_id": "t1", "amount": 30}),
            Write("insert", "log", document={"amount": 1}),
        ],
    )
    assert tx_id == snap + 1
    assert db["acc"].get("a")["bal"] == 70 and db["acc"].get("b")["bal"] == 30
    assert db["log"].count(verify=False) == 2
    # every document of the batch is in one ledger transaction
    assert {r.tx_id for r in db["acc"].history("a")[1:]} == {tx_id}
    assert db.audit().ok


def test_nothing_to_write(db):
    assert commit_batch(db, db.tx_id, [Read("acc", "a", 1)], []) is None


def test_conflict_when_a_read_document_changed(db):
    snap = db.tx_id
    db["acc"].update("a", {"$inc": {"bal": 5}})  # after the snapshot
    with pytest.raises(ConflictError):
        commit_batch(db, snap, [Read("acc", "a", 1)], [Write("replace", "acc", "a", {"bal": 0, "email": "a@x"})])
    assert db["acc"].get("a")["bal"] == 105


def test_conflict_when_a_written_document_changed(db):
    snap = db.tx_id
    db["acc"].update("b", {"$inc": {"bal": 5}})
    with pytest.raises(ConflictError):
        commit_batch(db, snap, [], [Write("delete", "acc", "b")])
    assert db["acc"].get("b")["bal"] == 5


def test_conflict_on_a_queried_collection(db):
    snap = db.tx_id
    db["log"].insert({"x": 1})  # a phantom for a query of "log" at snap
    with pytest.raises(ConflictError):
        commit_batch(db, snap, [Read("log")], [Write("insert", "acc", document={"bal": 1, "email": "c@x"})])
    assert db["acc"].count(verify=False) == 2
    # the same batch against the newer snapshot commits
    assert commit_batch(db, db.tx_id, [Read("log")], [Write("insert", "acc", document={"bal": 1, "email": "c@x"})])


def test_conflict_when_the_revision_seen_is_not_the_snapshots(db):
    with pytest.raises(ConflictError, match="revision 1 as of transaction"):
        commit_batch(db, db.tx_id, [Read("acc", "a", 7)], [Write("delete", "acc", "a")])
    with pytest.raises(ConflictError):  # claimed absent, but it exists
        commit_batch(db, db.tx_id, [Read("acc", "a", None)], [Write("delete", "acc", "b")])
    assert db["acc"].count(verify=False) == 2


def test_absent_read_then_concurrent_insert_conflicts(db):
    snap = db.tx_id
    db["acc"].insert({"_id": "c", "bal": 1, "email": "c@x"})
    with pytest.raises(ConflictError):
        commit_batch(db, snap, [Read("acc", "c", None)], [Write("insert", "acc", document={"_id": "c", "bal": 2, "email": "d@x"})])
    assert db["acc"].get("c")["bal"] == 1


def test_writes_are_validated_as_embedded(db):
    snap = db.tx_id
    cases = [
        (Write("insert", "acc", document={"_id": "a"}), DuplicateIdError),
        (Write("insert", "acc", document={"bal": "x"}), SchemaError),
        (Write("insert", "acc", document={"email": "a@x"}), DuplicateKeyError),
        (Write("replace", "acc", "zz", {"bal": 1}), DocumentNotFoundError),
        (Write("delete", "acc", "zz"), DocumentNotFoundError),
        (Write("insert", "nope", document={}), CollectionNotFoundError),
        (Write("insert", "acc", document={"x": float("nan")}), InvalidDocumentError),
        (Write("upsert", "acc", "a", {}), QueryError),
    ]
    for w, exc in cases:
        with pytest.raises(exc):
            commit_batch(db, snap, [], [Write("insert", "log", document={"ok": 1}), w])
    assert db.tx_id == snap and db["log"].count(verify=False) == 0  # nothing of any failed batch was written


def test_invalid_arguments(db):
    with pytest.raises(QueryError):
        commit_batch(db, -1, [], [])
    with pytest.raises(QueryError):
        commit_batch(db, db.tx_id + 5, [Read("acc", "a", 1)], [Write("delete", "acc", "a")])
    with pytest.raises(QueryError):
        commit_batch(db, None, [("acc", "a", 1)], [])  # type: ignore[list-item]
    with pytest.raises(QueryError):
        commit_batch(db, None, [Read("acc", "a", 0)], [])


def test_blind_writes_retry_and_never_lose_documents(db):
    """Without reads or snapshot, concurrent batches of inserts all land (retried on conflict)."""
    errors = []

    def worker(t: int) -> None:
        try:
            for i in range(20):
                commit_batch(db, None, [], [Write("insert", "log", document={"_id": f"{t}-{i}"})])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert db["log"].count(verify=False) == 80
    assert db.audit().ok


def test_snapshot_reads_see_the_snapshot(db):
    """A replace of a document read at an old snapshot conflicts even if its revision number
    was (wrongly) claimed to be the current one."""
    snap = db.tx_id
    db["acc"].update("a", {"$inc": {"bal": 1}})
    with pytest.raises(ConflictError):
        commit_batch(db, snap, [Read("acc", "a", 2)], [Write("replace", "acc", "a", {"bal": 1, "email": "a@x"})])
