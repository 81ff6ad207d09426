"""PNG plots from a run's results: figures against database size, one line per system."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks import docs, footprint, kv, proofs
from benchmarks.common import fmt_size, fmt_value

# file, title, workloads, logarithmic y axis (a linear one shows O(log n) as a straight line)
FIGURES: list[tuple[str, str, list[str], bool]] = [
    ("scaling_docs.png", "Documents: throughput against database size (higher is better)",
     [docs.INSERT_MANY, docs.GET, docs.FIND_EQ, docs.FIND_RANGE, docs.FIND_SCAN, proofs.PROP], True),
    ("scaling_kv.png", "Key-value: throughput against ledger size (higher is better)", [kv.WRITES, kv.GETS], True),
    ("footprint.png", "Footprint against database size (lower is better)", [footprint.BYTES, footprint.OPEN, footprint.RSS], True),
    ("proof_size.png", "Proof size against ledger size: O(log n) is a straight line here",
     [proofs.PROP_SIZE, proofs.DOC_SIZE], False),
]


COLORS = {
    "immudoc": "tab:blue", "immudoc kvcore": "tab:blue", "sqlite json1": "tab:orange", "tinydb memory": "tab:green",
    "tinydb json": "tab:red", "lmdb (sync)": "tab:purple", "lmdb, txn per get": "tab:brown",
    "pymerkle inclusion": "tab:gray", "pymerkle": "tab:gray", "raw JSON lines": "black",
}


def _series(results: list[dict[str, Any]], workload: str) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        if r["workload"] == workload and r["size"] is not None and r["value"] > 0:
            out.setdefault(r["system"], []).append((r["size"], r["value"]))
    if not any(len(v) >= 2 for v in out.values()):
        return {}
    return {k: sorted(v) for k, v in out.items()}  # a peer measured at one size is one marker


def write(data: dict[str, Any], img_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator

    img_dir.mkdir(parents=True, exist_ok=True)
    results = data["results"]
    written = []
    for filename, title, workloads, log_y in FIGURES:
        panels = [(w, _series(results, w)) for w in workloads]
        panels = [(w, s) for w, s in panels if s]
        if not panels:
            continue
        cols = min(3, len(panels))
        rows = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(5.2 * cols, 3.9 * rows), squeeze=False)
        for ax in axes.flat[len(panels):]:
            ax.set_visible(False)
        for ax, (workload, series) in zip(axes.flat, panels):
            unit = next(r["unit"] for r in results if r["workload"] == workload)
            for system, points in series.items():
                xs, ys = zip(*points)
                style = "-o" if system.startswith("immudoc") else "--s"
                ax.plot(
                    xs, ys, style, label=system, color=COLORS.get(system),
                    linewidth=2.2 if system.startswith("immudoc") else 1.4,
                )
            ax.set_xscale("log")
            if log_y:
                ax.set_yscale("log")
                ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            else:
                ax.set_ylim(0, max(y for s in series.values() for _, y in s) * 1.15)
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_value(v) if v > 0 else "0"))
            sizes = sorted({x for s in series.values() for x, _ in s})
            ax.set_xticks(sizes, [fmt_size(n) for n in sizes])
            ax.minorticks_off()
            ax.set_title(workload, fontsize=10)
            ax.set_xlabel("documents in the database" if "kv" not in workload else "entries in the ledger")
            ax.set_ylabel(unit)
            ax.grid(True, which="major", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{title}\n{data['machine']['cpu']}; one run, {data['started']}", fontsize=10)
        fig.tight_layout()
        path = img_dir / filename
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
