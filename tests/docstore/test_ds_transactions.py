"""Multi-document transactions: atomic commit, rollback, snapshot reads, conflicts, threads."""

from __future__ import annotations

import random
import threading

import pytest

import docstore
from docstore import (
    ConflictError,
    DocstoreError,
    DocumentNotFoundError,
    DuplicateKeyError,
    SchemaError,
)


@pytest.fixture
def two(db):
    a = db.create_collection("a")
    b = db.create_collection("b")
    a.insert({"_id": "x", "v": 1})
    b.insert({"_id": "y", "v": 1})
    return a, b


def run_threads(n, target):
    errors: list[BaseException] = []

    def wrapper(i):
        try:
            target(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=wrapper, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


# ============================================================================ atomic commit


def test_multi_document_multi_collection_commit_is_one_ledger_transaction(db, two):
    a, b = two
    before = db.tx_id
    with db.transaction() as tx:
        new_ids = tx["a"].insert_many([{"n": i} for i in range(5)])
        tx["a"].update("x", {"$inc": {"v": 10}})
        tx["b"].replace("y", {"v": 20})
        tx["b"].insert({"_id": "z"})
        tx["a"].delete(new_ids[0])
    assert db.tx_id == before + 1
    assert tx.tx_id == db.tx_id
    assert a.get("x")["v"] == 11 and b.get("y") == {"_id": "y", "v": 20}
    assert a.count() == 5 and b.count() == 2
    # every write carries the same ledger transaction
    assert a.history("x")[-1].tx_id == b.history("y")[-1].tx_id == b.history("z")[-1].tx_id == db.tx_id
    # the document inserted and deleted in the same transaction never existed: nothing of it
    # was written, not even a tombstone
    with pytest.raises(DocumentNotFoundError):
        a.get(new_ids[0])
    with pytest.raises(DocumentNotFoundError):
        a.history(new_ids[0])
    assert db.audit().ok


def test_collections_can_be_used_and_created_in_order(db):
    db.create_collection("c")
    before = db.tx_id
    with db.transaction() as tx:
        c = tx.collection("c")
        c.insert({"_id": "1"})
        assert c.get("1") == {"_id": "1"}
    assert db.tx_id == before + 1
    assert "TxCollection" in repr(c)


def test_exception_rolls_back_everything(db, two):
    a, b = two
    before = db.tx_id
    with pytest.raises(RuntimeError):
        with db.transaction() as tx:
            tx["a"].insert({"_id": "new"})
            tx["a"].update("x", {"$set": {"v": 99}})
            tx["b"].delete("y")
            raise RuntimeError("boom")
    assert db.tx_id == before
    assert a.get("x")["v"] == 1 and b.get("y")["v"] == 1
    with pytest.raises(DocumentNotFoundError):
        a.get("new")


def test_failed_operation_inside_transaction_rolls_back(db, two):
    a, _ = two
    before = db.tx_id
    with pytest.raises(docstore.DuplicateIdError):
        with db.transaction() as tx:
            tx["a"].insert({"_id": "fresh"})
            tx["a"].insert({"_id": "x"})
    assert db.tx_id == before
    with pytest.raises(DocumentNotFoundError):
        a.get("fresh")


def test_explicit_rollback_and_reuse(db, two):
    a, _ = two
    tx = db.transaction()
    tx["a"].insert({"_id": "r"})
    tx.rollback()
    with pytest.raises(DocumentNotFoundError):
        a.get("r")
    with pytest.raises(DocstoreError):
        tx["a"].insert({"_id": "s"})
    with pytest.raises(DocstoreError):
        tx.commit()
    tx2 = db.transaction()
    tx2["a"].insert({"_id": "r"})
    assert tx2.commit() == db.tx_id
    with pytest.raises(DocstoreError):
        tx2["a"].get("r")


def test_transaction_without_writes_commits_nothing(db, two):
    a, _ = two
    before = db.tx_id
    with db.transaction() as tx:
        assert tx["a"].get("x")["v"] == 1
        assert tx["a"].count() == 1
    assert tx.tx_id is None
    assert db.tx_id == before


def test_reads_inside_see_snapshot_plus_own_writes(db, two):
    a, b = two
    with db.transaction() as tx:
        ta = tx["a"]
        ta.insert({"_id": "n1", "v": 5})
        ta.update("x", {"$inc": {"v": 1}})
        assert ta.get("n1") == {"_id": "n1", "v": 5}
        assert ta.get("x")["v"] == 2
        assert ta.count() == 2
        assert ta.count({"v": {"$gte": 2}}) == 2
        assert sorted(d["_id"] for d in ta.find()) == ["n1", "x"]
        assert ta.find_one({"v": 5})["_id"] == "n1"
        assert sorted(ta.distinct("v")) == [2, 5]
        assert [d["_id"] for d in ta.find(sort=[("v", -1)], limit=1)] == ["n1"]
        ta.delete("x")
        with pytest.raises(DocumentNotFoundError):
            ta.get("x")
        assert ta.count() == 1
        # the rest of the world sees none of it yet
        assert a.get("x")["v"] == 1
        with pytest.raises(DocumentNotFoundError):
            a.get("n1")
        assert a.count() == 1
    assert a.count() == 1 and a.get("n1")["v"] == 5
    with pytest.raises(DocumentNotFoundError):
        a.get("x")


def test_returned_documents_inside_a_transaction_are_copies(db, two):
    with db.transaction() as tx:
        doc = tx["a"].get("x")
        doc["v"] = 100
        assert tx["a"].get("x")["v"] == 1
        found = next(tx["a"].find())
        found["v"] = 200
        assert tx["a"].get("x")["v"] == 1
    assert two[0].get("x")["v"] == 1


def test_snapshot_isolation_against_later_commits(db, two):
    a, b = two
    tx = db.transaction()
    snap = tx.snapshot
    assert snap == db.tx_id
    # another writer commits after the snapshot
    a.update("x", {"$set": {"v": 50}})
    a.insert({"_id": "late"})
    # the transaction still reads as of its snapshot (get, find, count)
    assert tx["a"].get("x")["v"] == 1
    assert sorted(d["_id"] for d in tx["a"].find()) == ["x"]
    assert tx["a"].count() == 1
    with pytest.raises(DocumentNotFoundError):
        tx["a"].get("late")
    tx.rollback()


# ============================================================================ conflicts


def test_write_write_conflict(db, two):
    a, b = two
    t1, t2 = db.transaction(), db.transaction()
    t1["a"].update("x", {"$set": {"v": "t1"}})
    t2["a"].update("x", {"$set": {"v": "t2"}})
    t2["b"].insert({"_id": "from-t2"})
    t1.commit()
    before = db.tx_id
    with pytest.raises(ConflictError):
        t2.commit()
    assert db.tx_id == before
    assert a.get("x")["v"] == "t1"
    with pytest.raises(DocumentNotFoundError):
        b.get("from-t2")
    assert isinstance(ConflictError("x"), DocstoreError)


def test_insert_insert_conflict_on_the_same_id(db, two):
    a, _ = two
    t1, t2 = db.transaction(), db.transaction()
    t1["a"].insert({"_id": "same", "by": 1})
    t2["a"].insert({"_id": "same", "by": 2})
    t1.commit()
    with pytest.raises(ConflictError):
        t2.commit()
    assert a.get("same")["by"] == 1


def test_read_write_conflict(db, two):
    a, b = two
    t1 = db.transaction()
    seen = t1["a"].get("x")["v"]  # read x ...
    t1["b"].update("y", {"$set": {"v": seen + 100}})  # ... write y from it
    a.update("x", {"$set": {"v": 7}})  # x changes before t1 commits
    before = db.tx_id
    with pytest.raises(ConflictError):
        t1.commit()
    assert db.tx_id == before
    assert b.get("y")["v"] == 1


def test_read_of_a_missing_document_conflicts_with_its_insert(db, two):
    a, b = two
    t1 = db.transaction()
    with pytest.raises(DocumentNotFoundError):
        t1["a"].get("ghost")
    t1["b"].insert({"_id": "ghost-was-missing"})
    a.insert({"_id": "ghost"})
    with pytest.raises(ConflictError):
        t1.commit()
    with pytest.raises(DocumentNotFoundError):
        b.get("ghost-was-missing")


def test_query_conflicts_with_a_phantom_insert(db, two):
    a, b = two
    t1 = db.transaction()
    n = t1["a"].count({"v": {"$gte": 0}})
    t1["b"].insert({"_id": "summary", "count": n})
    a.insert({"_id": "phantom", "v": 3})
    with pytest.raises(ConflictError):
        t1.commit()
    with pytest.raises(DocumentNotFoundError):
        b.get("summary")


def test_disjoint_transactions_do_not_conflict(db, two):
    a, b = two
    t1, t2 = db.transaction(), db.transaction()
    t1["a"].update("x", {"$inc": {"v": 1}})
    t2["b"].update("y", {"$inc": {"v": 1}})
    t1.commit()
    t2.commit()
    assert a.get("x")["v"] == 2 and b.get("y")["v"] == 2


@pytest.mark.embedded
def test_schema_change_conflicts_with_a_pending_write(db, two):
    a, _ = two
    t1 = db.transaction()
    t1["a"].insert({"_id": "s", "v": "not an int"})
    a.set_schema({"properties": {"v": {"type": "integer"}}})
    with pytest.raises(ConflictError):
        t1.commit()
    with pytest.raises(DocumentNotFoundError):
        a.get("s")
    with pytest.raises(SchemaError):
        a.insert({"v": "x"})


def test_unique_index_creation_conflicts_with_a_pending_duplicate(db, two):
    a, _ = two
    a.insert({"_id": "e1", "email": "dup"})
    t1 = db.transaction()
    t1["a"].insert({"_id": "e2", "email": "dup"})
    a.create_index("email", unique=True)
    with pytest.raises(ConflictError):
        t1.commit()
    assert a.count({"email": "dup"}) == 1
    with pytest.raises(DuplicateKeyError):
        a.insert({"email": "dup"})
    assert db.audit().ok


def test_concurrent_unique_claims_conflict(db):
    u = db.create_collection("u", indexes=[{"field": "k", "unique": True}])
    t1, t2 = db.transaction(), db.transaction()
    t1["u"].insert({"_id": "1", "k": "v"})
    t2["u"].insert({"_id": "2", "k": "v"})
    t1.commit()
    with pytest.raises(ConflictError):
        t2.commit()
    assert [d["_id"] for d in u.find({"k": "v"})] == ["1"]


# ============================================================================ threads


def test_threads_incrementing_in_transactions_end_exact(db):
    counters = db.create_collection("counters")
    log = db.create_collection("log")
    counters.insert_many([{"_id": f"c{i}", "n": 0} for i in range(3)])
    n_threads, per_thread = 8, 25
    conflicts = [0]

    def worker(t):
        rnd = random.Random(t)
        for i in range(per_thread):
            target = f"c{rnd.randrange(3)}"
            while True:
                try:
                    with db.transaction() as tx:
                        cur = tx["counters"].get(target)["n"]
                        tx["counters"].update(target, {"$set": {"n": cur + 1}})
                        if target != "c0":
                            tx["counters"].update("c0", {"$inc": {"total": 1}})
                        tx["log"].insert({"_id": f"{t}-{i}", "target": target})
                    break
                except ConflictError:
                    conflicts[0] += 1

    run_threads(n_threads, worker)
    docs = {d["_id"]: d for d in counters.find()}
    assert sum(d["n"] for d in docs.values()) == n_threads * per_thread
    assert log.count() == n_threads * per_thread
    # every counter equals the number of log entries naming it
    for cid, d in docs.items():
        assert d["n"] == log.count({"target": cid})
    assert docs["c0"].get("total", 0) == log.count({"target": {"$ne": "c0"}})
    assert db.audit().ok


def test_threads_with_single_operation_updates_end_exact(db):
    counters = db.create_collection("counters")
    counters.insert({"_id": "hot", "n": 0, "f": 0.0})
    n_threads, per_thread = 8, 25

    def worker(t):
        for _ in range(per_thread):
            counters.update("hot", {"$inc": {"n": 1, f"by.t{t}": 1}})

    run_threads(n_threads, worker)
    doc = counters.get("hot")
    assert doc["n"] == n_threads * per_thread
    assert sorted(doc["by"].items()) == sorted((f"t{t}", per_thread) for t in range(n_threads))
    assert len(counters.history("hot")) == 1 + n_threads * per_thread
    assert db.audit().ok


def test_threads_inserting_concurrently_lose_nothing(db):
    coll = db.create_collection("c", indexes=["t"])

    def worker(t):
        for i in range(20):
            coll.insert({"t": t, "i": i})
        coll.insert_many([{"t": t, "i": 100 + i} for i in range(5)])

    run_threads(6, worker)
    assert coll.count() == 6 * 25
    for t in range(6):
        assert coll.count({"t": t}) == 25
    assert db.audit().ok


def test_readers_never_see_half_applied_transfers(db):
    accounts = db.create_collection("accounts", indexes=["bank"])
    other = db.create_collection("other_bank")
    n_accounts, initial = 6, 100
    accounts.insert_many([{"_id": f"a{i}", "bank": "one", "balance": initial} for i in range(n_accounts)])
    other.insert({"_id": "b0", "balance": initial})
    total = (n_accounts + 1) * initial
    done = threading.Event()
    observations = [0]

    def transfer(t):
        rnd = random.Random(t)
        for _ in range(40):
            src, dst = rnd.sample([f"a{i}" for i in range(n_accounts)] + ["b0"], 2)
            amount = rnd.randint(1, 30)
            while True:
                try:
                    with db.transaction() as tx:
                        cs = tx["other_bank"] if src == "b0" else tx["accounts"]
                        cd = tx["other_bank"] if dst == "b0" else tx["accounts"]
                        cs.update(src, {"$inc": {"balance": -amount}})
                        cd.update(dst, {"$inc": {"balance": amount}})
                    break
                except ConflictError:
                    pass

    def read(t):
        while not done.is_set():
            with db.transaction() as tx:  # one snapshot across both collections
                s = sum(d["balance"] for d in tx["accounts"].find()) + tx["other_bank"].get("b0")["balance"]
                assert s == total, s
                s2 = sum(tx["accounts"].get(f"a{i}")["balance"] for i in range(n_accounts))
                s2 += sum(d["balance"] for d in tx["other_bank"].find())
                assert s2 == total, s2
            # time travel to the current transaction is a consistent snapshot too
            at = db.tx_id
            s3 = sum(d["balance"] for d in accounts.find(at_tx=at)) + other.get("b0", at_tx=at)["balance"]
            assert s3 == total, s3
            observations[0] += 1

    def read_single_collection(t):
        # transfers inside "accounts" only change one collection: each find() is one snapshot
        while not done.is_set():
            docs = list(accounts.find({"bank": "one"}))
            assert len(docs) == n_accounts
            observations[0] += 1

    reader_errors: list[BaseException] = []
    readers = []
    for i, fn in enumerate([read, read, read_single_collection]):
        readers.append(threading.Thread(target=_catch, args=(fn, i, reader_errors)))
    for r in readers:
        r.start()
    try:
        run_threads(4, transfer)
    finally:
        done.set()
        for r in readers:
            r.join()
    if reader_errors:
        raise reader_errors[0]
    assert observations[0] > 0
    final = sum(d["balance"] for d in accounts.find()) + other.get("b0")["balance"]
    assert final == total
    assert db.audit().ok


def test_single_collection_transfers_keep_every_find_consistent(db):
    accounts = db.create_collection("acc")
    accounts.insert_many([{"_id": f"a{i}", "balance": 50} for i in range(5)])
    done = threading.Event()
    errors: list[BaseException] = []
    seen = [0]

    def reader(_):
        while not done.is_set():
            s = sum(d["balance"] for d in accounts.find())
            assert s == 250, s
            assert sum(d["balance"] for d in accounts.find({"balance": {"$gte": -10**9}})) == 250
            seen[0] += 1

    r = threading.Thread(target=_catch, args=(reader, 0, errors))
    r.start()

    def transfer(t):
        rnd = random.Random(100 + t)
        for _ in range(40):
            a, b = rnd.sample(range(5), 2)
            while True:
                try:
                    with db.transaction() as tx:
                        tx["acc"].update(f"a{a}", {"$inc": {"balance": -5}})
                        tx["acc"].update(f"a{b}", {"$inc": {"balance": 5}})
                    break
                except ConflictError:
                    pass

    try:
        run_threads(3, transfer)
    finally:
        done.set()
        r.join()
    if errors:
        raise errors[0]
    assert seen[0] > 0
    assert sum(d["balance"] for d in accounts.find()) == 250


def _catch(fn, i, errors):
    try:
        fn(i)
    except BaseException as e:  # noqa: BLE001
        errors.append(e)


# ============================================================================ definitions vs threads


@pytest.mark.embedded
def test_threads_creating_the_same_collection(db):
    outcomes: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(6)

    def worker(t):
        barrier.wait()
        try:
            db.create_collection("shared", indexes=[f"f{t}"])
            result = f"created-{t}"
        except docstore.CollectionExistsError:
            result = "exists"
        with lock:
            outcomes.append(result)

    run_threads(6, worker)
    created = [o for o in outcomes if o.startswith("created")]
    assert len(created) == 1 and outcomes.count("exists") == 5
    winner = int(created[0].split("-")[1])
    assert db["shared"].indexes() == [{"field": f"f{winner}", "unique": False}]
    assert len(db.ledger.history(b"c\x00shared")) == 1  # defined once, never overwritten
    assert db.audit().ok


def test_schema_installed_under_concurrent_inserts_holds_for_every_document(db):
    """Writers insert valid and invalid documents while another thread installs a schema that
    forbids the invalid ones: once set_schema succeeded, no invalid document may be live."""
    coll = db.create_collection("c")
    schema = {"required": ["v"]}
    installed = threading.Event()

    def writer(t):
        for i in range(60):
            doc = {"v": i} if i % 2 else {"w": i}
            try:
                coll.insert(doc)
            except docstore.SchemaError:
                assert coll.schema == schema  # only rejected once the schema is in force
            except ConflictError:
                pass  # retries exhausted under contention: nothing was written

    def installer(_):
        while not installed.is_set():
            try:
                with db.transaction() as tx:
                    for d in tx["c"].find({"v": {"$exists": False}}):
                        tx["c"].delete(d["_id"])
                coll.set_schema(schema)
                installed.set()
            except (docstore.SchemaError, ConflictError):
                continue

    errors: list[BaseException] = []
    threads = [threading.Thread(target=_catch, args=(writer, t, errors)) for t in range(4)]
    threads.append(threading.Thread(target=_catch, args=(installer, 0, errors)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    assert installed.is_set()
    assert coll.schema == schema
    bad = [d for d in coll.find() if "v" not in d]
    assert bad == []
    assert db.audit().ok


def test_unique_index_created_under_concurrent_inserts_holds(db):
    coll = db.create_collection("c")
    created = threading.Event()
    errors: list[BaseException] = []

    def writer(t):
        for i in range(40):
            try:
                coll.insert({"k": i % 10, "t": t})  # values shared between threads
            except (DuplicateKeyError, ConflictError):
                pass

    def indexer(_):
        while not created.is_set():
            try:
                with db.transaction() as tx:  # drop duplicates, then try to index
                    seen = set()
                    for d in tx["c"].find(sort=[("_id", 1)]):
                        if d.get("k") in seen:
                            tx["c"].delete(d["_id"])
                        seen.add(d.get("k"))
                coll.create_index("k", unique=True)
                created.set()
            except (DuplicateKeyError, ConflictError):
                continue

    threads = [threading.Thread(target=_catch, args=(writer, t, errors)) for t in range(4)]
    threads.append(threading.Thread(target=_catch, args=(indexer, 0, errors)))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    keys = [d.get("k") for d in coll.find()]
    assert len(keys) == len(set(keys))
    assert coll.indexes() == [{"field": "k", "unique": True}]
    assert db.audit().ok


# ------------------------------------------- a failing call inside a transaction buffers nothing


@pytest.mark.embedded
def test_insert_many_that_breaks_a_unique_index_buffers_nothing_in_a_transaction(db):
    c = db.create_collection("c", indexes=[{"field": "u", "unique": True}, {"field": "v", "unique": True}])
    with db.transaction() as tx:
        with pytest.raises(DuplicateKeyError, match="document 'a' already has this value"):
            tx["c"].insert_many([{"_id": "a", "u": 1}, {"_id": "b", "u": 1}])
        with pytest.raises(DuplicateKeyError):  # the second index fails after the first passed
            tx["c"].insert_many([{"_id": "a", "u": 2, "v": 1}, {"_id": "b", "u": 3, "v": 1}])
        tx["c"].insert({"_id": "z", "u": 1, "v": 1})  # no claim of the failed calls is left
    assert list(c.find()) == [{"_id": "z", "u": 1, "v": 1}]
    c.insert_many([{"_id": "a", "u": 2, "v": 2}, {"_id": "b", "u": 3, "v": 3}])
    assert c.count() == 3 and db.audit().ok


@pytest.mark.embedded
def test_a_write_failing_on_its_second_unique_index_leaves_no_claim(db):
    c = db.create_collection("c", indexes=[{"field": "u", "unique": True}, {"field": "v", "unique": True}])
    c.insert({"_id": "held", "v": 9})
    with db.transaction() as tx:
        with pytest.raises(DuplicateKeyError, match="'held'"):
            tx["c"].insert({"_id": "x", "u": 1, "v": 9})  # u would be claimed, then v fails
        tx["c"].insert({"_id": "y", "u": 1})  # so u=1 is still free
    with pytest.raises(DuplicateKeyError, match="'y'"):
        c.insert({"_id": "w", "u": 1})
    c.delete("y")
    c.insert({"_id": "w", "u": 1})  # the claim went with its document; none was orphaned
    assert sorted(d["_id"] for d in c.find()) == ["held", "w"] and db.audit().ok
