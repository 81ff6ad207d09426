"""Multi-document transactions of the embedded database: every write of docstore goes through one.

A transaction reads a snapshot of the ledger plus its own writes, buffers whole documents, and
commits them as one kvcore transaction: for each written document a header entry followed by
its salted property entries, plus unique-index claims. A concurrent commit that changed a
document (or a unique value, or, after a query, the collection) it read or wrote makes the
commit raise :class:`ConflictError` with nothing written.

:class:`Transaction` is what users hold; its reads and buffered writes live in a :class:`Staged`
(``tx.staged``), which collections, schema and index changes and one-call commits
(:mod:`docstore.transactions.one_call`) use; :class:`TxCollection` is the shared
:class:`~docstore.transactions.staging.StagingCollection` over it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar, cast

import orjson

import kvcore

from docstore.collections import cursor
from docstore.collections.indexspec import check_parallel_arrays, spec_keys
from docstore.collections.query import compile_filter
from docstore.collections.schema import Schema
from docstore.documents import records
from docstore.documents.flatten import flatten, flatten_raw
from docstore.documents.records import Header
from docstore.engine.engine import Written
from docstore.engine.state import copy_doc
from docstore.errors import (
    ConflictError,
    DocstoreError,
    DocumentNotFoundError,
    DuplicateKeyError,
    InvalidDocumentError,
    ReasonRequiredError,
    VerificationError,
)
from docstore.documents import txmeta
from docstore.transactions import requests
from docstore.transactions.staging import StagingCollection, TransactionBase

if TYPE_CHECKING:
    from docstore.engine.engine import CollectionInfo, Engine

T = TypeVar("T")
OPTIMISTIC_TRIES = 5  # before a single operation takes the commit lock for its last try
SHARED_TRIES = 20
"""Tries under the lock on a ledger other processes write to (PostgreSQL), where the lock does
not keep them out: a single operation that loses this many more raises ConflictError."""

Pending = tuple[dict, list[tuple[bytes, bytes]]] | None
"""A buffered write: (document, its property entries for the next revision), or None (delete)."""


class Staged:
    """A transaction's snapshot reads and buffered writes (internal: used by the collections
    of this package, schema and index changes, and one-call commits)."""

    def __init__(self, engine: Engine, at_tx: int | None, tx_meta: bytes | None = None) -> None:
        self.engine = engine
        self.kv = engine.begin(at_tx)
        self.snapshot: int = self.kv.snapshot
        self.tx_meta = tx_meta
        """The transaction's metadata entry (docstore.transactions.txmeta): its entry 0."""
        if tx_meta is not None:
            self.kv.set_many([(txmeta.META_KEY, tx_meta)], blind=True)
        self.docs: dict[tuple[str, str], Pending] = {}
        self._base: dict[tuple[str, str], tuple[Header | None, dict | None]] = {}
        self.metas: dict[str, dict[str, Any]] = {}
        self._metas_read: set[str] = set()
        self._states: dict[str, CollectionInfo] = {}
        """Collections' derived state as first read here (read once a transaction, not once a
        document: a change since conflicts at commit, the definition's key being read)."""
        self.done = False
        self.owns_docs = False
        """True when no caller can change a written dict before commit (single operations)."""

    def check_active(self) -> None:
        if self.done:
            raise DocstoreError("the transaction has already been committed or rolled back")

    # ------------------------------------------------------------------ reads
    def meta(self, name: str) -> dict[str, Any]:
        """The collection's definition in this transaction (recorded as read, once, so that a
        concurrent schema or index change conflicts); CollectionNotFoundError if none."""
        if name in self.metas:
            return self.metas[name]
        self.check_active()
        if name not in self._metas_read:
            self.kv.exists(records.collection_key(name))
            self._metas_read.add(name)
        return self._state(name).meta

    def schema(self, name: str) -> Schema | None:
        if name in self.metas:
            meta = self.metas[name]
            s = meta.get("schema")
            return None if s is None else Schema(s, bool(meta.get("schema_formats")))
        return self._state(name).schema

    def _state(self, name: str) -> CollectionInfo:
        found = self._states.get(name)
        if found is None:
            found = self._states[name] = self.engine.collection_state(name)
        return found

    def snapshot_doc(self, coll: str, doc_id: str) -> tuple[Header | None, dict | None]:
        """(header, document) of ``doc_id`` as of the snapshot (recorded as read)."""
        key = (coll, doc_id)
        if key not in self._base:
            entry = self.kv.lookup(records.header_key(coll, doc_id))
            found = (None, None) if entry is None else self.engine.revision_of(coll, entry)
            if self.engine.trust is not None:  # a verifying database proves what it reads
                self.prove_doc(coll, doc_id, found[1], None if found[0] is None or found[1] is None else found[0].revision)
            self._base[key] = found
        return self._base[key]

    def current(self, coll: str, doc_id: str) -> dict | None:
        key = (coll, doc_id)
        if key in self.docs:
            pending = self.docs[key]
            return None if pending is None else pending[0]
        return self.snapshot_doc(coll, doc_id)[1]

    def read_collection(self, coll: str) -> Iterable[kvcore.Entry]:
        """Every document header of ``coll`` as of the snapshot, the collection recorded as read
        (a concurrent insert that would match a query is a conflict, not a phantom)."""
        return self.kv.scan(records.header_prefix(coll))

    def iter_docs(self, coll: str, predicate: Callable[[dict], bool] | None = None) -> Iterator[dict]:
        """Every live document of ``coll`` in this transaction's view (with ``predicate``,
        those matching it; on a verifying database each document of the snapshot is proven
        before it is yielded)."""
        engine = self.engine
        kv_view = self.read_collection(coll)
        mine = {i: p for (c, i), p in self.docs.items() if c == coll}
        items = engine.current_items(coll, self.snapshot)  # the derived state, if it is at the snapshot
        base: Iterator[tuple[str, dict]] = items if items is not None else engine.documents_of(coll, kv_view)
        for doc_id, doc in base:
            if doc_id in mine or (predicate is not None and not predicate(doc)):
                continue
            if engine.trust is not None:
                self.prove_doc(coll, doc_id, doc)
            yield doc
        for p in mine.values():
            if p is not None and (predicate is None or predicate(p[0])):
                yield copy_doc(p[0])

    def prove_doc(self, coll: str, doc_id: str, doc: dict | None, revision: int | None = None) -> None:
        """On a verifying database: VerificationError unless ``doc`` (None: none or deleted) is
        what the ledger proves for ``doc_id`` as of the snapshot."""
        from docstore.proofs import reader

        try:
            proven, rev = reader.revision(self.engine, coll, doc_id, self.snapshot)
        except DocumentNotFoundError:
            proven, rev = None, None
        if (proven is None or doc is None) and proven is not doc or (
            proven is not None and doc is not None
            and (flatten(proven) != flatten(doc) or (revision is not None and rev != revision))
        ):
            raise VerificationError(
                f"document {doc_id!r} in {coll!r}: what the database served differs from what the "
                "ledger proves"
            )

    # ----------------------------------------------------------------- writes
    def next_revision(self, coll: str, doc_id: str) -> int:
        header = self.snapshot_doc(coll, doc_id)[0]
        return header.revision + 1 if header is not None else 1

    def prepare(self, coll: str, doc: dict) -> tuple[dict, list[tuple[bytes, bytes]]]:
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
        schema = self.schema(coll)
        if schema is not None:
            schema.check(doc, f"document {doc_id!r}")
        entries = records.property_entries(coll, doc_id, self.next_revision(coll, doc_id), pointers, values)
        # Buffer a private copy: the caller may change its dict before the commit (unless
        # the commit follows at once, in a single operation).
        return (doc if self.owns_docs else copy_doc(doc)), entries

    def _claim_changes(
        self, coll: str, doc_id: str, old: dict | None, new: dict | None, taken: dict[bytes, str]
    ) -> tuple[list[bytes], list[bytes]]:
        """(claims to take, claims to release) to move ``doc_id``'s unique-index claims from
        ``old`` to ``new`` values. Writes nothing: raises DuplicateKeyError if a value is held
        by another document, in the ledger or in ``taken`` (claims of the same call so far,
        which this adds to)."""
        take: list[bytes] = []
        release: list[bytes] = []
        for idx in self.meta(coll).get("indexes", []):
            if new is not None and idx.get("fields"):
                check_parallel_arrays(new, idx, coll)
            if not idx.get("unique"):
                continue
            field = idx["field"]
            old_keys = spec_keys(old, idx) if old is not None else []
            new_keys = spec_keys(new, idx) if new is not None else []
            for k in new_keys:
                if k in old_keys:
                    continue
                ck = records.unique_key(coll, field, k)
                holder = taken.get(ck)
                if holder is None:
                    claim = self.kv.lookup(ck)
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

    def put_many(self, coll: str, writes: list[tuple[str, Pending]]) -> None:
        """Buffer new revisions of documents (None: a deletion), all or none: every unique
        claim is checked before anything is buffered."""
        taken: dict[bytes, str] = {}
        plans = []
        for doc_id, new in writes:
            old = self.current(coll, doc_id)
            plans.append(self._claim_changes(coll, doc_id, old, None if new is None else new[0], taken))
        kv = self.kv
        for (doc_id, new), (take, release) in zip(writes, plans):
            for ck in take:
                kv.set(ck, doc_id.encode())
            for ck in release:
                kv.delete(ck)
            if new is None and self.snapshot_doc(coll, doc_id)[1] is None:
                self.docs.pop((coll, doc_id), None)  # inserted and deleted here: nothing to write
                continue
            self.docs[(coll, doc_id)] = new

    def claim(self, key: bytes, doc_id: str) -> None:
        """Write a unique-index claim (index backfill)."""
        self.kv.set(key, doc_id.encode())

    def release(self, key: bytes) -> None:
        """Release a unique-index claim (an index dropped)."""
        self.kv.delete(key)

    def set_meta(self, name: str, meta: dict[str, Any]) -> None:
        self.check_active()
        self.metas[name] = meta

    # ----------------------------------------------------------------- commit
    def commit(self) -> int | None:
        self.check_active()
        self.done = True
        kv = self.kv
        if self.tx_meta is not None and not self.docs and not self.metas and kv.write_count == 1:  # metadata alone
            kv.rollback()
            return None
        self.check_reasons()
        first = kv.write_count  # definitions are new keys of this transaction: entries first ..
        kv.set_many([(records.collection_key(name), orjson.dumps(meta)) for name, meta in self.metas.items()])
        definitions = {name: first + i for i, name in enumerate(self.metas)}
        written: list[Written] = []
        entries: list[tuple[bytes, bytes]] = []
        add = entries.append
        base = kv.write_count  # the headers and properties below are new keys: they follow in order
        for (coll, doc_id), pending in self.docs.items():
            rev = self.next_revision(coll, doc_id)
            hkey = records.header_key(coll, doc_id)
            old = self.snapshot_doc(coll, doc_id)[1]
            index = base + len(entries)
            if pending is None:
                add((hkey, Header(coll, doc_id, rev, 0, True).encode()))
                written.append(Written(coll, doc_id, None, old, index, rev, 0))
                continue
            doc, props = pending  # built for revision ``rev`` by prepare
            add((hkey, Header(coll, doc_id, rev, len(props), False).encode()))
            entries += props
            written.append(Written(coll, doc_id, doc, old, index, rev, len(props)))
        # One call for all documents, each header followed by its properties. ``blind``: no
        # write-write check is needed for these keys. A header key was read by
        # next_revision (kv.lookup records the read), so the commit still fails if another
        # transaction wrote that document since the snapshot; and property keys carry their
        # revision, so only a transaction writing that revision's header can write them.
        kv.set_many(entries, blind=True)
        return self.engine.commit(kv, self.metas, written, definitions)

    def rollback(self) -> None:
        self.done = True
        self.kv.rollback()

    def check_reasons(self) -> None:
        """ReasonRequiredError (the transaction rolled back) if it changes an existing document
        of a collection that requires a reason, without one."""
        if self.tx_meta is not None and "reason" in txmeta.decode(self.tx_meta):
            return
        strict = {
            c for c in {c for (c, _i) in self.docs}
            if (self.metas[c] if c in self.metas else self.engine.collection_state(c).meta).get("require_reason")
        }
        for coll, doc_id in self.docs:
            if coll in strict and self.snapshot_doc(coll, doc_id)[1] is not None:
                self.kv.rollback()
                raise ReasonRequiredError(
                    f"collection {coll!r} requires a reason for every change of a document: "
                    f"give reason=... (--reason) to change {doc_id!r}"
                )


