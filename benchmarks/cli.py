"""The command line, as a user meets it: wall time of whole commands in fresh processes.

- start-up: ``immudoc --help`` beside ``python -c pass``, best of 5, interleaved;
- reads on the largest database of the run: ``immudoc get``, ``count`` with an indexed
  filter and ``find --limit 10``, each beside a fresh ``python -c`` doing the same read on the
  SQLite JSON1 peer (open, query, print), best of 5, interleaved.

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
    return _startup() + _reads(cfg)


def _reads(cfg: Any) -> list[Result]:
    """get, count and find --limit 10 on the largest database of the run, beside SQLite."""
    from benchmarks import docsys
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
