"""Compound indexes: ``create_index(["a", "b"])`` (or "a,b"): keys concatenated in field order,
equality on the first fields then a range on the next; unique compound claims; parallel arrays
refused; proofs over their ranges (embedded, remote and PostgreSQL through the ``db`` fixture)."""

from __future__ import annotations

import shutil
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docstore
from docstore import DuplicateKeyError, InvalidDocumentError, NotFoundError, QueryError, VerificationError
from docstore.collections.indexspec import check_spec, compound_plan
from docstore.collections.query import compile_filter
from index_testlib import check_same, differential


def ids(docs: Any) -> list[str]:
    return sorted(d["_id"] for d in docs)


def _visits(n: int) -> list[dict]:
    return [{"_id": f"{i:03}", "site": f"s{i % 4}", "age": i % 50, "arm": "ab"[i % 2],
             **({"tags": [i % 3, 7]} if i % 5 == 0 else {})} for i in range(n)]


def test_compound_index_answers_prefix_conditions(db):
    c = db.create_collection("v", indexes=[{"field": ["site", "age"]}])
    assert c.indexes() == [{"field": "site,age", "unique": False, "fields": ["site", "age"]}]
    c.insert_many(_visits(120))
    c.create_index("arm,tags")
    everything = list(c.find({}))
    cases = {
        "site,age": [{"site": "s1"}, {"site": "s1", "age": {"$gt": 40}}, {"site": {"$in": ["s1", "s3"]}, "age": 7},
                     {"site": "s2", "age": {"$gte": 10, "$lt": 20}}, {"site": {"$gte": "s2"}}, {"site": "s0", "arm": "a"}],
        "arm,tags": [{"arm": "a", "tags": 1}, {"arm": "b"}],
        None: [{"age": 3}, {"tags": 1}],
    }
    for index, filters in cases.items():
        for flt in filters:
            plan = c.explain(flt)
            assert plan.get("index") == index, (flt, plan)
            match = compile_filter(flt)
            assert ids(c.find(flt)) == ids(d for d in everything if match(d)), flt
            assert c.count(flt) == sum(1 for d in everything if match(d))
    c.update("001", {"$set": {"age": 49}})
    c.delete("005")
    assert ids(c.find({"site": "s1", "age": 49})) == ["001", "049"]
    assert db.audit().ok


def test_compound_ranges_narrow_with_equality_then_a_range():
    spec = check_spec({"field": ["a", "b", "c"]})
    rank, ranges = compound_plan(spec, {"a": 1, "b": {"$in": [2, 3]}, "c": {"$gt": 0}}, True)
    assert rank == (0, -3, 2) and len(ranges) == 2
    assert compound_plan(spec, {"b": 1}, True) is None
    rank, ranges = compound_plan(spec, {"a": {"$gt": 1}, "b": 2}, True)
    assert rank == (1, -1, 1)
    assert check_spec("a,b") == check_spec(["a", "b"]) == {"field": "a,b", "unique": False, "fields": ["a", "b"]}
    assert check_spec(["a"]) == {"field": "a", "unique": False}
    for bad in (["a", "a"], [], ["a", "$b"], {"field": ["a", "b"], "sparse": True}, ["a"] * 17):
        with pytest.raises(QueryError):
            check_spec(bad if isinstance(bad, dict) else {"field": bad})


def test_unique_compound_index_and_parallel_arrays(db):
    c = db.create_collection("v")
    c.insert_many([{"_id": "1", "site": "s1", "subject": 1}, {"_id": "2", "site": "s2", "subject": 1}])
    c.create_index(["site", "subject"], unique=True)
    c.insert({"_id": "3", "site": "s1", "subject": 2})
    with pytest.raises(DuplicateKeyError):
        c.insert({"site": "s2", "subject": 1})
    c.update("2", {"$set": {"subject": 9}})
    c.insert({"_id": "4", "site": "s2", "subject": 1})
    c.insert({"_id": "5", "site": ["s7", "s8"], "subject": 3})  # one array: fine
    with pytest.raises(DuplicateKeyError):
        c.insert({"site": "s8", "subject": 3})
    with pytest.raises(InvalidDocumentError, match="arrays in fields 'site' and 'subject'"):
        c.insert({"site": ["a"], "subject": [1, 2]})
    with pytest.raises(InvalidDocumentError):
        c.update("1", {"$set": {"site": ["x"], "subject": [5]}})
    with pytest.raises(InvalidDocumentError):
        with db.transaction() as tx:
            tx["v"].insert({"site": ["a"], "subject": [1, 2]})
    c.insert({"_id": "p", "a": [1, 2], "b": [3, 4]})
    with pytest.raises(InvalidDocumentError):
        c.create_index(["a", "b"])
    with pytest.raises(NotFoundError):
        c.drop_index(["subject", "site"])  # the order of fields names another index
    c.drop_index(["site", "subject"])
    c.insert({"site": "s2", "subject": 1})
    assert c.indexes() == []


