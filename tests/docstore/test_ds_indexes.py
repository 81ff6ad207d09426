"""Secondary indexes: creation and backfill, unique constraints, nested and multikey fields,
null for missing fields, persistence and rebuild, audit."""

from __future__ import annotations

import json

import shutil

import pytest
from hypothesis import given
from hypothesis import strategies as st

import docstore
from docstore import DuplicateKeyError, QueryError
from docstore.collections.indexes import keys_for
from docstore.collections.keyenc import encode_index_value
from docstore.collections.query import index_keys


def ids(docs):
    return sorted(d["_id"] for d in docs)


def _meta_revisions(db, name):
    return len(db.ledger.history(b"c\x00" + name.encode()))


def test_index_on_empty_collection_is_maintained(db):
    coll = db.create_collection("c")
    coll.create_index("n")
    assert coll.indexes() == [{"field": "n", "unique": False}]
    coll.insert_many([{"_id": str(i), "n": i % 3} for i in range(9)])
    plan = coll.explain({"n": 1})
    assert plan["plan"] == "index" and plan["candidates"] == 3
    assert ids(coll.find({"n": 1})) == ["1", "4", "7"]
    coll.update("1", {"$set": {"n": 2}})
    coll.delete("4")
    coll.replace("7", {"m": 1})
    assert ids(coll.find({"n": 1})) == []
    assert coll.explain({"n": 1})["candidates"] == 0
    assert ids(coll.find({"n": 2})) == ["1", "2", "5", "8"]
    assert db.audit().ok


@pytest.mark.embedded
def test_create_index_backfills_a_full_collection(db):
    coll = db.create_collection("c")
    docs = [{"_id": f"{i:03}", "n": i % 7, "s": f"s{i % 4}", "sub": {"k": i % 5}} for i in range(200)]
    coll.insert_many(docs)
    queries = [{"n": 3}, {"n": {"$gte": 5}}, {"s": {"$in": ["s1", "s3"]}}, {"sub.k": {"$lt": 2}}, {"n": None}]
    before = {json.dumps(q): ids(coll.find(q)) for q in queries}
    assert all(coll.explain(q)["plan"] == "scan" for q in queries)
    tx_before, revs_before = db.tx_id, _meta_revisions(db, "c")
    coll.create_index("n")
    coll.create_index("s")
    coll.create_index("sub.k")
    assert db.tx_id == tx_before + 3
    assert _meta_revisions(db, "c") == revs_before + 3
    for q in queries:
        assert coll.explain(q)["plan"] == "index", q
        assert ids(coll.find(q)) == before[json.dumps(q)], q
    assert coll.explain({"n": 3})["candidates"] == len(before[json.dumps({"n": 3})])
    assert db.audit().ok


@pytest.mark.parametrize("field", ["", "$n", "a..b", ".a", "a.", 5, None])
def test_bad_index_fields(db, field):
    coll = db.create_collection("c")
    before = db.tx_id
    with pytest.raises(QueryError):
        coll.create_index(field)
    assert db.tx_id == before and coll.indexes() == []


def test_duplicate_index_and_bad_unique_flag(db):
    coll = db.create_collection("c", indexes=["n"])
    before = db.tx_id
    with pytest.raises(QueryError):
        coll.create_index("n")
    with pytest.raises(QueryError):
        coll.create_index("n", unique=True)
    with pytest.raises(QueryError):
        coll.create_index("m", unique="yes")
    assert db.tx_id == before
    assert coll.indexes() == [{"field": "n", "unique": False}]


# ============================================================================ unique


def test_unique_index_rejects_duplicates_on_insert(db):
    coll = db.create_collection("users", indexes=[{"field": "email", "unique": True}])
    coll.insert({"_id": "u1", "email": "a@x"})
    before = db.tx_id
    with pytest.raises(DuplicateKeyError) as info:
        coll.insert({"_id": "u2", "email": "a@x"})
    assert "u1" in str(info.value)
    with pytest.raises(DuplicateKeyError):
        coll.insert_many([{"_id": "u3", "email": "b@x"}, {"_id": "u4", "email": "b@x"}])
    with pytest.raises(DuplicateKeyError):
        coll.insert_many([{"_id": "u5", "email": "c@x"}, {"_id": "u6", "email": "a@x"}])
    assert db.tx_id == before
    assert ids(coll.find()) == ["u1"]
    coll.insert({"_id": "u7", "email": "A@x"})  # case matters
    assert db.audit().ok


