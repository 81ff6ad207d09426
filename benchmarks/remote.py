"""Remote: a client talking to ``python -m docstore.server`` on loopback, beside the embedded
database, on the same documents in the same run. The bar: remote insert_many at least 0.5x
the embedded docs/s."""

from __future__ import annotations

import os
import random
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import Result, best_rate, rate
from benchmarks.workload import SCHEMA, make_docs

BATCH = 1000
REMOTE = "immudoc remote"
EMBEDDED = "embedded"


def _start_server(db_dir: str, extra_env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, **(extra_env or {})}
    env["PYTHONPATH"] = str(root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen(
        [sys.executable, "-m", "docstore.server", "--db", db_dir, "--host", "127.0.0.1", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=root,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.5)
        if ready:
            line = proc.stdout.readline()
            m = re.search(r"listening on \S+:(\d+)", line)
            if m:
                return proc, int(m.group(1))
            if not line:
                break
    proc.kill()
    raise RuntimeError("the immudoc server did not start")


def run(quick: bool) -> list[Result]:
    import docstore

    n = 10_000 if quick else 50_000
    docs = make_docs(n)
    rnd = random.Random(5)
    ids = [d["_id"] for d in rnd.sample(docs, min(2_000 if quick else 5_000, n))]
    sites = [docs[rnd.randrange(n)]["site"] for _ in range(300 if quick else 1000)]
    out: list[Result] = []
    root = tempfile.mkdtemp(prefix="immudoc-bench-remote-")
    proc = None
    try:
        # ------------------------------------------------------------- embedded
        emb_path = os.path.join(root, "embedded")
        db = docstore.open(emb_path)
        coll = db.create_collection("patients", schema=SCHEMA, indexes=["site"])

        def ins() -> None:
            for i in range(0, n, BATCH):
                coll.insert_many(docs[i : i + BATCH])

        emb_insert = rate(n, ins)
        trusted = db.state()
        emb_get = best_rate(len(ids), lambda: [coll.get(i) for i in ids])
        emb_find = best_rate(len(sites), lambda: [list(coll.find({"site": s})) for s in sites])
        emb_scan = best_rate(n, lambda: sum(1 for _ in coll.find()), 2)
        db.close()
        vdb = docstore.open(emb_path, verify=True, trusted_state=trusted)
        vcoll = vdb["patients"]
        emb_vget = best_rate(len(ids), lambda: [vcoll.get(i) for i in ids])
        vdb.close()

        # --------------------------------------------------------------- remote
        proc, port = _start_server(os.path.join(root, "server"))
        target = f"127.0.0.1:{port}"
        rdb = docstore.connect(target, state_file=os.path.join(root, "trusted.json"), trust_on_first_use=True)
        rcoll = rdb.create_collection("patients", schema=SCHEMA, indexes=["site"])

        def rins() -> None:
            for i in range(0, n, BATCH):
                rcoll.insert_many(docs[i : i + BATCH])

        rem_insert = rate(n, rins)
        rem_vget = best_rate(len(ids), lambda: [rcoll.get(i) for i in ids])
        plain = docstore.connect(target, verify=False)
        pcoll = plain["patients"]
        rem_get = best_rate(len(ids), lambda: [pcoll.get(i) for i in ids])
        rem_find = best_rate(len(sites), lambda: [list(pcoll.find({"site": s})) for s in sites])
        rem_scan = best_rate(n, lambda: sum(1 for _ in pcoll.find()), 2)
        rem_vfind = best_rate(len(sites), lambda: [list(rcoll.find({"site": s}, verify=True)) for s in sites])
        plain.close()
        rdb.close()

        ratio = rem_insert / emb_insert
        bar = f"remote/embedded {ratio:.2f}x (bar 0.50x: {'met' if ratio >= 0.5 else 'NOT met'})"
        w = f"insert_many ({BATCH}/call, {n:,} docs)"
        out += [Result(w, REMOTE, rem_insert, "docs/s", bar), Result(w, EMBEDDED, emb_insert, "docs/s")]
        w = f"get by id, verified (at {n:,})"
        out += [Result(w, REMOTE, rem_vget), Result(w, EMBEDDED, emb_vget, note="open(verify=True)")]
        w = f"get by id (at {n:,})"
        out += [Result(w, REMOTE, rem_get, note="verify=False"), Result(w, EMBEDDED, emb_get)]
        w = "indexed equality find (~10 docs)"
        out += [Result(w, REMOTE, rem_find, "q/s"), Result(w, EMBEDDED, emb_find, "q/s")]
        out += [Result(w + ", verified", REMOTE, rem_vfind, "q/s", "find(verify=True): a proof per document")]
        w = f"find all, streamed ({n:,} docs)"
        out += [Result(w, REMOTE, rem_scan, "docs/s"), Result(w, EMBEDDED, emb_scan, "docs/s")]
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(root, ignore_errors=True)
    return out
