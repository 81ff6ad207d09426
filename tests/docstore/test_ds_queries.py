"""Queries through a real database: find/find_one/count/distinct/explain, paging and errors,
plus a differential test against mongomock with and without secondary indexes."""

from __future__ import annotations

import copy
import tempfile

import mongomock
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docstore
from docstore import QueryError

PEOPLE = [
    {"_id": "p1", "name": "Ada", "age": 36, "city": "London", "tags": ["math", "eng"], "addr": {"zip": "100"}},
    {"_id": "p2", "name": "Bob", "age": 25, "city": "Oslo", "tags": ["eng"], "addr": {"zip": "200"}},
    {"_id": "p3", "name": "Cy", "age": 36, "city": "Oslo", "tags": [], "addr": {"zip": "300"}},
    {"_id": "p4", "name": "Di", "age": 41, "city": "Paris"},
    {"_id": "p5", "name": "Ed", "age": 25.0, "city": "London", "tags": ["math"], "addr": {"zip": "100"}},
    {"_id": "p6", "name": "Flo", "age": None, "city": "Rome", "tags": ["art", "math"]},
]


@pytest.fixture(params=["plain", "indexed"])
def people(request, db):
    indexes = [] if request.param == "plain" else ["age", "city", "tags", "addr.zip", "name"]
    coll = db.create_collection("people", indexes=indexes)
    coll.insert_many(copy.deepcopy(PEOPLE))
    return coll


def ids(docs):
    return [d["_id"] for d in docs]


# ============================================================================ find


def test_find_all(people):
    assert sorted(ids(people.find())) == [d["_id"] for d in PEOPLE]
    assert sorted(ids(people.find({}))) == [d["_id"] for d in PEOPLE]
    assert sorted(ids(people.find(None))) == [d["_id"] for d in PEOPLE]


@pytest.mark.parametrize(
    "flt,expected",
    [
        ({"age": 36}, ["p1", "p3"]),
        ({"age": 25}, ["p2", "p5"]),  # 25 == 25.0
        ({"age": {"$gt": 30}}, ["p1", "p3", "p4"]),
        ({"age": {"$gte": 25, "$lt": 37}}, ["p1", "p2", "p3", "p5"]),
        ({"age": {"$in": [41, 25]}}, ["p2", "p4", "p5"]),
        ({"age": {"$nin": [41, 25]}}, ["p1", "p3", "p6"]),
        ({"age": None}, ["p6"]),
        ({"tags": None}, ["p4"]),  # missing counts as null
        ({"tags": "math"}, ["p1", "p5", "p6"]),
        ({"tags": ["eng"]}, ["p2"]),
        ({"tags": []}, ["p3"]),
        ({"tags": {"$size": 2}}, ["p1", "p6"]),
        ({"tags": {"$all": ["math", "eng"]}}, ["p1"]),
        ({"tags": {"$exists": False}}, ["p4"]),
        ({"addr.zip": "100"}, ["p1", "p5"]),
        ({"addr": {"zip": "200"}}, ["p2"]),
        ({"city": "Oslo", "age": 36}, ["p3"]),
        ({"$or": [{"city": "Rome"}, {"age": 41}]}, ["p4", "p6"]),
        ({"$and": [{"city": "London"}, {"age": {"$type": "double"}}]}, ["p5"]),
        ({"$nor": [{"city": "London"}, {"city": "Oslo"}]}, ["p4", "p6"]),
        ({"name": {"$not": {"$in": ["Ada", "Bob"]}}}, ["p3", "p4", "p5", "p6"]),
        ({"city": {"$gte": "P"}}, ["p4", "p6"]),
        ({"name": {"$regex": "^[A-C]"}}, ["p1", "p2", "p3"]),
        ({"missing": {"$exists": True}}, []),
        ({"age": {"$in": []}}, []),
    ],
)
def test_filters(people, flt, expected):
    assert sorted(ids(people.find(flt))) == expected
    assert people.count(flt) == len(expected)
    assert (people.find_one(flt) is None) == (not expected)


def test_projection(people):
    assert list(people.find({"_id": "p1"}, {"name": 1})) == [{"_id": "p1", "name": "Ada"}]
    assert list(people.find({"_id": "p1"}, {"name": 1, "_id": 0})) == [{"name": "Ada"}]
    assert list(people.find({"_id": "p1"}, ["name", "addr.zip"])) == [{"_id": "p1", "name": "Ada", "addr": {"zip": "100"}}]
    assert list(people.find({"_id": "p4"}, {"age": 0, "city": 0, "name": 0})) == [{"_id": "p4"}]
    # inclusion keeps the document's field order, not the projection's
    doc = people.find_one({"_id": "p2"}, {"city": 1, "name": 1})
    assert list(doc) == ["_id", "name", "city"]
    with pytest.raises(QueryError):
        people.find({}, {"name": 1, "age": 0})
    with pytest.raises(QueryError):
        people.find({}, 5)


