"""kvcore beside LMDB (sync on): random 32-byte keys and values, 1,000 entries a transaction.

``core(cfg, n)`` (batched writes, point gets at n entries) is shared with the scaling suite;
``run`` adds single-entry durable transactions.
"""

from __future__ import annotations

import os
import random
from typing import Any

from benchmarks import kvsys
from benchmarks.common import Result, compare, each

WRITES = "kv batched writes (1,000/tx)"
GETS = "kv point gets"
SINGLE = "kv single-entry durable tx"
LMDB_TXN_EACH = "lmdb, txn per get"


def _emit(
    workload: str, n: int | None, unit: str, values: dict[str, float], skipped: dict[str, str], notes: dict[str, str] | None = None
) -> list[Result]:
    out = [Result(workload, k, v, unit, (notes or {}).get(k, ""), n, "kv") for k, v in values.items()]
    return out + [Result(workload, k, 0.0, unit, why, n, "kv") for k, why in skipped.items()]


def core(cfg: Any, n: int) -> list[Result]:
    fx = cfg.fixtures.kv(n)
    if "core" in fx.memo:
        return fx.memo["core"]
    systems = fx.open()
    out = _emit(WRITES, n, "entries/s", fx.write_rate, fx.skipped)
    fns = {k: v.get_many for k, v in systems.items()}
    if kvsys.LMDB in systems:
        fns[LMDB_TXN_EACH] = systems[kvsys.LMDB].get_many_txn_each
    gets = compare(cfg.settings, fns, fx.keys)
    out += _emit(GETS, n, "ops/s", gets, fx.skipped, {kvsys.LMDB: "one read txn for each timed chunk of gets"})
    fx.memo["core"] = out
    return out


def singles(cfg: Any) -> list[Result]:
    d = cfg.scratch("kv-single")
    systems: dict[str, Any] = {kvsys.KVCORE: kvsys.KvcoreKV(os.path.join(d, "kvcore"))}
    skipped: dict[str, str] = {}
    try:
        systems[kvsys.LMDB] = kvsys.LmdbKV(os.path.join(d, "lmdb"))
    except ImportError:
        skipped[kvsys.LMDB] = "lmdb not installed"
    rnd = random.Random(9)
    pairs = [(rnd.randbytes(32), rnd.randbytes(32)) for _ in range(cfg.singles_cap * (cfg.settings.repeat + 8))]
    rates = compare(
        cfg.settings,
        {k: each(v.put, star=True) for k, v in systems.items()},
        lambda i: pairs[i % len(pairs)],
        cfg.singles_cap,
    )
    for v in systems.values():
        v.close()
    return _emit(SINGLE, None, "tx/s", rates, skipped)


def run(cfg: Any) -> list[Result]:
    return core(cfg, cfg.kv_size) + singles(cfg)