def test_unique_index_rejects_duplicates_on_update_and_replace(db):
    coll = db.create_collection("users", indexes=[{"field": "email", "unique": True}])
    coll.insert_many([{"_id": "u1", "email": "a"}, {"_id": "u2", "email": "b"}])
    before = db.tx_id
    with pytest.raises(DuplicateKeyError):
        coll.update("u2", {"$set": {"email": "a"}})
    with pytest.raises(DuplicateKeyError):
        coll.replace("u2", {"email": "a"})
    assert db.tx_id == before
    assert coll.get("u2")["email"] == "b"
    # updating a document to its own value is fine
    coll.update("u1", {"$set": {"email": "a", "x": 1}})
    coll.replace("u1", {"email": "a"})
    assert db.audit().ok


def test_unique_numbers_compare_as_mongo_does(db):
    coll = db.create_collection("c", indexes=[{"field": "n", "unique": True}])
    coll.insert({"n": 1})
    with pytest.raises(DuplicateKeyError):
        coll.insert({"n": 1.0})  # 1 and 1.0 are the same index key
    coll.insert({"n": True})  # booleans are not numbers
    coll.insert({"n": "1"})
    assert coll.count() == 3


def test_missing_fields_are_null_in_unique_indexes(db):
    coll = db.create_collection("c", indexes=[{"field": "email", "unique": True}])
    coll.insert({"_id": "a"})
    with pytest.raises(DuplicateKeyError):
        coll.insert({"_id": "b"})  # a second missing value is a second null (as in MongoDB)
    with pytest.raises(DuplicateKeyError):
        coll.insert({"_id": "c", "email": None})
    coll.insert({"_id": "d", "email": "x"})
    assert ids(coll.find()) == ["a", "d"]


def test_freeing_a_unique_value_lets_another_document_take_it(db):
    coll = db.create_collection("users", indexes=[{"field": "email", "unique": True}])
    coll.insert_many([{"_id": "u1", "email": "a"}, {"_id": "u2", "email": "b"}])
    coll.update("u1", {"$set": {"email": "a2"}})
    coll.insert({"_id": "u3", "email": "a"})  # freed by update
    coll.delete("u2")
    coll.insert({"_id": "u4", "email": "b"})  # freed by delete
    coll.replace("u4", {"email": "c"})
    coll.update("u3", {"$set": {"email": "b"}})  # freed by replace... then "a" is free again
    coll.insert({"_id": "u5", "email": "a"})
    assert {d["_id"]: d["email"] for d in coll.find()} == {"u1": "a2", "u3": "b", "u4": "c", "u5": "a"}
    with pytest.raises(DuplicateKeyError):
        coll.insert({"email": "c"})
    # a re-inserted id may take back its old value
    coll.delete("u5")
    coll.insert({"_id": "u5", "email": "a"})
    assert db.audit().ok


@pytest.mark.embedded
def test_unique_value_moved_within_one_transaction(db):
    coll = db.create_collection("users", indexes=[{"field": "email", "unique": True}])
    coll.insert_many([{"_id": "u1", "email": "a"}, {"_id": "u2", "email": "b"}])
    with db.transaction() as tx:
        users = tx["users"]
        users.update("u1", {"$set": {"email": "tmp"}})
        users.update("u2", {"$set": {"email": "a"}})
        users.update("u1", {"$set": {"email": "b"}})
    assert coll.get("u1")["email"] == "b" and coll.get("u2")["email"] == "a"
    with pytest.raises(DuplicateKeyError):
        coll.insert({"email": "a"})
    coll.insert({"email": "tmp"})  # released at the end of that transaction
    assert db.audit().ok


@pytest.mark.embedded
def test_unique_index_claims_are_on_the_ledger(db):
    coll = db.create_collection("users", indexes=[{"field": "email", "unique": True}])
    coll.insert({"_id": "u1", "email": "a"})
    claims = list(db.ledger.scan(b"u\x00users\x00email\x00"))
    assert [e.value for e in claims] == [b"u1"]
    coll.delete("u1")
    assert list(db.ledger.scan(b"u\x00users\x00email\x00")) == []


@pytest.mark.embedded
def test_unique_index_creation_on_duplicate_data_names_both_documents(db):
    coll = db.create_collection("c")
    coll.insert_many([{"_id": "first", "k": 1}, {"_id": "other", "k": 2}, {"_id": "second", "k": 1.0}])
    before, revs = db.tx_id, _meta_revisions(db, "c")
    with pytest.raises(DuplicateKeyError) as info:
        coll.create_index("k", unique=True)
    assert "first" in str(info.value) and "second" in str(info.value)
    assert db.tx_id == before
    assert _meta_revisions(db, "c") == revs
    assert coll.indexes() == []
    coll.insert({"k": 1})  # no constraint was installed
    # after removing the duplicates the index can be created
    for d in list(coll.find({"k": 1})):
        if d["_id"] != "first":
            coll.delete(d["_id"])
    coll.create_index("k", unique=True)
    assert coll.indexes() == [{"field": "k", "unique": True}]
    with pytest.raises(DuplicateKeyError):
        coll.insert({"k": 1})
    assert db.audit().ok


