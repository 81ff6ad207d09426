"""``python -m benchmarks [--quick | --smoke] [--sizes N,N] [--only SUITE] [SUITE ...]``

Runs every workload against immudoc and its peers on the same data in the same run and prints
one table of figures with the ratio immudoc/peer, the bars, how cost grows with size, and the
machine. Writes the results as JSON (``benchmarks/out/results.json``); the full run (and any
run with ``--report``) also writes PNG plots and ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

from benchmarks import bars, scaling
from benchmarks.common import Result, load_average, machine, machine_info, table
from benchmarks.config import MODES, make_config
from benchmarks.fixtures import Fixtures

SUITES = ["cli", "kv", "docs", "floor", "proofs", "statemap", "scaling", "footprint", "remote", "scale-out", "audit-trail"]
MODULES = {"scale-out": "scaleout", "audit-trail": "audittrail"}
HERE = Path(__file__).resolve().parent


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(x.replace("_", "")) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"sizes are integers separated by commas, got {text!r}") from None
    if not sizes or min(sizes) < 100:
        raise argparse.ArgumentTypeError("each size must be at least 100 documents")
    return sizes


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("suites", nargs="*", metavar="SUITE", help=f"suites to run, default all: {', '.join(SUITES)}")
    p.add_argument("--only", action="append", default=[], metavar="SUITE[,SUITE]", help="same as naming suites")
    p.add_argument("--quick", action="store_true", help="sizes %s: under a minute, for CI" % MODES["quick"]["sizes"])
    p.add_argument(
        "--smoke", action="store_true", help="sizes %s, under 20 s, for the test suite (wins over --quick)" % MODES["smoke"]["sizes"]
    )
    p.add_argument("--sizes", type=_sizes, help="database sizes in documents, e.g. 10000,50000 (overrides the mode's)")
    p.add_argument("--out", default=str(HERE / "out"), help="where results.json goes (default: benchmarks/out)")
    p.add_argument("--report", action="store_true", help="write plots and RESULTS.md (the full run always does)")
    p.add_argument("--no-report", action="store_true", help="do not write plots and RESULTS.md, even in the full run")
    p.add_argument("--label", default="", help="a note at the top of RESULTS.md, e.g. 'provisional'")
    p.add_argument("--tmp", default=None, help="parent of the scratch directory (default: the system's temp dir)")
    args = p.parse_args(argv)
    chosen = list(args.suites) + [s for x in args.only for s in x.split(",") if s]
    bad = [s for s in chosen if s not in SUITES]
    if bad:
        p.error(f"unknown suite(s) {', '.join(bad)}; choose from {', '.join(SUITES)}")
    args.chosen = [s for s in SUITES if s in chosen]
    return args


def run_suite(name: str, cfg: object) -> list[Result]:
    module = importlib.import_module(f"benchmarks.{MODULES.get(name, name)}")
    if name == "remote":  # another engineer's suite: the older run(quick) signature
        rows = module.run(cfg.quick)  # type: ignore[attr-defined]
    else:
        rows = module.run(cfg)
    for r in rows:
        r.suite = r.suite or name
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    cfg = make_config(mode, args.sizes, args.tmp)
    cfg.fixtures = Fixtures(cfg)
    # remote starts a server and takes 30-40 s of CPU in its own quick mode: only the full run
    # (or naming it) includes it, so that --quick stays under a minute
    suites = args.chosen or [s for s in SUITES if not (mode != "full" and s in ("remote", "scale-out"))]
    started = time.time()
    load_start = load_average()
    print(f"machine: {machine()}")
    print(f"mode: {mode}; sizes: {', '.join(f'{n:,}' for n in cfg.sizes)} (docs and proofs at {cfg.headline:,}); "
          f"suites: {', '.join(suites)}; load average: {load_start}")
    if mode != "full" and not args.chosen:
        print(f"(remote and scale-out are left out of --{mode}: they start servers and take a minute or more; name them to run them)")
    sys.stdout.flush()
    results: list[Result] = []
    seen: set[tuple[str, str, int | None]] = set()
    timings: dict[str, float] = {}
    failed: list[str] = []
    try:
        for name in suites:
            t = time.perf_counter()
            try:
                rows = run_suite(name, cfg)
            except Exception:  # noqa: BLE001 - report it, run the other suites, fail at the end
                traceback.print_exc()
                failed.append(name)
                rows = []
            timings[name] = time.perf_counter() - t
            for r in rows:
                key = (r.workload, r.system, r.size)
                if key not in seen:
                    seen.add(key)
                    results.append(r)
            print(f"[{name}: {timings[name]:.1f} s]", flush=True)
    finally:
        cfg.close()
    bar_rows = bars.evaluate(results)
    growth = scaling.summary(results)
    print()
    print(table(results))
    for block in (bars.text(bar_rows), scaling.summary_text(growth)):
        if block:
            print()
            print(block)
    elapsed = time.time() - started
    print(f"\ntotal {elapsed:.0f} s; load average at start {load_start}, at end {load_average()}")
    data = {
        "command": shlex.join(["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])]),
        "mode": mode,
        "label": args.label,
        "sizes": cfg.sizes,
        "headline": cfg.headline,
        "suites": timings,
        "failed": failed,
        "machine": machine_info(),
        "started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(started)),
        "elapsed_s": elapsed,
        "load_average": [load_start, load_average()],
        "results": [r.to_dict() for r in results],
        "bars": bar_rows,
        "scaling": growth,
    }
    os.makedirs(args.out, exist_ok=True)
    out = Path(args.out) / "results.json"
    out.write_text(json.dumps(data, indent=1))
    print(f"results: {out}")
    if (mode == "full" or args.report) and not args.no_report:
        from benchmarks import report

        for path in report.write(data, HERE):
            print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
