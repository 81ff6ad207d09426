"""Timing, machine description and result tables shared by the benchmark suites."""

from __future__ import annotations

import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata


@dataclass
class Result:
    workload: str
    system: str
    ops: float  # operations per second
    unit: str = "ops/s"
    note: str = ""


def rate(n: int, fn: Callable[[], object]) -> float:
    """Run ``fn`` once (it performs ``n`` operations) and return operations per second."""
    t = time.perf_counter()
    fn()
    return n / (time.perf_counter() - t)


def best_rate(n: int, fn: Callable[[], object], repeat: int = 3) -> float:
    """The best of ``repeat`` runs of ``fn`` (a noisy machine slows, never speeds, code)."""
    return max(rate(n, fn) for _ in range(repeat))


def machine() -> str:
    def v(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    pkgs = ", ".join(
        f"{p} {v(p)}" for p in ("immudoc", "orjson", "lmdb", "pymerkle", "tinydb", "jsonschema-rs")
    )
    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        f"SQLite {__import__('sqlite3').sqlite_version}; {pkgs}"
    )


def table(results: list[Result], ours: str = "immudoc") -> str:
    """Rows of workload, system, throughput and the ratio ours/peer for each peer."""
    by_workload: dict[str, list[Result]] = {}
    for r in results:
        by_workload.setdefault(r.workload, []).append(r)
    lines = [f"{'workload':44} {'system':22} {'throughput':>16}  {'ours/peer':>9}"]
    lines.append("-" * len(lines[0]))
    for workload, rows in by_workload.items():
        mine = next((r for r in rows if r.system.startswith(ours)), None)
        for r in rows:
            ratio = ""
            if mine is not None and r is not mine and r.ops > 0:
                ratio = f"{mine.ops / r.ops:8.2f}x"
            lines.append(
                f"{workload:44} {r.system:22} {r.ops:>12,.0f} {r.unit:<5}{ratio:>9}"
                + (f"  {r.note}" if r.note else "")
            )
    return "\n".join(lines)
