"""Writes by filter (update_one, update_many, replace_one, delete_one, delete_many,
count_documents): one contract, the same results and errors embedded, remote (one
WriteByFilter call) and through a verifying client; also inside transactions of each."""

from __future__ import annotations

import uuid

import pytest

import docstore
from docstore import (
    DeleteResult,
    DuplicateIdError,
    DuplicateKeyError,
    InvalidDocumentError,
    QueryError,
    ReasonRequiredError,
    SchemaError,
    UpdateResult,
)

DB_KINDS = ("embedded", "remote", "remote-verifying", "postgres")

VISITS = [
    {"_id": f"V-{i}", "site": site, "n": i, "status": "open", "tags": ["a"]}
    for i, site in enumerate(["Oslo", "Oslo", "Rome", "Oslo", "Paris"])
]


@pytest.fixture
def coll(db):
    c = db.create_collection("c" + uuid.uuid4().hex[:12], indexes=["site"])
    c.insert_many([dict(v) for v in VISITS])
    return c


def _all(c):
    return sorted(c.find({}, verify=False), key=lambda d: d["_id"])


def test_update_many_and_update_one(db, coll):
    r = coll.update_many({"site": "Oslo"}, {"$inc": {"n": 10}, "$addToSet": {"tags": "b"}}, reason="recount")
    assert isinstance(r, UpdateResult)
    assert (r.matched_count, r.modified_count, r.upserted_id) == (3, 3, None)
    assert r.tx == db.tx_id
    assert [d["n"] for d in _all(coll)] == [10, 11, 2, 13, 4]
    assert [h.reason for h in coll.history("V-0")] == [None, "recount"]
    # a document the update leaves as it is: matched, not modified, no revision
    r = coll.update_many({"site": "Oslo"}, {"$addToSet": {"tags": "b"}})
    assert (r.matched_count, r.modified_count, r.tx) == (3, 0, None)
    assert len(coll.history("V-0")) == 2
    r = coll.update_many({"n": {"$gte": 4}}, {"$set": {"n": 4}})  # V-4 already 4: not modified
    assert (r.matched_count, r.modified_count) == (4, 3)
    r = coll.update_one({"site": "Oslo"}, {"$set": {"status": "closed"}})
    assert (r.matched_count, r.modified_count) == (1, 1)
    assert coll.count_documents({"status": "closed"}) == 1
    r = coll.update_one({"site": "Nowhere"}, {"$set": {"status": "closed"}})
    assert (r.matched_count, r.modified_count, r.upserted_id, r.tx) == (0, 0, None, None)


def test_upserts(coll):
    r = coll.update_one({"_id": "V-9", "site": "Oslo", "dose.mg": {"$eq": 5}, "n": {"$gt": 1}},
                        {"$set": {"status": "new"}, "$setOnInsert": {"created": True}}, upsert=True)
    assert (r.matched_count, r.modified_count, r.upserted_id) == (0, 0, "V-9")
    assert coll.get("V-9") == {"_id": "V-9", "site": "Oslo", "dose": {"mg": 5}, "status": "new", "created": True}
    r = coll.update_one({"_id": "V-9"}, {"$set": {"status": "seen"}, "$setOnInsert": {"created": False}}, upsert=True)
    assert (r.matched_count, r.modified_count, r.upserted_id) == (1, 1, None)
    assert coll.get("V-9")["created"] is True
    r = coll.update_many({"$and": [{"site": "Bergen"}, {"n": 7}]}, {"$inc": {"n": 1}}, upsert=True)
    assert r.upserted_id is not None and len(r.upserted_id) == 26
    assert coll.get(r.upserted_id) == {"_id": r.upserted_id, "site": "Bergen", "n": 8}
    # the filter's _id is held by a document the filter does not match: as MongoDB, a duplicate
    with pytest.raises(DuplicateIdError):
        coll.update_one({"_id": "V-1", "site": "Rome"}, {"$set": {"x": 1}}, upsert=True)
    r = coll.replace_one({"site": "Lima"}, {"site": "Lima", "n": 1}, upsert=True)
    assert coll.get(r.upserted_id) == {"_id": r.upserted_id, "site": "Lima", "n": 1}
    r = coll.replace_one({"_id": "L-2"}, {"site": "Lima"}, upsert=True)
    assert r.upserted_id == "L-2"