def test_sort_skip_limit(people):
    assert ids(people.find(sort=[("age", 1), ("name", -1)])) == ["p6", "p5", "p2", "p3", "p1", "p4"]
    assert ids(people.find(sort={"age": -1, "name": 1})) == ["p4", "p1", "p3", "p2", "p5", "p6"]
    assert ids(people.find(sort=[("city", 1), ("age", -1)])) == ["p1", "p5", "p3", "p2", "p4", "p6"]
    assert ids(people.find(sort="name")) == ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert ids(people.find(sort=("name", -1))) == ["p6", "p5", "p4", "p3", "p2", "p1"]
    # arrays sort by their smallest element ascending (missing/empty sort first)
    assert ids(people.find({"tags": {"$exists": True}}, sort=[("tags", 1), ("_id", 1)])) == ["p3", "p6", "p1", "p2", "p5"]
    by_name = ["p1", "p2", "p3", "p4", "p5", "p6"]
    assert ids(people.find(sort="name", skip=2)) == by_name[2:]
    assert ids(people.find(sort="name", limit=2)) == by_name[:2]
    assert ids(people.find(sort="name", skip=1, limit=3)) == by_name[1:4]
    assert ids(people.find(sort="name", skip=10)) == []
    assert ids(people.find(sort="name", limit=0)) == []
    assert ids(people.find({"city": "Oslo"}, sort=[("name", -1)], limit=1)) == ["p3"]
    assert people.find_one({"age": 36}, sort=[("name", -1)])["_id"] == "p3"
    assert people.find_one({"age": 36}, {"name": 1, "_id": 0}, sort=[("name", 1)]) == {"name": "Ada"}
    assert people.find_one({"age": 99}) is None


def test_unsorted_paging_partitions_the_results(people):
    everything = sorted(ids(people.find({"age": {"$gte": 0}})))
    pages = [ids(people.find({"age": {"$gte": 0}}, skip=s, limit=2)) for s in (0, 2, 4)]
    assert all(len(p) <= 2 for p in pages)
    assert sorted(sum(pages, [])) == everything


def test_count_and_distinct(people):
    assert people.count() == 6
    assert people.count({"city": "Oslo"}) == 2
    assert people.count({"age": {"$lt": 0}}) == 0
    assert people.distinct("city") == ["London", "Oslo", "Paris", "Rome"]
    assert sorted(people.distinct("tags")) == ["art", "eng", "math"]
    assert people.distinct("age", {"city": "London"}) == [36, 25.0]
    assert people.distinct("addr.zip") == ["100", "200", "300"]
    assert people.distinct("nope") == []
    with pytest.raises(QueryError):
        people.distinct("")
    with pytest.raises(QueryError):
        people.distinct("$age")


def test_find_returns_fresh_documents(people):
    first = next(people.find({"_id": "p1"}))
    first["tags"].append("changed")
    assert people.get("p1")["tags"] == ["math", "eng"]


def test_find_reflects_writes(people):
    people.update("p4", {"$set": {"city": "Oslo"}, "$push": {"tags": "new"}})
    assert sorted(ids(people.find({"city": "Oslo"}))) == ["p2", "p3", "p4"]
    assert ids(people.find({"tags": "new"})) == ["p4"]
    people.delete("p2")
    assert sorted(ids(people.find({"city": "Oslo"}))) == ["p3", "p4"]
    people.replace("p3", {"name": "Cy"})
    assert ids(people.find({"city": "Oslo"})) == ["p4"]
    assert ids(people.find({"city": None})) == ["p3"]


@pytest.mark.parametrize(
    "flt",
    [
        5,
        "x",
        [("a", 1)],
        {"$where": "1"},
        {"age": {"$foo": 1}},
        {"$and": []},
        {"$or": {}},
        {"$nor": [5]},
        {"age": {"$in": 5}},
        {"age": {"$size": -1}},
        {"age": {"$size": "x"}},
        {"age": {"$type": "nonsense"}},
        {"age": {"$exists": True, "$bogus": 1}},
        {"age": {"$regex": "("}},
        {"age": {"$elemMatch": 5}},
        {"age": {"$not": 5}},
        {"age": {"$all": 5}},
    ],
)
def test_bad_filters_raise_query_error(people, flt):
    with pytest.raises(QueryError):
        people.find(flt)
    with pytest.raises(QueryError):
        people.count(flt)
    with pytest.raises(QueryError):
        people.explain(flt)
    with pytest.raises(QueryError):
        people.find_one(flt)


