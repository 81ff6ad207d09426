"""Printing results: JSON for pipes, readable tables on a terminal (``--format`` overrides)."""

from __future__ import annotations

import itertools
import json
import os
import re
import sys
from collections.abc import Callable, Iterable
from typing import Any

FORMATS = ("json", "jsonl", "table")
CELL = 40  # widest table cell before it is cut


def stdout_is_terminal() -> bool:
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):
        return False


def resolve(fmt: str | None) -> str:
    """The format to print in: the one asked for, else table on a terminal and JSON otherwise."""
    if fmt is None:
        return "table" if stdout_is_terminal() else "json"
    return fmt


def dumps(value: Any, indent: bool = False) -> str:
    """JSON text (orjson; the standard library for integers beyond 64 bits)."""
    import orjson

    try:
        return orjson.dumps(value, option=orjson.OPT_INDENT_2 if indent else 0).decode()
    except TypeError:
        return json.dumps(value, indent=2 if indent else None, ensure_ascii=False)


def write(text: str) -> None:
    sys.stdout.write(text)
    if not text.endswith("\n"):
        sys.stdout.write("\n")


def emit(value: Any, fmt: str | None, table: Callable[[Any], str] | None = None) -> None:
    """Print one result: indented JSON, one JSON line, or ``table(value)``."""
    fmt = resolve(fmt)
    if fmt == "table":
        write(table(value) if table is not None else render_value(value))
    else:
        write(dumps(value, indent=fmt == "json"))


def emit_many(
    items: Iterable[Any], fmt: str | None, table: Callable[..., str] | None = None, *, cap: int | None = None,
    noun: str = "document", hint: str = "", count_rest: bool = True,
) -> int:
    """Print a sequence (streamed for json and jsonl); returns how many were printed. A table
    shows the first ``cap`` items only (when given), with a footer saying how many there are
    (the rest counted as they stream by, never held; without ``count_rest``, only whether
    there are more) and ``hint``: how to see them all."""
    fmt = resolve(fmt)
    n = 0
    if fmt == "table":
        it = iter(items)
        rows = list(itertools.islice(it, cap)) if cap is not None else list(it)
        if count_rest:
            total = len(rows) + sum(1 for _ in it)
        else:
            total = -1 if next(it, None) is not None else len(rows)  # -1: more, not counted
        if table is None:
            write(render_documents(rows, total, hint, noun))
        else:
            text = table(rows)
            write(text if total in (None, len(rows)) else text + "\n" + footer(len(rows), total, noun, hint))
        return len(rows)
    if fmt == "jsonl":
        for item in items:
            sys.stdout.write(dumps(item) + "\n")
            n += 1
        return n
    out = sys.stdout
    for item in items:
        out.write(("[\n  " if n == 0 else ",\n  ") + dumps(item))
        n += 1
    out.write("[]\n" if n == 0 else "\n]\n")
    return n


def terminal_cap(limit: int | None, fmt: str | None) -> int | None:
    """The rows a table shows by default on a terminal (:data:`TERMINAL_ROWS`), unless the user
    gave --limit or asked for another format (JSON in a pipe has no limit)."""
    return TERMINAL_ROWS if limit is None and resolve(fmt) == "table" and stdout_is_terminal() else None


# ----------------------------------------------------------------------------- tables
def cell(value: Any, width: int = CELL) -> str:
    """A value as table text: strings bare, everything else as compact JSON, cut to ``width``."""
    text = value if isinstance(value, str) else dumps(value)
    text = " ".join(text.split()) if "\n" in text or "\t" in text else text
    return text if len(text) <= width else text[: width - 1] + "…"


TERMINAL_ROWS = 20
"""Rows a table shows on a terminal unless --limit says otherwise (as mongosh shows 20)."""


def terminal_width() -> int:
    """The width to fit tables to: the terminal's (COLUMNS overrides), else wide enough for anything."""
    import shutil

    if stdout_is_terminal() or os.environ.get("COLUMNS"):
        return max(shutil.get_terminal_size((100, 24)).columns, 20)
    return 10_000


def colour() -> bool:
    """Whether to colour: on a terminal, unless NO_COLOR is set (https://no-color.org) or TERM is dumb."""
    return stdout_is_terminal() and not os.environ.get("NO_COLOR") and os.environ.get("TERM") != "dumb"


_BOX = None
_TRAILING = re.compile(r"\s+((?:\x1b\[[0-9;]*m)*)$")  # a line's trailing blanks, before its last colour codes


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    """A table fitted to the terminal's width (``rich``): a header, a rule, a row a line; a
    column too wide for the width is cut with "…"; the header bold unless colour is off."""
    global _BOX
    import io

    from rich import box
    from rich.console import Console
    from rich.table import Table

    if _BOX is None:
        _BOX = box.Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)
    on = colour()
    console = Console(
        file=io.StringIO(), width=terminal_width(), force_terminal=on, no_color=not on,
        color_system="standard" if on else None, highlight=False, emoji=False, markup=False,
    )
    table = Table(box=_BOX, show_edge=False, pad_edge=False, padding=(0, 1, 0, 0), collapse_padding=True,
                  header_style="bold" if on else "", expand=False)
    for h in headers:
        table.add_column(h, overflow="ellipsis", no_wrap=True)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return "\n".join(_TRAILING.sub(r"\1", line) for line in text.rstrip("\n").split("\n"))


def render_documents(docs: list[dict], total: int | None = None, hint: str = "", noun: str = "document") -> str:
    """Documents as rows, one column per top-level field (in order of first appearance);
    ``total``: how many there are, when only the first ones are shown."""
    if not docs:
        return "(no documents)"
    columns: dict[str, None] = {}
    for d in docs:
        if isinstance(d, dict):
            columns.update(dict.fromkeys(d))
    headers = list(columns)
    rows = [[cell(d.get(c, "")) if isinstance(d, dict) else cell(d) for c in headers] for d in docs]
    return render_table(headers, rows) + "\n" + footer(len(docs), total, noun, hint)


def footer(shown: int, total: int | None, noun: str, hint: str = "") -> str:
    """"(3 documents)", or "(20 of 1,234 documents shown: HINT)" when only some are shown
    (``total`` -1: more, not counted)."""
    if total == -1:
        return f"({shown} {noun}s shown, and more: {hint or '--limit N or -f json for all'})"
    if total is None or total <= shown:
        return f"({shown} {noun}{'s' if shown != 1 else ''})"
    return f"({shown} of {total:,} {noun}s shown: {hint or '--limit N or -f json for all'})"


def _paths(value: Any, prefix: str) -> Iterable[tuple[str, Any]]:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            yield from _paths(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(value, list) and value:
        for i, v in enumerate(value):
            yield from _paths(v, f"{prefix}.{i}" if prefix else str(i))
    else:
        yield prefix, value


def render_document(doc: Any) -> str:
    """One document, property by property (dotted paths, as filters name them)."""
    if not isinstance(doc, dict):
        return render_value(doc)
    rows = [[path, cell(v, 72)] for path, v in _paths(doc, "")]
    return render_table(["field", "value"], rows)


def render_value(value: Any) -> str:
    if isinstance(value, dict):
        return render_document(value)
    if isinstance(value, list):
        return "\n".join(cell(v, 200) for v in value) if value else "(none)"
    return cell(value, 10_000)
