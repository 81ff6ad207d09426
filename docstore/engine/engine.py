"""The engine of an embedded database: the one owner of its ledger, derived state, commit lock,
signing keys and trust tracker.

Everything above it (collections, transactions, proving, the public :class:`Database`) works
through its methods and never reaches into the ledger's or the state's internals. kvcore errors
are translated into docstore errors here, in one place (:func:`translate`), so callers only see
the documented docstore errors. A storage backend other than files plugs in below the ledger;
the derived state lives on disk in an LMDB environment (:mod:`docstore.engine.store`), applied
in step with each commit (:mod:`docstore.engine.derive`); documents are read from the log
through a small bounded cache.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
import shutil
import tempfile
import threading
import time
import warnings
from collections import OrderedDict
from functools import partial
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn

import lmdb

import kvcore

from docstore.collections.indexes import Index
from docstore.collections.schema import Schema
from docstore.documents import records
from docstore.documents.records import Header
from docstore.engine import derive
from docstore.engine.groupcommit import Committer
from docstore.documents import txmeta
from docstore.engine import pgsnapshot
from docstore.engine.signing import Signing
from docstore.engine.state import decode_doc, doc_from_items, encode_doc, erased_ordinals
from docstore.engine.store import REPLACED_CHECK_SECONDS, VERSION, Location, Store
from docstore.errors import (
    CollectionNotFoundError,
    ConflictError,
    CorruptDataError,
    DocstoreError,
    QueryError,
    StorageError,
    TransactionTooLargeError,
    VerificationError,
)
from docstore.proofs import keyfile
from docstore.proofs.trust import TrustTracker
from kvcore.storage.postgres import is_url as is_postgres_url
from kvcore.storage.postgres import redact as redact_url

CACHED_DOCS = 2048
"""Documents kept decoded-ready in memory (encoded), least recently used first."""


@dataclass(frozen=True)
class Written:
    """A document a commit writes: its new revision (None: deleted), the one it replaces (None:
    there was none), and where its header goes in the transaction."""

    collection: str
    id: str
    doc: dict | None
    old: dict | None
    index: int
    revision: int
    n: int


class Items(Iterator[tuple[str, dict]]):
    """(id, document) pairs read from one snapshot of the derived state, which reflects ledger
    transaction ``tx_id`` (a verifying reader proves them as of it)."""

    __slots__ = ("tx_id", "_it")

    def __init__(self, tx_id: int, it: Iterator[tuple[str, dict]]) -> None:
        self.tx_id = tx_id
        self._it = it

    def __next__(self) -> tuple[str, dict]:
        return next(self._it)

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close is not None:
            close()


@dataclass
class CollectionInfo:
    """A collection as the engine's derived state describes it (a snapshot of one moment)."""

    name: str
    meta: dict[str, Any]
    schema: Schema | None
    count: int
    indexes: dict[str, Index]


@contextmanager
def translate(snapshot: int | None = None) -> Iterator[None]:
    """kvcore's errors as docstore's, for the calls in the block (the one place they are
    translated): a missing transaction or a bad argument is a QueryError, a conflict a
    ConflictError naming what changed, a limit TransactionTooLargeError, a storage failure
    StorageError. Errors kvcore lets through docstore (locked, closed, read-only, format,
    corruption) pass unchanged."""
    try:
        yield
    except kvcore.TxNotFoundError as e:
        raise QueryError(str(e)) from None
    except kvcore.LimitError as e:  # an InvalidInputError too: caught first
        raise TransactionTooLargeError(f"the transaction is too large: {e}") from None
    except kvcore.InvalidInputError as e:
        raise QueryError(str(e)) from None
    except kvcore.ConflictError as e:
        if isinstance(e, DocstoreError):
            raise
        at = "" if snapshot is None else f" ({snapshot})"
        raise ConflictError(
            f"{records.describe_key(e.key)} was changed by another transaction since this one's "
            f"snapshot{at}; nothing was written — retry the transaction"
            if e.key is not None
            else str(e)
        ) from None
    except kvcore.StorageError as e:
        if isinstance(e, DocstoreError):
            raise
        raise StorageError(str(e)) from e
    except kvcore.GroupAborted as e:
        raise StorageError(f"{e}; nothing was written") from e


