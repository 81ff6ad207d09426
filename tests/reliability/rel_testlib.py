"""Helpers shared by the reliability tests (a uniquely named module: tests/ has no packages)."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import kvcore

import docstore

REPO_ROOT = Path(__file__).resolve().parents[2]


def child_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_script(script: str, *args: str, timeout: float = 120, **popen: Any) -> subprocess.CompletedProcess:
    """Run ``python -c script args...`` with the repository importable; returns the result."""
    return subprocess.run(
        [sys.executable, "-c", script, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=str(REPO_ROOT),
        **{"env": child_env(), **popen},
    )


def spawn_script(script: str, *args: str, **popen: Any) -> subprocess.Popen:
    """Start ``python -c script args...`` with line-buffered text pipes."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        cwd=str(REPO_ROOT),
        **{"env": child_env(), **popen},
    )


def stop(proc: subprocess.Popen) -> None:
    """Make sure a child we started is gone (kills only that pid) and its pipes are closed."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def files_of(path: str | os.PathLike[str]) -> dict[str, bytes | None]:
    """Every file and directory under ``path`` with its bytes (None for a directory)."""
    root = Path(path)
    out: dict[str, bytes | None] = {}
    if not root.exists():
        return out
    if root.is_file():
        return {".": root.read_bytes()}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = None if p.is_dir() else p.read_bytes()
    return out


def open_quiet(path: str | os.PathLike[str], **kw: Any) -> tuple[docstore.Database, list[str]]:
    """docstore.open, returning the database and the RecoveryWarning messages it raised."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        db = docstore.open(path, **kw)
    notes = [str(w.message) for w in caught if issubclass(w.category, kvcore.RecoveryWarning)]
    others = [w for w in caught if not issubclass(w.category, kvcore.RecoveryWarning)]
    assert not others, [str(w.message) for w in others]
    return db, notes


def contents(db: docstore.Database) -> dict[str, dict[str, dict]]:
    """Every current document of every collection, by collection and id."""
    return {name: {d["_id"]: d for d in db[name].find()} for name in db.collections()}


def rss_bytes() -> int:
    """Resident set size of this process, from /proc (Linux)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def fast_dir(tmp_path: Path) -> Path:
    """A scratch directory on tmpfs when there is one (fsync is free there), else ``tmp_path``.

    For tests that damage files and reopen them hundreds of times: what they check is recovery
    logic, not the disk's durability (the SIGKILL tests use the real disk)."""
    import shutil
    import tempfile

    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and shutil.disk_usage(shm).free > 64 * 1024 * 1024:
        d = Path(tempfile.mkdtemp(prefix="immudoc-rel-", dir=shm))
        _FAST_DIRS.append(d)
        return d
    return tmp_path


_FAST_DIRS: list[Path] = []


def remove_fast_dirs() -> None:
    import shutil

    while _FAST_DIRS:
        shutil.rmtree(_FAST_DIRS.pop(), ignore_errors=True)
