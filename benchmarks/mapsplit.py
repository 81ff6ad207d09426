"""Where a document's write time goes with the state map (docs/performance.md, issue 16).

    python -m benchmarks.mapsplit [N]        (default 100,000)

Inserts N benchmark documents, 1,000 a transaction, and times the last 20 transactions:
in all, in planning the map's update (``derive.plan_map``: the changed keys, then each
changed node decoded, merged, rehashed, encoded) and in writing its nodes
(``statemap.tree.Plan.apply``), per document. Not a comparison with a peer: a breakdown of
one figure of the ``statemap`` suite.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import docstore
from benchmarks.workload import INDEXES, SCHEMA, iter_batches
from docstore.engine import derive
from docstore.statemap import tree

TIMED = 20


def _timed(owner: Any, name: str, spent: dict[str, float], label: str) -> None:
    f: Callable[..., Any] = getattr(owner, name)

    def timed(*a: Any, **k: Any) -> Any:
        t = time.perf_counter()
        try:
            return f(*a, **k)
        finally:
            spent[label] += time.perf_counter() - t

    setattr(owner, name, timed)


def main(n: int) -> dict[str, float]:
    spent = {"plan the map": 0.0, "write its nodes": 0.0}
    _timed(derive, "plan_map", spent, "plan the map")
    _timed(tree.Plan, "apply", spent, "write its nodes")
    path = tempfile.mkdtemp(prefix="immudoc-mapsplit-")
    try:
        with docstore.open(path) as db:
            coll = db.create_collection("patients", schema=SCHEMA, indexes=INDEXES)
            batches = list(iter_batches(n, 1000, seed=5))
            for b in batches[:-TIMED]:
                coll.insert_many(b)
            for k in spent:
                spent[k] = 0.0
            t = time.perf_counter()
            for b in batches[-TIMED:]:
                coll.insert_many(b)
            total = time.perf_counter() - t
    finally:
        shutil.rmtree(path, ignore_errors=True)
    docs = sum(len(b) for b in batches[-TIMED:])
    out = {"in all": total} | spent
    return {k: v / docs * 1e6 for k, v in out.items()}


if __name__ == "__main__":
    size = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    for what, us in main(size).items():
        print(f"{what:>16}: {us:7.1f} us a document")
