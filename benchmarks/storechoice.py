"""LMDB against SQLite as the on-disk store of docstore's derived state, on the same rows in one run.

Run from the repository root:

    python -m benchmarks.storechoice              # N = 1,000,000 documents (several minutes)
    python -m benchmarks.storechoice --n 100000   # a quick run

Both stores get exactly the rows docstore keeps per document:

- documents: ``b"c\\0" + id`` (ids ``d`` + 19 digits, 20 bytes) -> 20-byte location ``>QIII``;
- one secondary index: 8-byte index prefix + 9-byte encoded small int (1,000 distinct values)
  + id -> ``u16``;
- meta: a counter read and rewritten in every write transaction.

LMDB: one environment, ``map_size=1<<40, max_dbs=8, sync=True, metasync=False, readahead=False``
(docstore's settings), named DBs, ``putmulti`` and cursors. SQLite: stdlib ``sqlite3``, tables
``(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID``, ``journal_mode=WAL``, ``synchronous=NORMAL``
unless said otherwise, ``executemany``, statements reused (sqlite3's statement cache), default
page cache, no mmap. Each write batch is sorted by key before it is written (both stores).

Measures (one function each):

1. build: N documents in write transactions of 1,000 (doc row + index row + meta counter),
   inserted in random order; us per document, and bytes on disk per document (sum of file
   sizes after a clean close; SQLite checkpointed, its -wal included if any is left);
2. small commits: 2,000 write transactions of one document each: LMDB sync=True against
   SQLite synchronous=FULL and NORMAL (and LMDB sync=False, the no-fsync peer of NORMAL);
3. open + first lookup in a fresh ``python -c`` process: time inside the child from before the
   library's import to after the lookup, and the parent's wall time; median of 5;
4. random point lookups by id (100,000): each in its own read transaction, and all in one;
5. index equality range scans: all ids of each of 1,000 random values; us per returned id;
6. peak RSS of the child that ran 4 and 5, minus that of an idle child that imported the same
   modules and the library and made the same keys (and the private, anonymous part at the
   end). The peak is /proc/self/status VmHWM: on Linux ru_maxrss survives execve, so in a
   child it starts at the parent's size (it is kept in the JSON as ``ru_maxrss_kib``);
7. robustness to damage: a 20,000-document store, as built and compacted (every page live);
   200 trials each of copying its data file, flipping one random bit (and, separately, zeroing
   one random 4 KiB page), and in a child opening it and reading every row of every table (full
   scans) plus 1,000 point lookups. Outcomes: served the same rows, served different rows
   (silently), error raised (exception type), crash (signal), hang (timeout).

The OS page cache is warm throughout (the stores were just written). Prints a table and writes
``benchmarks/out/storechoice.json``. Imports neither docstore nor kvcore; scratch directories
live under one ``tempfile.mkdtemp`` and are removed at the end.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import resource
import shutil
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out" / "storechoice.json"
LOC, U16, U64 = struct.Struct(">QIII"), struct.Struct(">H"), struct.Struct(">Q")
PREFIX = hashlib.sha256(b"c\x00value").digest()[:8]
COUNT = b"count\x00c"
BATCH, COMMITS, LOOKUPS, SCANS, OPENS = 1000, 2000, 100_000, 1000, 5
ROBUST_N, SEED, PAGE = 20_000, 7, 4096
DAMAGE = ("bit flip", "4 KiB page zeroed")


# ------------------------------------------------------------------------------------- rows
def doc_id(i: int) -> bytes:
    return b"d%019d" % i


def value_key(v: int) -> bytes:
    """Index prefix + the 9-byte encoding of a small int."""
    return PREFIX + b"\x20" + U64.pack(v)


def rows(i: int) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    """(documents row, index row) of document ``i``; its value is one of 1,000."""
    k = doc_id(i)
    return (b"c\x00" + k, LOC.pack(i // BATCH + 1, i % BATCH, 1, 6)), (value_key(i * 761 % 1000) + k, U16.pack(len(k)))


def batches(ids: list[int]) -> list[tuple[list, list]]:
    out = []
    for j in range(0, len(ids), BATCH):
        pairs = [rows(i) for i in ids[j : j + BATCH]]
        out.append((sorted(p[0] for p in pairs), sorted(p[1] for p in pairs)))
    return out


# ----------------------------------------------------------------------------------- stores
class Lmdb:
    name, tables = "LMDB", (b"docs", b"idx", b"meta")

    def __init__(self, path: str, create: bool = True, sync: bool = True) -> None:
        import lmdb

        self.env = lmdb.open(path, map_size=1 << 40, max_dbs=8, sync=sync, metasync=False, readahead=False)
        self.dbs = {t: self.env.open_db(t, create=create) for t in self.tables}
        self.docs, self.idx, self.meta = (self.dbs[t] for t in self.tables)

    @staticmethod
    def data_file(path: str) -> str:
        return os.path.join(path, "data.mdb")

    def write(self, docs: list, idx: list) -> None:
        with self.env.begin(write=True) as t:
            t.cursor(db=self.docs).putmulti(docs)
            t.cursor(db=self.idx).putmulti(idx)
            raw = t.get(COUNT, db=self.meta)
            t.put(COUNT, U64.pack((U64.unpack(raw)[0] if raw else 0) + len(docs)), db=self.meta)

    def get_each(self, keys: list[bytes]) -> int:
        found, env, docs = 0, self.env, self.docs
        for k in keys:
            with env.begin(db=docs) as t:
                found += t.get(k) is not None
        return found

    def get(self, k: bytes) -> bytes | None:
        with self.env.begin(db=self.docs) as t:
            return t.get(k)

    def get_all(self, keys: list[bytes]) -> int:
        with self.env.begin(db=self.docs) as t:
            return sum(t.get(k) is not None for k in keys)

    def scan(self, lo: bytes, hi: bytes) -> list[bytes]:
        out = []
        with self.env.begin(db=self.idx) as t:
            c = t.cursor()
            if c.set_range(lo):
                for k in c.iternext(values=False):
                    if k >= hi:
                        break
                    out.append(k[17:])
        return out

    def dump(self, table: bytes):
        with self.env.begin(db=self.dbs[table]) as t:
            yield from t.cursor()

    def used_bytes(self) -> int:
        """Bytes of the pages the trees use (the rest of the file is free pages)."""
        pages = lambda st: st["branch_pages"] + st["leaf_pages"] + st["overflow_pages"]  # noqa: E731
        with self.env.begin() as t:
            return (pages(self.env.stat()) + sum(pages(t.stat(db)) for db in self.dbs.values()) + 2) * self.env.stat()["psize"]

    def compact_copy(self, dst: str) -> None:
        os.makedirs(dst)
        self.env.copy(dst, compact=True)

    def close(self) -> None:
        self.env.close()


class Sqlite:
    name, tables = "SQLite", (b"docs", b"idx", b"meta")

    def __init__(self, path: str, create: bool = True, sync: str = "NORMAL") -> None:
        import sqlite3

        os.makedirs(path, exist_ok=True)
        self.db = sqlite3.connect(self.data_file(path), isolation_level=None)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={sync}")
        if create:
            for t in ("docs", "idx", "meta"):
                self.db.execute(f"CREATE TABLE IF NOT EXISTS {t}(k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID")
        self.cur = self.db.cursor()

    @staticmethod
    def data_file(path: str) -> str:
        return os.path.join(path, "store.sqlite")

    def write(self, docs: list, idx: list) -> None:
        c = self.cur
        c.execute("BEGIN")
        c.executemany("INSERT INTO docs(k, v) VALUES (?, ?)", docs)
        c.executemany("INSERT INTO idx(k, v) VALUES (?, ?)", idx)
        raw = c.execute("SELECT v FROM meta WHERE k = ?", (COUNT,)).fetchone()
        c.execute("INSERT OR REPLACE INTO meta(k, v) VALUES (?, ?)", (COUNT, U64.pack((U64.unpack(raw[0])[0] if raw else 0) + len(docs))))
        c.execute("COMMIT")

    def get_each(self, keys: list[bytes]) -> int:  # autocommit: each SELECT is its own read transaction
        ex, sql = self.cur.execute, "SELECT v FROM docs WHERE k = ?"
        return sum(ex(sql, (k,)).fetchone() is not None for k in keys)

    def get(self, k: bytes) -> bytes | None:
        row = self.cur.execute("SELECT v FROM docs WHERE k = ?", (k,)).fetchone()
        return row and row[0]

    def get_all(self, keys: list[bytes]) -> int:
        self.cur.execute("BEGIN")
        found = self.get_each(keys)
        self.cur.execute("COMMIT")
        return found

    def scan(self, lo: bytes, hi: bytes) -> list[bytes]:
        return [k[17:] for (k,) in self.cur.execute("SELECT k FROM idx WHERE k >= ? AND k < ?", (lo, hi))]

    def dump(self, table: bytes):
        yield from self.db.execute(f"SELECT k, v FROM {table.decode()}")

    def used_bytes(self) -> int:
        q = lambda pragma: self.db.execute(f"PRAGMA {pragma}").fetchone()[0]  # noqa: E731
        return (q("page_count") - q("freelist_count")) * q("page_size")

    def compact_copy(self, dst: str) -> None:
        os.makedirs(dst)
        self.db.execute("VACUUM INTO ?", (self.data_file(dst),))

    def close(self) -> None:
        self.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.db.close()


STORES = {"LMDB": Lmdb, "SQLite": Sqlite}


def disk_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).iterdir() if f.is_file())


def child(code: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


# ----------------------------------------------------------------------------- measurements
def measure_build(kind: str, path: str, work: list) -> dict:
    """1. Build the store batch by batch; us per document and bytes on disk per document."""
    s = STORES[kind](path)
    t0 = time.perf_counter()
    for docs, idx in work:
        s.write(docs, idx)
    elapsed = time.perf_counter() - t0
    used = s.used_bytes()
    s.close()
    n = sum(len(d) for d, _ in work)
    return {"build_us_per_doc": elapsed / n * 1e6, "bytes_per_doc": disk_bytes(path) / n, "used_bytes_per_doc": used / n}


def measure_commits(kind: str, path: str, first: int, **opts) -> float:
    """2. ms per write transaction of one document (doc row, index row, meta counter)."""
    s = STORES[kind](path, **opts)
    work = [([d], [x]) for d, x in map(rows, range(first, first + COMMITS))]
    t0 = time.perf_counter()
    for docs, idx in work:
        s.write(docs, idx)
    elapsed = time.perf_counter() - t0
    s.close()
    return elapsed / COMMITS * 1e3


OPEN_CODE = {
    "LMDB": """
