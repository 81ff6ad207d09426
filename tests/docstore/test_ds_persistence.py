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

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def build(path):
    """A database with a bit of everything: schemas, indexes, updates, deletes, re-inserts."""
    with docstore.open(path) as db:
        people = db.create_collection(
            "people",
            schema={"properties": {"age": {"type": "integer"}}},
            indexes=["city", {"field": "email", "unique": True}],
        )
        events = db.create_collection("events")
        people.insert_many(
            [{"_id": f"p{i}", "city": ["Oslo", "Rome", "Lima"][i % 3], "email": f"e{i}", "age": i} for i in range(30)]
        )
        for i in range(0, 30, 4):
            people.update(f"p{i}", {"$inc": {"age": 100}, "$push": {"tags": {"$each": ["a", "b"]}}})
        for i in range(1, 30, 7):
            people.delete(f"p{i}")
        people.insert({"_id": "p1", "city": "Back", "email": "e1-again", "age": 1})
        events.create_index("kind")
        with db.transaction() as tx:
            for i in range(20):
                tx["events"].insert({"_id": f"ev{i:02}", "kind": i % 4, "data": {"n": [i, {"x": i * 1.5}], "big": 2**70 + i}})
            tx["people"].replace("p2", {"city": "Moved", "email": "e2", "age": 2})
        events.set_schema({"required": ["kind"]})
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


def test_missing_snapshot_is_rebuilt(built):
    path, fp = built
    (path / "docs.snap").unlink()
    with docstore.open(path) as db:
        assert fingerprint(db) == fp
        assert db.audit().ok
    assert (path / "docs.snap").exists()  # rewritten on close
    with docstore.open(path) as db:
        assert fingerprint(db) == fp