class OwnedLock:
    """A re-entrant lock that knows whether the calling thread holds it."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._held = threading.local()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        got = self._lock.acquire(blocking, timeout)
        if got:
            self._held.depth = getattr(self._held, "depth", 0) + 1
        return got

    def release(self) -> None:
        self._held.depth -= 1
        self._lock.release()

    def owned(self) -> bool:
        return getattr(self._held, "depth", 0) > 0

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


class Engine:
    """An open embedded database's machinery (see the module). Made by :meth:`open`."""

    def __init__(
        self, path: str, ledger: kvcore.Ledger, signing: Signing, store: Store, temp_store: str | None = None,
        state_lock: int | None = None,
    ) -> None:
        self.path = path
        self._state_lock = state_lock  # a writer's hold on its state directory (PostgreSQL)
        self.ledger = ledger
        """The kvcore ledger (read it; only :meth:`commit` writes to it)."""
        self.signing = signing
        self.store = store
        """The derived state on disk: definitions, document locations, indexes."""
        self.lock = OwnedLock()
        """Held to commit, and around a snapshot that must match the derived state."""
        self.follows = ledger.many_writers
        """Whether other processes write to this ledger too (PostgreSQL): refresh() takes them in."""
        self.reflected_tx = 0
        """The transaction the derived state reflects (kept by :meth:`note_reflected`)."""
        self.committer = Committer(self)
        """The commit lock: commits, and reads that must see whole commits, hold it."""
        self.verify_lock = threading.Lock()
        """Serializes the verifying reader's proving and advancing of the trusted state."""
        self.trust: TrustTracker | None = None
        """The trusted state a verifying database checks its reads against (None: not verifying)."""
        self._closed = False
        self._damaged: str | None = None
        self._cache: OrderedDict[tuple[str, str, int, int], bytes | tuple[bytes]] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._generation = store.generation
        self._next_look = 0.0
        self._compacted_seen = 0  # the last erasure the derived state's files were checked against
        self._schemas: dict[str, tuple[bytes, Schema | None]] = {}
        self._temp_store = temp_store
        """The directory of a private derived state (a reader's, when the database has none)."""
        self.url: str | None = None
        """The PostgreSQL ledger's URL (None: a directory)."""

    @classmethod
    def open(
        cls,
        path: str,
        *,
        readonly: bool = False,
        wait: bool | float = False,
        key_file: str | None = None,
        origin: str | None = None,
        progress: Callable[[str, int, int], None] | None = None,
        state_dir: str | None = None,
    ) -> Engine:
        """Open (creating if missing and writable) the database in directory ``path``: its
        ledger, its signing keys, and its derived state (brought up to date from the log's
        tail; rebuilt from the whole log if it is missing, damaged or of another history,
        ``progress(stage, done, total)`` reporting transactions: see :func:`docstore.open`).

        ``path`` may be a ``postgresql://`` URL: the ledger lives in that PostgreSQL database
        (kvcore.PostgresStorage, any number of writer processes, each taking in the others'
        commits before its own and, once notified of them, at a call), the derived state and the signing key in
        the local directory ``state_dir`` (default ``$IMMUDOC_STATE_DIR``, else
        one under ``~/.cache/immudoc`` named after the URL): a cache of the log, built from it
        and caught up with it like a directory database's."""
        Signing.check_origin(origin)  # before anything is created
        url = None
        state_lock = None
        if is_postgres_url(path) and not readonly:  # the ledger in PostgreSQL; the state in a local directory
            url = path
            path, state_lock, key_file = _claim_state_dir(url, state_dir or os.environ.get(STATE_DIR_ENV), key_file)
        elif is_postgres_url(path):
            url, path = path, state_dir or os.environ.get(STATE_DIR_ENV) or default_state_dir(path)
            _prepare_state_dir(path, readonly)
        elif not readonly:
            _prepare_dir(path)
        key_progress = None if progress is None else partial(progress, "key index")
        if url is not None:
            ledger = kvcore.Ledger(
                kvcore.PostgresStorage(
                    url, readonly=readonly, wait=wait,  # any number of writer processes
                    index_dir=None if readonly else os.path.join(path, "index.lmdb"),  # derived, checked at open
                ),
                unindexed_prefixes=(records.PROPERTY_PREFIX,), index_lag=0, progress=key_progress,
            )
        else:
            ledger = kvcore.Ledger.open(
                os.path.join(path, "ledger"), readonly=readonly, wait=wait,
                unindexed_prefixes=(records.PROPERTY_PREFIX,),
                index_lag=0,  # the key index committed with each transaction: readers open in O(1)
                progress=key_progress,
            )
        derived = None if progress is None else partial(progress, "derived state")
        engine = None
        try:
            if url is not None and not readonly:
                _check_shared_key(url, path, key_file, ledger)
            signing = Signing.load(path, key_file, origin, create=not readonly)
            published, why = None, None
            if url is not None and not readonly and not Store.exists(path) and ledger.tx_id > 0:
                published, why = pgsnapshot.fetch(url, path)  # checked against the log below
            store, temp, note = _open_store(path, ledger, readonly)
            if published is not None and note:
                note = f"the derived state published in PostgreSQL (transaction {published.tx_id}) did not match the log; rebuilt it from the log"
            elif why is not None:
                note = f"the derived state published in PostgreSQL could not be taken ({why}); rebuilt it from the log"
            engine = cls(path, ledger, signing, store, temp, state_lock)
            engine.url = url
            state_lock = None
            if not readonly:
                derive.catch_up(store, ledger, engine.read_doc, derived)
                _remove_old_snapshot(path)
                if engine.last_erasure() > store.compacted_through():  # a crash came first
                    engine.after_erasure()
            elif temp is not None:
                derive.catch_up(store, ledger, engine.read_doc, derived)
            engine.note_reflected()
            if note:
                warnings.warn(note, kvcore.RecoveryWarning, stacklevel=3)
        except BaseException:
            if engine is not None:
                engine.release()
            if state_lock is not None:
                os.close(state_lock)
            ledger.close()
            raise
        return engine

    # ------------------------------------------------------------ lifecycle
    @property
    def readonly(self) -> bool:
        return self.ledger.readonly

    @property
    def closed(self) -> bool:
        return self._closed

    def publish_state(self) -> pgsnapshot.Snapshot:
        """Publish this writer's derived state into its PostgreSQL database (docs/scale-out.md,
        "Stateless servers"): a server started without a state directory takes it from there
        and catches up from the log, instead of rebuilding it from the whole log."""
        self.check_open()
        if self.url is None:
            raise StorageError("only a database on PostgreSQL publishes its derived state (a directory holds it)")
        if self.readonly:
            raise kvcore.ReadOnlyError("the database is open read-only: a writer publishes its derived state")
        return pgsnapshot.publish(self.url, self.store)

    def check_open(self) -> None:
        """ClosedError once closed; CorruptDataError once an audit failed (until reopened). On
        a ledger other processes write to, also takes in what they committed, as far as their
        notifications have told (docs/scale-out.md), unless this thread holds the lock (a
        commit, or a snapshot being read)."""
        if self._closed:
            raise kvcore.ClosedError("the database is closed")
        if self._damaged is not None:
            raise CorruptDataError(
                f"the database refuses reads and writes: its audit failed ({self._damaged}); "
                "reopen it after repairing it"
            )
        if self.follows and not self.lock.owned():
            with translate():
                durable = self.ledger.durable_count()
            if durable > self.reflected_tx:  # (not the ledger's count: another thread may be
                self.refresh()  # between taking transactions in and reflecting them)

    def check_writable(self) -> None:
        self.check_open()
        if self.ledger.readonly:
            raise kvcore.ReadOnlyError("the database is open read-only")

    def close(self) -> None:
        """Close the derived state and the ledger."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            self.release()
            self.ledger.close()

    def release(self) -> None:
        """Close the derived state (and remove a private one); the ledger stays open."""
        self.store.close()
        if self._temp_store is not None:
            shutil.rmtree(self._temp_store, ignore_errors=True)
        if self._state_lock is not None:
            os.close(self._state_lock)  # releases the directory to the next writer
            self._state_lock = None

    def note_reflected(self) -> None:
        """Record the transaction the derived state on disk reflects (after this process wrote
        it: its state directory is its own), which :meth:`check_open` compares with the head."""
        with self._read() as txn:
            found = self.store.reflected(txn)
        self.reflected_tx = 0 if found is None else found[0]

    def refresh(self) -> int:
        """Take in what another (writer) process committed since; returns the transaction id."""
        with self.lock, translate():
            self.ledger.refresh()
            if self._temp_store is not None or self.follows:  # a store this process keeps current
                with self._damage_is_corruption():
                    derive.catch_up(self.store, self.ledger, self.read_doc)
                self.note_reflected()
                if self.follows and not self.readonly and self.last_erasure() > self._compacted_seen:
                    if self.last_erasure() > self.store.compacted_through():
                        self.after_erasure()  # another writer's erasure: no erased row kept here either
                    self._compacted_seen = self.last_erasure()
            return self.ledger.tx_id

    # ---------------------------------------------------------------- state
    def current_state(self) -> kvcore.State:
        self.check_open()
        return self.ledger.state()

    def state_at(self, tx_id: int) -> kvcore.State:
        return self.ledger.state(tx_id)

    @property
    def tx_id(self) -> int:
        return self.ledger.tx_id

    def own_state(self, state: object, name: str, trusted: bool) -> kvcore.State:
        """``state`` if it is one of this ledger's states. QueryError if it is not a State or
        names no transaction; VerificationError if this ledger's root at its transaction
        differs, or if a ``trusted`` state is ahead of the ledger (history lost or rolled
        back); QueryError for any other state ahead of the ledger."""
        ledger = self.ledger
        if not isinstance(state, kvcore.State):
            raise QueryError(f"{name} must be a kvcore.State, got {type(state).__name__}")
        if type(state.tx_id) is not int or state.tx_id < 0:
            raise QueryError(f"{name} names no transaction: {state.tx_id!r}")
        if state.tx_id > ledger.tx_id and self.follows:  # another process's commit, not yet
            self.refresh()  # notified here: a client that wrote through another server reads it
        if state.tx_id > ledger.tx_id:
            if not trusted:
                raise QueryError(
                    f"{name} is at transaction {state.tx_id}, which does not exist (the ledger is at {ledger.tx_id})"
                )
            raise VerificationError(
                f"the trusted state is at transaction {state.tx_id} but this ledger holds only "
                f"{ledger.tx_id}: transactions were lost or the history was rolled back"
            )
        if ledger.state(state.tx_id) != state:
            raise VerificationError(
                f"this ledger's root at transaction {state.tx_id} differs from the {name} given: its "
                "history is not the one you trusted"
            )
        return state

    def prove_consistency(self, old: kvcore.State, new: kvcore.State) -> kvcore.ConsistencyProof:
        """A consistency proof between two states of this ledger (checked to be its own)."""
        for s in (old, new):
            if s.tx_id > self.ledger.tx_id:
                raise VerificationError(
                    f"the trusted state is at transaction {s.tx_id} but the ledger holds only "
                    f"{self.ledger.tx_id}: it lost transactions"
                )
        with translate():
            return self.ledger.prove_consistency(old.tx_id, new.tx_id)

    def checkpoint(self, state: kvcore.State | None = None) -> str:
        """The signed checkpoint of ``state`` (default: the current one), which must be this
        ledger's."""
        self.check_open()
        note = self.signing.cached(state) if state is not None else None
        if note is not None:
            return note
        own = self.ledger.state() if state is None else self.own_state(state, "state", trusted=False)
        return self.signing.sign(own, self._map_root_of(own))

    def _map_root_of(self, state: kvcore.State) -> bytes | None:
        """The state map's root that ``state``'s last header commits to (None: none), checked
        to be in the tree before a key signs it (a header changed on disk is not signed)."""
        if not state.tx_id:
            return None
        with translate():
            p = self.ledger.prove_entry_at(state.tx_id, 0, state)
        if p.header.state_root is None:
            return None
        try:
            kvcore.verify_tx(p.header, p.tx_path, state)
        except kvcore.VerificationError as e:
            raise CorruptDataError(f"transaction {state.tx_id}'s header is not the one the tree commits to: {e}") from None
        return p.header.state_root

    def checkpoint_or_none(self, state: kvcore.State) -> str | None:
        """The state's checkpoint, or None if this database has no key (read-only, never keyed)."""
        return self.checkpoint(state) if self.signing.has_key else None

    # ------------------------------------------------------------ documents
    def read_doc(self, coll: str, doc_id: str, loc: Location) -> dict:
        """The revision of ``doc_id`` at ``loc``, from the bounded cache or the log."""
        if self.store.generation != self._generation:  # the files were compacted: an erasure
            self._generation = self.store.generation
            with self._cache_lock:
                self._cache.clear()
            if self.ledger.readonly or self.follows:
                self.ledger.refresh()  # (its erasure record)
        if self.ledger.readonly and not self.follows:
            self._learn_erasures()
        key = (coll, doc_id, loc.tx_id, loc.entry)
        raw = self._cache.get(key)
        erased = erased_ordinals(self.ledger, loc.tx_id, loc.entry + 1, loc.n)
        if raw is not None and not erased:  # (a revision read before its erasure is read anew)
            with self._cache_lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
            return decode_doc(raw)
        if loc.tx_id > self.ledger.tx_id:  # another process's commit: take in its log records
            self.ledger.refresh()
        header = Header(coll, doc_id, loc.revision, loc.n, False)
        try:
            items = self.ledger.entry_items(loc.tx_id, loc.entry + 1, loc.n) if loc.n else []
        except kvcore.CorruptionError as e:  # the log's entries themselves do not decode
            raise CorruptDataError(
                f"document {coll}/{doc_id} revision {loc.revision}: its stored properties are damaged ({e})"
            ) from None
        except _DAMAGE as e:  # a location outside the log: damaged derived state
            self._damaged_state(e)
        # after reading: an erasure is known before its values are zeroed (kvcore)
        erased = erased_ordinals(self.ledger, loc.tx_id, loc.entry + 1, loc.n)
        doc = doc_from_items(header, items, records.property_prefix(coll, doc_id), erased)
        if erased:
            return doc
        encoded = encode_doc(doc)
        with self._cache_lock:
            self._cache[key] = encoded
            if len(self._cache) > CACHED_DOCS:
                self._cache.popitem(last=False)
        return doc

    # ---------------------------------------------------------------- reads
    def _schema(self, name: str, meta: dict[str, Any]) -> Schema | None:
        import orjson

        formats = bool(meta.get("schema_formats"))
        raw = orjson.dumps(meta.get("schema")) + (b"+formats" if formats else b"")
        hit = self._schemas.get(name)
        if hit is None or hit[0] != raw:
            schema_doc = meta.get("schema")
            hit = (raw, None if schema_doc is None else Schema(schema_doc, formats))
            self._schemas[name] = hit
        return hit[1]

    def collection_state(self, name: str) -> CollectionInfo:
        """A collection's derived state (CollectionNotFoundError if there is none)."""
        self.check_open()
        store = self.store
        with self._read() as txn:
            meta = store.definition(txn, name)
            if meta is None:
                raise CollectionNotFoundError.named(name, store.definitions(txn))
            count = store.count(txn, name)
        indexes = {
            i["field"]: Index(self, name, i["field"], bool(i.get("unique")), i) for i in meta.get("indexes", [])
        }
        return CollectionInfo(name, meta, self._schema(name, meta), count, indexes)

    def require_collection(self, name: str) -> None:
        """CollectionNotFoundError unless the collection exists (its definition row only: no
        decoding; for reads that need nothing else of it, as a proof)."""
        self.check_open()
        store = self.store
        try:
            txn = store.read()
            try:
                found = store.has_definition(txn, name)
            finally:
                txn.abort()
        except _DAMAGE as e:
            self._damaged_state(e)
        if not found:
            raise CollectionNotFoundError.named(name, self.collection_names())

    def definition(self, name: str) -> dict[str, Any] | None:
        """A collection's definition as the derived state holds it (None: no such collection)."""
        self.check_open()
        with self._read() as txn:
            return self.store.definition(txn, name)

    def has_collection(self, name: str) -> bool:
        return self.definition(name) is not None

    def collection_names(self) -> list[str]:
        self.check_open()
        with self._read() as txn:
            return sorted(self.store.definitions(txn))

    def current_items(self, coll: str, snapshot: int | None = None) -> Items | None:
        """(id, document) of every current document of ``coll``, in id order, as of one
        snapshot of the derived state (documents read from the log as the iteration goes);
        with ``snapshot``, None unless the derived state reflects exactly that transaction.
        Holds no lock: LMDB's read snapshot keeps the iteration consistent."""
        self.collection_state(coll)
        store = self.store
        txn = store.read()
        reflected = store.reflected(txn)
        tx_id = reflected[0] if reflected else 0
        if snapshot is not None and tx_id != snapshot:
            txn.abort()
            return None
        return Items(tx_id, self._iterate(txn, derive.documents(store, txn, self.read_doc, coll)))

    def _iterate(self, txn: lmdb.Transaction, items: Iterator[tuple[str, dict]]) -> Iterator[tuple[str, dict]]:
        try:
            with self._damage_is_corruption():
                yield from items
        finally:
            txn.abort()

    @contextmanager
    def _read(self) -> Iterator[lmdb.Transaction]:
        """A read transaction of the derived state (one consistent snapshot); damage found
        while reading it is a CorruptDataError (see :meth:`_damage_is_corruption`)."""
        with self._damage_is_corruption(), self.store.read() as txn:
            yield txn

    @contextmanager
    def _damage_is_corruption(self) -> Iterator[None]:
        """What a damaged derived state raises while it is read (LMDB's own checks, rows that
        do not decode, locations outside the log) becomes CorruptDataError, and the state is
        marked for a rebuild from the log at the next writable open."""
        try:
            yield
        except _DAMAGE as e:
            self._damaged_state(e)

    def _damaged_state(self, e: Exception) -> NoReturn:
        """Raise what :meth:`_damage_is_corruption` makes of ``e`` (hot paths catch _DAMAGE
        themselves and call this: a context manager costs a microsecond a read)."""
        if isinstance(e, DocstoreError):
            raise e
        why = f"the derived state is damaged ({type(e).__name__}: {e})"
        if not self.readonly:
            try:
                with self.store.write() as txn:
                    self.store.mark_damaged(txn, why)
            except lmdb.Error:
                pass
        raise CorruptDataError(f"{why}: reopen the database to rebuild it from the log") from None

    def current_documents(self, coll: str, ids: Iterable[str]) -> list[dict]:
        """The current documents of ``coll`` with these ids (those that exist), read together."""
        store = self.store
        out = []
        with self._read() as txn:
            for doc_id in ids:
                loc = store.location(txn, coll, doc_id)
                if loc is not None:
                    out.append(self.read_doc(coll, doc_id, loc))
        return out

    def _learn_erasures(self) -> None:
        """A reader of a directory database (the writer's derived state, its own ledger): now
        and then, take in the writer's transactions when the derived state reflects newer
        ones, so that an erasure (which moves no document) is known to its reads."""
        now = time.monotonic()
        if now < self._next_look:
            return
        self._next_look = now + REPLACED_CHECK_SECONDS
        with self._read() as txn:
            found = self.store.reflected(txn)
        if found is not None and found[0] > self.ledger.tx_id:
            with translate():
                self.ledger.refresh()

    def after_erasure(self, compact: bool = True) -> None:
        """Leave no erased value in the derived state's files: compact them (LMDB's freed pages
        keep old rows; ``compact=False``: no row ever held the erased values, none of them
        being indexed, so only the fact is recorded); on PostgreSQL, drop the derived states
        published there (the next ``publish_state`` publishes a clean one)."""
        with self.lock:
            if compact:
                self.store.compact(self.last_erasure())
            else:
                self.store.set_compacted(self.last_erasure())
            if self.url is not None:
                pgsnapshot.drop(self.url)

    def last_erasure(self) -> int:
        """The transaction of the ledger's last erasure (0: none)."""
        return self.ledger.last_erasure

    def store_location(self, coll: str, doc_id: str) -> Location | None:
        """Where the derived state says ``doc_id``'s current revision is (None: not live)."""
        self.check_open()
        try:
            with self._read() as txn:
                return self.store.location(txn, coll, doc_id)
        except _DAMAGE as e:
            self._damaged_state(e)

    def current_document(self, coll: str, doc_id: str) -> dict | None:
        self.check_open()
        store = self.store
        try:
            txn = store.read()
            try:
                loc = store.location(txn, coll, doc_id)  # a row means the collection exists
                if loc is None and store.definition(txn, coll) is None:
                    raise CollectionNotFoundError.named(coll, store.definitions(txn))
            finally:
                txn.abort()
        except _DAMAGE as e:
            self._damaged_state(e)
        return None if loc is None else self.read_doc(coll, doc_id, loc)

    def index_count(self, coll: str, field: str, ranges: list[tuple[bytes | None, bytes | None]]) -> int:
        """How many entries the index of ``coll.field`` holds inside the byte ``ranges``."""
        with self._read() as txn:
            return sum(1 for _ in self.store.index_ids(txn, coll, field, ranges))

    def index_multikey(self, coll: str, field: str) -> bool:
        with self._read() as txn:
            return self.store.multikey(txn, coll, field)

    def indexed_items(
        self, coll: str, field: str, ranges: list[tuple[bytes | None, bytes | None]], multikey: bool
    ) -> Items:
        """(id, document) of the current documents whose ``field`` index keys fall in
        ``ranges``, each once, in index order, as of one snapshot of the derived state (read
        as the iteration goes: memory stays bounded unless ``multikey``, which remembers ids)."""
        self.check_open()
        store = self.store
        txn = store.read()
        reflected = store.reflected(txn)

        def items() -> Iterator[tuple[str, dict]]:
            seen: set[str] | None = set() if multikey else None
            for doc_id in store.index_ids(txn, coll, field, ranges):
                if seen is not None:
                    if doc_id in seen:
                        continue
                    seen.add(doc_id)
                loc = store.location(txn, coll, doc_id)
                if loc is not None:
                    yield doc_id, self.read_doc(coll, doc_id, loc)

        return Items(reflected[0] if reflected else 0, self._iterate(txn, items()))

    def union_items(
        self, coll: str, branches: list[tuple[dict[str, Any], list[tuple[bytes | None, bytes | None]], bool]]
    ) -> Items:
        """(id, document) of the current documents with a key in the ranges of any of
        ``branches`` (each an index's definition, its byte ranges and whether it is multikey),
        each once, branch after branch, as of one snapshot of the derived state. A document a
        branch yields is skipped when an earlier branch holds it (its keys, computed from the
        document, in that branch's ranges): memory stays bounded but for a multikey branch's ids."""
        from docstore.collections.indexspec import spec_keys

        self.check_open()
        store = self.store
        txn = store.read()
        reflected = store.reflected(txn)

        def items() -> Iterator[tuple[str, dict]]:
            for i, (spec, ranges, multikey) in enumerate(branches):
                seen: set[str] | None = set() if multikey else None
                for doc_id in store.index_ids(txn, coll, spec["field"], ranges):
                    if seen is not None:
                        if doc_id in seen:
                            continue
                        seen.add(doc_id)
                    loc = store.location(txn, coll, doc_id)
                    if loc is None:
                        continue
                    doc = self.read_doc(coll, doc_id, loc)
                    if any(store.rows_in(coll, s["field"], spec_keys(doc, s), doc_id, r) for s, r, _m in branches[:i]):
                        continue
                    yield doc_id, doc

        return Items(reflected[0] if reflected else 0, self._iterate(txn, items()))

    def snapshot_tx(self) -> int:
        """The ledger transaction the derived state reflects now."""
        with self._read() as txn:
            reflected = self.store.reflected(txn)
        return 0 if reflected is None else reflected[0]

    def header_entry(self, coll: str, doc_id: str, at_tx: int | None = None) -> kvcore.Entry | None:
        """The header entry of ``doc_id``'s revision current as of ``at_tx`` (None: never written)."""
        self.check_open()
        with translate():
            return self.ledger.lookup(records.header_key(coll, doc_id), at_tx=at_tx)

    def revision(self, coll: str, doc_id: str, at_tx: int | None = None) -> tuple[Header, dict | None] | None:
        """(header, document or None if it is a deletion) of the revision current as of
        ``at_tx``, read from the ledger; None if the document was never written."""
        entry = self.header_entry(coll, doc_id, at_tx)
        if entry is None:
            return None
        return self.revision_of(coll, entry)

    def revision_of(self, coll: str, entry: kvcore.Entry) -> tuple[Header, dict | None]:
        """(header, document or None for a deletion) of the revision whose header is ``entry``."""
        header = Header.decode(entry.value)
        if header.deleted:
            return header, None
        doc = self.read_doc(coll, header.id, Location(entry.tx_id, entry.index, header.revision, header.n))
        return header, doc

    def history(self, coll: str, doc_id: str, offset: int, limit: int | None) -> list[kvcore.Entry]:
        """The header entries of ``doc_id``'s revisions, oldest first, paged."""
        self.check_open()
        with translate():
            return self.ledger.history(records.header_key(coll, doc_id), offset, limit)

    def tx_time_ns(self, tx_id: int) -> int:
        return self.ledger.header(tx_id).timestamp_ns

    def tx_meta(self, tx_id: int) -> dict[str, Any] | None:
        """The metadata committed with transaction ``tx_id`` (user, reason, meta), or None."""
        with translate():
            return txmeta.of_tx(self.ledger, tx_id)

    def documents_at(self, coll: str, at_tx: int) -> Iterator[tuple[str, dict]]:
        """(id, document) of every live document of ``coll`` as of transaction ``at_tx``."""
        self.check_open()
        with translate():
            headers = self.ledger.scan(records.header_prefix(coll), at_tx=at_tx)
        return self.documents_of(coll, headers)

    def documents_of(self, coll: str, headers: Iterable[kvcore.Entry]) -> Iterator[tuple[str, dict]]:
        """(id, document) for header entries (skipping deletions)."""
        for entry in headers:
            header, doc = self.revision_of(coll, entry)
            if doc is not None:
                yield header.id, doc

    # --------------------------------------------------------------- writes
    def begin(self, at_tx: int | None = None) -> kvcore.Transaction:
        """A kvcore transaction reading as of ``at_tx`` (default: now), its snapshot taken under
        the commit lock so that it matches the derived state."""
        self.check_open()
        with self.lock, translate():
            if self.follows:  # the derived state as far as the ledger: a commit that failed
                derive.catch_up(self.store, self.ledger, self.read_doc)  # may have taken others in
                self.note_reflected()
            return self.ledger.transaction(at_tx)

    def commit(
        self,
        kv: kvcore.Transaction,
        metas: dict[str, dict[str, Any]],
        written: list[Written],
        definitions: dict[str, int] | None = None,
        erasures: list[derive.ErasedDoc] | None = None,
    ) -> int | None:
        """Commit ``kv`` (its log record durable first, its header committing to the state
        map's root after it), then reflect it in the derived state in one LMDB transaction
        (definitions ``metas``, each at entry ``definitions[name]``; documents ``written``);
        returns its transaction id (None: nothing to write); ``erasures``: documents whose
        values it erases (their index rows made anew). Errors translated. Transactions
        committed at the same time by other threads share its durable writes
        (:mod:`docstore.engine.groupcommit`)."""
        self.check_open()
        outcome = self.committer.commit(kv, metas, written, definitions or {}, MAINTAIN_STATE_MAP, erasures)
        if isinstance(outcome, BaseException):
            with translate(kv.snapshot):
                raise outcome
        return outcome

    def mark_damaged(self, why: str) -> None:
        """The derived state could not follow the log: refuse everything until reopened."""
        self._damaged = why

    # ---------------------------------------------------------------- audit
    def audit(
        self, trusted_state: kvcore.State | None = None, progress: Callable[[int, int], None] | None = None
    ) -> kvcore.AuditReport:
        """Recompute every ledger hash, then rebuild the derived state from the ledger (in a
        temporary store on disk) and compare it with the one served, row by row. A failed
        audit makes the engine refuse everything until reopened. ``progress(done, total)``
        counts entries: each entry once for its hashes, once for the rebuild (total = twice
        the ledger's entries)."""
        if self._closed:
            raise kvcore.ClosedError("the database is closed")
        with self.lock:
            hashed = partial(_twice, progress, 0) if progress is not None else None
            report = self.ledger.audit(trusted_state, entry_progress=hashed)
            if report.first_bad_tx is not None:
                self._damaged = f"transaction {report.first_bad_tx}"
                return report
            problems = list(report.problems)
            try:
                derived = self._compare_with_rebuilt(
                    partial(_twice, progress, report.entries) if progress is not None else None
                )
            except DocstoreError as e:
                derived = [f"documents cannot be rebuilt from the ledger: {e}"]
            except (lmdb.Error, UnicodeDecodeError, ValueError, struct.error) as e:
                derived = [f"the derived state is damaged ({type(e).__name__}: {e})"]
            if derived and not self.readonly:  # the log is sound: the next open rebuilds the rest
                with self.store.write() as txn:
                    self.store.mark_damaged(txn, derived[0])
            problems += derived
            if problems:
                self._damaged = problems[0]
        return kvcore.AuditReport(
            ok=not problems,
            tx_count=report.tx_count,
            entries=report.entries,
            first_bad_tx=report.first_bad_tx,
            problems=problems,
            root=report.root,
        )

    def _compare_with_rebuilt(self, progress: Callable[[int, int], None] | None = None) -> list[str]:
        """Rebuild the derived state from the log in a temporary store (no fsync: it is thrown
        away) and compare it with the one served, row by row, at the transaction the served
        one reflects (another process may have moved it past this process's ledger)."""
        tmp = tempfile.mkdtemp(prefix="immudoc-audit-")
        try:
            rebuilt = Store(tmp, readonly=False, durable=False)
            try:
                with self.store.read() as have_txn:
                    reflected = self.store.reflected(have_txn)
                    at = 0 if reflected is None else reflected[0]
                    if at > self.ledger.tx_id:
                        self.ledger.refresh()
                    if reflected is None or at > self.ledger.tx_id:
                        return [f"the derived state reflects transaction {at}, the ledger holds {self.ledger.tx_id}"]
                    if at < self.ledger.tx_id and not self.readonly:
                        return [f"the derived state reflects transaction {at}, the ledger holds {self.ledger.tx_id}"]
                    derive.catch_up(rebuilt, self.ledger, _reader(self.ledger), progress, upto=at)
                    with rebuilt.read() as want_txn:
                        return _compare_rows(rebuilt.dump(want_txn), self.store.dump(have_txn))
            finally:
                rebuilt.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


