"""`immudoc serve` and the global `--server` option, as real processes on an ephemeral port."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


pytest.importorskip("grpc")

REPO = Path(__file__).resolve().parents[2]
PATIENTS = [
    {"_id": "p1", "name": "Ada", "site": "Oslo", "age": 61, "dosage": {"mg": 50}},
    {"_id": "p2", "name": "Bo", "site": "Bergen", "age": 45, "dosage": {"mg": 25}},
    {"_id": "p3", "name": "Cy", "site": "Oslo", "age": 52, "dosage": {"mg": 10}},
]


def run_subprocess(args, *, input=None):
    env = {k: v for k, v in os.environ.items() if k not in ("IMMUDOC_DB", "IMMUDOC_DEBUG", "IMMUDOC_SERVER")}
    env["PYTHONPATH"] = str(REPO)
    p = subprocess.run([sys.executable, "-c", "from docstore.cli import main; main()", *args],
                       input=input, capture_output=True, text=True, env=env, timeout=120)
    return Outcome(p.returncode, p.stdout, p.stderr)


@dataclass
class Outcome:
    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)


def test_document_commands_work_through_a_server_and_are_verified(server, tmp_path):
    proc, addr, db = server
    state = str(tmp_path / "trusted.json")
    remote = ["--server", addr, "--state-file", state]
    r = run_subprocess([*remote, "--trust-on-first-use", "collection", "create", "patients", "--index", "site"])
    assert r.code == 0, r.err
    saved = json.loads(open(state).read())  # trusted on first use (and its key pinned), then advanced
    assert saved["tx_id"] == 1 and saved["verifier_keys"] and saved["checkpoint"].startswith("immudoc/")
    r = run_subprocess([*remote, "insert", "patients", "-"], input=json.dumps(PATIENTS))
    assert r.code == 0, r.err and r.json() == ["p1", "p2", "p3"]
    r = run_subprocess([*remote, "find", "patients", '{"site": "Oslo"}', "--sort", "age"])
    assert r.code == 0, r.err
    assert [d["_id"] for d in r.json()] == ["p3", "p1"]
    r = run_subprocess([*remote, "update", "patients", "p1", '{"$set": {"dosage.mg": 40}}'])
    assert r.code == 0, r.err
    r = run_subprocess([*remote, "get", "patients", "p1"])
    assert r.code == 0 and r.json()["dosage"] == {"mg": 40}
    assert json.loads(open(state).read())["tx_id"] == 3  # advanced through consistency proofs
    r = run_subprocess([*remote, "get", "patients", "nobody"])
    assert r.code == 3 and "nobody" in r.err  # the embedded API's error, the same exit code
    # without a trusted state a verified connection is refused (no silent trust on first use)
    r = run_subprocess(["--server", addr, "find", "patients"])
    assert r.code == 2 and "--state-file" in r.err
    assert run_subprocess(["--server", addr, "--no-verify", "count", "patients"]).out.strip() == "3"
    # SIGTERM: the server finishes, closes the database and exits 0; the data is all there
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    r = run_subprocess(["--db", db, "audit"])
    assert r.code == 0 and r.json()["ok"] is True
    assert run_subprocess(["--db", db, "count", "patients"]).out.strip() == "3"


def test_serve_refuses_a_missing_database_and_init_refuses_a_server(tmp_path):
    r = run_subprocess(["--db", str(tmp_path / "none"), "serve", "--port", "0"])
    assert r.code == 7 and "immudoc init" in r.err
    assert not (tmp_path / "none").exists()
    r = run_subprocess(["--server", "127.0.0.1:1", "--no-verify", "init"])
    assert r.code == 2


@pytest.mark.parametrize("port", ["99999", "-1", "65536"])
def test_serve_range_checks_its_port(tmp_path, port):
    """A port out of range is a usage error (exit 2) before anything opens: once, --port 99999
    listened on 34463 and --port -1 started."""
    assert run_subprocess(["--db", str(tmp_path / "db"), "init"]).code == 0
    r = run_subprocess(["--db", str(tmp_path / "db"), "serve", "--port", port])
    assert r.code == 2 and "Invalid value for '--port'" in r.err and ("65535" in r.err or "than or equal to 0" in r.err)
