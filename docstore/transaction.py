"""Multi-document transactions: every write of docstore goes through one.

A transaction reads a snapshot of the ledger plus its own writes, buffers whole documents, and
commits them as one kvcore transaction: for each written document a header entry followed by
its salted property entries, plus unique-index claims. A concurrent commit that changed a
document (or a unique value, or, after a query, the collection) it read or wrote makes the
commit raise :class:`ConflictError` with nothing written.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import orjson

import kvcore

from docstore import records
from docstore.collections import cursor
from docstore.collections.indexes import keys_for
from docstore.collections.update import apply_update
from docstore.errors import (
    CollectionNotFoundError,
    ConflictError,
    DocstoreError,
    DocumentNotFoundError,
    DuplicateIdError,
    DuplicateKeyError,
    InvalidDocumentError,
    StorageError,
    TransactionTooLargeError,
)
from docstore.flatten import flatten_raw
from docstore.ids import check_id, new_id
from docstore.records import Header
from docstore.state import copy_doc, decode_doc, doc_from_entries

if TYPE_CHECKING:
    from docstore.database import Database

_Pending = tuple[dict, list[tuple[bytes, bytes]]] | None
"""A buffered write: (document, its property entries for the next revision), or None (delete)."""


class Transaction:
    """``with db.transaction() as tx: tx["trials"].insert({...})`` commits on a clean exit."""

    def __init__(self, db: Database, at_tx: int | None = None) -> None:
        self._db = db
        with db._lock:  # the snapshot then matches the derived state (commits apply under it)
            try:
                self._kv = db._ledger.transaction(at_tx)
            except kvcore.TxNotFoundError as e:
                from docstore.errors import QueryError

                raise QueryError(str(e)) from None
        self.snapshot: int = self._kv.snapshot
        """The ledger transaction this transaction reads as of."""
        self._docs: dict[tuple[str, str], _Pending] = {}
        self._base: dict[tuple[str, str], tuple[Header | None, dict | None]] = {}
        self._metas: dict[str, dict[str, Any]] = {}
        self._metas_read: set[str] = set()
        self._done = False
        self._owns_docs = False  # True when no caller can change a written dict before commit
        self.tx_id: int | None = None
        """The committed ledger transaction (None before commit, or if nothing was written)."""

    def __enter__(self) -> Transaction:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def __getitem__(self, name: str) -> TxCollection:
        return self.collection(name)

    def collection(self, name: str) -> TxCollection:
        self._meta(name)
        return TxCollection(self, name)

    def _active(self) -> None:
        if self._done:
            raise DocstoreError("the transaction has already been committed or rolled back")

    # --------------------------------------------------------------- reads
    def _meta(self, name: str) -> dict[str, Any]:
        if name in self._metas:
            return self._metas[name]
        # Record the definition as read (once), so a concurrent schema or index change conflicts.
        self._active()
        if name not in self._metas_read:
            self._kv.exists(records.collection_key(name))
            self._metas_read.add(name)
        coll = self._db._state.collections.get(name)
        if coll is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist")
        return coll.meta

    def _schema(self, name: str) -> Any:
        if name in self._metas:
            from docstore.collections.schema import Schema

            s = self._metas[name].get("schema")
            return None if s is None else Schema(s)
        return self._db._state.collections[name].schema

    def _snapshot_doc(self, coll: str, doc_id: str) -> tuple[Header | None, dict | None]:
        key = (coll, doc_id)
        if key not in self._base:
            entry = self._kv.lookup(records.header_key(coll, doc_id))
            if entry is None:
                self._base[key] = (None, None)
            else:
                header = Header.decode(entry.value)
                doc = None
                if not header.deleted:
                    props = self._db._ledger.entries(entry.tx_id, entry.index + 1, header.n)
                    doc = doc_from_entries(header, props, records.property_prefix(coll, doc_id))
                self._base[key] = (header, doc)
        return self._base[key]

    def _current(self, coll: str, doc_id: str) -> dict | None:
        key = (coll, doc_id)
        if key in self._docs:
            pending = self._docs[key]
            return None if pending is None else pending[0]
        return self._snapshot_doc(coll, doc_id)[1]

    def _iter_docs(self, coll: str) -> Iterator[dict]:
        """Every live document of ``coll`` in this transaction's view."""
        db = self._db
        prefix = records.header_prefix(coll)
        kv_view = self._kv.scan(prefix)  # records the collection as read (phantom protection)
        mine = {i: p for (c, i), p in self._docs.items() if c == coll}
        state = db._state.collections.get(coll)
        with db._lock:  # check and copy together: a commit in between would change the cache
            cached = list(state.docs.items()) if state is not None and db._state.tx_id == self.snapshot else None
        if cached is not None:
            base: Iterable[tuple[str, dict]] = ((i, decode_doc(raw)) for i, raw in cached)
        else:
            base = db._docs_at(coll, kv_view)
        for doc_id, doc in base:
            if doc_id not in mine:
                yield doc
        for p in mine.values():
            if p is not None:
                yield copy_doc(p[0])

    # -------------------------------------------------------------- writes
    def _next_revision(self, coll: str, doc_id: str) -> int:
        header = self._snapshot_doc(coll, doc_id)[0]
        return header.revision + 1 if header is not None else 1

    def _prepare(self, coll: str, doc: dict) -> tuple[dict, list[tuple[bytes, bytes]]]:
        """Validate a document fully (JSON, size, key lengths, schema) and build the property
        entries of its next revision, before buffering it."""
        doc_id = doc["_id"]
        pointers, values = flatten_raw(doc)
        limit = kvcore.MAX_KEY_BYTES - len(records.property_prefix(coll, doc_id)) - 8
        if pointers and max(map(len, pointers)) > limit:
            pointer = next(p for p in pointers if len(p) > limit)
            raise InvalidDocumentError(
                f"property path is too long ({len(pointer)} bytes; at most {limit} "
                "for this collection and id)",
                pointer.decode(),
            )
        schema = self._schema(coll)
        if schema is not None:
            schema.check(doc, f"document {doc_id!r}")
        entries = records.property_entries(coll, doc_id, self._next_revision(coll, doc_id), pointers, values)
        # Buffer a private copy: the caller may change its dict before the commit (unless
        # the commit follows at once, in a single operation).
        return (doc if self._owns_docs else copy_doc(doc)), entries

    def _claim_changes(
        self, coll: str, doc_id: str, old: dict | None, new: dict | None, taken: dict[bytes, str]
    ) -> tuple[list[bytes], list[bytes]]:
        """(claims to take, claims to release) to move ``doc_id``'s unique-index claims from
        ``old`` to ``new`` values. Writes nothing: raises DuplicateKeyError if a value is held
        by another document, in the ledger or in ``taken`` (claims of the same call so far,
        which this adds to)."""
        take: list[bytes] = []
        release: list[bytes] = []
        for idx in self._meta(coll).get("indexes", []):
            if not idx.get("unique"):
                continue
            field = idx["field"]
            old_keys = keys_for(old, field) if old is not None else []
            new_keys = keys_for(new, field) if new is not None else []
            for k in new_keys:
                if k in old_keys:
                    continue
                ck = records.unique_key(coll, field, k)
                holder = taken.get(ck)
                if holder is None:
                    claim = self._kv.lookup(ck)
                    holder = None if claim is None else claim.value.decode()
                if holder is not None:
                    raise DuplicateKeyError(
                        f"unique index {coll}.{field}: document {holder!r} already has this value "
                        f"(writing document {doc_id!r})"
                    )
                taken[ck] = doc_id
                take.append(ck)
            release += [records.unique_key(coll, field, k) for k in old_keys if k not in new_keys]
        return take, release

    def _put(self, coll: str, doc_id: str, new: _Pending) -> None:
        self._put_many(coll, [(doc_id, new)])

    def _put_many(self, coll: str, writes: list[tuple[str, _Pending]]) -> None:
        """Buffer new revisions of documents (None: a deletion), all or none: every unique
        claim is checked before anything is buffered."""
        taken: dict[bytes, str] = {}
        plans = []
        for doc_id, new in writes:
            old = self._current(coll, doc_id)
            plans.append(self._claim_changes(coll, doc_id, old, None if new is None else new[0], taken))
        kv = self._kv
        for (doc_id, new), (take, release) in zip(writes, plans):
            for ck in take:
                kv.set(ck, doc_id.encode())
            for ck in release:
                kv.delete(ck)
            if new is None and self._snapshot_doc(coll, doc_id)[1] is None:
                self._docs.pop((coll, doc_id), None)  # inserted and deleted here: nothing to write
                continue
            self._docs[(coll, doc_id)] = new

    def _set_meta(self, name: str, meta: dict[str, Any]) -> None:
        self._active()
        self._metas[name] = meta

    # -------------------------------------------------------------- commit
    def commit(self) -> int | None:
        """Commit; returns the ledger transaction id (None if nothing was written)."""
        self._active()
        self._done = True
        kv = self._kv
        kv.set_many([(records.collection_key(name), orjson.dumps(meta)) for name, meta in self._metas.items()])
        written: list[tuple[str, str, dict | None]] = []
        entries: list[tuple[bytes, bytes]] = []
        add = entries.append
        for (coll, doc_id), pending in self._docs.items():
            rev = self._next_revision(coll, doc_id)
            hkey = records.header_key(coll, doc_id)
            if pending is None:
                add((hkey, Header(coll, doc_id, rev, 0, True).encode()))
                written.append((coll, doc_id, None))
                continue
            doc, props = pending  # built for revision ``rev`` by _prepare
            add((hkey, Header(coll, doc_id, rev, len(props), False).encode()))
            entries += props
            written.append((coll, doc_id, doc))
        # One call for all documents, each header followed by its properties. ``blind``: no
        # write-write check is needed for these keys. A header key was read by
        # _next_revision (kv.lookup records the read), so the commit still fails if another
        # transaction wrote that document since the snapshot; and property keys carry their
        # revision, so only a transaction writing that revision's header can write them.
        kv.set_many(entries, blind=True)
        db = self._db
        with db._lock:
            try:
                self.tx_id = kv.commit()
            except kvcore.ConflictError as e:
                raise ConflictError(
                    f"{records.describe_key(e.key)} was changed by another transaction since this "
                    f"one's snapshot ({self.snapshot}); nothing was written — retry the transaction"
                    if e.key is not None
                    else str(e)
                ) from None
            except kvcore.LimitError as e:
                raise TransactionTooLargeError(f"the transaction is too large: {e}") from None
            except kvcore.StorageError as e:  # rolled back by kvcore: nothing is visible
                raise StorageError(str(e)) from e
            if self.tx_id is not None:
                db._apply(self.tx_id, self._metas, written)
        return self.tx_id

    def rollback(self) -> None:
        self._done = True
        self._kv.rollback()


