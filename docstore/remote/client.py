"""RemoteDatabase: a connection to an immudoc server with the embedded database's interface.

Verification: the client holds a :class:`~docstore.proofs.trust.TrustedState`. A verified
read asks the server for a proof relative to its current state ``S`` that also carries a
consistency proof from the state the client trusts ``T``; the client checks both with the
library's pure verifier and then makes ``S`` part of its trusted history:

- if ``T`` is still the trusted state, it advances to ``S`` (saved to the state file);
- if other threads moved the trusted state on meanwhile (to ``C``), ``S`` and ``C`` must be
  one history too: the client fetches and verifies a consistency proof between them (and
  advances if ``S`` is newer) — two states that each extend ``T`` could otherwise be a fork.

States already proven to be on the trusted history are remembered (a few thousand), so
concurrent readers rarely pay for that second proof.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import grpc

import kvcore

from docstore.errors import (
    CollectionNotFoundError,
    QueryError,
    SchemaError,
    VerificationError,
)
from docstore.ids import check_collection_name
from docstore.proofs.bundle import Proof, from_dict
from docstore.proofs.trust import TrustedState, read_state_file
from docstore.proofs.verify import verify, verify_consistency
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb
from docstore.rpc import immudoc_pb2_grpc as pb_grpc

_REMEMBERED_STATES = 4096


@dataclass(frozen=True)
class TLS:
    """TLS settings of a connection (PEM file paths).

    ``ca``: the CA certificate that signed the server's certificate (None: the system's CAs);
    ``cert``/``key``: this client's certificate and key, for servers that require mutual TLS;
    ``server_name``: the name to expect in the server's certificate (default: the host).
    """

    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None

    @classmethod
    def of(cls, tls: Any) -> TLS | None:
        if tls is None or tls is False:
            return None
        if tls is True:
            return cls()
        if isinstance(tls, cls):
            return tls
        if isinstance(tls, (str, os.PathLike)):
            return cls(ca=os.fspath(tls))
        if isinstance(tls, dict):
            unknown = set(tls) - {"ca", "cert", "key", "server_name"}
            if unknown:
                raise QueryError(f"unknown TLS settings {sorted(unknown)} (ca, cert, key, server_name)")
            return cls(**tls)
        raise QueryError(f"tls must be None, True, a CA certificate path, a dict or docstore.remote.TLS, got {tls!r}")

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert is None) != (self.key is None):
            raise QueryError("mutual TLS needs both the client certificate and its key")

        def read(path: str | None, what: str) -> bytes | None:
            if path is None:
                return None
            try:
                with open(path, "rb") as f:
                    return f.read()
            except OSError as e:
                raise QueryError(f"cannot read the {what} {path!r}: {e.strerror}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(self.ca, "CA certificate"),
            private_key=read(self.key, "client key"),
            certificate_chain=read(self.cert, "client certificate"),
        )


class RemoteDatabase:
    """A database served by an immudoc server. Get one with :func:`docstore.connect`."""

    def __init__(
        self,
        target: str,
        *,
        state_file: str | os.PathLike[str] | None = None,
        trusted_state: kvcore.State | None = None,
        trust_on_first_use: bool = False,
        verify: bool = True,
        token: str | None = None,
        tls: Any = None,
        timeout: float | None = 60.0,
        stream_timeout: float | None = None,
        max_message_mb: float = 64.0,
        batch_size: int = 1000,
    ) -> None:
        if not isinstance(target, str) or not target:
            raise QueryError(f"connect needs 'host:port', got {target!r}")
        if type(batch_size) is not int or batch_size < 1:
            raise QueryError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not verify and (trusted_state is not None or state_file is not None or trust_on_first_use):
            raise QueryError("trusted_state, state_file and trust_on_first_use go with verify=True")
        if trusted_state is not None:
            codec.state_to_pb(trusted_state, "trusted_state")  # QueryError for a malformed one
        self.target = target
        self.timeout = timeout
        self.stream_timeout = stream_timeout
        self.batch_size = batch_size
        self._closed = False
        self._metadata: tuple[tuple[str, str], ...] = ()
        if token is not None:
            if not isinstance(token, str) or not token or not token.isascii() or not token.isprintable() or " " in token:
                raise QueryError("a token is a non-empty string of printable ASCII without spaces")
            self._metadata = (("authorization", f"Bearer {token}"),)
        max_bytes = int(max_message_mb * 1024 * 1024)
        options = [
            ("grpc.max_receive_message_length", max(max_bytes, codec.REPLY_FLOOR_BYTES)),
            ("grpc.max_send_message_length", max_bytes),
        ]
        tls_cfg = TLS.of(tls)
        if tls_cfg is not None:
            if tls_cfg.server_name:
                options.append(("grpc.ssl_target_name_override", tls_cfg.server_name))
            self._channel = grpc.secure_channel(target, tls_cfg.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._stub = pb_grpc.DocstoreStub(self._channel)
        self._known: set[str] = set()  # collections known to exist (there is no drop)
        self._trust: TrustedState | None = None
        self._trust_lock = threading.RLock()
        self._on_history: OrderedDict[int, bytes] = OrderedDict()  # states proven on the trusted history
        try:
            info = self._call(self._stub.Info, pb.InfoRequest())
            if info.api_version != codec.API_VERSION:
                raise QueryError(f"the server speaks {info.api_version!r}, this client {codec.API_VERSION!r}")
            self.server_version = info.server_version
            self.role = info.role
            self.max_message_bytes = min(max_bytes, info.max_message_bytes or max_bytes)
            if verify:
                saved = None
                if state_file is not None and os.path.exists(state_file):
                    saved = read_state_file(state_file)
                if trusted_state is None and saved is None:
                    if not trust_on_first_use:
                        raise VerificationError(
                            "a verifying client needs a first trusted state: pass trusted_state=..., or a "
                            "state_file that holds one, or trust_on_first_use=True to accept the server's "
                            "(there is no silent trust on first use; verify=False turns verification off)"
                        )
                    trusted_state = codec.state_from_pb(info.state)
                self._trust = TrustedState(trusted_state, state_file)
                self._sync()
        except BaseException:
            self._channel.close()
            self._closed = True
            raise

    # ------------------------------------------------------------ lifecycle
    def close(self) -> None:
        """Close the connection (the trusted state is already saved)."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    def __enter__(self) -> RemoteDatabase:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<docstore.RemoteDatabase {self.target!r}{' verifying' if self._trust else ''}>"

    @property
    def readonly(self) -> bool:
        """Whether this connection may only read (a token of role "read")."""
        return self.role == "read"

    # ------------------------------------------------------------- calling
    def _call(self, method: Callable[..., Any], request: Any, timeout: float | None | bool = False) -> Any:
        if self._closed:
            raise kvcore.ClosedError("the database connection is closed")
        try:
            return method(request, timeout=self.timeout if timeout is False else timeout, metadata=self._metadata)
        except grpc.RpcError as e:
            raise codec.decode_error(e) from None

    def _stream(self, method: Callable[..., Any], request: Any) -> tuple[Any, Iterator[Any]]:
        """Start a server stream; returns (first message or None, iterator over the rest).

        The first message is read at once, so an invalid request fails here, as it would
        embedded. Closing the iterator (or dropping it) cancels the call.
        """
        if self._closed:
            raise kvcore.ClosedError("the database connection is closed")
        call = method(request, timeout=self.stream_timeout, metadata=self._metadata)
        try:
            first = next(call, None)
        except grpc.RpcError as e:
            call.cancel()
            raise codec.decode_error(e) from None

        def rest() -> Iterator[Any]:
            try:
                for msg in call:
                    yield msg
            except grpc.RpcError as e:
                raise codec.decode_error(e) from None
            finally:
                call.cancel()

        return first, rest()

    # ---------------------------------------------------------- collections
    def create_collection(self, name: str, schema: Any = None, indexes: Any = ()) -> Any:
        """Create a collection (with an optional JSON Schema and secondary indexes)."""
        from docstore.remote.collection import RemoteCollection

        check_collection_name(name)
        specs = [] if indexes is None else indexes if isinstance(indexes, (str, dict)) else list(indexes)
        self._call(
            self._stub.CreateCollection,
            pb.CreateCollectionRequest(
                name=name, schema=codec.dumps_opt(schema, SchemaError), indexes=codec.dumps(specs)
            ),
        )
        self._known.add(name)
        return RemoteCollection(self, name)

    def collection(self, name: str) -> Any:
        """An existing collection (``CollectionNotFoundError`` if there is none)."""
        from docstore.remote.collection import RemoteCollection

        self._check_collection(name)
        return RemoteCollection(self, name)

    def _check_collection(self, name: str) -> None:
        check_collection_name(name)
        if name not in self._known:
            try:
                self._call(self._stub.DescribeCollection, pb.DescribeCollectionRequest(name=name))
            except CollectionNotFoundError:
                raise CollectionNotFoundError(
                    f"collection {name!r} does not exist (create it with create_collection)"
                ) from None
            self._known.add(name)

    def __getitem__(self, name: str) -> Any:
        return self.collection(name)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in self.collections()

    def collections(self) -> list[str]:
        """Names of all collections, sorted."""
        names = list(self._call(self._stub.ListCollections, pb.ListCollectionsRequest()).names)
        self._known.update(names)
        return names

    # --------------------------------------------------------- transactions
    def transaction(self, at_tx: int | None = None) -> Any:
        """An optimistic transaction: reads as of one snapshot (now, or ledger transaction
        ``at_tx``), writes committed in one call that raises ConflictError if anything read or
        written changed since (see RemoteTransaction)."""
        from docstore.remote.transaction import RemoteTransaction

        if self._closed:
            raise kvcore.ClosedError("the database connection is closed")
        return RemoteTransaction(self, at_tx)

    # ---------------------------------------------------------------- state
    def state(self) -> kvcore.State:
        """The server's current state (verifying: proven to extend the trusted state, which
        advances to it)."""
        if self._trust is not None:
            return self._sync()
        return codec.state_from_pb(self._call(self._stub.State, pb.StateRequest()).state)

    @property
    def tx_id(self) -> int:
        return self.state().tx_id

    @property
    def verifying(self) -> bool:
        return self._trust is not None

    @property
    def trusted_state(self) -> kvcore.State | None:
        return None if self._trust is None else self._trust.state

    def prove_consistency(self, old_state: kvcore.State, new_state: kvcore.State | None = None) -> kvcore.ConsistencyProof:
        """Prove that ``new_state`` (default: now) extends ``old_state``."""
        if not isinstance(old_state, kvcore.State):
            raise QueryError(f"old_state must be a kvcore.State, got {type(old_state).__name__}")
        req = pb.ProveConsistencyRequest(old_state=codec.state_to_pb(old_state, "old_state"))
        if new_state is not None:
            req.new_state.CopyFrom(codec.state_to_pb(new_state, "new_state"))
        return codec.consistency_from_pb(self._call(self._stub.ProveConsistency, req).proof)

    def audit(self, trusted_state: kvcore.State | None = None, progress: Any = None) -> kvcore.AuditReport:
        """The server's full audit of its ledger and derived state (``progress`` is not
        reported remotely)."""
        req = pb.AuditRequest()
        if trusted_state is not None:
            req.trusted_state.CopyFrom(codec.state_to_pb(trusted_state))
        r = self._call(self._stub.Audit, req, timeout=None)
        return kvcore.AuditReport(
            ok=r.ok,
            tx_count=r.tx_count,
            entries=r.entries,
            first_bad_tx=r.first_bad_tx if r.HasField("first_bad_tx") else None,
            problems=list(r.problems),
            root=bytes(r.root),
        )

    # --------------------------------------------------------- verification
    def _remember(self, state: kvcore.State) -> None:
        self._on_history[state.tx_id] = state.root
        self._on_history.move_to_end(state.tx_id)
        while len(self._on_history) > _REMEMBERED_STATES:
            self._on_history.popitem(last=False)

    def _fetch_consistency(self, old: kvcore.State, new: kvcore.State) -> kvcore.ConsistencyProof:
        return self.prove_consistency(old, new)

    def _accept(self, state: kvcore.State, base: kvcore.State, proof: kvcore.ConsistencyProof | None) -> None:
        """``state`` was verified to extend (or be) ``base``, a state trusted at some point:
        make sure it is on the trusted history, advancing the trusted state if it is newer."""
        trust = self._trust
        assert trust is not None
        with self._trust_lock:
            cur = trust.state
            if state == cur or self._on_history.get(state.tx_id) == state.root:
                return
            if state.tx_id == cur.tx_id:
                raise VerificationError(
                    f"the server's root at transaction {state.tx_id} differs from the trusted one: "
                    "its history was rewritten (or it shows different histories to different readers)"
                )
            if base == cur and state.tx_id > cur.tx_id and proof is not None:
                trust.advance(state, proof)
            elif state.tx_id > cur.tx_id:
                trust.advance(state, self._fetch_consistency(cur, state))
            else:
                verify_consistency(state, cur, self._fetch_consistency(state, cur))
                self._remember(state)
                return
            self._remember(cur)

    def _sync(self) -> kvcore.State:
        """The server's current state, proven to extend the trusted one (which advances)."""
        trust = self._trust
        assert trust is not None
        link = trust.needs_link
        if link is not None:  # an explicit trusted_state and a different one in the state file
            old, new = sorted(link, key=lambda s: s.tx_id)
            trust.confirm_link(self._fetch_consistency(old, new))
        base = trust.state
        r = self._call(self._stub.State, pb.StateRequest(known_state=codec.state_to_pb(base)))
        state = codec.state_from_pb(r.state)
        self._check_not_behind(state, base)
        if state != base:
            if not r.HasField("consistency"):
                raise VerificationError("the server sent no consistency proof from the trusted state")
            cp = codec.consistency_from_pb(r.consistency)
            try:
                kvcore.verify_consistency(base, state, cp)
            except kvcore.VerificationError as e:
                raise VerificationError(
                    f"consistency check failed from trusted state {base.tx_id} to the server's "
                    f"{state.tx_id}: {e} (its history is not the one trusted)"
                ) from None
            self._accept(state, base, cp)
        return state

    @staticmethod
    def _check_not_behind(state: kvcore.State, base: kvcore.State) -> None:
        if state.tx_id < base.tx_id:
            raise VerificationError(
                f"the server's ledger is at transaction {state.tx_id}, before the trusted state "
                f"{base.tx_id}: it lost transactions (its history was rolled back)"
            )
        if state.tx_id == base.tx_id and state.root != base.root:
            raise VerificationError(
                f"the server's root at transaction {state.tx_id} differs from the trusted root: "
                "its history was rewritten"
            )

    def _proof(self, data: bytes) -> Proof:
        return from_dict(codec.loads(data, VerificationError))

    def _verified_get(self, coll: str, doc_id: str, at_tx: int | None) -> tuple[dict | None, int]:
        """(document or None for a proven deletion, revision), proven against the trusted state."""
        base = self.trusted_state
        assert base is not None
        req = pb.GetRequest(collection=coll, id=doc_id, prove=True, known_state=codec.state_to_pb(base))
        if at_tx is not None:
            req.at_tx = at_tx
        proof = self._proof(self._call(self._stub.Get, req).proof)
        if (proof.kind, proof.collection, proof.id) != ("document", coll, doc_id):
            raise VerificationError(
                f"the server proved {proof.kind} {proof.collection}/{proof.id}, not document {coll}/{doc_id}"
            )
        if at_tx is not None and proof.tx_id > at_tx:
            raise VerificationError(f"the server proved a revision of transaction {proof.tx_id}, after {at_tx}")
        self._check_not_behind(proof.state, base)
        doc = verify(proof, base)
        self._accept(proof.state, base, proof.consistency)
        return doc, proof.revision

    def _verified_page_state(self, page: pb.FindPage, base: kvcore.State) -> kvcore.State:
        """The state of a verified find's proofs, proven to extend ``base`` and accepted."""
        if not page.HasField("state"):
            raise VerificationError("the server sent no state for its proofs")
        state = codec.state_from_pb(page.state)
        self._check_not_behind(state, base)
        cp = None
        if state != base:
            if not page.HasField("consistency"):
                raise VerificationError("the server sent no consistency proof from the trusted state")
            cp = codec.consistency_from_pb(page.consistency)
            verify_consistency(base, state, cp)
        self._accept(state, base, cp)
        return state
