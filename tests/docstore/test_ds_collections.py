"""Collections: creation, lookup, names, definitions, and their survival across reopen."""

from __future__ import annotations

import shutil

import pytest

import docstore
import kvcore
from docstore import (
    CollectionExistsError,
    CollectionNotFoundError,
    DocstoreError,
    QueryError,
    SchemaError,
)

SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
    "required": ["name"],
}


def test_new_database_has_no_collections(db):
    assert db.collections() == []
    assert "people" not in db
    assert db.tx_id == 0


def test_create_collection_returns_usable_collection(db):
    people = db.create_collection("people")
    assert people.name == "people"
    doc_id = people.insert({"name": "Ada"})
    assert people.get(doc_id) == {"_id": doc_id, "name": "Ada"}
    assert db.collections() == ["people"]


def test_lookup_forms_agree(db):
    db.create_collection("people")
    a, b = db.collection("people"), db["people"]
    assert a.name == b.name == "people"
    assert "people" in db
    assert "other" not in db
    assert 42 not in db  # non-strings are simply not collections
    doc_id = a.insert({"x": 1})
    assert b.get(doc_id)["x"] == 1


def test_collections_are_sorted(db):
    for name in ["zeta", "Alpha", "beta", "_under", "9lives"]:
        db.create_collection(name)
    assert db.collections() == sorted(["zeta", "Alpha", "beta", "_under", "9lives"])


def test_create_existing_collection_raises_and_keeps_the_original(db):
    db.create_collection("people", schema=SCHEMA, indexes=["age"])
    tx_before = db.tx_id
    with pytest.raises(CollectionExistsError):
        db.create_collection("people")
    with pytest.raises(CollectionExistsError):
        db.create_collection("people", indexes=["name"])
    assert db.tx_id == tx_before
    assert db["people"].schema == SCHEMA
    assert db["people"].indexes() == [{"field": "age", "unique": False}]
    assert issubclass(CollectionExistsError, DocstoreError)


def test_missing_collection_raises_not_found(db):
    with pytest.raises(CollectionNotFoundError):
        db.collection("nope")
    with pytest.raises(CollectionNotFoundError):
        db["nope"]
    with pytest.raises(CollectionNotFoundError):
        with db.transaction() as tx:
            tx["nope"].insert({"a": 1})
    assert db.tx_id == 0


@pytest.mark.parametrize(
    "name",
    ["", ".hidden", "-dash", "has space", "slash/name", "nul\x00", "a" * 65, "é", "a:b", 5, None, b"bytes"],
)
def test_invalid_collection_names_are_rejected(db, name):
    with pytest.raises(QueryError):
        db.create_collection(name)
    with pytest.raises(QueryError):
        db.collection(name)
    assert db.collections() == []
    assert db.tx_id == 0


@pytest.mark.parametrize("name", ["a", "A_b.c-d", "_x", "0", "a" * 64, "a.", "x-"])
def test_valid_collection_names(db, name):
    db.create_collection(name)
    assert name in db
    assert db[name].info()["name"] == name


def test_indexes_as_names_and_specs(db):
    coll = db.create_collection(
        "c", indexes=["a", {"field": "b.c", "unique": True}, {"field": "d"}, {"field": "e", "unique": False}]
    )
    assert coll.indexes() == [
        {"field": "a", "unique": False},
        {"field": "b.c", "unique": True},
        {"field": "d", "unique": False},
        {"field": "e", "unique": False},
    ]


def test_single_index_name_is_accepted(db):
    coll = db.create_collection("c", indexes="a")
    assert coll.indexes() == [{"field": "a", "unique": False}]


@pytest.mark.parametrize(
    "indexes",
    [
        ["a", "a"],
        [{"field": "a"}, {"field": "a", "unique": True}],
        [{"field": "a", "unique": 1}],
        [{"field": "a", "sparse": "yes"}],  # (sparse is an option since indexes have kinds)
        [{"field": "a", "hidden": True}],
        [{"unique": True}],
        [""],
        ["$a"],
        ["a..b"],
        [".a"],
        [5],
    ],
)
def test_bad_index_specs_are_rejected(db, indexes):
    with pytest.raises(QueryError):
        db.create_collection("c", indexes=indexes)
    assert "c" not in db
    assert db.tx_id == 0


