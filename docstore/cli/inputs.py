"""Reading JSON given on the command line, in a file, or on standard input."""

from __future__ import annotations

import json
import sys
from typing import Any

from docstore.cli.errors import InputError

_DECODER = json.JSONDecoder()


def read_text(source: str | None) -> str:
    """The text of a file, or of standard input for ``-`` or None."""
    if source is None or source == "-":
        if source is None and _stdin_is_terminal():
            raise InputError("give a FILE, or pipe JSON to standard input ('-')")
        data = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read().encode()
        where = "standard input"
    else:
        try:
            with open(source, "rb") as f:
                data = f.read()
        except OSError as e:
            raise InputError(f"cannot read {source!r}: {e.strerror}") from None
        where = repr(source)
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise InputError(f"{where} is not UTF-8 text: {e.reason} at byte {e.start}") from None


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


def parse_json(text: str, what: str) -> Any:
    """One JSON value; InputError naming ``what`` if it is not valid JSON."""
    try:
        return json.loads(text)
    except ValueError as e:
        raise InputError(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise InputError(f"{what} is nested too deeply") from None


def json_arg(value: str, what: str) -> Any:
    """A JSON value given inline (``{...}``, ``[...]``), as ``-`` (stdin), or as a file name."""
    if value.lstrip().startswith(("{", "[")):
        return parse_json(value, what)
    return parse_json(read_text(value), f"{what} ({'standard input' if value == '-' else repr(value)})")


def iter_json_values(text: str, what: str):
    """Every JSON value in ``text``: one value, JSON lines, or values one after another."""
    pos, end = 0, len(text)
    while True:
        while pos < end and text[pos] in " \t\r\n":
            pos += 1
        if pos >= end:
            return
        try:
            value, nxt = _DECODER.raw_decode(text, pos)
        except ValueError as e:
            raise InputError(f"{what} is not valid JSON: {e}") from None
        except RecursionError:
            raise InputError(f"{what}: a value is nested too deeply") from None
        yield value
        pos = nxt


def read_documents(source: str | None, lines_only: bool = False) -> list[Any]:
    """Documents from a file or stdin: one JSON object, a JSON array of them, or JSON lines.

    With ``lines_only`` (``immudoc import``) the input must be JSON lines: one value a line.
    """
    where = "standard input" if source in (None, "-") else repr(source)
    text = read_text(source)
    if lines_only:
        docs = []
        # JSON lines end at "\n" only: str.splitlines() would also cut at U+2028, U+2029, U+0085
        # and \x1c-\x1e, which JSON strings may hold unescaped (and export writes so)
        for n, line in enumerate(text.split("\n"), 1):
            if line.strip(" \t\r"):
                docs.append(parse_json(line, f"line {n} of {where}"))
        return docs
    values = list(iter_json_values(text, where))
    if len(values) == 1 and isinstance(values[0], list):
        return values[0]
    if any(isinstance(v, list) for v in values):
        raise InputError(f"{where}: give one JSON array, or JSON objects one after another, not both")
    return values
