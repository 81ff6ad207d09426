"""The engine of an embedded database: the one owner of its ledger, derived state, commit lock,
signing keys and trust tracker.

Everything above it (collections, transactions, proving, the public :class:`Database`) works
through its methods and never reaches into the ledger's or the state's internals. kvcore errors
are translated into docstore errors here, in one place (:func:`translate`), so callers only see
the documented docstore errors. A storage backend other than files plugs in below the ledger; a
derived-state store other than memory plugs in at :class:`~docstore.engine.state.DbState`.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import kvcore

from docstore.documents import records
from docstore.documents.records import Header
from docstore.engine.signing import Signing
from docstore.engine.state import (
    CollectionState,
    DbState,
    decode_doc,
    doc_from_entries,
    load_snapshot,
    same_json,
    save_snapshot,
)
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
from docstore.proofs.trust import TrustTracker

_SNAPSHOT_AFTER = 2_000  # transactions replayed at open before a fresh snapshot is saved
Written = list[tuple[str, str, "dict | None"]]
"""What a commit wrote: (collection, id, the new document or None for a deletion)."""


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


class Engine:
    """An open embedded database's machinery (see the module). Made by :meth:`open`."""

    def __init__(self, path: str, ledger: kvcore.Ledger, signing: Signing, derived: DbState) -> None:
        self.path = path
        self.ledger = ledger
        """The kvcore ledger (read it; only :meth:`commit` writes to it)."""
        self.signing = signing
        self.derived = derived
        """The derived state: collection definitions, current documents, indexes."""
        self.lock = threading.RLock()
        """The commit lock: commits, and reads that must see whole commits, hold it."""
        self.verify_lock = threading.Lock()
        """Serializes the verifying reader's proving and advancing of the trusted state."""
        self.trust: TrustTracker | None = None
        """The trusted state a verifying database checks its reads against (None: not verifying)."""
        self._closed = False
        self._damaged: str | None = None
        self._snapshot_path = os.path.join(path, "docs.snap")

    @classmethod
    def open(
        cls,
        path: str,
        *,
        readonly: bool = False,
        wait: bool | float = False,
        key_file: str | None = None,
        origin: str | None = None,
    ) -> Engine:
        """Open (creating if missing and writable) the database in directory ``path``: its
        ledger, its signing keys, and its derived state (from the snapshot plus the
        transactions after it, or rebuilt from the whole ledger)."""
        Signing.check_origin(origin)  # before anything is created
        if not readonly:
            _prepare_dir(path)
        ledger = kvcore.Ledger.open(os.path.join(path, "ledger"), readonly=readonly, wait=wait)
        try:
            signing = Signing.load(path, key_file, origin, create=not readonly)
            snapshot_path = os.path.join(path, "docs.snap")
            derived = load_snapshot(snapshot_path)
            if (
                derived is None
                or derived.tx_id > ledger.tx_id
                or ledger.state(derived.tx_id).root != derived.root
            ):  # missing, damaged, or of another history: rebuild from the ledger
                derived = DbState()
            replayed = derived.catch_up(ledger)
        except BaseException:
            ledger.close()
            raise
        engine = cls(path, ledger, signing, derived)
        if replayed >= _SNAPSHOT_AFTER and not readonly:
            save_snapshot(snapshot_path, derived, ledger)
        return engine

    # ------------------------------------------------------------ lifecycle
    @property
    def readonly(self) -> bool:
        return self.ledger.readonly

    @property
    def closed(self) -> bool:
        return self._closed

    def check_open(self) -> None:
        """ClosedError once closed; CorruptDataError once an audit failed (until reopened)."""
        if self._closed:
            raise kvcore.ClosedError("the database is closed")
        if self._damaged is not None:
            raise CorruptDataError(
                f"the database refuses reads and writes: its audit failed ({self._damaged}); "
                "reopen it after repairing it"
            )

    def check_writable(self) -> None:
        self.check_open()
        if self.ledger.readonly:
            raise kvcore.ReadOnlyError("the database is open read-only")

    def close(self) -> None:
        """Save a snapshot of the derived state (so the next open is fast) and close the ledger."""
        with self.lock:
            if self._closed:
                return
            self._closed = True
            if not self.ledger.readonly:
                save_snapshot(self._snapshot_path, self.derived, self.ledger)
            self.ledger.close()

    def refresh(self) -> int:
        """Take in what another (writer) process committed since; returns the transaction id."""
        with self.lock:
            self.ledger.refresh()
            self.derived.catch_up(self.ledger)
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
        return self.signing.sign(own)

    def checkpoint_or_none(self, state: kvcore.State) -> str | None:
        """The state's checkpoint, or None if this database has no key (read-only, never keyed)."""
        return self.checkpoint(state) if self.signing.has_key else None

    # ---------------------------------------------------------------- reads
    def collection_state(self, name: str) -> CollectionState:
        """A collection's derived state (CollectionNotFoundError if there is none)."""
        self.check_open()
        coll = self.derived.collections.get(name)
        if coll is None:
            raise CollectionNotFoundError(f"collection {name!r} does not exist")
        return coll

    def has_collection(self, name: str) -> bool:
        return name in self.derived.collections

    def collection_names(self) -> list[str]:
        self.check_open()
        return sorted(self.derived.collections)

    def current_items(self, coll: str) -> Iterator[tuple[str, dict]]:
        """(id, document) of every current document of ``coll``, copied under the lock, decoded lazily."""
        with self.lock:
            items = list(self.collection_state(coll).docs.items())
        for doc_id, raw in items:
            yield doc_id, decode_doc(raw)

    def current_documents(self, coll: str, ids: Iterable[str]) -> list[dict]:
        """The current documents of ``coll`` with these ids (those that exist), read together."""
        with self.lock:
            docs = self.collection_state(coll).docs
            raws = [docs.get(i) for i in ids]
        return [decode_doc(r) for r in raws if r is not None]

    def current_document(self, coll: str, doc_id: str) -> dict | None:
        raw = self.collection_state(coll).docs.get(doc_id)
        return None if raw is None else decode_doc(raw)

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
        props = self.ledger.entries(entry.tx_id, entry.index + 1, header.n)
        return header, doc_from_entries(header, props, records.property_prefix(coll, header.id))

    def history(self, coll: str, doc_id: str, offset: int, limit: int | None) -> list[kvcore.Entry]:
        """The header entries of ``doc_id``'s revisions, oldest first, paged."""
        self.check_open()
        with translate():
            return self.ledger.history(records.header_key(coll, doc_id), offset, limit)

    def tx_time_ns(self, tx_id: int) -> int:
        return self.ledger.header(tx_id).timestamp_ns

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
            return self.ledger.transaction(at_tx)

    def commit(self, kv: kvcore.Transaction, metas: dict[str, dict[str, Any]], written: Written) -> int | None:
        """Commit ``kv`` and reflect it in the derived state (definitions ``metas``, documents
        ``written``); returns its transaction id (None: nothing to write). Errors translated."""
        with self.lock:
            with translate(kv.snapshot):
                tx_id = kv.commit()
            if tx_id is not None:
                self._apply(tx_id, metas, written)
            return tx_id

    def _apply(self, tx_id: int, metas: dict[str, dict[str, Any]], written: Written) -> None:
        state = self.derived
        for name, meta in metas.items():
            coll = state.collections.get(name) or CollectionState(name, {})
            coll.apply_meta(meta)
            state.collections[name] = coll
        by_coll: dict[str, list[tuple[str, dict | None]]] = {}
        for coll_name, doc_id, doc in written:
            by_coll.setdefault(coll_name, []).append((doc_id, doc))
        for coll_name, items in by_coll.items():
            state.collections[coll_name].put_many(items)
        state.tx_id = tx_id

    # ---------------------------------------------------------------- audit
    def audit(
        self, trusted_state: kvcore.State | None = None, progress: Callable[[int, int], None] | None = None
    ) -> kvcore.AuditReport:
        """Recompute every ledger hash, then rebuild the derived state from the ledger and compare
        it with what is served. A failed audit makes the engine refuse everything until reopened."""
        if self._closed:
            raise kvcore.ClosedError("the database is closed")
        with self.lock:
            report = self.ledger.audit(trusted_state, progress)
            if report.first_bad_tx is not None:
                self._damaged = f"transaction {report.first_bad_tx}"
                return report
            problems = list(report.problems)
            try:
                rebuilt = DbState()
                rebuilt.catch_up(self.ledger)
            except DocstoreError as e:
                problems.append(f"documents cannot be rebuilt from the ledger: {e}")
            else:
                problems += _compare_states(rebuilt, self.derived)
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
        if "docs.snap" in names:
            raise kvcore.FormatError(
                f"{path!r} holds docs.snap but no ledger/: the database's ledger is missing "
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


def _compare_states(truth: DbState, served: DbState) -> list[str]:
    problems = []
    if set(truth.collections) != set(served.collections):
        problems.append("the collections served differ from the ledger's")
    for name, coll in truth.collections.items():
        other = served.collections.get(name)
        if other is None:
            continue
        if not same_json(coll.meta, other.meta):
            problems.append(f"collection {name!r}: its definition differs from the ledger's")
        if set(coll.docs) != set(other.docs):
            problems.append(f"collection {name!r}: the set of documents differs from the ledger's")
        bad = [
            i for i, raw in coll.docs.items() if i in other.docs and not same_json(decode_doc(raw), decode_doc(other.docs[i]))
        ]
        if bad:
            problems.append(f"collection {name!r}: {len(bad)} cached documents differ (e.g. {bad[0]!r})")
        for f, idx in coll.indexes.items():
            o = other.indexes.get(f)
            if o is None or o.dump() != idx.dump():
                problems.append(f"collection {name!r}: index {f!r} differs from the documents")
    return problems