@pytest.mark.parametrize("schema", [5, "string", [1], {"type": "no-such-type"}, {"minimum": "x"}])
def test_invalid_schema_is_rejected_at_create(db, schema):
    with pytest.raises(SchemaError):
        db.create_collection("c", schema=schema)
    assert "c" not in db
    assert db.tx_id == 0


def test_info(db):
    coll = db.create_collection("people", schema=SCHEMA, indexes=[{"field": "name", "unique": True}])
    assert coll.info() == {
        "name": "people",
        "schema": SCHEMA,
        "indexes": [{"field": "name", "unique": True}],
        "count": 0,
        "require_reason": False,
    }
    coll.insert_many([{"name": "a"}, {"name": "b"}])
    ids = coll.insert_many([{"name": "c"}])
    coll.delete(ids[0])
    assert coll.info()["count"] == 2
    plain = db.create_collection("plain")
    assert plain.info() == {"name": "plain", "schema": None, "indexes": [], "count": 0, "require_reason": False}


@pytest.mark.embedded
def test_collection_definition_is_a_ledger_entry(db):
    db.create_collection("people", schema=SCHEMA, indexes=["age"])
    entry = db.ledger.get(b"c\x00people")
    import json

    meta = json.loads(entry.value)
    assert meta == {"v": 1, "name": "people", "schema": SCHEMA, "indexes": [{"field": "age", "unique": False}]}


def test_collections_are_independent(db):
    a = db.create_collection("a")
    b = db.create_collection("b")
    a.insert({"_id": "same", "v": "a"})
    b.insert({"_id": "same", "v": "b"})
    assert a.get("same")["v"] == "a"
    assert b.get("same")["v"] == "b"
    a.delete("same")
    assert b.get("same")["v"] == "b"
    assert a.count() == 0 and b.count() == 1


def test_reopen_keeps_collections_schemas_and_indexes(tmp_path):
    path = tmp_path / "db"
    with docstore.open(path) as db:
        db.create_collection("people", schema=SCHEMA, indexes=[{"field": "name", "unique": True}])
        db.create_collection("events", indexes=["kind", "at"])
        db.create_collection("bare")
        db["events"].create_index("who")
        db["bare"].set_schema({"type": "object"})
        db["people"].insert({"_id": "p1", "name": "Ada", "age": 36})
        db["events"].insert_many([{"kind": "x", "at": i} for i in range(5)])
        before = {n: db[n].info() for n in db.collections()}
        tx_before = db.tx_id
    for _ in range(2):  # twice: once from the snapshot, once after it was rewritten
        with docstore.open(path) as db:
            assert db.tx_id == tx_before
            assert db.collections() == ["bare", "events", "people"]
            assert {n: db[n].info() for n in db.collections()} == before
            assert db["events"].indexes() == [
                {"field": "kind", "unique": False},
                {"field": "at", "unique": False},
                {"field": "who", "unique": False},
            ]
            # the schema and the unique index are enforced after reopen
            with pytest.raises(SchemaError):
                db["people"].insert({"age": 3})
            with pytest.raises(docstore.DuplicateKeyError):
                db["people"].insert({"name": "Ada"})
            with pytest.raises(CollectionExistsError):
                db.create_collection("people")
            assert db["events"].explain({"kind": "x"})["plan"] == "index"
    shutil.rmtree(path / "state.lmdb")
    with docstore.open(path) as db:
        assert {n: db[n].info() for n in db.collections()} == before
        assert db.audit().ok


def test_operations_on_a_closed_database_fail(tmp_path):
    db = docstore.open(tmp_path / "db")
    coll = db.create_collection("c")
    db.close()
    db.close()  # idempotent
    with pytest.raises(kvcore.ClosedError):
        coll.insert({"a": 1})
    with pytest.raises(kvcore.ClosedError):
        db.create_collection("d")
    with pytest.raises(kvcore.ClosedError):
        db.transaction()
    for call in (lambda: db["c"], lambda: db.collection("c"), db.collections):
        with pytest.raises(kvcore.ClosedError):  # not CollectionNotFoundError or []
            call()
