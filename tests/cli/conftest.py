"""Fixtures for the command-line tests: the CLI in-process (typer's CliRunner) and as a real
subprocess, a database path, and a small populated trial database."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]

PATIENT_SCHEMA = {
    "type": "object",
    "required": ["name", "site"],
    "properties": {
        "name": {"type": "string"},
        "site": {"enum": ["Oslo", "Bergen"]},
        "age": {"type": "integer", "minimum": 0},
        "dosage": {"type": "object", "properties": {"mg": {"type": "number"}}},
    },
}
PATIENTS = [
    {"_id": "p1", "name": "Ada", "site": "Oslo", "age": 61, "dosage": {"mg": 50}, "screening": "S-1"},
    {"_id": "p2", "name": "Bo", "site": "Bergen", "age": 45, "dosage": {"mg": 25}, "screening": "S-2"},
    {"_id": "p3", "name": "Cy", "site": "Oslo", "age": 52, "dosage": {"mg": 10}, "screening": "S-3"},
]


@dataclass
class Outcome:
    """What a command did: exit code, stdout, stderr (same shape in-process and subprocess)."""

    code: int
    out: str
    err: str

    def json(self):
        return json.loads(self.out)

    def lines(self):
        return [json.loads(line) for line in self.out.splitlines() if line.strip()]


@pytest.fixture
def patients():
    """Three patient documents (a fresh copy)."""
    return json.loads(json.dumps(PATIENTS))


@pytest.fixture
def patient_schema():
    return json.loads(json.dumps(PATIENT_SCHEMA))


@pytest.fixture
def db_path(tmp_path):
    return str(tmp_path / "db")


@pytest.fixture
def cli(db_path, monkeypatch):
    """Run ``immudoc --db <db_path> ARGS`` in-process: ``cli("get", "c", "id", input=...)``.

    ``db=None`` leaves out --db (then IMMUDOC_DB or the default applies).
    """
    from docstore.cli import app

    monkeypatch.delenv("IMMUDOC_DB", raising=False)
    monkeypatch.delenv("IMMUDOC_DEBUG", raising=False)
    runner = CliRunner()

    def run(*args: str, input: str | bytes | None = None, db: str | None = "default", env=None) -> Outcome:
        full = list(args) if db is None else ["--db", db_path if db == "default" else db, *args]
        r = runner.invoke(app, full, input=input, env=env, prog_name="immudoc")
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise r.exception
        return Outcome(r.exit_code, r.stdout, r.stderr)

    return run


def run_subprocess(args, *, input=None, env=None, cwd=None, timeout=120) -> Outcome:
    """Run the real command: ``python -c 'from docstore.cli import main; main()' ARGS``."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("IMMUDOC_DB", "IMMUDOC_DEBUG")}
    full_env["PYTHONPATH"] = str(REPO)
    full_env.update(env or {})
    p = subprocess.run(
        [sys.executable, "-c", "from docstore.cli import main; main()", *args],
        input=input, capture_output=True, text=True, env=full_env, cwd=cwd, timeout=timeout,
    )
    return Outcome(p.returncode, p.stdout, p.stderr)


@pytest.fixture
def sub():
    return run_subprocess


@pytest.fixture
def server(tmp_path):
    """``immudoc serve`` of a new database on an ephemeral port: (process, "host:port", db path)."""
    import re

    db = str(tmp_path / "db")
    assert run_subprocess(["--db", db, "init"]).code == 0
    env = {k: v for k, v in os.environ.items() if k not in ("IMMUDOC_DB", "IMMUDOC_DEBUG")}
    env["PYTHONPATH"] = str(REPO)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from docstore.cli import main; main()", "--db", db, "serve", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    line = proc.stdout.readline()
    match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    yield proc, match.group(1), db
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def trial(cli, tmp_path):
    """A database with a 'patients' collection (schema, index on site, unique screening) and
    three patients inserted in one transaction; returns the CLI runner."""
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(PATIENT_SCHEMA))
    assert cli("init").code == 0
    r = cli("collection", "create", "patients", "--schema", str(schema), "--index", "site", "--unique-index", "screening")
    assert r.code == 0, r.err
    r = cli("insert", "patients", "-", input=json.dumps(PATIENTS))
    assert r.code == 0, r.err
    return cli


def assert_error(r: Outcome, code: int, *words: str) -> None:
    """Exit ``code`` with one clear line on stderr (no traceback) containing ``words``."""
    assert r.code == code, (r.code, r.out, r.err)
    lines = r.err.strip().splitlines()
    assert len(lines) == 1 if code != 2 else lines, r.err
    assert "Traceback" not in r.err
    if code != 2:
        assert lines[0].startswith("immudoc: error: "), r.err
    for w in words:
        assert w.lower() in r.err.lower(), (w, r.err)


@pytest.fixture
def check_error():
    return assert_error

