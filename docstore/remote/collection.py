"""RemoteCollection: a collection on an immudoc server, with the methods of the embedded one."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

import kvcore

from docstore.collections import budget, cursor
from docstore.api import DeleteResult, Erasure, InsertedIds, Revision, UpdateResult
from docstore.collections.indexes import check_field
from docstore.collections.indexspec import check_spec, index_name_fields
from docstore.collections.query import compile_filter, compile_projection
from docstore.collections.update import validate_update
from docstore.errors import (
    DocumentNotFoundError,
    InvalidDocumentError,
    QueryError,
    SchemaError,
    VerificationError,
    refuse_unproven,
)
from docstore.documents.erasure import check_pointers
from docstore.documents.flatten import split_pointer
from docstore.documents.ids import check_id, in_groups
from docstore.proofs.bundle import Proof
from docstore.proofs.statebundle import Query, StateProof, checked_query
from docstore.proofs.verify import verify
from docstore.transfer import check_fits
from docstore.rpc import codec
from docstore.remote.connection import remote_tx_meta
from docstore.transactions import by_filter
from docstore.rpc import immudoc_pb2 as pb

if TYPE_CHECKING:
    from docstore.remote.connection import Connection


def _set_opt(msg: Any, field: str, value: Any) -> None:
    if value is not None:
        setattr(msg, field, value)


def _int_or_none(value: Any, what: str) -> int | None:
    """Optional integers travel as int64: anything else fails here as the library would."""
    if value is None:
        return None
    if type(value) is not int:
        raise QueryError(f"{what} must be an integer or None, got {value!r}")
    if not -(2**63) <= value < 2**63:
        raise QueryError(f"{what} {value} is out of range")
    return value


def _clamp(value: Any) -> Any:
    """A count beyond int64 as int64's largest: nothing lies beyond it, as embedded."""
    return _INT64_MAX if type(value) is int and value > _INT64_MAX else value


