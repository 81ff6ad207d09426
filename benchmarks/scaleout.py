"""Scale-out (issue 17): the PostgreSQL backend against the directory of files, one server
against two on one PostgreSQL ledger, and group commit against none, all in one run.

- embedded, one process: insert_many (1,000 a call) and get by id, the ledger in PostgreSQL
  (a throwaway cluster started from the machine's binaries, tests/pgcluster.py) against files;
- servers: 16 client threads (4 client processes x 4) of single-document inserts, then of gets
  by id, against one server and against two servers on one PostgreSQL ledger (clients split
  between them), ``SECONDS`` each;
- group commit: one server on files, 16 client threads of single-document inserts, with group
  commit and without it (``IMMUDOC_BENCHMARK_WITHOUT_GROUP_COMMIT=1``: each transaction its own
  append, fsync and LMDB commits).

The client processes run on the same machine as the servers: on a machine of few cores they
take CPU the servers would use (the run prints the core count).
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

from benchmarks.common import Result, best_rate, rate
from benchmarks.remote import _start_server
from benchmarks.workload import make_docs

ROOT = Path(__file__).resolve().parents[1]
OURS_PG = "immudoc postgresql"
OURS_FILES = "immudoc files"
TWO = "immudoc 2 servers, postgresql"
ONE = "immudoc 1 server, postgresql"
GROUP = "immudoc 1 server, group commit"
NO_GROUP = "immudoc 1 server, no group commit"
INSERT_MANY = "embedded insert_many (1000/call)"
GET = "embedded get by id"
SRV_WRITES = "16 threads: single-document inserts"
SRV_READS = "16 threads: get by id"
GROUP_WRITES = "16 threads: single-document inserts (files)"
FRESH = "open without a state directory (a new server)"
PUBLISHED = "immudoc postgresql, taking the published derived state"
REPLAYED = "immudoc postgresql, replaying the log"
DERIVED_READ = "one derived-state read (a document's location)"
LMDB_READ = "LMDB (the local state directory)"
PG_READ = "PostgreSQL (a row by primary key, prepared)"
CLIENTS, PER_CLIENT = 4, 4

LOAD = textwrap.dedent(
    """
    import json, sys, threading, time, random
    import docstore
    targets, threads, seconds, op = sys.argv[1].split(","), int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
    ids = json.loads(sys.argv[5]) if len(sys.argv) > 5 else []
    counts, errors = [], []
    start = time.monotonic() + 1.0  # every thread connected before the clock starts
    stop = start + seconds

    def work(k):
        try:
            db = docstore.connect(targets[k % len(targets)], verify=False, timeout=60)
            coll = db["bench"]
        except Exception as e:
            errors.append(repr(e))
            counts.append(0)
            return
        rnd = random.Random(k)
        while time.monotonic() < start:
            time.sleep(0.001)
        n = 0
        while time.monotonic() < stop:
            try:
                if op == "insert":
                    coll.insert({"k": k, "n": n, "site": "s%d" % (n % 13), "v": rnd.random()})
                else:
                    coll.get(ids[rnd.randrange(len(ids))])
            except Exception as e:
                errors.append(repr(e))
                break
            n += 1
        counts.append(n)
        db.close()

    ts = [threading.Thread(target=work, args=(int(sys.argv[6]) * threads + t,)) for t in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    print(json.dumps({"ops": sum(counts), "seconds": seconds, "errors": errors[:3]}))
    """
)


def _seconds(cfg: object) -> float:
    return {"smoke": 2.0, "quick": 5.0}.get(getattr(cfg, "mode", "full"), 15.0)


_PIDS: dict[str, int] = {}
"""The process id of the server behind each target (for its CPU time)."""


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) ticks of every core since boot (/proc/stat; idle and iowait are not busy)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4], sum(fields)


def _proc_ticks(pid: int) -> int:
    """User and system ticks of a process so far (0 if it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return 0


def _usage(targets: list[str], seconds: float, into: list[str]) -> None:
    """Sample the machine's CPU over the measured window of a load (it starts 1 s after the
    clients): how busy every core was, and the servers' share of it."""
    import time

    time.sleep(1.1)
    busy0, total0 = _cpu_ticks()
    srv0 = sum(_proc_ticks(_PIDS.get(t, 0)) for t in targets)
    time.sleep(max(seconds - 0.3, 0.1))
    busy1, total1 = _cpu_ticks()
    srv1 = sum(_proc_ticks(_PIDS.get(t, 0)) for t in targets)
    busy = busy1 - busy0
    if total1 > total0 and busy > 0:
        into.append(f"cores busy {busy / (total1 - total0):.0%}, servers {(srv1 - srv0) / busy:.0%} of it")


def _load(targets: list[str], seconds: float, op: str, ids: list[str] | None = None) -> tuple[float, str]:
    """Operations per second of CLIENTS x PER_CLIENT threads against ``targets``, and how busy
    the machine's cores were meanwhile (the clients run on it too)."""
    import threading

    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    extra = [json.dumps(ids or [])]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", LOAD, ",".join(targets), str(PER_CLIENT), str(seconds), op, *extra, str(c)],
            stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
        )
        for c in range(CLIENTS)
    ]
    print(f"  load: {op}, {len(targets)} server(s), {CLIENTS}x{PER_CLIENT} threads, {seconds:g} s", file=sys.stderr, flush=True)
    usage: list[str] = []
    sampler = threading.Thread(target=_usage, args=(targets, seconds, usage), daemon=True)
    sampler.start()
    outs = [json.loads(p.communicate(timeout=seconds + 120)[0]) for p in procs]
    sampler.join()
    errors = [e for o in outs for e in o["errors"]]
    if errors:
        raise RuntimeError(f"the load failed: {errors[:3]}")
    return sum(o["ops"] for o in outs) / seconds, "; ".join(usage)


