"""The README's walkthroughs run as written and print what the README says they print.

The CLI walkthrough runs under a pseudo-terminal (its outputs are a terminal's tables), with
ids, roots, times, sizes and the working directory normalized.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from cli_testlib import on_terminal

REPO = Path(__file__).resolve().parents[2]

README = (REPO / "README.md").read_text()
MARK = "@@@ next command @@@"


def _block(heading: str, lang: str) -> str:
    section = README.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    return section.split(f"```{lang}\n", 1)[1].split("\n```", 1)[0]


def _normalize(text: str, cwd: str) -> str:
    text = text.replace(cwd, "/home/me")
    text = re.sub(r"\b[0-9A-HJKMNP-TV-Z]{26}\b", "<ID>", text)
    text = re.sub(r"\b[0-9a-f]{64}\b", "<ROOT>", text)
    text = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "<TIME>", text)
    text = re.sub(r"\d+ bytes", "<N> bytes", text)
    text = re.sub(r"\+[0-9a-f]{8}\+[A-Za-z0-9+/]{44}", "+<KEY>", text)  # a verifier key's id and key
    return text


def _commands(console: str) -> list[tuple[str, list[str]]]:
    out: list[tuple[str, list[str]]] = []
    lines = console.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        assert line.startswith("$ "), line
        cmd = [line[2:]]
        i += 1
        heredoc = re.search(r"<<'(\w+)'", line)
        while cmd[-1].endswith("\\") or heredoc:
            cmd.append(lines[i])
            i += 1
            if heredoc and cmd[-1] == heredoc.group(1):
                heredoc = None
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            expected.append(lines[i])
            i += 1
        out.append(("\n".join(cmd), expected))
    return out


def _on_terminal(argv: list[str], cwd: str, env: dict, timeout: float = 300) -> str:
    return on_terminal(argv, cwd=cwd, env=env, timeout=timeout)[1]


def test_cli_walkthrough(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "immudoc"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -c "from docstore.cli import main; main()" "$@"\n')
    shim.chmod(0o755)
    work = tmp_path / "me"
    work.mkdir()
    steps = _commands(_block("Walkthrough (CLI)", "console"))
    script = "".join(f"echo '{MARK}'\n{cmd}\n" for cmd, _ in steps)
    (tmp_path / "walkthrough.sh").write_text(script)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "PYTHONPATH": str(REPO), "NO_COLOR": "1", "COLUMNS": "160"}
    env.pop("IMMUDOC_DB", None)
    out = _on_terminal(["bash", str(tmp_path / "walkthrough.sh")], str(work), env)
    outputs = out.split(MARK + "\n")[1:]
    assert len(outputs) == len(steps), out
    for (cmd, expected), got in zip(steps, outputs):
        got_lines = _normalize(got, str(work)).rstrip("\n").split("\n") if got.strip() else []
        want = _normalize("\n".join(expected), "/home/me").split("\n") if expected else []
        if want and want[-1].strip() == "...":  # the README shows the beginning only
            want = want[:-1]
            got_lines = got_lines[: len(want)]
        assert got_lines == want, f"\n$ {cmd}\n--- README\n" + "\n".join(want) + "\n--- got\n" + "\n".join(got_lines)


def test_python_walkthrough(tmp_path):
    code = _block("Walkthrough (Python)", "python")
    expected = README.split("## Walkthrough (Python)\n", 1)[1].split("prints\n\n```\n", 1)[1].split("\n```", 1)[0]
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == expected.strip()


def test_kvcore_snippet(tmp_path):
    code = _block("kvcore: the ledger underneath", "python")
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert p.returncode == 0, p.stderr
    assert "audit passed" in p.stdout
