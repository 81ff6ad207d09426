"""How cost grows: the main workloads at every size (10k, 100k and, in the full run, 1M).

Each size's databases are built once per run (fixtures), so the docs, proofs and footprint
suites reuse what is measured here. ``summary`` fits the per-operation cost to ``n^b``
between the smallest and largest size and compares ``b`` with the expected complexity.
"""

from __future__ import annotations

import math
from typing import Any

from benchmarks import docs, docsys, footprint, kv, kvsys, proofs
from benchmarks.common import Result, fmt_size

# workload -> (expected complexity per operation, allowed exponent b, {system: allowed b})
FLAT = (-1.0, 0.3)  # O(1) and O(log n): at most n^0.3 between the sizes measured
LINEAR = (0.6, 1.3)
TINY = {docsys.TINY_MEM: LINEAR, docsys.TINY_JSON: LINEAR}
EXPECTED: dict[str, tuple[str, tuple[float, float], dict[str, tuple[float, float]]]] = {
    docs.INSERT_MANY: ("O(log n) per doc; TinyDB O(n): rewrites its table", FLAT, TINY),
    docs.GET: ("O(1); TinyDB JSON O(n): re-reads the file", FLAT, {docsys.TINY_JSON: LINEAR}),
    docs.FIND_EQ: ("O(log n + k), k ~ 10; TinyDB O(n): scans", FLAT, TINY),
    docs.FIND_RANGE: ("O(log n + k), k ~ 10; TinyDB O(n): scans", FLAT, TINY),
    docs.FIND_SCAN: ("O(n)", LINEAR, {}),
    proofs.PROP: ("O(log n)", FLAT, {}),
    proofs.DOC: ("O(log n + properties)", FLAT, {}),
    proofs.PROP_SIZE: ("O(log n) bytes", FLAT, {}),
    proofs.DOC_SIZE: ("O(log n + properties) bytes", FLAT, {}),
    kv.WRITES: (
        "O(1) amortized (kvcore appends); LMDB: pages dirtied per commit grow until 1,000 random keys hit 1,000 pages, then O(log n)",
        (-1.0, 0.5),
        {kvsys.LMDB: (-1.0, 1.0)},
    ),
    kv.GETS: ("O(log n): kvcore and LMDB (B+tree lookups; kvcore then reads the log)", (-1.0, 0.5), {}),
    footprint.BYTES: ("O(1) per doc", FLAT, {}),
    footprint.KV_BYTES: ("O(1) per entry", FLAT, {}),
    footprint.OPEN: (
        "O(1) immudoc and SQLite (state on disk, mapped); O(n) TinyDB (loads its file)", FLAT, TINY
    ),
    footprint.KV_OPEN: ("O(1) kvcore and LMDB (the key index is an LMDB B+tree)", FLAT, {}),
    footprint.RSS: (
        "O(1) immudoc and SQLite (state read through the page cache); O(n) TinyDB (state in memory)", FLAT, TINY
    ),
}


def run(cfg: Any) -> list[Result]:
    out: list[Result] = []
    for n in cfg.sizes:
        out += docs.core(cfg, n)
        out += proofs.proof_rows(cfg, n)
        out += kv.core(cfg, n)
        if n != max(cfg.sizes):  # free this size's memory before building a larger one
            cfg.fixtures.docs(n).close()
            cfg.fixtures.kv(n).close()
    return out


def cost(r: Result) -> float:
    """Per-operation cost (seconds) for throughputs; the figure itself for sizes and times."""
    if r.higher_is_better:
        return 1.0 / r.value if r.value > 0 else math.nan
    return r.value


def summary(results: list[Result]) -> list[dict[str, Any]]:
    """For each (workload, system) measured at two or more sizes: costs, exponent, verdict."""
    series: dict[tuple[str, str], dict[int, Result]] = {}
    for r in results:
        if r.size is not None and r.value > 0 and r.workload in EXPECTED:
            series.setdefault((r.workload, r.system), {})[r.size] = r
    out = []
    for (workload, system), by_size in series.items():
        if len(by_size) < 2:
            continue
        sizes = sorted(by_size)
        c0, c1 = cost(by_size[sizes[0]]), cost(by_size[sizes[-1]])
        b = math.log(c1 / c0) / math.log(sizes[-1] / sizes[0])
        expected, default, special = EXPECTED[workload]
        lo, hi = special.get(system, default)
        out.append(
            {
                "workload": workload,
                "system": system,
                "unit": by_size[sizes[0]].unit,
                "sizes": sizes,
                "values": [by_size[n].value for n in sizes],
                "exponent": b,
                "expected": expected,
                "follows": lo <= b <= hi,
            }
        )
    return out


def summary_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    lines = [
        "How cost grows: cost per operation ~ n^b between the smallest and largest size",
        f"{'workload':40} {'system':24} {'b':>6}  {'expected':44} figures by size",
    ]
    for s in rows:
        figs = ", ".join(f"{fmt_size(n)}: {v:,.4g}" for n, v in zip(s["sizes"], s["values"]))
        flag = "" if s["follows"] else "  <- off the expected curve"
        lines.append(f"{s['workload']:40} {s['system']:24} {s['exponent']:>6.2f}  {s['expected'][:44]:44} {figs} {s['unit']}{flag}")
    return "\n".join(lines)