def test_unique_multikey_and_nested(db):
    coll = db.create_collection("c", indexes=[{"field": "tags", "unique": True}, {"field": "a.b", "unique": True}])
    coll.insert({"_id": "x", "tags": ["t1", "t2", "t1"], "a": [{"b": 1}, {"b": 2}]})
    with pytest.raises(DuplicateKeyError):
        coll.insert({"tags": ["t3", "t2"], "a": {"b": 9}})
    with pytest.raises(DuplicateKeyError):
        coll.insert({"tags": ["t9"], "a": {"b": 2}})
    coll.insert({"_id": "y", "tags": ["t3"], "a": {"b": 3}})
    coll.update("x", {"$set": {"tags": ["t1"]}})  # frees t2
    coll.insert({"_id": "z", "tags": "t2", "a": {"b": [4, 5]}})
    assert ids(coll.find({"tags": "t2"})) == ["z"]
    assert ids(coll.find({"a.b": 5})) == ["z"]
    assert db.audit().ok


# ============================================================================ nested / multikey / null


def test_nested_and_multikey_indexes(db):
    coll = db.create_collection("c", indexes=["tags", "a.b", "items.price"])
    coll.insert_many(
        [
            {"_id": "1", "tags": ["x", "y"], "a": {"b": 1}, "items": [{"price": 5}, {"price": 10}]},
            {"_id": "2", "tags": ["y"], "a": [{"b": 2}, {"b": 1}], "items": [{"price": 20}]},
            {"_id": "3", "tags": [], "a": {"b": [3, 4]}, "items": []},
            {"_id": "4", "tags": "x", "a": 5},
            {"_id": "5"},
        ]
    )
    cases = [
        ({"tags": "x"}, ["1", "4"]),
        ({"tags": "y"}, ["1", "2"]),
        ({"tags": {"$in": ["x", "y"]}}, ["1", "2", "4"]),
        ({"a.b": 1}, ["1", "2"]),
        ({"a.b": 4}, ["3"]),
        ({"a.b": {"$gte": 2}}, ["2", "3"]),
        ({"items.price": {"$gt": 7}}, ["1", "2"]),
        ({"items.price": {"$gt": 7, "$lt": 15}}, ["1"]),  # 5 and 10: different elements may match
        ({"items.price": 5}, ["1"]),
        ({"a.b": None}, ["4", "5"]),
        ({"tags": None}, ["5"]),
    ]
    for flt, expected in cases:
        assert coll.explain(flt)["plan"] == "index", flt
        assert ids(coll.find(flt)) == expected, flt
    # multikey candidates are deduplicated
    assert [d["_id"] for d in coll.find({"tags": {"$in": ["x", "y"]}})].count("1") == 1
    assert db.audit().ok


def test_missing_fields_are_indexed_as_null(db):
    coll = db.create_collection("c", indexes=["x"])
    coll.insert_many([{"_id": "a", "x": None}, {"_id": "b"}, {"_id": "c", "x": 0}, {"_id": "d", "y": {"x": 1}}])
    plan = coll.explain({"x": None})
    assert plan["plan"] == "index" and plan["candidates"] == 3
    assert ids(coll.find({"x": None})) == ["a", "b", "d"]
    assert ids(coll.find({"x": {"$exists": False}})) == ["b", "d"]
    coll.update("b", {"$set": {"x": 1}})
    assert ids(coll.find({"x": None})) == ["a", "d"]
    coll.update("b", {"$unset": {"x": 1}})
    assert ids(coll.find({"x": None})) == ["a", "b", "d"]
    assert db.audit().ok


# ============================================================================ persistence


def _answers(coll, queries):
    return [(ids(coll.find(q)), coll.explain(q)) for q in queries]


def test_indexes_persist_and_rebuild_from_the_ledger(tmp_path):
    path = tmp_path / "db"
    queries = [{"n": 3}, {"n": {"$gt": 4}}, {"tags": "t1"}, {"sub.k": 2}, {"email": "e5"}, {"n": None}]
    with docstore.open(path) as db:
        coll = db.create_collection("c", indexes=["n", {"field": "email", "unique": True}])
        coll.insert_many(
            [{"_id": f"{i:02}", "n": i % 7, "tags": [f"t{i % 3}"], "sub": {"k": i % 4}, "email": f"e{i}"} for i in range(40)]
        )
        coll.create_index("tags")
        coll.create_index("sub.k")
        for i in range(0, 40, 5):
            coll.update(f"{i:02}", {"$inc": {"n": 1}, "$set": {"email": f"new{i}"}})
        for i in range(1, 40, 9):
            coll.delete(f"{i:02}")
        expected = _answers(coll, queries)
        indexes = coll.indexes()
        assert db.audit().ok
    for drop_snapshot in (False, True):
        if drop_snapshot:
            shutil.rmtree(path / "state.lmdb")
        with docstore.open(path) as db:
            coll = db["c"]
            assert coll.indexes() == indexes
            assert _answers(coll, queries) == expected
            assert db.audit().ok
            with pytest.raises(DuplicateKeyError):
                coll.insert({"email": "e2"})
            coll.insert({"email": "e5"})  # e5 was freed by the update before the restart
            with pytest.raises(DuplicateKeyError):
                coll.insert({"email": "e5"})
            coll.delete(coll.find_one({"email": "e5"})["_id"])


