"""One behaviour suite, run against the embedded database, a remote one, and a verifying remote
one (every ``get`` proven): the shared ``db`` fixture of tests/conftest.py, with the kinds below.
"""

from __future__ import annotations

import math
import struct
import uuid

import pytest

import docstore
import kvcore
from docstore import (
    CollectionExistsError,
    CollectionNotFoundError,
    ConflictError,
    DocumentNotFoundError,
    DuplicateIdError,
    DuplicateKeyError,
    InvalidDocumentError,
    InvalidPointerError,
    NotFoundError,
    QueryError,
    SchemaError,
    VerificationError,
)
from remote_testlib import ServerProcess


DB_KINDS = ("embedded", "remote", "remote-verifying")


@pytest.fixture
def name():
    return "c" + uuid.uuid4().hex[:12]


def same(a, b):
    """Strict JSON identity: types, key order, floats bit for bit."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return struct.pack(">d", a) == struct.pack(">d", b)
    return a == b


PEOPLE = [
    {"_id": f"p{i:02d}", "name": n, "age": a, "city": c, "tags": t}
    for i, (n, a, c, t) in enumerate(
        [
            ("Ada", 36, "London", ["math", "code"]),
            ("Bo", 25, "Oslo", ["ski"]),
            ("Cy", 41, "Oslo", []),
            ("Di", 25, "Paris", ["code"]),
            ("Ed", 58, "London", ["golf", "code"]),
            ("Flo", 19, "Rome", ["ski", "math"]),
        ]
    )
]


# ================================================================================ CRUD
def test_crud(db, name):
    c = db.create_collection(name)
    doc_id = c.insert({"site": "Oslo", "dosage": {"mg": 5}})
    assert isinstance(doc_id, str) and len(doc_id) == 26
    assert c.get(doc_id) == {"_id": doc_id, "site": "Oslo", "dosage": {"mg": 5}}
    assert c.insert({"_id": "fixed", "n": 1}) == "fixed"
    ids = c.insert_many([{"n": i} for i in range(5)])
    assert len(ids) == 5 and len(set(ids)) == 5
    assert c.count(verify=False) == 7
    assert c.replace("fixed", {"n": 2, "m": "x"}) == {"_id": "fixed", "n": 2, "m": "x"}
    assert c.update("fixed", {"$set": {"a.b": 1}, "$inc": {"n": 3}, "$push": {"l": 7}, "$unset": {"m": ""}}) == {
        "_id": "fixed",
        "n": 5,
        "a": {"b": 1},
        "l": [7],
    }
    assert c.get("fixed") == {"_id": "fixed", "n": 5, "a": {"b": 1}, "l": [7]}
    c.delete("fixed")
    with pytest.raises(DocumentNotFoundError):
        c.get("fixed")
    assert c.count(verify=False) == 6
    assert c.insert_many([]) == []


def test_exact_round_trip(db, name):
    c = db.create_collection(name)
    doc = {
        "_id": "x",
        "big": 2**80,
        "neg": -(2**70),
        "u64": 2**64 - 1,
        "f": 0.1,
        "tiny": 5e-324,
        "negzero": -0.0,
        "one_f": 1.0,
        "one": 1,
        "t": True,
        "n": None,
        "s": "naïve ☃ \u2028",
        "empty": {"o": {}, "a": []},
        "zero_key": {"0": "a", "1": "b"},
        "order": {"z": 1, "a": 2, "m": 3},
        "nested": [[1, [2, [3, {"k": [4.5]}]]]],
    }
    c.insert(doc)
    assert same(c.get("x"), doc)
    assert same(next(c.find({"_id": "x"})), doc)
    assert same(c.history("x")[0].document, doc)


def test_invalid_documents(db, name):
    c = db.create_collection(name)
    for bad in ({"x": math.nan}, {"x": math.inf}, {"x": (1, 2)}, {"x": {1, 2}}, {1: "a"}, {"x": b"b"}):
        with pytest.raises(InvalidDocumentError):
            c.insert(bad)
    with pytest.raises(InvalidDocumentError):
        c.insert({"_id": 5})
    with pytest.raises(InvalidDocumentError):
        c.insert_many({"a": 1})
    c.insert({"_id": "ok"})
    with pytest.raises(InvalidDocumentError):
        c.replace("ok", {"x": float("-inf")})
    assert c.count(verify=False) == 1


# ===================================================================== queries
@pytest.fixture
def people(db, name):
    c = db.create_collection(name, indexes=["city"])
    c.insert_many(PEOPLE)
    return c


def test_find_filter_sort_projection_paging(people):
    def ids(it):
        return [d["_id"] for d in it]

    assert ids(people.find({"city": "Oslo"}, sort="_id")) == ["p01", "p02"]
    assert ids(people.find({"age": {"$gte": 25, "$lt": 50}}, sort=[("age", -1), ("_id", 1)])) == ["p02", "p00", "p01", "p03"]
    assert ids(people.find({"tags": "code"}, sort={"age": 1})) == ["p03", "p00", "p04"]
    assert ids(people.find({}, sort="age", skip=2, limit=2)) == ["p03", "p00"]
    assert ids(people.find({"$or": [{"city": "Rome"}, {"age": 58}]}, sort="_id")) == ["p04", "p05"]
    assert list(people.find({"city": "Paris"}, projection={"name": 1, "_id": 0})) == [{"name": "Di"}]
    assert list(people.find({"_id": "p01"}, projection=["age"])) == [{"_id": "p01", "age": 25}]
    assert list(people.find({"city": "Nowhere"})) == []
    assert list(people.find({}, limit=0)) == []
    assert people.find_one({"city": "London"}, sort=[("age", -1)])["name"] == "Ed"
    assert people.find_one({"city": "Nowhere"}) is None
    assert sorted(ids(people.find())) == [d["_id"] for d in PEOPLE]


def test_count_distinct_explain(people):
    assert people.count(verify=False) == 6
    assert people.count({"city": "Oslo"}, verify=False) == 2
    assert people.count({"age": {"$gt": 100}}, verify=False) == 0
    assert sorted(people.distinct("city", verify=False)) == ["London", "Oslo", "Paris", "Rome"]
    assert sorted(people.distinct("tags", {"age": {"$lt": 40}}, verify=False)) == ["code", "math", "ski"]
    plan = people.explain({"city": "Oslo"}, verify=False)
    assert plan["plan"] == "index" and plan["index"] == "city" and plan["candidates"] == 2
    assert people.explain({"age": 3}, verify=False)["plan"] == "scan"


def test_indexes_and_unique(db, name):
    c = db.create_collection(name, indexes=["a", {"field": "u", "unique": True}])
    assert c.indexes() == [{"field": "a", "unique": False}, {"field": "u", "unique": True}]
    c.insert({"_id": "1", "u": "x"})
    with pytest.raises(DuplicateKeyError):
        c.insert({"_id": "2", "u": "x"})
    c.create_index("b.c")
    assert {"field": "b.c", "unique": False} in c.indexes()
    with pytest.raises(QueryError):
        c.create_index("b.c")
    c.insert({"_id": "3", "v": 1, "u": "y"})
    c.insert({"_id": "4", "v": 1, "u": "z"})
    with pytest.raises(DuplicateKeyError):
        c.create_index("v", unique=True)
    assert c.info(verify=False)["count"] == 3


def test_schema(db, name):
    schema = {"type": "object", "required": ["n"], "properties": {"n": {"type": "integer"}}}
    c = db.create_collection(name, schema=schema)
    assert c.schema == schema
    c.insert({"n": 1})
    with pytest.raises(SchemaError) as e:
        c.insert({"n": "one"})
    assert e.value.errors
    with pytest.raises(SchemaError):
        c.set_schema({"type": "object", "required": ["m"]})
    c.set_schema(None)
    assert c.schema is None
    c.insert({"anything": True})


# ===================================================================== history
def test_history_and_time_travel(db, name):
    c = db.create_collection(name)
    c.insert({"_id": "d", "v": 1})
    t1 = db.state().tx_id
    c.update("d", {"$set": {"v": 2}})
    t2 = db.state().tx_id
    c.delete("d")
    hist = c.history("d")
    assert [(r.revision, r.deleted) for r in hist] == [(1, False), (2, False), (3, True)]
    assert [r.document for r in hist] == [{"_id": "d", "v": 1}, {"_id": "d", "v": 2}, None]
    assert [r.tx_id for r in hist][:2] == [t1, t2]
    assert all(isinstance(r.timestamp_ns, int) and r.timestamp_ns > 0 for r in hist)
    assert [r.revision for r in c.history("d", offset=1, limit=1)] == [2]
    assert c.get("d", at_tx=t1) == {"_id": "d", "v": 1}
    assert c.get("d", at_tx=t2) == {"_id": "d", "v": 2}
    assert list(c.find({"v": 1}, at_tx=t1)) == [{"_id": "d", "v": 1}]
    assert c.count(at_tx=t2, verify=False) == 1 and c.count(verify=False) == 0
    with pytest.raises(DocumentNotFoundError):
        c.get("d")
    with pytest.raises(DocumentNotFoundError):
        c.history("never")
    with pytest.raises(QueryError):
        c.get("d", at_tx=10**9)


def test_long_history_is_paged(db, name):
    """More revisions than one page of the History stream (500)."""
    c = db.create_collection(name)
    c.insert({"_id": "h", "v": 0})
    for _ in range(520):
        c.update("h", {"$inc": {"v": 1}})
    revs = c.history("h")
    assert [r.revision for r in revs] == list(range(1, 522))
    assert [r.document["v"] for r in revs] == list(range(521))
    assert [r.revision for r in c.history("h", offset=498, limit=5)] == [499, 500, 501, 502, 503]


# ================================================================ transactions
def test_transaction_commit_and_read_your_writes(db, name):
    a = db.create_collection(name)
    b = db.create_collection(name + "b")
    a.insert({"_id": "acct1", "balance": 100})
    a.insert({"_id": "acct2", "balance": 0})
    with db.transaction() as tx:
        x = tx[name].get("acct1")
        tx[name].update("acct1", {"$inc": {"balance": -30}})
        tx[name].update("acct2", {"$inc": {"balance": 30}})
        tx[name + "b"].insert({"_id": "log1", "amount": 30, "from": x["_id"]})
        assert tx[name].get("acct1")["balance"] == 70
        assert tx[name].count({"balance": 30}, verify=False) == 1
        assert sorted(d["_id"] for d in tx[name + "b"].find()) == ["log1"]
    assert tx.tx_id is not None
    assert a.get("acct1")["balance"] == 70 and a.get("acct2")["balance"] == 30
    assert b.get("log1") == {"_id": "log1", "amount": 30, "from": "acct1"}


def test_transaction_rollback_and_errors(db, name):
    c = db.create_collection(name)
    c.insert({"_id": "k", "v": 1})
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx[name].update("k", {"$set": {"v": 99}})
            tx[name].insert({"_id": "new"})
            raise RuntimeError("abandon")
    assert c.get("k") == {"_id": "k", "v": 1} and c.count(verify=False) == 1
    with pytest.raises(DuplicateIdError):
        with db.transaction() as tx:
            tx[name].insert({"_id": "k"})
    with pytest.raises(DocumentNotFoundError):
        with db.transaction() as tx:
            tx[name].delete("absent")
    with pytest.raises(CollectionNotFoundError):
        with db.transaction() as tx:
            tx["nope" + name]
    with db.transaction() as tx:
        assert tx[name].get("k")["v"] == 1  # read only: nothing to commit
    assert tx.tx_id is None
    tx = db.transaction()
    tx[name].insert({"_id": "late"})
    assert tx.commit() is not None
    with pytest.raises(docstore.DocstoreError):
        tx[name].insert({"_id": "later"})
    assert c.get("late") == {"_id": "late"}


def test_transaction_conflict(db, name):
    c = db.create_collection(name)
    c.insert({"_id": "k", "v": 1})
    t1 = db.transaction()
    t2 = db.transaction()
    v1 = t1[name].get("k")["v"]
    v2 = t2[name].get("k")["v"]
    t1[name].update("k", {"$set": {"v": v1 + 10}})
    t2[name].update("k", {"$set": {"v": v2 + 100}})
    t1.commit()
    with pytest.raises(ConflictError):
        t2.commit()
    assert c.get("k")["v"] == 11
    assert [r.revision for r in c.history("k")] == [1, 2]


def test_transaction_conflict_on_query(db, name):
    c = db.create_collection(name)
    c.insert({"_id": "a", "on": True})
    tx = db.transaction()
    n = tx[name].count({"on": True}, verify=False)
    tx[name].insert({"_id": "summary", "n": n})
    c.insert({"_id": "b", "on": True})  # a phantom: the query's answer changed
    with pytest.raises(ConflictError):
        tx.commit()
    with pytest.raises(DocumentNotFoundError):
        c.get("summary")


def test_transaction_conflict_on_read_absent(db, name):
    c = db.create_collection(name)
    tx = db.transaction()
    with pytest.raises(DocumentNotFoundError):
        tx[name].get("slot")
    tx[name].insert({"_id": "slot", "by": "tx"})
    c.insert({"_id": "slot", "by": "other"})
    with pytest.raises((ConflictError, DuplicateIdError)):
        tx.commit()
    assert c.get("slot")["by"] == "other"


def test_transaction_delete_then_insert_and_find_overlay(db, name):
    c = db.create_collection(name)
    c.insert_many([{"_id": "a", "n": 1}, {"_id": "b", "n": 2}, {"_id": "c", "n": 3}])
    with db.transaction() as tx:
        t = tx[name]
        t.delete("a")
        t.replace("b", {"n": 20})
        t.insert({"_id": "d", "n": 4})
        assert sorted(d["_id"] for d in t.find()) == ["b", "c", "d"]
        assert [d["n"] for d in t.find({"n": {"$gt": 2}}, sort="n")] == [3, 4, 20]
        assert t.find_one({"n": 20}, projection={"_id": 1}) == {"_id": "b"}
        assert sorted(t.distinct("n", verify=False)) == [3, 4, 20]
        t.insert({"_id": "a", "n": 100})
    assert sorted((d["_id"], d["n"]) for d in c.find()) == [("a", 100), ("b", 20), ("c", 3), ("d", 4)]
    assert [r.deleted for r in c.history("a")] == [False, False]


# ======================================================================= errors
def test_errors_are_the_embedded_types(db, name):
    c = db.create_collection(name)
    c.insert({"_id": "one", "x": 1})
    c.insert({"_id": "arrays", "p": [1, 2], "q": [3, 4]})
    now = db.state()
    cases = [
        (lambda: list(c.find({"_id": "arrays"}, sort=[("p", 1), ("q", 1)])), QueryError),  # parallel arrays
        (lambda: c.update("arrays", {"$set": {"p.01": 1}}), QueryError),
        (lambda: c.update("arrays", {"$set": {"r": {}, "s": 1, "r.b": 2}}), QueryError),
        (lambda: c.prove("one", state=kvcore.State(now.tx_id, bytes(32))), VerificationError),
        (lambda: c.prove("one", state=kvcore.State(now.tx_id + 50, now.root)), QueryError),
        (lambda: c.prove("one", known_state=kvcore.State(-1, bytes(32))), QueryError),
        (lambda: c.prove("one", 5), InvalidPointerError),
        (lambda: db.prove_consistency(now, (1, b"")), QueryError),
        (lambda: c.insert_many(None), InvalidDocumentError),
        (lambda: c.insert_many(5), InvalidDocumentError),
        (lambda: c.update("one", {"$set": {"t": {1, 2}}}), InvalidDocumentError),
        (lambda: c.update("one", {"$set": {"t": (1, 2)}}), InvalidDocumentError),
        (lambda: c.update("one", {"$push": {"t": (1, 2)}}), InvalidDocumentError),
        (lambda: c.set_schema({1, 2}), SchemaError),
        (lambda: db.create_collection(name + "-s", schema={"a": {1, 2}}), SchemaError),
        (lambda: db.collection("missing" + name), CollectionNotFoundError),
        (lambda: db["missing" + name], CollectionNotFoundError),
        (lambda: db.create_collection(name), CollectionExistsError),
        (lambda: db.create_collection("bad name!"), QueryError),
        (lambda: c.insert({"_id": "one"}), DuplicateIdError),
        (lambda: c.get("two"), DocumentNotFoundError),
        (lambda: c.update("two", {"$set": {"a": 1}}), DocumentNotFoundError),
        (lambda: c.replace("two", {}), DocumentNotFoundError),
        (lambda: c.delete("two"), DocumentNotFoundError),
        (lambda: c.update("one", {"$frobnicate": {"a": 1}}), QueryError),
        (lambda: c.update("one", {"$set": {"x": math.nan}}), InvalidDocumentError),
        (lambda: c.replace("one", {"_id": "other"}), InvalidDocumentError),
        (lambda: list(c.find({"$bogus": 1})), QueryError),
        (lambda: c.find({"x": {"$regex": 1}}), QueryError),
        (lambda: c.find({}, projection={"a": 1, "b": 0}), QueryError),
        (lambda: c.find({}, skip=-1), QueryError),
        (lambda: c.count({"$where": "1"}), QueryError),
        (lambda: c.distinct("$x"), QueryError),
        (lambda: c.history("one", limit=-1), QueryError),
        (lambda: c.prove("one", "not-a-pointer"), InvalidPointerError),
        (lambda: c.prove("one", "/nope"), NotFoundError),
        (lambda: c.prove("two"), DocumentNotFoundError),
        (lambda: c.get("one", at_tx=-1), QueryError),
    ]
    for fn, exc in cases:
        with pytest.raises(exc) as e:
            fn()
        assert type(e.value) is exc, (fn, e.value)
    assert c.get("one") == {"_id": "one", "x": 1}
    assert c.get("arrays") == {"_id": "arrays", "p": [1, 2], "q": [3, 4]}
    # counts beyond int64 mean "all" or "none" remotely too, and indexes=None is no index
    assert list(c.find({}, skip=2**63)) == [] and len(list(c.find({}, limit=2**63))) == 2
    assert c.history("one", offset=2**63) == [] and len(c.history("one", limit=2**63)) == 1
    assert db.create_collection(name + "-n", indexes=None).count(verify=False) == 0


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with ServerProcess(tmp_path_factory.mktemp("parity") / "db") as s:
        yield s


def test_error_messages_match(server, tmp_path):
    """The remote error carries the server's message (a server process): the same text as embedded."""
    name = "m" + uuid.uuid4().hex[:8]
    emb = docstore.open(tmp_path / "emb")
    rem = docstore.connect(server.target, verify=False)
    try:
        for d in (emb, rem):
            d.create_collection(name, schema={"type": "object", "properties": {"n": {"type": "integer"}}})
            d[name].insert({"_id": "one", "n": 1})
        ops = [
            lambda d: d[name].insert({"_id": "one"}),
            lambda d: d[name].update("two", {"$set": {"a": 1}}),
            lambda d: d[name].insert({"n": "x", "_id": "s"}),
            lambda d: d[name].update("one", {"$set": {"n": 2**70}}) and d[name].update("one", {"$bad": 1}),
            lambda d: d.create_collection(name),
            lambda d: d[name].insert({"_id": "p", "deep": {"a": math.inf}}),
        ]
        for op in ops:
            got = []
            for d in (emb, rem):
                with pytest.raises(docstore.DocstoreError) as e:
                    op(d)
                got.append((type(e.value), str(e.value), getattr(e.value, "path", None), getattr(e.value, "errors", None)))
            assert got[0] == got[1]
    finally:
        emb.close()
        rem.close()


