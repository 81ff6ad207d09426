"""The bars immudoc must clear, as ratios to a peer measured in the same run."""

from __future__ import annotations

from typing import Any

from benchmarks import audittrail, cli, docs, docsys, footprint, kv, kvsys, proofs, scaleout, statemap
from benchmarks.common import Result, fmt_ratio, fmt_size

# (what, workload, ours, peer, at least); issue 15's bars where it set them
BARS: list[tuple[str, str, str, str, float]] = [
    ("documents insert_many", docs.INSERT_MANY, docsys.IMMUDOC, docsys.SQLITE, 0.11),
    ("get by id", docs.GET, docsys.IMMUDOC, docsys.SQLITE, 1.0),
    ("indexed find (equality)", docs.FIND_EQ, docsys.IMMUDOC, docsys.SQLITE, 0.8),
    ("indexed find (range)", docs.FIND_RANGE, docsys.IMMUDOC, docsys.SQLITE, 0.5),
    ("kvcore batched writes", kv.WRITES, kvsys.KVCORE, kvsys.LMDB, 1.0),
    ("property prove+verify", proofs.PROP, docsys.IMMUDOC, proofs.PYMERKLE, 2.0),
    # issue 16: the state map's write cost, against the same writes without it
    ("state map: insert_many", statemap.INSERT, statemap.WITH, statemap.WITHOUT, 0.8),
    ("state map: 1-doc update", statemap.UPDATE, statemap.WITH, statemap.WITHOUT, 0.8),
    # issue 17: PostgreSQL, two servers on one ledger, group commit
    ("PostgreSQL backend: insert_many", scaleout.INSERT_MANY, scaleout.OURS_PG, scaleout.OURS_FILES, 0.5),
    ("PostgreSQL backend: get by id", scaleout.GET, scaleout.OURS_PG, scaleout.OURS_FILES, 0.5),
    ("2 servers / 1: reads", scaleout.SRV_READS, scaleout.TWO, scaleout.ONE, 1.7),
    ("2 servers / 1: writes", scaleout.SRV_WRITES, scaleout.TWO, scaleout.ONE, 1.3),
    ("group commit: 16 threads of inserts", scaleout.GROUP_WRITES, scaleout.GROUP, scaleout.NO_GROUP, 3.0),
    # issue 18: who/when/why on every transaction costs insert_many at most 5%
    ("transaction metadata: insert_many", audittrail.INSERT, audittrail.WITH, audittrail.WITHOUT, 0.95),
    # issue 19: immudoc import of 200k JSON lines against sqlite-utils insert on the same file
    ("immudoc import / sqlite-utils insert", cli.IMPORT, docsys.IMMUDOC, cli.SQLITE_UTILS, 0.2),
]


AT = {docs.INSERT_MANY: 100_000}
"""Bars set at one size (issue 15: insert_many at 100k), judged there when the run has it."""

# (what, workload, ours, at most), at the largest size of the run (issue 15)
LIMITS: list[tuple[str, str, str, float]] = [
    ("open + first get (ms)", footprint.OPEN, docsys.IMMUDOC, 50.0),
    ("peak RSS serving reads (MB)", footprint.RSS, docsys.IMMUDOC, 150.0),
    ("peak RSS building (MB)", footprint.BUILD_RSS, docsys.IMMUDOC, 1024.0),
    ("bytes on disk per document", footprint.BYTES, docsys.IMMUDOC, 2000.0),
    ("immudoc get (ms)", cli.READS["get"], docsys.IMMUDOC, 400.0),
    ("immudoc count, indexed (ms)", cli.READS["count"], docsys.IMMUDOC, 400.0),
    ("immudoc find --limit 10 (ms)", cli.READS["find"], docsys.IMMUDOC, 400.0),
    ("immudoc import peak RSS (MB)", cli.IMPORT_RSS, docsys.IMMUDOC, 300.0),  # issue 19, at its own size
    # issue 16, at 1M documents: the proofs of the current state (the documents they carry aside)
    ("freshness proof (bytes)", statemap.LATEST_PROOF_SIZE, statemap.WITH, 2048.0),
    ("absence proof (bytes)", statemap.ABSENT_SIZE, statemap.WITH, 2048.0),
    ("complete find of 10 (bytes)", statemap.FIND_PROOF_SIZE, statemap.WITH, 10240.0),
]

# (what, workload, ours, at least), at the largest size of the run (issue 16)
MINIMUMS: list[tuple[str, str, str, float]] = [
    ("freshness prove+verify (/s)", statemap.LATEST, statemap.WITH, 3000.0),
]


def evaluate(results: list[Result]) -> list[dict[str, Any]]:
    by = {(r.workload, r.system, r.size): r for r in results}
    out = []
    largest = max((r.size for r in results if r.size is not None), default=None)
    for what, workload, ours, most in LIMITS:
        r = by.get((workload, ours, largest))
        if r is None:  # a row measured at a size of its own (the import's 200k)
            r = next((x for x in results if x.workload == workload and x.system == ours), None)
        if r is not None and r.value > 0:
            out.append(
                {"bar": what, "workload": workload, "peer": "at most", "need": most, "size": r.size,
                 "value": r.value, "met": r.value <= most}
            )
    for what, workload, ours, least in MINIMUMS:
        r = by.get((workload, ours, largest))
        if r is not None and r.value > 0:
            out.append(
                {"bar": what, "workload": workload, "peer": "at least", "need": least, "size": largest,
                 "value": r.value, "met": r.value >= least}
            )
    for what, workload, ours, peer, need in BARS:
        sizes: list[int | None] = sorted({r.size for r in results if r.workload == workload and r.size is not None})
        if workload in AT and AT[workload] in sizes:  # a bar set at one size is judged there
            sizes = [AT[workload]]
        if not sizes and any(r.workload == workload for r in results):  # a workload of no size (a load)
            sizes = [None]
        for n in sizes:
            a, b = by.get((workload, ours, n)), by.get((workload, peer, n))
            if a is None or b is None or a.value <= 0 or b.value <= 0:
                continue
            q = a.value / b.value
            out.append(
                {"bar": what, "workload": workload, "peer": peer, "need": need, "size": n, "ratio": q, "met": q >= need}
            )
    return out


def text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = ["Bars (immudoc/peer in this run):"]
    for r in rows:
        verdict = "met" if r["met"] else "NOT met"
        if "value" in r:
            sign = ">=" if r["peer"] == "at least" else "<="
            lines.append(f"  {r['bar']:26} {sign} {r['need']:,.0f} at {fmt_size(r['size']):>5}: {r['value']:,.1f}  {verdict}")
            continue
        lines.append(
            f"  {r['bar']:26} >= {r['need']:.2f}x {r['peer']:20} at {fmt_size(r['size']):>5}: "
            f"{fmt_ratio(r['ratio']):>7}  {verdict} ({r['ratio'] / r['need']:.2f} of the bar)"
        )
    return "\n".join(lines)
