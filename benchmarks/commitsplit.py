"""``python -m benchmarks.commitsplit``: where a one-document commit's time goes (issue 17).

1. One thread, files, one document a transaction, profiled: the time in the durable writes
   that group commit shares (the log's fdatasync, the ends of LMDB write transactions) against
   the rest, and the most group commit could gain if a group shared all of them (Amdahl).
2. What a second writer pays for each transaction of the first: applying it from the log to
   its derived state and map (a rebuild, per transaction), against committing it.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import shutil
import tempfile
import time
import warnings

N = 3000


def _insert(coll, n: int) -> None:  # type: ignore[no-untyped-def]
    for i in range(n):
        coll.insert({"site": f"s{i % 7}", "k": 1, "n": i})


def main() -> None:
    import docstore

    root = tempfile.mkdtemp(prefix="immudoc-commitsplit-")
    try:
        path = os.path.join(root, "db")
        db = docstore.open(path)
        coll = db.create_collection("v", indexes=["site"])
        _insert(coll, 500)
        start = time.perf_counter()
        _insert(coll, N)
        plain = (time.perf_counter() - start) / N
        prof = cProfile.Profile()
        prof.enable()
        _insert(coll, N)
        prof.disable()
        db.close()
        stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
        total = sum(v[2] for v in stats.values())
        sync = sum(v[2] for k, v in stats.items() if k[2] in ("<built-in method posix.fdatasync>", "<built-in method posix.fsync>"))
        ends = sum(v[2] for k, v in stats.items() if "__exit__' of 'Transaction'" in k[2] or "commit' of 'Transaction'" in k[2])
        print(f"one-document insert, one thread, files: {plain * 1e6:,.0f} us (unprofiled)")
        print(f"  profiled {total / N * 1e6:,.0f} us: fdatasync {sync / N * 1e6:,.0f} us, ends of LMDB write "
              f"transactions {ends / N * 1e6:,.0f} us = {(sync + ends) / total:.0%} durable writes")
        print(f"  group commit's bound if a group shared every durable write: {total / (total - sync - ends):.2f}x")
        warnings.simplefilter("ignore")
        shutil.rmtree(os.path.join(path, "state.lmdb"))
        start = time.perf_counter()
        docstore.open(path).close()  # the derived state and map rebuilt from the log
        applied = (time.perf_counter() - start) / (2 * N + 501)
        print(f"applying a one-document transaction from the log: {applied * 1e6:,.0f} us "
              f"({applied / plain:.0%} of committing it)")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