import time; t0 = time.perf_counter()
import lmdb
env = lmdb.open(P, map_size=1 << 40, max_dbs=8, sync=True, metasync=False, readahead=False)
docs = env.open_db(b"docs"); env.open_db(b"idx"); env.open_db(b"meta")
with env.begin(db=docs) as t: v = t.get(K)
ms = (time.perf_counter() - t0) * 1e3
assert v is not None; print(ms)""",
    "SQLite": """
import time; t0 = time.perf_counter()
import sqlite3
db = sqlite3.connect(P + "/store.sqlite", isolation_level=None)
db.execute("PRAGMA journal_mode=WAL"); db.execute("PRAGMA synchronous=NORMAL")
v = db.execute("SELECT v FROM docs WHERE k = ?", (K,)).fetchone()
ms = (time.perf_counter() - t0) * 1e3
assert v is not None; print(ms)""",
}


def measure_open(kind: str, path: str, n: int) -> dict:
    """3. Open + first lookup in a fresh process: child-measured and parent wall, median of 5."""
    inner, wall = [], []
    for rep in range(OPENS):
        code = f"P = {path!r}; K = {b'c' + bytes(1) + doc_id(random.Random(rep).randrange(n))!r}" + OPEN_CODE[kind]
        t0 = time.perf_counter()
        r = child(code)
        wall.append((time.perf_counter() - t0) * 1e3)
        if r.returncode:
            raise RuntimeError(f"{kind} open child failed: {r.stderr}")
        inner.append(float(r.stdout))
    return {"open_ms_child": statistics.median(inner), "open_ms_wall": statistics.median(wall)}


def _rss() -> dict:
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    kib = lambda f: int(status[f].split()[0])  # noqa: E731
    # ru_maxrss survives execve on Linux, so a child's figure starts at its parent's size at
    # fork; VmHWM is the peak of this process image alone (the figure used), ru_maxrss is kept.
    return {
        "peak_kib": kib("VmHWM"),
        "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
        "anon_kib": kib("RssAnon"),
        "file_kib": kib("RssFile"),
    }


def child_reads(kind: str, path: str, n: int, idle: bool = False) -> None:
    """In a child: 4 and 5 on the store at ``path``, then its memory, as JSON on stdout. With
    ``idle``, only what precedes opening the store (imports, the keys): the RSS baseline."""
    rng = random.Random(SEED)
    keys = [b"c\x00" + doc_id(rng.randrange(n)) for _ in range(LOOKUPS)]
    values = [rng.randrange(1000) for _ in range(SCANS)]
    if idle:
        __import__({"LMDB": "lmdb", "SQLite": "sqlite3"}[kind])
        return print(json.dumps(_rss()))
    s = STORES[kind](path, create=False)
    out = {}
    for label, fn in (("lookup_us_own_txn", s.get_each), ("lookup_us_one_txn", s.get_all)):
        t0 = time.perf_counter()
        assert fn(keys) == LOOKUPS
        out[label] = (time.perf_counter() - t0) / LOOKUPS * 1e6
    t0, got = time.perf_counter(), 0
    for v in values:
        got += len(s.scan(value_key(v), value_key(v + 1)))
    out["scan_us_per_id"] = (time.perf_counter() - t0) / got * 1e6
    out["scan_ids_per_value"] = got / SCANS
    s.close()
    print(json.dumps(out | _rss()))


def measure_reads(kind: str, path: str, n: int) -> dict:
    """4, 5 and 6: lookups and scans in a child; its peak RSS above an idle child's."""
    runs = {}
    for name, idle in (("idle", True), ("busy", False)):
        r = child(f"from benchmarks.storechoice import child_reads; child_reads({kind!r}, {path!r}, {n}, {idle})")
        if r.returncode:
            raise RuntimeError(f"{kind} read child failed: {r.stderr}")
        runs[name] = json.loads(r.stdout)
    busy, idle = runs["busy"], runs["idle"]
    return {k: busy[k] for k in ("lookup_us_own_txn", "lookup_us_one_txn", "scan_us_per_id", "scan_ids_per_value")} | {
        "rss_mib_above_idle": (busy["peak_kib"] - idle["peak_kib"]) / 1024,
        "rss_anon_mib_above_idle": (busy["anon_kib"] - idle["anon_kib"]) / 1024,
        "rss_idle_mib": idle["peak_kib"] / 1024,
        "rss_file_mib_end": busy["file_kib"] / 1024,
        "ru_maxrss_kib": {"idle": idle["ru_maxrss_kib"], "busy": busy["ru_maxrss_kib"]},
    }