def test_replace_one(coll):
    r = coll.replace_one({"site": "Rome"}, {"site": "Roma", "n": 0})
    assert (r.matched_count, r.modified_count) == (1, 1)
    assert coll.get("V-2") == {"_id": "V-2", "site": "Roma", "n": 0}
    assert coll.replace_one({"_id": "V-2"}, {"_id": "V-2", "site": "Roma", "n": 0}).modified_count == 0
    with pytest.raises(InvalidDocumentError):
        coll.replace_one({"_id": "V-2"}, {"_id": "other"})
    with pytest.raises(QueryError, match="update operators"):
        coll.replace_one({"_id": "V-2"}, {"$set": {"n": 1}})
    assert coll.get("V-2") == {"_id": "V-2", "site": "Roma", "n": 0}


def test_delete_one_and_many(db, coll):
    r = coll.delete_one({"site": "Oslo"})
    assert isinstance(r, DeleteResult) and r.deleted_count == 1 and r.tx == db.tx_id
    r = coll.delete_many({"site": "Oslo"}, reason="withdrawn")
    assert r.deleted_count == 2
    assert [d["_id"] for d in _all(coll)] == ["V-2", "V-4"]
    assert coll.history("V-3")[-1].deleted and coll.history("V-3")[-1].reason == "withdrawn"
    r = coll.delete_many({"site": "Oslo"})
    assert (r.deleted_count, r.tx) == (0, None)
    assert coll.delete_many({}).deleted_count == 2
    assert coll.count_documents({}) == 0


@pytest.mark.parametrize(
    "call",
    [
        lambda c: c.update_many(None, {"$set": {"a": 1}}),
        lambda c: c.update_many({"n": {"$bogus": 1}}, {"$set": {"a": 1}}),
        lambda c: c.update_many({}, {"a": 1}),
        lambda c: c.update_many({}, {"$inc": {"n": "1"}}),
        lambda c: c.update_many({}, {"$pop": {"tags": 2}}),
        lambda c: c.update_many({}, {"$set": {"a": 1}}, upsert="yes"),
        lambda c: c.update_one({}, [{"$set": {"a": 1}}]),
        lambda c: c.replace_one("V-1", {"a": 1}),
        lambda c: c.delete_many(None),
        lambda c: c.delete_one([("site", "Oslo")]),
        lambda c: c.count_documents(None),
        lambda c: c.update_many({}, {"$set": {"status": 1}}, user="x" * 1000),
    ],
)
def test_malformed_calls_write_nothing(db, coll, call):
    before = db.tx_id
    with pytest.raises(QueryError):
        call(coll)
    assert db.tx_id == before


def test_a_failure_on_one_document_writes_none(db, coll):
    coll.update("V-3", {"$set": {"n": "three"}})
    before = db.tx_id
    with pytest.raises(QueryError, match="not a number"):
        coll.update_many({}, {"$inc": {"n": 1}})
    with pytest.raises(InvalidDocumentError):
        coll.update_many({}, {"$set": {"x": float("nan")}})
    assert db.tx_id == before
    assert [d["n"] for d in _all(coll)] == [0, 1, 2, "three", 4]


def test_unique_index_and_schema_are_checked_for_all(db):
    c = db.create_collection("u" + uuid.uuid4().hex[:8], indexes=[{"field": "code", "unique": True}],
                             schema={"type": "object", "properties": {"n": {"type": "integer"}}})
    c.insert_many([{"_id": "a", "code": 1, "n": 1}, {"_id": "b", "code": 2, "n": 2}])
    before = db.tx_id
    with pytest.raises(DuplicateKeyError):
        c.update_many({}, {"$set": {"code": 7}})
    with pytest.raises(SchemaError):
        c.update_many({}, {"$mul": {"n": 1.5}})
    assert db.tx_id == before
    assert c.update_many({}, {"$inc": {"code": 10}}).modified_count == 2  # claims move together
    assert sorted(d["code"] for d in c.find({}, verify=False)) == [11, 12]


def test_require_reason(db, coll):
    coll.set_require_reason(True)
    with pytest.raises(ReasonRequiredError):
        coll.update_many({}, {"$set": {"status": "x"}})
    with pytest.raises(ReasonRequiredError):
        coll.delete_one({"site": "Rome"})
    assert coll.update_many({}, {"$set": {"status": "x"}}, reason="audit", meta={"ticket": 7}).modified_count == 5
    rev = coll.history("V-0")[-1]
    assert (rev.reason, rev.meta) == ("audit", {"ticket": 7})


