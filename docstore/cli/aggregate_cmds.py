"""``immudoc aggregate``: a thin shell over ``Collection.aggregate`` (docs/aggregation.md)."""

import itertools
from typing import Annotated, Optional

import typer

from docstore.cli import output
from docstore.cli.app import (
    AtTimeOpt,
    AtTxOpt,
    CollArg,
    FormatOpt,
    MaxTimeOpt,
    _fmt,
    _json_or_file,
    app,
    open_db,
)

_HELP = """Run an aggregation pipeline (Mongo-style JSON: $match $project $addFields $unwind
$group $sort $skip $limit $count) and print its output like `find`.

PIPELINE is a JSON array of stages, inline, in a file, or - for standard input. A leading
$match uses the collection's indexes; with a trusted state (the global --state-file) the documents it
selects are verified as `find` verifies them, and the other stages run here, over the verified
documents (the global --no-verify reads them unverified). On a terminal the table shows the
first 20 results (--limit N, or -f json for all).

Examples:

  immudoc aggregate visits '[{"$group": {"_id": "$site", "n": {"$sum": 1}}}, {"$sort": {"n": -1}}]'

  immudoc aggregate visits pipeline.json --format jsonl
"""


@app.command(help=_HELP)
def aggregate(
    ctx: typer.Context,
    collection: CollArg,
    pipeline: Annotated[
        str,
        typer.Argument(metavar="PIPELINE", callback=_json_or_file,
                       help='A JSON array of stages (or a file, or -), e.g. \'[{"$group": {"_id": "$site", "n": {"$sum": 1}}}]\''),
    ],
    at_tx: AtTxOpt = None,
    at_time: AtTimeOpt = None,
    max_time_ms: MaxTimeOpt = None,
    limit: Annotated[Optional[int], typer.Option("--limit", min=1, help="Print at most this many results.")] = None,
    fmt: FormatOpt = None,
) -> None:
    from docstore.cli.inputs import json_arg

    stages = json_arg(pipeline, "the pipeline")
    with open_db(ctx) as db:
        docs = db.collection(collection).aggregate(stages, at_tx=at_tx, at_time=at_time, max_time_ms=max_time_ms)
        if limit is not None:
            docs = itertools.islice(docs, limit)
        output.emit_many(docs, _fmt(fmt), cap=output.terminal_cap(limit, _fmt(fmt)))
