"""Idempotency keys (docstore.transactions.requests): a write sent twice with one key is
committed once and the repeat returns what the first returned. Embedded, remote and on
PostgreSQL alike (the ``db`` fixture)."""

from __future__ import annotations

import threading

import pytest

from docstore.errors import QueryError
from tests.docstore.test_ds_transactions import run_threads


def test_each_kind_of_write_is_committed_once(db):
    c = db.create_collection("c")
    first = c.insert({"n": 1}, idempotency_key="ins-1")
    at = db.state().tx_id
    assert c.insert({"n": 1}, idempotency_key="ins-1") == first  # the same generated id
    assert db.state().tx_id == at and c.count() == 1  # nothing written

    ids = c.insert_many([{"n": 2}, {"n": 3}], idempotency_key="many-1")
    assert c.insert_many([{"n": 2}, {"n": 3}], idempotency_key="many-1") == ids and c.count() == 3

    doc = c.update(first, {"$inc": {"n": 10}}, idempotency_key="upd-1")
    assert doc["n"] == 11
    c.update(first, {"$set": {"later": True}})
    again = c.update(first, {"$inc": {"n": 10}}, idempotency_key="upd-1")
    assert again == doc  # the document as the first update wrote it, not incremented twice
    assert c.get(first)["n"] == 11

    new = c.replace(ids[0], {"n": 20}, idempotency_key="rep-1")
    assert c.replace(ids[0], {"n": 20}, idempotency_key="rep-1") == new

    c.delete(ids[1], idempotency_key="del-1")
    c.delete(ids[1], idempotency_key="del-1")  # not DocumentNotFoundError: the first was it
    assert c.count() == 2
    assert db.audit().ok


def test_a_transaction_is_committed_once(db):
    c = db.create_collection("c")
    with db.transaction(idempotency_key="tx-1") as tx:
        tx["c"].insert({"_id": "a"})
        tx["c"].insert({"_id": "b"})
    first = tx.tx_id
    assert first is not None
    with db.transaction(idempotency_key="tx-1") as again:  # sent again: writes nothing
        again["c"].insert({"_id": "c"})
    assert again.tx_id == first and db.state().tx_id == first
    assert sorted(d["_id"] for d in c.find()) == ["a", "b"]


def test_a_key_is_for_one_write(db):
    c = db.create_collection("c")
    c.insert({"n": 1}, idempotency_key="k")
    with pytest.raises(QueryError, match="used for another write"):
        c.delete("whatever", idempotency_key="k")
    db.create_collection("d")
    with pytest.raises(QueryError, match="used for another write"):
        db["d"].insert({"n": 1}, idempotency_key="k")
    for bad in ("", "x" * 129, "tab\there", "é", 7):
        with pytest.raises(QueryError, match="idempotency key"):
            c.insert({"n": 1}, idempotency_key=bad)
    with pytest.raises(QueryError, match="per_transaction"):
        c.insert_many([{"n": 1}], per_transaction=1, idempotency_key="p")
    assert c.count() == 1


def test_racing_attempts_with_one_key_commit_once(db):
    c = db.create_collection("c")
    got: list[str] = []
    lock = threading.Lock()

    def attempt(_t: int) -> None:
        doc_id = c.insert({"payment": 1}, idempotency_key="pay-42")
        with lock:
            got.append(doc_id)

    run_threads(8, attempt)
    assert len(set(got)) == 1 and c.count() == 1
    assert db.audit().ok


@pytest.mark.embedded
def test_racing_commits_of_one_transaction_return_the_winners_id(db):
    """What a server does with a transaction sent again while its first attempt commits: each
    attempt replays it (here: an insert of one id, which the loser cannot replay: a
    DuplicateIdError) or conflicts on the key; every attempt returns the winner's
    transaction, nothing is committed twice (docstore.transactions.one_call)."""
    from docstore.transactions.one_call import Write, commit_in_one_call

    db.create_collection("c")
    got: list[object] = []
    lock = threading.Lock()

    def attempt(_t: int) -> None:
        tx_id = commit_in_one_call(db, None, [], [Write("insert", "c", None, {"_id": "same", "v": 1})],
                                   idempotency_key="race-1")
        with lock:
            got.append(tx_id)

    run_threads(8, attempt)
    assert len(set(got)) == 1 and db["c"].count() == 1
    snapshot = db.state().tx_id  # with a snapshot (a remote transaction's): the same answer
    assert commit_in_one_call(db, snapshot, [], [Write("insert", "c", None, {"_id": "same", "v": 1})],
                              idempotency_key="race-1") == got[0]
