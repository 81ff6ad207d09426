"""Printing results: JSON for pipes, readable tables on a terminal (``--format`` overrides)."""

from __future__ import annotations

import json
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


def emit_many(items: Iterable[Any], fmt: str | None, table: Callable[[list], str] | None = None) -> int:
    """Print a sequence (streamed for json and jsonl); returns how many were printed."""
    fmt = resolve(fmt)
    n = 0
    if fmt == "table":
        rows = list(items)
        write((table or render_documents)(rows))
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


# ----------------------------------------------------------------------------- tables
def cell(value: Any, width: int = CELL) -> str:
    """A value as table text: strings bare, everything else as compact JSON, cut to ``width``."""
    text = value if isinstance(value, str) else dumps(value)
    text = " ".join(text.split()) if "\n" in text or "\t" in text else text
    return text if len(text) <= width else text[: width - 1] + "…"


def render_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    return "\n".join(out)


def render_documents(docs: list[dict]) -> str:
    """Documents as rows, one column per top-level field (in order of first appearance)."""
    if not docs:
        return "(no documents)"
    columns: dict[str, None] = {}
    for d in docs:
        if isinstance(d, dict):
            columns.update(dict.fromkeys(d))
    headers = list(columns)
    rows = [[cell(d.get(c, "")) if isinstance(d, dict) else cell(d) for c in headers] for d in docs]
    footer = f"\n({len(docs)} document{'s' if len(docs) != 1 else ''})"
    return render_table(headers, rows) + footer


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
