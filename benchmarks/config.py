"""Run modes (smoke, quick, full), database sizes, caps, and the run's scratch directory."""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any

from benchmarks.common import Settings

# Per mode: database sizes (documents; the KV suite uses the same counts of entries) and how
# long each timed round lasts. TinyDB is capped: its JSON storage rewrites (and re-reads) the
# whole file on every operation, and every TinyDB find is a scan in pure Python.
MODES: dict[str, dict[str, Any]] = {
    "smoke": dict(
        sizes=[1_000, 2_000], budget=0.02, repeat=2, tinydb_memory_cap=2_000, tinydb_json_cap=1_000,
        merkle_leaves_cap=20_000, consistency_txs=300, history_docs=1, large_props=200, singles_cap=20,
    ),
    "quick": dict(
        sizes=[2_000, 10_000], budget=0.1, repeat=3, tinydb_memory_cap=10_000, tinydb_json_cap=2_000,
        merkle_leaves_cap=50_000, consistency_txs=1_000, history_docs=1, large_props=1_000, singles_cap=100,
    ),
    "full": dict(
        sizes=[10_000, 100_000, 1_000_000], budget=0.5, repeat=5, tinydb_memory_cap=100_000,
        tinydb_json_cap=10_000, merkle_leaves_cap=1 << 20, consistency_txs=16_384, history_docs=5,
        large_props=1_000, singles_cap=2_000,
    ),
}
HEADLINE_MAX = 100_000  # the suites that run at one size use the largest size up to this


@dataclass
class Config:
    mode: str
    sizes: list[int]
    settings: Settings
    root: str
    tinydb_memory_cap: int
    tinydb_json_cap: int
    merkle_leaves_cap: int
    consistency_txs: int
    history_docs: int
    large_props: int
    singles_cap: int
    fixtures: Any = None  # benchmarks.fixtures.Fixtures, set by the runner
    skipped: list[str] = field(default_factory=list)

    @property
    def quick(self) -> bool:
        return self.mode != "full"

    @property
    def headline(self) -> int:
        """The size at which single-size suites (docs, proofs) run."""
        small = [n for n in self.sizes if n <= HEADLINE_MAX]
        return max(small) if small else min(self.sizes)

    @property
    def audit_size(self) -> int:
        """The full audit rehashes everything: the headline size in the full run, else the smallest."""
        return self.headline if self.mode == "full" else min(self.sizes)

    @property
    def kv_size(self) -> int:
        return max(self.sizes)

    def scratch(self, name: str) -> str:
        path = os.path.join(self.root, name)
        os.makedirs(path, exist_ok=True)
        return path

    def close(self) -> None:
        if self.fixtures is not None:
            self.fixtures.close_all()
        shutil.rmtree(self.root, ignore_errors=True)


def make_config(mode: str, sizes: list[int] | None = None, tmp: str | None = None) -> Config:
    m = dict(MODES[mode])
    chosen = sorted(set(sizes or m.pop("sizes")))
    m.pop("sizes", None)
    settings = Settings(budget=m.pop("budget"), repeat=m.pop("repeat"))
    root = tempfile.mkdtemp(prefix="immudoc-bench-", dir=tmp)
    return Config(mode=mode, sizes=chosen, settings=settings, root=root, **m)
