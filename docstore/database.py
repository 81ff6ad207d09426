"""The embedded database: the public front over an :class:`~docstore.engine.engine.Engine`.

:class:`Database` is thin: it opens the engine (ledger, derived state, signing keys), sets up
the trust tracker of a verifying reader, and hands collections and transactions the engine.
It implements the contract of :class:`docstore.api.Database`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import kvcore

from docstore import api
from docstore.collections.collection import Collection
from docstore.collections.indexspec import check_spec
from docstore.collections.schema import Schema
from docstore.documents.ids import check_collection_name
from docstore.engine.engine import Engine
from docstore.errors import (
    CollectionExistsError,
    CollectionNotFoundError,
    CorruptDataError,
    QueryError,
    VerificationError,
)
from docstore.proofs.trust import TrustTracker
from docstore.documents import txmeta
from docstore.transactions import txlog
from docstore.transactions.transaction import Transaction, run

if TYPE_CHECKING:
    from docstore.proofs.statebundle import StateProof

T = TypeVar("T")


def normalize_indexes(indexes: Iterable[Any]) -> list[dict[str, Any]]:
    """Index specs as stored (docstore.collections.indexspec.check_spec: ``{"field": f,
    "unique": bool}``, and ``"sparse"``, ``"partial_filter"`` when given); accepts field names
    or such dicts."""
    if isinstance(indexes, (str, dict)):
        indexes = [indexes]
    elif indexes is None:
        indexes = []
    elif not isinstance(indexes, Iterable) or isinstance(indexes, bytes):
        raise QueryError(f"indexes must be a list of index specs, got {type(indexes).__name__}")
    out: list[dict[str, Any]] = []
    for spec in indexes:
        checked = check_spec(spec)
        if any(i["field"] == checked["field"] for i in out):
            raise QueryError(f"index on {checked['field']!r} given twice")
        out.append(checked)
    return out


def check_options(require_reason: Any, schema_formats: Any) -> None:
    """QueryError unless the collection options are booleans."""
    for name, value in (("require_reason", require_reason), ("schema_formats", schema_formats)):
        if type(value) is not bool:
            raise QueryError(f"{name} is true or false, got {value!r}")


class Database:
    """An embedded immudoc database. Open it with :func:`docstore.open`."""

    local = True
    """The database runs in this process (its files are here): progress can be reported,
    keys rotated (a remote database says False)."""

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
        progress: Callable[[str, int, int], None] | None = None,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.path = os.fspath(path)
        has_state = trusted_state is not None or (state_file is not None and os.path.exists(state_file))
        if verify and not has_state and not trust_on_first_use:
            TrustTracker(None, None)  # raises: a verifying reader needs a first trusted state
        if not verify and (trusted_state is not None or state_file is not None or verifier_key is not None or trust_unsigned):
            raise QueryError("trusted_state, state_file, verifier_key and trust_unsigned go with verify=True")
        self._engine = engine = Engine.open(
            self.path, readonly=readonly, wait=wait,
            key_file=None if key_file is None else os.fspath(key_file), origin=origin, progress=progress,
            state_dir=None if state_dir is None else os.fspath(state_dir),
        )
        if verify:
            try:
                if not has_state:  # trust on first use: this ledger's current signed state and its keys
                    trusted_state = engine.checkpoint_or_none(engine.ledger.state()) or engine.ledger.state()
                    if verifier_key is None and engine.signing.has_key:
                        verifier_key = engine.signing.verifier_keys()
                engine.trust = TrustTracker(
                    trusted_state, state_file, verifier_keys=verifier_key,
                    trust_on_first_use=trust_on_first_use, trust_unsigned=trust_unsigned,
                )
            except BaseException:
                engine.close()
                raise

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the database (everything committed is already on disk)."""
        self._engine.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<docstore.Database {self.path!r} at transaction {self._engine.tx_id}>"

    @property
    def ledger(self) -> kvcore.Ledger:
        """The kvcore ledger underneath (read it, never write to it directly)."""
        return self._engine.ledger

    @property
    def readonly(self) -> bool:
        return self._engine.readonly

    def refresh(self) -> int:
        """Read-only databases: take in what the writer process committed since; returns tx id."""
        return self._engine.refresh()

    # ---------------------------------------------------------- collections
    def create_collection(
        self, name: str, schema: Any = None, indexes: Iterable[Any] = (), *, require_reason: bool = False,
        schema_formats: bool = False,
    ) -> api.Collection:
        """Create a collection (with an optional JSON Schema and secondary indexes). With
        ``require_reason``, every change of an existing document (update, replace, delete)
        must give a ``reason``, else ReasonRequiredError (an audit trail's rule: every
        correction says why). With ``schema_formats``, the schema's ``format`` keywords
        (``date``, ``email``, ``uuid``, ...) are assertions, not annotations."""
        check_collection_name(name)
        check_options(require_reason, schema_formats)
        if schema is not None:
            Schema(schema, schema_formats)
        specs = normalize_indexes(indexes)
        meta: dict[str, Any] = {"v": 1, "name": name, "schema": schema, "indexes": specs}
        if require_reason:
            meta["require_reason"] = True
        if schema_formats:
            meta["schema_formats"] = True

        def create(tx: Transaction) -> None:
            try:
                tx.staged.meta(name)
            except CollectionNotFoundError:
                tx.staged.set_meta(name, meta)
                return
            raise CollectionExistsError(f"collection {name!r} already exists")

        run(self._engine, create)
        return Collection(self._engine, name)

    def collection(self, name: str) -> api.Collection:
        """An existing collection (``CollectionNotFoundError`` if there is none)."""
        self._engine.check_open()
        check_collection_name(name)
        if not self._engine.has_collection(name):
            raise CollectionNotFoundError.named(name, self._engine.collection_names())
        return Collection(self._engine, name)

    def __getitem__(self, name: str) -> api.Collection:
        return self.collection(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self._engine.has_collection(name)

    def collections(self, *, verify: bool | None = None) -> list[str]:
        """Names of all collections, sorted (on a verifying database, proven complete as of the
        current state)."""
        self._engine.check_open()
        if self.verifying and verify is not False:
            from docstore.proofs import reader

            return reader.collections(self._engine)
        return self._engine.collection_names()

    def prove_collections(
        self, *, state: kvcore.State | None = None, known_state: kvcore.State | None = None,
        with_header: bool = False,
    ) -> StateProof:
        """Prove the complete list of collections as of the current state:
        :func:`docstore.verify` returns their names."""
        from docstore.proofs.provestate import prove_collections

        return prove_collections(self._engine, state, known_state, with_header)

    # ---------------------------------------------------------- transactions
    def transaction(
        self, at_tx: int | None = None, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> Transaction:
        """A multi-document, multi-collection transaction (see :class:`Transaction`).

        It reads the database as of ledger transaction ``at_tx`` (default: now); its commit
        conflicts with anything committed since then to what it read or wrote. With
        ``idempotency_key``, it is committed once however often it is retried (a commit
        finding the key recorded writes nothing and returns the first one's transaction).
        ``user``, ``reason`` and ``meta`` (a JSON object: ``{"meaning": "approval"}``, say) are
        committed with it, as its entry 0, and shown by ``history()`` and ``log()``
        (docs/documents.md, "Transaction metadata"); the time is the transaction's own.
        """
        self._engine.check_open()
        return Transaction(self._engine, at_tx, idempotency_key, txmeta.encode(user, reason, meta))

    def run_transaction(
        self, fn: Callable[[Transaction], T], *, user: str | None = None, reason: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> T:
        """Run ``fn(tx)`` in a transaction and commit it, retrying it on a conflict, as single
        operations are; returns what ``fn`` returns. ``fn`` may run more than once. ``user``,
        ``reason``, ``meta``: committed with it, as with :meth:`transaction`."""
        return run(self._engine, fn, None, txmeta.encode(user, reason, meta))

    # ---------------------------------------------------------------- audit
    def audit(
        self,
        trusted_state: kvcore.State | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> kvcore.AuditReport:
        """Recompute every ledger hash, then rebuild documents and indexes from the ledger and
        compare them with what is served; problems are listed in the report.
        ``progress(done, total)`` counts ledger entries, each twice (hashed, then rebuilt), and
        is called at least every 65,536 entries.

        A failed audit makes the database refuse every read and write (CorruptDataError) until
        it is reopened: nothing is served from data known to be damaged."""
        engine = self._engine
        if trusted_state is None and engine.trust is not None:  # a verifying reader audits against its trust
            from docstore.proofs import reader

            try:
                reader.current_state(engine)  # refuses a ledger behind or beside the trusted state
            except CorruptDataError:  # an audit already failed: audit again, against the trusted state
                pass
            trusted_state = engine.trust.state
        return engine.audit(trusted_state, progress)

    @property
    def on_postgres(self) -> bool:
        """Whether the ledger is in PostgreSQL (else in a directory)."""
        return self._engine.url is not None

    def backup(
        self, directory: str | os.PathLike[str], *, with_key: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Back this (directory) database up into ``directory``, a new or empty directory: its
        ledger as of the state read now (a writer may go on), a manifest naming that state and
        its signed checkpoint, and with ``with_key`` its signing key. Everything else
        (documents' locations, indexes, the state map) is rebuilt by :func:`docstore.restore`,
        which checks the copy against the manifest. Returns the manifest. A database on
        PostgreSQL: StorageError (use pg_dump)."""
        from docstore.backup import backup

        return backup(self, directory, self._engine.signing.key_path, with_key=with_key, progress=progress)

    def publish_state(self) -> tuple[int, int]:
        """On a PostgreSQL database: publish this writer's derived state (document locations,
        indexes, the state map) into PostgreSQL, replacing an older published one, so that a
        server started without a state directory takes it and catches up from the log instead
        of rebuilding it from the whole log (docs/scale-out.md, "Stateless servers"). Returns
        (the transaction it reflects, its size in bytes). ``immudoc serve`` on PostgreSQL does
        this every ``--publish-state-seconds``. StorageError on a directory database."""
        snap = self._engine.publish_state()
        return snap.tx_id, snap.size

    # ---------------------------------------------------------------- the audit trail
    def log(
        self, *, user: str | None = None, since: Any = None, until: Any = None, limit: int = 100,
        before_tx: int | None = None,
    ) -> list[dict[str, Any]]:
        """The ledger's transactions, newest first, with who, when and why: each
        ``{"tx_id", "timestamp_ns", "user", "reason", "meta", "entries"}``; only ``user``'s
        (when given), committed from ``since`` to ``until`` (inclusive: timezone-aware
        datetimes, ISO 8601 texts or nanoseconds), before ``before_tx`` (to page), at most
        ``limit`` (1 to 10,000). A verifying database proves each (docstore.proofs.txproof)."""
        engine = self._engine
        records = txlog.log(engine, user=user, since=since, until=until, limit=limit, before_tx=before_tx)
        if engine.trust is not None and records:
            from docstore.proofs import reader
            from docstore.proofs.txproof import check_record, prove_tx, verify_tx

            state = reader.current_state(engine)
            for i, r in enumerate(records):
                if r["tx_id"] > state.tx_id:
                    raise VerificationError(f"transaction {r['tx_id']} is beyond the trusted state")
                records[i] = check_record(r, *verify_tx(prove_tx(engine, r["tx_id"], state), r["tx_id"], state))
        return records

    def tx_at_time(self, at_time: Any, state: kvcore.State | None = None) -> int:
        """The last transaction committed at or before ``at_time`` (0 if none): what
        ``at_time=`` reads as of (proven on a verifying database); with ``state``, among the
        transactions up to it."""
        if state is not None:
            self._engine.check_open()
            return txlog.tx_at_time(self._engine, txlog.time_ns(at_time), min(state.tx_id, self._engine.tx_id))
        return txlog.resolve(self._engine, None, at_time) or 0

    def prove_tx(self, tx_id: int, state: kvcore.State | None = None, *, header_only: bool = False) -> dict[str, Any]:
        """A proof of transaction ``tx_id``'s header (its time) and entry 0 (its metadata, or
        that it has none; ``header_only``: not that) relative to ``state`` (default: now):
        docstore.proofs.txproof, whose ``verify_tx`` (``verify_header``) checks it."""
        from docstore.proofs.txproof import prove_header, prove_tx

        engine = self._engine
        engine.check_open()
        state = state if state is not None else engine.current_state()
        if type(tx_id) is not int or not 1 <= tx_id <= state.tx_id:
            raise QueryError(f"transaction {tx_id!r} is not in the state (transactions 1 to {state.tx_id})")
        return prove_header(engine, tx_id, state) if header_only else prove_tx(engine, tx_id, state)

    def tx_wrote(self, tx_id: int, collection: str) -> bool:
        """Whether transaction ``tx_id`` wrote a document or the definition of ``collection``."""
        from docstore.documents import records

        check_collection_name(collection)
        engine = self._engine
        engine.check_open()
        if type(tx_id) is not int or not 1 <= tx_id <= engine.tx_id:
            raise QueryError(f"transaction {tx_id!r} does not exist")
        prefix, definition = records.header_prefix(collection), records.collection_key(collection)
        return any(e.key.startswith(prefix) or e.key == definition for e in engine.ledger.entries(tx_id))

    # ---------------------------------------------------------------- state
    def state(self) -> kvcore.State:
        """The ledger's current state: save it to verify later reads and proofs. (A verifying
        database authenticates it first: not behind its trusted state, and signed by a pinned
        key if newer; the trusted state advances to it.)"""
        engine = self._engine
        if engine.trust is not None:
            from docstore.proofs import reader

            return reader.current_state(engine)
        return engine.current_state()

    @property
    def tx_id(self) -> int:
        return self._engine.tx_id

    @property
    def verifying(self) -> bool:
        """Whether reads are checked against a trusted state (``open(..., verify=True)``)."""
        return self._engine.trust is not None

    @property
    def trusted_state(self) -> kvcore.State | None:
        """The state a verifying database trusts (None if it does not verify)."""
        trust = self._engine.trust
        return None if trust is None else trust.state

    def prove_consistency(self, old_state: kvcore.State, new_state: kvcore.State | None = None) -> kvcore.ConsistencyProof:
        """Prove that ``new_state`` (default: now) extends ``old_state``.

        Raises VerificationError at once if ``old_state`` is not a state of this ledger.
        """
        engine = self._engine
        engine.check_open()
        engine.own_state(old_state, "old_state", trusted=True)
        new = self.state() if new_state is None else engine.own_state(new_state, "new_state", trusted=False)
        if old_state.tx_id > new.tx_id:
            raise QueryError(f"state {old_state.tx_id} is newer than {new.tx_id}: swap the arguments")
        return engine.prove_consistency(old_state, new)

    # ------------------------------------------------------ signed checkpoints
    @property
    def origin(self) -> str:
        """The ledger's name: the origin line of its checkpoints and its key's name."""
        self._engine.check_open()
        return self._engine.signing.current.name

    def verifier_key(self) -> str:
        """The verifier key of the ledger's current signing key (``<name>+<id>+<key>``): give it
        to whoever verifies, out of band; they pin it."""
        return self.verifier_keys()[0]

    def verifier_keys(self) -> list[str]:
        """The current verifier key, then those of earlier keys that still co-sign."""
        self._engine.check_open()
        return self._engine.signing.verifier_keys()

    def checkpoint(self, state: kvcore.State | None = None) -> str:
        """The signed checkpoint (C2SP tlog-checkpoint in a signed note) of ``state`` (default:
        the current state), signed by the current key and any earlier ones kept after a
        rotation. A verifying database signs only a state it authenticates (see :meth:`state`)."""
        engine = self._engine
        if engine.trust is not None:
            from docstore.proofs import reader

            state = reader.current_state(engine, None if state is None else engine.own_state(state, "state", trusted=False))
        return engine.checkpoint(state)

    def rotate_key(self, keep_old: bool = True) -> str:
        """Make a new signing key (same name); returns its verifier key.

        With ``keep_old`` the previous keys keep co-signing every checkpoint, so verifiers
        that pin them go on verifying until they pin the new key; :meth:`retire_old_keys`
        ends that. The key file is replaced atomically."""
        engine = self._engine
        engine.check_writable()
        with engine.lock:
            return engine.signing.rotate(keep_old)

    def retire_old_keys(self) -> None:
        """Stop co-signing with the keys kept by :meth:`rotate_key` (only the current one signs)."""
        engine = self._engine
        engine.check_writable()
        with engine.lock:
            engine.signing.retire_old()


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
    progress: Callable[[str, int, int], None] | None = None,
    state_dir: str | os.PathLike[str] | None = None,
) -> Database:
    """Open (creating if missing) the embedded database in directory ``path``, or in the
    PostgreSQL database a ``postgresql://user@host/dbname`` URL names (``pip install
    'immudoc[postgres]'``): its ledger there, its derived state and signing key in the local
    directory ``state_dir`` (default ``$IMMUDOC_STATE_DIR``, else one under ``~/.cache/immudoc``
    named after the URL), one writer process at a time (docs/scale-out.md). A second machine
    writing or signing for the same database needs the same key (``key_file``).

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

    Opening is O(1) when the derived state on disk is up to date. When it must be built from
    the log (the first writable open of a database of an earlier version, or after it was
    found damaged or missing), ``progress(stage, done, total)`` is called as it goes:
    ``stage`` is ``"key index"`` (``done`` and ``total`` count transactions) or
    ``"derived state"`` (they count ledger entries).
    """
    return Database(
        path, readonly=readonly, wait=wait, verify=verify, trusted_state=trusted_state, state_file=state_file,
        verifier_key=verifier_key, trust_unsigned=trust_unsigned, trust_on_first_use=trust_on_first_use,
        key_file=key_file, origin=origin, progress=progress, state_dir=state_dir,
    )
