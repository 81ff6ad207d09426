"""``$or`` answered by several indexes: each clause an index plan, the union of their documents
each once, one snapshot; a scan when any clause needs one (embedded, remote, PostgreSQL through
the ``db`` fixture). Proofs of complete results keep the listing for ``$or`` (docs/proofs.md)."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docstore
from docstore.collections.cursor import or_branches
from docstore.collections.query import compile_filter
from index_testlib import check_same, differential


def ids(docs: Any) -> list[str]:
    return sorted(d["_id"] for d in docs)


def _docs(n: int) -> list[dict]:
    out = []
    for i in range(n):
        d: dict[str, Any] = {"_id": f"{i:03}", "a": i % 5, "b": i % 7, "tags": [i % 3, i % 4]}
        if i % 6:
            d["email"] = f"e{i % 11}"
        d["status"] = "open" if i % 2 else "closed"
        out.append(d)
    return out


@pytest.fixture
def coll(db):
    c = db.create_collection("c", indexes=[
        "a", "b", "tags", {"field": "email", "sparse": True},
        {"field": "status", "partial_filter": {"a": {"$gte": 2}}},
    ])
    c.insert_many(_docs(60))
    return c


ANSWERED = [
    {"$or": [{"a": 1}, {"b": 2}]},
    {"$or": [{"a": 1}, {"tags": 2}]},
    {"$or": [{"tags": 1}, {"tags": 2}]},
    {"$or": [{"a": {"$gt": 3}}, {"b": {"$lte": 1}}, {"email": "e3"}]},
    {"b": {"$ne": 3}, "$or": [{"a": 1}, {"b": 2}]},
    {"$or": [{"a": 1}, {"status": "open", "a": {"$gte": 3}}]},
    {"$or": [{"a": 1}, {"a": 1}]},
    {"$or": [{"a": 1}, {"b": {"$in": []}}]},
]
SCANNED = [
    {"$or": [{"a": 1}, {"zz": 2}]},
    {"$or": [{"a": 1}, {"email": None}]},  # the sparse index has no document without email
    {"$or": [{"a": 1}, {"status": "open"}]},  # the partial index holds a >= 2 only
    {"$or": [{"a": 1}, {"b": {"$ne": 2}}]},
    {"$or": [{"a": 1}]},  # (a one-clause $or is its clause: an index plan)
]


def test_or_uses_one_index_per_clause_and_gives_each_document_once(coll):
    everything = list(coll.find({}))
    for flt in ANSWERED:
        plan = coll.explain(flt)
        assert plan["plan"] == "or", (flt, plan)
        assert len(plan["branches"]) == len(flt["$or"]) and all(b["plan"] == "index" for b in plan["branches"])
        got = [d["_id"] for d in coll.find(flt)]
        assert len(got) == len(set(got)), flt
        match = compile_filter(flt)
        assert sorted(got) == ids(d for d in everything if match(d)), flt
        assert coll.count(flt) == len(got)
    for flt in SCANNED:
        assert coll.explain(flt)["plan"] in ("scan", "index"), flt
        assert coll.explain(flt)["plan"] != "or"
        match = compile_filter(flt)
        assert ids(coll.find(flt)) == ids(d for d in everything if match(d)), flt


def test_or_with_an_index_on_the_other_conditions_uses_that_index(coll):
    assert coll.explain({"a": 2, "$or": [{"b": 1}, {"tags": 0}]})["plan"] == "index"


def test_or_plan_follows_writes_and_paging(coll):
    flt = {"$or": [{"a": 1}, {"b": 2}]}
    coll.update("001", {"$set": {"a": 4, "b": 2}})  # moves from one clause to the other
    coll.delete("016")
    coll.insert({"_id": "new", "a": 1, "b": 2})
    everything = list(coll.find({}))
    match = compile_filter(flt)
    want = ids(d for d in everything if match(d))
    assert ids(coll.find(flt)) == want
    assert [d["_id"] for d in coll.find(flt, sort=[("_id", 1)], skip=2, limit=3)] == want[2:5]
    assert sorted(coll.distinct("a", flt)) == sorted({d["a"] for d in everything if match(d)})


def test_or_branches_carry_the_other_conditions():
    assert or_branches({"$or": [{"a": 1}, {"b": 2}]}) == [{"a": 1}, {"b": 2}]
    assert or_branches({"x": 1, "$or": [{"a": 1}, {"b": 2}]}) == [{"$and": [{"x": 1}, {"a": 1}]}, {"$and": [{"x": 1}, {"b": 2}]}]
    assert or_branches({"$or": [{"a": 1}]}) is None
    assert or_branches({"a": 1}) is None


@pytest.mark.embedded
def test_or_proofs_are_listings_and_verify(db):
    c = db.create_collection("c", indexes=["a", "b"])
    c.insert_many(_docs(30))
    flt = {"$or": [{"a": 1}, {"b": 2}]}
    proof = c.prove_find(flt, with_header=True)
    assert proof.indexed is None  # the listing: docs/proofs.md, "Which filters"
    assert ids(docstore.verify(proof.to_dict(), db.state())) == ids(c.find(flt))


_V = st.one_of(st.none(), st.integers(0, 5), st.sampled_from(["x", "y"]), st.lists(st.integers(0, 5), max_size=3))
_DOC = st.fixed_dictionaries({}, optional={"a": _V, "b": _V, "c": _V})
_CLAUSE = st.dictionaries(
    st.sampled_from(["a", "b", "c"]),
    st.one_of(st.integers(0, 5), st.sampled_from(["x", "y"]),
              st.builds(lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte", "$eq"]), st.integers(0, 5)),
              st.builds(lambda v: {"$in": v}, st.lists(st.integers(0, 5), max_size=3))),
    min_size=1, max_size=2,
)
_OR = st.builds(lambda cl: {"$or": cl}, st.lists(_CLAUSE, min_size=2, max_size=4))


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
@given(docs=st.lists(_DOC, min_size=1, max_size=15), filters=st.lists(_OR, min_size=1, max_size=5))
def test_or_differential_against_a_scan_and_mongomock(tmp_path_factory, docs, filters):
    with docstore.open(tmp_path_factory.mktemp("or") / "db") as db:
        plain, indexed, mongo = differential(db, ["a", "b", {"field": "c", "sparse": True}], docs)
        for flt in filters:
            check_same(plain, indexed, flt, mongo)
        assert db.audit().ok
