"""Concurrency: many threads in one process, and one writer process with several reader
processes (``docstore.open(path, readonly=True)`` + ``refresh()``).

Every transaction writes or changes a whole batch of N documents that share a batch number and a
generation; a reader that ever sees a batch with fewer than N documents, or with two
generations, has seen a transaction in part. Conflicting transactions raise ConflictError and
are retried: the counters they increment end exact.
"""

from __future__ import annotations

import json
import random
import threading
import time


import docstore
from docstore import ConflictError
from rel_testlib import child_env, contents, spawn_script, stop

N = 5  # documents per batch


def _batches_whole(docs, where: str) -> list[str]:
    """Problems: a batch with other than N documents, or with mixed generations."""
    by: dict[str, list] = {}
    for d in docs:
        by.setdefault(d["batch"], []).append(d)
    out = []
    for batch, group in by.items():
        if len(group) != N:
            out.append(f"{where}: batch {batch} has {len(group)} of {N} documents")
        if len({d["gen"] for d in group}) != 1:
            out.append(f"{where}: batch {batch} mixes generations {sorted({d['gen'] for d in group})}")
    return out


# ==================================================================================== threads
def test_threads_reading_writing_and_proving_see_whole_transactions(place, tmp_path):
    db = place.open()
    db.create_collection("batches", indexes=["batch", "gen"])
    db.create_collection("counters").insert_many([{"_id": f"c{i}", "n": 0} for i in range(3)])
    stop_at = time.monotonic() + 3.0
    errors: list[str] = []
    done = {"batches": 0, "regens": 0, "incs": 0, "conflicts": 0, "auto_incs": 0, "reads": 0, "proofs": 0}
    lock = threading.Lock()
    committed: list[str] = []

    def guard(fn):
        def run(*args):
            try:
                fn(*args)
            except BaseException as e:  # noqa: BLE001 - reported by the test
                errors.append(f"{fn.__name__}: {type(e).__name__}: {e}")

        return run

    @guard
    def writer(w: int) -> None:
        rnd = random.Random(w)
        i = 0
        while time.monotonic() < stop_at:
            i += 1
            batch = f"w{w}-{i}"
            db["batches"].insert_many([{"_id": f"{batch}-{j}", "batch": batch, "gen": 0, "j": j} for j in range(N)])
            with lock:
                committed.append(batch)
                done["batches"] += 1
                target = rnd.choice(committed)
            while True:  # a whole batch moves to its next generation in one transaction
                try:
                    with db.transaction() as tx:
                        docs = list(tx["batches"].find({"batch": target}))
                        gen = docs[0]["gen"] + 1
                        for d in docs:
                            tx["batches"].update(d["_id"], {"$set": {"gen": gen}})
                    break
                except ConflictError:
                    with lock:
                        done["conflicts"] += 1
            with lock:
                done["regens"] += 1

    @guard
    def incrementer(k: int) -> None:
        while time.monotonic() < stop_at:
            c = f"c{k % 3}"
            while True:  # read-modify-write by hand: a conflict is retried until it commits
                tx = db.transaction()
                n = tx["counters"].get(c)["n"]
                tx["counters"].replace(c, {"n": n + 1})
                try:
                    tx.commit()
                    break
                except ConflictError:
                    with lock:
                        done["conflicts"] += 1
            with lock:
                done["incs"] += 1
            try:  # the auto-retrying single operation
                db["counters"].update(c, {"$inc": {"n": 1}})
                with lock:
                    done["auto_incs"] += 1
            except ConflictError:  # gave up after its retries: it wrote nothing
                pass

    @guard
    def reader(r: int) -> None:
        rnd = random.Random(r)
        while time.monotonic() < stop_at:
            errors.extend(_batches_whole(db["batches"].find(), "find()"))
            batch = rnd.choice(committed) if committed else "none"
            found = list(db["batches"].find({"batch": batch}))  # an index plan
            if found and len(found) != N:
                errors.append(f"indexed find: batch {batch} has {len(found)} documents")
            with db.transaction() as tx:  # snapshot reads: two queries, one state
                first = sorted(d["_id"] for d in tx["batches"].find())
                time.sleep(0.001)
                if sorted(d["_id"] for d in tx["batches"].find()) != first:
                    errors.append("a transaction's two reads saw different states")
                errors.extend(_batches_whole(tx["batches"].find(), "in a transaction"))
            with lock:
                done["reads"] += 1

    @guard
    def prover() -> None:
        trusted = db.state()
        while time.monotonic() < stop_at:
            if not committed:
                continue
            batch = random.choice(committed)
            proof = db["batches"].prove(f"{batch}-0", known_state=trusted)
            doc = docstore.verify(docstore.proofs.load(proof.to_json()), trusted, [db.verifier_key()])
            if doc["batch"] != batch:
                errors.append("a proof proved another document")
            docstore.verify_consistency(trusted, proof.state, db.prove_consistency(trusted, proof.state))
            with lock:
                done["proofs"] += 1

    @guard
    def auditor() -> None:
        while time.monotonic() < stop_at:
            report = db.audit()
            if not report.ok:
                errors.append(f"audit: {report.problems}")
            time.sleep(0.3)

    threads = (
        [threading.Thread(target=writer, args=(w,)) for w in range(2)]
        + [threading.Thread(target=incrementer, args=(k,)) for k in range(3)]
        + [threading.Thread(target=reader, args=(r,)) for r in range(2)]
        + [threading.Thread(target=prover), threading.Thread(target=auditor)]
    )
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    try:
        assert errors == [], errors[:10]
        assert all(not t.is_alive() for t in threads)
        total = sum(db["counters"].get(f"c{i}")["n"] for i in range(3))
        assert total == done["incs"] + done["auto_incs"], (total, done)  # retried counters end exact
        assert done["conflicts"] > 0, f"no transaction ever conflicted: {done}"
        assert min(done["batches"], done["regens"], done["reads"], done["proofs"]) > 0, done
        assert _batches_whole(db["batches"].find(), "end") == []
        gens = {d["batch"]: d["gen"] for d in db["batches"].find()}
        assert sum(gens.values()) == done["regens"]  # every generation step applied exactly once
        assert db.audit().ok
    finally:
        db.close()
    with place.open() as again:  # and all of it was durable
        assert sum(again["counters"].get(f"c{i}")["n"] for i in range(3)) == total


