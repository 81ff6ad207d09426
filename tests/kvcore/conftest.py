"""Fixtures for the kvcore tests: real ledgers in temporary directories, real child processes."""

from __future__ import annotations

import pytest

from kvcore import Ledger

from kvcore_testlib import SERVER_SCRIPT, spawn, stop


@pytest.fixture
def ledger_dir(tmp_path):
    return tmp_path / "ledger"


@pytest.fixture
def led(ledger_dir):
    ledger = Ledger.open(ledger_dir)
    yield ledger
    ledger.close()


@pytest.fixture
def server(tmp_path):
    """start(path) runs SERVER_SCRIPT on ``path`` in a child process; all are stopped after."""
    script = tmp_path / "kv_server.py"
    script.write_text(SERVER_SCRIPT)
    started = []

    def start(path):
        proc = spawn(script, str(path))
        started.append(proc)
        return proc

    yield start
    for proc in started:
        stop(proc)
