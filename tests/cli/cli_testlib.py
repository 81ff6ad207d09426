"""Helpers shared by the CLI tests (a module of its own: several test folders have a conftest)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time


def on_terminal(argv, *, cwd=None, env=None, stdin=subprocess.DEVNULL, timeout=300) -> tuple[int, str]:
    """Run ``argv`` with stdout and stderr on a pseudo-terminal; returns (exit code, output)."""
    master, slave = pty.openpty()
    p = subprocess.Popen(argv, stdin=stdin, stdout=slave, stderr=slave, cwd=cwd, env=env)
    os.close(slave)
    chunks, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.1)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif p.poll() is not None:
            break
    os.close(master)
    return p.wait(timeout=10), b"".join(chunks).decode(errors="replace").replace("\r\n", "\n")
