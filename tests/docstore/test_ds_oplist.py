"""run_operations: a file's worth of write operations in one transaction, embedded and remote:
all committed, or on any error none; malformed operations named by number; bounded."""

from __future__ import annotations

import uuid

import pytest

from docstore import DocumentNotFoundError, QueryError, SchemaError, TransactionTooLargeError
from docstore.transactions.oplist import run_operations

DB_KINDS = ("embedded", "remote")


@pytest.fixture
def names(db):
    a, b = "a" + uuid.uuid4().hex[:8], "b" + uuid.uuid4().hex[:8]
    db.create_collection(a, schema={"properties": {"n": {"type": "integer"}}})
    db.create_collection(b)
    db[a].insert({"_id": "x", "n": 1})
    db[b].insert({"_id": "gone", "n": 0})
    return a, b


def test_all_operations_commit_together(db, names):
    a, b = names
    before = db.tx_id
    result = run_operations(db, iter([
        {"op": "insert", "collection": a, "doc": {"n": 2}, "id": "y"},
        {"op": "update", "collection": a, "id": "y", "update": {"$inc": {"n": 10}}},  # sees the insert
        {"op": "replace", "collection": a, "id": "x", "doc": {"n": 5}},
        {"op": "delete", "collection": b, "id": "gone"},
        {"op": "insert", "collection": b, "doc": {"_id": "new"}},
    ]), reason="enrolment", meta={"batch": 1})
    assert result == {"tx": before + 1, "operations": 5, "inserted": 2, "updated": 1, "replaced": 1, "deleted": 1,
                      "ids": ["y", "new"]}
    assert db.tx_id == before + 1
    assert db[a].get("y") == {"_id": "y", "n": 12} and db[a].get("x") == {"_id": "x", "n": 5}
    with pytest.raises(DocumentNotFoundError):
        db[b].get("gone")
    assert db.log(limit=1)[0]["reason"] == "enrolment"


@pytest.mark.parametrize("ops, error, words", [
    ([{"op": "upsert", "collection": "c"}], QueryError, ["operation 1", "insert, update, replace, delete"]),
    ([{"op": "insert", "collection": "{a}", "doc": {}}, "text"], QueryError, ["operation 2", "JSON object"]),
    ([{"op": "update", "collection": "{a}", "id": "x"}], QueryError, ["operation 1", '"update"']),
    ([{"op": "delete", "collection": "{a}", "id": "x", "doc": {}}], QueryError, ["unknown keys", '"doc"']),
    ([{"op": "insert", "collection": "{a}", "doc": []}], QueryError, ['"doc" is a JSON object']),
    ([{"op": "delete", "collection": "{a}", "id": 5}], QueryError, ['"id" is a string']),
    ([{"op": "insert", "collection": "{a}", "doc": {"n": 1}}, {"op": "insert", "collection": "{a}", "doc": {"n": "two"}}],
     SchemaError, ["operation 2 (insert in {a})", "nothing was written"]),
    ([{"op": "insert", "collection": "{a}", "doc": {}}, {"op": "delete", "collection": "{a}", "id": "nope"}],
     DocumentNotFoundError, ["operation 2"]),
    ([], QueryError, ["no operations"]),
])
def test_a_bad_operation_writes_nothing(db, names, ops, error, words):
    a, _ = names
    ops = [{k: (v.format(a=a) if isinstance(v, str) else v) for k, v in op.items()} if isinstance(op, dict) else op
           for op in ops]
    before, count = db.tx_id, db[a].count()
    with pytest.raises(error) as info:
        run_operations(db, ops)
    for w in words:  # a server checks documents at the commit: its error names no operation
        if db.local or error is QueryError:
            assert w.format(a=a) in str(info.value)
    assert db.tx_id == before and db[a].count() == count


def test_more_operations_than_a_transaction_holds_are_refused_before_commit(db, names):
    a, _ = names
    before = db.tx_id
    ops = ({"op": "insert", "collection": a, "doc": {"n": i}} for i in range(10))
    with pytest.raises(TransactionTooLargeError, match="more than 5 operations"):
        run_operations(db, ops, max_operations=5)
    assert db.tx_id == before
