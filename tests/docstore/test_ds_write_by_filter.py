"""Writes by filter on the embedded database: atomic under concurrent writers (no lost update, no
missed match), bounded by what one transaction holds (refused before anything is written), and
streamed (the matches are not all held before they are written). The contract they share with
the remote database is tests/remote/test_rm_write_by_filter.py."""

from __future__ import annotations

import threading
import time

import pytest

import docstore
import kvcore
from docstore import ConflictError, TransactionTooLargeError

pytestmark = pytest.mark.embedded


@pytest.fixture
def db(tmp_path):
    with docstore.open(tmp_path / "db") as d:
        yield d


def test_concurrent_update_many_lose_no_update(db):
    c = db.create_collection("c")
    c.insert_many([{"_id": f"d{i}", "n": 0} for i in range(20)])
    errors: list[BaseException] = []

    def work():
        try:
            for _ in range(15):
                assert c.update_many({}, {"$inc": {"n": 1}}).modified_count == 20
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert {d["n"] for d in c.find({})} == {60}
    assert db.audit().ok


def test_a_match_inserted_meanwhile_makes_the_transaction_conflict(db):
    c = db.create_collection("c")
    c.insert_many([{"_id": "a", "s": "open"}, {"_id": "b", "s": "open"}])
    tx = db.transaction()
    assert tx["c"].update_many({"s": "open"}, {"$set": {"s": "closed"}}).modified_count == 2
    c.insert({"_id": "late", "s": "open"})  # would have matched
    with pytest.raises(ConflictError):
        tx.commit()
    assert c.count_documents({"s": "closed"}) == 0
    # a single call runs again on a conflict: it closes all three
    assert c.update_many({"s": "open"}, {"$set": {"s": "closed"}}).modified_count == 3


def test_a_match_changed_meanwhile_makes_the_transaction_conflict(db):
    c = db.create_collection("c")
    c.insert_many([{"_id": "a", "n": 1}, {"_id": "b", "n": 2}])
    tx = db.transaction()
    assert tx["c"].delete_many({"n": {"$gte": 1}}).deleted_count == 2
    c.update("b", {"$set": {"n": 0}})  # no longer matches
    with pytest.raises(ConflictError):
        tx.commit()
    assert c.count_documents({}) == 2
    assert c.delete_many({"n": {"$gte": 1}}).deleted_count == 1


def test_a_write_by_filter_larger_than_a_transaction_is_refused_first(db):
    """1,048 documents of 1,000 properties: 1,049,048 entries, more than one transaction
    holds (1,048,576): update_many says so naming the limit, and writes nothing."""
    c = db.create_collection("big")
    props = {f"k{i}": i for i in range(1000)}
    c.insert_many(({"_id": f"d{i:04d}", "p": props} for i in range(1048)), per_transaction=100)
    before = db.tx_id
    t0 = time.perf_counter()
    with pytest.raises(TransactionTooLargeError) as e:
        c.update_many({}, {"$set": {"flag": True}})
    took = time.perf_counter() - t0
    assert "1,048,576 entries" in str(e.value) and "nothing was written" in str(e.value)
    assert db.tx_id == before
    # a narrower filter fits
    assert c.update_many({"_id": {"$lt": "d0500"}}, {"$set": {"flag": True}}).modified_count == 500
    print(f"refused after {took:.1f} s")


def test_delete_many_is_bounded_too(db, monkeypatch):
    """(A real delete of more than 1,048,576 documents takes minutes to set up: the limit is
    lowered here, the same code counts it.)"""
    c = db.create_collection("c")
    c.insert_many([{"n": i} for i in range(30)])
    monkeypatch.setattr(kvcore, "MAX_TX_ENTRIES", 20)
    before = db.tx_id
    with pytest.raises(TransactionTooLargeError, match="20 entries"):
        c.delete_many({})
    assert db.tx_id == before and c.count_documents({}) == 30
    assert c.delete_many({"n": {"$lt": 15}}).deleted_count == 15


def test_update_one_reads_no_further_than_its_match(db):
    """update_one stops at its first match: the rest of the collection is not decoded."""
    c = db.create_collection("c")
    c.insert_many([{"_id": f"d{i:05d}", "n": i} for i in range(20000)])
    t0 = time.perf_counter()
    for _ in range(20):
        assert c.update_one({}, {"$inc": {"hits": 1}}).modified_count == 1
    one = (time.perf_counter() - t0) / 20
    t0 = time.perf_counter()
    assert c.update_many({}, {"$inc": {"hits": 1}}).modified_count == 20000
    many = time.perf_counter() - t0
    print(f"update_one {one * 1000:.1f} ms, update_many of 20,000 documents {many:.2f} s")
    assert one < many / 20