_DAMAGE = (lmdb.Error, UnicodeDecodeError, ValueError, struct.error, kvcore.TxNotFoundError, kvcore.InvalidInputError)
"""What a damaged derived state makes LMDB, the decoders and the ledger raise."""


def _twice(progress: Callable[[int, int], None], base: int, done: int, total: int) -> None:
    """An audit's progress in entries: each entry counted for its hashes, then its rebuild."""
    progress(base + done, 2 * total if base == 0 else base + total)


def _reader(ledger: kvcore.Ledger) -> derive.ReadDoc:
    """Reads documents straight from the ledger (no cache): for a rebuild."""

    def read(coll: str, doc_id: str, loc: Location) -> dict:
        header = Header(coll, doc_id, loc.revision, loc.n, False)
        items = ledger.entry_items(loc.tx_id, loc.entry + 1, loc.n) if loc.n else []
        erased = erased_ordinals(ledger, loc.tx_id, loc.entry + 1, loc.n)
        return doc_from_items(header, items, records.property_prefix(coll, doc_id), erased)

    return read


def _compare_rows(want: Iterator[tuple[str, bytes, bytes]], have: Iterator[tuple[str, bytes, bytes]]) -> list[str]:
    """Problems between two ordered row streams (bounded memory: one row of each at a time)."""
    problems: list[str] = []
    names = {"colls": "collection definitions", "docs": "documents", "idx": "index entries", "multi": "multikey marks",
                 "meta": "document counts and the state map's root", "smap": "state map nodes"}
    w, h = next(want, None), next(have, None)
    while (w is not None or h is not None) and len(problems) < 10:
        if w == h:
            w, h = next(want, None), next(have, None)
            continue
        if h is None or (w is not None and (w[0], w[1]) < (h[0], h[1])):
            assert w is not None
            problems.append(f"the derived state lacks one of the ledger's {names[w[0]]} ({w[1][:60]!r})")
            w = next(want, None)
        elif w is None or (h[0], h[1]) < (w[0], w[1]):
            problems.append(f"the derived state holds {names[h[0]]} the ledger does not ({h[1][:60]!r})")
            h = next(have, None)
        else:
            problems.append(f"the derived state's {names[w[0]]} differ from the ledger's ({w[1][:60]!r})")
            w, h = next(want, None), next(have, None)
    return problems