# ======================================================================= proofs
def test_proofs_verify(db, name):
    c = db.create_collection(name, schema={"type": "object"}, indexes=["site"])
    c.insert({"_id": "p17", "site": "Oslo", "dosage": {"mg": 5.0}, "consent": True})
    s1 = db.state()
    assert docstore.verify(c.prove("p17"), s1) == {"_id": "p17", "site": "Oslo", "dosage": {"mg": 5.0}, "consent": True}
    assert docstore.verify(c.prove("p17", "/dosage/mg"), s1) == 5.0
    meta = docstore.verify(c.prove_schema(), s1)
    assert meta["name"] == name and meta["schema"] == {"type": "object"}
    c.update("p17", {"$set": {"dosage.mg": 7.5}})
    s2 = db.state()
    assert s2.tx_id == s1.tx_id + 1
    key = db.verifier_key()
    with pytest.raises(docstore.VerificationError, match="signed by a key you pin"):
        docstore.verify(c.prove("p17", "/dosage/mg", known_state=s1), s1)  # newer: a signature is needed
    assert docstore.verify(c.prove("p17", "/dosage/mg", known_state=s1), s1, verifier_keys=[key]) == 7.5
    assert docstore.verify(c.prove("p17", "/dosage/mg", at_tx=s1.tx_id, state=s1), s1) == 5.0
    assert docstore.verify(c.prove("p17", "/dosage/mg", at_tx=s1.tx_id, known_state=s1), s1) == 5.0
    text = c.prove("p17").to_json()
    assert docstore.verify(docstore.proofs.load(text), s2)["dosage"]["mg"] == 7.5
    with pytest.raises(docstore.VerificationError):
        docstore.verify(c.prove("p17"), s1, [key])  # no consistency proof bundled
    cp = db.prove_consistency(s1)
    docstore.verify_consistency(s1, s2, cp)
    c.delete("p17")
    assert docstore.verify(c.prove("p17"), db.state()) is None
    forged = kvcore.State(s1.tx_id, bytes(32))
    with pytest.raises(docstore.VerificationError):
        db.prove_consistency(forged)


