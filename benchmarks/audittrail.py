"""The audit trail (issue 18): what committing who/when/why with every transaction costs.

- **metadata overhead**: insert_many of the benchmark's documents, 1,000 a transaction (its
  schema and two indexes), into two fresh databases: one whose every transaction carries
  ``user``, ``reason`` and ``meta`` (one more entry, entry 0, of about 100 bytes), one without;
  the same batches, interleaved, the time of each summed (bar: with / without >= 0.95);
- **log**: ``db.log(limit=100)`` of the newest transactions, and a proven one (a verifying
  reader: each record checked against its transaction proof);
- **erasure**: ``erase(id, ["/patient", "/notes"])`` of 100 documents of 6 revisions each (3
  stored values a revision: 18 destroyed an erasure), against an ``update`` of the same
  documents in the same run; and erasures of an indexed field, after which the derived
  state's files are compacted (a copy of their live rows: it grows with the database).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from benchmarks.common import Result, best_rate
from benchmarks.workload import INDEXES, SCHEMA, iter_batches

WITH = "immudoc, with user/reason/meta"
WITHOUT = "immudoc, without"
INSERT = "insert_many with transaction metadata (1,000 docs/tx)"
LOG = "log(limit=100)"
PLAIN = "immudoc"
PROVEN = "immudoc, verifying reader"
ERASE = "erase 2 fields of a document of 6 revisions (18 stored values)"
ERASE_INDEXED = "erase an indexed field of a document of 6 revisions"
ERASED = "immudoc erase"
UPDATED = "immudoc update (same documents)"
META = {"user": "dr.lee@site-7", "reason": "visit data entered from the paper CRF", "meta": {"meaning": "authorship"}}


def _erasures(db: Any, n: int) -> list[Result]:
    """Erasures of 100 documents against updates of the same ones (and the compaction's share)."""
    from benchmarks.workload import doc_id

    c = db["patients"]
    ids = [doc_id(i) for i in range(0, n, max(1, n // 100))][:100]
    for r in range(4):  # 5 revisions each, then the timed update: 6
        for i in ids:
            c.update(i, {"$set": {"score": r / 10}})
    t = time.perf_counter()
    for i in ids:
        c.update(i, {"$set": {"arm": "placebo"}}, **META)
    updated = time.perf_counter() - t
    t = time.perf_counter()
    erased = 0
    for i in ids:
        erased += c.erase(i, ["/patient", "/notes"], **META).erased
    spent = time.perf_counter() - t
    t = time.perf_counter()
    erased_site = 0
    for i in ids[:20]:  # an indexed field: the derived state's files are compacted each time
        erased_site += c.erase(i, ["/site"], **META).erased
    spent_site = time.perf_counter() - t
    k = len(ids)
    note = f"{erased / k:.0f} values an erasure, {erased / spent:,.0f} values/s, {spent / k * 1e3:.1f} ms an erasure"
    note_site = (f"{erased_site / 20:.0f} values an erasure, {spent_site / 20 * 1e3:.1f} ms an erasure "
                 "(the derived state's files compacted: grows with the database)")
    return [
        Result(ERASE, ERASED, k / spent, "docs/s", note, n, "audit-trail"),
        Result(ERASE, UPDATED, k / updated, "docs/s", "one $set each, same documents, same run", n, "audit-trail"),
        Result(ERASE_INDEXED, ERASED, 20 / spent_site, "docs/s", note_site, n, "audit-trail"),
    ]


def run(cfg: Any) -> list[Result]:
    import docstore

    n = {"smoke": 4_000, "quick": 20_000}.get(getattr(cfg, "mode", "full"), 100_000)
    base = tempfile.mkdtemp(prefix="immudoc-bench-audit-", dir=getattr(cfg, "root", None))
    spent = {WITH: 0.0, WITHOUT: 0.0}
    out: list[Result] = []
    try:
        dbs = {name: docstore.open(os.path.join(base, str(i))) for i, name in enumerate((WITH, WITHOUT))}
        for db in dbs.values():
            db.create_collection("patients", schema=SCHEMA, indexes=INDEXES)
        for j, batch in enumerate(iter_batches(n, 1000, seed=5)):
            for name in ([WITH, WITHOUT] if j % 2 == 0 else [WITHOUT, WITH]):
                kw = META if name == WITH else {}
                t = time.perf_counter()
                dbs[name]["patients"].insert_many(batch, **kw)
                spent[name] += time.perf_counter() - t
        for name in (WITH, WITHOUT):
            out.append(Result(INSERT, name, n / spent[name], "docs/s", "same batches, interleaved", n, "audit-trail"))
        db = dbs[WITH]
        out += _erasures(db, n)
        state, key = db.state(), db.verifier_key()
        k = len(db.log(limit=100))  # (as many transactions as the database has, up to 100)
        out.append(Result(LOG, PLAIN, best_rate(k, lambda: db.log(limit=100)), "records/s", f"{k} a call", n, "audit-trail"))
        for d in dbs.values():
            d.close()
        with docstore.open(os.path.join(base, "0"), readonly=True, verify=True, trusted_state=state,
                           verifier_key=key) as reader:
            out.append(Result(LOG, PROVEN, best_rate(k, lambda: reader.log(limit=100)), "records/s",
                              f"{k} a call, each proven", n, "audit-trail"))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    return out