def _open_store(path: str, ledger: kvcore.Ledger, readonly: bool) -> tuple[Store, str | None, str | None]:
    """(store, its temporary directory if it is private, a recovery note): the database's own
    store if it is usable; rebuilt (a writer) if it is missing, damaged, ahead of the log or of
    another history; a private temporary one for a reader when the database has none yet."""
    note = None
    if not readonly:
        Store.remove_leftovers(path)
    problem = Store.file_problem(path) if Store.exists(path) else None
    if problem is not None:
        note = f"the derived state could not be read ({problem}); rebuilt it from the log"
    elif Store.exists(path):
        try:
            store = Store(path, readonly)
            with store.read() as txn:
                reflected = store.reflected(txn)
                damaged = store.damaged(txn)
                map_root = store.smap.root(txn)
                stale = store.map_stale(txn)
            ok = not stale and reflected is not None and reflected[2] == VERSION and reflected[0] <= ledger.tx_id and (
                ledger.state(reflected[0]).root == reflected[1]
            ) and not damaged and _map_matches(ledger, reflected[0], map_root)
            if ok:
                return store, None, None
            store.close()
            note = "the derived state did not match the log; rebuilt it from the log"
        except (lmdb.Error, DocstoreError, kvcore.KvError) as e:
            note = f"the derived state could not be read ({e}); rebuilt it from the log"
    elif os.path.exists(os.path.join(path, "docs.snap")):
        note = "the derived state is in the format of an earlier version; rebuilt it from the log"
    elif ledger.tx_id > 0:
        note = "the derived state was missing; rebuilt it from the log"
    if readonly:  # no writer to rebuild it: a private one, for this process only
        tmp = tempfile.mkdtemp(prefix="immudoc-state-")
        return Store(tmp, readonly=False, durable=False), tmp, note and note + " (a private copy: open the database for writing once to keep one)"
    Store.remove(path)
    return Store(path, readonly=False), None, note


