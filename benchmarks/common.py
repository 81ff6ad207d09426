"""Timing, machine description and result tables shared by the benchmark suites.

Timings are interleaved: every round runs each system once, in a rotating order, so that a
burst of load from other processes hits all of them alike; the best round of each is kept (a
busy machine slows code down, it never speeds it up). Ratios are taken within one run.
"""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

OURS = "immudoc"
LOWER_IS_BETTER = {"ms", "s", "B/doc", "B/entry", "MB", "bytes"}


@dataclass
class Result:
    workload: str
    system: str
    value: float
    unit: str = "ops/s"
    note: str = ""
    size: int | None = None  # documents (or KV entries) in the database measured
    suite: str = ""

    @property
    def ops(self) -> float:  # the name older suites use
        return self.value

    @property
    def higher_is_better(self) -> bool:
        return self.unit not in LOWER_IS_BETTER

    @property
    def ours(self) -> bool:
        return self.system.startswith(OURS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Settings:
    """How long to time things: each timed round lasts about ``budget`` seconds."""

    budget: float = 0.3
    repeat: int = 3
    notes: list[str] = field(default_factory=list)


Items = Sequence[Any] | Callable[[int], Any]


def _take(items: Items, start: int, k: int) -> list[Any]:
    if callable(items):
        return [items(i) for i in range(start, start + k)]
    n = len(items)
    if start % n + k <= n:
        return list(items[start % n : start % n + k])
    return [items[(start + j) % n] for j in range(k)]


def settle() -> None:
    """Collect garbage, then freeze what survives: the databases built so far are not traversed
    again by the collector, so no system pays for another system's objects."""
    gc.collect()
    gc.freeze()


def release() -> None:
    """After dropping a database: let the collector see frozen objects again and free cycles
    (frozen objects are never collected), then freeze what is left."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def compare(
    settings: Settings,
    fns: dict[str, Callable[[list[Any]], object]],
    items: Items,
    max_ops: int | None = None,
) -> dict[str, float]:
    """Operations per second of each ``fn(chunk)`` (one operation per item of ``chunk``).

    ``items`` is a sequence (reused, cycled) or ``items(i)`` making the i-th fresh item (for
    writes that must not repeat). The chunk size is calibrated per system so that a round takes
    about ``settings.budget`` (the calibration runs warm up and are not counted); an operation
    slower than four budgets is timed in two rounds only. Rounds are interleaved across
    systems, starting with a different one each time; the best round of each is kept.
    """
    cap = max_ops or 10**9  # a sequence is cycled through as often as the budget asks
    pos = [0]

    def run(fn: Callable[[list[Any]], object], k: int) -> float:
        chunk = _take(items, pos[0], k)
        pos[0] += k
        t = time.perf_counter()
        fn(chunk)
        return time.perf_counter() - t

    settle()
    plan: dict[str, tuple[int, int]] = {}  # name -> (chunk, rounds)
    best = dict.fromkeys(fns, 0.0)
    for name, fn in fns.items():
        k, t = 1, run(fn, 1)
        while t < settings.budget / 8 and k < cap:
            k = min(cap, k * 4)
            t = run(fn, k)
        if t < settings.budget / 2 and k < cap:
            k = min(cap, max(k, int(k * settings.budget / max(t, 1e-9))))
            t = run(fn, k)
        if t > 4 * settings.budget:  # slow: the calibration run counts, and one more
            best[name] = k / t
            plan[name] = (k, 1)
        else:
            plan[name] = (k, settings.repeat)
    names = list(fns)
    for r in range(max(rounds for _, rounds in plan.values())):
        for name in names[r % len(names) :] + names[: r % len(names)]:
            k, rounds = plan[name]
            if r < rounds:
                best[name] = max(best[name], k / run(fns[name], k))
    return best


def rate(n: int, fn: Callable[[], object]) -> float:
    """Run ``fn`` once (it performs ``n`` operations) and return operations per second."""
    return n / once(fn)


def best_rate(n: int, fn: Callable[[], object], repeat: int = 3) -> float:
    """The best of ``repeat`` runs of ``fn`` (a noisy machine slows, never speeds, code)."""
    return max(rate(n, fn) for _ in range(repeat))


def each(op: Callable[..., object], star: bool = False) -> Callable[[list[Any]], None]:
    """A chunk runner calling ``op(item)`` (``op(*item)`` with ``star``) for every item."""
    if star:

        def run_star(chunk: list[Any]) -> None:
            for item in chunk:
                op(*item)

        return run_star

    def run(chunk: list[Any]) -> None:
        for item in chunk:
            op(item)

    return run


def once(fn: Callable[[], object]) -> float:
    """Seconds taken by one call."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def best_seconds(fn: Callable[[], object], repeat: int) -> float:
    return min(once(fn) for _ in range(max(1, repeat)))


def disk_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes allocated on disk under ``path`` (sparse files count what they use)."""
    p = Path(path)
    files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
    return sum(f.stat().st_blocks * 512 for f in files)


# ---------------------------------------------------------------------------------- machine
def _version(pkg: str) -> str:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return "-"


def _immudoc_version() -> str:
    v = _version("immudoc")
    if v != "-":
        return v
    try:
        import tomllib

        root = Path(__file__).resolve().parents[1]
        return tomllib.loads((root / "pyproject.toml").read_text())["project"]["version"] + " (source tree)"
    except Exception:  # noqa: BLE001
        return "-"


def _git() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "-"
    return (rev or "-") + (" + uncommitted changes" if dirty else "")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "-"


def machine_info() -> dict[str, str]:
    import sqlite3

    pkgs = ("orjson", "lmdb", "pymerkle", "tinydb", "jsonschema-rs", "matplotlib")
    return {
        "cpu": f"{_cpu_model()} ({platform.machine()}), {os.cpu_count()} CPUs",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {sys.version.split()[0]}",
        "sqlite": sqlite3.sqlite_version,
        "packages": ", ".join([f"immudoc {_immudoc_version()}"] + [f"{p} {_version(p)}" for p in pkgs]),
        "git": _git(),
    }


def machine() -> str:
    m = machine_info()
    return (
        f"{m['cpu']}; {m['os']}; Python {m['python']}; SQLite {m['sqlite']}; {m['packages']}; git {m['git']}"
    )


# ----------------------------------------------------------------------------------- tables
def groups(results: list[Result]) -> list[list[Result]]:
    """Results grouped by (workload, size), in order of first appearance."""
    out: dict[tuple[str, int | None], list[Result]] = {}
    for r in results:
        out.setdefault((r.workload, r.size), []).append(r)
    return list(out.values())


def ratio(rows: list[Result], r: Result) -> float | None:
    """immudoc's value / this peer's value, within one (workload, size) group."""
    mine = next((x for x in rows if x.ours), None)
    if mine is None or r is mine or r.ours or r.value <= 0 or mine.value <= 0:
        return None
    return mine.value / r.value


def fmt_value(v: float) -> str:
    if v <= 0:
        return "-"
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:,.1f}"
    if v >= 0.1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def fmt_size(n: int | None) -> str:
    if n is None:
        return ""
    for div, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= div and n % (div // 10) == 0:
            return f"{n / div:g}{suffix}"
    return f"{n:,}"


def fmt_ratio(q: float | None) -> str:
    if q is None:
        return ""
    return f"{q:.2f}x" if q >= 0.1 else f"{q:.2g}x"


RATIO_LEGEND = (
    "immudoc/peer = immudoc's figure divided by the peer's, same run: above 1 is better for "
    "throughputs (ops/s, docs/s, q/s), below 1 is better for ms, MB, B/doc, bytes."
)


def table(results: list[Result]) -> str:
    """Rows of workload, size, system, figure, unit and the ratio immudoc/peer."""
    head = f"{'workload':46} {'size':>5}  {'system':24} {'figure':>12} {'unit':<9} {'immudoc/peer':>12}  note"
    lines = [head, "-" * len(head)]
    for rows in groups(results):
        for r in rows:
            q = ratio(rows, r)
            lines.append(
                f"{r.workload:46} {fmt_size(r.size):>5}  {r.system:24} {fmt_value(r.value):>12} {r.unit:<9} "
                f"{fmt_ratio(q):>12}  {r.note}".rstrip()
            )
    lines.append("")
    lines.append(RATIO_LEGEND)
    return "\n".join(lines)