@contextlib.contextmanager
def _servers(db: str, n: int, root: str, env: dict[str, str] | None = None) -> Iterator[list[str]]:
    """``n`` servers on ``db`` (a PostgreSQL URL: each its own state directory, one key)."""
    procs = []
    try:
        key = os.path.join(root, "s0", "signing.key")
        for i in range(n):
            extra = dict(env or {})
            if db.startswith("postgresql://"):
                extra["IMMUDOC_STATE_DIR"] = os.path.join(root, f"s{i}")
                if i:
                    extra["IMMUDOC_KEY_FILE"] = key
            procs.append(_start_server(db, extra))
        for proc, port in procs:
            _PIDS[f"127.0.0.1:{port}"] = proc.pid
        yield [f"127.0.0.1:{port}" for _proc, port in procs]
    finally:
        for proc, _port in procs:
            proc.terminate()
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()


def _prepare(target: str, n: int) -> list[str]:
    import docstore

    db = docstore.connect(target, verify=False, timeout=120)
    coll = db.create_collection("bench", indexes=["site"])
    ids: list[str] = []
    for i in range(0, n, 1000):
        ids += coll.insert_many([{"k": -1, "n": j, "site": f"s{j % 13}", "v": 0.5} for j in range(i, min(n, i + 1000))])
    db.close()
    return ids


def _pg_cluster() -> contextlib.AbstractContextManager:
    sys.path.insert(0, str(ROOT / "tests"))
    import pgcluster  # the tests' throwaway cluster (initdb + pg_ctl, as `postgres` when root)

    return contextlib.contextmanager(pgcluster.cluster)()


