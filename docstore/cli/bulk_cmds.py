"""``immudoc update-many`` and ``immudoc delete-many``: writes by filter (docs/updates.md), each
one library call (Collection.update_many, Collection.delete_many) in one transaction."""

from __future__ import annotations

from typing import Annotated

import typer

from docstore.cli import output
from docstore.cli.app import (
    AsOpt,
    CollArg,
    FormatOpt,
    MetaOpt,
    ReasonOpt,
    _fmt,
    _json_or_file,
    _tx_kw,
    app,
    open_db,
)

FilterArg = Annotated[
    str, typer.Argument(metavar="FILTER", callback=_json_or_file,
                        help='Which documents, e.g. \'{"site": "Oslo"}\' ({} for all); or a file, or -.')
]


@app.command("update-many")
def update_many(
    ctx: typer.Context,
    collection: CollArg,
    filter_: FilterArg,
    changes: Annotated[
        str, typer.Argument(metavar="UPDATE", callback=_json_or_file,
                            help='Update operators, e.g. \'{"$set": {"status": "closed"}}\'; or a file, or -.')
    ],
    upsert: Annotated[bool, typer.Option("--upsert", help="Insert a document if none matches.")] = False,
    reason: ReasonOpt = None,
    as_: AsOpt = None,
    meta: MetaOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Apply update operators to every matching document, in one transaction; print the counts.

    Prints {"matched_count", "modified_count", "upserted_id", "tx"}. Operators: docs/updates.md.

    Examples:

      immudoc update-many visits '{"site": "Oslo"}' '{"$set": {"status": "closed"}}' --reason "site closed"

      immudoc update-many visits '{"patient": "P-7"}' '{"$set": {"consent": false}}' --upsert
    """
    from docstore.cli.inputs import json_arg

    tx_kw = _tx_kw(reason, as_, meta)
    flt = json_arg(filter_, "the filter")
    spec = json_arg(changes, "the update")
    with open_db(ctx, write=True) as db:
        result = db.collection(collection).update_many(flt, spec, upsert, **tx_kw)
    output.emit(result.to_dict(), _fmt(fmt))


@app.command("delete-many")
def delete_many(
    ctx: typer.Context,
    collection: CollArg,
    filter_: FilterArg,
    reason: ReasonOpt = None,
    as_: AsOpt = None,
    meta: MetaOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Delete every matching document (tombstones: history stays), in one transaction.

    Prints {"deleted_count", "tx"}.

    Examples:

      immudoc delete-many visits '{"status": "void"}' --reason "entered in error"
    """
    from docstore.cli.inputs import json_arg

    tx_kw = _tx_kw(reason, as_, meta)
    flt = json_arg(filter_, "the filter")
    with open_db(ctx, write=True) as db:
        result = db.collection(collection).delete_many(flt, **tx_kw)
    output.emit(result.to_dict(), _fmt(fmt))


__all__ = ["delete_many", "update_many"]
