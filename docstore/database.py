"""The embedded database: a directory holding a kvcore ledger and derived state."""

from __future__ import annotations

import errno
import os
import threading
import time
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
from docstore.proofs import checkpoint as ckpt
from docstore.proofs import keyfile
from docstore.proofs.note import NoteError, Signer
from docstore.proofs.trust import TrustTracker
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
        trusted_state: kvcore.State | str | None = None,
        state_file: str | os.PathLike[str] | None = None,
        verifier_key: Any = None,
        trust_unsigned: bool = False,
        trust_on_first_use: bool = False,
        key_file: str | os.PathLike[str] | None = None,
        origin: str | None = None,
    ) -> None:
        self.path = os.fspath(path)
        self._trust: TrustTracker | None = None
        self._damaged: str | None = None
        self._closed = False
        if verify and trusted_state is None and not (state_file is not None and os.path.exists(state_file)):
            if not trust_on_first_use:
                TrustTracker(None, None)  # raises: a verifying reader needs a first trusted state
        elif not verify and (trusted_state is not None or state_file is not None or verifier_key is not None or trust_unsigned):
            raise QueryError("trusted_state, state_file, verifier_key and trust_unsigned go with verify=True")
        if origin is not None:
            try:
                from docstore.proofs.note import check_key_name

                check_key_name(origin)
            except NoteError as e:
                raise QueryError(f"origin: {e}") from None
        if not readonly:
            _prepare_dir(self.path)
        self._ledger = kvcore.Ledger.open(os.path.join(self.path, "ledger"), readonly=readonly, wait=wait)
        try:
            self._key_path = os.fspath(key_file) if key_file is not None else (
                os.environ.get(keyfile.KEY_FILE_ENV) or os.path.join(self.path, keyfile.KEY_FILE)
            )
            self._signers: list[Signer] | None = keyfile.load_or_create(self._key_path, origin, create=not readonly)
        except BaseException:
            self._ledger.close()
            raise
        self._signed: dict[kvcore.State, str] = {}
        self._lock = threading.RLock()
        if verify:
            try:
                if trusted_state is None and trust_on_first_use and not (state_file and os.path.exists(state_file)):
                    # trust on first use: this ledger's current signed state and its keys
                    trusted_state = self._sign_or_none(self._ledger.state()) or self._ledger.state()
                    if verifier_key is None and self._signers:
                        verifier_key = [str(k.verifier) for k in self._signers]
                self._trust = TrustTracker(
                    trusted_state, state_file, verifier_keys=verifier_key,
                    trust_on_first_use=trust_on_first_use, trust_unsigned=trust_unsigned,
                )
            except BaseException:
                self._ledger.close()
                raise
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

    def collections(self, *, verify: bool | None = None) -> list[str]:
        """Names of all collections, sorted (a verifying database refuses unless
        ``verify=False``: that the list is complete is not proven)."""
        self._check_open()
        from docstore.errors import refuse_unproven

        refuse_unproven(self._trust is not None, verify, "the list of collections")
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
        if self._damaged is not None:
            from docstore.errors import CorruptDataError

            raise CorruptDataError(
                f"the database refuses reads and writes: its audit failed ({self._damaged}); "
                "reopen it after repairing it"
            )

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
        compare them with what is served; problems are listed in the report.

        A failed audit makes the database refuse every read and write (CorruptDataError) until
        it is reopened: nothing is served from data known to be damaged."""
        if self._closed:
            raise kvcore.ClosedError("the database is closed")
        with self._lock:
            report = self._ledger.audit(trusted_state, progress)
            if report.first_bad_tx is not None:
                self._damaged = f"transaction {report.first_bad_tx}"
                return report
            problems = list(report.problems)
            try:
                rebuilt = DbState()
                rebuilt.catch_up(self._ledger)
            except DocstoreError as e:
                problems.append(f"documents cannot be rebuilt from the ledger: {e}")
            else:
                problems += _compare_states(rebuilt, self._state)
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

    # ------------------------------------------------------ signed checkpoints
    @property
    def origin(self) -> str:
        """The ledger's name: the origin line of its checkpoints and its key's name."""
        return self._signer().name

    def verifier_key(self) -> str:
        """The verifier key of the ledger's current signing key (``<name>+<id>+<key>``): give it
        to whoever verifies, out of band; they pin it."""
        return str(self._signer().verifier)

    def verifier_keys(self) -> list[str]:
        """The current verifier key, then those of earlier keys that still co-sign."""
        self._signer()
        assert self._signers is not None
        return [str(s.verifier) for s in self._signers]

    def checkpoint(self, state: kvcore.State | None = None) -> str:
        """The signed checkpoint (C2SP tlog-checkpoint in a signed note) of ``state`` (default:
        the current state), signed by the current key and any earlier ones kept after a
        rotation."""
        self._check_open()
        note = self._signed.get(state) if state is not None else None  # signed before: its own
        if note is not None:
            return note
        state = self._ledger.state() if state is None else self._own_state(state)
        note = self._signed.get(state)
        if note is None:
            signer = self._signer()
            assert self._signers is not None
            note = ckpt.sign(signer.name, state, self._signers)
            if len(self._signed) >= 64:
                self._signed.clear()
            self._signed[state] = note
        return note

    def rotate_key(self, keep_old: bool = True) -> str:
        """Make a new signing key (same name); returns its verifier key.

        With ``keep_old`` the previous keys keep co-signing every checkpoint, so verifiers
        that pin them go on verifying until they pin the new key; :meth:`retire_old_keys`
        ends that. The key file is replaced atomically."""
        self._check_writable()
        with self._lock:
            signer = self._signer()
            assert self._signers is not None
            new = Signer.generate(signer.name)
            keys = [new] + (self._signers if keep_old else [])
            keyfile.write(self._key_path, keys[: keyfile.MAX_KEYS])
            self._signers = keys[: keyfile.MAX_KEYS]
            self._signed.clear()
            return str(new.verifier)

    def retire_old_keys(self) -> None:
        """Stop co-signing with the keys kept by :meth:`rotate_key` (only the current one signs)."""
        self._check_writable()
        with self._lock:
            signer = self._signer()
            keyfile.write(self._key_path, [signer])
            self._signers = [signer]
            self._signed.clear()

    def _signer(self) -> Signer:
        self._check_open()
        if not self._signers:
            from docstore.errors import StorageError

            raise StorageError(
                f"this database has no signing key ({self._key_path!r} is missing): open it once "
                "for writing to create one, or give its key file (key_file=..., IMMUDOC_KEY_FILE)"
            )
        return self._signers[0]

    def _check_writable(self) -> None:
        self._check_open()
        if self._ledger.readonly:
            raise kvcore.ReadOnlyError("the database is open read-only")

    def _own_state(self, state: kvcore.State) -> kvcore.State:
        from docstore.proofs.prove import check_own_state

        return check_own_state(self._ledger, state, "state", trusted=False)

    def _sign_or_none(self, state: kvcore.State) -> str | None:
        """The state's checkpoint, or None if this database has no key (read-only, never keyed)."""
        return self.checkpoint(state) if self._signers else None

    # ------------------------------------------------------- verifying reads
    def _fetch(self, old: kvcore.State, new: kvcore.State) -> kvcore.ConsistencyProof:
        from docstore.errors import VerificationError

        for s in (old, new):
            if s.tx_id > self._ledger.tx_id:
                raise VerificationError(
                    f"the trusted state is at transaction {s.tx_id} but the ledger holds only "
                    f"{self._ledger.tx_id}: it lost transactions"
                )
        return self._ledger.prove_consistency(old.tx_id, new.tx_id)

    def _trusted_base(self) -> kvcore.State:
        """The trusted state, after checking the ledger has not fallen behind it."""
        trust = self._trust
        assert trust is not None
        trust.link(self._fetch)
        trust.check_current(self._ledger.state())
        return trust.state

    def _authenticate(self, proof: Any) -> Any:
        """Accept a proof's state into the trusted history (signed if newer); returns the proof
        relative to that state alone."""
        trust = self._trust
        assert trust is not None
        trust.accept(proof.state, proof.checkpoint, self._fetch, proof.consistency_state, proof.consistency)
        return proof._replace(consistency=None, consistency_state=None)

    def _verified(self, coll: str, doc_id: str, at_tx: int | None = None) -> dict:
        """A document read through a proof checked against the trusted state."""
        doc, _rev = self._verified_revision(coll, doc_id, at_tx)
        if doc is None:
            from docstore.errors import DocumentNotFoundError

            raise DocumentNotFoundError(f"document {doc_id!r} in {coll!r} is deleted")
        return doc

    def _verified_revision(self, coll: str, doc_id: str, at_tx: int | None) -> tuple[dict | None, int]:
        from docstore.proofs.prove import prove_document
        from docstore.proofs.verify import verify

        trust = self._trust
        assert trust is not None
        self._check_open()
        started = time.monotonic()
        with self._verify_lock:
            proof = self._authenticate(prove_document(self, coll, doc_id, None, at_tx, None, self._trusted_base()))
        doc = verify(proof, proof.state)
        if at_tx is None:
            trust.seen_revision(coll, doc_id, proof.revision, started)
        return doc, proof.revision

    def _verified_meta(self, coll: str) -> dict[str, Any]:
        """A collection's current definition, proven against the trusted state."""
        from docstore.proofs.prove import prove_collection
        from docstore.proofs.verify import verify

        trust = self._trust
        assert trust is not None
        self._check_open()
        with self._verify_lock:
            proof = self._authenticate(prove_collection(self, coll, None, None, self._trusted_base()))
        meta = verify(proof, proof.state)
        if not same_json(meta, self._state.collections[coll].meta):
            from docstore.errors import VerificationError

            raise VerificationError(
                f"collection {coll!r}: the definition the database serves differs from the one the ledger proves"
            )
        return meta

    def _verified_at(self, coll: str, doc_id: str, tx_id: int) -> Any:
        """A proof of the revision current at ``tx_id``, checked; returns the verified proof."""
        from docstore.proofs.prove import prove_document
        from docstore.proofs.verify import verify

        trust = self._trust
        assert trust is not None
        with self._verify_lock:
            proof = self._authenticate(prove_document(self, coll, doc_id, None, tx_id, None, self._trusted_base()))
        verify(proof, proof.state)
        return proof

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
    trusted_state: kvcore.State | str | None = None,
    state_file: str | os.PathLike[str] | None = None,
    verifier_key: Any = None,
    trust_unsigned: bool = False,
    trust_on_first_use: bool = False,
    key_file: str | os.PathLike[str] | None = None,
    origin: str | None = None,
) -> Database:
    """Open (creating if missing) the embedded database in directory ``path``.

    ``readonly`` opens without the writer lock; ``wait`` waits for it.

    Signing: every database has an Ed25519 key that signs its checkpoints (:meth:`Database.checkpoint`),
    kept in ``key_file`` (default: ``$IMMUDOC_KEY_FILE``, else ``signing.key`` in the
    directory, mode 0600), created with the database (or on the first writable open of an
    older one) under the name ``origin`` (default: a random ``immudoc/<hex>``).

    Verifying: with ``verify=True`` every document ``get``, ``find`` and ``history`` return is
    first proven against a trusted state (``trusted_state``: a State or a checkpoint's text;
    or the one saved in ``state_file``); reads that cannot be proven (``count``,
    ``distinct``, ...) refuse unless given ``verify=False``. The trusted state advances to a
    newer one only if that state's checkpoint is signed by a pinned ``verifier_key`` (a key
    string or a list; see :meth:`Database.verifier_key`) and extends it; ``trust_unsigned=True``
    accepts a consistency proof alone (and warns). ``state_file`` is kept up to date atomically.
    """
    return Database(
        path, readonly=readonly, wait=wait, verify=verify, trusted_state=trusted_state, state_file=state_file,
        verifier_key=verifier_key, trust_unsigned=trust_unsigned, trust_on_first_use=trust_on_first_use,
        key_file=key_file, origin=origin,
    )
