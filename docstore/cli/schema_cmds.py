"""``immudoc collection set-schema``: a thin shell over ``Collection.set_schema`` (docs/documents.md,
"Schemas")."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from docstore.cli import output
from docstore.cli.app import CollArg, FormatOpt, _fmt, _info_table, _json_or_file, collection_app, open_db


@collection_app.command("set-schema")
def collection_set_schema(
    ctx: typer.Context,
    name: CollArg,
    schema: Annotated[
        Optional[str],
        typer.Argument(metavar="SCHEMA", callback=_json_or_file,
                       help="JSON Schema: a file, - for stdin, or inline JSON."),
    ] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the schema (documents are no longer checked).")] = False,
    fmt: FormatOpt = None,
) -> None:
    """Set a collection's JSON Schema (a new, provable revision of its definition); every
    existing document must satisfy it, or nothing changes and the first ones that do not are
    listed. The schema sees each document without its _id unless it names _id in its
    top-level properties or required. `collection show --at-tx N` shows an earlier schema.

    Examples:

      immudoc collection set-schema visits visit-schema.json

      immudoc collection set-schema visits '{"required": ["patient"], "additionalProperties": false, "properties": {"patient": {"type": "string"}}}'

      immudoc collection set-schema visits --remove
    """
    from docstore.cli.inputs import json_arg

    if (schema is None) == (not remove):
        raise typer.BadParameter("give a SCHEMA, or --remove (not both)")
    schema_doc = None if schema is None else json_arg(schema, "the schema")
    with open_db(ctx, write=True) as db:
        coll = db.collection(name)
        coll.set_schema(schema_doc)
        if db.verifying:  # the definition proven; the count is not
            info = {"name": name, "schema": coll.schema, "indexes": coll.indexes(), "count": coll.count()}
        else:
            info = coll.info()
    output.emit(info, _fmt(fmt), _info_table)


__all__ = ["collection_set_schema"]
