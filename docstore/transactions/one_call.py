"""Optimistic transactions committed in one call: what a remote client's transaction sends.

A client that cannot keep a :class:`~docstore.transactions.transaction.Transaction` open across calls reads
as of a *snapshot* (a ledger transaction id), buffers its writes, and sends everything at once:

- ``reads``: each document it read with the revision it saw (None: there was no such live
  document), and each collection it queried;
- ``writes``: inserts, replaces and deletes of whole documents, in order.

:func:`commit_in_one_call` replays that as one docstore transaction that reads as of the snapshot,
so that every write is validated as it is embedded (ids, schema, unique indexes) and the
commit raises :class:`ConflictError`, writing nothing, if a document it read or wrote, or any
document of a collection it queried, changed after the snapshot (kvcore's optimistic check
from the snapshot on), or if a read revision is not the snapshot's.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docstore.documents.ids import check_collection_name, check_id
from docstore.errors import ConflictError, DocstoreError, QueryError

if TYPE_CHECKING:
    from docstore.database import Database
    from docstore.transactions.transaction import Transaction

WRITE_KINDS = ("insert", "replace", "delete")
BLIND_TRIES = 8  # a blind commit with an idempotency key: attempts before a conflict is raised


@dataclass(frozen=True)
class Read:
    """A read of a transaction: document ``id`` seen at ``revision`` (None: not there), or,
    with ``id=None``, a query over the whole collection (any change in it conflicts)."""

    collection: str
    id: str | None = None
    revision: int | None = None


@dataclass(frozen=True)
class Write:
    """``insert`` (``document``), ``replace`` (``id``, ``document``) or ``delete`` (``id``)."""

    kind: str
    collection: str
    id: str | None = None
    document: Any = None


def _check(snapshot: Any, reads: list[Read], writes: list[Write]) -> None:
    if snapshot is not None and (type(snapshot) is not int or snapshot < 0):
        raise QueryError(f"snapshot must be a non-negative integer or None, got {snapshot!r}")
    for r in reads:
        if not isinstance(r, Read):
            raise QueryError(f"reads hold docstore.transactions.one_call.Read values, got {type(r).__name__}")
        check_collection_name(r.collection)
        if r.id is not None:
            check_id(r.id)
        if r.revision is not None and (type(r.revision) is not int or r.revision < 1):
            raise QueryError(f"a read revision is a positive integer or None, got {r.revision!r}")
    for w in writes:
        if not isinstance(w, Write):
            raise QueryError(f"writes hold docstore.transactions.one_call.Write values, got {type(w).__name__}")
        if w.kind not in WRITE_KINDS:
            raise QueryError(f"unknown write kind {w.kind!r} (one of {', '.join(WRITE_KINDS)})")
        check_collection_name(w.collection)
        if w.kind != "insert":
            check_id(w.id)


def _replay(tx: Transaction, snapshot: int | None, reads: list[Read], writes: list[Write]) -> None:
    # The transaction reads as of the client's snapshot and, at commit, kvcore checks every key
    # read or written (and every prefix scanned) for commits after it: exactly the client's
    # optimistic transaction, replayed.
    staged = tx.staged
    for r in reads:
        tx.collection(r.collection)  # the definition, read (a concurrent change conflicts)
        if r.id is None:
            staged.read_collection(r.collection)  # records the collection as read
            continue
        header, _doc = staged.snapshot_doc(r.collection, r.id)  # records the header as read
        seen = None if header is None or header.deleted else header.revision
        if seen != r.revision:
            raise ConflictError(
                f"document {r.id!r} in {r.collection!r} is at revision {seen} as of transaction "
                f"{tx.snapshot}; the transaction read revision {r.revision}"
            )
    i = 0
    while i < len(writes):
        w = writes[i]
        coll = tx.collection(w.collection)
        if w.kind == "insert":  # consecutive inserts into one collection: one insert_many
            j = i
            while j < len(writes) and writes[j].kind == "insert" and writes[j].collection == w.collection:
                j += 1
            coll.insert_many([x.document for x in writes[i:j]])
            i = j
            continue
        if w.kind == "replace":
            coll.replace(w.id, w.document)  # type: ignore[arg-type]
        else:
            coll.delete(w.id)  # type: ignore[arg-type]
        i += 1


def commit_in_one_call(
    db: Database, snapshot: int | None, reads: Iterable[Read] = (), writes: Iterable[Write] = (),
    idempotency_key: str | None = None, tx_meta: dict[str, Any] | None = None,
) -> int | None:
    """Commit ``writes`` if nothing in ``reads`` changed after ``snapshot``; see the module.

    Returns the ledger transaction id (None if nothing was written). Raises ConflictError
    (nothing written) on a conflict, and the embedded API's errors (DuplicateIdError,
    SchemaError, DocumentNotFoundError, ...) for an invalid write. Without reads and without a
    snapshot, the writes are blind: a conflict with a concurrent commit is retried, as single
    operations are. ``idempotency_key``: committed once however often it is sent
    (docstore.transactions.requests); a repeat returns the first commit's transaction id.
    ``tx_meta``: the transaction's ``user``, ``reason`` and ``meta`` (Database.transaction).
    """
    kw = tx_meta or {}
    reads, writes = list(reads), list(writes)
    _check(snapshot, reads, writes)
    if snapshot is None and not reads and idempotency_key is None:  # blind: retried, never starved

        def replay(tx: Transaction) -> Transaction:
            _replay(tx, None, reads, writes)
            return tx

        return db.run_transaction(replay, **kw).tx_id
    if snapshot is None and not reads:  # blind with a key: conflicts retried a few times
        for attempt in range(BLIND_TRIES):
            try:
                return _commit(db.transaction(idempotency_key=idempotency_key, **kw), None, reads, writes)
            except ConflictError:
                if attempt == BLIND_TRIES - 1:
                    raise
    if snapshot is not None and snapshot > db.tx_id:
        raise QueryError(f"snapshot {snapshot} is newer than the ledger (transaction {db.tx_id})")
    return _commit(db.transaction(at_tx=snapshot, idempotency_key=idempotency_key, **kw), snapshot, reads, writes)


def _commit(tx: Transaction, snapshot: int | None, reads: list[Read], writes: list[Write]) -> int | None:
    try:
        prior = tx.already_committed()  # sent before, and committed: nothing to replay
        if prior is not None:
            tx.rollback()
            return prior
        _replay(tx, snapshot, reads, writes)
        return tx.commit()
    except DocstoreError:
        if not tx.done:
            tx.rollback()
        # an attempt of this very transaction committed meanwhile explains a conflict, or an
        # error its replay meets (DuplicateIdError for the ids it inserted): its result stands
        meanwhile = tx.committed_meanwhile()
        if meanwhile is None:
            raise
        return meanwhile
    except BaseException:
        if not tx.done:
            tx.rollback()
        raise
