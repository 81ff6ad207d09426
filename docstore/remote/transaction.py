"""Optimistic transactions over the network.

``with db.transaction() as tx:`` reads as of one snapshot (the server's state when the
transaction begins, or ``at_tx``), serving reads of documents it wrote from its own buffer. It records every document it
read with the revision it saw (or that there was none), and every collection it queried. On a
clean exit it sends reads and writes in ONE call (``Commit``); the server replays them with
:func:`docstore.transactions.one_call.commit_in_one_call`, which raises ConflictError, writing
nothing, if anything read or written changed after the snapshot. Nothing is sent for a
transaction that wrote nothing. Writes are validated here as embedded (the shared
:class:`~docstore.transactions.staging.StagingCollection`) and by the server at commit (schema,
unique indexes, an ``_id`` already taken): those errors are raised by ``commit()``, i.e. when
the ``with`` block ends.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from docstore.collections import cursor
from docstore.errors import DocstoreError, QueryError
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb
from docstore.transactions import requests
from docstore.transactions.staging import StagingCollection, TransactionBase

if TYPE_CHECKING:
    from docstore.remote.connection import Connection


def _copy(doc: dict) -> dict:
    return codec.loads(codec.dumps_doc(doc))


class RemoteStaged:
    """A remote transaction's reads (document -> revision seen, collections queried) and
    buffered writes (internal: used by its collections)."""

    def __init__(self, conn: Connection, snapshot: int) -> None:
        self.conn = conn
        self.snapshot = snapshot
        self.base: dict[tuple[str, str], tuple[dict | None, int | None]] = {}  # reads: (doc, revision)
        self.scans: set[str] = set()
        self.pending: dict[tuple[str, str], dict | None] = {}  # in first-write order
        self.done = False

    def check_active(self) -> None:
        if self.done:
            raise DocstoreError("the transaction has already been committed or rolled back")

    def base_doc(self, coll: str, doc_id: str) -> dict | None:
        key = (coll, doc_id)
        if key not in self.base:
            from docstore.remote.collection import RemoteCollection

            self.base[key] = RemoteCollection(self.conn, coll).revision(doc_id, self.snapshot)
        return self.base[key][0]

    def current(self, coll: str, doc_id: str) -> dict | None:
        key = (coll, doc_id)
        if key in self.pending:
            return self.pending[key]
        return self.base_doc(coll, doc_id)

    def known(self, coll: str, doc_id: str) -> dict | None:
        """What is known of the document without asking the server (the commit refuses an
        insert of an id the server holds)."""
        key = (coll, doc_id)
        return self.pending.get(key) if key in self.pending else self.base.get(key, (None, None))[0]


class RemoteTransaction(TransactionBase):
    """A multi-document, multi-collection optimistic transaction on a remote database."""

    def __init__(
        self, conn: Connection, at_tx: int | None = None, idempotency_key: str | None = None,
        tx_meta: str | None = None,
    ) -> None:
        self._conn = conn
        self._tx_meta = tx_meta
        self.idempotency_key = None if idempotency_key is None else requests.check_key(idempotency_key)
        """Committed once however often sent (a new key for each commit otherwise): docs/errors.md."""
        now = conn.current_state().tx_id
        if at_tx is not None and (type(at_tx) is not int or not 0 <= at_tx <= now):
            raise QueryError(f"transaction {at_tx!r} does not exist (the ledger is at {now})")
        self.snapshot: int = now if at_tx is None else at_tx
        """The ledger transaction this transaction reads as of: its start, or ``at_tx``."""
        self.tx_id: int | None = None
        """The committed ledger transaction (None before commit, or if nothing was written)."""
        self.staged = RemoteStaged(conn, self.snapshot)
        """The transaction's reads and buffered writes (internal)."""

    def __repr__(self) -> str:
        return f"<RemoteTransaction at snapshot {self.snapshot} on {self._conn.target!r}>"

    def collection(self, name: str) -> RemoteTxCollection:
        """A collection in this transaction (CollectionNotFoundError if there is none)."""
        self.staged.check_active()
        self._conn.check_collection(name)
        return RemoteTxCollection(self.staged, name)

    @property
    def done(self) -> bool:
        """Whether the transaction was committed or rolled back."""
        return self.staged.done

    # -------------------------------------------------------------- commit
    def commit(self) -> int | None:
        """Send the reads and writes in one call; returns the ledger transaction id (None if
        nothing was written). ConflictError if anything read changed since the snapshot."""
        staged = self.staged
        staged.check_active()
        staged.done = True
        writes = []
        for (coll, doc_id), doc in staged.pending.items():
            existed = staged.base.get((coll, doc_id), (None, None))[1] is not None
            if doc is not None:
                if existed:
                    writes.append(pb.Write(kind=pb.Write.REPLACE, collection=coll, id=doc_id, document=codec.dumps_doc(doc)))
                else:
                    writes.append(pb.Write(kind=pb.Write.INSERT, collection=coll, document=codec.dumps_doc(doc)))
            elif existed:
                writes.append(pb.Write(kind=pb.Write.DELETE, collection=coll, id=doc_id))
        if not writes:
            return None
        reads = []
        for (coll, doc_id), (_doc, rev) in staged.base.items():
            r = pb.Read(collection=coll, id=doc_id)
            if rev is not None:
                r.revision = rev
            reads.append(r)
        reads += [pb.Read(collection=c, whole_collection=True) for c in sorted(staged.scans)]
        first = pb.CommitRequest(reads=reads)
        if self.snapshot is not None:
            first.snapshot = self.snapshot
        limit = max(1, self._conn.max_message_bytes // 2)
        per = self._conn.batch_size

        def messages() -> Iterator[pb.CommitRequest]:
            msg, size = first, first.ByteSize()
            for w in writes:
                n = w.ByteSize()
                if msg.writes and (len(msg.writes) >= per or size + n > limit):
                    yield msg
                    msg, size = pb.CommitRequest(), 0
                msg.writes.append(w)
                size += n
            yield msg

        reply = self._conn.call_commit(messages, self.idempotency_key, self._tx_meta)
        self.tx_id = reply.tx_id if reply.HasField("tx_id") else None
        return self.tx_id

    def rollback(self) -> None:
        """Discard the buffered writes."""
        self.staged.done = True
        self.staged.pending.clear()


class RemoteTxCollection(StagingCollection):
    """A collection as seen from inside a remote transaction (same methods as a Collection's
    writes and reads)."""

    def __init__(self, staged: RemoteStaged, name: str) -> None:
        self._staged = staged
        self.name = name

    def __repr__(self) -> str:
        return f"<RemoteTxCollection {self.name!r} in transaction at snapshot {self._staged.snapshot}>"

    def _check_active(self) -> None:
        self._staged.check_active()

    def _current(self, doc_id: str) -> dict | None:
        return self._staged.current(self.name, doc_id)

    def _known(self, doc_id: str) -> dict | None:
        return self._staged.known(self.name, doc_id)

    def _prepare(self, doc: dict) -> dict:
        return _copy(doc)  # JSON only, as embedded; the server checks the schema at commit

    def _stage(self, writes: list[tuple[str, Any]]) -> None:
        for doc_id, doc in writes:
            self._staged.pending[(self.name, doc_id)] = doc

    def _copy(self, doc: dict) -> dict:
        return _copy(doc)

    def _matches(self, filter: dict, many: bool) -> Iterator[dict]:  # noqa: A002
        """The matches, each read again by id: its revision is recorded (the commit replaces
        it, and conflicts if it changed since the snapshot)."""
        for doc in self._find(filter, None, None, 0, None if many else 1):
            current = self._current(doc["_id"])
            if current is not None:
                yield current

    @property
    def _verifying(self) -> bool:
        return self._staged.conn.trust is not None

    def _find(self, filter: dict | None, projection: Any, sort: Any, skip: int, limit: int | None) -> Iterator[dict]:  # noqa: A002
        """The snapshot's matches from the server, merged with this transaction's own writes.
        Records the collection as read: a commit after any change to it conflicts."""
        from docstore.remote.collection import RemoteCollection

        cursor.run_query([], filter, projection, sort, skip, limit)  # validate first, as embedded
        staged = self._staged
        staged.scans.add(self.name)
        remote = RemoteCollection(staged.conn, self.name)
        mine = {i: d for (c, i), d in staged.pending.items() if c == self.name}
        if not mine:
            return iter(list(remote.find(filter, projection, sort, skip, limit, at_tx=staged.snapshot)))
        base = [d for d in remote.find(filter, at_tx=staged.snapshot) if d["_id"] not in mine]
        base += [_copy(d) for d in mine.values() if d is not None]
        return iter(list(cursor.run_query(base, filter, projection, sort, skip, limit)))


__all__ = ["RemoteTransaction", "RemoteTxCollection"]
