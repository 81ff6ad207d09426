"""kvcore beside LMDB (sync on): random 32-byte keys and values, 1,000 entries a transaction."""

from __future__ import annotations

import os
import random
import shutil
import tempfile

from benchmarks.common import Result, best_rate, rate

BATCH = 1000


def _data(n: int, seed: int = 7) -> list[tuple[bytes, bytes]]:
    rnd = random.Random(seed)
    return [(rnd.randbytes(32), rnd.randbytes(32)) for _ in range(n)]


def run(quick: bool) -> list[Result]:
    import kvcore

    n = 100_000 if quick else 1_000_000
    singles = 300 if quick else 2000
    gets = 50_000 if quick else 200_000
    proofs = 3_000 if quick else 20_000
    pairs = _data(n)
    batches = [dict(pairs[i : i + BATCH]) for i in range(0, n, BATCH)]
    sample = random.Random(1).sample(pairs, min(gets, n))
    out: list[Result] = []
    root = tempfile.mkdtemp(prefix="immudoc-bench-kv-")
    try:
        # ------------------------------------------------------------- kvcore
        led = kvcore.Ledger.open(os.path.join(root, "kv"))

        def kv_write() -> None:
            for b in batches:
                led.set_all(b)

        out.append(Result(f"batched writes ({BATCH}/tx, {n:,})", "immudoc kvcore", rate(n, kv_write)))
        extra = _data(singles, seed=9)

        def kv_single() -> None:
            for k, v in extra:
                led.set(k, v)

        out.append(Result("single-entry durable tx", "immudoc kvcore", rate(singles, kv_single)))

        def kv_get() -> None:
            for k, _ in sample:
                led.get(k)

        out.append(Result(f"point gets (at {n:,})", "immudoc kvcore", best_rate(len(sample), kv_get)))
        state = led.state()
        psample = sample[:proofs]

        def kv_prove() -> None:
            for k, v in psample:
                kvcore.verify_entry(led.prove_entry(k), k, v, state)

        out.append(
            Result(f"entry prove+verify (at {n:,})", "immudoc kvcore", best_rate(len(psample), kv_prove))
        )
        report_holder: list = []
        out.append(
            Result(
                f"audit (entries/s, {n + singles:,})",
                "immudoc kvcore",
                rate(n + singles, lambda: report_holder.append(led.audit())),
            )
        )
        assert report_holder[0].ok, report_holder[0]
        led.close()
        out.append(
            Result(
                f"open ({n + singles:,} keys)",
                "immudoc kvcore",
                rate(1, lambda: kvcore.Ledger.open(os.path.join(root, "kv")).close()),
                unit="ops/s",
            )
        )
        # --------------------------------------------------------------- LMDB
        try:
            import lmdb
        except ImportError:
            out.append(Result("batched writes", "lmdb", 0, note="lmdb not installed"))
            return out
        env = lmdb.open(os.path.join(root, "lmdb"), map_size=1 << 34, sync=True, metasync=True)

        def lm_write() -> None:
            for b in batches:
                with env.begin(write=True) as txn:
                    for k, v in b.items():
                        txn.put(k, v)

        out.append(Result(f"batched writes ({BATCH}/tx, {n:,})", "lmdb (sync)", rate(n, lm_write)))

        def lm_single() -> None:
            for k, v in extra:
                with env.begin(write=True) as txn:
                    txn.put(k, v)

        out.append(Result("single-entry durable tx", "lmdb (sync)", rate(singles, lm_single)))

        def lm_get() -> None:
            with env.begin() as txn:
                for k, _ in sample:
                    txn.get(k)

        out.append(Result(f"point gets (at {n:,})", "lmdb (sync)", best_rate(len(sample), lm_get)))

        def lm_get_tx() -> None:
            for k, _ in sample:
                with env.begin() as txn:
                    txn.get(k)

        out.append(
            Result(
                f"point gets (at {n:,})",
                "lmdb, txn per get",
                best_rate(len(sample), lm_get_tx),
            )
        )
        env.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out