class RemoteCollection(by_filter.WritesByFilter):
    """Documents of one kind on the server. Get one with ``db.collection(name)`` or ``db[name]``."""

    def __init__(self, conn: Connection, name: str) -> None:
        self._conn = conn
        self.name = name

    def __repr__(self) -> str:
        return f"<RemoteCollection {self.name!r} on {self._conn.target!r}>"

    def _call(self, method: Any, request: Any, timeout: Any = False) -> Any:
        return self._conn.call(method, request, timeout)

    @property
    def _stub(self) -> Any:
        return self._conn.stub

    # --------------------------------------------------------------- writes
    # Every write goes with an idempotency key (``idempotency_key``, or a new one): sent again
    # after the server dropped it, it is committed once (docs/errors.md).
    # ``reason``, ``meta``: committed with the write's transaction; its ``user`` is the principal
    # the server authenticated (``user=`` is refused: docs/documents.md, "Transaction metadata").
    def insert(
        self, doc: dict, *, idempotency_key: str | None = None, user: str | None = None, reason: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Insert a document; returns its ``_id`` (generated if the document has none)."""
        return self.insert_many([doc], idempotency_key=idempotency_key, user=user, reason=reason, meta=meta)[0]

    def insert_many(
        self, docs: Iterable[dict], *, per_transaction: int | None = None, idempotency_key: str | None = None,
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> InsertedIds:
        """Insert documents in one atomic transaction; returns their ids (and, as
        ``transactions``, the transaction that wrote them: :class:`docstore.InsertedIds`).

        They are sent in messages of ``batch_size`` documents (and at most half the maximum
        message size), all in one call: the server commits all of them or none. With
        ``per_transaction=n``, ``docs`` (read lazily) is committed ``n`` at a time, one call
        each, each group atomic (the groups before a failing one stay committed).
        """
        if isinstance(docs, (dict, str, bytes)) or not isinstance(docs, Iterable):
            raise InvalidDocumentError(f"insert_many takes a list of documents, got {type(docs).__name__}")
        tx_meta = remote_tx_meta(user, reason, meta)
        if per_transaction is not None:
            if idempotency_key is not None:
                raise QueryError("an idempotency key covers one transaction: not per_transaction (give each its own)")
            out = InsertedIds()
            for group in in_groups(docs, per_transaction):
                got = self.insert_many(group, reason=reason, meta=meta)
                out.extend(got)
                out.transactions += got.transactions
            return out
        docs = list(docs)
        check_fits(docs, self.name)  # too large for one transaction: said before anything is sent
        encoded = [codec.dumps_doc(d) for d in docs]
        limit = max(1, self._conn.max_message_bytes // 2)
        per = self._conn.batch_size
        name = self.name

        def batches() -> Iterator[pb.InsertBatch]:
            first, start = True, 0
            while True:
                end, size = start, 0
                while end < len(encoded) and end - start < per and (end == start or size + len(encoded[end]) <= limit):
                    size += len(encoded[end])
                    end += 1
                yield pb.InsertBatch(collection=name if first else "", documents=encoded[start:end])
                first, start = False, end
                if start >= len(encoded):
                    return

        r = self._conn.write(self._stub.Insert, batches, idempotency_key, tx_meta)
        return InsertedIds().with_tx(list(r.ids), r.tx_id if r.HasField("tx_id") else None)

    def replace(
        self, doc_id: str, doc: dict, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> dict:
        """Replace a whole document (a new revision); returns it."""
        check_id(doc_id)
        tx_meta = remote_tx_meta(user, reason, meta)
        req = pb.ReplaceRequest(collection=self.name, id=doc_id, document=codec.dumps_doc(doc))
        r = self._conn.write(self._stub.Replace, lambda: req, idempotency_key, tx_meta)
        return codec.loads(r.document)

    def update(
        self, doc_id: str, changes: dict, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> dict:
        """Apply update operators (docs/updates.md; a new revision); returns the document."""
        check_id(doc_id)
        tx_meta = remote_tx_meta(user, reason, meta)
        validate_update(changes)  # QueryError for a malformed update, as embedded; then values
        # that are not JSON (a set, a tuple) are InvalidDocumentError, as embedded
        encoded = codec.dumps(changes, InvalidDocumentError, strict=True)
        req = pb.UpdateRequest(collection=self.name, id=doc_id, changes=encoded)
        r = self._conn.write(self._stub.Update, lambda: req, idempotency_key, tx_meta)
        return codec.loads(r.document)

    def delete(
        self, doc_id: str, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> None:
        """Delete a document: a tombstone revision; its history stays."""
        check_id(doc_id)
        tx_meta = remote_tx_meta(user, reason, meta)
        req = pb.DeleteRequest(collection=self.name, id=doc_id)
        self._conn.write(self._stub.Delete, lambda: req, idempotency_key, tx_meta)

    def erase(
        self, doc_id: str, pointers: list[str] | None = None, *, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> Erasure:
        """Destroy the stored values of ``pointers`` (default: every property but ``_id``) of
        ``doc_id`` in every revision, keeping their hashes (docs/documents.md, "Erasure"); needs
        the admin role. A retried call erases nothing more (its result then says 0)."""
        check_id(doc_id)
        checked = check_pointers(pointers)
        tx_meta = remote_tx_meta(user, reason, meta)
        req = pb.EraseRequest(collection=self.name, id=doc_id, pointers=checked or [])
        got = codec.loads(self._conn.write(self._stub.Erase, lambda: req, None, tx_meta).result)
        return Erasure(got["tx"], got["erased"], got["revisions"])

    def erasures(self, doc_id: str) -> list[dict[str, Any]]:
        """The document's erasure records, oldest first (see the embedded collection's); on a
        verifying connection each proven in the trusted state."""
        from docstore.proofs.erasureproof import verify_record

        check_id(doc_id)
        conn = self._conn
        if conn.trust is None:
            got = self._call(self._stub.Erasures, pb.ErasuresRequest(collection=self.name, id=doc_id))
            return [codec.loads(r) for r in got.records]
        state = conn.sync()
        req = pb.ErasuresRequest(collection=self.name, id=doc_id, prove=True, state=codec.state_to_pb(state))
        got = self._call(self._stub.Erasures, req)
        records = [codec.loads(r) for r in got.records]
        bundles = [codec.loads(b) for b in got.proofs]
        if len(bundles) != len(records):
            raise VerificationError("the server sent erasure records without their proofs")
        return [verify_record(self.name, doc_id, r, b, state) for r, b in zip(records, bundles)]

    def prove_erasures(self, doc_id: str, state: kvcore.State | None = None) -> list[dict[str, Any]]:
        """Proofs of the document's erasure records relative to ``state`` (default: the
        server's current one)."""
        check_id(doc_id)
        req = pb.ErasuresRequest(collection=self.name, id=doc_id, prove=True)
        if state is not None:
            req.state.CopyFrom(codec.state_to_pb(state))
        return [codec.loads(b) for b in self._call(self._stub.Erasures, req).proofs]

    # ------------------------------------------------- writes by filter (pymongo's names)
    # (by_filter.WritesByFilter.) One call each (WriteByFilter): the server finds and writes
    # the matches in one transaction.
    def _write_by_filter(
        self, kind: str, filter: Any, update: Any, upsert: Any, key: str | None,  # noqa: A002
        user: str | None, reason: str | None, meta: dict[str, Any] | None,
    ) -> UpdateResult | DeleteResult:
        tx_meta = remote_tx_meta(user, reason, meta)
        by_filter.check_filter(filter, kind)  # the errors of a malformed call, as embedded
        if kind.startswith("update"):
            validate_update(update)
        elif kind == "replace_one":
            by_filter.check_replacement(update)
        by_filter.check_upsert(upsert)
        req = pb.WriteByFilterRequest(
            collection=self.name, kind=kind, filter=codec.dumps(filter), upsert=upsert,
            update=b"" if update is None else codec.dumps(update, InvalidDocumentError, strict=True),
        )
        r = self._conn.write(self._stub.WriteByFilter, lambda: req, key, tx_meta)
        recorded = {"matched_count": r.matched_count, "modified_count": r.modified_count,
                    "deleted_count": r.deleted_count, "upserted_id": r.upserted_id if r.HasField("upserted_id") else None}
        return by_filter.result(kind, recorded, r.tx_id if r.HasField("tx_id") else None)

    # ---------------------------------------------------------------- reads
    def get(self, doc_id: str, at_tx: int | None = None, *, at_time: Any = None) -> dict:
        """The document (as of ledger transaction ``at_tx``); DocumentNotFoundError if none.

        On a verifying connection the server sends a proof instead, checked against the trusted
        state before the document is returned: of the current revision (a proof that it is the
        latest; a "not found" only with a proof of the id's absence), or as of ``at_tx`` of the
        revision then (an inclusion proof).
        """
        check_id(doc_id)
        at_tx = self._at(at_tx, at_time)
        if self._conn.trust is not None:
            if at_tx is None:
                return self._conn.verified_latest(self.name, doc_id)
            doc, _rev = self._conn.verified_get(self.name, doc_id, at_tx)
            if doc is None:
                raise DocumentNotFoundError(f"document {doc_id!r} in {self.name!r} is deleted")
            return doc
        req = pb.GetRequest(collection=self.name, id=doc_id)
        _set_opt(req, "at_tx", at_tx)
        return codec.loads(self._call(self._stub.Get, req).document)

    def revision(self, doc_id: str, at_tx: int | None = None) -> tuple[dict | None, int | None]:
        """(the live document, its revision number) as of ledger transaction ``at_tx`` (default:
        now); ``(None, None)`` if there is none (never written, or deleted). On a verifying
        connection, proven."""
        check_id(doc_id)
        at_tx = _int_or_none(at_tx, "at_tx")
        if self._conn.trust is not None:
            try:
                doc, rev = self._conn.verified_get(self.name, doc_id, at_tx)
            except DocumentNotFoundError:
                return None, None
            return (doc, rev) if doc is not None else (None, None)
        req = pb.GetRequest(collection=self.name, id=doc_id, with_revision=True)
        _set_opt(req, "at_tx", at_tx)
        try:
            r = self._call(self._stub.Get, req)
        except DocumentNotFoundError:
            return None, None
        return codec.loads(r.document), r.revision

    def history(self, doc_id: str, offset: int = 0, limit: int | None = None) -> list[Revision]:
        """Every revision of a document, oldest first (deletions included), paged.

        Streamed from the server page by page (the list is built here). On a verifying
        connection each revision comes as a proof of it, checked here: the revisions are
        ``offset + 1, offset + 2, ...`` with none left out between them (that no later one
        exists is not proven)."""
        check_id(doc_id)
        req = pb.HistoryRequest(collection=self.name, id=doc_id, offset=_int_or_none(_clamp(offset), "offset") or 0)
        _set_opt(req, "limit", _int_or_none(_clamp(limit), "limit"))
        trust = self._conn.trust
        if trust is not None:
            req.prove = True
            base = trust.state
            req.known_state.CopyFrom(codec.state_to_pb(base))
        first, rest = self._conn.stream(self._stub.History, req)
        out: list[Revision] = []
        state = None
        for page in _chain(first, rest):
            if trust is None:
                for raw in page.revisions:
                    d = codec.loads(raw)
                    out.append(Revision(d["revision"], d["tx_id"], d["timestamp_ns"], d["deleted"], d["document"],
                                        d.get("user"), d.get("reason"), d.get("meta")))
                continue
            if page.revisions:
                raise VerificationError("the server sent unproven revisions to a verifying history")
            if state is None:
                state = self._conn.verified_page_state(page, base)
            for raw in page.proofs:
                if limit is not None and len(out) >= limit:
                    raise VerificationError(f"the server sent more than the {limit} revisions asked for")
                out.append(self._verified_revision(self._conn.proof(raw), doc_id, state, req.offset + len(out) + 1))
        if trust is not None and state is None and not (limit is not None and limit <= 0):
            raise VerificationError("the server ended a verified history without its state")
        return out

    def _at(self, at_tx: Any, at_time: Any) -> int | None:
        """``at_tx`` checked, or the transaction ``at_time`` means (proven when verifying)."""
        from docstore.transactions.txlog import one_of

        one_of(at_tx, at_time)
        if at_time is not None:
            return self._conn.tx_at_time(at_time)
        return _int_or_none(at_tx, "at_tx")

    def _verified_revision(self, proof: Proof, doc_id: str, state: kvcore.State, expected: int) -> Revision:
        if (proof.kind, proof.collection, proof.id) != ("document", self.name, doc_id) or proof.state != state:
            raise VerificationError("the server sent a proof of something else, or relative to another state")
        if proof.revision != expected:
            raise VerificationError(
                f"document {doc_id!r} in {self.name!r}: the server sent revision {proof.revision} where "
                f"revision {expected} comes (a revision was left out or reordered)"
            )
        doc = verify(proof._replace(consistency=None, consistency_state=None), state)
        revision = Revision(proof.revision, proof.tx_id, proof.tx.timestamp_ns, doc is None, doc)
        return revision.with_tx_meta(self._conn.proven_tx(proof.tx_id, state, self.name)[1])

    def find(
        self,
        filter: dict | None = None,  # noqa: A002
        projection: Any = None,
        sort: Any = None,
        skip: int = 0,
        limit: int | None = None,
        at_tx: int | None = None,
        *,
        verify: bool | None = None,
        page_size: int = 0,
        max_time_ms: int | None = None,
        at_time: Any = None,
    ) -> Iterator[dict]:
        """Documents matching a Mongo-style ``filter`` (as of ``at_tx``), streamed from the
        server page by page as you iterate.

        On a verifying connection (or with ``verify=True``) the result is proven: as of the
        current state by one proof that it is complete (a find proof: the filter, sort, skip
        and limit are applied here to the proven documents, then the projection); as of
        ``at_tx`` by a proof of each document, checked against the trusted state, the filter
        and projection applied here (only proven documents are returned; that none was left
        out is not proven). ``verify=False`` reads them unverified. Dropping the iterator
        early cancels the stream. ``max_time_ms``: the server stops the query with
        QueryTimeoutError after that many milliseconds, as embedded.
        """
        budget.seconds_of(max_time_ms)  # QueryError, as embedded
        if verify is None:
            verify = self._conn.trust is not None
        predicate = compile_filter(filter)  # fail here, as embedded, on a malformed query
        project = compile_projection(projection) if projection is not None else None
        cursor.check_paging(skip, limit)
        if sort is not None:
            cursor.sort_key(sort)
        at_tx = self._at(at_tx, at_time)
        if verify and self._conn.trust is None:
            raise VerificationError("find(verify=True) needs a verifying connection (a trusted state)")
        if verify and at_tx is None:  # the result proven complete as of the current state
            if sort is None:  # skip and limit proven too (the proof may stop at the limit)
                docs = self._proven("find", filter, None, skip, limit, max_time_ms=max_time_ms)
                return cursor.run_query(iter(docs), None, projection, None, 0, None)
            # With a sort a proof covers the filter's whole ranges anyway: every match is proven
            # and sorted and paged here, so that a sort the documents do not allow fails as
            # embedded (QueryError), not as a proof that does not verify.
            docs = self._proven("find", filter, max_time_ms=max_time_ms)
            return cursor.run_query(iter(docs), None, projection, sort, skip, limit)
        req = pb.FindRequest(
            collection=self.name,
            filter=codec.dumps_opt(filter),
            sort=codec.dumps_opt(sort),
            skip=_clamp(skip),
            page_size=max(0, int(page_size)),
            prove=verify,
        )
        _set_opt(req, "limit", _clamp(limit))
        _set_opt(req, "at_tx", at_tx)
        if not verify:
            req.projection = codec.dumps_opt(projection)
            first, rest = self._conn.stream(self._stub.Find, req, max_time_ms)
            return _documents(first, rest)
        trust = self._conn.trust
        assert trust is not None
        base = trust.state
        req.known_state.CopyFrom(codec.state_to_pb(base))
        started = time.monotonic()
        first, rest = self._conn.stream(self._stub.Find, req, max_time_ms)
        if first is None:
            raise VerificationError("the server ended a verified find without its state")
        state = self._conn.verified_page_state(first, base)
        key = cursor.sort_key(sort) if sort is not None else None
        return self._verified_docs(first, rest, state, predicate, project, at_tx, key, limit, started)

    def _verified_docs(
        self, first: pb.FindPage, rest: Iterator[pb.FindPage], state: kvcore.State, predicate: Any, project: Any,
        at_tx: int | None, key: Any, limit: int | None, started: float,
    ) -> Iterator[dict]:
        """Check each proof, the filter, the sort order, the limit and that no document comes twice."""
        trust = self._conn.trust
        assert trust is not None
        seen: set[str] = set()
        last = None
        try:
            for page in _chain(first, rest):
                if page.documents:
                    raise VerificationError("the server sent unproven documents to a verifying find")
                for raw in page.proofs:
                    proof: Proof = self._conn.proof(raw)
                    if proof.kind != "document" or proof.collection != self.name or proof.state != state:
                        raise VerificationError("the server sent a proof of something else, or relative to another state")
                    if at_tx is not None and proof.tx_id > at_tx:
                        raise VerificationError(f"the server proved a revision of transaction {proof.tx_id}, after {at_tx}")
                    doc = verify(proof, state)
                    if at_tx is None:
                        trust.seen_revision(self.name, str(proof.id), proof.revision, started)
                    if doc is None or not predicate(doc):
                        continue  # deleted, or changed, after the query listed it
                    if doc["_id"] in seen:
                        raise VerificationError(f"the server sent document {doc['_id']!r} twice in one result")
                    seen.add(doc["_id"])
                    if limit is not None and len(seen) > limit:
                        raise VerificationError(f"the server sent more than the {limit} documents asked for")
                    if key is not None:
                        k = key(doc)
                        if last is not None and k < last:
                            raise VerificationError("the server sent the documents out of the requested sort order")
                        last = k
                    yield project(doc) if project is not None else doc
        finally:
            rest.close()  # type: ignore[attr-defined]

    def find_one(
        self, filter: dict | None = None, projection: Any = None, sort: Any = None, at_tx: int | None = None,  # noqa: A002
        *, verify: bool | None = None, max_time_ms: int | None = None, at_time: Any = None,
    ) -> dict | None:
        """The first matching document, or None (proven on a verifying connection)."""
        it = self.find(filter, projection, sort, 0, 1, at_tx, verify=verify, max_time_ms=max_time_ms, at_time=at_time)
        try:
            return next(it, None)
        finally:
            it.close()  # type: ignore[attr-defined]

    def count(
        self, filter: dict | None = None, at_tx: int | None = None, *,  # noqa: A002
        verify: bool | None = None, max_time_ms: int | None = None,
    ) -> int:
        """How many documents match. On a verifying connection the count is proven (as of the
        current state; a count as of ``at_tx`` is refused with ProofUnavailableError unless
        ``verify=False``). ``max_time_ms`` as for :meth:`find`."""
        compile_filter(filter)
        budget.seconds_of(max_time_ms)
        at_tx = _int_or_none(at_tx, "at_tx")
        if self._conn.trust is not None and verify is not False and at_tx is None:
            return int(self._proven("count", filter, max_time_ms=max_time_ms))
        refuse_unproven(self._conn.trust is not None, verify, "a count")
        req = pb.CountRequest(collection=self.name, filter=codec.dumps_opt(filter))
        _set_opt(req, "at_tx", at_tx)
        return self._conn.call(self._stub.Count, req, max_time_ms=max_time_ms).count

    def distinct(
        self, field: str, filter: dict | None = None, at_tx: int | None = None, *,  # noqa: A002
        verify: bool | None = None, max_time_ms: int | None = None,
    ) -> list:
        """Distinct values of ``field`` among matching documents (arrays contribute elements).
        Proven on a verifying connection as of the current state (as of ``at_tx``: refused with
        ProofUnavailableError unless ``verify=False``). ``max_time_ms`` as for :meth:`find`."""
        check_field(field)
        compile_filter(filter)
        budget.seconds_of(max_time_ms)
        at_tx = _int_or_none(at_tx, "at_tx")
        if self._conn.trust is not None and verify is not False and at_tx is None:
            return list(self._proven("distinct", filter, field=field, max_time_ms=max_time_ms))
        refuse_unproven(self._conn.trust is not None, verify, "a list of distinct values")
        req = pb.DistinctRequest(collection=self.name, field=field, filter=codec.dumps_opt(filter))
        _set_opt(req, "at_tx", at_tx)
        return codec.loads(self._conn.call(self._stub.Distinct, req, max_time_ms=max_time_ms).values)

    def _proven(self, op: str, filter: dict | None, sort: Any = None, skip: int = 0,  # noqa: A002
                limit: int | None = None, field: str | None = None, max_time_ms: int | None = None) -> Any:
        """A verifying connection's find, count or distinct: proven complete as of the server's
        current state (a find proof of exactly this query, checked here)."""
        if sort is not None:
            cursor.sort_key(sort)
        return self._conn.verified_query(self.name, Query(op, dict(filter or {}), sort, skip, limit, field), max_time_ms)

    def aggregate(
        self, pipeline: list, *, verify: bool | None = None, max_time_ms: int | None = None,
        at_tx: int | None = None, at_time: Any = None,
    ) -> Iterator[dict]:
        """Run an aggregation pipeline (MongoDB's ``$match $project $addFields $unwind $group
        $sort $skip $limit $count``: docs/aggregation.md); returns an iterator of its output.

        The pipeline is checked first (QueryError). Its leading ``$match`` is answered by
        :meth:`find` (an index when it can; on a verifying connection its documents proven as
        ``find`` proves them, ``verify=False`` reads them unverified); the other stages run here, in
        this process, over those documents. ``max_time_ms``, ``at_tx``, ``at_time`` as for :meth:`find`."""
        from docstore.collections.aggregate import aggregate_over

        def find(match: dict | None) -> Iterator[dict]:
            return self.find(match, at_tx=at_tx, verify=verify, max_time_ms=max_time_ms, at_time=at_time)

        return aggregate_over(pipeline, find, max_time_ms)

    def explain(self, filter: dict | None = None, *, verify: bool | None = None) -> dict[str, Any]:  # noqa: A002
        """How ``find(filter)`` would run on the server: ``{"plan": "index"|"scan", ...}``
        (a verifying connection refuses unless ``verify=False``: the plan is not proven)."""
        compile_filter(filter)
        refuse_unproven(self._conn.trust is not None, verify, "a query plan")
        return codec.loads(self._call(self._stub.Explain, pb.ExplainRequest(collection=self.name, filter=codec.dumps_opt(filter))).plan)

    # --------------------------------------------------------------- proofs
    def prove(
        self,
        doc_id: str,
        pointer: str | None = None,
        at_tx: int | None = None,
        state: kvcore.State | None = None,
        known_state: kvcore.State | None = None,
        *,
        with_meta: bool = False,
    ) -> Proof:
        """A proof of the document, or one property of it (see the embedded API). It is not
        checked here: verify it with :func:`docstore.verify` against a state you trust."""
        check_id(doc_id)
        if pointer is not None:
            split_pointer(pointer)  # InvalidPointerError, as embedded
        req = pb.ProveRequest(collection=self.name, id=doc_id, with_meta=bool(with_meta))
        _set_opt(req, "pointer", pointer)
        _set_opt(req, "at_tx", _int_or_none(at_tx, "at_tx"))
        _states(req, state, known_state)
        return self._conn.proof(self._call(self._stub.Prove, req).proof)

    def prove_schema(
        self, at_tx: int | None = None, state: kvcore.State | None = None, known_state: kvcore.State | None = None
    ) -> Proof:
        """A proof of the collection's definition (schema and indexes) as of ``at_tx``."""
        req = pb.ProveSchemaRequest(collection=self.name)
        _set_opt(req, "at_tx", _int_or_none(at_tx, "at_tx"))
        _states(req, state, known_state)
        return self._conn.proof(self._call(self._stub.ProveSchema, req).proof)

    def prove_latest(
        self, doc_id: str, pointer: str | None = None, *, state: kvcore.State | None = None,
        known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof:
        """Prove that this is the document's current revision (or, with ``pointer``, that
        property's current value) as of the current state: :func:`docstore.verify` returns the
        document (the value). DocumentNotFoundError when there is no live document (prove
        that with :meth:`prove_absent`). Not checked here: verify it against a state you trust."""
        check_id(doc_id)
        if pointer is not None:
            split_pointer(pointer)  # InvalidPointerError, as embedded
        return self._conn.prove_state(self.name, "latest", doc_id, pointer, None, state, known_state, with_header)

    def prove_absent(
        self, doc_id: str, *, state: kvcore.State | None = None, known_state: kvcore.State | None = None,
        with_header: bool = False,
    ) -> StateProof:
        """Prove that no live document has this id as of the current state (never written, or
        deleted): :func:`docstore.verify` returns None. Not checked here."""
        check_id(doc_id)
        return self._conn.prove_state(self.name, "absent", doc_id, None, None, state, known_state, with_header)

    def prove_find(
        self, filter: dict | None = None, sort: Any = None, skip: int = 0, limit: int | None = None,  # noqa: A002
        *, state: kvcore.State | None = None, known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof:
        """Prove that the result of ``find(filter, sort=sort, skip=skip, limit=limit)`` is
        complete as of the current state: :func:`docstore.verify` returns the list of
        documents. A filter on an indexed field (equality, ``$in``, a range) is proven by that
        index's ranges, O(k log n) for k candidates (with no sort and a limit, only up to the
        limit); any other filter by a listing of the whole collection (O(n)). Not checked here."""
        return self._prove_query("find", filter, sort, skip, limit, None, state, known_state, with_header)

    def prove_count(
        self, filter: dict | None = None, *, state: kvcore.State | None = None,  # noqa: A002
        known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof:
        """Prove how many documents match (as :meth:`prove_find`): verify returns the count."""
        return self._prove_query("count", filter, None, 0, None, None, state, known_state, with_header)

    def prove_distinct(
        self, field: str, filter: dict | None = None, *, state: kvcore.State | None = None,  # noqa: A002
        known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof:
        """Prove the distinct values of ``field`` among the matches (as :meth:`prove_find`):
        verify returns the list of values."""
        check_field(field)
        return self._prove_query("distinct", filter, None, 0, None, field, state, known_state, with_header)

    def _prove_query(
        self, op: str, filter: dict | None, sort: Any, skip: int, limit: int | None, field: str | None,  # noqa: A002
        state: kvcore.State | None, known_state: kvcore.State | None, with_header: bool = False,
    ) -> StateProof:
        query = checked_query(op, filter, sort, skip, limit, field)  # fail here, as embedded, on a malformed query
        return self._conn.prove_state(self.name, "find", "", None, query, state, known_state, with_header)

    # ------------------------------------------------------- schema, indexes
    def info(self, *, verify: bool | None = None) -> dict[str, Any]:
        """Name, schema, indexes and document count (a verifying connection refuses unless
        ``verify=False``: the count is not proven)."""
        refuse_unproven(self._conn.trust is not None, verify, "a collection's document count")
        return codec.loads(self._call(self._stub.DescribeCollection, pb.DescribeCollectionRequest(name=self.name)).info)

    def _meta(self) -> dict[str, Any]:
        if self._conn.trust is not None:
            return self._conn.verified_meta(self.name)
        return self.info()

    @property
    def schema(self) -> Any:
        """The collection's JSON Schema (None if it has none; proven on a verifying connection)."""
        return self._meta()["schema"]

    def indexes(self) -> list[dict[str, Any]]:
        """The secondary indexes: ``[{"field": f, "unique": bool}, ...]`` (proven on a verifying connection)."""
        return list(self._meta().get("indexes", []))

    def set_schema(self, schema: Any) -> None:
        """Set (or with None remove) the schema; every existing document must satisfy it."""
        schema_json = codec.dumps_opt(schema, SchemaError)  # as embedded: not JSON is a SchemaError
        self._call(self._stub.SetSchema, pb.SetSchemaRequest(collection=self.name, schema=schema_json))

    def set_require_reason(self, on: bool = True) -> None:
        """Require (or no longer require) a ``reason`` for every change of an existing document."""
        if type(on) is not bool:
            raise QueryError(f"require_reason is True or False, got {on!r}")
        self._call(self._stub.SetRequireReason, pb.SetRequireReasonRequest(collection=self.name, on=on))

    def create_index(
        self, field: str | list[str], unique: bool = False, *, sparse: bool = False,
        partial_filter: dict | None = None,
    ) -> None:
        """Create a secondary index on a (dotted) field, or a compound index on several,
        backfilled from existing documents (``sparse``, ``partial_filter``: as embedded)."""
        spec = check_spec({"field": field, "unique": unique, "sparse": sparse, "partial_filter": partial_filter})
        request = pb.CreateIndexRequest(
            collection=self.name, field=spec["field"], unique=unique, sparse=sparse,
            partial_filter=codec.dumps_opt(partial_filter, QueryError),
        )
        self._call(self._stub.CreateIndex, request, timeout=None)

    def drop_index(self, field: str | list[str]) -> None:
        """Drop the index on ``field`` (a compound index: its fields or its name; NotFoundError
        if there is none)."""
        name = ",".join(index_name_fields(field))
        self._call(self._stub.DropIndex, pb.DropIndexRequest(collection=self.name, field=name), timeout=None)


_INT64_MAX = 2**63 - 1


def _states(req: Any, state: kvcore.State | None, known_state: kvcore.State | None) -> None:
    for field, value in (("state", state), ("known_state", known_state)):
        if value is None:
            continue
        getattr(req, field).CopyFrom(codec.state_to_pb(value, field))


def _chain(first: Any, rest: Iterator[Any]) -> Iterator[Any]:
    if first is not None:
        yield first
    yield from rest


def _documents(first: Any, rest: Iterator[pb.FindPage]) -> Iterator[dict]:
    try:
        for page in _chain(first, rest):
            for raw in page.documents:
                yield codec.loads(raw)
    finally:
        rest.close()  # type: ignore[attr-defined]
