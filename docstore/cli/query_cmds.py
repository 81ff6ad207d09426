"""``immudoc distinct`` and ``immudoc explain``: thin shells over ``Collection.distinct`` and
``Collection.explain`` (docs/queries.md)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from docstore.cli import output
from docstore.cli.app import AtTxOpt, CollArg, FormatOpt, MaxTimeOpt, _fmt, _json_or_file, app, open_db

OptFilterArg = Annotated[
    Optional[str],
    typer.Argument(metavar="[FILTER]", callback=_json_or_file,
                   help='Which documents, e.g. \'{"site": "Oslo"}\' (default: all); or a file, or -.'),
]


@app.command()
def distinct(
    ctx: typer.Context,
    collection: CollArg,
    field: Annotated[str, typer.Argument(metavar="FIELD", help="A (dotted) field, e.g. site or dosage.mg.")],
    filter_: OptFilterArg = None,
    at_tx: AtTxOpt = None,
    max_time_ms: MaxTimeOpt = None,
    fmt: FormatOpt = None,
) -> None:
    """Print the distinct values of FIELD among the documents matching FILTER (an array's
    elements count one by one). With a trusted state (the global --state-file) the list is
    proven complete as of now.

    Examples:

      immudoc distinct visits site

      immudoc distinct visits dosage.mg '{"site": "Oslo"}' --format jsonl
    """
    from docstore.cli.inputs import json_arg

    flt = None if filter_ is None else json_arg(filter_, "the filter")
    with open_db(ctx) as db:
        values = db.collection(collection).distinct(field, flt, at_tx, max_time_ms=max_time_ms)
    output.emit_many(values, _fmt(fmt), output.render_value)


@app.command()
def explain(
    ctx: typer.Context,
    collection: CollArg,
    filter_: OptFilterArg = None,
    fmt: FormatOpt = None,
) -> None:
    """Show how `find COLL FILTER` would run: by an index (which one, which ranges) or by a
    scan of the whole collection. The plan itself is not proven, with a trusted state or not.

    Examples:

      immudoc explain visits '{"site": "Oslo", "week": {"$gte": 2}}'

      immudoc explain visits '{"$or": [{"site": "Oslo"}, {"patient": "P-007"}]}' --format json
    """
    from docstore.cli.inputs import json_arg

    flt = None if filter_ is None else json_arg(filter_, "the filter")
    with open_db(ctx) as db:
        plan = db.collection(collection).explain(flt, verify=False)
    output.emit(plan, _fmt(fmt), output.render_document)


__all__ = ["distinct", "explain"]