def child_dump(kind: str, path: str, n: int) -> None:
    """In a child: read every row of every table and 1,000 point lookups; print their hash."""
    try:
        rng = random.Random(SEED)
        keys = [b"c\x00" + doc_id(rng.randrange(n)) for _ in range(1000)]
        s, h = STORES[kind](path, create=False), hashlib.sha256()
        for table in s.tables:
            for row in s.dump(table):  # repr: a damaged SQLite row may come back as another type
                h.update(repr(tuple(row)).encode())
        for k in keys:
            h.update(repr(s.get(k)).encode())
        s.close()
        print("OK", h.hexdigest())
    except BaseException as e:  # noqa: BLE001 - the type is the result
        print("ERR", f"{type(e).__module__}.{type(e).__qualname__}", str(e)[:120].replace("\n", " "))
        sys.exit(3)


def small_stores(kind: str, scratch: str) -> dict[str, str]:
    """7. The 20,000-document store as built, and a compacted copy (LMDB copy(compact=True),
    SQLite VACUUM INTO): every page of the copy is live, so a flipped bit always hits data."""
    built, compact = os.path.join(scratch, f"{kind}-small"), os.path.join(scratch, f"{kind}-compact")
    measure_build(kind, built, batches(random.Random(SEED).sample(range(ROBUST_N), ROBUST_N)))
    s = STORES[kind](built, create=False)
    s.compact_copy(compact)
    s.close()
    return {"as built": built, "compacted": compact}