MAINTAIN_STATE_MAP = os.environ.get("IMMUDOC_BENCHMARK_WITHOUT_STATE_MAP") != "1"
"""False only for a benchmark measuring what the state map costs (the environment variable
IMMUDOC_BENCHMARK_WITHOUT_STATE_MAP=1): commits then write version-1 headers and leave the map
stale (marked: the next open without the variable rebuilds it). Never for real data."""


def _map_matches(ledger: kvcore.Ledger, tx_id: int, root: bytes) -> bool:
    """Whether the state map's root is the one transaction ``tx_id`` commits to (a header of
    version 1 commits to none)."""
    if tx_id == 0:
        return True
    committed = ledger.header(tx_id).state_root
    return committed is None or committed == root


def _remove_old_snapshot(path: str) -> None:
    try:
        os.unlink(os.path.join(path, "docs.snap"))
    except OSError:
        pass


STATE_DIR_ENV = "IMMUDOC_STATE_DIR"


def default_state_dir(url: str) -> str:
    """Where a PostgreSQL database's local state goes by default: one directory per URL (its
    password left out) under ``$XDG_CACHE_HOME/immudoc`` (``~/.cache/immudoc``)."""
    import hashlib

    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    digest = hashlib.sha256(redact_url(url).encode()).hexdigest()[:16]
    return os.path.join(base, "immudoc", f"pg-{digest}")


