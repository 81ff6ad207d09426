"""``immudoc transaction FILE``: write operations from a file of JSON lines, committed together
in one transaction (a thin shell over docstore.transactions.oplist.run_operations)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from typing import Annotated, Any, Optional

import typer

from docstore.cli import output
from docstore.cli.app import AsOpt, FormatOpt, MetaOpt, ReasonOpt, _file_or_dash, _fmt, _tx_kw, app, open_db

_HELP = """Commit the write operations in FILE (JSON lines; - for standard input) together, in one
transaction: all of them, or, if any fails, none.

\b
Each line is one operation:
  {"op": "insert",  "collection": "visits", "doc": {"_id": "v9", "site": "Oslo"}}
  {"op": "update",  "collection": "visits", "id": "v1", "update": {"$set": {"week": 3}}}
  {"op": "replace", "collection": "visits", "id": "v2", "doc": {"site": "Rome"}}
  {"op": "delete",  "collection": "patients", "id": "p7"}

They run in order (a later one sees what an earlier one wrote). A file larger than one
transaction can hold (256 MB, or more than 1,048,576 operations) is refused before anything
is written. Prints {"tx", "operations", "inserted", "updated", "replaced", "deleted", "ids"}.

Examples:

  immudoc transaction enrol.jsonl --reason "enrolment of P-007" --as coordinator@oslo

  generate-ops | immudoc transaction - --meta '{"batch": 12}'
"""


@app.command(help=_HELP)
def transaction(
    ctx: typer.Context,
    source: Annotated[
        Optional[str],
        typer.Argument(metavar="FILE|-", callback=_file_or_dash, help="Operations as JSON lines (- or default: stdin)."),
    ] = None,
    reason: ReasonOpt = None,
    as_: AsOpt = None,
    meta: MetaOpt = None,
    fmt: FormatOpt = None,
) -> None:
    from docstore.transactions.oplist import run_operations

    tx_kw = _tx_kw(reason, as_, meta)
    with _Operations(source) as ops, open_db(ctx, write=True) as db:
        result = run_operations(db, ops, **tx_kw)
    output.emit(
        result, _fmt(fmt),
        lambda r: f"committed {r['operations']} operations in transaction {r['tx']} "
        f"({r['inserted']} inserted, {r['updated']} updated, {r['replaced']} replaced, {r['deleted']} deleted)",
    )


class _Operations:
    """The JSON lines of FILE or stdin, parsed one at a time; InputError once they pass the
    bytes one transaction holds (checked up front for a file)."""

    def __init__(self, source: Optional[str]) -> None:
        import kvcore

        from docstore.cli.errors import InputError

        self.limit = kvcore.MAX_TX_BYTES
        self.where = "standard input" if source in (None, "-") else f"'{source}'"
        if source is None or source == "-":
            if source is None and sys.stdin.isatty():
                raise InputError("give a FILE, or pipe operations (JSON lines) to standard input ('-')")
            self.stream: Any = sys.stdin.buffer
            self.close_it = False
        else:
            size = os.path.getsize(source)
            if size > self.limit:
                raise self.too_large(size)
            try:
                self.stream = open(source, "rb")  # noqa: SIM115 - closed by __exit__
            except OSError as e:
                raise InputError(f"cannot read {self.where}: {e.strerror}") from None
            self.close_it = True

    def too_large(self, size: int) -> Exception:
        from docstore.errors import TransactionTooLargeError

        return TransactionTooLargeError(
            f"{self.where} holds {size:,} bytes or more: one transaction holds at most {self.limit:,}; "
            "nothing was written (split the operations into several files)"
        )

    def __enter__(self) -> Iterator[Any]:
        return self._read()

    def __exit__(self, *exc: object) -> None:
        if self.close_it:
            self.stream.close()

    def _read(self) -> Iterator[Any]:
        from docstore.cli.inputs import parse_json

        read = 0
        for n, line in enumerate(self.stream, 1):
            read += len(line)
            if read > self.limit:
                raise self.too_large(read)
            if n == 1 and line.startswith(b"\xef\xbb\xbf"):
                line = line[3:]
            if not line.strip(b" \t\r\n"):
                continue
            try:
                text = line.decode("utf-8")
            except UnicodeDecodeError as e:
                from docstore.cli.errors import InputError

                raise InputError(f"line {n} of {self.where} is not UTF-8 text: {e.reason}") from None
            yield parse_json(text, f"line {n} of {self.where}")


__all__ = ["transaction"]
