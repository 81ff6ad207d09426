"""A connection to an immudoc server: the channel, the calls, and the verifying client's trust.

:class:`Connection` is to the remote client what the engine is to the embedded database: the
one owner of the gRPC channel and stub, the deadlines, the error decoding, the known
collections and the :class:`~docstore.proofs.trust.TrustTracker`. :class:`RemoteDatabase`,
its collections and its transactions work through its methods.

Verification: a verified read asks the server for proofs relative to the state the client
trusts ``T`` when they can be (nothing newer to authenticate), else relative to its current
state ``S`` with the signed checkpoint of ``S`` and a consistency proof from ``T``. The tracker
accepts ``S`` only if a verifier key the client pins signed it and it extends ``T`` (or, with
``trust_unsigned=True`` and no key pinned, on the consistency proof alone, with a warning);
then the proofs are checked against ``S`` with the library's pure verifier. States already
proven to be on the trusted history are remembered, so concurrent readers rarely pay for a
second consistency proof.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

import kvcore

from docstore.documents import txmeta
from docstore.documents.ids import check_collection_name
from docstore.documents.records import Header
from docstore.errors import (
    CollectionNotFoundError, DocstoreError, DocumentNotFoundError, NotFoundError, QueryError, VerificationError,
)
from docstore.proofs.bundle import MAX_BUNDLE_BYTES, Proof, from_dict
from docstore.proofs.statebundle import Query, StateProof, parse
from docstore.proofs.trust import TrustTracker
from docstore.proofs.verify import verify
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb
from docstore.rpc import immudoc_pb2_grpc as pb_grpc
from docstore.remote.errors import DeadlineExceededError, UnavailableError
from docstore.transactions import requests

P = TypeVar("P", Proof, StateProof)

WRITE_RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0)
"""Seconds between attempts of a write whose server could not be reached (its idempotency key
makes a repeat safe)."""

MAX_TIME_SLACK = 2.0
"""Seconds a call with ``max_time_ms`` waits beyond it for the server's QueryTimeoutError."""


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