STATE_DIRS_PER_HOST = 64
"""Writer processes of one PostgreSQL database that one host can run with default state
directories (``pg-<hash>``, ``pg-<hash>-2``, ...)."""


def _claim_state_dir(url: str, given: str | None, key_file: str | None) -> tuple[str, int, str | None]:
    """(state directory, its lock's descriptor, key file) of a writer process: the directory
    given, which no other writer may hold (LockedError), or the first default one free; a
    default one other than the first reads the signing key from the first, unless told another."""
    if given is not None:
        _prepare_state_dir(given, False)
        fd = _lock_dir(given)
        if fd is None:
            raise kvcore.LockedError(
                f"the state directory {given!r} is in use by another writer process of {redact_url(url)}: "
                "give each process its own (state_dir=..., IMMUDOC_STATE_DIR)"
            )
        return given, fd, key_file
    base = default_state_dir(url)
    for i in range(1, STATE_DIRS_PER_HOST + 1):
        path = base if i == 1 else f"{base}-{i}"
        _prepare_state_dir(path, False)
        fd = _lock_dir(path)
        if fd is None:
            continue
        shared = os.path.join(base, keyfile.KEY_FILE)
        if (i > 1 and key_file is None and not os.environ.get(keyfile.KEY_FILE_ENV)
                and not os.path.exists(os.path.join(path, keyfile.KEY_FILE)) and os.path.exists(shared)):
            key_file = shared  # the first directory's key: one key for the database's processes
        return path, fd, key_file
    raise kvcore.LockedError(
        f"{STATE_DIRS_PER_HOST} writer processes of {redact_url(url)} already run on this host with default "
        "state directories: give this one its own (state_dir=..., IMMUDOC_STATE_DIR)"
    )