# ================================================================================== processes
WRITER = r'''
import json, random, sys, time
import docstore
path, seconds = sys.argv[1], float(sys.argv[2])
N = %d
db = docstore.open(path, wait=10)
items = db["batches"]
rnd = random.Random(1)
live, i, end = [], 0, time.monotonic() + seconds
while time.monotonic() < end:
    i += 1
    batch = "b%%d" %% i
    items.insert_many([{"_id": "%%s-%%d" %% (batch, j), "batch": batch, "gen": 0, "j": j, "pad": "x" * rnd.randint(0, 300)}
                       for j in range(N)])
    live.append(batch)
    if i %% 3 == 0:  # a whole batch moves to its next generation
        target = rnd.choice(live)
        with db.transaction() as tx:
            for d in tx["batches"].find({"batch": target}):
                tx["batches"].update(d["_id"], {"$inc": {"gen": 1}, "$push": {"seen": i}})
    if i %% 5 == 0:  # a whole batch goes away
        victim = live.pop(rnd.randrange(len(live)))
        with db.transaction() as tx:
            for d in tx["batches"].find({"batch": victim}):
                tx["batches"].delete(d["_id"])
print(json.dumps({"tx": db.tx_id, "count": items.count(), "batches": len(live)}), flush=True)
db.close()
''' % N

READER = r'''
import json, os, random, sys, time, warnings
import docstore
path, stop_file = sys.argv[1], sys.argv[2]
N = %d
warnings.simplefilter("ignore")  # a reader may see a commit still being written as a torn tail
db = docstore.open(path, readonly=True)
problems, seen, checks, last = [], set(), 0, -1


def check(where):
    by = {}
    for d in db["batches"].find():
        by.setdefault(d["batch"], []).append(d)
    for batch, group in by.items():
        if len(group) != N or len({d["gen"] for d in group}) != 1:
            problems.append("%%s: batch %%s: %%d documents, generations %%s" %% (where, batch, len(group), sorted({d["gen"] for d in group})))
    return by


while not os.path.exists(stop_file):
    tx = db.refresh()
    if tx < last:
        problems.append("refresh went back from %%d to %%d" %% (last, tx))
    last = tx
    seen.add(tx)
    by = check("find")
    if by:
        batch = random.choice(sorted(by))
        # each read sees the writer's latest whole transaction (the batch may be gone by now)
        found = list(db["batches"].find({"batch": batch}))
        if len(found) not in (0, N) or len({d["gen"] for d in found}) > 1:
            problems.append("indexed find of %%s: %%d documents" %% (batch, len(found)))
        if found:
            db.refresh()
            try:
                proof = db["batches"].prove(found[0]["_id"])
            except docstore.NotFoundError:
                proof = None
            proven = None if proof is None else docstore.verify(proof, db.state())
            if proven is not None and proven["batch"] != batch:  # (None: deleted since)
                problems.append("a proof proved another document")
    checks += 1
    if checks %% 25 == 0:
        report = db.audit()
        if not report.ok:
            problems.append("audit: %%s" %% report.problems)
db.refresh()
check("final")
print(json.dumps({"problems": problems[:20], "distinct_states": len(seen), "checks": checks, "tx": db.tx_id,
                  "count": db["batches"].count()}), flush=True)
db.close()
''' % N