def _stateless(db: object, url: str, root: str, sample: list[str], n: int) -> list[Result]:
    """A new server on a PostgreSQL ledger (docs/scale-out.md, "Stateless servers"): opening
    without a state directory by replaying the log, then by taking the published derived state;
    and why the derived state is read from a local LMDB, not from PostgreSQL, at each call."""
    import warnings

    import docstore
    from docstore.engine.store import Store

    key = os.path.join(root, "pg-state", "signing.key")
    made = iter(range(1_000_000))

    def fresh() -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "the derived state was missing; rebuilt it from the log"
            docstore.open(url, state_dir=os.path.join(root, f"fresh-{next(made)}"), key_file=key).close()

    out = [Result(FRESH, REPLAYED, rate(1, fresh), "opens/s", size=n)]
    db.publish_state()  # type: ignore[attr-defined]
    out.append(Result(FRESH, PUBLISHED, rate(1, fresh), "opens/s", size=n))

    store = Store(os.path.join(root, "pg-state"), readonly=True)
    try:
        with store.read() as txn:
            out.append(Result(DERIVED_READ, LMDB_READ, best_rate(
                len(sample), lambda: [store.location(txn, "patients", i) for i in sample]), size=n))
            rows = [(k, v) for k, v in txn.cursor(db=store.docs)]
    finally:
        store.close()
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE bench_docs (k bytea PRIMARY KEY, v bytea NOT NULL)")
        with conn.cursor() as cur:
            cur.executemany("INSERT INTO bench_docs VALUES (%s, %s)", rows)
        keys = [b"patients\x00" + i.encode() for i in sample]

        def pg_reads() -> None:
            for k in keys:
                conn.execute("SELECT v FROM bench_docs WHERE k = %s", (k,), prepare=True).fetchone()

        out.append(Result(DERIVED_READ, PG_READ, best_rate(len(keys), pg_reads), size=n))
        conn.execute("DROP TABLE bench_docs")
    return out


def run(cfg: object) -> list[Result]:
    import docstore

    seconds = _seconds(cfg)
    n = {"smoke": 2_000, "quick": 10_000}.get(getattr(cfg, "mode", "full"), 50_000)
    out: list[Result] = []
    root = tempfile.mkdtemp(prefix="immudoc-bench-scaleout-")
    try:
        with _pg_cluster() as cluster:
            # ---------------------------------------------------- embedded: files vs PostgreSQL
            docs = make_docs(n)
            rnd = random.Random(7)
            sample = [d["_id"] for d in rnd.sample(docs, min(2_000, n))]
            pg_url = cluster.new_database()
            opened = {
                OURS_FILES: docstore.open(os.path.join(root, "files")),
                OURS_PG: docstore.open(pg_url, state_dir=os.path.join(root, "pg-state")),
            }
            try:
                for system, db in opened.items():
                    coll = db.create_collection("patients", indexes=["site"])

                    def ins(coll=coll) -> None:
                        for i in range(0, n, 1000):
                            coll.insert_many(docs[i : i + 1000])

                    out.append(Result(INSERT_MANY, system, rate(n, ins), "docs/s", size=n))
                for system, db in opened.items():
                    coll = db["patients"]
                    out.append(Result(GET, system, best_rate(len(sample), lambda c=coll: [c.get(i) for i in sample]), size=n))
                out += _stateless(opened[OURS_PG], pg_url, root, sample, n)
            finally:
                for db in opened.values():
                    db.close()

            # ------------------------------------------ servers: 1 vs 2 on one PostgreSQL ledger
            for count, system in ((1, ONE), (2, TWO)):
                url = cluster.new_database()
                with _servers(url, count, os.path.join(root, f"srv{count}")) as targets:
                    ids = _prepare(targets[0], 2_000)
                    for workload, op in ((SRV_WRITES, "insert"), (SRV_READS, "get")):
                        got, usage = _load(targets, seconds, op, ids)
                        out.append(Result(workload, system, got, note=f"{count} server(s); {usage}"))

        # -------------------------------------------------------- group commit, one server on files
        for system, env in ((GROUP, {}), (NO_GROUP, {"IMMUDOC_BENCHMARK_WITHOUT_GROUP_COMMIT": "1"})):
            with _servers(os.path.join(root, f"g-{len(env)}"), 1, root, env) as targets:
                _prepare(targets[0], 100)
                got, usage = _load(targets, seconds, "insert")
                out.append(Result(GROUP_WRITES, system, got, note=usage))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    cores = os.cpu_count()
    for r in out:
        if r.workload in (SRV_WRITES, SRV_READS, GROUP_WRITES):
            r.note = (r.note + "; " if r.note else "") + f"{CLIENTS}x{PER_CLIENT} client threads on the same {cores}-core machine"
    return out