class Transaction(TransactionBase):
    """``with db.transaction() as tx: tx["trials"].insert({...})`` commits on a clean exit."""

    def __init__(
        self, engine: Engine, at_tx: int | None = None, idempotency_key: str | None = None, tx_meta: bytes | None = None
    ) -> None:
        self.staged = Staged(engine, at_tx, tx_meta)
        """The transaction's reads and buffered writes (internal)."""
        self.idempotency_key = None if idempotency_key is None else requests.check_key(idempotency_key)
        """Committed once: a commit with a key already recorded writes nothing (docs/errors.md)."""
        self.snapshot: int = self.staged.snapshot
        """The ledger transaction this transaction reads as of."""
        self.tx_id: int | None = None
        """The committed ledger transaction (None before commit, or if nothing was written)."""

    def __repr__(self) -> str:
        return f"<Transaction at snapshot {self.snapshot}>"

    def collection(self, name: str) -> TxCollection:
        """A collection in this transaction (CollectionNotFoundError if there is none)."""
        self.staged.meta(name)
        return TxCollection(self.staged, name)

    @property
    def done(self) -> bool:
        """Whether the transaction was committed or rolled back."""
        return self.staged.done

    def already_committed(self) -> int | None:
        """With an idempotency key: the transaction that committed a write with that key as of
        this one's snapshot (then this one writes nothing: check before replaying writes that
        would fail now, such as inserts of the same ids), else None."""
        key = self.idempotency_key
        if key is None:
            return None
        self.staged.check_active()
        prior = requests.lookup(self.staged, key)
        return None if prior is None else requests.repeat(self.staged.engine, prior, key, "transaction", "")

    def committed_meanwhile(self) -> int | None:
        """With an idempotency key, after this transaction failed: the transaction another
        attempt with the same key committed (in this process or another), else None."""
        if self.idempotency_key is None:
            return None
        found = requests.committed_meanwhile(self.staged.engine, self.idempotency_key)
        if found is None:
            return None
        return requests.repeat(self.staged.engine, found, self.idempotency_key, "transaction", "")

    def commit(self) -> int | None:
        """Commit; returns the ledger transaction id (None if nothing was written). With an
        idempotency key already recorded, nothing is written and the id is that of the
        transaction that recorded it."""
        key = self.idempotency_key
        if key is not None:
            prior = self.already_committed()
            if prior is not None:
                self.staged.rollback()
                self.tx_id = prior
                return prior
            if self.staged.docs or self.staged.metas:
                requests.record(self.staged, key, "transaction", "", None)
            try:
                self.tx_id = self.staged.commit()
            except ConflictError:  # another attempt of this transaction, committed meanwhile?
                meanwhile = requests.committed_meanwhile(self.staged.engine, key)
                if meanwhile is None:
                    raise
                self.tx_id = requests.repeat(self.staged.engine, meanwhile, key, "transaction", "")
            return self.tx_id
        self.tx_id = self.staged.commit()
        return self.tx_id

    def rollback(self) -> None:
        """Discard the buffered writes."""
        self.staged.rollback()


