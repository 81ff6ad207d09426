"""Collection schemas (JSON Schema 2020-12): enforcement, error reporting, changes as revisions."""

from __future__ import annotations

import json

import shutil

import pytest

import docstore
from docstore import ConflictError, SchemaError

PERSON = {
    "type": "object",
    "properties": {
        "_id": {"type": "string"},  # the _id is part of the document the schema sees
        "name": {"type": "string", "minLength": 1},
        "age": {"type": "integer", "minimum": 0},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "zip": {"type": "string", "pattern": "^[0-9]{4}$"}},
            "required": ["city"],
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}


@pytest.fixture
def people(db):
    return db.create_collection("people", schema=PERSON)


def _meta_history(db, name):
    return [json.loads(e.value) for e in db.ledger.history(b"c\x00" + name.encode())]


def test_valid_documents_are_accepted(people):
    doc_id = people.insert({"name": "Ada", "age": 36, "tags": ["x"], "address": {"city": "London", "zip": "1234"}})
    assert people.get(doc_id)["name"] == "Ada"
    people.insert({"name": "B"})
    assert people.count() == 2


def test_schema_error_lists_every_failing_path(db, people):
    before = db.tx_id
    bad = {"age": -1, "tags": [1, "ok", 2.5], "address": {"zip": "12"}, "extra": True}
    with pytest.raises(SchemaError) as info:
        people.insert(bad)
    err = info.value
    paths = sorted(p for p, _ in err.errors)
    assert paths == sorted(["", "", "/age", "/tags/0", "/tags/2", "/address", "/address/zip"])
    reasons = dict()
    for p, r in err.errors:
        reasons.setdefault(p, []).append(r)
    assert any("name" in r for r in reasons[""])  # required property
    assert any("extra" in r for r in reasons[""])  # additionalProperties
    assert any("minimum" in r.lower() or "less than" in r for r in reasons["/age"])
    assert any("city" in r for r in reasons["/address"])
    assert all(isinstance(r, str) and r for _, r in err.errors)
    # the message names the paths as well
    for p in ["/age", "/tags/0", "/tags/2", "/address/zip"]:
        assert p in str(err)
    assert db.tx_id == before
    assert people.count() == 0


def test_error_paths_escape_keys(db):
    coll = db.create_collection("c", schema={"properties": {"a/b": {"properties": {"c~d": {"type": "string"}}}}})
    with pytest.raises(SchemaError) as info:
        coll.insert({"a/b": {"c~d": 5}})
    assert [p for p, _ in info.value.errors] == ["/a~1b/c~0d"]


def test_insert_many_with_one_invalid_document_writes_nothing(db, people):
    before = db.tx_id
    with pytest.raises(SchemaError) as info:
        people.insert_many([{"name": "ok1"}, {"name": "ok2"}, {"name": 5}, {"name": "ok3"}])
    assert [p for p, _ in info.value.errors] == ["/name"]
    assert db.tx_id == before
    assert people.count() == 0


def test_update_and_replace_are_validated(db, people):
    doc_id = people.insert({"name": "Ada", "age": 1})
    before = db.tx_id
    with pytest.raises(SchemaError):
        people.update(doc_id, {"$set": {"age": "old"}})
    with pytest.raises(SchemaError):
        people.update(doc_id, {"$unset": {"name": 1}})
    with pytest.raises(SchemaError):
        people.update(doc_id, {"$push": {"tags": 1}})
    with pytest.raises(SchemaError):
        people.update(doc_id, {"$inc": {"age": 0.5}})
    with pytest.raises(SchemaError):
        people.replace(doc_id, {"age": 3})
    with pytest.raises(SchemaError):
        people.replace(doc_id, {"name": "x", "unknown": 1})
    assert db.tx_id == before
    assert people.get(doc_id) == {"_id": doc_id, "name": "Ada", "age": 1}
    assert len(people.history(doc_id)) == 1
    # valid changes go through
    people.update(doc_id, {"$inc": {"age": 1}, "$push": {"tags": "t"}})
    people.replace(doc_id, {"name": "Bea"})
    assert people.get(doc_id) == {"_id": doc_id, "name": "Bea"}


def test_schema_is_enforced_inside_transactions(db, people):
    before = db.tx_id
    with pytest.raises(SchemaError):
        with db.transaction() as tx:
            tx["people"].insert({"name": "fine"})
            tx["people"].insert({"name": 1})
    assert db.tx_id == before and people.count() == 0


def test_schema_sees_the_id(db):
    coll = db.create_collection("c", schema={"properties": {"_id": {"pattern": "^user-"}}})
    coll.insert({"_id": "user-1"})
    with pytest.raises(SchemaError):
        coll.insert({"_id": "admin"})
    with pytest.raises(SchemaError):
        coll.insert({})  # generated ids do not match