class TxCollection:
    """A collection as seen from inside a transaction (same methods as a Collection)."""

    def __init__(self, tx: Transaction, name: str) -> None:
        self._tx = tx
        self.name = name

    def __repr__(self) -> str:
        return f"<TxCollection {self.name!r} in transaction at snapshot {self._tx.snapshot}>"

    # writes
    def _with_id(self, doc: Any) -> dict:
        if not isinstance(doc, dict):
            raise InvalidDocumentError(f"a document must be a JSON object, got {type(doc).__name__}")
        if "_id" in doc:
            check_id(doc["_id"])
            return dict(doc)
        return {"_id": new_id(), **doc}

    def insert(self, doc: dict) -> str:
        """Insert one document; returns its ``_id``."""
        return self.insert_many([doc])[0]

    def insert_many(self, docs: Iterable[dict]) -> list[str]:
        """Insert documents (all or none); returns their ids in order."""
        tx = self._tx
        tx._active()
        if isinstance(docs, (dict, str, bytes)) or not isinstance(docs, Iterable):
            raise InvalidDocumentError(f"insert_many takes a list of documents, got {type(docs).__name__}")
        prepared = []
        seen = set()
        for doc in docs:
            full = self._with_id(doc)
            doc_id = full["_id"]
            if doc_id in seen or tx._current(self.name, doc_id) is not None:
                raise DuplicateIdError(f"a document with _id {doc_id!r} already exists in {self.name!r}")
            seen.add(doc_id)
            prepared.append(tx._prepare(self.name, full))
        tx._put_many(self.name, [(doc["_id"], (doc, pairs)) for doc, pairs in prepared])
        return [doc["_id"] for doc, _ in prepared]

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
        new = {"_id": doc_id, **{k: v for k, v in doc.items() if k != "_id"}}
        self._tx._put(self.name, doc_id, self._tx._prepare(self.name, new))
        return copy_doc(new)

    def update(self, doc_id: str, changes: dict) -> dict:
        """Apply ``$set``/``$unset``/``$inc``/``$push``; returns the new document."""
        cur = self._existing(doc_id)
        new = apply_update(cur, changes)
        self._tx._put(self.name, doc_id, self._tx._prepare(self.name, new))
        return copy_doc(new)

    def delete(self, doc_id: str) -> None:
        """Delete a document (a tombstone revision; its history stays)."""
        self._existing(doc_id)
        self._tx._put(self.name, doc_id, None)

    # reads
    def get(self, doc_id: str) -> dict:
        return copy_doc(self._existing(doc_id))

    def find(
        self,
        filter: dict | None = None,  # noqa: A002
        projection: Any = None,
        sort: Any = None,
        skip: int = 0,
        limit: int | None = None,
    ) -> Iterator[dict]:
        self._tx._active()
        it = cursor.run_query(self._tx._iter_docs(self.name), filter, projection, sort, skip, limit)
        return iter(list(it))

    def find_one(self, filter: dict | None = None, projection: Any = None, sort: Any = None) -> dict | None:  # noqa: A002
        return next(self.find(filter, projection, sort, 0, 1), None)

    def count(self, filter: dict | None = None) -> int:  # noqa: A002
        return sum(1 for _ in self.find(filter))

    def distinct(self, field: str, filter: dict | None = None) -> list:  # noqa: A002
        from docstore.collections.query import distinct_values

        return distinct_values(self.find(filter), field)
