"""Optimistic transactions over the network.

``with db.transaction() as tx:`` reads as of one snapshot (the server's state when the
transaction begins, or ``at_tx``), serving reads of documents it wrote from its own buffer. It records every document it
read with the revision it saw (or that there was none), and every collection it queried. On a
clean exit it sends reads and writes in ONE call (``Commit``); the server replays them with
:func:`docstore.batch.commit_batch`, which raises ConflictError, writing nothing, if anything
read or written changed after the snapshot. Nothing is sent for a transaction that wrote
nothing. Writes are validated by the server at commit (schema, unique indexes, an ``_id``
already taken): those errors are raised by ``commit()``, i.e. when the ``with`` block ends.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from docstore.collections import cursor
from docstore.collections.query import compile_filter, distinct_values
from docstore.collections.update import apply_update
from docstore.errors import (
    DocstoreError,
    DocumentNotFoundError,
    DuplicateIdError,
    InvalidDocumentError,
    QueryError,
)
from docstore.ids import check_id, new_id
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb

if TYPE_CHECKING:
    from docstore.remote.client import RemoteDatabase


def _copy(doc: dict) -> dict:
    return codec.loads(codec.dumps_doc(doc))


class RemoteTransaction:
    """A multi-document, multi-collection optimistic transaction on a remote database."""

    def __init__(self, db: RemoteDatabase, at_tx: int | None = None) -> None:
        self._db = db
        now = db.state().tx_id
        if at_tx is not None and (type(at_tx) is not int or not 0 <= at_tx <= now):
            raise QueryError(f"transaction {at_tx!r} does not exist (the ledger is at {now})")
        self.snapshot: int = now if at_tx is None else at_tx
        """The ledger transaction this transaction reads as of: its start, or ``at_tx``."""
        self.tx_id: int | None = None
        """The committed ledger transaction (None before commit, or if nothing was written)."""
        self._base: dict[tuple[str, str], tuple[dict | None, int | None]] = {}  # reads: (doc, revision)
        self._scans: set[str] = set()
        self._pending: dict[tuple[str, str], dict | None] = {}  # in first-write order
        self._done = False

    def __enter__(self) -> RemoteTransaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def __repr__(self) -> str:
        return f"<RemoteTransaction at snapshot {self.snapshot} on {self._db.target!r}>"

    def __getitem__(self, name: str) -> RemoteTxCollection:
        return self.collection(name)

    def collection(self, name: str) -> RemoteTxCollection:
        self._active()
        self._db._check_collection(name)
        return RemoteTxCollection(self, name)

    def _active(self) -> None:
        if self._done:
            raise DocstoreError("the transaction has already been committed or rolled back")

    def _snap(self) -> int:
        return self.snapshot

    # --------------------------------------------------------------- reads
    def _base_doc(self, coll: str, doc_id: str) -> dict | None:
        key = (coll, doc_id)
        if key not in self._base:
            from docstore.remote.collection import RemoteCollection

            self._base[key] = RemoteCollection(self._db, coll)._read(doc_id, self._snap())
        return self._base[key][0]

    def _current(self, coll: str, doc_id: str) -> dict | None:
        key = (coll, doc_id)
        if key in self._pending:
            return self._pending[key]
        return self._base_doc(coll, doc_id)

    # -------------------------------------------------------------- commit
    def commit(self) -> int | None:
        """Send the reads and writes in one call; returns the ledger transaction id (None if
        nothing was written). ConflictError if anything read changed since the snapshot."""
        self._active()
        self._done = True
        writes = []
        for (coll, doc_id), doc in self._pending.items():
            existed = self._base.get((coll, doc_id), (None, None))[1] is not None
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
        for (coll, doc_id), (_doc, rev) in self._base.items():
            r = pb.Read(collection=coll, id=doc_id)
            if rev is not None:
                r.revision = rev
            reads.append(r)
        reads += [pb.Read(collection=c, whole_collection=True) for c in sorted(self._scans)]
        first = pb.CommitRequest(reads=reads)
        if self.snapshot is not None:
            first.snapshot = self.snapshot
        limit = max(1, self._db.max_message_bytes // 2)
        per = self._db.batch_size

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

        r = self._db._call(self._db._stub.Commit, messages())
        self.tx_id = r.tx_id if r.HasField("tx_id") else None
        return self.tx_id

    def rollback(self) -> None:
        self._done = True
        self._pending.clear()


class RemoteTxCollection:
    """A collection as seen from inside a remote transaction (same methods as a Collection)."""

    def __init__(self, tx: RemoteTransaction, name: str) -> None:
        self._tx = tx
        self.name = name

    def __repr__(self) -> str:
        return f"<RemoteTxCollection {self.name!r} in transaction at snapshot {self._tx.snapshot}>"

    # -------------------------------------------------------------- writes
    def insert(self, doc: dict) -> str:
        """Insert one document; returns its ``_id``."""
        return self.insert_many([doc])[0]

    def insert_many(self, docs: Iterable[dict]) -> list[str]:
        """Insert documents (all or none, at commit); returns their ids in order."""
        tx = self._tx
        tx._active()
        if isinstance(docs, (dict, str, bytes)) or not isinstance(docs, Iterable):
            raise InvalidDocumentError(f"insert_many takes a list of documents, got {type(docs).__name__}")
        prepared = []
        seen = set()
        for doc in docs:
            if not isinstance(doc, dict):
                raise InvalidDocumentError(f"a document must be a JSON object, got {type(doc).__name__}")
            if "_id" in doc:
                check_id(doc["_id"])
                full = _copy(doc)
            else:
                full = _copy({"_id": new_id(), **doc})
            doc_id = full["_id"]
            key = (self.name, doc_id)
            known = tx._pending.get(key) if key in tx._pending else tx._base.get(key, (None, None))[0]
            if doc_id in seen or known is not None:
                raise DuplicateIdError(f"a document with _id {doc_id!r} already exists in {self.name!r}")
            seen.add(doc_id)
            prepared.append(full)
        for full in prepared:
            tx._pending[(self.name, full["_id"])] = full
        return [d["_id"] for d in prepared]

    def _existing(self, doc_id: Any) -> dict:
        check_id(doc_id)
        self._tx._active()
        cur = self._tx._current(self.name, doc_id)
        if cur is None:
            raise DocumentNotFoundError(f"no document {doc_id!r} in {self.name!r}")
        return cur

    def replace(self, doc_id: str, doc: dict) -> dict:
        """Replace a whole document (its ``_id`` stays); returns the new document."""
        self._existing(doc_id)
        if not isinstance(doc, dict):
            raise InvalidDocumentError(f"a document must be a JSON object, got {type(doc).__name__}")
        if "_id" in doc and doc["_id"] != doc_id:
            raise InvalidDocumentError("replace() cannot change _id", "/_id")
        new = _copy({"_id": doc_id, **{k: v for k, v in doc.items() if k != "_id"}})
        self._tx._pending[(self.name, doc_id)] = new
        return _copy(new)

    def update(self, doc_id: str, changes: dict) -> dict:
        """Apply ``$set``/``$unset``/``$inc``/``$push``; returns the new document."""
        cur = self._existing(doc_id)
        new = _copy(apply_update(cur, changes))
        self._tx._pending[(self.name, doc_id)] = new
        return _copy(new)

    def delete(self, doc_id: str) -> None:
        """Delete a document (a tombstone revision at commit; its history stays)."""
        self._existing(doc_id)
        self._tx._pending[(self.name, doc_id)] = None

    # --------------------------------------------------------------- reads
    def get(self, doc_id: str) -> dict:
        return _copy(self._existing(doc_id))

    def find(
        self,
        filter: dict | None = None,  # noqa: A002
        projection: Any = None,
        sort: Any = None,
        skip: int = 0,
        limit: int | None = None,
    ) -> Iterator[dict]:
        """Matching documents in this transaction's view (the snapshot plus its own writes).

        Records the collection as read: a commit after any change to it conflicts."""
        tx = self._tx
        tx._active()
        cursor.run_query([], filter, projection, sort, skip, limit)  # validate first, as embedded
        snap = tx._snap()
        tx._scans.add(self.name)
        from docstore.remote.collection import RemoteCollection

        remote = RemoteCollection(tx._db, self.name)
        mine = {i: d for (c, i), d in tx._pending.items() if c == self.name}
        if not mine:
            return iter(list(remote.find(filter, projection, sort, skip, limit, at_tx=snap)))
        base = [d for d in remote.find(filter, at_tx=snap) if d["_id"] not in mine]
        base += [_copy(d) for d in mine.values() if d is not None]
        return iter(list(cursor.run_query(base, filter, projection, sort, skip, limit)))

    def find_one(self, filter: dict | None = None, projection: Any = None, sort: Any = None) -> dict | None:  # noqa: A002
        return next(self.find(filter, projection, sort, 0, 1), None)

    def count(self, filter: dict | None = None) -> int:  # noqa: A002
        compile_filter(filter)
        return sum(1 for _ in self.find(filter))

    def distinct(self, field: str, filter: dict | None = None) -> list:  # noqa: A002
        return distinct_values(self.find(filter), field)


__all__ = ["RemoteTransaction", "RemoteTxCollection"]
