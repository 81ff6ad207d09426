"""``immudoc index drop``: a thin shell over ``Collection.drop_index`` (docs/queries.md, "Indexes")."""

from typing import Annotated, Any

import typer

from docstore.cli import output
from docstore.cli.app import CollArg, FormatOpt, _fmt, index_app, open_db


def describe_index(i: dict[str, Any]) -> str:
    """One index as text: its field and its kind (unique, sparse, partial and its filter)."""
    kinds = [k for k in ("unique", "sparse") if i.get(k)]
    if i.get("partial_filter") is not None:
        kinds.append("partial " + output.dumps(i["partial_filter"]))
    return i["field"] + (f" ({', '.join(kinds)})" if kinds else "")


def describe_indexes(collection: str, indexes: list[dict[str, Any]]) -> str:
    return f"indexes of {collection}: " + (", ".join(describe_index(i) for i in indexes) or "(none)")


@index_app.command("drop")
def index_drop(
    ctx: typer.Context,
    collection: CollArg,
    field: Annotated[str, typer.Argument(help="The field of the index to drop.")],
    fmt: FormatOpt = None,
) -> None:
    """Drop a secondary index: a new revision of the collection's definition (exit 3 if the
    collection has no index on FIELD).

    Examples:

      immudoc index drop visits site
    """
    with open_db(ctx, write=True) as db:
        coll = db.collection(collection)
        coll.drop_index(field)
        indexes = coll.indexes()
    output.emit(indexes, _fmt(fmt), lambda ix: describe_indexes(collection, ix))