@pytest.mark.parametrize("sort", [{"age": 2}, {"age": 0}, {"age": "asc"}, [("age", 1, 2)], 5, [("", 1)], [("age", 1), ("age", -1)], {"$natural": 1}, {"age": True}])
def test_bad_sorts_raise_query_error(people, sort):
    with pytest.raises(QueryError):
        people.find({}, sort=sort)


@pytest.mark.parametrize("skip,limit", [(-1, None), (0, -1), ("1", None), (0, "2"), (1.5, None), (0, 2.0), (True, None), (None, None)])
def test_bad_paging_raises_query_error(people, skip, limit):
    with pytest.raises(QueryError):
        people.find({}, skip=skip, limit=limit)


def test_errors_are_raised_before_reading(db):
    """find() validates eagerly, even for an empty collection."""
    coll = db.create_collection("empty")
    with pytest.raises(QueryError):
        coll.find({"a": {"$bogus": 1}})
    with pytest.raises(QueryError):
        coll.find(sort={"a": 3})


# ============================================================================ explain


def test_explain_plans(db):
    coll = db.create_collection("c", indexes=["n", "tags", "sub.k"])
    coll.insert_many(
        [{"_id": str(i), "n": i, "s": "abc"[i % 3], "tags": [f"t{i % 2}"], "sub": {"k": i % 5}} for i in range(20)]
    )
    eq = coll.explain({"n": 3})
    assert eq == {"plan": "index", "documents": 20, "index": "n", "equals": [3], "candidates": 1}
    ins = coll.explain({"n": {"$in": [1, 2, 99]}})
    assert ins["plan"] == "index" and ins["index"] == "n" and ins["equals"] == [1, 2, 99] and ins["candidates"] == 2
    rng = coll.explain({"n": {"$gte": 15}})
    assert rng["plan"] == "index" and rng["index"] == "n" and rng["candidates"] == 5
    assert rng["range"]["lo"] == 15 and rng["range"]["lo_inclusive"] is True
    rng2 = coll.explain({"n": {"$lt": 4}})
    assert rng2["range"]["hi"] == 4 and rng2["range"]["hi_inclusive"] is False and rng2["candidates"] == 4
    nested = coll.explain({"sub.k": 0})
    assert nested["index"] == "sub.k" and nested["candidates"] == 4
    multikey = coll.explain({"tags": "t1"})
    assert multikey["index"] == "tags" and multikey["candidates"] == 10
    # the most selective index wins
    both = coll.explain({"tags": "t1", "n": 7})
    assert both["index"] == "n" and both["candidates"] == 1
    # not usable: unindexed field, negations, $or with an unindexed clause, $exists, no filter
    for flt in [{"s": "a"}, {"n": {"$ne": 3}}, {"$or": [{"n": 1}, {"s": "a"}]}, {"n": {"$exists": True}}, {}, None, {"n": {"$nin": [1]}}]:
        assert coll.explain(flt) == {"plan": "scan", "documents": 20}, flt
    # a $or whose clauses are all indexed: one index plan a clause (tests/docstore/test_ds_index_or.py)
    assert coll.explain({"$or": [{"n": 1}, {"n": 2}]})["plan"] == "or"
    # plans never change answers
    for flt in [{"n": 3}, {"n": {"$in": [1, 2, 99]}}, {"n": {"$gte": 15}}, {"tags": "t1", "n": 7}, {"sub.k": 0}]:
        assert sorted(ids(coll.find(flt)), key=int) == [d["_id"] for d in coll.find(sort=[("n", 1)]) if _matches(d, flt)]


def _matches(doc, flt):
    m = mongomock.MongoClient().db.c
    m.insert_one(copy.deepcopy(doc))
    return m.count_documents(flt) == 1


def test_explain_without_indexes_scans(db):
    coll = db.create_collection("c")
    coll.insert_many([{"n": i} for i in range(3)])
    assert coll.explain({"n": 1}) == {"plan": "scan", "documents": 3}


# ============================================================================ differential vs mongomock
#
# Generators avoid the known mongomock 4.3 deviations (found by the query engine's author, see
# tests/test_query.py):
#  * Python == semantics (True == 1, dict key order ignored): no 0 / 1 / 0.0 / 1.0 / -0.0, and
#    generated objects have sorted keys;
#  * dotted paths through scalars/null yield nothing in mongomock: null operands, $exists: false
#    and $not only on single-part paths; dotted paths get exactly one operator;
#  * {$gte: null} etc.: no null comparison operands;
#  * array operands only in implicit equality; non-empty object operands only;
#  * $type: single aliases, no "null"/"int"/"long";
#  * no numeric path parts;
#  * $size / $all / $elemMatch: separate generator on documents without directly nested arrays,
#    objects of 1 or 3 keys, $size 0 or 2, $all of scalars on top-level fields, $elemMatch with
#    positive conditions.