def test_index_changes_after_reopen_are_replayed(tmp_path):
    """Transactions the derived state does not reflect yet (index creation included) are
    applied from the log at open."""
    path = tmp_path / "db"
    with docstore.open(path) as db:
        coll = db.create_collection("c")
        coll.insert_many([{"n": i} for i in range(10)])
    shutil.copytree(path / "state.lmdb", tmp_path / "older")
    with docstore.open(path) as db:
        db["c"].create_index("n")
        db["c"].insert({"n": 3})
        expected = _answers(db["c"], [{"n": 3}, {"n": {"$lt": 2}}])
    shutil.rmtree(path / "state.lmdb")
    shutil.copytree(tmp_path / "older", path / "state.lmdb")  # an older state: the rest comes from the log
    with docstore.open(path) as db:
        assert db["c"].indexes() == [{"field": "n", "unique": False}]
        assert _answers(db["c"], [{"n": 3}, {"n": {"$lt": 2}}]) == expected
        assert db.audit().ok


def test_audit_detects_a_damaged_index(db, tmp_path):
    """audit() really compares indexes with the documents (so `audit().ok` means something):
    an index entry lost from the derived state on disk (removed through LMDB itself)."""
    from docstore.engine.store import Store

    coll = db.create_collection("c", indexes=["n"])
    coll.insert_many([{"n": i} for i in range(5)])
    assert db.audit().ok
    victim = next(iter(coll.find()))["_id"]
    with docstore.open(tmp_path / "copy") as other:  # the same data in a database of our own
        other.create_collection("c", indexes=["n"]).insert_many([{"_id": d["_id"], "n": d["n"]} for d in coll.find()])
    store = Store(str(tmp_path / "copy"), readonly=False)  # a forger uses the real code
    with store.write() as txn:
        victim_doc = next(d for d in coll.find() if d["_id"] == victim)
        store.index_delete(txn, "c", "n", keys_for(victim_doc, "n"), victim)  # a lost index entry
    store.close()
    with docstore.open(tmp_path / "copy", readonly=True) as damaged:
        report = damaged.audit()
    assert not report.ok
    assert any("index" in p for p in report.problems)


def test_range_uses_both_bounds_unless_the_path_meets_an_array(db):
    c = db.create_collection("r", indexes=["x"])
    c.insert_many([{"_id": f"d{i}", "x": i} for i in range(200)])
    flt = {"x": {"$gte": 50, "$lt": 60}}
    plan = c.explain(flt)
    assert plan["plan"] == "index" and plan["candidates"] == 10  # both ends of the range used
    assert sorted(d["x"] for d in c.find(flt)) == list(range(50, 60))
    # one array anywhere on the path: an element may meet each bound, so only one bound is safe
    c.insert({"_id": "arr", "x": [5, 55]})
    assert c.explain(flt)["candidates"] > 11
    assert sorted(d["_id"] for d in c.find(flt)) == sorted([f"d{i}" for i in range(50, 60)] + ["arr"])
    # the array gone again, both bounds are used again; the rebuilt state agrees (audit)
    c.update("arr", {"$set": {"x": 1000}})
    assert c.explain(flt)["candidates"] == 10
    assert db.audit().ok


_json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(-2, 2), st.sampled_from(["a", "b", ""]))
_json_value = st.recursive(
    _json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["a", "b", "0"]), inner, max_size=3),
    max_leaves=8,
)


@given(
    doc=st.dictionaries(st.sampled_from(["a", "b", "0"]), _json_value, max_size=3),
    field=st.sampled_from(["a", "b", "a.b", "a.0", "a.b.a", "0", "b.0.a"]),
)
def test_index_keys_fast_path_matches_mongo_path_rules(doc, field):
    """keys_for's direct answer for object-only paths equals the general multikey rules."""
    general = []
    for v in index_keys(doc, field):
        e = encode_index_value(v)
        if e not in general:
            general.append(e)
    assert keys_for(doc, field) == general
    assert keys_for(doc, field, field.split(".")) == general