def _lock_dir(path: str) -> int | None:
    """An exclusive hold on ``path`` (its ``writer.lock``), or None if another process has it."""
    try:
        fd = os.open(os.path.join(path, "writer.lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise kvcore.StorageError(f"cannot lock the state directory {path!r}: {e.strerror}") from e
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd


def _prepare_state_dir(path: str, readonly: bool) -> None:
    if os.path.lexists(path) and not os.path.isdir(path):
        raise kvcore.FormatError(f"the state directory {path!r} is not a directory")
    if readonly:
        return
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError as e:
        raise kvcore.StorageError(f"cannot create the state directory {path!r}: {e.strerror}") from e


def _check_shared_key(url: str, state_dir: str, key_file: str | None, ledger: kvcore.Ledger) -> None:
    """A PostgreSQL database with transactions already has its signing key: a process that has
    neither it here nor a key file must not make another (its checkpoints would not verify with
    the key readers pin)."""
    if key_file is not None or os.environ.get(keyfile.KEY_FILE_ENV) or ledger.tx_id == 0:
        return
    if not os.path.exists(os.path.join(state_dir, keyfile.KEY_FILE)):
        raise StorageError(
            f"the database {redact_url(url)} already holds transactions, and this machine has no copy of its "
            f"signing key: give it (key_file=..., --key-file, IMMUDOC_KEY_FILE), or a state directory that "
            f"holds it (state_dir=..., IMMUDOC_STATE_DIR; looked in {state_dir!r})"
        )


def _prepare_dir(path: str) -> None:
    """Create the database directory if needed; refuse a path that holds something else.

    A new database goes in a new or empty directory. A non-empty directory without ``ledger/``
    is not a database (a mistyped path) or one whose ledger is missing: neither is touched.
    """
    if os.path.isdir(os.path.join(path, "ledger")):
        return
    if os.path.lexists(path) and not os.path.isdir(path):
        raise kvcore.FormatError(f"{path!r} is not a directory, so not an immudoc database")
    try:
        names = sorted(os.listdir(path)) if os.path.isdir(path) else []
        if "docs.snap" in names or "state.lmdb" in names:
            raise kvcore.FormatError(
                f"{path!r} holds a derived state but no ledger/: the database's ledger is missing "
                "(restore it from a backup); nothing was changed"
            )
        if names:
            raise kvcore.FormatError(
                f"{path!r} is not an immudoc database (no ledger/; it holds {', '.join(names[:5])}): "
                "create a database in a new or empty directory"
            )
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
            raise kvcore.ReadOnlyError(f"cannot create the database directory {path!r}: {e.strerror}") from e
        raise kvcore.StorageError(f"cannot create the database directory {path!r}: {e.strerror}") from e