class TxCollection(StagingCollection):
    """A collection as seen from inside an embedded transaction (same methods as a Collection's
    writes and reads)."""

    def __init__(self, staged: Staged, name: str) -> None:
        self._staged = staged
        self.name = name

    def __repr__(self) -> str:
        return f"<TxCollection {self.name!r} in transaction at snapshot {self._staged.snapshot}>"

    def _check_active(self) -> None:
        self._staged.check_active()

    def _current(self, doc_id: str) -> dict | None:
        return self._staged.current(self.name, doc_id)

    def _known(self, doc_id: str) -> dict | None:
        return self._staged.current(self.name, doc_id)

    def _prepare(self, doc: dict) -> Pending:
        return self._staged.prepare(self.name, doc)

    def _stage(self, writes: list[tuple[str, Any]]) -> None:
        self._staged.put_many(self.name, writes)

    def _find(self, filter: dict | None, projection: Any, sort: Any, skip: int, limit: int | None) -> Iterator[dict]:  # noqa: A002
        predicate = compile_filter(filter)
        it = cursor.run_query(
            self._staged.iter_docs(self.name, predicate), filter, projection, sort, skip, limit, predicate=predicate
        )
        return iter(list(it))

    def _copy(self, doc: dict) -> dict:
        return copy_doc(doc)

    def _matches(self, filter: dict, many: bool) -> Iterator[dict]:  # noqa: A002
        return self._staged.iter_docs(self.name, compile_filter(filter))  # streamed: not held

    def _cost(self, prepared: Pending) -> tuple[int, int]:
        assert prepared is not None, "a prepared write is a document"
        props = prepared[1]
        return 1 + len(props), sum(len(k) + len(v) for k, v in props)

    @property
    def _verifying(self) -> bool:
        return self._staged.engine.trust is not None


