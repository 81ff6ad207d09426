"""Documents: insert, ids, get, replace, update, delete, history, time travel, exact round trips."""

from __future__ import annotations

import copy
import math
import re
import struct
import tempfile
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docstore
from docstore import (
    DocumentNotFoundError,
    DuplicateIdError,
    InvalidDocumentError,
    QueryError,
)
from docstore.documents.ids import _CROCKFORD


@pytest.fixture
def coll(db):
    return db.create_collection("things")


def same(a, b):
    """Strict JSON identity: same types (bool is not int, int is not float), same key order,
    floats bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


def ulid_ms(doc_id: str) -> int:
    v = 0
    for ch in doc_id:
        v = v * 32 + _CROCKFORD.index(ch)
    return v >> 80


# ============================================================================ insert and ids


def test_generated_ids(coll):
    before_ms = time.time_ns() // 1_000_000
    ids = [coll.insert({"n": i}) for i in range(50)]
    ids += coll.insert_many([{"n": i} for i in range(50, 300)])
    after_ms = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids) == 300
    for i in ids:
        assert len(i) == 26
        assert re.fullmatch(r"[0-9A-HJKMNP-TV-Z]{26}", i), i  # Crockford base32: URL-safe
        assert before_ms <= ulid_ms(i) <= after_ms
    # time-sortable: generated in this order, they sort in this order
    assert ids == sorted(ids)
    # the _id comes first in the stored document
    assert list(coll.get(ids[0])) == ["_id", "n"]
    assert coll.count() == 300


def test_generated_ids_sort_across_milliseconds(coll):
    first = coll.insert({})
    t = time.monotonic()
    while time.monotonic() - t < 0.003:
        pass
    second = coll.insert({})
    assert ulid_ms(first) <= ulid_ms(second)
    assert first < second


def test_caller_id_is_kept_with_its_position(coll):
    assert coll.insert({"a": 1, "_id": "mine", "b": 2}) == "mine"
    doc = coll.get("mine")
    assert list(doc) == ["a", "_id", "b"]
    assert doc == {"_id": "mine", "a": 1, "b": 2}
    assert coll.insert({"_id": "ünï/cødé ~.x"}) == "ünï/cødé ~.x"
    assert coll.get("ünï/cødé ~.x") == {"_id": "ünï/cødé ~.x"}


@pytest.mark.parametrize("bad_id", ["", 5, None, 1.5, ["x"], {"a": 1}, "a\x00b", "x" * 513, True])
def test_invalid_ids_are_rejected(db, coll, bad_id):
    with pytest.raises(InvalidDocumentError):
        coll.insert({"_id": bad_id})
    assert db.tx_id == 1 and coll.count() == 0


def test_longest_id_is_accepted(coll):
    long_id = "é" * 256  # 512 UTF-8 bytes
    assert coll.insert({"_id": long_id, "v": 1}) == long_id
    assert coll.get(long_id)["v"] == 1


@pytest.mark.parametrize(
    "bad",
    [
        [1, 2],
        "doc",
        None,
        {"a": math.nan},
        {"a": math.inf},
        {"a": {1: 2}},
        {"a": {1, 2}},
        {"a": (1, 2)},
        {"a": b"bytes"},
        {"a": "\ud800"},
        {"a": object()},
    ],
)
def test_invalid_documents_are_rejected(db, coll, bad):
    with pytest.raises(InvalidDocumentError):
        coll.insert(bad)
    assert coll.count() == 0 and db.tx_id == 1


def test_insert_many_returns_ids_in_order(coll):
    ids = coll.insert_many([{"_id": "b"}, {"x": 1}, {"_id": "a"}])
    assert ids[0] == "b" and ids[2] == "a" and len(ids[1]) == 26
    assert [coll.get(i)["_id"] for i in ids] == ids
    assert coll.insert_many([]) == []


def test_insert_many_accepts_any_iterable_once(coll):
    ids = coll.insert_many({"n": i} for i in range(3))
    assert [coll.get(i)["n"] for i in ids] == [0, 1, 2]


@pytest.mark.parametrize(
    "batch",
    [
        [{"n": 1}, {"n": 2}, {"n": math.nan}],
        [{"n": 1}, "not a doc", {"n": 3}],
        [{"_id": "x"}, {"_id": ""}],
        [{"n": 1}, {"_id": "fresh"}, {"_id": "fresh"}],  # duplicate within the batch
        [{"n": 1}, {"_id": "taken"}],  # duplicate of an existing document
    ],
)
def test_insert_many_is_atomic(db, coll, batch):
    coll.insert({"_id": "taken"})
    tx_before, count_before = db.tx_id, coll.count()
    with pytest.raises((InvalidDocumentError, DuplicateIdError)):
        coll.insert_many(batch)
    assert db.tx_id == tx_before
    assert coll.count() == count_before
    assert [d["_id"] for d in coll.find()] == ["taken"]
    with pytest.raises(DocumentNotFoundError):
        coll.get("fresh")


def test_insert_many_commits_one_transaction(db, coll):
    before = db.tx_id
    coll.insert_many([{"n": i} for i in range(20)])
    assert db.tx_id == before + 1
    assert coll.count() == 20


def test_duplicate_ids(db, coll):
    coll.insert({"_id": "a", "v": 1})
    with pytest.raises(DuplicateIdError):
        coll.insert({"_id": "a", "v": 2})
    with pytest.raises(DuplicateIdError):
        coll.insert_many([{"_id": "b"}, {"_id": "b"}])
    assert coll.get("a") == {"_id": "a", "v": 1}
    with pytest.raises(DocumentNotFoundError):
        coll.get("b")
    assert issubclass(DuplicateIdError, docstore.DocstoreError)


def test_callers_dicts_are_never_mutated(coll):
    doc = {"a": {"b": [1, {"c": 2}]}, "s": "x"}
    snapshot = copy.deepcopy(doc)
    doc_id = coll.insert(doc)
    assert doc == snapshot and "_id" not in doc
    batch = [{"n": 1}, {"n": {"m": [2]}}]
    batch_copy = copy.deepcopy(batch)
    coll.insert_many(batch)
    assert batch == batch_copy
    replacement = {"z": [1, 2]}
    coll.replace(doc_id, replacement)
    assert replacement == {"z": [1, 2]}
    changes = {"$set": {"a.b": {"deep": [1]}}, "$push": {"z": {"$each": [3, 4]}}}
    changes_copy = copy.deepcopy(changes)
    coll.update(doc_id, changes)
    assert changes == changes_copy


def test_mutating_a_dict_after_insert_does_not_change_the_stored_document(db, coll):
    doc = {"a": {"b": 1}, "l": [1]}
    doc_id = coll.insert(doc)
    doc["a"]["b"] = 2
    doc["l"].append(2)
    assert coll.get(doc_id) == {"_id": doc_id, "a": {"b": 1}, "l": [1]}
    # also inside an explicit transaction, where the commit comes later
    doc2 = {"_id": "t", "a": {"b": 1}}
    rep = {"r": {"x": 1}}
    with db.transaction() as tx:
        tx["things"].insert(doc2)
        doc2["a"]["b"] = 99
        tx["things"].insert({"_id": "u"})
        tx["things"].replace("u", rep)
        rep["r"]["x"] = 99
    assert coll.get("t") == {"_id": "t", "a": {"b": 1}}
    assert coll.get("u") == {"_id": "u", "r": {"x": 1}}
    assert coll.get("t", at_tx=db.tx_id) == coll.get("t")
    assert db.audit().ok


def test_returned_documents_are_copies(coll):
    doc_id = coll.insert({"a": {"b": [1, 2]}, "c": 1})
    for got in (coll.get(doc_id), coll.find_one({"c": 1}), next(coll.find()), coll.update(doc_id, {"$set": {"d": 1}})):
        got["a"]["b"].append(99)
        got["c"] = "changed"
        got.pop("_id")
    assert coll.get(doc_id) == {"_id": doc_id, "a": {"b": [1, 2]}, "c": 1, "d": 1}
    hist = coll.history(doc_id)
    hist[0].document["c"] = "changed"
    assert coll.history(doc_id)[0].document["c"] == 1
    returned = coll.replace(doc_id, {"x": [1]})
    returned["x"].append(2)
    assert coll.get(doc_id) == {"_id": doc_id, "x": [1]}


# ============================================================================ get / replace / delete


def test_get_missing(coll):
    with pytest.raises(DocumentNotFoundError):
        coll.get("nope")
    with pytest.raises(InvalidDocumentError):
        coll.get("")
    with pytest.raises(InvalidDocumentError):
        coll.get(5)


def test_replace(db, coll):
    doc_id = coll.insert({"a": 1, "b": 2})
    new = coll.replace(doc_id, {"c": 3})
    assert new == {"_id": doc_id, "c": 3}
    assert coll.get(doc_id) == new
    assert list(coll.get(doc_id)) == ["_id", "c"]
    # _id may be repeated unchanged
    coll.replace(doc_id, {"_id": doc_id, "d": 4})
    assert coll.get(doc_id) == {"_id": doc_id, "d": 4}
    before = db.tx_id
    with pytest.raises(InvalidDocumentError):
        coll.replace(doc_id, {"_id": "other", "d": 5})
    with pytest.raises(DocumentNotFoundError):
        coll.replace("missing", {"x": 1})
    with pytest.raises(InvalidDocumentError):
        coll.replace(doc_id, [1])
    with pytest.raises(InvalidDocumentError):
        coll.replace(doc_id, {"x": math.nan})
    assert db.tx_id == before
    assert coll.get(doc_id) == {"_id": doc_id, "d": 4}


@pytest.mark.embedded
def test_delete(db, coll):
    doc_id = coll.insert({"a": 1})
    coll.delete(doc_id)
    with pytest.raises(DocumentNotFoundError):
        coll.get(doc_id)
    assert coll.count() == 0
    assert list(coll.find()) == []
    before = db.tx_id
    with pytest.raises(DocumentNotFoundError):
        coll.delete(doc_id)
    with pytest.raises(DocumentNotFoundError):
        coll.update(doc_id, {"$set": {"a": 2}})
    with pytest.raises(DocumentNotFoundError):
        coll.replace(doc_id, {"a": 2})
    assert db.tx_id == before
    # a tombstone header is on the ledger; nothing was removed
    header = db.ledger.get(b"d\x00things\x00" + doc_id.encode())
    assert b'"del":true' in header.value


def test_reinsert_after_delete_continues_history(coll):
    coll.insert({"_id": "k", "v": 1})
    coll.update("k", {"$inc": {"v": 1}})
    coll.delete("k")
    coll.insert({"_id": "k", "v": 10})
    assert coll.get("k") == {"_id": "k", "v": 10}
    hist = coll.history("k")
    assert [h.revision for h in hist] == [1, 2, 3, 4]
    assert [h.deleted for h in hist] == [False, False, True, False]
    assert [h.document for h in hist] == [
        {"_id": "k", "v": 1},
        {"_id": "k", "v": 2},
        None,
        {"_id": "k", "v": 10},
    ]


# ============================================================================ update


def _upd(coll, doc, changes):
    doc_id = coll.insert(doc)
    returned = coll.update(doc_id, changes)
    stored = coll.get(doc_id)
    assert returned == stored
    stored.pop("_id")
    return stored


UPDATE_CASES = [
    # $set: replace in place (key order kept), add at the end, create intermediate objects
    ({"a": 1, "b": 2}, {"$set": {"a": 5}}, {"a": 5, "b": 2}),
    ({"a": 1, "b": 2}, {"$set": {"c": 3}}, {"a": 1, "b": 2, "c": 3}),
    ({"a": 1}, {"$set": {"x.y.z": True}}, {"a": 1, "x": {"y": {"z": True}}}),
    ({"a": {"b": 1, "c": 2}}, {"$set": {"a.b": [1, {}]}}, {"a": {"b": [1, {}], "c": 2}}),
    ({"arr": [1, 2, 3]}, {"$set": {"arr.1": "two"}}, {"arr": [1, "two", 3]}),
    ({"arr": [1]}, {"$set": {"arr.3": 4}}, {"arr": [1, None, None, 4]}),
    ({"arr": [{"a": 1}, {"a": 2}]}, {"$set": {"arr.1.a": 20}}, {"arr": [{"a": 1}, {"a": 20}]}),
    ({"a": 1}, {"$set": {"a": None, "b": {}}}, {"a": None, "b": {}}),
    ({}, {"$set": {"big": 2**80, "f": -0.0}}, {"big": 2**80, "f": -0.0}),
    # $unset
    ({"a": 1, "b": 2}, {"$unset": {"a": ""}}, {"b": 2}),
    ({"a": 1}, {"$unset": {"missing": 1, "a.b.c": 1}}, {"a": 1}),
    ({"a": {"b": 1, "c": 2}}, {"$unset": {"a.b": 1}}, {"a": {"c": 2}}),
    ({"a": [1, 2, 3]}, {"$unset": {"a.1": 1}}, {"a": [1, None, 3]}),
    ({"a": [1]}, {"$unset": {"a.5": 1}}, {"a": [1]}),
    # $inc
    ({"n": 1}, {"$inc": {"n": 2}}, {"n": 3}),
    ({"n": 1}, {"$inc": {"n": -5}}, {"n": -4}),
    ({"n": 1}, {"$inc": {"n": 0.5}}, {"n": 1.5}),
    ({"n": 1.5}, {"$inc": {"n": 1}}, {"n": 2.5}),
    ({}, {"$inc": {"n": 7, "m.k": 1}}, {"n": 7, "m": {"k": 1}}),
    ({"a": [5, 6]}, {"$inc": {"a.0": 1}}, {"a": [6, 6]}),
    # $push
    ({"t": [1]}, {"$push": {"t": 2}}, {"t": [1, 2]}),
    ({}, {"$push": {"t": 1}}, {"t": [1]}),
    ({"t": []}, {"$push": {"t": [1, 2]}}, {"t": [[1, 2]]}),
    ({"t": [1]}, {"$push": {"t": {"$each": [2, 3]}}}, {"t": [1, 2, 3]}),
    ({"t": [1]}, {"$push": {"t": {"$each": []}}}, {"t": [1]}),
    ({}, {"$push": {"a.t": {"$each": [{"x": 1}]}}}, {"a": {"t": [{"x": 1}]}}),
    ({"t": [1]}, {"$push": {"t": {"x": 1}}}, {"t": [1, {"x": 1}]}),
    # several operators at once
    (
        {"a": 1, "t": [], "n": 0},
        {"$set": {"a": 2}, "$unset": {"gone": 1}, "$inc": {"n": 1}, "$push": {"t": "x"}},
        {"a": 2, "t": ["x"], "n": 1},
    ),
]


@pytest.mark.parametrize("doc,changes,expected", UPDATE_CASES)
def test_update_semantics(coll, doc, changes, expected):
    got = _upd(coll, doc, changes)
    assert same(got, expected), (got, expected)


@pytest.mark.parametrize("doc,changes,expected", UPDATE_CASES)
def test_update_semantics_match_mongomock(doc, changes, expected):
    """mongomock agrees with the expectations above (key order and number types checked there)."""
    mongomock = pytest.importorskip("mongomock")
    if any(isinstance(v, int) and abs(v) >= 2**63 for v in _leaves(changes)):
        pytest.skip("BSON cannot hold integers beyond 64 bits")
    if changes == {"$unset": {"a.1": 1}}:
        pytest.skip("mongomock leaves unset array elements in place; MongoDB sets them to null")
    m = mongomock.MongoClient().db.c
    m.insert_one({"_id": 1, **copy.deepcopy(doc)})
    m.update_one({"_id": 1}, copy.deepcopy(changes))
    got = m.find_one({"_id": 1})
    got.pop("_id")
    assert got == expected


def _leaves(v):
    if isinstance(v, dict):
        for x in v.values():
            yield from _leaves(x)
    elif isinstance(v, list):
        for x in v:
            yield from _leaves(x)
    else:
        yield v


@pytest.mark.parametrize(
    "doc,changes",
    [
        ({"s": "text"}, {"$inc": {"s": 1}}),
        ({"s": None}, {"$inc": {"s": 1}}),
        ({"s": True}, {"$inc": {"s": 1}}),
        ({"n": 1}, {"$inc": {"n": "1"}}),
        ({"n": 1}, {"$inc": {"n": True}}),
        ({"n": 1}, {"$inc": {"n": None}}),
        ({"n": 1}, {"$bogus": {"n": 1}}),
        ({"n": 1}, {"$rename": {"n": 5}}),  # a new name is a string
        ({"n": 1}, {"n": 2}),  # a replacement document is not an update
        ({"n": 1}, {}),
        ({"n": 1}, {"$set": {}}),
        ({"n": 1}, {"$set": 5}),
        ({"n": 1}, {"$set": {"_id": "other"}}),
        ({"n": 1}, {"$unset": {"_id": 1}}),
        ({"n": 1}, {"$inc": {"_id": 1}}),
        ({"n": 1}, {"$set": {"_id.x": 1}}),
        ({"n": 1}, {"$set": {"": 1}}),
        ({"n": 1}, {"$set": {"a..b": 1}}),
        ({"n": 1}, {"$set": {"a.$b": 1}}),
        ({"n": 1}, {"$set": {"a": 1}, "$inc": {"a": 1}}),
        ({"n": 1}, {"$set": {"a": 1, "a.b": 1}}),
        ({"n": 5}, {"$set": {"n.x": 1}}),
        ({"t": "str"}, {"$push": {"t": 1}}),
        ({"t": [1]}, {"$push": {"t": {"$each": 5}}}),
        ({"t": [1]}, {"$push": {"t": {"$each": [1], "$slice": "1"}}}),
        ({"a": [1, 2]}, {"$set": {"a.x": 1}}),
        ({"n": 1}, {"$set": {"f": math.nan}}),
        ({"n": 1}, [("$set", {"n": 2})]),
        ({"n": 1}, None),
    ],
)
def test_bad_updates_write_nothing(db, coll, doc, changes):
    doc_id = coll.insert(doc)
    before_tx, before_doc = db.tx_id, coll.get(doc_id)
    with pytest.raises((QueryError, InvalidDocumentError)):
        coll.update(doc_id, changes)
    assert db.tx_id == before_tx
    assert coll.get(doc_id) == before_doc
    assert len(coll.history(doc_id)) == 1


def test_update_errors_are_query_errors(coll):
    doc_id = coll.insert({"s": "x"})
    with pytest.raises(QueryError):
        coll.update(doc_id, {"$inc": {"s": 1}})
    with pytest.raises(QueryError):
        coll.update(doc_id, {"$unknown": {"s": 1}})
    with pytest.raises(QueryError):
        coll.update(doc_id, {"$set": {"_id": "y"}})
    with pytest.raises(QueryError):
        coll.update(doc_id, {})


def test_update_of_missing_document(coll):
    with pytest.raises(DocumentNotFoundError):
        coll.update("missing", {"$set": {"a": 1}})


def test_update_with_identical_values_is_still_a_revision(coll):
    doc_id = coll.insert({"a": 1})
    coll.update(doc_id, {"$set": {"a": 1}})
    assert [h.revision for h in coll.history(doc_id)] == [1, 2]


# ============================================================================ history and time travel


def test_history(db, coll):
    doc_id = coll.insert({"v": 0})
    txs = [db.tx_id]
    for i in range(1, 4):
        coll.update(doc_id, {"$set": {"v": i}})
        txs.append(db.tx_id)
    coll.replace(doc_id, {"w": 1})
    txs.append(db.tx_id)
    coll.delete(doc_id)
    txs.append(db.tx_id)
    hist = coll.history(doc_id)
    assert [h.revision for h in hist] == [1, 2, 3, 4, 5, 6]
    assert [h.tx_id for h in hist] == txs
    assert txs == sorted(set(txs))
    stamps = [h.timestamp_ns for h in hist]
    assert stamps == sorted(stamps) and stamps[0] > 0
    assert [h.deleted for h in hist] == [False] * 5 + [True]
    assert [h.document for h in hist] == [
        {"_id": doc_id, "v": 0},
        {"_id": doc_id, "v": 1},
        {"_id": doc_id, "v": 2},
        {"_id": doc_id, "v": 3},
        {"_id": doc_id, "w": 1},
        None,
    ]
    assert hist[0].to_dict() == {
        "revision": 1,
        "tx_id": txs[0],
        "timestamp_ns": stamps[0],
        "deleted": False,
        "document": {"_id": doc_id, "v": 0},
        "user": None,  # who, why and the rest of its transaction's metadata: none given
        "reason": None,
        "meta": None,
    }
    # paging
    assert [h.revision for h in coll.history(doc_id, offset=2, limit=2)] == [3, 4]
    assert [h.revision for h in coll.history(doc_id, offset=4)] == [5, 6]
    assert coll.history(doc_id, offset=10) == []
    assert coll.history(doc_id, limit=0) == []  # an existing document, no revisions asked for
    with pytest.raises(DocumentNotFoundError):
        coll.history("never-existed", limit=0)
    with pytest.raises(QueryError):
        coll.history(doc_id, offset=-1)
    with pytest.raises(DocumentNotFoundError):
        coll.history("never-existed")


def test_history_survives_reopen(tmp_path):
    path = tmp_path / "db"
    with docstore.open(path) as db:
        c = db.create_collection("c")
        c.insert({"_id": "x", "v": 1})
        c.update("x", {"$inc": {"v": 1}})
        c.delete("x")
        expected = [h.to_dict() for h in c.history("x")]
    with docstore.open(path) as db:
        assert [h.to_dict() for h in db["c"].history("x")] == expected


def test_time_travel(db, coll):
    t0 = db.tx_id
    coll.insert({"_id": "a", "v": 1, "tag": "x"})
    t1 = db.tx_id
    coll.insert({"_id": "b", "v": 1, "tag": "y"})
    t2 = db.tx_id
    coll.update("a", {"$set": {"v": 2}, "$push": {"log": "u"}})
    t3 = db.tx_id
    coll.delete("b")
    t4 = db.tx_id
    coll.insert({"_id": "b", "v": 9, "tag": "z"})
    t5 = db.tx_id

    with pytest.raises(DocumentNotFoundError):
        coll.get("a", at_tx=t0)
    assert coll.get("a", at_tx=t1) == {"_id": "a", "v": 1, "tag": "x"}
    assert coll.get("a", at_tx=t2) == {"_id": "a", "v": 1, "tag": "x"}
    assert coll.get("a", at_tx=t3) == {"_id": "a", "v": 2, "tag": "x", "log": ["u"]}
    assert coll.get("b", at_tx=t3) == {"_id": "b", "v": 1, "tag": "y"}
    with pytest.raises(DocumentNotFoundError):
        coll.get("b", at_tx=t4)
    assert coll.get("b", at_tx=t5) == {"_id": "b", "v": 9, "tag": "z"}

    def ids(**kw):
        return sorted(d["_id"] for d in coll.find(**kw))

    assert ids(at_tx=t0) == []
    assert ids(at_tx=t1) == ["a"]
    assert ids(at_tx=t2) == ["a", "b"]
    assert ids(filter={"v": 1}, at_tx=t2) == ["a", "b"]
    assert ids(filter={"v": 1}, at_tx=t3) == ["b"]
    assert ids(filter={"v": 2}, at_tx=t3) == ["a"]
    assert ids(at_tx=t4) == ["a"]
    assert ids(at_tx=t5) == ["a", "b"]
    assert ids() == ["a", "b"]
    assert coll.count(at_tx=t2) == 2 and coll.count(at_tx=t4) == 1
    assert coll.count({"tag": "y"}, at_tx=t3) == 1
    assert coll.find_one({"_id": "b"}, at_tx=t3) == {"_id": "b", "v": 1, "tag": "y"}
    assert coll.distinct("tag", at_tx=t3) == ["x", "y"]
    assert coll.distinct("tag") == ["x", "z"]
    # the present is unaffected by looking at the past
    assert coll.get("a") == {"_id": "a", "v": 2, "tag": "x", "log": ["u"]}

    with pytest.raises(QueryError):
        coll.get("a", at_tx=t5 + 100)
    with pytest.raises(QueryError):
        list(coll.find(at_tx=t5 + 100))


def test_time_travel_with_index_and_after_reopen(tmp_path):
    path = tmp_path / "db"
    with docstore.open(path) as db:
        c = db.create_collection("c", indexes=["v"])
        c.insert_many([{"_id": str(i), "v": i} for i in range(5)])
        t1 = db.tx_id
        for i in range(5):
            c.update(str(i), {"$inc": {"v": 10}})
        expected_t1 = list(c.find({"v": {"$lt": 3}}, at_tx=t1))
        assert sorted(d["_id"] for d in expected_t1) == ["0", "1", "2"]
        assert list(c.find({"v": {"$lt": 3}})) == []
    with docstore.open(path) as db:
        assert list(db["c"].find({"v": {"$lt": 3}}, at_tx=t1)) == expected_t1


# ============================================================================ exact round trips

KEY_CHARS = st.sampled_from(["a", "b", "/", "~", ".", "$", "0", "1", "é", "日", " ", "\x00"])
keys = st.one_of(st.sampled_from(["", "0", "~1", "~0", "a/b", "a.b", "_id"]), st.text(KEY_CHARS, max_size=4), st.text(max_size=6))
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**200), max_value=2**200),
    st.sampled_from([0, 1, -1, 2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**63), -(2**63) - 1, 2**64 + 1, 10**30]),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 1e308, 5e-324, -1.5e-300, 2.0**63, 1e16]),
    st.text(max_size=10),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
    ),
    max_leaves=25,
)
json_docs = st.dictionaries(keys.filter(lambda k: k != "_id"), json_values, max_size=6)

ROUNDTRIP = settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def test_arbitrary_json_documents_round_trip_exactly():
    with tempfile.TemporaryDirectory() as tmp:
        db = docstore.open(tmp)
        coll = db.create_collection("rt")
        stored: list[tuple[str, int, dict]] = []

        @ROUNDTRIP
        @given(doc=json_docs, use_own_id=st.booleans())
        def check(doc, use_own_id):
            original = copy.deepcopy(doc)
            if use_own_id:
                expected = {"_id": f"id-{len(stored)}", **doc}
                doc_id = coll.insert(expected)
            else:
                doc_id = coll.insert(doc)
                expected = {"_id": doc_id, **doc}
            assert same(doc, original)  # not mutated
            tx = db.tx_id
            assert same(coll.get(doc_id), expected)
            assert same(coll.get(doc_id, at_tx=tx), expected)
            assert same(coll.history(doc_id)[-1].document, expected)
            assert same(coll.find_one({"_id": doc_id}), expected)
            stored.append((doc_id, tx, expected))

        check()
        # a second revision must not disturb the first one's time-travel view
        first_id, first_tx, first_doc = stored[0]
        coll.replace(first_id, {"replaced": True})
        assert same(coll.get(first_id, at_tx=first_tx), first_doc)
        db.close()

        for remove_snapshot in (False, True):
            if remove_snapshot:
                import os

                import shutil

                shutil.rmtree(os.path.join(tmp, "state.lmdb"))  # the derived state, rebuilt from the log
            db = docstore.open(tmp)
            coll = db["rt"]
            for doc_id, tx, expected in stored[1:]:
                assert same(coll.get(doc_id), expected)
                assert same(coll.get(doc_id, at_tx=tx), expected)
            assert same(coll.get(first_id, at_tx=first_tx), first_doc)
            assert coll.get(first_id) == {"_id": first_id, "replaced": True}
            assert coll.count() == len(stored)
            db.close()


@settings(max_examples=40, deadline=None)
@given(doc=json_docs, other=json_docs)
def test_arbitrary_documents_round_trip_through_replace_and_update(doc, other):
    with tempfile.TemporaryDirectory() as tmp:
        with docstore.open(tmp) as db:
            coll = db.create_collection("rt")
            doc_id = coll.insert(doc)
            coll.replace(doc_id, other)
            assert same(coll.get(doc_id), {"_id": doc_id, **other})
            coll.update(doc_id, {"$set": {"zz_new": doc}})
            expected = {"_id": doc_id, **other}
            expected["zz_new"] = doc  # replaced in place if present, else appended (as $set does)
            assert same(coll.get(doc_id), expected)
            assert same(coll.get(doc_id, at_tx=db.tx_id), expected)
            assert db.audit().ok


def test_specific_tricky_documents(coll, db):
    docs = [
        {"": {"": {"": []}}},
        {"a/b": {"~0": {"c.d": 1}}},
        {"x": {"0": "zero-first", "1": 1}},
        {"x": [{"0": 1}], "y": {"0": []}},
        {"t": True, "one": 1, "onef": 1.0, "f": False, "zero": 0, "zf": 0.0, "nz": -0.0},
        {"big": 2**64, "neg": -(2**64) - 5, "huge": 10**100, "max64": 2**64 - 1, "min64": -(2**63)},
        {"e": {}, "l": [], "nested": [[], [[]], {}, [{}]]},
        {"dollar": {"$gt": 1}, "$top": "x"},
        {"sub": 5e-324, "max": 1.7976931348623157e308, "tiny": 1e-7, "exp": 1e22},
    ]
    ids = coll.insert_many(docs)
    for i, d in zip(ids, docs):
        assert same(coll.get(i), {"_id": i, **d})
        assert same(coll.get(i, at_tx=db.tx_id), {"_id": i, **d})
    assert db.audit().ok


# ------------------------------------------------- update paths: array offsets and conflicts


@pytest.mark.parametrize(
    "changes, pattern",
    [
        ({"$set": {"a.²": 5}}, "to index an array"),  # a Unicode digit is not an offset
        ({"$set": {"a.١": 5}}, "to index an array"),  # nor an Arabic-Indic one
        ({"$set": {"a.01": 5}}, "to index an array"),  # nor a leading zero, as in MongoDB
        ({"$set": {"a.99999999999999999999": 5}}, "to index an array"),
        ({"$set": {"a.100000000000000": 5}}, "would pad an array"),
        ({"$set": {"a.1500002": 5}}, "would pad an array"),
        ({"$inc": {"a.²": 1}}, "to index an array"),
        ({"$set": {"a.².b": 1}}, "to index an array"),  # traversing, not only the last part
    ],
)
def test_array_offsets_in_updates_are_ascii_and_bounded(db, coll, changes, pattern):
    coll.insert({"_id": "x", "a": [1, 2]})
    before = db.state()
    with pytest.raises(QueryError, match=pattern):
        coll.update("x", changes)
    assert db.state() == before and coll.get("x") == {"_id": "x", "a": [1, 2]}


def test_unset_of_a_non_offset_in_an_array_changes_nothing(coll):
    coll.insert({"_id": "x", "a": [1, 2]})
    for path in ("a.²", "a.01", "a.5000000000"):
        assert coll.update("x", {"$unset": {path: 1}}) == {"_id": "x", "a": [1, 2]}
    assert coll.update("x", {"$unset": {"a.1": 1}}) == {"_id": "x", "a": [1, None]}


def test_padding_up_to_the_limit_is_allowed(coll):
    coll.insert({"_id": "x", "a": [1]})
    assert coll.update("x", {"$set": {"a.3": 7}})["a"] == [1, None, None, 7]


def test_push_of_an_object_with_a_non_string_key_is_a_typed_error(coll):
    coll.insert({"_id": "x", "a": []})
    with pytest.raises(InvalidDocumentError, match="not a str|non-string key"):
        coll.update("x", {"$push": {"a": {1: 2}}})
    assert coll.get("x") == {"_id": "x", "a": []}


@pytest.mark.parametrize("between", ["q-b", "q+", "q!", "q b"])
def test_conflicting_update_paths_are_found_whatever_sorts_between_them(coll, between):
    coll.insert({"_id": "x"})
    with pytest.raises(QueryError, match="would conflict with 'q'"):
        coll.update("x", {"$set": {"q": {"z": 1}, between: 0, "q.b": 2}})
    with pytest.raises(QueryError, match="would conflict"):
        coll.update("x", {"$set": {"q.b.c": 1}, "$unset": {between: 1, "q": 1}})
    assert coll.get("x") == {"_id": "x"}
