"""Footprint at every size: bytes on disk per document, open time, peak memory.

- bytes on disk: blocks allocated under each database (after a clean close: SQLite's WAL
  checkpointed); the documents as JSON lines are the reference floor; immudoc's note splits
  its figure into the log, the tree and txindex, kvcore's key index and docstore's derived
  state (both LMDB).
- open: a fresh interpreter opens the database and reads one document (immudoc
  ``readonly=True``), best of a few.
- peak RSS: the same interpreter then serves 1,000 gets and 100 indexed finds; the figure is
  its peak resident set minus that of an interpreter that only made the same imports (the
  note gives both).
- peak RSS building (largest size only): a fresh interpreter builds a new copy of the database
  in batches of 1,000 documents (insert_many, one transaction each) and reports its peak
  resident set (memory-mapped pages of the files included).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import docsys, kvsys
from benchmarks.common import Result, disk_bytes, once
from benchmarks.workload import doc_id

BYTES = "bytes on disk per doc"
OPEN = "open + first get"
RSS = "peak RSS serving reads, above interpreter"
BUILD_RSS = "peak RSS building the database"
KV_BYTES = "kv bytes on disk per entry"
KV_OPEN = "kv open + first get"
JSONL = "raw JSON lines"
ROOT = Path(__file__).resolve().parents[1]


def _open_once(system: str, path: str) -> Any:
    """Open ``path`` with ``system`` and read one document; returns the open handle."""
    first = doc_id(0)
    if system == docsys.IMMUDOC:
        import docstore

        db = docstore.open(path, readonly=True)
        db["patients"].get(first)
        return db
    if system == docsys.SQLITE:
        import sqlite3

        con = sqlite3.connect(path)
        con.execute("SELECT body FROM docs WHERE id = ?", (first,)).fetchone()
        return con
    from tinydb import TinyDB

    db = TinyDB(path)
    db.table("docs", cache_size=0).get(doc_id=1)
    return db


def _child(system: str, path: str, n: int, repeat: int) -> dict[str, float]:
    """Run in a fresh interpreter (``python -m benchmarks.footprint ...``)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    r = subprocess.run(
        [sys.executable, "-m", "benchmarks.footprint", system, path, str(n), str(repeat)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=3600,
    )
    if r.returncode != 0:
        raise RuntimeError(f"footprint child for {system} failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def _best_open(cfg: Any, fn: Any) -> float:
    times = [once(fn)]
    tries = cfg.settings.repeat if times[0] < 2 else (2 if times[0] < 30 else 1)
    times += [once(fn) for _ in range(tries - 1)]
    return min(times) * 1000


def _immudoc_breakdown(path: str, n: int) -> str:
    parts = {
        "txlog": [os.path.join(path, "ledger", "txlog")],
        "tree+txindex": [os.path.join(path, "ledger", f) for f in ("tree", "txindex")],
        "key index": [os.path.join(path, "ledger", "index.lmdb")],
        "derived state": [os.path.join(path, "state.lmdb")],
    }
    sizes = {k: sum(disk_bytes(f) for f in fs if os.path.exists(f)) / n for k, fs in parts.items()}
    return ", ".join(f"{k} {v:,.0f}" for k, v in sizes.items())


def docs_footprint(cfg: Any, n: int) -> list[Result]:
    fx = cfg.fixtures.docs(n)
    fx.close()  # complete files, and the memory free for the child processes
    paths = fx.paths
    out = []
    for name, path in paths.items():
        files = [path] if name != docsys.SQLITE else [p for p in (path, path + "-wal", path + "-shm") if os.path.exists(p)]
        note = _immudoc_breakdown(path, n) if name == docsys.IMMUDOC else ""
        out.append(Result(BYTES, name, sum(disk_bytes(f) for f in files) / n, "B/doc", note, n, "footprint"))
    out.append(Result(BYTES, JSONL, fx.json_lines_bytes / n, "B/doc", "orjson, one doc a line: the floor", n, "footprint"))
    base = _child("none", "-", n, 0)["rss_mb"]
    measured = {name: _child(name, path, n, cfg.settings.repeat) for name, path in paths.items()}
    for name, m in measured.items():
        out.append(Result(OPEN, name, m["open_ms"], "ms", f"best of {m['opens']}, fresh process", n, "footprint"))
    for name, m in measured.items():
        note = f"peak {m['rss_mb']:.0f} MB; a bare interpreter with the imports: {base:.0f} MB"
        out.append(Result(RSS, name, max(m["rss_mb"] - base, 0.01), "MB", note, n, "footprint"))
    out += [
        Result(w, name, 0.0, u, why, n, "footprint")
        for name, why in fx.skipped.items() if name == docsys.TINY_JSON
        for w, u in ((BYTES, "B/doc"), (OPEN, "ms"), (RSS, "MB"))
    ]
    return out


def kv_footprint(cfg: Any, n: int) -> list[Result]:
    fx = cfg.fixtures.kv(n)
    fx.close()
    out = []
    for name, (_, path) in fx.kinds.items():
        out.append(Result(KV_BYTES, name, disk_bytes(path) / n, "B/entry", "32-byte keys and values", n, "footprint"))
    key = fx.keys[0]

    def kvcore_open(path: str) -> None:
        import kvcore

        with kvcore.Ledger.open(path, readonly=True) as led:
            led.get(key)

    def lmdb_open(path: str) -> None:
        import lmdb

        env = lmdb.open(path, readonly=True, lock=False)
        with env.begin() as txn:
            txn.get(key)
        env.close()

    for name, (_, path) in fx.kinds.items():
        fn = kvcore_open if name == kvsys.KVCORE else lmdb_open
        out.append(Result(KV_OPEN, name, _best_open(cfg, lambda fn=fn, p=path: fn(p)), "ms", "", n, "footprint"))
    return out


def run(cfg: Any) -> list[Result]:
    out: list[Result] = []
    for n in cfg.sizes:
        out += docs_footprint(cfg, n)
        out += kv_footprint(cfg, n)
    out += build_rss(cfg, max(cfg.sizes))
    return out


def build_rss(cfg: Any, n: int) -> list[Result]:
    out = []
    for name in (docsys.IMMUDOC, docsys.SQLITE):
        where = os.path.join(cfg.scratch(f"build-{n}"), name)
        env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        t = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "benchmarks.footprint", "build:" + name, where, str(n), "0"],
            capture_output=True, text=True, env=env, cwd=ROOT, timeout=4 * 3600,
        )
        spent = time.perf_counter() - t
        if r.returncode != 0:
            raise RuntimeError(f"build child for {name} failed: {r.stderr[-2000:]}")
        m = json.loads(r.stdout.strip().splitlines()[-1])
        out.append(Result(BUILD_RSS, name, m["rss_mb"], "MB", f"fresh process, batches of 1,000; {spent:,.0f} s", n, "footprint"))
    return out