INTS = [-3, -2, 2, 3, 7, 2**40, 10**20]
FLOATS = [-2.5, 2.0, 2.5, 3.0, 1e20]
STRS = ["", "a", "b", "ab", "B"]
KEYS = ["a", "b", "c"]
PATHS = ["a", "b", "c", "a.b", "a.c", "b.a", "a.b.c", "c.a.b"]
INDEXED = ["a", "b", "c", "a.b", "a.c", "b.a", "a.b.c"]  # not "c.a.b": some paths stay unindexed
TYPE_ALIASES = ["string", "double", "bool", "object", "array", "number"]

nonnull_scalars = st.sampled_from([True, False, *INTS, *FLOATS, *STRS])
scalars = st.one_of(st.none(), nonnull_scalars)


def _values(nested_arrays=True, dict_sizes=(0, 1, 2, 3)):
    def extend(children):
        elems = children if nested_arrays else children.filter(lambda v: not isinstance(v, list))
        kvs = st.lists(
            st.tuples(st.sampled_from(KEYS), children),
            min_size=min(dict_sizes),
            max_size=max(dict_sizes),
            unique_by=lambda kv: kv[0],
        )
        if len(dict_sizes) < max(dict_sizes) - min(dict_sizes) + 1:
            kvs = kvs.filter(lambda kvs: len(kvs) in dict_sizes)
        dicts = kvs.map(lambda kvs: dict(sorted(kvs)))
        return st.lists(elems, max_size=3) | dicts

    return st.recursive(scalars, extend, max_leaves=8)


def _documents(vals):
    doc = st.lists(st.tuples(st.sampled_from(KEYS), vals), max_size=3, unique_by=lambda kv: kv[0]).map(dict)
    return st.lists(doc, min_size=1, max_size=10).map(lambda ds: [{"_id": f"d{i}", **d} for i, d in enumerate(ds)])


def _pool_scalars(docs):
    out = []

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        elif v is not None:
            out.append(v)

    for d in docs:
        walk({k: v for k, v in d.items() if k != "_id"})
    return out


small_dicts = st.lists(st.tuples(st.sampled_from(KEYS), scalars), min_size=1, max_size=2, unique_by=lambda kv: kv[0]).map(
    lambda kvs: dict(sorted(kvs))
)


@st.composite
def _positive_op(draw, nonnull):
    op = draw(st.sampled_from(["$eq", "$gt", "$gte", "$lt", "$lte", "$in", "$type", "$exists"]))
    if op in ("$eq", "$gt", "$gte", "$lt", "$lte"):
        return {op: draw(nonnull | small_dicts)}
    if op == "$in":
        return {op: draw(st.lists(nonnull, max_size=3))}
    if op == "$type":
        return {op: draw(st.sampled_from(TYPE_ALIASES))}
    return {"$exists": True}


@st.composite
def _condition(draw, nonnull, path):
    single = "." not in path
    operand = (st.none() | nonnull) if single else nonnull
    kind = draw(st.sampled_from(["scalar", "scalar", "dict", "list", "ops", "ops", "ops", "ops"]))
    if kind == "scalar":
        return draw(operand)
    if kind == "dict":
        return draw(small_dicts)
    if kind == "list":
        return draw(st.lists(nonnull | small_dicts, max_size=3))
    ops = ["$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$type"]
    if single:
        ops.append("$not")
    spec = {}
    for op in draw(st.lists(st.sampled_from(ops), min_size=1, max_size=2 if single else 1, unique=True)):
        if op in ("$eq", "$ne"):
            spec[op] = draw(operand | small_dicts)
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            spec[op] = draw(nonnull | small_dicts)
        elif op in ("$in", "$nin"):
            spec[op] = draw(st.lists(operand, max_size=3))
        elif op == "$exists":
            spec[op] = True if not single else draw(st.booleans())
        elif op == "$type":
            spec[op] = draw(st.sampled_from(TYPE_ALIASES))
        else:
            spec[op] = draw(_positive_op(nonnull))
    return spec


