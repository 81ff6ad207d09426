"""Memory stays bounded as data grows: inserts in groups read lazily, sorts held to a heap of
``skip + limit`` (or refused past a documented size), reads that stream from the derived state
on disk. (The command line's streaming import and export: tests/cli/test_cli_bounded.py.)"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docstore.collections import cursor
from docstore.errors import DuplicateIdError, QueryError


def test_insert_many_per_transaction_commits_groups_read_lazily(db):
    c = db.create_collection("g")
    before = db.tx_id
    taken = []

    def docs():
        for i in range(25):
            taken.append(i)
            yield {"_id": f"d{i:02}", "n": i}

    ids = c.insert_many(docs(), per_transaction=10)
    assert ids == [f"d{i:02}" for i in range(25)]
    assert db.tx_id == before + 3  # groups of 10, 10 and 5, one transaction each
    assert c.count(verify=False) == 25 and sorted(d["n"] for d in c.find()) == list(range(25))


def test_insert_many_per_transaction_keeps_the_groups_before_a_failing_one(db):
    c = db.create_collection("h")
    c.insert({"_id": "d12"})
    with pytest.raises(DuplicateIdError):
        c.insert_many(({"_id": f"d{i:02}"} for i in range(20)), per_transaction=5)
    # groups 0-4 and 5-9 are committed; the group holding d12 is refused whole; nothing after it
    assert sorted(d["_id"] for d in c.find()) == sorted([f"d{i:02}" for i in range(10)] + ["d12"])


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_insert_many_per_transaction_must_be_a_positive_integer(db, bad):
    c = db.create_collection("b")
    with pytest.raises(QueryError, match="per_transaction"):
        c.insert_many([{"n": 1}], per_transaction=bad)
    assert c.count(verify=False) == 0


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.one_of(st.integers(-5, 5), st.none(), st.text(max_size=2)), max_size=40),
    skip=st.integers(0, 10),
    limit=st.one_of(st.none(), st.integers(0, 15)),
    direction=st.sampled_from([1, -1]),
)
def test_a_sort_with_a_limit_gives_what_a_full_sort_gives(values, skip, limit, direction):
    docs = [{"_id": f"d{i:03}", "v": v} for i, v in enumerate(values)]
    got = list(cursor.run_query(iter(docs), None, None, [("v", direction)], skip, limit))
    want = list(cursor.run_query(iter(docs), None, None, [("v", direction)], 0, None))
    want = want[skip:] if limit is None else want[skip : skip + limit]
    assert got == want  # the same documents in the same (stable) order


def test_a_sort_past_the_documented_size_needs_a_limit(db, monkeypatch):
    monkeypatch.setattr(cursor, "MAX_SORTED", 50)  # the limit, made small for the test
    c = db.create_collection("s")
    c.insert_many([{"_id": f"d{i:03}", "v": (i * 37) % 101} for i in range(120)])
    if db.local:  # (a remote server applies its own limit: the same constant, in its process)
        with pytest.raises(QueryError, match="sort of more than 50 documents"):
            list(c.find(sort=[("v", 1)]))
        with pytest.raises(QueryError, match="sort of more than 50"):
            list(c.find(sort=[("v", 1)], skip=45, limit=10))
    top = list(c.find(sort=[("v", -1)], limit=5))
    assert [d["v"] for d in top] == sorted(((i * 37) % 101 for i in range(120)), reverse=True)[:5]
    assert len(list(c.find({"v": {"$lt": 30}}, sort=[("v", 1)]))) < 50  # a narrow filter is fine


def test_reads_stream_documents_from_the_log(db):
    """A find is lazy: documents are read from the log as the caller iterates, so taking the
    first few of a large collection reads only those (here: the first of a scan in id order)."""
    c = db.create_collection("big", indexes=["k"])
    c.insert_many(({"_id": f"d{i:05}", "k": i % 7} for i in range(3000)), per_transaction=1000)
    it = c.find()
    assert next(it)["_id"] == "d00000"
    assert [d["_id"] for d in c.find({"k": 3}, limit=3)] == ["d00003", "d00010", "d00017"]


def test_an_audit_reports_progress_by_entries_within_a_large_transaction(db):
    """An audit of few, large transactions still moves: progress counts entries (each hashed,
    then rebuilt), reported at least every 65,536 entries of a transaction."""
    c = db.create_collection("big")
    c.insert_many([{"_id": f"d{i}", "v": list(range(20))} for i in range(4000)])  # one transaction, ~88k entries
    seen: list[tuple[int, int]] = []
    report = db.audit(progress=lambda done, total: seen.append((done, total)))
    assert report.ok
    if not db.local:  # a remote database reports no progress (Database.local)
        assert seen == []
        return
    assert {t for _d, t in seen} == {2 * report.entries}
    dones = [d for d, _t in seen]
    assert dones == sorted(dones) and dones[-1] == 2 * report.entries
    assert any(0 < d < report.entries for d in dones)  # a report inside the large transaction
