"""Documents: immudoc beside SQLite JSON1 and TinyDB (memory, JSON file) on the same documents.

``core(cfg, n)`` (insert_many, get by id, indexed and unindexed finds on a database of n
documents) is shared with the scaling suite; ``run`` adds, at the headline size, single durable
inserts, the update of one property of a large document, and the history of a document with
100 revisions.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from benchmarks import docsys
from benchmarks.common import Result, compare, each
from benchmarks.workload import iter_batches, large_doc

INSERT_MANY = "insert_many (1,000 docs/tx)"
GET = "get by id"
FIND_EQ = "indexed equality find (~10 docs)"
FIND_RANGE = "indexed range find (~10 docs)"
FIND_SCAN = "unindexed find (full scan)"
SINGLE = "single durable insert (1 doc/tx)"
UPDATE_LARGE = "update 1 property of a large doc"
HISTORY = "history of a doc (100 revisions)"
NOTES = {
    docsys.TINY_MEM: "no indexes: finds scan",
    docsys.TINY_JSON: "no indexes; whole file per op",
}


def emit(
    workload: str, n: int | None, unit: str, values: dict[str, float], skipped: dict[str, str], notes: dict[str, str] | None = None
) -> list[Result]:
    out = [Result(workload, name, v, unit, (notes or {}).get(name, ""), n, "docs") for name, v in values.items()]
    out += [Result(workload, name, 0.0, unit, why, n, "docs") for name, why in skipped.items()]
    return out


def core(cfg: Any, n: int) -> list[Result]:
    """The workloads measured at every size (memoized on the fixture: run once per size)."""
    fx = cfg.fixtures.docs(n)
    if "core" in fx.memo:
        return fx.memo["core"]
    systems = fx.open()
    s = cfg.settings
    out = emit(INSERT_MANY, n, "docs/s", fx.insert_rate, fx.skipped)
    get = compare(s, {k: each(v.get) for k, v in systems.items()}, fx.ids)
    out += emit(GET, n, "ops/s", get, fx.skipped)
    eq = compare(s, {k: each(v.find_eq) for k, v in systems.items()}, fx.sites)
    out += emit(FIND_EQ, n, "q/s", eq, fx.skipped, NOTES)
    rng = compare(s, {k: each(v.find_range, star=True) for k, v in systems.items()}, fx.ranges)
    out += emit(FIND_RANGE, n, "q/s", rng, fx.skipped, NOTES)
    scan = compare(s, {k: each(v.find_scan, star=True) for k, v in systems.items()}, fx.scans)
    out += emit(FIND_SCAN, n, "q/s", scan, fx.skipped, NOTES)
    fx.memo["core"] = out
    return out


def _fresh_systems(cfg: Any, name: str, history: bool = False, json_ok: bool = True) -> dict[str, Any]:
    """Empty databases of each system in a scratch directory (TinyDB when installed)."""
    d = cfg.scratch(name)
    out: dict[str, Any] = {
        docsys.IMMUDOC: docsys.ImmudocDocs(os.path.join(d, "immudoc"), schema=None, indexes=[]),
        docsys.SQLITE: docsys.SqliteDocs(os.path.join(d, "sqlite.db"), indexes=[], history=history),
    }
    if importlib.util.find_spec("tinydb") is None:
        return out
    out[docsys.TINY_MEM] = docsys.TinyDocs(None, history=history)
    if json_ok:
        out[docsys.TINY_JSON] = docsys.TinyDocs(os.path.join(d, "tinydb.json"), history=history)
    return out


def _close(systems: dict[str, Any]) -> None:
    for v in systems.values():
        v.close()


def singles(cfg: Any) -> list[Result]:
    systems = _fresh_systems(cfg, "docs-single")
    systems.pop(docsys.TINY_MEM, None)  # not durable: nothing to compare
    template = next(iter_batches(1, 1))[0]

    def item(i: int) -> dict:
        return {**template, "_id": f"s{i:08d}"}

    rates = compare(cfg.settings, {k: each(v.insert) for k, v in systems.items()}, item, cfg.singles_cap)
    _close(systems)
    notes = {docsys.TINY_JSON: "rewrites the whole file, fsync", docsys.SQLITE: "autocommit, fsync"}
    return emit(SINGLE, None, "docs/s", rates, {}, notes)


def update_large(cfg: Any) -> list[Result]:
    systems = _fresh_systems(cfg, "docs-large")
    big = large_doc("big", cfg.large_props)
    for v in systems.values():
        v.insert_many([big])
    rates = compare(
        cfg.settings,
        {k: each(v.set_prop, star=True) for k, v in systems.items()},
        lambda i: ("big", "status", f"s{i}"),
        cfg.singles_cap,
    )
    _close(systems)
    notes = {docsys.TINY_MEM: "in memory, not durable", docsys.SQLITE: "json_set, fsync", docsys.IMMUDOC: "a new revision"}
    return emit(f"{UPDATE_LARGE} ({cfg.large_props:,} props)", None, "ops/s", rates, {}, notes)


def history(cfg: Any) -> list[Result]:
    systems = _fresh_systems(cfg, "docs-history", history=True)
    docs = next(iter_batches(cfg.history_docs, cfg.history_docs, seed=11))
    ids = [d["_id"] for d in docs]
    for v in systems.values():
        v.insert_many(docs)
        for rev in range(2, 101):
            for i in ids:
                v.set_prop(i, "score", rev)
    for name, v in systems.items():
        h = v.history(ids[0])
        assert len(h) == 100 and h[-1]["score"] == 100, (name, len(h))
    rates = compare(cfg.settings, {k: each(v.history) for k, v in systems.items()}, ids)
    _close(systems)
    notes = {docsys.SQLITE: "a revisions table", docsys.TINY_MEM: "a revisions table", docsys.TINY_JSON: "a revisions table"}
    return emit(HISTORY, None, "ops/s", rates, {}, notes)


def run(cfg: Any) -> list[Result]:
    out = core(cfg, cfg.headline)
    out += singles(cfg)
    out += update_large(cfg)
    out += history(cfg)
    return out

