"""The immudoc.v1.Docstore service: each RPC is one call of the embedded library.

Every handler runs through :func:`rpc`, which checks the caller's token (and role, for
writes), refuses a call whose deadline has already passed, and turns library exceptions into
gRPC statuses carrying the exception's type and message (docstore.rpc.codec). Find and
History stream their results in pages of bounded size; the gRPC stream's flow control keeps
at most a page or two of a slow reader's results in memory.
"""

from __future__ import annotations

import functools
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, cast

import grpc

import kvcore

from docstore.api import DeleteResult
from docstore.collections import budget
from docstore.database import Database
from docstore.errors import DocumentNotFoundError, InvalidDocumentError, QueryError, TransactionTooLargeError
from docstore.proofs.bundle import MAX_BUNDLE_BYTES
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb
from docstore.rpc import immudoc_pb2_grpc as pb_grpc
from docstore.server.auth import Authorizer, Grant
from docstore.transactions import one_call

if TYPE_CHECKING:
    from docstore.collections.collection import Collection

_VERBS = {"read": "read", "write": "write", "admin": "change collection definitions"}

DEFAULT_PAGE = 500  # documents per page unless the client asks otherwise
MAX_PAGE = 10_000
PAGE_BYTES = 1 << 20  # a page is flushed once it holds this many bytes
CATCH_UP_SECONDS = 2.0  # at most this long a proof of the current state waits for the state map

_QUERY_FIELDS = frozenset({"op", "filter", "sort", "skip", "limit", "field"})
_WRITE_KINDS = {pb.Write.INSERT: "insert", pb.Write.REPLACE: "replace", pb.Write.DELETE: "delete"}


def _server_version() -> str:
    try:
        from importlib import metadata

        return metadata.version("immudoc")
    except Exception:  # noqa: BLE001 - running from a source tree
        return "0.1.0"


DEFAULT_MAX_CALL_SECONDS = 600.0
"""The server's limit on any one call's queries (a find stream included) when the client sets
no shorter deadline: ``immudoc serve --max-call-seconds``."""


def _key(context: grpc.ServicerContext) -> str | None:
    """A write's idempotency key (call metadata), if the client sent one."""
    return codec.idempotency_key(context.invocation_metadata())


def _certificate_subject(context: grpc.ServicerContext) -> str | None:
    """The subject of the client's certificate (mutual TLS), else None."""
    auth = context.auth_context() or {}
    for name in ("x509_subject", "x509_common_name"):
        values = auth.get(name)
        if values:
            value = values[0]
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


def _opt(msg: Any, field: str) -> Any:
    return getattr(msg, field) if msg.HasField(field) else None


def _collection(request: Any) -> str | None:
    """The collection a request names (None: none: the ledger as a whole)."""
    return getattr(request, "collection", None) or None


