"""The command line, as a user meets it: wall time of whole commands in fresh processes.

- start-up: ``immudoc --help`` beside ``python -c pass``, best of 5, interleaved;
- reads on the largest database of the run: ``immudoc get``, ``count`` with an indexed
  filter and ``find --limit 10``, each beside a fresh ``python -c`` doing the same read on the
  SQLite JSON1 peer (open, query, print), best of 5, interleaved;
- import (issue 19): ``immudoc import visits FILE --create`` of 200,000 JSON lines of visit
  records (full mode; fewer in quick and smoke modes), beside ``sqlite-utils insert DB visits
  FILE --nl`` on the same file, rounds interleaved, the best kept; documents/s and the peak RSS
  of each command (a wrapper interpreter's ``getrusage(RUSAGE_CHILDREN)``: the command alone).

Uses the installed ``immudoc`` script next to this interpreter when there is one, else the
same entry point through ``python -c`` on the source tree (the note says which).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import docsys
from benchmarks.common import Result

HELP = "CLI start-up: immudoc --help"
READS = {
    "get": "CLI: immudoc get (one document)",
    "count": "CLI: immudoc count (indexed filter)",
    "find": "CLI: immudoc find --limit 10",
}
SQLITE_READS = {  # the same reads on the SQLite peer, by a fresh interpreter
    "get": "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute('SELECT body FROM docs WHERE id=?',(sys.argv[2],)).fetchone()[0])",
    "count": (
        "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); print(c.execute(\"SELECT count(*) FROM docs "
        "WHERE json_extract(body,'$.site')=?\",(sys.argv[3],)).fetchone()[0])"
    ),
    "find": "import sqlite3,sys; c=sqlite3.connect(sys.argv[1]); [print(r[0]) for r in c.execute('SELECT body FROM docs LIMIT 10')]",
}
IMPORT = "CLI: import JSON lines (docs/s)"
IMPORT_RSS = "CLI: import JSON lines, peak RSS"
SQLITE_UTILS = "sqlite-utils insert --nl"
IMPORT_DOCS = {"full": 200_000, "quick": 20_000, "smoke": 2_000}
ROOT = Path(__file__).resolve().parents[1]


def _command(*args: str) -> tuple[list[str], str]:
    script = Path(sys.executable).with_name("immudoc")
    if script.exists():
        return [str(script), *args], "installed script"
    found = shutil.which("immudoc")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return [found, *args], "installed script"
    return [sys.executable, "-c", "from docstore.cli import main; main()", *args], "source tree, via python -c"


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True, cwd=ROOT)
    return time.perf_counter() - t


def run(cfg: Any) -> list[Result]:
    return _startup() + _reads(cfg) + _import(cfg)


def visits(n: int, seed: int = 19) -> Any:
    """``n`` visit records, the same for a seed: ``{"_id": "v000001", "patient", "site",
    "date", "vitals": {...}, "notes"}`` (about 230 bytes of JSON each)."""
    import random

    r = random.Random(seed)
    sites = [f"S{i:02d}" for i in range(40)]
    words = "stable follow-up dose adjusted nausea reported headache none resolved review labs ordered".split()
    for i in range(1, n + 1):
        yield {
            "_id": f"v{i:06d}", "patient": f"P-{r.randrange(20000):05d}", "site": r.choice(sites),
            "date": f"2026-{r.randrange(1, 13):02d}-{r.randrange(1, 29):02d}",
            "vitals": {"bp_sys": r.randrange(95, 170), "bp_dia": r.randrange(55, 105), "pulse": r.randrange(48, 120),
                       "temp_c": round(r.uniform(35.8, 39.5), 1), "weight_kg": round(r.uniform(45, 130), 1)},
            "notes": " ".join(r.choice(words) for _ in range(r.randrange(3, 12))),
        }


_MEASURE = (  # run argv[1:], print its wall time and peak RSS (KB): this interpreter's only child
    "import resource, subprocess, sys, time\n"
    "t = time.perf_counter()\n"
    "subprocess.run(sys.argv[1:], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\n"
    "print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
)


def _measured(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one run of ``cmd``."""
    out = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), int(out[1]) / 1024


def _sqlite_utils() -> str | None:
    script = Path(sys.executable).with_name("sqlite-utils")
    return str(script) if script.exists() else shutil.which("sqlite-utils")