@pytest.mark.parametrize(
    "schema",
    [
        5,
        "object",
        None.__class__,
        [{"type": "object"}],
        {"type": "no-such-type"},
        {"type": 5},
        {"minimum": "zero"},
        {"required": "name"},
        {"pattern": "(unclosed"},
        {"$ref": "#/$defs/missing"},
    ],
)
@pytest.mark.embedded
def test_invalid_schemas_are_rejected(db, schema):
    with pytest.raises(SchemaError):
        db.create_collection("c", schema=schema)
    assert "c" not in db
    coll = db.create_collection("d")
    before = db.tx_id
    with pytest.raises(SchemaError):
        coll.set_schema(schema)
    assert coll.schema is None
    assert db.tx_id == before
    assert len(_meta_history(db, "d")) == 1


def test_boolean_schemas(db):
    anything = db.create_collection("anything", schema=True)
    anything.insert({"whatever": [1, {}]})
    nothing = db.create_collection("nothing", schema=False)
    with pytest.raises(SchemaError):
        nothing.insert({})


@pytest.mark.embedded
def test_set_schema_with_violating_documents_fails(db):
    coll = db.create_collection("c")
    coll.insert_many([{"_id": "good", "n": 1}, {"_id": "bad1", "n": "x"}, {"_id": "bad2"}])
    before = db.tx_id
    with pytest.raises(SchemaError) as info:
        coll.set_schema({"properties": {"n": {"type": "integer"}}, "required": ["n"]})
    assert "bad1" in str(info.value) and "bad2" in str(info.value)
    assert "'good'" not in str(info.value)
    assert coll.schema is None
    assert db.tx_id == before
    assert len(_meta_history(db, "c")) == 1
    coll.insert({"n": "still allowed"})


@pytest.mark.embedded
def test_set_schema_with_valid_documents_is_a_new_revision(db):
    coll = db.create_collection("c", indexes=["n"])
    coll.insert_many([{"n": 1}, {"n": 2}])
    assert len(_meta_history(db, "c")) == 1
    s1 = {"properties": {"n": {"type": "integer"}}}
    before = db.tx_id
    coll.set_schema(s1)
    assert db.tx_id == before + 1
    assert coll.schema == s1
    hist = _meta_history(db, "c")
    assert len(hist) == 2
    assert hist[0]["schema"] is None and hist[1]["schema"] == s1
    assert hist[1]["indexes"] == [{"field": "n", "unique": False}]  # indexes are kept
    with pytest.raises(SchemaError):
        coll.insert({"n": "x"})
    s2 = {"properties": {"n": {"type": "integer", "maximum": 10}}}
    coll.set_schema(s2)
    coll.set_schema(None)
    hist = _meta_history(db, "c")
    assert [h["schema"] for h in hist] == [None, s1, s2, None]
    coll.insert({"n": "x"})  # no schema any more
    assert coll.info()["schema"] is None
    # the ledger history of the definition is provable like any entry
    entries = db.ledger.history(b"c\x00c")
    assert [e.revision for e in entries] == [1, 2, 3, 4]
    assert db.audit().ok


def test_schema_change_survives_reopen(tmp_path):
    path = tmp_path / "db"
    schema = {"properties": {"n": {"type": "integer"}}}
    with docstore.open(path) as db:
        db.create_collection("c").set_schema(schema)
    with docstore.open(path) as db:
        assert db["c"].schema == schema
        with pytest.raises(SchemaError):
            db["c"].insert({"n": 1.5})
    shutil.rmtree(path / "state.lmdb")
    with docstore.open(path) as db:
        assert db["c"].schema == schema
        with pytest.raises(SchemaError):
            db["c"].insert({"n": "x"})
        db["c"].insert({"n": 2})


def test_deleted_documents_do_not_block_a_schema(db):
    coll = db.create_collection("c")
    bad = coll.insert({"n": "x"})
    coll.delete(bad)
    coll.set_schema({"properties": {"n": {"type": "integer"}}})
    assert coll.schema is not None


@pytest.mark.embedded
def test_a_write_prepared_under_an_old_schema_cannot_commit_after_a_schema_change(db):
    """A transaction validated its document against the schema it read; if the schema changes
    before it commits, the commit must conflict (never store a document violating the schema)."""
    coll = db.create_collection("c")
    tx = db.transaction()
    tx["c"].insert({"_id": "late", "n": "text"})
    coll.set_schema({"properties": {"n": {"type": "integer"}}})
    before = db.tx_id
    with pytest.raises(ConflictError):
        tx.commit()
    assert db.tx_id == before
    assert coll.count() == 0
    assert db.audit().ok


def test_a_schema_equal_in_python_but_not_in_json_is_recompiled(tmp_path):
    # {"const": True} == {"const": 1} in Python, not in JSON Schema: the new one must be used
    path = tmp_path / "db"
    with docstore.open(path) as db:
        c = db.create_collection("c", schema={"properties": {"n": {"const": 1}}})
        c.set_schema({"properties": {"n": {"const": True}}})
        with pytest.raises(SchemaError):
            c.insert({"n": 1})
        c.insert({"_id": "t", "n": True})
    with docstore.open(path) as db:  # the same after reopening
        with pytest.raises(SchemaError):
            db["c"].insert({"n": 1})
        db["c"].insert({"n": True})
        assert db.audit().ok
