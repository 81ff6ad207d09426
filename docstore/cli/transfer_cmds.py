"""``immudoc import`` and ``immudoc export``: JSON lines in and out, streamed (the library's
:mod:`docstore.transfer` does the work; this module reads, draws and prints)."""

from __future__ import annotations

import os
import sys
from typing import Annotated, Any, Optional

import typer

from docstore.cli import output
from docstore.cli.app import (
    AsOpt, AtTxOpt, CollArg, FormatOpt, MetaOpt, ReasonOpt, _file_or_dash, _fmt, _tx_kw, app, open_db,
)
from docstore.cli.progress import PROGRESS_MIN

BATCH_SIZE = 1000  # docstore.transfer.BATCH_SIZE (not imported here: --help loads no library)

IMPORT_HELP = """Insert JSON lines (as export writes them), committed in batches of N documents
(--batch-size; fewer when a batch nears a transaction's limits), each batch one transaction.

Every line is checked to be JSON before anything is written. A bar on a terminal shows the input
read and the last committed batch's lines and transaction (-v: a line a batch on stderr); the
summary (documents, batches, first and last transaction) goes to stdout. If a batch
is refused (a schema violation, an id that exists, ...), the batches before it stay committed
and the error says which lines are: re-run with --skip-existing to resume. --upsert replaces
documents whose _id exists; --create creates the collection if it is missing;
--with-definition applies the schema, indexes and options an `export --with-definition` wrote
on its first line.

\b
Examples:
  immudoc import visits visits.jsonl --create
  immudoc import visits visits.jsonl --skip-existing      # resume after a failure
  immudoc import visits visits.jsonl --upsert --reason "corrected export"
  immudoc export visits --with-definition -o v.jsonl && immudoc --db copy import visits v.jsonl --with-definition --create
  zcat visits.jsonl.gz | immudoc import visits - --batch-size 5000
"""

EXPORT_HELP = """Write a collection's documents as JSON lines, streamed (memory stays bounded):
to stdout, or to FILE with -o (a bar on a terminal; FILE appears whole or not at all).

--with-definition writes the collection's schema, indexes and options first, as line 1:
{"$immudoc": "collection-definition", "version": 1, "name": ..., "schema": ..., "indexes":
[...], "require_reason": ...}; `import --with-definition` applies it (a plain import skips it).

\b
Examples:
  immudoc export visits -o visits.jsonl
  immudoc export visits --at-tx 12 > visits-at-12.jsonl
  immudoc export visits --with-definition -o visits.jsonl
"""


def _announce(text: str) -> None:
    print(f"immudoc: {text}", file=sys.stderr)


@app.command("import", help=IMPORT_HELP)
def import_(
    ctx: typer.Context,
    collection: CollArg,
    source: Annotated[
        Optional[str],
        typer.Argument(metavar="FILE|-", callback=_file_or_dash, help="JSON lines (default: stdin)."),
    ] = None,
    batch_size: Annotated[
        int,
        typer.Option("--batch-size", "--per-transaction", min=1, metavar="N",
                     help="Documents a transaction (fewer when a batch nears a transaction's limits)."),
    ] = BATCH_SIZE,
    upsert: Annotated[bool, typer.Option("--upsert", help="Replace documents whose _id exists (a new revision).")] = False,
    skip_existing: Annotated[
        bool, typer.Option("--skip-existing", help="Leave documents whose _id exists as they are (resume an import).")
    ] = False,
    create: Annotated[bool, typer.Option("--create", help="Create the collection if it does not exist.")] = False,
    with_definition: Annotated[
        bool, typer.Option("--with-definition", help="Apply the schema, indexes and options on line 1 (export --with-definition).")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Print each committed batch's lines and transaction on stderr.")
    ] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    reason: ReasonOpt = None,
    as_: AsOpt = None,
    meta: MetaOpt = None,
    fmt: FormatOpt = None,
) -> None:
    from docstore.cli.inputs import JsonLines

    if upsert and skip_existing:
        raise typer.BadParameter("give --upsert or --skip-existing, not both", param_hint="--upsert")
    tx_kw = _tx_kw(reason, as_, meta)
    lines = JsonLines(source)
    try:
        bar = _bar(lines.total_bytes, "checking", quiet)
        total, complete = 0, False
        try:
            for _ in lines.numbered():
                total += 1
                if bar is not None and total % 256 == 0:
                    bar.update(lines.done_bytes - bar.pos)
            complete = True
        finally:
            _finish(bar, complete)
        with open_db(ctx, write=True) as db:
            summary = _run_import(db, collection, lines, batch_size, "replace" if upsert else "skip" if skip_existing else "error",
                                  create, with_definition, quiet, verbose, tx_kw)
    finally:
        lines.close()
    output.emit(summary, _fmt(fmt), _summary_line)


