"""A list of write operations committed as one transaction (``immudoc transaction FILE``;
docs/documents.md, "Transactions from a file of operations").

Each operation is a JSON object::

    {"op": "insert",  "collection": "visits", "doc": {...}}            ("id": sets the doc's _id)
    {"op": "update",  "collection": "visits", "id": "v1", "update": {"$set": {...}}}
    {"op": "replace", "collection": "visits", "id": "v1", "doc": {...}}
    {"op": "delete",  "collection": "visits", "id": "v1"}

They run in order in one transaction of the database's contract (embedded or remote), so a
later operation sees what an earlier one wrote, and all are committed, or, on the first error,
none. The operations are taken one at a time (an iterator): the memory held is the
transaction's own buffer, which the database bounds (TransactionTooLargeError), and
``max_operations`` refuses more operations than one transaction can hold before any commit.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import kvcore

from docstore import api
from docstore.errors import DocstoreError, QueryError, TransactionTooLargeError

__all__ = ["MAX_OPERATIONS", "OPS", "run_operations"]

OPS: dict[str, tuple[frozenset[str], frozenset[str]]] = {  # op -> (required keys, allowed keys)
    "insert": (frozenset({"op", "collection", "doc"}), frozenset({"op", "collection", "doc", "id"})),
    "update": (frozenset({"op", "collection", "id", "update"}), frozenset({"op", "collection", "id", "update"})),
    "replace": (frozenset({"op", "collection", "id", "doc"}), frozenset({"op", "collection", "id", "doc"})),
    "delete": (frozenset({"op", "collection", "id"}), frozenset({"op", "collection", "id"})),
}
MAX_OPERATIONS = kvcore.MAX_TX_ENTRIES
"""The most operations in one transaction (each writes at least one ledger entry)."""


def run_operations(
    db: api.Database, operations: Iterable[Any], *, user: str | None = None, reason: str | None = None,
    meta: dict[str, Any] | None = None, max_operations: int = MAX_OPERATIONS,
) -> dict[str, Any]:
    """Run ``operations`` (see the module's documentation) in one transaction and commit it;
    returns ``{"tx", "operations", "inserted", "updated", "replaced", "deleted", "ids"}``
    (``ids``: the inserted documents' ids, in order). An invalid operation (QueryError naming
    its number, from 1), a failing one (its own error, with its number; a remote database
    checks documents against their schema at the commit, and its error names no operation)
    or too many of them (TransactionTooLargeError) leave the database unchanged."""
    counts = {"insert": 0, "update": 0, "replace": 0, "delete": 0}
    ids: list[str] = []
    n = 0
    with db.transaction(user=user, reason=reason, meta=meta) as tx:
        for n, op in enumerate(operations, 1):
            if n > max_operations:
                raise TransactionTooLargeError(
                    f"more than {max_operations:,} operations: one transaction holds at most that many; "
                    "nothing was written (split them into several files)"
                )
            kind, coll, doc_id = _check(n, op)
            try:
                target = tx[coll]
                if kind == "insert":
                    doc = op["doc"]
                    if doc_id is not None:
                        doc = {**doc, "_id": doc_id}
                    ids.append(target.insert(doc))
                elif kind == "update":
                    target.update(doc_id, op["update"])
                elif kind == "replace":
                    target.replace(doc_id, op["doc"])
                else:
                    target.delete(doc_id)
            except DocstoreError as e:
                if e.args and isinstance(e.args[0], str):
                    e.args = (f"operation {n} ({kind} in {coll}): {e.args[0]}; nothing was written", *e.args[1:])
                raise
            counts[kind] += 1
        if n == 0:
            raise QueryError("no operations: nothing to commit")
        tx_id = tx.commit()
    return {
        "tx": tx_id, "operations": n, "inserted": counts["insert"], "updated": counts["update"],
        "replaced": counts["replace"], "deleted": counts["delete"], "ids": ids,
    }


def _check(n: int, op: Any) -> tuple[str, str, Any]:
    """(op, collection, id) of a well-formed operation; QueryError naming operation ``n``."""
    if not isinstance(op, dict):
        raise QueryError(f"operation {n} is not a JSON object")
    kind = op.get("op")
    if kind not in OPS:
        raise QueryError(f"operation {n}: \"op\" is one of insert, update, replace, delete")
    required, allowed = OPS[kind]
    missing = sorted(required - set(op))
    if missing:
        raise QueryError(f"operation {n} ({kind}) needs " + ", ".join(f'"{k}"' for k in missing))
    unknown = sorted(set(op) - allowed)
    if unknown:
        raise QueryError(f"operation {n} ({kind}) has unknown keys: " + ", ".join(f'"{k}"' for k in unknown))
    coll = op["collection"]
    if not isinstance(coll, str):
        raise QueryError(f"operation {n}: \"collection\" is a name (a string)")
    doc_id = op.get("id")
    if doc_id is not None and not isinstance(doc_id, str):
        raise QueryError(f"operation {n}: \"id\" is a string")
    for key in ("doc", "update"):
        if key in op and not isinstance(op[key], dict):
            raise QueryError(f"operation {n}: \"{key}\" is a JSON object")
    return kind, coll, doc_id