def _build(system: str, path: str, n: int) -> None:
    """The child: build ``n`` documents into a new database at ``path``; print the peak RSS."""
    from benchmarks.workload import iter_batches

    os.makedirs(os.path.dirname(path), exist_ok=True)
    sysm = docsys.ImmudocDocs(path) if system == docsys.IMMUDOC else docsys.SqliteDocs(path)
    for batch in iter_batches(n, 1000):
        sysm.insert_many(batch)
    sysm.close()
    print(json.dumps({"rss_mb": peak_rss_mb()}))


def _serve(system: str, path: str, n: int, repeat: int) -> None:
    """The child: time open + first get (best of ``repeat``, fewer when slow), then serve
    1,000 gets and 100 indexed finds; print the open time and the peak RSS as JSON."""
    import gc
    import importlib
    import random

    for module in ("sqlite3", "orjson", "docstore"):  # the baseline ("none") makes these imports only
        importlib.import_module(module)
    import orjson

    out: dict[str, float] = {}
    if system != "none":
        times: list[float] = []
        while True:
            t = time.perf_counter()
            handle = _open_once(system, path)
            times.append(time.perf_counter() - t)
            if len(times) >= repeat or sum(times) > 30:
                break
            handle.close()
            del handle
            gc.collect()
        out.update(open_ms=min(times) * 1000, opens=len(times))
        rnd = random.Random(1)
        ids = [doc_id(rnd.randrange(n)) for _ in range(1000)]
        if system == docsys.IMMUDOC:
            coll = handle["patients"]
            for i in ids:
                coll.get(i)
            for i in ids[:100]:
                list(coll.find({"site": coll.get(i)["site"]}))
        elif system == docsys.SQLITE:
            get = "SELECT body FROM docs WHERE id = ?"
            for i in ids:
                orjson.loads(handle.execute(get, (i,)).fetchone()[0])
            for i in ids[:100]:
                site = orjson.loads(handle.execute(get, (i,)).fetchone()[0])["site"]
                handle.execute("SELECT body FROM docs WHERE json_extract(body, '$.site') = ?", (site,)).fetchall()
        else:
            from tinydb import Query

            t = handle.table("docs", cache_size=0)
            for i in ids[:20]:  # every read re-parses the whole file
                t.get(doc_id=int(i[1:]) + 1)
            t.search(Query().site == t.get(doc_id=1)["site"])
        handle.close()
    out["rss_mb"] = peak_rss_mb()
    print(json.dumps(out))


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM: unlike ru_maxrss on Linux, not inherited from
    the parent that forked it)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1 << 20) if sys.platform == "darwin" else rss / 1024


if __name__ == "__main__":
    if sys.argv[1].startswith("build:"):
        _build(sys.argv[1][6:], sys.argv[2], int(sys.argv[3]))
    else:
        _serve(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
