"""The read floor: the least work the design asks of every document read by id, timed alone
beside SQLite's get on the same ids, in the same run (part of the ``floor`` suite).

A document is read from the log (docs/storage.md, "docstore's derived state"): its location is
looked up in ``state.lmdb``, its run of property entries is read from the ledger, and the
document is rebuilt from them. The stages below are the product's own functions with nothing
around them, each row doing every stage before it too:

1. ``location``: :meth:`docstore.engine.store.Store.location` in its own LMDB read transaction;
2. ``+ entries``: :meth:`kvcore.Ledger.entry_items` of the run (two ``pread`` and the parsing
   of each entry's head, key and value);
3. ``+ rebuild``: :func:`docstore.engine.state.doc_from_items` (checks that each entry belongs
   to the revision, decodes the values, builds the nested document).

``get`` does these and checks the collection, the database and its cache around them; so it
can only be slower than stage 3, and a ratio stage 3 does not reach cannot be reached by tuning
what ``get`` adds. A last row times the interpreter's share of stage 2 with no I/O: the
parsing of the entries of runs already in memory.
"""

from __future__ import annotations

import os
import random
import struct
import time
from typing import Any

from benchmarks import docsys
from benchmarks.common import Result
from benchmarks.workload import doc_id

COLL = "patients"
IDS = 5000  # distinct ids a round: more than the engine's document cache holds (2,048)
ROUNDS = 5
WHOLE = "read floor: get, all of it"
LOCATION = "read floor 1: location (LMDB)"
ENTRIES = "read floor 2: + entries from the log"
REBUILD = "read floor 3: + rebuild the document"
PARSE = "read floor: parse the entries alone"


def run(where: str, n: int) -> list[Result]:
    """The read floor on the immudoc and SQLite databases the insert floor built in ``where``."""
    import kvcore
    from docstore.documents import records
    from docstore.documents.records import Header, property_prefix
    from docstore.engine.state import doc_from_items
    from docstore.engine.store import Store

    ids = [doc_id(i) for i in random.Random(n).sample(range(n), min(IDS, n))]
    sqlite = docsys.SqliteDocs(os.path.join(where, "sqlite.db"))
    whole = docsys.ImmudocDocs(os.path.join(where, "immudoc"), create=False)
    store = Store(os.path.join(where, "immudoc"), readonly=True)
    ledger = kvcore.Ledger.open(
        os.path.join(where, "immudoc", "ledger"), readonly=True, unindexed_prefixes=(records.PROPERTY_PREFIX,)
    )
    try:
        locs = {}
        for i in ids:
            with store.read() as txn:
                loc = store.location(txn, COLL, i)
            assert loc is not None, i
            locs[i] = loc

        def location(i: str) -> Any:
            with store.read() as txn:
                return store.location(txn, COLL, i)

        def entries(i: str) -> Any:
            loc = location(i)
            return ledger.entry_items(loc.tx_id, loc.entry + 1, loc.n)

        def rebuild(i: str) -> Any:
            loc = location(i)
            items = ledger.entry_items(loc.tx_id, loc.entry + 1, loc.n)
            return doc_from_items(Header(COLL, i, loc.revision, loc.n, False), items, property_prefix(COLL, i))

        raw = {i: _run_bytes(ledger, locs[i]) for i in ids}

        def parse(i: str) -> Any:
            return _parse(*raw[i])

        systems = {
            docsys.SQLITE: sqlite.get, WHOLE: whole.get, LOCATION: location, ENTRIES: entries,
            REBUILD: rebuild, PARSE: parse,
        }
        best = {name: float("inf") for name in systems}
        for _ in range(ROUNDS):
            for name, fn in systems.items():
                t = time.perf_counter()
                for i in ids:
                    fn(i)
                best[name] = min(best[name], time.perf_counter() - t)
    finally:
        ledger.close()
        store.close()
        whole.close()
        sqlite.close()
    rates = {name: len(ids) / s for name, s in best.items()}
    notes = {
        WHOLE: "Collection.get: what the get bar measures (cache of 2,048 documents; 5,000 ids a round)",
        LOCATION: "Store.location in its own read transaction",
        ENTRIES: "stage 1 + Ledger.entry_items of the document's run",
        REBUILD: "stage 2 + doc_from_items: the pure-Python floor",
        PARSE: "the heads, keys and values of runs already in memory (no I/O, no LMDB)",
    }
    out = []
    for workload in (WHOLE, LOCATION, ENTRIES, REBUILD, PARSE):
        out.append(Result(workload, docsys.IMMUDOC, rates[workload], "ops/s", notes[workload], n, "floor"))
        out.append(Result(workload, docsys.SQLITE, rates[docsys.SQLITE], "ops/s", "get by id, same ids, same run", n, "floor"))
    return out


_HEAD = struct.Struct(">BII")  # kvcore format 1 entry head: kind, key length, value length


def _run_bytes(ledger: Any, loc: Any) -> tuple[bytes, int]:
    """The stored bytes of a document's property entries (read through the public API: the
    concatenation of each entry as kvcore format 1 frames it), and how many entries."""
    items = ledger.entry_items(loc.tx_id, loc.entry + 1, loc.n)
    return b"".join(_HEAD.pack(0, len(k), len(v)) + k + v for k, v in items), len(items)


def _parse(buf: bytes, count: int) -> list[tuple[bytes, bytes]]:
    unpack = _HEAD.unpack_from
    out = []
    p = 0
    for _ in range(count):
        _kind, klen, vlen = unpack(buf, p)
        k0 = p + 9
        out.append((buf[k0 : k0 + klen], buf[k0 + klen : k0 + klen + vlen]))
        p = k0 + klen + vlen
    return out