_V = st.one_of(st.none(), st.integers(0, 4), st.sampled_from(["x", "y"]))
_DOC = st.fixed_dictionaries({}, optional={"a": _V, "b": st.one_of(_V, st.lists(st.integers(0, 4), max_size=3)), "c": _V})
_COND = st.one_of(st.integers(0, 4), st.sampled_from(["x", "y"]),
                  st.builds(lambda op, v: {op: v}, st.sampled_from(["$gt", "$gte", "$lt", "$lte"]), st.integers(0, 4)),
                  st.builds(lambda v: {"$in": v}, st.lists(st.integers(0, 4), max_size=3)),
                  st.builds(lambda lo, hi: {"$gt": lo, "$lt": hi}, st.integers(0, 4), st.integers(0, 4)))
_FILTER = st.dictionaries(st.sampled_from(["a", "b", "c"]), _COND, min_size=1, max_size=3)


@settings(max_examples=50, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
          deadline=None)
@given(docs=st.lists(_DOC, min_size=1, max_size=15), filters=st.lists(_FILTER, min_size=1, max_size=5))
def test_compound_differential_against_a_scan_mongomock_and_proofs(tmp_path_factory, docs, filters):
    with docstore.open(tmp_path_factory.mktemp("cmp") / "db") as db:
        indexes = [["a", "b"], "b,c", {"field": ["c", "a"], "partial_filter": {"c": {"$gt": 1}}}]
        plain, indexed, mongo = differential(db, indexes, docs)
        state = db.state()
        for flt in filters:
            want = check_same(plain, indexed, flt, mongo)
            proof = indexed.prove_find(flt, with_header=True)
            assert ids(docstore.verify(proof.to_dict(), state)) == want, flt
        assert db.audit().ok


@pytest.fixture
def proven(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("v", indexes=[["site", "age"]])
        c.insert_many(_visits(80))
        yield db, c


def test_a_compound_proof_with_another_range_is_refused(proven):
    import base64

    from docstore.proofs.provestate import document_entries
    from docstore.statemap import encoding
    from docstore.statemap import hashing as mh
    from docstore.statemap.prove import prove_range

    db, c = proven
    flt = {"site": "s1", "age": {"$gte": 40}}
    proof = c.prove_find(flt, with_header=True)
    assert proof.indexed == "site,age"
    assert ids(docstore.verify(proof.to_dict(), db.state())) == ids(c.find(flt))
    d = proof.to_dict()
    # a lying server proves a narrower range (age >= 45): genuine map proofs, a result missing documents
    lo = mh.index_key_range("v", "site,age", b"\x30s1\x00\x00\x20", None)[0]
    good_lo = base64.b64decode(d["ranges"][0][0])
    hi = base64.b64decode(d["ranges"][0][1])
    narrower = lo + (45).to_bytes(1, "big")
    eng = db._engine
    with eng.store.read() as txn:
        node = prove_range(eng.store.smap, txn, narrower, hi)
        docs, seen = [], set()
        for _k, v in eng.store.smap.items(txn, narrower, hi):
            at = mh.parse_location(v)[:2]
            if at not in seen:
                seen.add(at)
                docs.append(document_entries(eng, *at)[1].to_dict())
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    assert narrower != good_lo
    d.update(documents=docs, ranges=[[b64(narrower), b64(hi), b64(encoding.encode(node))]])
    with pytest.raises(VerificationError, match="range check failed"):
        docstore.verify(d, db.state())


def test_compound_indexes_rebuild_with_the_same_rows(tmp_path):
    path = tmp_path / "db"
    with docstore.open(path) as db:
        c = db.create_collection("v", indexes=[["site", "age"]])
        c.insert_many(_visits(60))
        c.create_index(["arm", "tags"], unique=False)
        c.delete("003")
        with db._engine.store.read() as txn:
            rows = list(db._engine.store.dump(txn))
        expected = ids(c.find({"site": "s1", "age": {"$lt": 30}}))
    shutil.rmtree(path / "state.lmdb")
    with pytest.warns(UserWarning, match="rebuilt"):
        db = docstore.open(path)
    with db:
        with db._engine.store.read() as txn:
            assert list(db._engine.store.dump(txn)) == rows
        assert ids(db["v"].find({"site": "s1", "age": {"$lt": 30}})) == expected
        assert db.audit().ok
