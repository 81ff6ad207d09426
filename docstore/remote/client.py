"""RemoteDatabase: a database served by an immudoc server, with the embedded database's
interface (the contract of :class:`docstore.api.Database`).

It is a thin front over a :class:`~docstore.remote.connection.Connection`, which owns the
channel, the calls and the verifying client's trust (see that module for how reads are
verified); its collections and transactions work through the same connection.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import kvcore

from docstore import api
from docstore.documents.ids import check_collection_name
from docstore.errors import ConflictError, QueryError, SchemaError, VerificationError
from docstore.proofs import checkpoint as ckpt
from docstore.remote.connection import TLS, Connection, remote_tx_meta
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb

if TYPE_CHECKING:
    from docstore.proofs.statebundle import StateProof
    from docstore.remote.transaction import RemoteTransaction

T = TypeVar("T")
RETRIES = 5
"""How many times :meth:`RemoteDatabase.run_transaction` runs a function that keeps conflicting."""

__all__ = ["TLS", "RemoteDatabase"]


class RemoteDatabase:
    """A database served by an immudoc server. Get one with :func:`docstore.connect`."""

    local = False
    """The database runs in another process: progress is not reported, keys are rotated where
    the database is."""

    def __init__(self, target: str, **options: Any) -> None:
        self._conn = Connection(target, **options)

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection (the trusted state is already saved)."""
        self._conn.close()

    def __enter__(self) -> RemoteDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<docstore.RemoteDatabase {self.target!r}{' verifying' if self.verifying else ''}>"

    @property
    def target(self) -> str:
        return self._conn.target

    @property
    def timeout(self) -> float | None:
        """Deadline in seconds of each call (None: none)."""
        return self._conn.timeout

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        self._conn.timeout = value

    @property
    def stream_timeout(self) -> float | None:
        """Deadline in seconds of find and history streams (None: none)."""
        return self._conn.stream_timeout

    @stream_timeout.setter
    def stream_timeout(self, value: float | None) -> None:
        self._conn.stream_timeout = value

    @property
    def server_version(self) -> str:
        return self._conn.server_version

    @property
    def role(self) -> str:
        """This connection's role: "write", "read" (auth on), or "" (auth off)."""
        return self._conn.role

    @property
    def readonly(self) -> bool:
        """Whether this connection may only read (a token of role "read")."""
        return self._conn.role == "read"

    @property
    def max_message_bytes(self) -> int:
        return self._conn.max_message_bytes

    @property
    def batch_size(self) -> int:
        return self._conn.batch_size

    # ---------------------------------------------------------- collections
    def create_collection(
        self, name: str, schema: Any = None, indexes: Iterable[Any] = (), *, require_reason: bool = False,
        schema_formats: bool = False,
    ) -> api.Collection:
        """Create a collection (with an optional JSON Schema and secondary indexes; with
        ``require_reason``, every change of an existing document must give a reason; with
        ``schema_formats``, the schema's ``format`` keywords are assertions)."""
        from docstore.database import check_options
        from docstore.remote.collection import RemoteCollection

        check_collection_name(name)
        check_options(require_reason, schema_formats)
        conn = self._conn
        specs = [] if indexes is None else indexes if isinstance(indexes, (str, dict)) else list(indexes)
        conn.call(
            conn.stub.CreateCollection,
            pb.CreateCollectionRequest(
                name=name, schema=codec.dumps_opt(schema, SchemaError), indexes=codec.dumps(specs),
                require_reason=require_reason, schema_formats=schema_formats,
            ),
        )
        conn.known_collections.add(name)
        return RemoteCollection(conn, name)

    def collection(self, name: str) -> api.Collection:
        """An existing collection (``CollectionNotFoundError`` if there is none)."""
        from docstore.remote.collection import RemoteCollection

        self._conn.check_collection(name)
        return RemoteCollection(self._conn, name)

    def __getitem__(self, name: str) -> api.Collection:
        return self.collection(name)

    def __contains__(self, name: object) -> bool:
        from docstore.errors import CollectionNotFoundError

        if not isinstance(name, str):
            return False
        try:
            self._conn.check_collection(name)
        except CollectionNotFoundError:
            return False
        return True

    def collections(self, *, verify: bool | None = None) -> list[str]:
        """Names of all collections, sorted (on a verifying connection, proven complete as of
        the server's current state)."""
        conn = self._conn
        if conn.trust is not None and verify is not False:
            names = conn.verified_collections()
        else:
            names = list(conn.call(conn.stub.ListCollections, pb.ListCollectionsRequest()).names)
        conn.known_collections.update(names)
        return names

    def prove_collections(
        self, *, state: kvcore.State | None = None, known_state: kvcore.State | None = None,
        with_header: bool = False,
    ) -> StateProof:
        """Prove the complete list of collections as of the current state (not checked here:
        verify it with :func:`docstore.verify`, which returns their names)."""
        return self._conn.prove_state("", "collections", state=state, known_state=known_state, with_header=with_header)

    # --------------------------------------------------------- transactions
    def transaction(
        self, at_tx: int | None = None, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> RemoteTransaction:
        """An optimistic transaction: reads as of one snapshot (now, or ledger transaction
        ``at_tx``), writes committed in one call that raises ConflictError if anything read or
        written changed since (see RemoteTransaction). ``idempotency_key``: committed once
        however often it is retried (the commit call always carries one). ``reason`` and
        ``meta`` are committed with it; its ``user`` is the principal the server authenticated
        (``user=`` is refused)."""
        from docstore.remote.transaction import RemoteTransaction

        if self._conn.closed:
            raise kvcore.ClosedError("the database connection is closed")
        tx_meta = remote_tx_meta(user, reason, meta)
        return RemoteTransaction(self._conn, at_tx, idempotency_key, tx_meta)

    def run_transaction(
        self, fn: Callable[[RemoteTransaction], T], *, user: str | None = None, reason: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> T:
        """Run ``fn(tx)`` in a transaction and commit it, running it again (a new transaction)
        when the commit conflicts, up to :data:`RETRIES` times; returns what ``fn`` returns.
        ``fn`` may run more than once. ``reason``, ``meta``: as :meth:`transaction`."""
        for attempt in range(RETRIES + 1):
            tx = self.transaction(user=user, reason=reason, meta=meta)
            try:
                result = fn(tx)
                tx.commit()
                return result
            except ConflictError:
                if attempt == RETRIES:
                    raise
            except BaseException:
                if not tx.done:
                    tx.rollback()
                raise
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- the audit trail
    def log(
        self, *, user: str | None = None, since: Any = None, until: Any = None, limit: int = 100,
        before_tx: int | None = None,
    ) -> list[dict[str, Any]]:
        """The server's transactions, newest first, with who (the principal), when and why
        (see docstore.Database.log); proven on a verifying connection."""
        return self._conn.log(user, since, until, limit, before_tx)

    def tx_at_time(self, at_time: Any) -> int:
        """The last transaction committed at or before ``at_time`` (0 if none); proven on a
        verifying connection."""
        return self._conn.tx_at_time(at_time)

    # ---------------------------------------------------------------- state
    def state(self) -> kvcore.State:
        """The server's current state (verifying: proven to extend the trusted state, which
        advances to it)."""
        return self._conn.current_state()

    @property
    def tx_id(self) -> int:
        return self.state().tx_id

    @property
    def verifying(self) -> bool:
        return self._conn.trust is not None

    @property
    def trusted_state(self) -> kvcore.State | None:
        trust = self._conn.trust
        return None if trust is None else trust.state

    def checkpoint(self, state: kvcore.State | None = None) -> str:
        """The server's signed checkpoint of its current state (``state`` must be None or the
        current one; on a verifying connection it is authenticated first)."""
        conn = self._conn
        if state is not None and state != self.state():
            raise QueryError("a remote database signs its current state only")
        trust = conn.trust
        base = trust.state if trust is not None else None
        req = pb.StateRequest(known_state=codec.state_to_pb(base)) if base is not None else pb.StateRequest()
        r = conn.call(conn.stub.State, req)
        if trust is not None:
            current = codec.state_from_pb(r.state)
            trust.check_current(current, base)
            cp = codec.consistency_from_pb(r.consistency) if r.HasField("consistency") else None
            trust.accept(current, r.checkpoint or None, conn.fetch, base, cp)
            # accept() looks at no signature for the trusted state itself: the text returned must be
            # a checkpoint of the current state all the same (signed by a pinned key, if any)
            c = ckpt.open_checkpoint(r.checkpoint, trust.pinned) if trust.pinned else ckpt.read_unverified(r.checkpoint)
            if c.state != current:
                raise VerificationError(
                    f"the server's checkpoint names state {c.state.tx_id}, not its current state {current.tx_id}"
                )
        return str(r.checkpoint)

    @property
    def server_verifier_keys(self) -> list[str]:
        """The verifier keys the server named when connecting (shown, never pinned by the client)."""
        return list(self._conn.server_verifier_keys)

    def verifier_key(self) -> str:
        """The verifier key the server says it signs with. Pin it only if you got it from a
        channel you trust (``immudoc key`` on the server): the server could name any key."""
        keys = self.verifier_keys()
        if not keys:
            raise QueryError("the server publishes no verifier key")
        return keys[0]

    def verifier_keys(self) -> list[str]:
        """The verifier keys the server says it signs with, current first (see :meth:`verifier_key`)."""
        conn = self._conn
        return list(conn.call(conn.stub.Info, pb.InfoRequest()).verifier_keys)

    def prove_consistency(self, old_state: kvcore.State, new_state: kvcore.State | None = None) -> kvcore.ConsistencyProof:
        """Prove that ``new_state`` (default: now) extends ``old_state``."""
        return self._conn.prove_consistency(old_state, new_state)

    def audit(self, trusted_state: kvcore.State | None = None, progress: Any = None) -> kvcore.AuditReport:
        """The server's full audit of its ledger and derived state (``progress`` is not
        reported remotely). The verdict is the server's word; on a verifying connection the
        state it audited (transaction count and root) must be on the trusted history, or
        VerificationError."""
        conn = self._conn
        req = pb.AuditRequest()
        if trusted_state is not None:
            req.trusted_state.CopyFrom(codec.state_to_pb(trusted_state))
        r = conn.call(conn.stub.Audit, req, timeout=None)
        if conn.trust is not None and r.ok:
            audited = kvcore.State(r.tx_count, bytes(r.root))
            conn.sync()
            conn.trust.accept(audited, None, conn.fetch)
        return kvcore.AuditReport(
            ok=r.ok,
            tx_count=r.tx_count,
            entries=r.entries,
            first_bad_tx=r.first_bad_tx if r.HasField("first_bad_tx") else None,
            problems=list(r.problems),
            root=bytes(r.root),
        )
