"""docstore.transactions.one_call (library, no server): optimistic transactions committed in one call."""

from __future__ import annotations

import threading

import pytest

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
from docstore.transactions.one_call import Read, Write, commit_in_one_call


pytestmark = pytest.mark.embedded  # the library call a server makes, on the embedded database


@pytest.fixture
def bank(db):
    d = db
    d.create_collection("acc", schema={"type": "object", "properties": {"bal": {"type": "integer"}}}, indexes=[{"field": "email", "unique": True}])
    d.create_collection("log")
    d["acc"].insert_many([{"_id": "a", "bal": 100, "email": "a@x"}, {"_id": "b", "bal": 0, "email": "b@x"}])
    return d


def test_read_revision(bank):
    snap = bank.tx_id
    assert bank["acc"].revision("a") == ({"_id": "a", "bal": 100, "email": "a@x"}, 1)
    bank["acc"].update("a", {"$inc": {"bal": 1}})
    assert bank["acc"].revision("a")[1] == 2
    assert bank["acc"].revision("a", at_tx=snap) == ({"_id": "a", "bal": 100, "email": "a@x"}, 1)
    assert bank["acc"].revision("zz") == (None, None)
    bank["acc"].delete("b")
    assert bank["acc"].revision("b") == (None, None)
    with pytest.raises(CollectionNotFoundError):
        bank["nope"].revision("a")
    with pytest.raises(QueryError):
        bank["acc"].revision("a", at_tx=10**6)


def test_commit_applies_reads_and_writes_atomically(bank):
    snap = bank.tx_id
    tx_id = commit_in_one_call(
        bank,
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
    assert bank["acc"].get("a")["bal"] == 70 and bank["acc"].get("b")["bal"] == 30
    assert bank["log"].count(verify=False) == 2
    # every document of the batch is in one ledger transaction
    assert {r.tx_id for r in bank["acc"].history("a")[1:]} == {tx_id}
    assert bank.audit().ok


def test_nothing_to_write(bank):
    assert commit_in_one_call(bank, bank.tx_id, [Read("acc", "a", 1)], []) is None


def test_conflict_when_a_read_document_changed(bank):
    snap = bank.tx_id
    bank["acc"].update("a", {"$inc": {"bal": 5}})  # after the snapshot
    with pytest.raises(ConflictError):
        commit_in_one_call(bank, snap, [Read("acc", "a", 1)], [Write("replace", "acc", "a", {"bal": 0, "email": "a@x"})])
    assert bank["acc"].get("a")["bal"] == 105


def test_conflict_when_a_written_document_changed(bank):
    snap = bank.tx_id
    bank["acc"].update("b", {"$inc": {"bal": 5}})
    with pytest.raises(ConflictError):
        commit_in_one_call(bank, snap, [], [Write("delete", "acc", "b")])
    assert bank["acc"].get("b")["bal"] == 5


def test_conflict_on_a_queried_collection(bank):
    snap = bank.tx_id
    bank["log"].insert({"x": 1})  # a phantom for a query of "log" at snap
    with pytest.raises(ConflictError):
        commit_in_one_call(bank, snap, [Read("log")], [Write("insert", "acc", document={"bal": 1, "email": "c@x"})])
    assert bank["acc"].count(verify=False) == 2
    # the same batch against the newer snapshot commits
    assert commit_in_one_call(bank, bank.tx_id, [Read("log")], [Write("insert", "acc", document={"bal": 1, "email": "c@x"})])


def test_conflict_when_the_revision_seen_is_not_the_snapshots(bank):
    with pytest.raises(ConflictError, match="revision 1 as of transaction"):
        commit_in_one_call(bank, bank.tx_id, [Read("acc", "a", 7)], [Write("delete", "acc", "a")])
    with pytest.raises(ConflictError):  # claimed absent, but it exists
        commit_in_one_call(bank, bank.tx_id, [Read("acc", "a", None)], [Write("delete", "acc", "b")])
    assert bank["acc"].count(verify=False) == 2


def test_absent_read_then_concurrent_insert_conflicts(bank):
    snap = bank.tx_id
    bank["acc"].insert({"_id": "c", "bal": 1, "email": "c@x"})
    with pytest.raises(ConflictError):
        commit_in_one_call(bank, snap, [Read("acc", "c", None)], [Write("insert", "acc", document={"_id": "c", "bal": 2, "email": "d@x"})])
    assert bank["acc"].get("c")["bal"] == 1


def test_writes_are_validated_as_embedded(bank):
    snap = bank.tx_id
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
            commit_in_one_call(bank, snap, [], [Write("insert", "log", document={"ok": 1}), w])
    assert bank.tx_id == snap and bank["log"].count(verify=False) == 0  # nothing of any failed batch was written


def test_invalid_arguments(bank):
    with pytest.raises(QueryError):
        commit_in_one_call(bank, -1, [], [])
    with pytest.raises(QueryError):
        commit_in_one_call(bank, bank.tx_id + 5, [Read("acc", "a", 1)], [Write("delete", "acc", "a")])
    with pytest.raises(QueryError):
        commit_in_one_call(bank, None, [("acc", "a", 1)], [])  # type: ignore[list-item]
    with pytest.raises(QueryError):
        commit_in_one_call(bank, None, [Read("acc", "a", 0)], [])


def test_blind_writes_retry_and_never_lose_documents(bank):
    """Without reads or snapshot, concurrent batches of inserts all land (retried on conflict)."""
    errors = []

    def worker(t: int) -> None:
        try:
            for i in range(20):
                commit_in_one_call(bank, None, [], [Write("insert", "log", document={"_id": f"{t}-{i}"})])
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    assert bank["log"].count(verify=False) == 80
    assert bank.audit().ok


def test_snapshot_reads_see_the_snapshot(bank):
    """A replace of a document read at an old snapshot conflicts even if its revision number
    was (wrongly) claimed to be the current one."""
    snap = bank.tx_id
    bank["acc"].update("a", {"$inc": {"bal": 1}})
    with pytest.raises(ConflictError):
        commit_in_one_call(bank, snap, [Read("acc", "a", 2)], [Write("replace", "acc", "a", {"bal": 1, "email": "a@x"})])
