"""``python -m benchmarks [--quick] [SUITE ...]``: run the suites and print one table."""

from __future__ import annotations

import argparse
import importlib
import time

from benchmarks.common import machine, table

SUITES = ["kv", "docs", "proofs", "remote"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("suites", nargs="*", choices=SUITES + [[]], help="default: all")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    print(f"mode: {'quick' if args.quick else 'full'}\n")
    results = []
    for name in args.suites or SUITES:
        t = time.perf_counter()
        results += importlib.import_module(f"benchmarks.{name}").run(args.quick)
        print(f"[{name}: {time.perf_counter() - t:.1f} s]")
    print()
    print(table(results))


if __name__ == "__main__":
    main()