class Connection:
    """A connection to an immudoc server (see the module). Made by :class:`RemoteDatabase`."""

    def __init__(
        self,
        target: str,
        *,
        state_file: str | os.PathLike[str] | None = None,
        trusted_state: kvcore.State | str | None = None,
        trust_on_first_use: bool = False,
        verify: bool = True,
        verifier_key: Any = None,
        trust_unsigned: bool = False,
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
        if not verify and (
            trusted_state is not None or state_file is not None or trust_on_first_use
            or verifier_key is not None or trust_unsigned
        ):
            raise QueryError(
                "trusted_state, state_file, trust_on_first_use, verifier_key and trust_unsigned go with verify=True"
            )
        if isinstance(trusted_state, kvcore.State):
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
        options: list[tuple[str, Any]] = [
            ("grpc.max_receive_message_length", max(max_bytes, codec.REPLY_FLOOR_BYTES)),
            ("grpc.max_send_message_length", max_bytes),
            # a connection of its own (gRPC shares one among a process's channels to a target):
            # connections spread among the processes of `serve --processes N`
            ("grpc.use_local_subchannel_pool", 1),
        ]
        tls_cfg = TLS.of(tls)
        if tls_cfg is not None:
            if tls_cfg.server_name:
                options.append(("grpc.ssl_target_name_override", tls_cfg.server_name))
            self._channel = grpc.secure_channel(target, tls_cfg.credentials(), options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.DocstoreStub(self._channel)
        self.known_collections: set[str] = set()
        """Collections known to exist (there is no drop)."""
        self.trust: TrustTracker | None = None
        """The trusted state a verifying connection checks its reads against (None: not verifying)."""
        try:
            info = self.call(self.stub.Info, pb.InfoRequest())
            if info.api_version != codec.API_VERSION:
                raise QueryError(f"the server speaks {info.api_version!r}, this client {codec.API_VERSION!r}")
            self.server_version = info.server_version
            self.role = info.role
            self.max_message_bytes = min(max_bytes, info.max_message_bytes or max_bytes)
            self.server_verifier_keys = list(info.verifier_keys)
            """The verifier keys the server says it signs with (shown, never pinned by the client)."""
            if verify:
                if trusted_state is None and not (state_file is not None and os.path.exists(state_file)):
                    if not trust_on_first_use:
                        raise VerificationError(
                            "a verifying client needs a first trusted state: pass trusted_state=..., or a "
                            "state_file that holds one, or trust_on_first_use=True to accept the server's "
                            "(there is no silent trust on first use; verify=False turns verification off)"
                        )
                    trusted_state = info.checkpoint or codec.state_from_pb(info.state)
                    if verifier_key is None and info.verifier_keys:
                        verifier_key = list(info.verifier_keys)  # pinned on first use, saved with the state
                self.trust = TrustTracker(
                    trusted_state, state_file, verifier_keys=verifier_key,
                    trust_on_first_use=trust_on_first_use, trust_unsigned=trust_unsigned,
                )
                self.sync()
        except BaseException:
            self._channel.close()
            self._closed = True
            raise

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the channel (the trusted state is already saved)."""
        if not self._closed:
            self._closed = True
            self._channel.close()

    # ------------------------------------------------------------- calling
    def _limited(self, timeout: float | None, max_time_ms: int | None) -> tuple[float | None, Any]:
        """(gRPC timeout, metadata) of a call whose queries may run ``max_time_ms``: the server
        stops them at that (QueryTimeoutError, as embedded); the call's own deadline is set a
        little later, so that the server's answer arrives first."""
        if max_time_ms is None:
            return timeout, self._metadata
        return max_time_ms / 1000 + MAX_TIME_SLACK, (*self._metadata, (codec.MAX_TIME_KEY, str(max_time_ms)))

    def call(
        self, method: Callable[..., Any], request: Any, timeout: float | None | bool = False,
        max_time_ms: int | None = None,
    ) -> Any:
        if self._closed:
            raise kvcore.ClosedError("the database connection is closed")
        limit, metadata = self._limited(self.timeout if timeout is False else timeout, max_time_ms)
        try:
            return method(request, timeout=limit, metadata=metadata)
        except grpc.RpcError as e:
            raise codec.decode_error(e) from None

    def stream(self, method: Callable[..., Any], request: Any, max_time_ms: int | None = None) -> tuple[Any, Iterator[Any]]:
        """Start a server stream; returns (first message or None, iterator over the rest).

        The first message is read at once, so an invalid request fails here, as it would
        embedded. Closing the iterator (or dropping it) cancels the call.
        """
        if self._closed:
            raise kvcore.ClosedError("the database connection is closed")
        limit, metadata = self._limited(self.stream_timeout, max_time_ms)
        call = method(request, timeout=limit, metadata=metadata)
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

    def check_collection(self, name: str) -> None:
        check_collection_name(name)
        if name not in self.known_collections:
            try:
                self.call(self.stub.DescribeCollection, pb.DescribeCollectionRequest(name=name))
            except CollectionNotFoundError:
                try:
                    known = list(self.call(self.stub.ListCollections, pb.ListCollectionsRequest()).names)
                except DocstoreError:  # e.g. a token that may not list them: no suggestion
                    known = []
                raise CollectionNotFoundError.named(name, known) from None
            self.known_collections.add(name)

    def call_commit(
        self, messages: Callable[[], Iterator[pb.CommitRequest]], key: str | None, tx_meta: str | None = None
    ) -> pb.CommitResponse:
        """Send a transaction's reads and writes (a client stream) in one call."""
        return self.write(self.stub.Commit, messages, key, tx_meta)

    def write(
        self, method: Callable[..., Any], request: Callable[[], Any], key: str | None, tx_meta: str | None = None
    ) -> Any:
        """A write call, made with an idempotency key (``key``, or a new one): if the server
        cannot be reached or drops the call, it is sent again with the same key after
        :data:`WRITE_RETRY_DELAYS` (a write the server committed before it dropped the call is
        not committed twice: its first result comes back). If it still fails, the
        UnavailableError names the key, to send the write again with it later. ``tx_meta``:
        the transaction's reason and meta (:func:`remote_tx_meta`), sent as call metadata."""
        key = uuid.uuid4().hex if key is None else requests.check_key(key)
        metadata = (*self._metadata, (codec.IDEMPOTENCY_KEY, key))
        if tx_meta is not None:
            metadata = (*metadata, (codec.TX_META, tx_meta))
        for delay in (*WRITE_RETRY_DELAYS, None):
            if self._closed:
                raise kvcore.ClosedError("the database connection is closed")
            try:
                return method(request(), timeout=self.timeout, metadata=metadata)
            except grpc.RpcError as e:
                err = codec.decode_error(e)
            if isinstance(err, UnavailableError) and delay is not None:
                time.sleep(delay)
                continue
            if isinstance(err, (UnavailableError, DeadlineExceededError)):
                err.args = (
                    f"{err}; the write may or may not have been committed: send it again with "
                    f"idempotency_key={key!r} (with that key it is committed at most once)",
                    *err.args[1:],
                )
                err.idempotency_key = key
            raise err from None
        raise AssertionError("unreachable")

    # ------------------------------------------------------------- the audit trail
    def proven_tx(
        self, tx_id: int, state: kvcore.State, collection: str | None = None
    ) -> tuple[kvcore.TxHeader, dict[str, Any] | None]:
        """Transaction ``tx_id``'s header and metadata, proven in ``state`` (an authenticated
        state) by the server's proof of its entry 0 (docstore.proofs.txproof). ``collection``:
        one the transaction wrote (a token without read on "*" may see the who and why of
        transactions that wrote a collection it reads)."""
        from docstore.proofs.txproof import verify_tx

        req = pb.ProveTxRequest(tx_id=tx_id, state=codec.state_to_pb(state), collection=collection or "")
        return verify_tx(self._tx_bundle(req), tx_id, state)

    def proven_header(self, tx_id: int, state: kvcore.State) -> kvcore.TxHeader:
        """Transaction ``tx_id``'s header (its time), proven in ``state``."""
        from docstore.proofs.txproof import verify_header

        req = pb.ProveTxRequest(tx_id=tx_id, state=codec.state_to_pb(state), header_only=True)
        return verify_header(self._tx_bundle(req), tx_id, state)

    def _tx_bundle(self, req: pb.ProveTxRequest) -> Any:
        raw = self.call(self.stub.ProveTx, req).proof
        try:
            return json.loads(raw)
        except ValueError:
            raise VerificationError("the server sent a transaction proof that is not JSON") from None

    def tx_at_time(self, at_time: Any) -> int:
        """The last transaction committed at or before ``at_time`` (0: none); on a verifying
        connection proven against the trusted state (its header, and the next one's)."""
        from docstore.transactions.txlog import time_ns

        t = time_ns(at_time)
        if self.trust is None:
            return int(self.call(self.stub.TxAtTime, pb.TxAtTimeRequest(time_ns=t)).tx_id)
        return self._proven_at(t, self.sync(), at_time)

    def log(
        self, user: str | None, since: Any, until: Any, limit: int, before_tx: int | None
    ) -> list[dict[str, Any]]:
        """The server's log (Database.log); on a verifying connection each record proven."""
        from docstore.proofs.txproof import check_record
        from docstore.transactions.txlog import MAX_LOG, time_ns

        if type(limit) is not int or not 1 <= limit <= MAX_LOG:
            raise QueryError(f"limit must be a whole number from 1 to {MAX_LOG}, got {limit!r}")
        req = pb.LogRequest(user=user or "", limit=limit)
        if user is not None and (not isinstance(user, str) or not user):
            raise QueryError(f"user is a non-empty name, got {user!r}")
        if since is not None:
            req.since_ns = time_ns(since, "since")
        if until is not None:
            req.until_ns = time_ns(until, "until")
        if before_tx is not None:
            if type(before_tx) is not int or before_tx < 1:
                raise QueryError(f"before_tx must be a transaction id (1 or more), got {before_tx!r}")
            req.before_tx = before_tx
        state = self.sync() if self.trust is not None else None
        records = [codec.loads(r) for r in self.call(self.stub.Log, req).records]
        if len(records) > limit:
            raise VerificationError(f"the server sent more than the {limit} transactions asked for")
        if state is not None:
            # the range the log covers, proven: [first, last] (times mapped by proven headers)
            last = state.tx_id if before_tx is None else min(state.tx_id, before_tx - 1)
            if until is not None:
                last = min(last, self._proven_at(req.until_ns, state))
            first = 1 if since is None else self._proven_at(req.since_ns - 1, state) + 1
            for i, r in enumerate(records):
                if not isinstance(r, dict) or type(r.get("tx_id")) is not int or not 1 <= r["tx_id"] <= last:
                    got = r.get("tx_id") if isinstance(r, dict) else r
                    raise VerificationError(f"the log names transaction {got!r}, not in the trusted state")
                if i and r["tx_id"] >= records[i - 1]["tx_id"]:
                    raise VerificationError("the log's transactions are not newest first, each once")
                if user is None and r["tx_id"] != last - i:
                    raise VerificationError(f"the log left out transaction {last - i}")
                if r["tx_id"] < first:  # (the times of [first, last] are proven by its ends)
                    raise VerificationError(f"transaction {r['tx_id']} is proven committed outside the log's times")
                records[i] = check_record(r, *self.proven_tx(r["tx_id"], state))
                if user is not None and records[i]["user"] != user:
                    raise VerificationError(f"transaction {r['tx_id']} is proven to be another user's")
            if user is None and len(records) < limit and len(records) != max(0, last - first + 1):
                raise VerificationError(f"the log ended before transaction {first} ({len(records)} of {last - first + 1})")
        return records

    def _proven_at(self, t_ns: int, state: kvcore.State, when: Any = None) -> int:
        """The last transaction of ``state`` committed at or before ``t_ns``, as the server
        names it and its proven headers confirm (docstore.proofs.txproof.check_time_boundary)."""
        from docstore.proofs.txproof import check_time_boundary

        if t_ns < 0:
            return 0
        n = int(self.call(self.stub.TxAtTime, pb.TxAtTimeRequest(time_ns=t_ns, state=codec.state_to_pb(state))).tx_id)
        check_time_boundary(n, t_ns, state, lambda i: self.proven_header(i, state), t_ns if when is None else when)
        return n

    def current_state(self) -> kvcore.State:
        """The server's current state (verifying: authenticated, and the trusted state advances to it)."""
        if self.trust is not None:
            return self.sync()
        return codec.state_from_pb(self.call(self.stub.State, pb.StateRequest()).state)

    def prove_consistency(self, old_state: kvcore.State, new_state: kvcore.State | None = None) -> kvcore.ConsistencyProof:
        """Prove that ``new_state`` (default: now) extends ``old_state``."""
        if not isinstance(old_state, kvcore.State):
            raise QueryError(f"old_state must be a kvcore.State, got {type(old_state).__name__}")
        req = pb.ProveConsistencyRequest(old_state=codec.state_to_pb(old_state, "old_state"))
        if new_state is not None:
            req.new_state.CopyFrom(codec.state_to_pb(new_state, "new_state"))
        return codec.consistency_from_pb(self.call(self.stub.ProveConsistency, req).proof)

    # --------------------------------------------------------- verification
    def fetch(self, old: kvcore.State, new: kvcore.State) -> kvcore.ConsistencyProof:
        """A consistency proof from the server (checked by the tracker, never trusted)."""
        return self.prove_consistency(old, new)

    def sync(self) -> kvcore.State:
        """The server's current state, authenticated (signed and extending the trusted one);
        the trusted state advances to it."""
        trust = self.trust
        assert trust is not None
        trust.link(self.fetch)
        base = trust.state
        r = self.call(self.stub.State, pb.StateRequest(known_state=codec.state_to_pb(base)))
        state = codec.state_from_pb(r.state)
        trust.check_current(state, base)
        cp = codec.consistency_from_pb(r.consistency) if r.HasField("consistency") else None
        trust.accept(state, r.checkpoint or None, self.fetch, base, cp)
        return state

    def proof(self, data: bytes) -> Proof:
        return from_dict(codec.loads(data, VerificationError))

    def state_proof(self, data: bytes) -> StateProof:
        """A proof of the current state (bundle version 3) the server sent, parsed (not checked)."""
        if len(data) > MAX_BUNDLE_BYTES:
            raise VerificationError(f"a proof bundle is at most {MAX_BUNDLE_BYTES} bytes; the server sent {len(data)}")
        proof = parse(codec.loads(data, VerificationError))
        if not isinstance(proof, StateProof):
            raise VerificationError(
                f"the server sent a {proof.kind} proof of version 1 or 2 where a proof of the current state "
                "(version 3) was asked for"
            )
        return proof

    def prove_state(
        self, coll: str, kind: str, doc_id: str = "", pointer: str | None = None, query: Query | None = None,
        state: kvcore.State | None = None, known_state: kvcore.State | None = None, with_header: bool = False,
        max_time_ms: int | None = None,
    ) -> StateProof:
        """Ask ProveState for a proof of the current state (parsed, not checked)."""
        req = pb.ProveStateRequest(collection=coll, kind=kind, id=doc_id, with_header=with_header)
        if pointer is not None:
            req.pointer = pointer
        if query is not None:
            req.query = codec.dumps(query.to_dict())
        for field, value in (("state", state), ("known_state", known_state)):
            if value is not None:
                getattr(req, field).CopyFrom(codec.state_to_pb(value, field))
        return self.state_proof(self.call(self.stub.ProveState, req, max_time_ms=max_time_ms).proof)

    def _current(self, proof: StateProof, base: kvcore.State) -> StateProof:
        """A proof of the server's current state, authenticated: its state is not behind the
        trusted one when it was asked for (``base``: what was current then is not current now),
        and is accepted into the trusted history (which advances to it if it is newer)."""
        trust = self.trust
        assert trust is not None
        trust.check_current(proof.state, base)
        return self.authenticated(proof)

    def verified_latest(self, coll: str, doc_id: str) -> dict:
        """The document's current revision, proven current (a latest proof); DocumentNotFoundError
        only once its absence is proven too (an absent proof)."""
        trust = self.trust
        assert trust is not None
        trust.link(self.fetch)
        started = time.monotonic()
        base = trust.state
        try:
            proof = self.prove_state(coll, "latest", doc_id, known_state=base, with_header=not trust.pinned)
        except DocumentNotFoundError:
            self._verified_absent(coll, doc_id, base)
            raise DocumentNotFoundError(f"no document {doc_id!r} in {coll!r} (its absence is proven)") from None
        if (proof.kind, proof.collection, proof.id, proof.pointer) != ("latest", coll, doc_id, None):
            raise VerificationError(
                f"the server proved {proof.kind} {proof.collection}/{proof.id}"
                f"{'' if proof.pointer is None else ' ' + repr(proof.pointer)}, not the latest document {coll}/{doc_id}"
            )
        proof = self._current(proof, base)
        doc = verify(proof, proof.state, trust.pinned)
        trust.seen_revision(coll, doc_id, Header.decode(proof.documents[0].header).revision, started)
        return doc

    def _verified_absent(self, coll: str, doc_id: str, base: kvcore.State) -> None:
        """The server answered "not found": it must prove that (an absent proof of the current state)."""
        trust = self.trust
        assert trust is not None
        try:
            proof = self.prove_state(coll, "absent", doc_id, known_state=base, with_header=not trust.pinned)
        except (NotFoundError, QueryError) as e:
            raise VerificationError(
                f"the server answered that there is no document {doc_id!r} in {coll!r} but does not prove "
                f"its absence ({type(e).__name__}: {e})"
            ) from None
        if (proof.kind, proof.collection, proof.id) != ("absent", coll, doc_id):
            raise VerificationError(
                f"the server proved {proof.kind} {proof.collection}/{proof.id}, not the absence of {coll}/{doc_id}"
            )
        proof = self._current(proof, base)
        verify(proof, proof.state, trust.pinned)

    def verified_query(self, coll: str, query: Query, max_time_ms: int | None = None) -> Any:
        """A find's documents (whole), a count or distinct values, proven complete as of the
        server's current state (a find proof of exactly this query)."""
        trust = self.trust
        assert trust is not None
        trust.link(self.fetch)
        base = trust.state
        asked = codec.dumps(query.to_dict())
        proof = self.prove_state(
            coll, "find", query=query, known_state=base, with_header=not trust.pinned, max_time_ms=max_time_ms
        )
        if proof.kind != "find" or proof.collection != coll or proof.query is None:
            raise VerificationError(f"the server proved {proof.kind} {proof.collection}, not a query of {coll}")
        if codec.dumps(proof.query.to_dict()) != codec.dumps(codec.loads(asked)):
            raise VerificationError("the server proved the result of another query than the one asked")
        proof = self._current(proof, base)
        return verify(proof, proof.state, trust.pinned)

    def verified_collections(self) -> list[str]:
        """The names of every collection, proven complete as of the server's current state."""
        trust = self.trust
        assert trust is not None
        trust.link(self.fetch)
        base = trust.state
        proof = self.prove_state("", "collections", known_state=base, with_header=not trust.pinned)
        if (proof.kind, proof.collection) != ("collections", ""):
            raise VerificationError(f"the server proved {proof.kind} {proof.collection}, not the list of collections")
        proof = self._current(proof, base)
        return sorted(verify(proof, proof.state, trust.pinned))

    def authenticated(self, proof: P) -> P:
        """Accept a proof's state into the trusted history; returns the proof relative to it alone."""
        trust = self.trust
        assert trust is not None
        trust.accept(proof.state, proof.checkpoint, self.fetch, proof.consistency_state, proof.consistency)
        return proof._replace(consistency=None, consistency_state=None)

    def verified_get(self, coll: str, doc_id: str, at_tx: int | None) -> tuple[dict | None, int]:
        """(document or None for a proven deletion, revision), proven against the trusted state."""
        trust = self.trust
        assert trust is not None
        trust.link(self.fetch)
        started = time.monotonic()
        req = pb.GetRequest(collection=coll, id=doc_id, prove=True, known_state=codec.state_to_pb(trust.state))
        if at_tx is not None:
            req.at_tx = at_tx
        proof = self.proof(self.call(self.stub.Get, req).proof)
        if (proof.kind, proof.collection, proof.id) != ("document", coll, doc_id):
            raise VerificationError(
                f"the server proved {proof.kind} {proof.collection}/{proof.id}, not document {coll}/{doc_id}"
            )
        if at_tx is not None and proof.tx_id > at_tx:
            raise VerificationError(f"the server proved a revision of transaction {proof.tx_id}, after {at_tx}")
        proof = self.authenticated(proof)
        doc = verify(proof, proof.state)
        if at_tx is None:
            trust.seen_revision(coll, doc_id, proof.revision, started)
        return doc, proof.revision

    def verified_meta(self, coll: str) -> dict[str, Any]:
        """A collection's current definition, proven against the trusted state."""
        trust = self.trust
        assert trust is not None
        req = pb.ProveSchemaRequest(collection=coll, known_state=codec.state_to_pb(trust.state))
        proof = self.proof(self.call(self.stub.ProveSchema, req).proof)
        if (proof.kind, proof.collection) != ("collection", coll):
            raise VerificationError(f"the server proved {proof.kind} {proof.collection}, not collection {coll}")
        proof = self.authenticated(proof)
        return verify(proof, proof.state)

    def verified_page_state(self, page: Any, base: kvcore.State) -> kvcore.State:
        """The state of a verified stream's proofs (its first page), authenticated and accepted."""
        trust = self.trust
        assert trust is not None
        if not page.HasField("state"):
            raise VerificationError("the server sent no state for its proofs")
        state = codec.state_from_pb(page.state)
        cp = codec.consistency_from_pb(page.consistency) if page.HasField("consistency") else None
        trust.accept(state, page.checkpoint or None, self.fetch, base, cp)
        return state


def remote_tx_meta(user: Any, reason: Any, meta: Any) -> str | None:
    """A write's ``reason`` and ``meta`` as the call metadata that carries them (checked here,
    as embedded: QueryError), None if neither is given. ``user`` is refused: a server records
    the principal it authenticated (a token's name, a client certificate's subject)."""
    if user is not None:
        raise QueryError(
            "user= is for embedded databases: a server records as the user the principal it "
            "authenticated (its token's name, or the client certificate's subject)"
        )
    if txmeta.encode(None, reason, meta) is None:
        return None
    out: dict[str, Any] = {}
    if reason is not None:
        out["reason"] = reason
    if meta is not None:
        out["meta"] = meta
    return json.dumps(out, ensure_ascii=True, separators=(",", ":"))
