"""Start-up: wall time of ``immudoc --help`` beside ``python -c pass``, best of 5, interleaved.

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
ROOT = Path(__file__).resolve().parents[1]


def _command() -> tuple[list[str], str]:
    script = Path(sys.executable).with_name("immudoc")
    if script.exists():
        return [str(script), "--help"], "installed script"
    found = shutil.which("immudoc")
    if found and Path(found).resolve().parent == Path(sys.executable).resolve().parent:
        return [found, "--help"], "installed script"
    return [sys.executable, "-c", "from docstore.cli import main; main()", "--help"], "source tree, via python -c"


def _wall(cmd: list[str], env: dict[str, str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, check=True, cwd=ROOT)
    return time.perf_counter() - t


def run(cfg: Any) -> list[Result]:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd, how = _command()
    cmds = {"immudoc": cmd, "python -c pass": [sys.executable, "-c", "pass"]}
    best = dict.fromkeys(cmds, float("inf"))
    for _ in range(5):
        for name, c in cmds.items():
            best[name] = min(best[name], _wall(c, env))
    return [
        Result(HELP, "immudoc", best["immudoc"] * 1000, "ms", f"best of 5; {how}", None, "cli"),
        Result(HELP, "python -c pass", best["python -c pass"] * 1000, "ms", "interpreter start-up: the floor", None, "cli"),
    ]