def run(
    engine: Engine, fn: Callable[[Transaction], T], request: tuple[str, str, str] | None = None,
    tx_meta: bytes | None = None,
) -> T:
    """Run ``fn`` in a fresh transaction and commit it, retrying on conflicts.

    The first attempts are optimistic. If they keep losing to concurrent commits (a hot
    document), the last attempt runs with the commit lock held from its snapshot to its
    commit: on a directory, this process is the ledger's only writer and every commit takes
    that lock, so it cannot conflict, and single operations never fail for contention alone.
    On a ledger other processes write to (PostgreSQL) the lock cannot keep them out: up to
    SHARED_TRIES more attempts are made under it, each after taking their commits in.
    ``request`` (idempotency key, kind of write, collection): the write is recorded under the
    key, and one already recorded (before, or by an attempt that made this one fail) is
    returned instead of written again (docstore.transactions.requests). ``tx_meta``: the
    transaction's metadata entry (docstore.transactions.txmeta).
    """
    engine.check_open()
    tries = OPTIMISTIC_TRIES + 1 + (SHARED_TRIES if engine.follows else 0)
    for attempt in range(tries):
        exclusive = attempt >= OPTIMISTIC_TRIES
        if exclusive:
            engine.lock.acquire()
            if engine.follows:  # other processes write too: take theirs in before the snapshot
                engine.refresh()
        try:
            tx = Transaction(engine, tx_meta=tx_meta)
            tx.staged.owns_docs = True  # fn's documents are committed before the caller sees them
            try:
                if request is not None:  # (idempotency key, kind of write, collection)
                    prior = requests.lookup(tx.staged, request[0])
                    if prior is not None:  # committed before: nothing to write
                        tx.rollback()
                        return cast(T, requests.repeat(engine, prior, *request))
                try:
                    result = fn(tx)
                    # a write by filter that writes nothing records no key (and commits nothing)
                    if request is not None and (tx.staged.docs or request[1] not in requests.BY_FILTER):
                        requests.record(tx.staged, request[0], request[1], request[2], result)
                    tx.commit()
                except DocstoreError:
                    if request is None:
                        raise
                    if not tx.done:
                        tx.rollback()
                    # another attempt of this very write, committed meanwhile (by this process
                    # or another), explains a conflict or an error such as DuplicateIdError
                    prior = requests.committed_meanwhile(engine, request[0])
                    if prior is None:
                        raise
                    return cast(T, requests.repeat(engine, prior, *request))
                return result
            except ConflictError:
                if attempt == tries - 1:
                    raise
            except BaseException:
                if not tx.done:
                    tx.rollback()
                raise
        finally:
            if exclusive:
                engine.lock.release()
    raise AssertionError("unreachable")
