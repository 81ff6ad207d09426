"""Reading JSON given on the command line, in a file, or on standard input."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterator
from typing import IO, Any

from docstore.cli.errors import InputError

_DECODER = json.JSONDecoder()
_LONG_DIGITS = re.compile(rb"[0-9]{19}")
"""19 digits in a row: perhaps an integer beyond 64 bits, which only json reads exactly."""


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


class JsonLines:
    """The JSON lines of a file or of standard input, read a line at a time (memory stays
    bounded by the longest line). Standard input is first copied to a temporary file, so that
    the lines can be read twice: once to check them all before anything is written
    (:meth:`check`), once to insert them (:meth:`numbered`). ``total_bytes`` is the input's
    size and ``done_bytes`` how much of it the current reading has passed (a progress bar's)."""

    def __init__(self, source: str | None) -> None:
        import os
        import tempfile

        self.where = "standard input" if source in (None, "-") else repr(source)
        self._spool = None
        self.done_bytes = 0
        if source is None or source == "-":
            if source is None and _stdin_is_terminal():
                raise InputError("give a FILE, or pipe JSON lines to standard input ('-')")
            self._spool = tempfile.TemporaryFile()
            stream = sys.stdin.buffer if hasattr(sys.stdin, "buffer") else None
            while True:
                chunk = stream.read(1 << 20) if stream is not None else sys.stdin.read(1 << 20).encode()
                if not chunk:
                    break
                self._spool.write(chunk)
            self.path = None
            self.total_bytes = self._spool.tell()
        else:
            self.path = source
            try:
                with open(source, "rb"):
                    pass
                self.total_bytes = os.path.getsize(source)
            except OSError as e:
                raise InputError(f"cannot read {source!r}: {e.strerror}") from None

    def close(self) -> None:
        if self._spool is not None:
            self._spool.close()

    def _lines(self) -> Iterator[tuple[int, bytes]]:
        f: IO[bytes]
        if self._spool is not None:
            self._spool.seek(0)
            f = self._spool
        else:
            assert self.path is not None
            f = open(self.path, "rb")
        self.done_bytes = 0
        try:
            # JSON lines end at "\n" only (U+2028 and the like may stand unescaped in strings)
            for n, line in enumerate(f, 1):
                self.done_bytes += len(line)
                if n == 1 and line.startswith(b"\xef\xbb\xbf"):
                    line = line[3:]
                if line.strip(b" \t\r\n"):
                    yield n, line
        finally:
            if f is not self._spool:
                f.close()

    def _value(self, n: int, line: bytes) -> Any:
        if _LONG_DIGITS.search(line) is None:  # orjson would read an integer past 64 bits as a float
            try:
                return _loads(line)  # orjson: the common case, fast
            except ValueError:
                pass  # say why as json does
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise InputError(f"line {n} of {self.where} is not UTF-8 text: {e.reason}") from None
        return parse_json(text, f"line {n} of {self.where}")

    def check(self) -> int:
        """Check that every line is a JSON value (InputError naming the first that is not);
        returns how many there are."""
        count = 0
        for n, line in self._lines():
            self._value(n, line)
            count += 1
        return count

    def numbered(self) -> Iterator[tuple[int, Any]]:
        """(line number, value) of every line that is not blank."""
        for n, line in self._lines():
            yield n, self._value(n, line)

    def __iter__(self) -> Iterator[Any]:
        for _n, value in self.numbered():
            yield value


def _loads(data: bytes) -> Any:
    import orjson

    return orjson.loads(data)
