"""The embedded database: a directory holding a kvcore ledger and derived state."""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import kvcore

from docstore import records
from docstore.collections.collection import Collection
from docstore.collections.indexes import check_field
from docstore.collections.schema import Schema
from docstore.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    ConflictError,
    DocstoreError,
    QueryError,
)
from docstore.ids import check_collection_name
from docstore.records import Header
from docstore.state import (
    CollectionState,
    DbState,
    decode_doc,
    doc_from_entries,
    load_snapshot,
    same_json,
    save_snapshot,
)
from docstore.proofs.trust import TrustedState
from docstore.transaction import Transaction

T = TypeVar("T")
OPTIMISTIC_TRIES = 5  # before a single operation takes the commit lock for its last try
_SNAPSHOT_AFTER = 2_000  # transactions replayed at open before a fresh snapshot is saved


def normalize_indexes(indexes: Iterable[Any]) -> list[dict[str, Any]]:
    """Index specs as ``{"field": f, "unique": bool}``; accepts field names or such dicts."""
    if isinstance(indexes, (str, dict)):
        indexes = [indexes]
    elif indexes is None:
        indexes = []
    elif not isinstance(indexes, Iterable) or isinstance(indexes, bytes):
        raise QueryError(f"indexes must be a list of index specs, got {type(indexes).__name__}")
    out: list[dict[str, Any]] = []
    for spec in indexes:
        if isinstance(spec, str):
            spec = {"field": spec}
        if not isinstance(spec, dict) or set(spec) - {"field", "unique"}:
            raise QueryError(f"an index is a field name or {{'field': f, 'unique': bool}}, got {spec!r}")
        unique = spec.get("unique", False)
        if type(unique) is not bool:
            raise QueryError(f"'unique' must be true or false, got {unique!r}")
        field = check_field(spec.get("field"))
        if any(i["field"] == field for i in out):
            raise QueryError(f"index on {field!r} given twice")
        out.append({"field": field, "unique": unique})
    return out