def test_one_writer_process_and_reader_processes_see_whole_transactions(place, tmp_path):
    path, env = place.target, {**child_env(), **place.server_env()}
    with place.open() as db:
        db.create_collection("batches", indexes=["batch", "gen"])
    stop_file = tmp_path / "stop"
    writer = spawn_script(WRITER, str(path), "3.0", env=env)
    readers = [spawn_script(READER, str(path), str(stop_file), env=env) for _ in range(3)]
    try:
        out, err = writer.communicate(timeout=60)
        assert writer.returncode == 0, err
        final = json.loads(out)
        stop_file.write_text("stop")
        reports = []
        for r in readers:
            out, err = r.communicate(timeout=60)
            assert r.returncode == 0, err
            reports.append(json.loads(out))
    finally:
        for p in [writer, *readers]:
            stop(p)
    for report in reports:
        assert report["problems"] == [], report["problems"]
        assert report["tx"] == final["tx"] and report["count"] == final["count"]
        assert report["distinct_states"] >= 3, report  # they read while it wrote
    with place.open() as db:
        assert db.audit().ok
        assert _batches_whole(db["batches"].find(), "after") == []
        assert len(contents(db)["batches"]) == final["count"]


# ===================================================================== conflicts, exactly once
def test_retried_read_modify_write_counters_end_exact(place, tmp_path):
    """Threads doing read-modify-write on a few hot documents with explicit retries: every
    increment lands exactly once, and losers saw ConflictError, never a lost update."""
    with place.open() as db:
        db.create_collection("hot").insert_many([{"_id": f"h{i}", "n": 0, "log": []} for i in range(2)])
        per_thread, threads_n = 40, 4
        conflicts = [0] * threads_n
        errors: list[str] = []

        def work(t: int) -> None:
            try:
                for k in range(per_thread):
                    doc_id = f"h{(t + k) % 2}"
                    while True:
                        tx = db.transaction()
                        cur = tx["hot"].get(doc_id)
                        tx["hot"].replace(doc_id, {"n": cur["n"] + 1, "log": cur["log"] + [f"{t}:{k}"]})
                        try:
                            tx.commit()
                            break
                        except ConflictError:
                            conflicts[t] += 1
            except BaseException as e:  # noqa: BLE001
                errors.append(repr(e))

        threads = [threading.Thread(target=work, args=(t,)) for t in range(threads_n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == []
        docs = [db["hot"].get(f"h{i}") for i in range(2)]
        assert sum(d["n"] for d in docs) == per_thread * threads_n
        logs = [e for d in docs for e in d["log"]]
        assert len(logs) == len(set(logs)) == per_thread * threads_n  # each exactly once
        assert sum(conflicts) > 0
        assert db.audit().ok


# ======================================================== audits while others read and write
def test_audit_passes_while_a_reader_is_in_the_middle_of_a_scan(tmp_path):
    """Regression: the audit compared marshal bytes of the key index, and marshal flags objects
    that have other references; a suspended scan (any reader thread) holding one location made
    an intact ledger fail its audit with "the in-memory key index does not match the log"."""
    import kvcore

    with kvcore.Ledger.open(tmp_path / "ledger") as led:
        for i in range(20):
            led.set_all({b"k/%d" % i: b"v", b"shared": b"%d" % i})
        scan = led.scan(b"shared")
        next(scan)  # suspended: it holds the location of the newest of the key's 20 revisions
        assert led.audit().ok
        scan.close()


def test_a_readers_audit_tolerates_tree_nodes_the_writer_has_not_written_yet(tmp_path):
    """Regression: the writer appends the (derived) tree file after each commit, so a reader that
    has seen a commit may find the file a node short; its audit reported tampering. It still
    finds a changed node."""
    import kvcore

    path = tmp_path / "ledger"
    with kvcore.Ledger.open(path) as led:
        for i in range(9):
            led.set(b"k%d" % i, b"v")
    tree = path / "tree"
    full = tree.read_bytes()
    with kvcore.Ledger.open(path, readonly=True) as reader:
        tree.write_bytes(full[:-64])  # as if the last commit's nodes were still to come
        assert reader.audit().ok
        damaged = bytearray(full[:-64])
        damaged[40] ^= 1
        tree.write_bytes(bytes(damaged))
        report = reader.audit()
        assert not report.ok and "tree node" in " ".join(report.problems)
    tree.write_bytes(full)