@st.composite
def _filters(draw, nonnull, depth=2):
    flt = {}
    for path in draw(st.lists(st.sampled_from(PATHS), max_size=2, unique=True)):
        flt[path] = draw(_condition(nonnull, path))
    if depth > 0 and draw(st.integers(0, 2)) == 0:
        op = draw(st.sampled_from(["$and", "$or", "$nor"]))
        flt[op] = draw(st.lists(_filters(nonnull, depth - 1), min_size=1, max_size=3))
    return flt


@st.composite
def _array_filters(draw, nonnull):
    flt = {}
    for path in draw(st.lists(st.sampled_from(PATHS), min_size=1, max_size=2, unique=True)):
        single = "." not in path
        kind = draw(st.sampled_from(["size", "elem_value", "elem_object"] + (["all"] if single else [])))
        if kind == "size":
            flt[path] = {"$size": draw(st.sampled_from([0, 2]))}
        elif kind == "all":
            flt[path] = {"$all": draw(st.lists(nonnull, min_size=1, max_size=2))}
        elif kind == "elem_value":
            inner = {}
            for _ in range(draw(st.integers(1, 2))):
                inner.update(draw(_positive_op(nonnull)))
            flt[path] = {"$elemMatch": inner}
        else:
            inner = {}
            for p in draw(st.lists(st.sampled_from(["a", "b", "c", "a.b"]), min_size=1, max_size=2, unique=True)):
                inner[p] = draw(nonnull | _positive_op(nonnull))
            flt[path] = {"$elemMatch": inner}
    return flt


@st.composite
def _case(draw, doc_values, filter_kind):
    docs = draw(_documents(doc_values))
    seen = _pool_scalars(docs)
    nonnull = (st.sampled_from(seen) | nonnull_scalars) if seen else nonnull_scalars
    flts = draw(st.lists(filter_kind(nonnull), min_size=1, max_size=3))
    return docs, flts, draw(st.booleans())


_array_values = _values(nested_arrays=False, dict_sizes=(1, 3))
_array_elements = _array_values.filter(lambda v: not isinstance(v, list))
_array_docs_values = st.one_of(st.lists(_array_elements, max_size=4), _array_values)

DIFF = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])


class _Differential:
    """One database for all examples; each example gets fresh collections."""

    def __init__(self, tmp):
        self.db = docstore.open(tmp)
        self.n = 0

    def check(self, docs, flts, index_before_insert):
        self.n += 1
        plain = self.db.create_collection(f"plain{self.n}")
        plain.insert_many(copy.deepcopy(docs))
        if index_before_insert:
            indexed = self.db.create_collection(f"idx{self.n}", indexes=INDEXED)
            indexed.insert_many(copy.deepcopy(docs))
        else:
            indexed = self.db.create_collection(f"idx{self.n}")
            indexed.insert_many(copy.deepcopy(docs))
            for f in INDEXED:
                indexed.create_index(f)  # backfilled
        mock = mongomock.MongoClient().db.c
        mock.insert_many(copy.deepcopy(docs))
        for flt in flts:
            expected = sorted(d["_id"] for d in mock.find(copy.deepcopy(flt)))
            assert sorted(ids(plain.find(flt))) == expected, flt
            assert sorted(ids(indexed.find(flt))) == expected, (flt, indexed.explain(flt))
            assert plain.count(flt) == indexed.count(flt) == len(expected)


def test_filters_match_mongomock_with_and_without_indexes():
    with tempfile.TemporaryDirectory() as tmp:
        diff = _Differential(tmp)

        @DIFF
        @given(_case(_values(), _filters))
        def run(case):
            diff.check(*case)

        try:
            run()
            assert diff.db.audit().ok
        finally:
            diff.db.close()


def test_array_operators_match_mongomock_with_and_without_indexes():
    with tempfile.TemporaryDirectory() as tmp:
        diff = _Differential(tmp)

        @DIFF
        @given(_case(_array_docs_values, _array_filters))
        def run(case):
            diff.check(*case)

        try:
            run()
        finally:
            diff.db.close()


def test_index_plans_are_used_in_the_differential_setup(tmp_path):
    """The differential test does exercise index plans (not only scans)."""
    with docstore.open(tmp_path / "db") as db:
        coll = db.create_collection("c", indexes=INDEXED)
        coll.insert_many([{"a": {"b": 2}}, {"a": [{"b": 3}, {"b": [2, 7]}]}, {"a": 2.5}, {"b": None}])
        for flt, expected in [
            ({"a.b": 2}, 2),
            ({"a.b": {"$gte": 3}}, 1),
            ({"a": 2.5}, 1),
            ({"b": None}, 4),
            ({"a.b": {"$in": [7, 3]}}, 1),
        ]:
            assert coll.explain(flt)["plan"] == "index", flt
            assert coll.count(flt) == expected, flt
