"""Idempotency keys: a write sent twice is committed once.

A write given ``idempotency_key=K`` commits, in the same ledger transaction, an entry under
``r\\0K`` that records what the write was and what it returned. A write with a key already
recorded commits nothing and returns what the first one returned (inserted ids; for a replace
or an update, the document as that transaction wrote it; for a transaction, its id; for a
write by filter, its counts and its transaction). The entry
is read at the transaction's snapshot and written with it, so two attempts racing with one key
conflict and the loser finds the winner's record (docs/errors.md: retrying after
UnavailableError). A key used before for another kind of write, or another collection, is a
QueryError. Keys are part of the log like any entry: provable, kept for ever.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple

import orjson

import kvcore

from docstore.documents import records
from docstore.engine.engine import translate
from docstore.errors import CorruptDataError, QueryError

if TYPE_CHECKING:
    from docstore.engine.engine import Engine
    from docstore.transactions.transaction import Staged

MAX_KEY_CHARS = 128
BY_FILTER = ("update_one", "update_many", "replace_one", "delete_one", "delete_many")
"""Writes by filter: a repeat returns their recorded counts and their transaction."""


class Recorded(NamedTuple):
    """A write already committed under a key: in transaction ``tx_id``, what it was."""

    tx_id: int
    kind: str
    collection: str
    result: Any


def check_key(key: object) -> str:
    """``key`` if it is a valid idempotency key (1 to 128 printable ASCII characters), else QueryError."""
    if not isinstance(key, str) or not 1 <= len(key) <= MAX_KEY_CHARS or not (key.isascii() and key.isprintable()):
        raise QueryError(
            f"an idempotency key is 1 to {MAX_KEY_CHARS} printable ASCII characters (a UUID, say), got {key!r}"
        )
    return key


def lookup(staged: Staged, key: str) -> Recorded | None:
    """The write recorded under ``key``, as of the transaction's snapshot or since (the read
    is part of the transaction: a commit of the same key after this check conflicts with it)."""
    rkey = records.request_key(key)
    entry = staged.kv.lookup(rkey)
    if entry is None:
        with translate():
            entry = staged.engine.ledger.lookup(rkey)  # committed after the snapshot
    if entry is None:
        return None
    return _decoded(entry, key)


def committed_meanwhile(engine: Engine, key: str) -> Recorded | None:
    """After a write with ``key`` failed (a conflict, or an error such as DuplicateIdError that
    another attempt of the same write would cause): the write another attempt committed, in
    this process or another (taken in first), or None."""
    rkey = records.request_key(key)
    if engine.follows:  # a commit of another process, perhaps not yet notified
        engine.refresh()
    with translate():
        entry = engine.ledger.lookup(rkey)
    return None if entry is None else _decoded(entry, key)


def _decoded(entry: kvcore.Entry, key: str) -> Recorded:
    try:
        v = orjson.loads(entry.value)
        return Recorded(entry.tx_id, v["kind"], v["collection"], v.get("result"))
    except (orjson.JSONDecodeError, KeyError, TypeError):
        raise CorruptDataError(f"the record of idempotency key {key!r} does not decode") from None


def record(staged: Staged, key: str, kind: str, collection: str, result: Any) -> None:
    """Write ``key``'s record into the transaction (a replace's or an update's document is not
    kept: only its id; it is read back as of the transaction on a repeat)."""
    if kind in ("replace", "update"):
        result = {"_id": result["_id"]}
    staged.kv.set(records.request_key(key), orjson.dumps({"kind": kind, "collection": collection, "result": result}))


def repeat(engine: Engine, prior: Recorded, key: str, kind: str, collection: str) -> Any:
    """What a repeated write returns: the first one's result."""
    if (prior.kind, prior.collection) != (kind, collection):
        where = f" on {prior.collection!r}" if prior.collection else ""
        raise QueryError(
            f"idempotency key {key!r} was used for another write ({prior.kind}{where}, transaction "
            f"{prior.tx_id}): give each write its own key"
        )
    if kind in ("replace", "update"):
        found = engine.revision(collection, prior.result["_id"], prior.tx_id)
        return None if found is None else found[1]
    if kind == "transaction":
        return prior.tx_id
    if kind in BY_FILTER:  # counts, and the transaction that wrote them
        return {**prior.result, "tx": prior.tx_id}
    return prior.result