def _run_import(
    db: Any, collection: str, lines: Any, batch_size: int, existing: str, create: bool, with_definition: bool,
    quiet: bool, verbose: bool, tx_kw: dict[str, Any],
) -> dict[str, Any]:
    from docstore.cli.errors import InputError
    from docstore.errors import CollectionNotFoundError
    from docstore.transfer import ImportProgress, apply_definition, import_documents, is_definition

    items = lines.numbered()
    first = next(items, None)
    applied = None
    if first is not None and is_definition(first[1]):
        if with_definition:
            applied = apply_definition(db, collection, first[1], create=create)
        else:
            _announce(f"line 1 of {lines.where} is a collection definition: not applied (give --with-definition to apply it)")
        first = None
    elif with_definition:
        raise InputError(f"line 1 of {lines.where} is not a collection definition (written by export --with-definition)")
    if applied is None:
        try:
            db.collection(collection)
        except CollectionNotFoundError:
            if not create:
                raise CollectionNotFoundError(
                    f"no collection {collection!r} (create it with `immudoc collection create {collection}`, or give --create)"
                ) from None
            db.create_collection(collection)
            applied = "created"

    def docs() -> Any:
        if first is not None:
            yield first
        yield from items

    progress = ImportProgress(unit="line")
    bar = _bar(lines.total_bytes, "importing", quiet)
    complete = False
    try:
        for batch in import_documents(db, collection, docs(), batch_size=batch_size, existing=existing, numbered=True, **tx_kw):
            progress.add(batch)
            where = f"lines {batch.first}-{batch.last}"
            did = f"transaction {batch.tx_id}" if batch.tx_id is not None else "nothing written: every document exists"
            if bar is not None:
                bar.current_item = f"{where} committed ({did})"
                bar.update(lines.done_bytes - bar.pos)
            if verbose:
                _announce(f"committed {where} ({did})")
        complete = True
    except Exception as e:
        p = getattr(e, "import_progress", None)
        if p is not None and p.error is not None:  # the CLI's words for resuming
            e.args = (p.failure(p.error, "re-run with --skip-existing to resume"), *e.args[1:])
        raise
    finally:
        _finish(bar, complete)
    out = {"collection": collection, "imported": progress.inserted + progress.replaced, **progress.to_dict()}
    if with_definition:
        out["definition"] = applied  # created, updated or unchanged
    elif applied is not None:
        out["created"] = True
    return out


def _summary_line(r: dict[str, Any]) -> str:
    text = f"imported {r['imported']} documents into {r['collection']}"
    extra = [f"{r[k]} {k}" for k in ("replaced", "skipped") if r.get(k)]
    if r.get("batches"):
        txs = f"transaction {r['first_tx']}" if r["first_tx"] == r["last_tx"] else f"transactions {r['first_tx']}-{r['last_tx']}"
        batches = f"{r['batches']} batch" + ("es" if r["batches"] != 1 else "")
        extra.append(f"{batches}, {txs}" if r["first_tx"] is not None else batches)
    return text + (f" ({'; '.join(extra)})" if extra else "")


def _bar(total_bytes: int, label: str, quiet: bool) -> Any:
    """A bar by input bytes on a terminal's stderr (None when quiet, small, or not a terminal)."""
    if quiet or total_bytes < PROGRESS_MIN * 100 or not sys.stderr.isatty():
        return None
    bar = typer.progressbar(length=total_bytes, label=label, file=sys.stderr, item_show_func=lambda s: s)
    bar.__enter__()
    return bar


def _finish(bar: Any, complete: bool) -> None:
    """Close a bar: at 100% if the work is complete, else where it stopped."""
    if bar is not None:
        if complete:
            bar.update(bar.length - bar.pos)
        bar.__exit__(None, None, None)


@app.command("export", help=EXPORT_HELP)
def export_(
    ctx: typer.Context,
    collection: CollArg,
    at_tx: AtTxOpt = None,
    out: Annotated[Optional[str], typer.Option("--output", "-o", metavar="FILE", help="Write here, not to stdout.")] = None,
    with_definition: Annotated[
        bool, typer.Option("--with-definition", help="Write the schema, indexes and options first (line 1).")
    ] = False,
) -> None:
    with open_db(ctx) as db:
        coll = db.collection(collection)
        head = []
        if with_definition:
            from docstore.transfer import definition

            head.append(output.dumps(definition(db, collection)) + "\n")
        docs = coll.find(at_tx=at_tx)
        if out is None:
            for line in head:
                sys.stdout.write(line)
            for doc in docs:
                sys.stdout.write(output.dumps(doc) + "\n")
            return
        total = _count(coll) if at_tx is None else None
        bar = None
        if total is not None and total >= PROGRESS_MIN and sys.stderr.isatty():
            bar = typer.progressbar(length=total, label=f"exporting to {out}", file=sys.stderr)
            bar.__enter__()
        try:
            _write_whole(out, head, docs, bar)
        finally:
            if bar is not None:
                bar.__exit__(None, None, None)


def _count(coll: Any) -> int | None:
    try:
        return int(coll.info(verify=False)["count"])
    except Exception:  # noqa: BLE001 - a bar only: none if the count cannot be had
        return None


def _write_whole(path: str, head: list[str], docs: Any, bar: Any) -> None:
    """Write to a temporary file beside ``path``, renamed to it once complete: ``path`` holds
    the whole export or is left as it was."""
    from docstore.cli.errors import InputError

    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.{os.getpid()}.partial")
    try:
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(head)
            n = 0
            for doc in docs:
                f.write(output.dumps(doc) + "\n")
                n += 1
                if bar is not None and n % 256 == 0:
                    bar.update(256)
        os.replace(tmp, path)
        if bar is not None:
            bar.update(max(0, n - bar.pos))
    except OSError as e:
        raise InputError(f"cannot write {path!r}: {e.strerror}") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
