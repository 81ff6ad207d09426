"""``immudoc serve --processes N``: N server processes on one port, so that more than one core
serves (a Python process runs on one at a time).

Each process is a whole server (``python -m docstore.server``) bound with SO_REUSEPORT: the
kernel spreads new connections among them. They must all be able to write, so the database
must be one that many processes may write: a PostgreSQL one (a directory has one writer
process). Each process keeps its own state directory (the first the one it would use alone,
the others ``<dir>-2``, ``<dir>-3``...) and signs with the first one's key. SIGTERM or SIGINT
stops all of them gracefully; if one exits on its own, the others are stopped and its exit code
returned (a supervisor such as systemd restarts the whole set).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from typing import TextIO

from kvcore.storage.postgres import is_url

READY = re.compile(r"listening on \S+:(\d+)")


class ProcessesError(ValueError):
    """``--processes`` cannot be used as asked."""


def serve_processes(
    n: int, db: str, host: str, port: int, args: list[str], out: TextIO | None = None, err: TextIO | None = None
) -> int:
    """Run ``n`` servers of ``db`` on ``host:port`` (0: one free port, shared) until SIGTERM or
    SIGINT; ``args``: the other ``python -m docstore.server`` options. Returns the exit code."""
    out = out or sys.stdout
    err = err or sys.stderr
    if not is_url(db):
        print(
            "immudoc serve: --processes needs a database that several processes may write: a PostgreSQL "
            "one (postgresql://...); a directory has one writer process",
            file=err, flush=True,
        )
        return 2
    base_env = dict(os.environ)
    state_dir = base_env.get("IMMUDOC_STATE_DIR")
    procs: list[subprocess.Popen] = []
    signalled: list[int] = []
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, lambda signum, _frame: signalled.append(signum))
    try:
        for i in range(n):
            env = dict(base_env)
            if state_dir and i:  # an explicit directory: the others beside it, with its key
                env["IMMUDOC_STATE_DIR"] = f"{state_dir}-{i + 1}"
                env.setdefault("IMMUDOC_KEY_FILE", os.path.join(state_dir, "signing.key"))
            cmd = [sys.executable, "-m", "docstore.server", "--db", db, "--host", host, "--port", str(port),
                   "--reuse-port", *args]
            proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
            procs.append(proc)
            got = _ready(proc)
            if got is None:
                print(f"immudoc serve: process {i + 1} of {n} did not start (exit {proc.poll()})", file=err, flush=True)
                return _stop(procs) or 1
            port = got  # the others share the first one's port
            threading.Thread(target=_drain, args=(proc,), daemon=True).start()
        pids = ", ".join(str(p.pid) for p in procs)
        print(f"immudoc server: {n} processes listening on {host}:{port} (pids {pids})", file=out, flush=True)
        while not signalled:
            for p in procs:
                code = p.poll()
                if code is not None:
                    print(f"immudoc serve: process {p.pid} exited ({code}); stopping the others", file=err, flush=True)
                    _stop(procs)
                    return code or 1
            time.sleep(0.2)
        return _stop(procs)
    finally:
        _stop(procs)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def child_args(
    max_message_mb: float, grace: float, workers: int, max_call_seconds: float, tls_cert: str | None,
    tls_key: str | None, client_ca: str | None, tokens_file: str | None, key_file: str | None,
    publish_state_seconds: float = 300.0,
) -> list[str]:
    """The ``python -m docstore.server`` options that carry these settings to each process."""
    rest = ["--max-message-mb", str(max_message_mb), "--grace", str(grace), "--workers", str(workers),
            "--max-call-seconds", str(max_call_seconds), "--publish-state-seconds", str(publish_state_seconds)]
    for flag, value in (("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--client-ca", client_ca),
                        ("--tokens-file", tokens_file), ("--key-file", key_file)):
        if value:
            rest += [flag, value]
    return rest


def _ready(proc: subprocess.Popen) -> int | None:
    """The port in a child's "listening on" line, or None if it ended first."""
    assert proc.stdout is not None
    for line in proc.stdout:
        m = READY.search(line)
        if m:
            return int(m.group(1))
    return None


def _drain(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    for _line in proc.stdout:
        pass


def _stop(procs: list[subprocess.Popen]) -> int:
    """SIGTERM every child still running, wait for them; the worst exit code (0 if all clean)."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    worst = 0
    for p in procs:
        try:
            code = p.wait(60)
        except subprocess.TimeoutExpired:
            p.kill()
            code = p.wait()
        if code not in (0, -signal.SIGTERM):
            worst = worst or (code if code > 0 else 1)
    return worst