def test_corrupted_snapshot_is_rebuilt(built):
    path, fp = built
    snap = path / "docs.snap"
    good = snap.read_bytes()
    rnd = random.Random(7)
    offsets = [0, 3, 7, 8, 20, 39, 40, 41, len(good) // 2, len(good) - 1] + [rnd.randrange(len(good)) for _ in range(6)]
    for off in offsets:
        bad = bytearray(good)
        bad[off] ^= 0x01 << rnd.randrange(8)
        snap.write_bytes(bytes(bad))
        with docstore.open(path) as db:
            assert fingerprint(db) == fp, off
        assert snap.read_bytes() != bytes(bad)  # replaced by a good one on close
    for damaged in [b"", b"IMDOCS01", good[:40], good[:-1], good + b"x", b"\x00" * len(good), os.urandom(500)]:
        snap.write_bytes(damaged)
        with docstore.open(path) as db:
            assert fingerprint(db) == fp
            assert db.audit().ok


def test_snapshot_with_valid_checksum_but_bad_body_is_rebuilt(built):
    """A well-formed container whose body is not a snapshot (e.g. another version)."""
    import hashlib
    import marshal

    path, fp = built
    bodies = [
        marshal.dumps((2, 0, [])),
        marshal.dumps("not a tuple"),
        marshal.dumps((1, 3)),
        b"\xff\xfe",
        marshal.dumps((1, 2, [("people", b"[]", {}, [])])),  # a definition that is not an object
        marshal.dumps((1, 2, [("people", b"{}", {}, [("x",)])])),
        marshal.dumps((1, 2, [("people", b'{"schema": 5}', {}, [])])),
    ]
    import struct
    import zlib

    for body in bodies:
        for container in (
            b"IMDOCS01" + hashlib.sha256(body).digest() + body,  # the first format
            b"IMDOCS02" + struct.pack(">I", zlib.crc32(body)) + body,
        ):
            (path / "docs.snap").write_bytes(container)
            with docstore.open(path) as db:
                assert fingerprint(db) == fp


def test_snapshots_of_the_first_format_are_still_read(built):
    """IMDOCS01 (SHA-256 checksum) snapshots load as they are: no rebuild after an upgrade."""
    import hashlib
    import marshal

    import orjson

    path, _fp = built
    blob = (path / "docs.snap").read_bytes()
    assert blob[:8] == b"IMDOCS02"
    version, tx_id, root, colls = marshal.loads(blob[12:])
    # a marker only a snapshot that is read (not one rebuilt from the ledger) can show
    marked = [
        (name, meta, {**docs, "p1": orjson.dumps({"_id": "p1", "marker": True})} if name == "people" else docs, idx)
        for name, meta, docs, idx in colls
    ]
    body = marshal.dumps((version, tx_id, root, marked))
    (path / "docs.snap").write_bytes(b"IMDOCS01" + hashlib.sha256(body).digest() + body)
    with docstore.open(path) as db:
        assert db["people"].get("p1") == {"_id": "p1", "marker": True}
        assert not db.audit().ok  # the audit still compares the cache with the ledger


def test_stale_snapshot_is_caught_up_from_the_ledger(tmp_path):
    path = tmp_path / "db"
    build(path)
    old_snap = (path / "docs.snap").read_bytes()
    with docstore.open(path) as db:
        db["people"].update("p3", {"$set": {"age": 33}})
        db["people"].delete("p4")
        db["events"].create_index("data.big")
        db.create_collection("later").insert({"_id": "l"})
        fp = fingerprint(db)
    (path / "docs.snap").write_bytes(old_snap)
    with docstore.open(path) as db:
        assert fingerprint(db) == fp
        assert db.audit().ok


def test_snapshot_newer_than_the_ledger_is_ignored(tmp_path):
    early = tmp_path / "early"
    build(early)
    with docstore.open(early) as db:
        fp_early = fingerprint(db)
    late = tmp_path / "late"
    shutil.copytree(early, late)
    with docstore.open(late) as db:
        db["people"].insert({"_id": "only-late", "email": "z", "age": 1})
        db["events"].insert({"_id": "only-late", "kind": 9})
    # put the newer snapshot next to the older ledger
    shutil.copy(late / "docs.snap", early / "docs.snap")
    with docstore.open(early) as db:
        assert fingerprint(db) == fp_early
        with pytest.raises(docstore.DocumentNotFoundError):
            db["people"].get("only-late")
        assert db.audit().ok


def test_leftover_temporary_snapshot_is_harmless(built):
    path, fp = built
    (path / "docs.snap.tmp").write_bytes(b"garbage from an interrupted save")
    with docstore.open(path) as db:
        assert fingerprint(db) == fp
    with docstore.open(path) as db:
        assert fingerprint(db) == fp


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
        if run % 4 == 0 and os.path.exists(os.path.join(path, "docs.snap")):
            os.remove(os.path.join(path, "docs.snap"))
        if run % 3 == 0:  # otherwise the next writer is the first to reopen
            last_tx = _check_recovered(path, acks)
    assert kills >= 10
    assert sum(1 for a in acks if a["op"] == "insert") >= 12
    assert any(a["op"] == "deleted" for a in acks)
    # final: the recovered state is stable across reopen, with or without the snapshot
    with docstore.open(path) as db:
        before = sorted(db["items"].find(), key=lambda d: d["_id"])
    os.remove(os.path.join(path, "docs.snap"))
    with docstore.open(path) as db:
        assert sorted(db["items"].find(), key=lambda d: d["_id"]) == before
        assert db.audit().ok


@pytest.mark.parametrize(
    "cached",
    [
        {"_id": "x", "consent": 1, "dose": 1.5, "a": 1, "b": 2},  # true became 1
        {"_id": "x", "consent": True, "dose": 1.5, "b": 2, "a": 1},  # key order swapped
        {"_id": "x", "consent": True, "dose": 1.5, "a": 1.0, "b": 2},  # 1 became 1.0
    ],
)
def test_audit_finds_a_cached_document_that_differs_only_in_type_or_key_order(tmp_path, cached):
    import marshal
    import struct
    import zlib

    import orjson

    path = tmp_path / "db"
    with docstore.open(path) as db:
        db.create_collection("c").insert({"_id": "x", "consent": True, "dose": 1.5, "a": 1, "b": 2})
    blob = (path / "docs.snap").read_bytes()
    assert blob[:8] == b"IMDOCS02"
    version, tx_id, root, colls = marshal.loads(blob[12:])
    edited = [(name, meta, {**docs, "x": orjson.dumps(cached)}, idx) for name, meta, docs, idx in colls]
    body = marshal.dumps((version, tx_id, root, edited))
    (path / "docs.snap").write_bytes(b"IMDOCS02" + struct.pack(">I", zlib.crc32(body)) + body)
    with docstore.open(path) as db:
        assert list(db["c"].get("x")) == list(cached)  # the edited cache is what is served
        report = db.audit()
        assert not report.ok
        assert any("cached documents differ" in p for p in report.problems), report.problems
