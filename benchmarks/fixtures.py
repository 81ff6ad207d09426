"""Databases of n documents (or n KV entries), built once per run and shared by the suites.

Building is the insert_many / batched-write benchmark: batches of 1,000 go to every system in
turn (rotating who goes first), so load from other processes falls on all of them alike, and
each system's time is summed. The suites then time reads on the same databases.
"""

from __future__ import annotations

import importlib.util
import os
import random
import time
from typing import Any

import orjson

from benchmarks import docsys, kvsys
from benchmarks.common import release, settle
from benchmarks.workload import doc_id, iter_batches, kv_batches

BATCH = 1000


def _interleaved(systems: dict[str, Any], batches: Any, method: str, sample: Any = None) -> dict[str, float]:
    """Feed each batch to every system; return each system's items per second."""
    settle()
    spent = dict.fromkeys(systems, 0.0)
    names = list(systems)
    count = 0
    for b, batch in enumerate(batches):
        if sample is not None:
            sample(batch)
        for name in names[b % len(names) :] + names[: b % len(names)]:
            t = time.perf_counter()
            getattr(systems[name], method)(batch)
            spent[name] += time.perf_counter() - t
        count += len(batch)
    return {name: count / s for name, s in spent.items()}


class DocsFixture:
    """immudoc, SQLite and (under their caps) TinyDB, each holding the same n documents."""

    def __init__(self, cfg: Any, n: int) -> None:
        self.n = n
        self.memo: dict[str, Any] = {}  # results already measured on this database
        self.dir = cfg.scratch(f"docs-{n}")
        self.skipped: dict[str, str] = {}
        self.systems: dict[str, Any] = {
            docsys.IMMUDOC: docsys.ImmudocDocs(os.path.join(self.dir, "immudoc")),
            docsys.SQLITE: docsys.SqliteDocs(os.path.join(self.dir, "sqlite.db")),
        }
        if importlib.util.find_spec("tinydb") is None:
            self.skipped[docsys.TINY_MEM] = self.skipped[docsys.TINY_JSON] = "tinydb not installed"
        else:
            if n <= cfg.tinydb_memory_cap:
                self.systems[docsys.TINY_MEM] = docsys.TinyDocs(None)
            else:
                self.skipped[docsys.TINY_MEM] = f"skipped above {cfg.tinydb_memory_cap:,} docs (every find is a Python scan)"
            if n <= cfg.tinydb_json_cap:
                self.systems[docsys.TINY_JSON] = docsys.TinyDocs(os.path.join(self.dir, "tinydb.json"))
            else:
                self.skipped[docsys.TINY_JSON] = (
                    f"skipped above {cfg.tinydb_json_cap:,} docs (rewrites and re-reads the whole file per operation)"
                )
        every = max(1, n // 4000)
        sites: list[str] = []
        raw = [0]

        def sample(batch: list[dict]) -> None:
            sites.extend(d["site"] for d in batch[::every])
            raw[0] += sum(len(orjson.dumps(d)) + 1 for d in batch)

        self.insert_rate = _interleaved(self.systems, iter_batches(n, BATCH), "insert_many", sample)
        rnd = random.Random(n)
        self.ids = [doc_id(i) for i in rnd.sample(range(n), min(n, 5000))]
        self.sites = sites
        self.json_lines_bytes = raw[0]  # the documents as JSON lines: a floor for bytes on disk
        width = 10 / n  # ~10 documents per range
        los = [rnd.random() * (1 - width) for _ in range(2000)]
        self.ranges = [(round(lo, 6), round(lo + width, 6)) for lo in los]
        self.scans = [(rnd.randint(18, 90), rnd.choice(("placebo", "treatment"))) for _ in range(50)]
        self.paths = {name: v.path for name, v in self.systems.items() if v.path is not None}
        self.tiny_ids = self.systems[docsys.TINY_JSON].ids if docsys.TINY_JSON in self.systems else {}

    def open(self) -> dict[str, Any]:
        """The systems, reopening from disk those that :meth:`close` dropped."""
        for name, path in self.paths.items():
            if name in self.systems:
                continue
            if name == docsys.IMMUDOC:
                self.systems[name] = docsys.ImmudocDocs(path, create=False)
            elif name == docsys.SQLITE:
                self.systems[name] = docsys.SqliteDocs(path)
            else:
                self.systems[name] = docsys.TinyDocs(path)
                self.systems[name].ids = self.tiny_ids
        return self.systems

    def close(self) -> None:
        """Close every system and drop it, freeing its memory (TinyDB in memory is gone for
        good); the files stay for the footprint suite, and :meth:`open` reopens them."""
        if not self.systems:
            return
        for s in self.systems.values():
            s.close()
        if docsys.TINY_MEM in self.systems:
            self.skipped[docsys.TINY_MEM] = "dropped to free memory"
        self.systems = {}
        release()


class KvFixture:
    """kvcore and LMDB, each holding the same n random 32-byte keys and values."""

    def __init__(self, cfg: Any, n: int) -> None:
        self.n = n
        self.memo: dict[str, Any] = {}
        self.dir = cfg.scratch(f"kv-{n}")
        self.skipped: dict[str, str] = {}
        self.systems: dict[str, Any] = {kvsys.KVCORE: kvsys.KvcoreKV(os.path.join(self.dir, "kvcore"))}
        try:
            self.systems[kvsys.LMDB] = kvsys.LmdbKV(os.path.join(self.dir, "lmdb"))
        except ImportError:
            self.skipped[kvsys.LMDB] = "lmdb not installed"
        every = max(1, n // 20_000)
        keys: list[bytes] = []

        def sample(batch: list[tuple[bytes, bytes]]) -> None:
            keys.extend(k for k, _ in batch[::every])

        self.write_rate = _interleaved(self.systems, kv_batches(n, BATCH), "write_batch", sample)
        random.Random(n).shuffle(keys)
        self.keys = keys
        self.kinds = {name: (type(v), v.path) for name, v in self.systems.items()}

    def open(self) -> dict[str, Any]:
        for name, (kind, path) in self.kinds.items():
            if name not in self.systems:
                self.systems[name] = kind(path)
        return self.systems

    def close(self) -> None:
        if not self.systems:
            return
        for s in self.systems.values():
            s.close()
        self.systems = {}
        release()


class Fixtures:
    """The run's databases, by size, built on first use."""

    def __init__(self, cfg: Any) -> None:
        self.cfg = cfg
        self.docs_by_size: dict[int, DocsFixture] = {}
        self.kv_by_size: dict[int, KvFixture] = {}

    def docs(self, n: int) -> DocsFixture:
        """The documents fixture of size n (built now if needed; call ``.open()`` to use it)."""
        if n not in self.docs_by_size:
            self.docs_by_size[n] = DocsFixture(self.cfg, n)
        return self.docs_by_size[n]

    def kv(self, n: int) -> KvFixture:
        if n not in self.kv_by_size:
            self.kv_by_size[n] = KvFixture(self.cfg, n)
        return self.kv_by_size[n]

    def close_all(self) -> None:
        for f in [*self.docs_by_size.values(), *self.kv_by_size.values()]:
            try:
                f.close()
            except Exception:  # noqa: BLE001 - best effort at exit
                pass
