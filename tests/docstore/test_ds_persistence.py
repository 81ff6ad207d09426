"""Persistence: reopen equivalence, damaged/missing/stale snapshots, and a writer process killed
with SIGKILL in the middle of its transactions."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest

import docstore
import kvcore

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(path):
    """A database with a bit of everything: schemas, indexes, updates, deletes, re-inserts."""
    with docstore.open(path) as db:
        from tests.fixtures.make_v1_db import build as build_v1

        build_v1(db)
        return db.tx_id


QUERIES = [
    ("people", {"city": "Oslo"}),
    ("people", {"age": {"$gte": 100}}),
    ("people", {"tags": "a"}),
    ("people", {"email": "e1-again"}),
    ("events", {"kind": 2}),
    ("events", {"data.n.x": {"$gt": 10}}),
    ("events", {}),
]


def fingerprint(db):
    out = {"tx_id": db.tx_id, "collections": db.collections(), "root": db.state().root.hex()}
    for name in db.collections():
        coll = db[name]
        out[name] = {
            "info": coll.info(),
            "docs": sorted(coll.find(), key=lambda d: d["_id"]),
            "history": {d: [h.to_dict() for h in coll.history(d)] for d in ["p1", "p2", "ev03"] if _has_history(coll, d)},
        }
    out["queries"] = [
        (sorted(d["_id"] for d in db[c].find(q)), db[c].explain(q)) for c, q in QUERIES
    ]
    out["past"] = sorted(d["_id"] for d in db["people"].find({"city": "Oslo"}, at_tx=5))
    return out


def _has_history(coll, doc_id):
    try:
        coll.history(doc_id)
        return True
    except docstore.DocumentNotFoundError:
        return False


@pytest.fixture
def built(tmp_path):
    path = tmp_path / "db"
    build(path)
    with docstore.open(path) as db:
        fp = fingerprint(db)
        assert db.audit().ok
    return path, fp


def test_close_and_reopen_is_equivalent(built):
    path, fp = built
    for _ in range(3):
        with docstore.open(path) as db:
            assert fingerprint(db) == fp
    with docstore.open(path) as db:
        assert db.audit().ok
        # and it keeps working: constraints still hold
        with pytest.raises(docstore.DuplicateKeyError):
            db["people"].insert({"email": "e3"})
        with pytest.raises(docstore.SchemaError):
            db["events"].insert({"nokind": 1})


def test_fingerprint_is_sensitive(built):
    """Sanity check of the equivalence test: a change shows up in the fingerprint."""
    path, fp = built
    with docstore.open(path) as db:
        db["people"].update("p3", {"$set": {"age": 3000}})
        assert fingerprint(db) != fp


STATE = "state.lmdb"


def _reopen_rebuilds(path, fp, match="rebuilt it from the log"):
    """Opening warns that the derived state was rebuilt from the log, and serves the same."""
    with pytest.warns(kvcore.RecoveryWarning, match=match):
        db = docstore.open(path)
    with db:
        assert fingerprint(db) == fp
        assert db.audit().ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once rebuilt, it is kept: no second rebuild
        with docstore.open(path) as db:
            assert fingerprint(db) == fp


def test_missing_derived_state_is_rebuilt(built):
    path, fp = built
    shutil.rmtree(path / STATE)
    _reopen_rebuilds(path, fp, "missing")
    assert (path / STATE / "data.mdb").exists()


@pytest.mark.parametrize(
    "damage",
    ["empty", "zeros", "random", "half", "meta pages", "no lock file"],
)
def test_damaged_derived_state_file_is_rebuilt(built, damage):
    """The LMDB file replaced or cut: opening notices (LMDB's own checks, or the state's
    record of the transaction and root it reflects) and rebuilds it from the log."""
    path, fp = built
    data = path / STATE / "data.mdb"
    good = data.read_bytes()
    if damage == "empty":
        data.write_bytes(b"")
    elif damage == "zeros":
        data.write_bytes(b"\x00" * len(good))
    elif damage == "random":
        data.write_bytes(random.Random(1).randbytes(len(good)))
    elif damage == "half":
        data.write_bytes(good[: len(good) // 2])
    elif damage == "meta pages":  # both meta pages (the first two 4 KiB pages) scrambled
        data.write_bytes(random.Random(2).randbytes(8192) + good[8192:])
    else:
        (path / STATE / "lock.mdb").unlink()  # harmless: LMDB makes a new one
        with docstore.open(path) as db:
            assert fingerprint(db) == fp
        return
    _reopen_rebuilds(path, fp)


def test_derived_state_of_another_version_or_history_is_rebuilt(built):
    """A well-formed store whose record says another format version, a transaction the log does
    not hold, or another root at its transaction: rebuilt."""
    from docstore.engine.store import Store

    path, fp = built
    for edit in ("version", "ahead", "root", "no record"):
        store = Store(str(path), readonly=False)
        with store.write() as txn:
            tx_id, root, _version = store.reflected(txn)
            if edit == "version":
                txn.put(b"version", (99).to_bytes(8, "big"), db=store.meta)
            elif edit == "ahead":
                store.set_reflected(txn, tx_id + 5, root)
            elif edit == "root":
                store.set_reflected(txn, tx_id, bytes(32))
            else:
                txn.delete(b"tx", db=store.meta)
        store.close()
        _reopen_rebuilds(path, fp)


def test_a_database_of_the_earlier_format_opens_and_is_upgraded(tmp_path):
    """A database written before the derived state moved to disk (tests/fixtures/db-v1.tar.gz,
    made by tests/fixtures/make_v1_db.py with commit d115c5e: docs.snap and ledger/index.snap)
    opens with today's code: its derived state is rebuilt from the log once, and it holds
    exactly what the same steps give today; its signing key and history are kept."""
    import tarfile

    from tests.fixtures.make_v1_db import build as build_v1

    path = tmp_path / "v1"
    with tarfile.open(os.path.join(ROOT, "tests", "fixtures", "db-v1.tar.gz")) as tar:
        tar.extractall(path, filter="data")
    assert (path / "docs.snap").exists() and not (path / STATE).exists()
    fresh = tmp_path / "today"
    with docstore.open(fresh) as db:
        build_v1(db)
        want = fingerprint(db)
    seen: list[tuple[str, int, int]] = []
    with pytest.warns(kvcore.RecoveryWarning, match="earlier version"):
        db = docstore.open(path, progress=lambda *a: seen.append(a))
    for stage in ("key index", "derived state"):  # both built from the log, with progress to the end
        mine = [(done, total) for st, done, total in seen if st == stage]
        assert mine and mine[-1][0] == mine[-1][1] > 0 and [d for d, _t in mine] == sorted(d for d, _t in mine)
    with db:
        got = fingerprint(db)
        assert db.origin == "example.com/v1"
        assert db.audit().ok
        for part in ("collections", "tx_id", "queries", "past"):
            assert got[part] == want[part], part
        for name in want["collections"]:
            assert got[name]["info"] == want[name]["info"]
            assert got[name]["docs"] == want[name]["docs"]
            assert [[{k: v for k, v in r.items() if k != "timestamp_ns"} for r in h] for h in got[name]["history"].values()] == [
                [{k: v for k, v in r.items() if k != "timestamp_ns"} for r in h] for h in want[name]["history"].values()
            ]
        db["people"].insert({"_id": "new", "email": "n", "age": 5})  # and it takes new writes
    assert not (path / "docs.snap").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # upgraded once
        with docstore.open(path) as db:
            assert db["people"].get("new")["email"] == "n"
            assert db.audit().ok


def test_stale_derived_state_is_caught_up_from_the_log(tmp_path):
    path = tmp_path / "db"
    build(path)
    shutil.copytree(path / STATE, tmp_path / "older")
    with docstore.open(path) as db:
        db["people"].update("p3", {"$set": {"age": 33}})
        db["people"].delete("p4")
        db["events"].create_index("data.big")
        db.create_collection("later").insert({"_id": "l"})
        fp = fingerprint(db)
    shutil.rmtree(path / STATE)
    shutil.copytree(tmp_path / "older", path / STATE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an older state is no damage: its tail is applied
        with docstore.open(path) as db:
            assert fingerprint(db) == fp
            assert db.audit().ok


def test_derived_state_newer_than_the_log_is_rebuilt(tmp_path):
    early = tmp_path / "early"
    build(early)
    with docstore.open(early) as db:
        fp_early = fingerprint(db)
    late = tmp_path / "late"
    shutil.copytree(early, late)
    with docstore.open(late) as db:
        db["people"].insert({"_id": "only-late", "email": "z", "age": 1})
        db["events"].insert({"_id": "only-late", "kind": 9})
    shutil.rmtree(early / STATE)
    shutil.copytree(late / STATE, early / STATE)  # the newer state next to the older log
    with pytest.warns(kvcore.RecoveryWarning):
        db = docstore.open(early)
    with db:
        assert fingerprint(db) == fp_early
        with pytest.raises(docstore.DocumentNotFoundError):
            db["people"].get("only-late")
        assert db.audit().ok


def test_leftover_files_of_earlier_versions_are_harmless(built):
    path, fp = built
    (path / "docs.snap.tmp").write_bytes(b"garbage from an interrupted save")
    with docstore.open(path) as db:
        assert fingerprint(db) == fp
    with docstore.open(path) as db:
        assert fingerprint(db) == fp


def test_a_failed_audit_of_the_derived_state_rebuilds_it_at_the_next_open(built):
    """The audit finds a derived state that differs from the log (here: a document's location
    pointed at an older revision, through LMDB itself): the database refuses until reopened,
    and the next writable open rebuilds the derived state from the log."""
    from docstore.engine.store import Location, Store

    path, fp = built
    store = Store(str(path), readonly=False)
    with store.write() as txn:
        loc = store.location(txn, "people", "p4")
        store.put_location(txn, "people", "p4", Location(loc.tx_id - 1, 1, loc.revision, loc.n))
    store.close()
    with docstore.open(path) as db:
        report = db.audit()
        assert not report.ok and any("documents" in p for p in report.problems), report.problems
        with pytest.raises(docstore.CorruptDataError):
            db["people"].get("p3")
    _reopen_rebuilds(path, fp)


def test_readonly_open_sees_the_data(built):
    path, fp = built
    with docstore.open(path, readonly=True) as db:
        assert fingerprint(db) == fp
        with pytest.raises(Exception):
            db["people"].insert({"email": "ro", "age": 1})
    with docstore.open(path) as db:
        assert fingerprint(db) == fp


# ============================================================================ SIGKILL

WRITER = textwrap.dedent(
    """
    import json, random, sys
    import docstore

    path, run = sys.argv[1], int(sys.argv[2])
    rnd = random.Random(run)
    db = docstore.open(path)
    if "items" not in db:
        db.create_collection(
            "items",
            schema={"required": ["batch", "k"]},
            indexes=["batch", {"field": "key", "unique": True}, "tags"],
        )
        db.create_collection("groups", indexes=["gen"])
        db["groups"].insert_many([{"_id": f"g{i}", "gen": 0, "log": []} for i in range(5)])
    items, groups = db["items"], db["groups"]

    def say(**msg):
        sys.stdout.write(json.dumps(msg) + "\\n")
        sys.stdout.flush()

    say(op="ready", tx=db.tx_id)
    b = 0
    while True:
        b += 1
        batch = f"r{run}-b{b}"
        k = rnd.randint(1, 10)
        docs = [
            {"_id": f"{batch}-{j}", "batch": batch, "k": k, "key": f"{batch}-{j}",
             "tags": [f"t{j % 3}", batch], "pad": "x" * rnd.randint(0, 1000), "n": j}
            for j in range(k)
        ]
        items.insert_many(docs)
        say(op="insert", batch=batch, k=k, tx=db.tx_id)

        with db.transaction() as tx:
            g = tx["groups"]
            gen = g.get("g0")["gen"] + 1
            for i in range(5):
                g.update(f"g{i}", {"$set": {"gen": gen}, "$push": {"log": batch}})
            # the same transaction also touches the batch just inserted
            for j in range(k):
                tx["items"].update(f"{batch}-{j}", {"$inc": {"n": 1000}, "$set": {"gen": gen}})
        say(op="gen", gen=gen, batch=batch)

        if b % 3 == 0:
            victim = f"r{run}-b{b - 1}"
            say(op="intent-delete", batch=victim)
            with db.transaction() as tx:
                for d in tx["items"].find({"batch": victim}):
                    tx["items"].delete(d["_id"])
            say(op="deleted", batch=victim)
    """
)


def _check_recovered(path, acks, n_groups=5):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # kvcore may report the recovery of a torn tail
        db = docstore.open(path)
    try:
        items, groups = db["items"], db["groups"]
        inserted = {a["batch"]: a["k"] for a in acks if a["op"] == "insert"}
        deleted = {a["batch"] for a in acks if a["op"] == "deleted"}
        maybe_deleted = {a["batch"] for a in acks if a["op"] == "intent-delete"}
        gens = {a["batch"]: a["gen"] for a in acks if a["op"] == "gen"}
        # every acknowledged insert is there, whole
        for batch, k in inserted.items():
            docs = list(items.find({"batch": batch}))
            if batch in deleted:
                assert docs == [], batch
                continue
            if batch in maybe_deleted and not docs:
                continue
            assert len(docs) == k, (batch, len(docs), k)
            assert sorted(d["key"] for d in docs) == sorted(f"{batch}-{j}" for j in range(k))
            assert all(d["k"] == k and d["tags"][1] == batch for d in docs)
            if batch in gens:  # its acknowledged update transaction is there too
                assert all(d["gen"] == gens[batch] and d["n"] >= 1000 for d in docs), batch
        # no transaction is there in part: batches are whole, and updated all together or not at all
        by_batch: dict[str, list] = {}
        for d in items.find():
            by_batch.setdefault(d["batch"], []).append(d)
        for batch, docs in by_batch.items():
            assert len(docs) == docs[0]["k"], batch
            assert len({d.get("gen") for d in docs}) == 1, batch
            assert all((d["n"] >= 1000) == ("gen" in d) for d in docs), batch
        g = [groups.get(f"g{i}") for i in range(n_groups)]
        assert len({d["gen"] for d in g}) == 1
        assert len({tuple(d["log"]) for d in g}) == 1
        acked_gen = max([a["gen"] for a in acks if a["op"] == "gen"], default=0)
        assert acked_gen <= g[0]["gen"] <= acked_gen + 1
        assert len(g[0]["log"]) == g[0]["gen"]
        # unique index and the other indexes agree with the documents
        report = db.audit()
        assert report.ok, report.problems
        assert items.count({"batch": {"$exists": True}}) == items.count()
        return db.tx_id
    finally:
        db.close()


def test_writer_killed_with_sigkill_loses_no_acknowledged_transaction(tmp_path):
    path = str(tmp_path / "db")
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    rnd = random.Random(2024)
    acks: list[dict] = []
    kills = 0
    last_tx = 0
    for run in range(1, 13):
        proc = subprocess.Popen(
            [sys.executable, str(script), path, str(run)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
        )
        try:
            ready = json.loads(proc.stdout.readline() or "null")
            assert ready is not None and ready["op"] == "ready", proc.stderr.read()
            assert ready["tx"] >= last_tx  # the writer sees everything committed before
            target = rnd.randint(2, 14)
            seen = 0
            while seen < target:
                line = proc.stdout.readline()
                assert line, f"writer died: {proc.stderr.read()}"
                acks.append(json.loads(line))
                seen += 1
            # kill at a random point of the following work (mid-transaction most of the time)
            end = time.monotonic() + rnd.uniform(0, 0.02)
            while time.monotonic() < end:
                pass
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            kills += 1
            # whatever it managed to print before dying was acknowledged too
            for line in proc.stdout.read().splitlines():
                if line.strip():
                    acks.append(json.loads(line))
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
            proc.stderr.close()
        assert proc.returncode == -signal.SIGKILL
        if run % 4 == 0 and os.path.exists(os.path.join(path, "state.lmdb")):
            shutil.rmtree(os.path.join(path, "state.lmdb"))
        if run % 3 == 0:  # otherwise the next writer is the first to reopen
            last_tx = _check_recovered(path, acks)
    assert kills >= 10
    assert sum(1 for a in acks if a["op"] == "insert") >= 12
    assert any(a["op"] == "deleted" for a in acks)
    # final: the recovered state is stable across reopen, with or without the derived state
    with docstore.open(path) as db:
        before = sorted(db["items"].find(), key=lambda d: d["_id"])
    shutil.rmtree(os.path.join(path, "state.lmdb"))
    with pytest.warns(kvcore.RecoveryWarning):
        db = docstore.open(path)
    with db:
        assert sorted(db["items"].find(), key=lambda d: d["_id"]) == before
        assert db.audit().ok


@pytest.mark.parametrize("edit", ["index entry added", "index entry lost", "location moved", "count", "definition", "multikey"])
def test_audit_finds_every_kind_of_derived_row_that_differs_from_the_log(tmp_path, edit):
    """Each kind of row of the derived state, changed through LMDB itself (as a forger with
    the real code would): the audit compares the whole state with one rebuilt from the log."""
    from docstore.engine.store import Location, Store

    path = tmp_path / "db"
    with docstore.open(path) as db:
        db.create_collection("c", indexes=["a"]).insert_many([{"_id": f"x{i}", "a": i, "consent": True} for i in range(5)])
        db["c"].update("x1", {"$set": {"a": 10}})
    store = Store(str(path), readonly=False)
    with store.write() as txn:
        if edit == "index entry added":
            store.index_put(txn, "c", "a", [b"\x01forged"], "x2")
        elif edit == "index entry lost":
            store.drop_index(txn, "c", "a")
        elif edit == "location moved":
            loc = store.location(txn, "c", "x1")
            store.put_location(txn, "c", "x1", Location(loc.tx_id - 1, 1, 1, loc.n))
        elif edit == "count":
            store.add_count(txn, "c", 1)
        elif edit == "definition":
            store.set_definition(txn, "c", {"v": 1, "name": "c", "schema": None, "indexes": []})
        else:
            store.set_multi(txn, "c", "a", "x3", True)
    store.close()
    with docstore.open(path) as db:
        report = db.audit()
    assert not report.ok, edit
    assert any("derived state" in p for p in report.problems), report.problems