def _import(cfg: Any) -> list[Result]:
    """immudoc import beside sqlite-utils insert, on one file of visit records."""
    import json

    n = IMPORT_DOCS.get(cfg.mode, IMPORT_DOCS["quick"])
    where = Path(cfg.scratch("cli-import"))
    data = where / "visits.jsonl"
    with open(data, "w") as f:
        for doc in visits(n):
            f.write(json.dumps(doc) + "\n")
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    peer = _sqlite_utils()
    rounds = 2 if cfg.mode == "full" else 1
    best: dict[str, tuple[float, float]] = {}
    for k in range(rounds):
        db = str(where / f"immudoc-{k}")
        subprocess.run(_command("--db", db, "init")[0], env=env, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        cmds = {docsys.IMMUDOC: _command("--db", db, "import", "visits", str(data), "--create", "-q")[0]}
        if peer is not None:
            cmds[SQLITE_UTILS] = [peer, "insert", str(where / f"sqlite-{k}.db"), "visits", str(data), "--nl"]
        for name, cmd in cmds.items():
            secs, rss = _measured(cmd, env)
            old = best.get(name)
            best[name] = (min(secs, old[0]) if old else secs, max(rss, old[1]) if old else rss)
        shutil.rmtree(db, ignore_errors=True)
    how = _command()[1]
    out = [
        Result(IMPORT, docsys.IMMUDOC, n / best[docsys.IMMUDOC][0], "docs/s",
               f"immudoc import, batches of 1,000; best of {rounds}; {how}", n, "cli"),
        Result(IMPORT_RSS, docsys.IMMUDOC, best[docsys.IMMUDOC][1], "MB", "peak RSS of the immudoc import process", n, "cli"),
    ]
    if SQLITE_UTILS in best:
        out += [
            Result(IMPORT, SQLITE_UTILS, n / best[SQLITE_UTILS][0], "docs/s", f"sqlite-utils insert --nl; best of {rounds}", n, "cli"),
            Result(IMPORT_RSS, SQLITE_UTILS, best[SQLITE_UTILS][1], "MB", "peak RSS of the sqlite-utils process", n, "cli"),
        ]
    else:
        cfg.skipped.append("sqlite-utils (the import peer): not installed (pip install -e '.[bench]')")
    return out


def _reads(cfg: Any) -> list[Result]:
    """get, count and find --limit 10 on the largest database of the run, beside SQLite."""
    from benchmarks.workload import doc_id, iter_batches

    n = max(cfg.sizes)
    fx = cfg.fixtures.docs(n)
    fx.close()  # complete files; the commands open them afresh
    paths = fx.paths
    doc = doc_id(n // 2)
    site = next(iter_batches(1, 1))[0]["site"]  # the first document's site: about 10 documents
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    ours = {
        "get": _command("--db", paths[docsys.IMMUDOC], "get", "patients", doc)[0],
        "count": _command("--db", paths[docsys.IMMUDOC], "count", "patients", '{"site": "%s"}' % site)[0],
        "find": _command("--db", paths[docsys.IMMUDOC], "find", "patients", "--limit", "10")[0],
    }
    how = _command()[1]
    out = []
    for op, cmd in ours.items():
        peer = [sys.executable, "-c", SQLITE_READS[op], paths[docsys.SQLITE], doc, site]
        best = {"immudoc": float("inf"), "sqlite": float("inf")}
        for _ in range(5):
            best["immudoc"] = min(best["immudoc"], _wall(cmd, env))
            best["sqlite"] = min(best["sqlite"], _wall(peer, env))
        out.append(Result(READS[op], "immudoc", best["immudoc"] * 1000, "ms", f"best of 5, fresh process; {how}", n, "cli"))
        out.append(Result(READS[op], docsys.SQLITE, best["sqlite"] * 1000, "ms", "python -c: sqlite3 open, query, print", n, "cli"))
    return out


def _startup() -> list[Result]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd, how = _command("--help")
    cmds = {"immudoc": cmd, "python -c pass": [sys.executable, "-c", "pass"]}
    best = dict.fromkeys(cmds, float("inf"))
    for _ in range(5):
        for name, c in cmds.items():
            best[name] = min(best[name], _wall(c, env))
    return [
        Result(HELP, "immudoc", best["immudoc"] * 1000, "ms", f"best of 5; {how}", None, "cli"),
        Result(HELP, "python -c pass", best["python -c pass"] * 1000, "ms", "interpreter start-up: the floor", None, "cli"),
    ]
