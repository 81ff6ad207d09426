"""The insert floor: the least work the design asks of every inserted document, timed alone
beside SQLite's insert_many on the same batches, in the same run.

A document becomes one ledger entry per scalar property, each with its own SHA-256 leaf and a
share of the entries tree (docs/documents.md, docs/hashing.md). The stages below are the
product's own functions with nothing around them, each row doing every stage before it too:

1. ``flatten``: :func:`docstore.documents.flatten.flatten_raw` (a pointer and an orjson value per scalar);
2. ``+ entries``: the salted property entries and the header (:mod:`docstore.documents.records`);
3. ``+ ledger encoding``: the encoder of the format new ledgers are written in
   (:data:`kvcore.codec.LATEST`: framing, a SHA-256 leaf per entry, the entries tree).

Stage 3 leaves out schema validation, the unique, secondary and key indexes, conflict checks and
the durable append, which ``insert_many`` does as well; so ``insert_many`` can only be slower
than stage 3, and a ratio that stage 3 alone does not reach cannot be reached by tuning what
``insert_many`` adds around it.
Two rows isolate the hashing of stage 3: its leaf and tree hashes alone in CPython (the
records are built untimed), and its SHA-256 compression blocks costed at native speed
(OpenSSL over one large buffer): what the hashing would cost with no interpreter at all.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

from benchmarks import docsys, readfloor
from benchmarks.common import Result
from benchmarks.fixtures import BATCH, _interleaved
from benchmarks.workload import iter_batches
from docstore.documents import records
from docstore.documents.flatten import flatten_raw
from kvcore import hashing, payload
from kvcore.codec import LATEST
from kvcore.tree import build_levels

WHOLE = "insert floor: insert_many, all of it"
FLATTEN = "insert floor 1: flatten"
ENTRIES = "insert floor 2: + salted entries, header"
ENCODE = "insert floor 3: + framing, SHA-256 tree"
HASH_ONLY = "insert floor: SHA-256 of stage 3 alone"
NATIVE = "insert floor: SHA-256 of stage 3, native"
COLL = "patients"


def _entries(docs: list[dict]) -> list[tuple[bytes, bytes]]:
    """What a batch of new documents writes to the ledger (no claims: the benchmark has no
    unique index)."""
    out: list[tuple[bytes, bytes]] = []
    for d in docs:
        doc_id = d["_id"]
        pointers, values = flatten_raw(d)
        header = records.Header(COLL, doc_id, 1, len(pointers), False).encode()
        out.append((records.header_key(COLL, doc_id), header))
        out += records.property_entries(COLL, doc_id, 1, pointers, values)
    return out


class _Stage:
    """One floor stage behind the fixtures' ``insert_many`` interface."""

    path = None

    def __init__(self, stage: int) -> None:
        self.stage = stage

    def insert_many(self, docs: list[dict]) -> None:
        if self.stage == 1:
            for d in docs:
                flatten_raw(d)
            return
        entries = _entries(docs)
        if self.stage == 3:
            LATEST.encode(1, time.time_ns(), entries)

    def close(self) -> None:
        pass


class _Blocks:
    """Untimed (the fixtures' sample, called before the systems get the batch): builds the
    batch's leaf messages for :class:`_HashOnly` and counts the SHA-256 compression blocks."""

    def __init__(self) -> None:
        self.blocks = 0
        self.records: list[bytes] = []

    def __call__(self, docs: list[dict]) -> None:
        entries = _entries(docs)
        body, _extra, _header, positions = payload.encode(1, 0, entries)
        self.records = [body[a:b] for a, b in zip(positions, positions[1:] + [len(body)])]
        # a leaf hashes 0x00 || record, and a message of L bytes is (L + 8) // 64 + 1 blocks;
        # n leaves have n - 1 nodes of 65 bytes (2 blocks each)
        self.blocks += sum((len(r) + 9) // 64 + 1 for r in self.records) + 2 * (len(self.records) - 1)


class _HashOnly:
    """Only the hashing of stage 3, in CPython: a leaf per entry record, then the entries tree."""

    path = None

    def __init__(self, source: _Blocks) -> None:
        self.source = source

    def insert_many(self, docs: list[dict]) -> None:
        sha = hashing.sha256
        build_levels([sha(b"\x00" + r).digest() for r in self.source.records])

    def close(self) -> None:
        pass


def native_block_seconds(repeat: int = 5) -> float:
    """Seconds per SHA-256 compression block at native speed: OpenSSL over one 4 MiB buffer."""
    buf = os.urandom(4 << 20)
    best = min(_timed(lambda: hashlib.sha256(buf).digest()) for _ in range(repeat))
    return best / (len(buf) // 64)


def _timed(fn: Any) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def run(cfg: Any) -> list[Result]:
    n = cfg.headline
    where = cfg.scratch("floor")
    counter = _Blocks()
    systems: dict[str, Any] = {
        docsys.SQLITE: docsys.SqliteDocs(os.path.join(where, "sqlite.db")),
        WHOLE: docsys.ImmudocDocs(os.path.join(where, "immudoc")),
        FLATTEN: _Stage(1),
        ENTRIES: _Stage(2),
        ENCODE: _Stage(3),
        HASH_ONLY: _HashOnly(counter),
    }
    try:
        rates = _interleaved(systems, iter_batches(n, BATCH), "insert_many", counter)
    finally:
        for s in systems.values():
            s.close()
    per_block = native_block_seconds()
    rates[NATIVE] = n / (counter.blocks * per_block)
    sqlite = rates[docsys.SQLITE]
    notes = {
        WHOLE: "schema, indexes, checks, durable append: what the insert_many bar measures",
        FLATTEN: "flatten_raw only",
        ENTRIES: "stage 1 + records.property_entries + header",
        ENCODE: "stage 2 + the ledger's encoder (kvcore.codec.LATEST): the pure-Python floor",
        HASH_ONLY: "its leaf and tree hashes only, CPython's SHA-256 (a part of stage 3)",
        NATIVE: f"{counter.blocks / n:.0f} blocks/doc at {per_block * 1e9:.0f} ns (OpenSSL); no interpreter",
    }
    out = []
    for workload in (WHOLE, FLATTEN, ENTRIES, ENCODE, HASH_ONLY, NATIVE):
        out.append(Result(workload, docsys.IMMUDOC, rates[workload], "docs/s", notes[workload], n, "floor"))
        out.append(Result(workload, docsys.SQLITE, sqlite, "docs/s", "insert_many, same batches, same run", n, "floor"))
    return out + readfloor.run(where, n)
