"""benchmarks/RESULTS.md and its plots, from a run's results.json.

``python -m benchmarks.report [benchmarks/out/results.json]`` regenerates them without rerunning.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from benchmarks import plots
from benchmarks.common import RATIO_LEGEND, Result, fmt_ratio, fmt_size, fmt_value, groups, ratio

HERE = Path(__file__).resolve().parent
FIELDS = ("workload", "system", "value", "unit", "note", "size", "suite")


def _results(data: dict[str, Any]) -> list[Result]:
    return [Result(**{k: r[k] for k in FIELDS}) for r in data["results"]]


def results_table(results: list[Result]) -> str:
    lines = ["| workload | size | system | figure | unit | immudoc/peer | note |", "|---|--:|---|--:|---|--:|---|"]
    for rows in groups(results):
        for r in rows:
            q = ratio(rows, r)
            fig = fmt_value(r.value)
            name = f"**{r.system}**" if r.ours else r.system
            lines.append(
                f"| {r.workload} | {fmt_size(r.size)} | {name} | {fig} | {r.unit} | "
                f"{fmt_ratio(q)} | {r.note} |"
            )
    return "\n".join(lines)


def bars_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_No bar could be evaluated in this run (a peer was missing)._"
    lines = ["| bar | peer | size | needed | measured | verdict |", "|---|---|--:|--:|--:|---|"]
    for r in rows:
        verdict = "met" if r["met"] else "**not met**"
        if "value" in r:  # an absolute limit
            lines.append(f"| {r['bar']} | - | {fmt_size(r['size'])} | <= {r['need']:,.0f} | {r['value']:,.1f} | {verdict} |")
            continue
        lines.append(
            f"| {r['bar']} | {r['peer']} | {fmt_size(r['size'])} | {r['need']:.2f}x | {fmt_ratio(r['ratio'])} | {verdict} |"
        )
    return "\n".join(lines)


def scaling_table(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "_Only one size in this run._"
    lines = ["| workload | system | figures by size | fitted b (cost ~ n^b) | expected | follows |", "|---|---|---|--:|---|---|"]
    for s in rows:
        figs = ", ".join(f"{fmt_size(n)}: {fmt_value(v)}" for n, v in zip(s["sizes"], s["values"]))
        lines.append(
            f"| {s['workload']} | {s['system']} | {figs} {s['unit']} | {s['exponent']:.2f} | {s['expected']} | "
            f"{'yes' if s['follows'] else '**no**'} |"
        )
    return "\n".join(lines)


def markdown(data: dict[str, Any], images: list[Path]) -> str:
    m = data["machine"]
    label = data.get("label") or ""
    parts = ["# immudoc benchmark results", ""]
    if label:
        parts += [f"> **{label}**", ""]
    parts += [
        f"Command: `{data['command'].strip()}` ({data['mode']}-mode settings; sizes "
        f"{', '.join(fmt_size(n) for n in data['sizes'])}; single-size suites at {fmt_size(data['headline'])}); "
        f"started {data['started']}, took {data['elapsed_s'] / 60:.1f} min; load average at start and end: "
        f"{data['load_average'][0]} / {data['load_average'][1]}.",
        "",
        f"Machine: {m['cpu']}; {m['os']}; Python {m['python']}; SQLite {m['sqlite']}; {m['packages']}; "
        f"git {m['git']}.",
        "",
        "Every ratio compares systems measured in this same run, on the same data, with timed rounds "
        "interleaved between systems (best round kept), so load from other processes largely cancels. "
        "What each workload does and why each figure has the shape it has: "
        "[docs/performance.md](../docs/performance.md).",
        "",
    ]
    if data.get("failed"):
        parts += [f"**Suites that failed in this run:** {', '.join(data['failed'])}.", ""]
    parts += ["## Bars", "", bars_table(data["bars"]), "", "## All figures", "", RATIO_LEGEND, "",
              results_table(_results(data)), "", "## How cost grows with size", "",
              "Per-operation cost fitted to n^b between the smallest and the largest size "
              "(b = 0: constant, b = 1: linear; O(log n) shows as a small b).", "",
              scaling_table(data["scaling"]), ""]
    if images:
        parts += ["## Plots", ""]
        parts += [f"![{p.stem}](img/{p.name})" for p in images]
        parts.append("")
    parts += [
        "## Reproduce",
        "",
        "```bash",
        "pip install -e '.[bench]'",
        "python -m benchmarks            # full run: 10k, 100k, 1M documents; writes this file and img/",
        "python -m benchmarks --quick    # under a minute",
        "python -m benchmarks --sizes 10000,50000 --report --label 'provisional'",
        "python -m benchmarks.report     # rebuild this file from benchmarks/out/results.json",
        "```",
        "",
    ]
    return "\n".join(parts)


# (label, workload, peer, size: "headline" | "largest" | None)
HEADLINE = [
    ("insert_many, 1,000 docs a transaction", "insert_many (1,000 docs/tx)", "sqlite json1", "headline"),
    ("insert floor: flatten, entries, SHA-256 alone", "insert floor 3: + framing, SHA-256 tree", "sqlite json1", "headline"),
    ("get by id", "get by id", "sqlite json1", "headline"),
    ("indexed equality find (~10 docs)", "indexed equality find (~10 docs)", "sqlite json1", "headline"),
    ("indexed range find (~10 docs)", "indexed range find (~10 docs)", "sqlite json1", "headline"),
    ("property prove + verify", "property prove+verify", "pymerkle inclusion", "headline"),
    ("kvcore batched writes, 1,000 a transaction", "kv batched writes (1,000/tx)", "lmdb (sync)", "largest"),
    ("bytes on disk per document", "bytes on disk per doc", "sqlite json1", "headline"),
    ("`immudoc --help`", "CLI start-up: immudoc --help", "python -c pass", None),
]


def headline(data: dict[str, Any]) -> str:
    """The README's headline figures, as markdown (the full run writes it to out/)."""
    results = _results(data)
    sizes = {"headline": data["headline"], "largest": max(data["sizes"]), None: None}
    lines = [
        f"One run on {data['machine']['cpu']}, {data['started'][:10]}; every ratio is immudoc / the peer "
        "measured in the same run ([all figures, plots and the command](benchmarks/RESULTS.md), "
        "[method and expected costs](docs/performance.md)):",
        "",
        "| workload | size | immudoc | peer | immudoc/peer |",
        "|---|--:|--:|--:|--:|",
    ]
    for label, workload, peer, which in HEADLINE:
        n = sizes[which]
        mine = next((r for r in results if r.workload == workload and r.size == n and r.ours), None)
        other = next((r for r in results if r.workload == workload and r.size == n and r.system == peer), None)
        if mine is None or other is None or other.value <= 0:
            continue
        lines.append(
            f"| {label} | {fmt_size(n)} | {fmt_value(mine.value)} {mine.unit} | {peer}: {fmt_value(other.value)} | "
            f"{fmt_ratio(mine.value / other.value)} |"
        )
    return "\n".join(lines) + "\n"


def write(data: dict[str, Any], here: Path = HERE) -> list[Path]:
    try:
        images = plots.write(data, here / "img")
    except ImportError:
        images = []
        print("matplotlib is not installed: RESULTS.md without plots (pip install -e '.[bench]')")
    md = here / "RESULTS.md"
    md.write_text(markdown(data, images))
    (here / "out").mkdir(exist_ok=True)
    snippet = here / "out" / "README-headline.md"
    snippet.write_text(headline(data))
    return [*images, md, snippet]


if __name__ == "__main__":
    src = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "out" / "results.json"
    for p in write(json.loads(src.read_text())):
        print(f"wrote {p}")