def test_an_idempotency_key_commits_once(db, coll):
    first = coll.update_many({"site": "Oslo"}, {"$inc": {"n": 1}}, idempotency_key="k-1")
    again = coll.update_many({"site": "Oslo"}, {"$inc": {"n": 1}}, idempotency_key="k-1")
    assert first == again and first.modified_count == 3 and first.tx is not None
    assert [d["n"] for d in _all(coll)] == [1, 2, 2, 4, 4]
    d1 = coll.delete_many({"site": "Paris"}, idempotency_key="k-2")
    assert coll.delete_many({"site": "Paris"}, idempotency_key="k-2") == d1 and d1.deleted_count == 1
    with pytest.raises(QueryError, match="another write"):
        coll.delete_many({"site": "Paris"}, idempotency_key="k-1")


def test_in_a_transaction(db, coll):
    name = coll.name
    with db.transaction() as tx:
        t = tx[name]
        t.insert({"_id": "V-7", "site": "Oslo", "n": 7})
        r = t.update_many({"site": "Oslo"}, {"$inc": {"n": 100}})
        assert (r.matched_count, r.modified_count, r.tx) == (4, 4, None)  # its own insert too
        assert t.count_documents({"n": {"$gte": 100}}, verify=False) == 4
        assert t.delete_one({"_id": "V-4"}).deleted_count == 1
        assert t.replace_one({"_id": "V-2"}, {"site": "Rome", "n": -1}).modified_count == 1
        u = t.update_one({"_id": "V-8"}, {"$set": {"site": "Bergen"}}, upsert=True)
        assert u.upserted_id == "V-8"
    assert tx.tx_id == db.tx_id
    assert {d["_id"]: d.get("n") for d in _all(coll)} == {
        "V-0": 100, "V-1": 101, "V-2": -1, "V-3": 103, "V-7": 107, "V-8": None,
    }
    tx = db.transaction()
    tx[name].delete_many({})
    tx.rollback()
    assert coll.count_documents({}) == 6


def test_the_results_are_exported():
    assert docstore.UpdateResult(1, 1).to_dict() == {"matched_count": 1, "modified_count": 1, "upserted_id": None, "tx": None}
    assert docstore.DeleteResult(2, 5).to_dict() == {"deleted_count": 2, "tx": 5}


def test_a_token_writes_by_filter_only_where_it_may_write(tmp_path):
    import json

    from docstore.remote import PermissionDeniedError
    from remote_testlib import ServerProcess

    tokens = [
        {"token": "a-0123456789", "role": "admin"},
        {"token": "s-0123456789", "name": "Site 7", "roles": {"visits": "write", "*": "read"}},
    ]
    path = tmp_path / "tokens"
    path.write_text(json.dumps(tokens))
    with ServerProcess(tmp_path / "db", "--tokens-file", str(path)) as s:
        with docstore.connect(s.target, token="a-0123456789", verify=False) as admin:
            for name in ("visits", "sites"):
                admin.create_collection(name).insert_many([{"_id": "a", "n": 1}, {"_id": "b", "n": 2}])
        with docstore.connect(s.target, token="s-0123456789", verify=False) as site:
            before = site.tx_id
            for attempt in (
                lambda: site["sites"].update_many({}, {"$inc": {"n": 1}}),
                lambda: site["sites"].replace_one({"_id": "a"}, {"n": 0}),
                lambda: site["sites"].delete_many({}),
            ):
                with pytest.raises(PermissionDeniedError):
                    attempt()
            assert site.tx_id == before
            r = site["visits"].update_many({}, {"$inc": {"n": 1}}, reason="recount")
            assert r.modified_count == 2
            last = site["visits"].history("a")[-1]
            assert (last.user, last.reason) == ("Site 7", "recount")  # the principal, not a claim
            with pytest.raises(QueryError):
                site["visits"].update_many({}, {"$inc": {"n": 1}}, user="someone else")


def test_current_date_is_one_time_for_the_whole_call(coll):
    coll.update_many({}, {"$currentDate": {"seen": True, "ms": {"$type": "timestamp"}}})
    docs = _all(coll)
    assert len({d["seen"] for d in docs}) == 1 and len({d["ms"] for d in docs}) == 1
    assert docs[0]["seen"].endswith("Z") and type(docs[0]["ms"]) is int
