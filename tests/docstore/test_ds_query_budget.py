"""Every query has a bounded cost (issue 17): a $regex that backtracks catastrophically stops
with QueryTimeoutError instead of holding a core for minutes, max_time_ms stops a scan, a
server stops any call's queries at its limit, and bad limits are refused before any work.
Embedded, remote and on PostgreSQL alike (the ``db`` fixture)."""

from __future__ import annotations

import re
import threading

import pytest

from docstore.errors import QueryError, QueryTimeoutError

EVIL = {"s": {"$regex": "^(a|aa)+$"}}  # exponential backtracking on "aaaa...a!"


@pytest.fixture(autouse=True)
def quick_regex_budget(monkeypatch):
    """A regex test's budget of 0.2 s instead of 1 s (the servers of the ``db`` fixture run in
    this process): the same behaviour, a fifth of the waiting."""
    from docstore.collections import budget

    monkeypatch.setattr(budget, "REGEX_SECONDS", 0.2)


@pytest.fixture
def evil(db):
    c = db.create_collection("evil")
    c.insert_many([{"s": "a" * 60 + "!", "n": i} for i in range(3)] + [{"s": "aaaa", "n": 9}])
    return c


def test_a_catastrophic_regex_stops_with_a_typed_error(evil):
    with pytest.raises(QueryTimeoutError, match=r"\$regex \(field 's'\).*budget"):
        list(evil.find(EVIL))
    with pytest.raises(QueryTimeoutError):
        evil.count(EVIL)
    with pytest.raises(QueryTimeoutError):  # under $not, $and and $elemMatch as well
        list(evil.find({"s": {"$not": {"$regex": "^(a|aa)+$"}}}))
    with pytest.raises(QueryTimeoutError):
        list(evil.find({"$and": [{"n": {"$gte": 0}}, EVIL]}))
    # a regex that does not backtrack is answered as before, with re's syntax and flags
    assert [d["n"] for d in evil.find({"s": {"$regex": "^A+$", "$options": "i"}})] == [9]
    if not type(evil).__module__.startswith("docstore.remote"):  # compiled patterns: embedded only
        with pytest.raises(QueryTimeoutError):  # inside $in and $all
            list(evil.find({"s": {"$in": [re.compile("^(a|aa)+$")]}}))
        with pytest.raises(QueryTimeoutError):
            list(evil.find({"s": {"$all": [re.compile("^(a|aa)+$")]}}))
        assert [d["n"] for d in evil.find({"s": re.compile(r"^a{4}$")})] == [9]


def test_max_time_ms_stops_a_query(db):
    c = db.create_collection("many")
    c.insert_many([{"i": i, "s": "a" * 40 + "!"} for i in range(3000)])
    with pytest.raises(QueryTimeoutError):  # each regex test gets only what is left
        list(c.find({"s": {"$regex": "^(a|aa)+$"}}, max_time_ms=300))
    with pytest.raises(QueryTimeoutError):  # a scan of 3,000 documents takes more than 1 ms
        list(c.find({"i": {"$gte": 0}, "s": {"$type": "string"}}, sort=[("i", -1)], max_time_ms=1))
    with pytest.raises(QueryTimeoutError):
        c.distinct("i", {"s": {"$regex": "^(a|aa)+$"}}, max_time_ms=200)
    # with time enough, the same queries answer
    assert c.count({"i": {"$lt": 10}}, max_time_ms=60_000) == 10
    assert c.find_one({"i": 5}, max_time_ms=60_000)["i"] == 5


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "100", 2**31])
def test_bad_max_time_ms_is_refused_before_any_work(db, bad):
    c = db.create_collection("c")
    with pytest.raises(QueryError, match="max_time_ms"):
        c.find({}, max_time_ms=bad)
    with pytest.raises(QueryError, match="max_time_ms"):
        c.count({}, max_time_ms=bad)


def test_other_callers_go_on_while_a_regex_runs(evil, db):
    """A regex test releases the interpreter while it runs: another thread's reads are answered
    meanwhile (on a server: other clients)."""
    evil.insert({"_id": "x", "s": "b"})
    done = threading.Event()
    seen: list[BaseException] = []

    def slow() -> None:
        try:
            evil.count({"s": {"$regex": "^(a|aa)+$"}}, max_time_ms=3000)
        except QueryTimeoutError as e:
            seen.append(e)
        finally:
            done.set()

    t = threading.Thread(target=slow)
    t.start()
    answered = 0
    while not done.is_set():
        assert evil.get("x")["s"] == "b"
        answered += 1
    t.join()
    assert seen and answered > 1