def rpc(
    *, need: str = "read", coll: Callable[[Any], str | None] | None = _collection, stream: bool = False
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a handler: authentication, authorization, deadline, exception mapping. ``need``:
    the role the caller must have ("any": authenticated) in the collection ``coll(request)``
    names (None: ``"*"``, the ledger as a whole); ``coll=None`` (a client stream, whose
    collections come with its messages): in some collection, the handler checks each."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        if stream:

            @functools.wraps(fn)
            def stream_handler(self: DocstoreService, request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
                self._admit(context, need, coll, request)
                try:
                    yield from budget.bounded(fn(self, request, context), self._deadline(context))
                except Exception as e:  # noqa: BLE001
                    if type(e) is Exception:  # context.abort() already set the status: keep it
                        raise
                    self._fail(context, e)

            return stream_handler

        @functools.wraps(fn)
        def handler(self: DocstoreService, request: Any, context: grpc.ServicerContext) -> Any:
            self._admit(context, need, coll, request)
            try:
                with budget.until(self._deadline(context)):
                    return fn(self, request, context)
            except Exception as e:  # noqa: BLE001
                if type(e) is Exception:  # context.abort() already set the status: keep it
                    raise
                self._fail(context, e)

        return handler

    return deco


class DocstoreService(pb_grpc.DocstoreServicer):
    """Serves one open :class:`docstore.Database`."""

    def __init__(
        self, db: Database, auth: Authorizer, max_message_bytes: int, max_call_seconds: float = DEFAULT_MAX_CALL_SECONDS
    ) -> None:
        self.db = db
        self.max_call_seconds = max_call_seconds
        """The longest any call's queries may run (a call's own deadline may be shorter)."""
        self.auth = auth
        self.max_message_bytes = max_message_bytes
        self.page_bytes = max(1024, min(PAGE_BYTES, max_message_bytes // 4))
        self.version = _server_version()

    # ------------------------------------------------------------- plumbing
    def _admit(
        self, context: grpc.ServicerContext, need: str, coll: Callable[[Any], str | None] | None, request: Any
    ) -> None:
        grant = self.auth.grant(context.invocation_metadata())
        if grant is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required (authorization: Bearer <token>)")
        assert grant is not None
        if need != "any":
            if coll is None:
                if not grant.may_somewhere(need):
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, f"this token may not {_VERBS[need]} (it needs role {need!r})")
            else:
                self._allowed(context, grant, need, coll(request))
        left = context.time_remaining()
        if left is not None and left <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed before it started")

    def _tx_kw(self, context: grpc.ServicerContext) -> dict[str, Any]:
        """A write's transaction metadata: the ``reason`` and ``meta`` the client sent, and as
        ``user`` the principal this server authenticated (a token's name, else the client
        certificate's subject), never one the request names."""
        kw = codec.tx_meta(context.invocation_metadata())
        grant = self.auth.grant(context.invocation_metadata())
        if grant is None:  # revoked since the call was admitted
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required (authorization: Bearer <token>)")
        user = (grant.name if grant is not None else None) or _certificate_subject(context)
        if user is not None:
            kw["user"] = user
        return kw

    def _allowed(self, context: grpc.ServicerContext, grant: Grant, need: str, collection: str | None) -> None:
        """PERMISSION_DENIED unless ``grant`` has role ``need`` in ``collection``."""
        if not grant.may(need, collection):
            where = "across the ledger" if collection is None else f"in collection {collection!r}"
            have = grant.role_in(collection)
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this token may not {_VERBS[need]} {where} (it needs role {need!r}; it has "
                f"{repr(have) if have else 'none there'})",
            )

    def _check(self, context: grpc.ServicerContext, need: str, collection: str | None) -> None:
        """Inside a handler: the caller has role ``need`` in ``collection``."""
        grant = self.auth.grant(context.invocation_metadata())
        if grant is None:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid bearer token is required (authorization: Bearer <token>)")
        assert grant is not None
        self._allowed(context, grant, need, collection)

    def _deadline(self, context: grpc.ServicerContext) -> float | None:
        """When the call's queries must stop: its own deadline, at most the server's limit."""
        limits = [self.max_call_seconds, context.time_remaining(), codec.max_time_seconds(context.invocation_metadata())]
        return budget.deadline(min(x for x in limits if x is not None))

    def _fail(self, context: grpc.ServicerContext, exc: Exception) -> None:
        if not codec.is_api_error(exc) and not isinstance(exc, (ValueError, TypeError, LookupError, grpc.RpcError)):
            print(f"immudoc server: internal error in a call:\n{traceback.format_exc()}", file=sys.stderr, flush=True)
        code, message, trailer = codec.encode_error(exc)
        context.set_trailing_metadata(trailer)
        context.abort(code, message)

    def _pages(self, items: Iterable[bytes], page_size: int, context: grpc.ServicerContext) -> Iterator[list[bytes]]:
        size = min(page_size or DEFAULT_PAGE, MAX_PAGE)
        page: list[bytes] = []
        nbytes = 0
        for item in items:
            page.append(item)
            nbytes += len(item)
            if len(page) >= size or nbytes >= self.page_bytes:
                yield page
                page, nbytes = [], 0
                if not context.is_active():  # cancelled, or past its deadline
                    return
        if page:
            yield page

    # ----------------------------------------------------------------- info
    @rpc(need="any")
    def Info(self, request: pb.InfoRequest, context: grpc.ServicerContext) -> pb.InfoResponse:
        state = self.db.state()
        return pb.InfoResponse(
            api_version=codec.API_VERSION,
            server_version=self.version,
            max_message_bytes=self.max_message_bytes,
            role=self.auth.role(context.invocation_metadata()) or "",
            state=codec.state_to_pb(state),
            checkpoint=self.db.checkpoint(state),
            verifier_keys=self.db.verifier_keys(),
        )

    # ---------------------------------------------------------- collections
    @rpc(need="any")
    def ListCollections(self, request: pb.ListCollectionsRequest, context: grpc.ServicerContext) -> Any:
        grant = self.auth.grant(context.invocation_metadata())
        names = self.db.collections()
        if grant is not None and not grant.may("read", None):  # only the collections it may read
            names = [n for n in names if grant.may("read", n)]
        return pb.ListCollectionsResponse(names=names)

    @rpc(need="admin", coll=lambda r: r.name)
    def CreateCollection(self, request: pb.CreateCollectionRequest, context: grpc.ServicerContext) -> Any:
        indexes = codec.loads_opt(request.indexes)
        self.db.create_collection(
            request.name, codec.loads_opt(request.schema), () if indexes is None else indexes,
            require_reason=request.require_reason, schema_formats=request.schema_formats,
        )
        return pb.CreateCollectionResponse()

    @rpc(need="admin")
    def SetRequireReason(self, request: pb.SetRequireReasonRequest, context: grpc.ServicerContext) -> Any:
        self.db.collection(request.collection).set_require_reason(request.on)
        return pb.SetSchemaResponse()

    @rpc(coll=lambda r: r.name)
    def DescribeCollection(self, request: pb.DescribeCollectionRequest, context: grpc.ServicerContext) -> Any:
        return pb.DescribeCollectionResponse(info=codec.dumps(self.db.collection(request.name).info()))

    @rpc(need="admin")
    def SetSchema(self, request: pb.SetSchemaRequest, context: grpc.ServicerContext) -> Any:
        self.db.collection(request.collection).set_schema(codec.loads_opt(request.schema))
        return pb.SetSchemaResponse()

    @rpc(need="admin")
    def CreateIndex(self, request: pb.CreateIndexRequest, context: grpc.ServicerContext) -> Any:
        self.db.collection(request.collection).create_index(
            request.field, request.unique, sparse=request.sparse, partial_filter=codec.loads_opt(request.partial_filter)
        )
        return pb.CreateIndexResponse()

    @rpc(need="admin")
    def DropIndex(self, request: pb.DropIndexRequest, context: grpc.ServicerContext) -> Any:
        self.db.collection(request.collection).drop_index(request.field)
        return pb.DropIndexResponse()

    # --------------------------------------------------------------- writes
    @rpc(need="write", coll=None)
    def Insert(self, request_iterator: Iterator[pb.InsertBatch], context: grpc.ServicerContext) -> Any:
        first = next(request_iterator, None)
        if first is None:
            raise QueryError("an insert sends at least one batch")
        self._check(context, "write", first.collection or None)
        coll = self.db.collection(first.collection)
        docs: list[Any] = []
        total = 0
        for message in _chain(first, request_iterator):
            for raw in message.documents:
                total += len(raw)
                if total > kvcore.MAX_TX_BYTES:
                    raise TransactionTooLargeError(
                        f"insert_many of more than {kvcore.MAX_TX_BYTES} bytes exceeds one transaction's limit"
                    )
                docs.append(codec.loads(raw, InvalidDocumentError))
        left = context.time_remaining()
        if left is not None and left <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "deadline passed before the documents were written")
        got = coll.insert_many(docs, idempotency_key=_key(context), **self._tx_kw(context))
        response = pb.InsertResponse(ids=got)
        for tx, _n in getattr(got, "transactions", ()):
            response.tx_id = tx
        return response

    @rpc(need="write")
    def Replace(self, request: pb.ReplaceRequest, context: grpc.ServicerContext) -> Any:
        doc = codec.loads(request.document, InvalidDocumentError)
        new = self.db.collection(request.collection).replace(
            request.id, doc, idempotency_key=_key(context), **self._tx_kw(context)
        )
        return pb.DocumentResponse(document=codec.dumps(new))

    @rpc(need="write")
    def Update(self, request: pb.UpdateRequest, context: grpc.ServicerContext) -> Any:
        new = self.db.collection(request.collection).update(
            request.id, codec.loads(request.changes), idempotency_key=_key(context), **self._tx_kw(context)
        )
        return pb.DocumentResponse(document=codec.dumps(new))

    @rpc(need="write")
    def Delete(self, request: pb.DeleteRequest, context: grpc.ServicerContext) -> Any:
        self.db.collection(request.collection).delete(request.id, idempotency_key=_key(context), **self._tx_kw(context))
        return pb.DeleteResponse()

    @rpc(need="admin")
    def Erase(self, request: pb.EraseRequest, context: grpc.ServicerContext) -> Any:
        done = self.db.collection(request.collection).erase(
            request.id, list(request.pointers) or None, **self._tx_kw(context)
        )
        return pb.EraseResponse(result=codec.dumps(done.to_dict()))

    @rpc(need="write")
    def WriteByFilter(self, request: pb.WriteByFilterRequest, context: grpc.ServicerContext) -> Any:
        coll = self.db.collection(request.collection)
        flt = codec.loads(request.filter)
        kw: dict[str, Any] = {"idempotency_key": _key(context), **self._tx_kw(context)}
        kind = request.kind
        result: Any
        if kind in ("update_one", "update_many"):
            write = coll.update_one if kind == "update_one" else coll.update_many
            result = write(flt, codec.loads(request.update), request.upsert, **kw)
        elif kind == "replace_one":
            result = coll.replace_one(flt, codec.loads(request.update, InvalidDocumentError), request.upsert, **kw)
        elif kind in ("delete_one", "delete_many"):
            result = (coll.delete_one if kind == "delete_one" else coll.delete_many)(flt, **kw)
        else:
            raise QueryError(f"unknown write by filter {kind!r}")
        reply = pb.WriteByFilterResponse()
        if isinstance(result, DeleteResult):
            reply.deleted_count = result.deleted_count
        else:
            reply.matched_count, reply.modified_count = result.matched_count, result.modified_count
            if result.upserted_id is not None:
                reply.upserted_id = result.upserted_id
        if result.tx is not None:
            reply.tx_id = result.tx
        return reply

    @rpc(need="write", coll=None)
    def Commit(self, request_iterator: Iterator[pb.CommitRequest], context: grpc.ServicerContext) -> Any:
        first = next(request_iterator, None)
        if first is None:
            raise QueryError("a commit sends at least one message")
        reads = [
            one_call.Read(r.collection, None if r.whole_collection else r.id, _opt(r, "revision"))
            for r in first.reads
        ]
        for name in sorted({r.collection for r in reads}):
            self._check(context, "read", name or None)
        writes = []
        total = 0
        checked: set[str] = set()
        for message in _chain(first, request_iterator):
            for w in message.writes:
                kind = _WRITE_KINDS.get(w.kind)
                if kind is None:
                    raise QueryError(f"unknown write kind {w.kind}")
                total += len(w.document)
                if total > kvcore.MAX_TX_BYTES:
                    raise TransactionTooLargeError(f"a transaction of more than {kvcore.MAX_TX_BYTES} bytes exceeds the limit")
                if w.collection not in checked:
                    self._check(context, "write", w.collection or None)
                    checked.add(w.collection)
                doc = codec.loads(w.document, InvalidDocumentError) if kind != "delete" else None
                writes.append(one_call.Write(kind, w.collection, w.id if kind != "insert" else None, doc))
        tx_id = one_call.commit_in_one_call(
            self.db, _opt(first, "snapshot"), reads, writes, _key(context), self._tx_kw(context)
        )
        return pb.CommitResponse(tx_id=tx_id) if tx_id is not None else pb.CommitResponse()

    # ---------------------------------------------------------------- reads
    @rpc()
    def Get(self, request: pb.GetRequest, context: grpc.ServicerContext) -> Any:
        db = self.db
        coll = db.collection(request.collection)
        at_tx = _opt(request, "at_tx")
        if request.prove:
            known = codec.opt_state(request, "known_state")
            if known is not None and known.tx_id > db.tx_id:
                known = None  # cannot be linked: the client sees the state went back and refuses it
            proof = coll.prove(request.id, None, at_tx, None, known)
            return pb.GetResponse(proof=proof.to_json().encode())
        if request.with_revision:
            doc, revision = coll.revision(request.id, at_tx)
            if doc is None:
                where = "" if at_tx is None else f" as of transaction {at_tx}"
                raise DocumentNotFoundError(f"no document {request.id!r} in {request.collection!r}{where}")
            return pb.GetResponse(document=codec.dumps(doc), revision=revision or 0)
        return pb.GetResponse(document=codec.dumps(coll.get(request.id, at_tx)))

    @rpc(stream=True)
    def Find(self, request: pb.FindRequest, context: grpc.ServicerContext) -> Iterator[pb.FindPage]:
        db = self.db
        coll = db.collection(request.collection)
        filt = codec.loads_opt(request.filter)
        sort = codec.loads_opt(request.sort)
        limit, at_tx = _opt(request, "limit"), _opt(request, "at_tx")
        if not request.prove:
            docs = coll.find(filt, codec.loads_opt(request.projection), sort, request.skip, limit, at_tx)
            for page in self._pages((codec.dumps(d) for d in docs), request.page_size, context):
                yield pb.FindPage(documents=page)
            return
        # Proofs: of the full documents (the client projects), all relative to one state taken
        # after the query has listed its candidates, as of that state (or at_tx).
        docs = coll.find(filt, None, sort, request.skip, limit, at_tx)
        first = next(docs, None)
        state = db.state()
        head = pb.FindPage(state=codec.state_to_pb(state), checkpoint=db.checkpoint(state))
        known = codec.opt_state(request, "known_state")
        if known is not None and known != state and known.tx_id <= state.tx_id:
            head.consistency.CopyFrom(codec.consistency_to_pb(db.prove_consistency(known, state)))
        as_of = state.tx_id if at_tx is None else at_tx

        def proofs() -> Iterator[bytes]:
            if first is None:
                return
            for doc in _chain(first, docs):
                try:
                    proof = coll.prove(doc["_id"], None, as_of, state)
                except DocumentNotFoundError:
                    continue
                yield proof.to_json().encode()

        sent_head = False
        for page in self._pages(proofs(), request.page_size, context):
            if not sent_head:
                head.proofs.extend(page)
                yield head
                sent_head = True
            else:
                yield pb.FindPage(proofs=page)
        if not sent_head:
            yield head

    @rpc()
    def Count(self, request: pb.CountRequest, context: grpc.ServicerContext) -> Any:
        coll = self.db.collection(request.collection)
        return pb.CountResponse(count=coll.count(codec.loads_opt(request.filter), _opt(request, "at_tx")))

    @rpc()
    def Distinct(self, request: pb.DistinctRequest, context: grpc.ServicerContext) -> Any:
        coll = self.db.collection(request.collection)
        values = coll.distinct(request.field, codec.loads_opt(request.filter), _opt(request, "at_tx"))
        return pb.DistinctResponse(values=codec.dumps(values))

    @rpc()
    def Explain(self, request: pb.ExplainRequest, context: grpc.ServicerContext) -> Any:
        plan = self.db.collection(request.collection).explain(codec.loads_opt(request.filter))
        return pb.ExplainResponse(plan=codec.dumps(plan))

    @rpc(stream=True)
    def History(self, request: pb.HistoryRequest, context: grpc.ServicerContext) -> Iterator[pb.HistoryPage]:
        db = self.db
        coll = db.collection(request.collection)
        size = min(request.page_size or DEFAULT_PAGE, MAX_PAGE)
        offset, remaining = request.offset, _opt(request, "limit")
        if remaining is not None and remaining <= 0 or offset < 0:
            coll.history(request.id, offset, remaining)  # the library's answer: an error or []
            return
        head = None
        if request.prove:  # a document proof of each revision, all relative to one state
            state = db.state()
            head = pb.HistoryPage(state=codec.state_to_pb(state), checkpoint=db.checkpoint(state))
            known = codec.opt_state(request, "known_state")
            if known is not None and known != state and known.tx_id <= state.tx_id:
                head.consistency.CopyFrom(codec.consistency_to_pb(db.prove_consistency(known, state)))
        while True:
            n = size if remaining is None else min(size, remaining)
            revisions = coll.history(request.id, offset, n)
            if head is not None:
                provable = [r for r in revisions if r.tx_id <= state.tx_id]  # not those committed since
                head.proofs.extend(
                    coll.prove(request.id, None, r.tx_id, state).to_json().encode()
                    for r in provable
                )
                yield head
                head = pb.HistoryPage()
                if len(provable) < len(revisions):
                    return
            elif revisions:
                yield pb.HistoryPage(revisions=[codec.dumps(r.to_dict()) for r in revisions])
            if len(revisions) < n or not context.is_active():
                return
            offset += len(revisions)
            if remaining is not None:
                remaining -= len(revisions)
                if remaining == 0:
                    return

    # --------------------------------------------------------------- proofs
    @rpc()
    def Prove(self, request: pb.ProveRequest, context: grpc.ServicerContext) -> Any:
        coll = self.db.collection(request.collection)
        proof = coll.prove(
            request.id,
            _opt(request, "pointer"),
            _opt(request, "at_tx"),
            codec.opt_state(request, "state"),
            codec.opt_state(request, "known_state"),
            with_meta=request.with_meta,
        )
        return pb.ProofResponse(proof=proof.to_json().encode())

    @rpc()
    def ProveSchema(self, request: pb.ProveSchemaRequest, context: grpc.ServicerContext) -> Any:
        coll = self.db.collection(request.collection)
        proof = coll.prove_schema(
            _opt(request, "at_tx"), codec.opt_state(request, "state"), codec.opt_state(request, "known_state")
        )
        return pb.ProofResponse(proof=proof.to_json().encode())

    @rpc()
    def ProveState(self, request: pb.ProveStateRequest, context: grpc.ServicerContext) -> Any:
        """A proof of the current state (bundle version 3), made by the collection's
        prove_latest / prove_absent / prove_find / prove_count / prove_distinct.

        Bounded as the other reads: the library refuses a find proof that would read more than
        MAX_PROVEN_DOCUMENTS documents, the reply may be no larger than a reply (or a bundle)
        can be, and a proof finished after the call's deadline is not sent."""
        db = self.db
        # (the embedded class: api.Collection, the contract, does not list the prove_* of the current state yet)
        kind = request.kind
        if kind != "collections":  # (a proof of the list of collections names none)
            coll = cast("Collection", db.collection(request.collection))
        state = codec.opt_state(request, "state")
        known = codec.opt_state(request, "known_state")
        if known is not None and known.tx_id > db.tx_id:
            known = None  # cannot be linked: the client sees the state went back and refuses it (as Get)
        header = request.with_header
        if kind in ("latest", "absent") and request.query:
            raise QueryError(f"a {kind} proof takes an id, not a query")
        if kind == "latest":
            pointer = _opt(request, "pointer")

            def make() -> Any:
                return coll.prove_latest(request.id, pointer, state=state, known_state=known, with_header=header)
        elif kind == "absent":
            if request.HasField("pointer"):
                raise QueryError("an absence proof takes no pointer")

            def make() -> Any:
                return coll.prove_absent(request.id, state=state, known_state=known, with_header=header)
        elif kind == "collections":
            if request.collection or request.id or request.HasField("pointer") or request.query:
                raise QueryError("a proof of the list of collections takes no collection, id, pointer or query")

            def make() -> Any:
                return db.prove_collections(state=state, known_state=known, with_header=header)
        elif kind == "find":
            if request.id or request.HasField("pointer"):
                raise QueryError("a find proof takes a query, not an id or a pointer")
            query = codec.loads_opt(request.query)

            def make() -> Any:
                return self._prove_query(coll, query, state, known, header)
        else:
            raise QueryError(f"unknown proof kind {kind!r} (latest, absent, find or collections)")
        proof = make()
        # A proof of the current state is made as of the state the derived state (the state
        # map) reflects, which trails the ledger for the moment a commit is applied to it. A
        # client that already knows that commit's state (from another read) would take a proof
        # of the state before it for a stale answer: wait (briefly) for the map to catch up.
        give_up, pause = time.monotonic() + CATCH_UP_SECONDS, 0.001
        while known is not None and proof.state.tx_id < known.tx_id and time.monotonic() < give_up and context.is_active():
            time.sleep(pause)
            pause = min(pause * 2, 0.05)
            proof = make()
        data = proof.to_json().encode()
        cap = min(max(self.max_message_bytes, codec.REPLY_FLOOR_BYTES), MAX_BUNDLE_BYTES)
        if len(data) > cap:
            raise QueryError(
                f"this proof is {len(data)} bytes, more than a reply may carry ({cap} bytes): narrow the "
                "filter (on an indexed field) or set a limit"
            )
        left = context.time_remaining()
        if left is not None and left <= 0:
            context.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the call's deadline passed while the proof was made")
        return pb.ProofResponse(proof=data)

    @staticmethod
    def _prove_query(
        coll: Collection, query: Any, state: kvcore.State | None, known: kvcore.State | None, header: bool = False
    ) -> Any:
        if not isinstance(query, dict) or not set(query) <= _QUERY_FIELDS:
            raise QueryError(f"a find proof's query is a JSON object of {sorted(_QUERY_FIELDS)}")
        op = query.get("op")
        filt, field = query.get("filter"), cast(Any, query.get("field"))
        if op == "find":
            if field is not None:
                raise QueryError("a find proof takes no field (distinct does)")
            return coll.prove_find(
                filt, query.get("sort"), query.get("skip", 0), query.get("limit"), state=state, known_state=known,
                with_header=header,
            )
        if op in ("count", "distinct") and any(query.get(k) not in (None, 0) for k in ("sort", "skip", "limit")):
            raise QueryError(f"a {op} proof takes a filter{' and a field' if op == 'distinct' else ''} only")
        if op == "count":
            if field is not None:
                raise QueryError("a count proof takes a filter only")
            return coll.prove_count(filt, state=state, known_state=known, with_header=header)
        if op == "distinct":
            return coll.prove_distinct(field, filt, state=state, known_state=known, with_header=header)
        raise QueryError(f"unknown query op {op!r} (find, count or distinct)")

    @rpc(need="any")
    def State(self, request: pb.StateRequest, context: grpc.ServicerContext) -> Any:
        db = self.db
        state = db.state()
        out = pb.StateResponse(state=codec.state_to_pb(state), checkpoint=db.checkpoint(state))
        known = codec.opt_state(request, "known_state")
        if known is not None and known.tx_id <= state.tx_id:
            # No judgement here: the client verifies the proof against what it trusts.
            out.consistency.CopyFrom(codec.consistency_to_pb(db.prove_consistency(known, state)))
        return out

    @rpc(need="any")
    def ProveConsistency(self, request: pb.ProveConsistencyRequest, context: grpc.ServicerContext) -> Any:
        db = self.db
        old = codec.opt_state(request, "old_state")
        if old is None:
            raise QueryError("prove_consistency needs the old state")
        new = codec.opt_state(request, "new_state") or db.state()
        proof = db.prove_consistency(old, new)
        return pb.ProveConsistencyResponse(proof=codec.consistency_to_pb(proof), new_state=codec.state_to_pb(new))

    @rpc(need="any")
    def Audit(self, request: pb.AuditRequest, context: grpc.ServicerContext) -> Any:
        grant = self.auth.grant(context.invocation_metadata())
        if grant is not None and not grant.audit and not grant.may("admin", None):
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                "the full audit needs a token of role 'admin' (across the ledger) or one allowed it (\"audit\": true)",
            )
        report = self.db.audit(codec.opt_state(request, "trusted_state"))
        out = pb.AuditResponse(
            ok=report.ok,
            tx_count=report.tx_count,
            entries=report.entries,
            problems=list(report.problems),
            root=report.root,
        )
        if report.first_bad_tx is not None:
            out.first_bad_tx = report.first_bad_tx
        return out


    @rpc(coll=lambda r: None)
    def Log(self, request: pb.LogRequest, context: grpc.ServicerContext) -> Any:
        with budget.until(self._deadline(context)):
            records = self.db.log(
                user=request.user or None, since=_opt(request, "since_ns"), until=_opt(request, "until_ns"),
                limit=request.limit or 100, before_tx=_opt(request, "before_tx"),
            )
        return pb.LogResponse(records=[codec.dumps(r) for r in records])

    @rpc()
    def Erasures(self, request: pb.ErasuresRequest, context: grpc.ServicerContext) -> Any:
        coll = self.db.collection(request.collection)
        records = coll.erasures(request.id)
        proofs = coll.prove_erasures(request.id, codec.opt_state(request, "state")) if request.prove else []
        return pb.ErasuresResponse(records=[codec.dumps(r) for r in records], proofs=[codec.dumps(b) for b in proofs])

    @rpc(need="any")
    def ProveTx(self, request: pb.ProveTxRequest, context: grpc.ServicerContext) -> Any:
        # a header (a time) is as public as the state; who and why need read on "*", or on a
        # collection the transaction wrote
        if not request.header_only:
            grant = self.auth.grant(context.invocation_metadata())
            if grant is not None and not grant.may("read", None):
                self._check(context, "read", request.collection or None)
                if not self.db.tx_wrote(request.tx_id, request.collection):
                    context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                  f"transaction {request.tx_id} wrote nothing in {request.collection!r}: its who and "
                                  "why need read across the ledger")
        bundle = self.db.prove_tx(request.tx_id, codec.opt_state(request, "state"), header_only=request.header_only)
        return pb.ProofResponse(proof=codec.dumps(bundle))

    @rpc(need="any")
    def TxAtTime(self, request: pb.TxAtTimeRequest, context: grpc.ServicerContext) -> Any:
        state = codec.opt_state(request, "state")
        return pb.TxAtTimeResponse(tx_id=self.db.tx_at_time(request.time_ns, state))


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    yield first
    yield from rest