class Database:
    """An embedded immudoc database. Open it with :func:`docstore.open`."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        wait: bool | float = False,
        verify: bool = False,
        trusted_state: kvcore.State | None = None,
        state_file: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._trust: TrustedState | None = None
        if verify:
            self._trust = TrustedState(trusted_state, state_file)
        elif trusted_state is not None or state_file is not None:
            raise QueryError("trusted_state and state_file go with verify=True")
        if not readonly:
            _prepare_dir(self.path)
        self._ledger = kvcore.Ledger.open(os.path.join(self.path, "ledger"), readonly=readonly, wait=wait)
        self._lock = threading.RLock()
        self._verify_lock = threading.Lock()
        self._snapshot_path = os.path.join(self.path, "docs.snap")
        try:
            state = load_snapshot(self._snapshot_path)
            if (
                state is None
                or state.tx_id > self._ledger.tx_id
                or self._ledger.state(state.tx_id).root != state.root
            ):  # missing, damaged, or of another history: rebuild from the ledger
                state = DbState()
            replayed = state.catch_up(self._ledger)
        except BaseException:
            self._ledger.close()
            raise
        self._state = state
        self._closed = False
        if replayed >= _SNAPSHOT_AFTER and not readonly:
            save_snapshot(self._snapshot_path, state, self._ledger)

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Save a snapshot of the derived state (so the next open is fast) and close."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if not self._ledger.readonly:
                save_snapshot(self._snapshot_path, self._state, self._ledger)
            self._ledger.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<docstore.Database {self.path!r} at transaction {self._ledger.tx_id}>"

    @property
    def ledger(self) -> kvcore.Ledger:
        """The kvcore ledger underneath (read it, never write to it directly)."""
        return self._ledger

    @property
    def readonly(self) -> bool:
        return self._ledger.readonly

    def refresh(self) -> int:
        """Read-only databases: take in what the writer process committed since; returns tx id."""
        with self._lock:
            self._ledger.refresh()
            self._state.catch_up(self._ledger)
            return self._ledger.tx_id

    # ---------------------------------------------------------- collections
    def create_collection(self, name: str, schema: Any = None, indexes: Iterable[Any] = ()) -> Collection:
        """Create a collection (with an optional JSON Schema and secondary indexes)."""
        check_collection_name(name)
        if schema is not None:
            Schema(schema)
        specs = normalize_indexes(indexes)
        meta = {"v": 1, "name": name, "schema": schema, "indexes": specs}

        def create(tx: Transaction) -> None:
            try:
                tx._meta(name)
            except CollectionNotFoundError:
                tx._set_meta(name, meta)
                return
            raise CollectionExistsError(f"collection {name!r} already exists")

        self._run(create)
        return Collection(self, name)

    def collection(self, name: str) -> Collection:
        """An existing collection (``CollectionNotFoundError`` if there is none)."""
        self._check_open()
        check_collection_name(name)
        if name not in self._state.collections:
            raise CollectionNotFoundError(
                f"collection {name!r} does not exist (create it with create_collection)"
            )
        return Collection(self, name)

    def __getitem__(self, name: str) -> Collection:
        return self.collection(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self._state.collections

    def collections(self) -> list[str]:
        """Names of all collections, sorted."""
        self._check_open()
        return sorted(self._state.collections)

    # ---------------------------------------------------------- transactions
    def transaction(self, at_tx: int | None = None) -> Transaction:
        """A multi-document, multi-collection transaction (see :class:`Transaction`).

        It reads the database as of ledger transaction ``at_tx`` (default: now); its commit
        conflicts with anything committed since then to what it read or wrote.
        """
        self._check_open()
        return Transaction(self, at_tx)

    def _run(self, fn: Callable[[Transaction], T]) -> T:
        """Run ``fn`` in a fresh transaction, retrying on conflicts (single operations).

        The first attempts are optimistic. If they keep losing to concurrent commits (a hot
        document), the last attempt runs with the commit lock held from its snapshot to its
        commit: this process is the ledger's only writer and every commit takes that lock, so
        it cannot conflict, and single operations never fail for contention alone.
        """
        self._check_open()
        for attempt in range(OPTIMISTIC_TRIES + 1):
            exclusive = attempt == OPTIMISTIC_TRIES
            if exclusive:
                self._lock.acquire()
            try:
                tx = Transaction(self)
                tx._owns_docs = True  # fn's documents are committed before the caller sees them
                try:
                    result = fn(tx)
                    tx.commit()
                    return result
                except ConflictError:
                    if exclusive:
                        raise
                except BaseException:
                    if not tx._done:
                        tx.rollback()
                    raise
            finally:
                if exclusive:
                    self._lock.release()
        raise AssertionError("unreachable")

    def _check_open(self) -> None:
        if self._closed:
            raise kvcore.ClosedError("the database is closed")

    def _apply(self, tx_id: int, metas: dict[str, dict[str, Any]], written: list[tuple[str, str, dict | None]]) -> None:
        """Reflect a just-committed transaction in the derived state (caller holds the lock)."""
        state = self._state
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

    # ---------------------------------------------------------------- reads
    def _cached_items(self, coll: str) -> Iterator[tuple[str, dict]]:
        with self._lock:
            items = list(self._state.collections[coll].docs.items())
        for doc_id, raw in items:
            yield doc_id, decode_doc(raw)

    def _docs_at(self, coll: str, headers: Iterable[kvcore.Entry]) -> Iterator[tuple[str, dict]]:
        """Documents from header entries as of some transaction (time travel, snapshots)."""
        for entry in headers:
            header = Header.decode(entry.value)
            if header.deleted:
                continue
            props = self._ledger.entries(entry.tx_id, entry.index + 1, header.n)
            yield header.id, doc_from_entries(header, props, records.property_prefix(coll, header.id))

    # ---------------------------------------------------------------- audit
    def audit(
        self,
        trusted_state: kvcore.State | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> kvcore.AuditReport:
        """Recompute every ledger hash, then rebuild documents and indexes from the ledger and
        compare them with what is served; problems are listed in the report."""
        self._check_open()
        with self._lock:
            report = self._ledger.audit(trusted_state, progress)
            if report.first_bad_tx is not None:
                return report
            problems = list(report.problems)
            try:
                rebuilt = DbState()
                rebuilt.catch_up(self._ledger)
            except DocstoreError as e:
                problems.append(f"documents cannot be rebuilt from the ledger: {e}")
            else:
                problems += _compare_states(rebuilt, self._state)
        return kvcore.AuditReport(
            ok=not problems,
            tx_count=report.tx_count,
            entries=report.entries,
            first_bad_tx=report.first_bad_tx,
            problems=problems,
            root=report.root,
        )

    # ---------------------------------------------------------------- state
    def state(self) -> kvcore.State:
        """The ledger's current state: save it to verify later reads and proofs."""
        self._check_open()
        return self._ledger.state()

    @property
    def tx_id(self) -> int:
        return self._ledger.tx_id

    @property
    def verifying(self) -> bool:
        """Whether reads are checked against a trusted state (``open(..., verify=True)``)."""
        return self._trust is not None

    @property
    def trusted_state(self) -> kvcore.State | None:
        """The state a verifying database trusts (None if it does not verify)."""
        return None if self._trust is None else self._trust.state

    def _verified_state(self) -> kvcore.State:
        """The current state, after proving it extends the trusted one (and advancing to it)."""
        with self._verify_lock:  # read and advance the trusted state as one step
            return self._advance_trust()

    def _advance_trust(self) -> kvcore.State:
        trust = self._trust
        assert trust is not None
        link = trust.needs_link
        if link is not None:
            old, new = sorted(link, key=lambda s: s.tx_id)
            self._check_known(old)
            self._check_known(new)
            trust.confirm_link(self._ledger.prove_consistency(old.tx_id, new.tx_id))
        cur = self._ledger.state()
        trusted = trust.state
        if cur != trusted:
            if cur.tx_id < trusted.tx_id:
                trust.advance(cur, kvcore.ConsistencyProof(cur.tx_id, cur.tx_id, []))
            trust.advance(cur, self._ledger.prove_consistency(trusted.tx_id, cur.tx_id))
        return cur

    def _check_known(self, state: kvcore.State) -> None:
        from docstore.errors import VerificationError

        if state.tx_id > self._ledger.tx_id:
            raise VerificationError(
                f"the trusted state is at transaction {state.tx_id} but the ledger holds only "
                f"{self._ledger.tx_id}: it lost transactions"
            )

    def _verified(self, coll: str, doc_id: str, at_tx: int | None = None) -> dict:
        """A document read through a proof checked against the trusted state."""
        from docstore.proofs.prove import prove_document
        from docstore.proofs.verify import verify

        state = self._verified_state()
        doc = verify(prove_document(self, coll, doc_id, None, at_tx, state), state)
        if doc is None:
            from docstore.errors import DocumentNotFoundError

            raise DocumentNotFoundError(f"document {doc_id!r} in {coll!r} is deleted")
        return doc

    def prove_consistency(self, old_state: kvcore.State, new_state: kvcore.State | None = None) -> kvcore.ConsistencyProof:
        """Prove that ``new_state`` (default: now) extends ``old_state``.

        Raises VerificationError at once if ``old_state`` is not a state of this ledger.
        """
        from docstore.proofs.prove import check_own_state

        self._check_open()
        check_own_state(self._ledger, old_state, "old_state", trusted=True)
        new = self.state() if new_state is None else check_own_state(self._ledger, new_state, "new_state", trusted=False)
        if old_state.tx_id > new.tx_id:
            raise QueryError(f"state {old_state.tx_id} is newer than {new.tx_id}: swap the arguments")
        return self._ledger.prove_consistency(old_state.tx_id, new.tx_id)


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


def open(  # noqa: A001
    path: str | os.PathLike[str],
    *,
    readonly: bool = False,
    wait: bool | float = False,
    verify: bool = False,
    trusted_state: kvcore.State | None = None,
    state_file: str | os.PathLike[str] | None = None,
) -> Database:
    """Open (creating if missing) the embedded database in directory ``path``.

    ``readonly`` opens without the writer lock; ``wait`` waits for it. With ``verify=True``
    every document returned by ``get`` and ``find`` is first proven against a trusted state
    (``trusted_state``, or the one saved in ``state_file``), which advances only through
    verified consistency proofs and is saved to ``state_file`` atomically.
    """
    return Database(
        path, readonly=readonly, wait=wait, verify=verify, trusted_state=trusted_state, state_file=state_file
    )