def test_state_audit_and_collections(db, name):
    db.create_collection(name)
    db[name].insert({"a": 1})
    st = db.state()
    assert isinstance(st, kvcore.State) and st.tx_id >= 2 and len(st.root) == 32
    report = db.audit()
    assert report.ok, report.problems
    assert report.tx_count >= st.tx_id
    assert name in db.collections(verify=False) and name in db and ("x" + name) not in db
    assert db.collections(verify=False) == sorted(db.collections(verify=False))


def test_a_transaction_reads_as_of_its_start_or_at_tx(db, name):
    c = db.create_collection(name)
    c.insert({"_id": "k", "n": 0})
    first = db.state().tx_id
    t = db.transaction()
    c.insert({"_id": "after"})  # committed after t began: not in t's snapshot
    with pytest.raises(DocumentNotFoundError):
        t[name].get("after")
    t.rollback()
    t = db.transaction()
    c.update("k", {"$inc": {"n": 1}})
    t[name].update("k", {"$inc": {"n": 5}})  # read and written at the older snapshot
    with pytest.raises(ConflictError):
        t.commit()
    t = db.transaction()
    c.insert({"_id": "race"})
    t[name].insert({"_id": "race"})  # only written: still a conflict with the snapshot, as embedded
    with pytest.raises(ConflictError):
        t.commit()
    t = db.transaction(at_tx=first)
    assert t.snapshot == first and t[name].get("k") == {"_id": "k", "n": 0}
    t.rollback()
    with pytest.raises(QueryError):
        db.transaction(at_tx=10**9)
    assert c.get("k") == {"_id": "k", "n": 1}