def trial(kind: str, d: str) -> tuple[str, str]:
    """Read the store at ``d`` in a child: (outcome, its output)."""
    try:
        r = child(f"from benchmarks.storechoice import child_dump; child_dump({kind!r}, {d!r}, {ROBUST_N})", timeout=60)
    except subprocess.TimeoutExpired:
        return "hang (timeout 60 s)", ""
    out = r.stdout.split()
    if r.returncode < 0:
        return f"crash: {signal.Signals(-r.returncode).name}", r.stderr[-200:]
    if r.returncode == 0 and out[:1] == ["OK"]:
        return "served", out[1]
    if out[:1] == ["ERR"]:
        return f"error: {out[1]}", r.stdout.strip()
    return f"other: exit {r.returncode}", (r.stdout + r.stderr)[-200:]


def damage(blob: bytearray, rng: random.Random, mode: str) -> int:
    """Damage ``blob`` in place: flip one random bit, or zero one whole 4 KiB page (both
    stores use 4 KiB pages); returns the offset."""
    if mode == "bit flip":
        off = rng.randrange(len(blob))
        blob[off] ^= 1 << rng.randrange(8)
    else:
        off = rng.randrange(len(blob) // PAGE) * PAGE
        blob[off : off + PAGE] = bytes(PAGE)
    return off


def measure_damage(kind: str, base: str, scratch: str, trials: int, mode: str) -> dict:
    """7. Damage a copy of the data file of the store at ``base``; classify what a reader of
    the copy then does (the undamaged copy's rows are the reference)."""
    pristine = Path(STORES[kind].data_file(base)).read_bytes()
    d = os.path.join(scratch, f"{kind}-trial")
    rng, outcomes, log, ref = random.Random(SEED + 1), {}, [], None
    for n in range(-1, trials):  # -1: the undamaged copy, the reference
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        blob = bytearray(pristine)
        off = damage(blob, rng, mode) if n >= 0 else -1
        Path(STORES[kind].data_file(d)).write_bytes(blob)
        what, detail = trial(kind, d)
        if what == "served":
            ref = ref or detail
            what = "served: same rows" if detail == ref else "served: different rows (silent)"
        if n < 0:
            assert what == "served: same rows", (what, detail)
            continue
        outcomes[what] = outcomes.get(what, 0) + 1
        log.append({"offset": off, "page": off // PAGE, "outcome": what, "detail": detail[:300]})
    shutil.rmtree(d, ignore_errors=True)
    return {"file_bytes": len(pristine), "trials": trials, "outcomes": dict(sorted(outcomes.items())), "log": log}


# ----------------------------------------------------------------------------------- report
ROWS = [
    ("build_us_per_doc", "1. build, us/doc (1,000-doc txns)"),
    ("bytes_per_doc", "1. bytes on disk per doc"),
    ("used_bytes_per_doc", "1.   of which pages in use, bytes per doc"),
    ("commit_ms_durable", "2. 1-doc commit ms (LMDB sync | SQLite FULL)"),
    ("commit_ms_normal", "2. 1-doc commit ms (LMDB sync | SQLite NORMAL)"),
    ("commit_ms_nosync", "2. 1-doc commit ms (LMDB nosync | SQLite NORMAL)"),
    ("open_ms_child", "3. open + 1st lookup ms, in child (median 5)"),
    ("open_ms_wall", "3. open + 1st lookup ms, parent wall (median 5)"),
    ("lookup_us_own_txn", "4. point lookup us, own read txn each"),
    ("lookup_us_one_txn", "4. point lookup us, one read txn"),
    ("scan_us_per_id", "5. index eq scan, us per id"),
    ("rss_mib_above_idle", "6. peak RSS MiB above idle (4+5)"),
    ("rss_anon_mib_above_idle", "6.   anonymous (private) at end, MiB"),
]


def table(n: int, res: dict, damage: dict) -> str:
    lines = [f"N = {n:,} documents   (ratio = SQLite / LMDB; lower is better for every row)", ""]
    lines.append(f"{'measure':<50} {'LMDB':>12} {'SQLite':>12} {'ratio':>8}")
    for key, label in ROWS:
        a, b = res["LMDB"][key], res["SQLite"][key]
        ratio = f"{b / a:8.2f}" if a >= 0.05 else f"{'-':>8}"
        lines.append(f"{label:<50} {a:>12.3f} {b:>12.3f} {ratio}")
    lines += ["", f"7. data file damaged, then every row read ({ROBUST_N:,} docs; compacted: every page live)"]
    for store, d in damage.items():
        lines.append(f"   {store} ({d['file_bytes']:,} B data file, {d['trials']} trials)")
        lines += [f"      {what:<58} {count:>5}" for what, count in d["outcomes"].items()]
    return "\n".join(lines)


def machine() -> dict:
    import lmdb
    import sqlite3

    cpu = next((x.split(":", 1)[1].strip() for x in Path("/proc/cpuinfo").read_text().splitlines() if x.startswith("model name")), "?")
    return {
        "python": sys.version.split()[0],
        "lmdb_py": lmdb.__version__,
        "lmdb": ".".join(map(str, lmdb.version())),
        "sqlite": sqlite3.sqlite_version,
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.storechoice", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=lambda s: int(s.replace("_", "")), default=1_000_000, help="documents (default 1,000,000)")
    p.add_argument("--trials", type=int, default=200, help="damage trials per store, file and kind (default 200)")
    p.add_argument("--out", default=str(OUT), help=f"JSON output (default {OUT.relative_to(ROOT)})")
    p.add_argument("--tmp", default=None, help="parent of the scratch directory (default: the system's)")
    args = p.parse_args(argv)
    n, scratch = args.n, tempfile.mkdtemp(prefix="storechoice-", dir=args.tmp)
    try:
        work = batches(random.Random(SEED).sample(range(n), n))
        res = {}
        for kind in STORES:
            path = os.path.join(scratch, kind)
            print(f"[{kind}] build ...", file=sys.stderr, flush=True)
            r = measure_build(kind, path, work)
            print(f"[{kind}] open, reads ...", file=sys.stderr, flush=True)
            r |= measure_open(kind, path, n) | measure_reads(kind, path, n)
            print(f"[{kind}] small commits ...", file=sys.stderr, flush=True)
            if kind == "LMDB":
                r["commit_ms_durable"] = r["commit_ms_normal"] = measure_commits(kind, path, n, sync=True)
                r["commit_ms_nosync"] = measure_commits(kind, path, n + COMMITS, sync=False)
            else:
                r["commit_ms_durable"] = measure_commits(kind, path, n, sync="FULL")
                r["commit_ms_normal"] = r["commit_ms_nosync"] = measure_commits(kind, path, n + COMMITS, sync="NORMAL")
            res[kind] = r
        del work
        damage = {}
        for kind in STORES:
            print(f"[{kind}] damage trials ...", file=sys.stderr, flush=True)
            for variant, base in small_stores(kind, scratch).items():
                for mode in DAMAGE:
                    damage[f"{kind}, {variant}, {mode}"] = measure_damage(kind, base, scratch, args.trials, mode)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(table(n, res, damage))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps({"n": n, "machine": machine(), "scratch_fs_parent": tempfile.gettempdir(), "results": res, "robustness": damage}, indent=1) + "\n"
    )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
