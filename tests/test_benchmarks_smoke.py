"""``python -m benchmarks --quick --smoke`` runs every workload and prints a table with ratios.

Skipped unless the peers are installed (``pip install -e '.[bench]'``): CI installs only the
test extra.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("lmdb")
pytest.importorskip("tinydb")
pytest.importorskip("pymerkle")

REPO = Path(__file__).resolve().parents[1]

# Every workload of the benchmark issue, as the table names it (a prefix of the row).
WORKLOADS = [
    "insert_many (1,000 docs/tx)",
    "single durable insert (1 doc/tx)",
    "get by id",
    "indexed equality find (~10 docs)",
    "indexed range find (~10 docs)",
    "unindexed find (full scan)",
    "update 1 property of a large doc",
    "history of a doc (100 revisions)",
    "property prove+verify",
    "document prove+verify",
    "consistency prove+verify",
    "Merkle tree build",
    "full audit",
    "open + first get",
    "bytes on disk per doc",
    "peak RSS serving reads",
    "kv batched writes (1,000/tx)",
    "kv single-entry durable tx",
    "kv point gets",
    "CLI start-up: immudoc --help",
    "CLI: import JSON lines (docs/s)",
    "CLI: import JSON lines, peak RSS",
    "insert floor: insert_many, all of it",
    "insert floor 1: flatten",
    "insert floor 2: + salted entries, header",
    "insert floor 3: + framing, SHA-256 tree",
    "insert floor: SHA-256 of stage 3 alone",
    "insert floor: SHA-256 of stage 3, native",
    "property proof size (JSON)",
    "document proof size (JSON)",
]
RATIO = re.compile(r"\s\d[\d,.]*(e-?\d+)?x(\s|$)")


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--smoke", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    elapsed = time.perf_counter() - t
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    return p.stdout, json.loads((out / "results.json").read_text()), elapsed


def test_table_has_every_workload_with_a_ratio(smoke):
    stdout, _, _ = smoke
    header = next(line for line in stdout.splitlines() if line.startswith("workload"))
    assert "immudoc/peer" in header and "system" in header
    rows = [line for line in stdout.splitlines() if line and not line.startswith(("workload", "-", "machine"))]
    for w in WORKLOADS:
        mine = [r for r in rows if r.startswith(w)]
        assert mine, f"no row for {w!r}"
        if "proof size" not in w:  # proof sizes have no peer
            assert any(RATIO.search(r) for r in mine), f"no ratio for {w!r}: {mine}"


def test_machine_bars_and_json(smoke):
    stdout, data, _ = smoke
    assert stdout.startswith("machine: ") and "CPUs" in stdout.splitlines()[0]
    assert "Bars (immudoc/peer in this run):" in stdout
    assert data["mode"] == "smoke" and data["failed"] == []
    systems = {r["system"] for r in data["results"]}
    assert {"immudoc", "sqlite json1", "tinydb memory", "tinydb json", "lmdb (sync)", "pymerkle inclusion"} <= systems
    assert all(r["value"] > 0 or r["note"] for r in data["results"])  # a zero is a skip, with its reason
    assert {b["bar"] for b in data["bars"]} >= {"documents insert_many", "get by id", "kvcore batched writes"}


def test_smoke_is_quick(smoke):
    _, data, elapsed = smoke
    # The smoke run aims at < 20 s; a loaded CI machine gets slack, a regression does not.
    assert elapsed < 90, f"--smoke took {elapsed:.0f} s"
