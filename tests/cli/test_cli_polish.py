"""The CLI as a person uses it: Examples in every --help, --version, shell completion, tables fitted
to the terminal with a default of 20 rows there (JSON in a pipe unchanged), NO_COLOR, a hint for
a global option given after the command, "did you mean" for a mistyped collection."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from cli_testlib import on_terminal
from conftest import REPO

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _commands():
    from typer.main import get_command

    from docstore.cli import app

    def walk(cmd, path):
        subs = getattr(cmd, "commands", None)
        if not subs:
            yield " ".join(path), cmd
            return
        if getattr(cmd, "invoke_without_command", False) and path:
            yield " ".join(path), cmd
        for name, sub in subs.items():
            yield from walk(sub, [*path, name])

    return list(walk(get_command(app), []))


def test_every_command_has_examples_in_its_help(cli):
    commands = _commands()
    assert len(commands) >= 35
    for name, _cmd in commands:
        r = cli(*name.split(), "--help", db=None)
        assert r.code == 0, (name, r.err)
        assert "Examples:" in r.out, name
        examples = r.out.split("Examples:", 1)[1].split("\n\n", 2)[1]  # the block after the heading
        lines = [line.strip() for line in examples.splitlines() if line.strip()]
        assert lines and all("immudoc" in line for line in lines), (name, lines)
        assert any(f"immudoc {name}" in line or f" {name} " in f" {line} " for line in lines), (name, lines)


def _env(**kw):
    env = {k: v for k, v in os.environ.items() if k not in ("IMMUDOC_DB", "IMMUDOC_DEBUG", "NO_COLOR")}
    env["PYTHONPATH"] = str(REPO)
    env.update(kw)
    return env


def test_version(sub):
    from importlib.metadata import version

    for flag in ("--version", "-V"):
        r = sub([flag])
        assert r.code == 0 and r.out.strip() == f"immudoc {version('immudoc')}", r


def test_shell_completion(sub, tmp_path):
    # typer detects the user's shell from the process tree; a test names it instead (typer's
    # own switch for that), as a user may: `--show-completion bash`
    named = {"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    r = sub(["--show-completion", "bash"], env=named)
    assert r.code == 0 and "complete" in r.out and "_IMMUDOC_COMPLETE" in r.out.upper(), r
    r = sub(["--install-completion", "bash"], env={**named, "HOME": str(tmp_path), "SHELL": "/bin/bash"})
    assert r.code == 0, r
    assert "completion installed" in r.out.lower()
    assert (tmp_path / ".bashrc").exists()
    # the completion itself: what bash asks for while typing `immudoc coll<TAB>`
    r = sub([], env={"_IMMUDOC_COMPLETE": "complete_bash", "COMP_WORDS": "immudoc coll", "COMP_CWORD": "1"})
    assert "collection" in r.out, r


@pytest.fixture
def many(sub, tmp_path):
    """A database of 25 documents (and 25 revisions of one of them)."""
    db = str(tmp_path / "db")
    assert sub(["--db", db, "init"]).code == 0
    assert sub(["--db", db, "collection", "create", "c"]).code == 0
    docs = "".join(json.dumps({"_id": f"d{i:02d}", "n": i, "text": "x" * 120}) + "\n" for i in range(25))
    assert sub(["--db", db, "insert", "c", "-"], input=docs).code == 0
    for i in range(24):
        assert sub(["--db", db, "update", "c", "d00", json.dumps({"$set": {"n": i + 100}})]).code == 0
    return db


def _terminal(args, **env):
    argv = [sys.executable, "-c", "from docstore.cli import main; main()", *args]
    code, out = on_terminal(argv, env=_env(**env), timeout=120)
    assert code == 0, out
    return out


def test_a_terminal_shows_20_rows_and_says_how_to_see_more(many, sub):
    out = _terminal(["--db", many, "find", "c"], NO_COLOR="1", COLUMNS="100")
    lines = out.strip().splitlines()
    assert lines[0].split() == ["_id", "n", "text"]
    assert [line.split()[0] for line in lines[2:-1]] == [f"d{i:02d}" for i in range(20)]
    assert lines[-1] == "(20 of 25 documents shown: --limit N or -f json for all)"
    out = _terminal(["--db", many, "find", "c", "--limit", "25"], NO_COLOR="1")
    assert out.strip().splitlines()[-1] == "(25 documents)"
    out = _terminal(["--db", many, "find", "c", "-f", "jsonl"], NO_COLOR="1")
    assert len(out.strip().splitlines()) == 25  # JSON on a terminal: all of it
    assert len(sub(["--db", many, "find", "c"]).json()) == 25  # a pipe: JSON, all of it
    out = _terminal(["--db", many, "aggregate", "c", '[{"$project": {"n": 1}}]'], NO_COLOR="1")
    assert out.strip().splitlines()[-1] == "(20 of 25 documents shown: --limit N or -f json for all)"
    assert len(sub(["--db", many, "aggregate", "c", '[{"$project": {"n": 1}}]', "--limit", "3"]).json()) == 3
    out = _terminal(["--db", many, "history", "c", "d00"], NO_COLOR="1")
    assert out.strip().splitlines()[-1] == "(20 of 25 revisions shown: --limit N or -f json for all)"
    assert len(sub(["--db", many, "history", "c", "d00"]).json()) == 25
    assert len(sub(["--db", many, "history", "c", "d00", "--limit", "2"]).json()) == 2
    out = _terminal(["--db", many, "log"], NO_COLOR="1")
    assert out.strip().splitlines()[-1] == "(20 transactions shown, and more: --limit N, or --before-tx N for older ones)"
    assert len(sub(["--db", many, "log"]).json()) == 20  # as before: the newest 20
    assert len(sub(["--db", many, "log", "--limit", "26"]).json()) == 26


def test_tables_fit_the_terminal_width(many):
    for width in (60, 100):
        out = _terminal(["--db", many, "find", "c"], NO_COLOR="1", COLUMNS=str(width))
        assert max(len(line) for line in out.splitlines()) <= width
        assert "…" in out  # the long column is cut, each row one line
    out = _terminal(["--db", many, "history", "c", "d00"], NO_COLOR="1", COLUMNS="70")
    assert max(len(line) for line in out.splitlines()) <= 70


def test_colour_on_a_terminal_unless_no_color(many, sub):
    coloured = _terminal(["--db", many, "find", "c", "--limit", "2"], COLUMNS="100", TERM="xterm")
    assert ANSI.search(coloured), coloured
    plain = _terminal(["--db", many, "find", "c", "--limit", "2"], COLUMNS="100", TERM="xterm", NO_COLOR="1")
    assert not ANSI.search(plain) and "\x1b" not in plain
    assert ANSI.sub("", coloured) == plain
    assert "\x1b" not in sub(["--db", many, "find", "c", "-f", "table"]).out  # not a terminal: no colour


@pytest.mark.parametrize("option, value, metavar", [
    ("--db", "x", "PATH"), ("--state-file", "s.json", "FILE"), ("--server", "h:1", "HOST:PORT"), ("--no-verify", None, ""),
])
def test_a_global_option_after_the_command_gets_a_hint(cli, option, value, metavar):
    args = ["find", "visits", option] + ([value] if value else [])
    r = cli(*args, db=None)
    assert r.code == 2
    want = f"{option} is a global option: put it before the command: immudoc {option}{' ' + metavar if metavar else ''} find ..."
    assert want in r.err, r.err
    r = cli("collection", "show", "visits", "--db", "x", db=None)
    assert "immudoc --db PATH collection show ..." in r.err
    assert "global option" not in cli("find", "visits", "--bogus", db=None).err


def test_a_mistyped_collection_gets_a_suggestion(trial, check_error):
    check_error(trial("find", "patiens"), 3, "collection 'patiens' does not exist (did you mean 'patients'?)")
    check_error(trial("get", "Patients", "p1"), 3, "did you mean 'patients'?")
    r = trial("count", "zzzz")
    check_error(r, 3, "collection 'zzzz' does not exist")
    assert "did you mean" not in r.err and "create_collection" not in r.err


def test_messages_show_no_python(trial, check_error, tmp_path):
    r = trial("replace", "patients", "p1", '{"_id": "p2", "name": "Ada", "site": "Oslo"}')
    check_error(r, 4, "a replacement cannot change _id")
    assert "replace()" not in r.err
    from kvcore.errors import printable

    assert printable(b"d\x00visits\x00v1") == "'d/visits/v1'"
    assert printable(b"\xff\x01" + b"a" * 100, 4) == "'\\xff\\x01aa…'"


def test_messages_name_the_option_not_the_keyword(cli):
    """A library message names its keyword and the CLI's option ("reason=... (--reason)"); the
    command line shows the option alone (docstore.cli.errors.for_the_command_line)."""
    assert cli("init").code == 0
    assert cli("collection", "create", "v", "--require-reason").code == 0
    assert cli("insert", "v", "-", input='{"_id": "a", "n": 1}').code == 0
    r = cli("update", "v", "a", '{"$set": {"n": 2}}')
    assert r.code == 4 and "--reason" in r.err and "reason=" not in r.err, r.err
