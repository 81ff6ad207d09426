"""A collection of the embedded database: writes run as transactions, reads use the engine's
derived state (or, on a verifying database, proofs of its ledger)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, TypeVar


from kvcore import gcpause

from docstore.documents import records
from docstore.api import DeleteResult, Erasure, InsertedIds, Revision, UpdateResult
from docstore.collections import budget, cursor
from docstore.collections.indexes import check_field, union_documents
from docstore.collections.indexspec import check_parallel_arrays, check_spec, index_name_fields, spec_keys
from docstore.collections.query import compile_filter, distinct_values
from docstore.collections.schema import Schema
from docstore.errors import (
    DocumentNotFoundError,
    DuplicateKeyError,
    InvalidDocumentError,
    NotFoundError,
    QueryError,
    SchemaError,
    VerificationError,
    refuse_unproven,
)
from docstore.documents.flatten import flatten
from docstore.documents.ids import check_id, in_groups
from docstore.documents import txmeta
from docstore.transfer import check_fits
from docstore.transactions import by_filter, txlog

if TYPE_CHECKING:
    import kvcore

    from docstore.engine.engine import Engine
    from docstore.engine.engine import CollectionInfo, Items
    from docstore.proofs.bundle import Proof
    from docstore.proofs.statebundle import StateProof
    from docstore.transactions.transaction import Transaction


T = TypeVar("T")
STALE_TRIES = 20
"""Snapshots of the derived state a verifying find takes while it is behind the trusted state
(a commit being applied) before refusing it as stale."""
BULK_DOCS = 64
"""insert_many of at least this many documents pauses the cyclic GC (kvcore.gcpause)."""

class Collection(by_filter.WritesByFilter):
    """Documents of one kind. Get one with ``db.collection(name)`` or ``db[name]``."""

    def __init__(self, engine: Engine, name: str) -> None:
        self._engine = engine
        self.name = name

    def __repr__(self) -> str:
        return f"<Collection {self.name!r}>"

    @property
    def _verifying(self) -> bool:
        return self._engine.trust is not None

    def _state(self) -> CollectionInfo:
        return self._engine.collection_state(self.name)

    def _run(
        self, fn: Callable[[Transaction], T], key: str | None = None, kind: str = "", tx_meta: bytes | None = None
    ) -> T:
        from docstore.transactions import requests
        from docstore.transactions.transaction import run

        request = None if key is None else (requests.check_key(key), kind, self.name)
        return run(self._engine, fn, request, tx_meta)

    # --------------------------------------------------------------- writes
    # ``idempotency_key``: the write is committed once, whatever number of times it is sent
    # with that key; a repeat returns what the first returned (docs/errors.md). ``user``,
    # ``reason``, ``meta``: committed with the write's transaction (Database.transaction).
    def insert(
        self, doc: dict, *, idempotency_key: str | None = None, user: str | None = None, reason: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str:
        """Insert a document; returns its ``_id`` (generated if the document has none)."""
        if idempotency_key is not None:  # recorded as an insert of a list, as remotely
            return self.insert_many([doc], idempotency_key=idempotency_key, user=user, reason=reason, meta=meta)[0]
        return self._run(lambda tx: tx[self.name].insert(doc), tx_meta=txmeta.encode(user, reason, meta))

    def insert_many(
        self, docs: Iterable[dict], *, per_transaction: int | None = None, idempotency_key: str | None = None,
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> InsertedIds:
        """Insert documents in one atomic transaction; returns their ids (a list, whose
        ``transactions`` says which transaction wrote them: :class:`docstore.InsertedIds`).

        With ``per_transaction=n``, ``docs`` (any iterable, read lazily) is committed ``n``
        documents at a time, each group atomic: memory stays bounded whatever their number
        (a group that fails raises, and the groups before it stay committed)."""
        if isinstance(docs, (dict, str, bytes)) or not isinstance(docs, Iterable):
            raise InvalidDocumentError(f"insert_many takes a list of documents, got {type(docs).__name__}")
        if per_transaction is not None:
            if idempotency_key is not None:
                raise QueryError("an idempotency key covers one transaction: not per_transaction (give each its own)")
            tx_meta = txmeta.encode(user, reason, meta)  # checked before any group is written
            out = InsertedIds()
            for group in in_groups(docs, per_transaction):
                out.add(*self._insert_tx(group, None, tx_meta))
            return out
        docs = list(docs)
        tx_meta = txmeta.encode(user, reason, meta)
        check_fits(docs, self.name)  # too large for one transaction: said before any work
        # see kvcore.gcpause: a batch's temporaries are freed by reference counts
        with gcpause.paused() if len(docs) >= BULK_DOCS else nullcontext():
            return InsertedIds().with_tx(*self._insert_tx(docs, idempotency_key, tx_meta))

    def _insert_tx(self, docs: list[dict], key: str | None, tx_meta: bytes | None) -> tuple[list[str], int | None]:
        """(ids, transaction: None for a repeat of an idempotent write) of one insert_many."""
        ran: list[Transaction] = []

        def body(tx: Transaction) -> list[str]:
            ran.append(tx)
            return tx[self.name].insert_many(docs)

        ids = self._run(body, key, "insert", tx_meta)
        return list(ids), ran[-1].tx_id if ran else None

    def replace(
        self, doc_id: str, doc: dict, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> dict:
        """Replace a whole document (a new revision); returns it."""
        return self._run(lambda tx: tx[self.name].replace(doc_id, doc), idempotency_key, "replace",
                         txmeta.encode(user, reason, meta))

    def update(
        self, doc_id: str, changes: dict, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> dict:
        """Apply update operators (docs/updates.md; a new revision); returns the document."""
        return self._run(lambda tx: tx[self.name].update(doc_id, changes), idempotency_key, "update",
                         txmeta.encode(user, reason, meta))

    def delete(
        self, doc_id: str, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> None:
        """Delete a document: a tombstone revision; its history stays."""
        self._run(lambda tx: tx[self.name].delete(doc_id), idempotency_key, "delete", txmeta.encode(user, reason, meta))

    def erase(
        self, doc_id: str, pointers: list[str] | None = None, *, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> Erasure:
        """Destroy the stored values of ``pointers`` (default: every property but ``_id``) of
        ``doc_id``, in every revision, keeping their hashes: every proof of everything else
        still verifies, and reads show each erased property as ``{"$erased": N}``, ``N`` the
        erasing transaction (docs/documents.md, "Erasure"). Returns an :class:`Erasure`."""
        from docstore.documents.erasure import check_pointers
        from docstore.transactions.erase import erase

        check_id(doc_id)
        return erase(self._engine, self.name, doc_id, check_pointers(pointers), txmeta.encode(user, reason, meta))

    def erasures(self, doc_id: str) -> list[dict[str, Any]]:
        """The erasures of a document, oldest first: each ``{"tx_id", "timestamp_ns", "user",
        "reason", "meta", "pointers", "erased"}`` (``pointers`` None: the whole document);
        proven on a verifying database."""
        from docstore.transactions.erase import erasure_records

        check_id(doc_id)
        return erasure_records(self._engine, self.name, doc_id)

    def prove_erasures(self, doc_id: str, state: kvcore.State | None = None) -> list[dict[str, Any]]:
        """Proofs of the document's erasure records (as :meth:`erasures` lists them) relative to
        ``state`` (default: now): verify each with
        ``docstore.proofs.erasureproof.verify_record``."""
        from docstore.transactions.erase import erasure_bundles

        check_id(doc_id)
        return erasure_bundles(self._engine, self.name, doc_id, state)

    # ------------------------------------------------- writes by filter (pymongo's names)
    # (by_filter.WritesByFilter: update_one, update_many, replace_one, delete_one, delete_many,
    # count_documents.) Each is one transaction: the matches are found and written in it (a
    # concurrent write of one of them, or a new match, makes it run again); more writes than
    # one transaction holds are refused before anything is written.
    def _write_by_filter(
        self, kind: str, filter: Any, update: Any, upsert: Any, key: str | None,  # noqa: A002
        user: str | None, reason: str | None, meta: dict[str, Any] | None,
    ) -> UpdateResult | DeleteResult:
        ran: list[Transaction] = []

        def body(tx: Transaction) -> dict[str, Any]:
            ran.append(tx)
            result = by_filter.write(tx[self.name], kind, filter, update, upsert)
            return {k: v for k, v in result.to_dict().items() if k != "tx"}  # recorded under a key

        recorded = self._run(body, key, kind, txmeta.encode(user, reason, meta))
        return by_filter.result(kind, recorded, ran[-1].tx_id if ran else None)

    # ---------------------------------------------------------------- reads
    def get(self, doc_id: str, at_tx: int | None = None, *, at_time: Any = None) -> dict:
        """The document (as of ledger transaction ``at_tx``, or as of ``at_time``: the last
        transaction committed at or before that time, a timezone-aware datetime or ISO 8601
        text); DocumentNotFoundError if none."""
        check_id(doc_id)
        engine = self._engine  # each of its reads below checks the database is open
        at_tx = txlog.resolve(engine, at_tx, at_time)
        if engine.trust is not None:
            from docstore.proofs import reader

            self._state()
            if at_tx is None:  # proven the current revision, or proven absent
                return reader.latest(engine, self.name, doc_id)
            return reader.document(engine, self.name, doc_id, at_tx)
        if at_tx is None:
            doc = engine.current_document(self.name, doc_id)
            if doc is None:
                raise DocumentNotFoundError(f"no document {doc_id!r} in {self.name!r}")
            return doc
        found = engine.revision(self.name, doc_id, at_tx)
        if found is None:
            raise DocumentNotFoundError(f"no document {doc_id!r} in {self.name!r} as of transaction {at_tx}")
        if found[1] is None:
            raise DocumentNotFoundError(
                f"document {doc_id!r} in {self.name!r} was deleted as of transaction {at_tx}"
            )
        return found[1]

    def revision(self, doc_id: str, at_tx: int | None = None) -> tuple[dict | None, int | None]:
        """(the live document, its revision number) as of ledger transaction ``at_tx`` (default:
        now), read from the ledger; ``(None, None)`` if there is none (never written, or
        deleted). On a verifying database, proven."""
        check_id(doc_id)
        self._state()
        if self._verifying:
            from docstore.proofs import reader

            try:
                doc, rev = reader.revision(self._engine, self.name, doc_id, at_tx)
            except DocumentNotFoundError:
                return None, None
            return (doc, rev) if doc is not None else (None, None)
        found = self._engine.revision(self.name, doc_id, at_tx)
        if found is None or found[1] is None:
            return None, None
        return found[1], found[0].revision

    def history(self, doc_id: str, offset: int = 0, limit: int | None = None) -> list[Revision]:
        """Every revision of a document, oldest first (deletions included), paged."""
        check_id(doc_id)
        engine = self._engine
        entries = engine.history(self.name, doc_id, offset, limit)
        if not entries and offset == 0 and (limit != 0 or not engine.history(self.name, doc_id, 0, 1)):
            raise DocumentNotFoundError(f"no document {doc_id!r} in {self.name!r}")
        out: list[Revision] = []
        for e in entries:
            if self._verifying:  # each revision proven: its header, properties and transaction
                from docstore.proofs import reader

                proof = reader.proof_at(engine, self.name, doc_id, e.tx_id)
                if proof.tx_id != e.tx_id:
                    raise VerificationError(
                        f"document {doc_id!r} in {self.name!r}: the history lists a revision of "
                        f"transaction {e.tx_id}, the ledger proves transaction {proof.tx_id}"
                    )
                expected = offset + len(out) + 1  # revisions are numbered 1, 2, ...: none left out
                if proof.revision != expected:
                    raise VerificationError(
                        f"document {doc_id!r} in {self.name!r}: the history lists revision {proof.revision} "
                        f"where revision {expected} comes (a revision was left out or reordered)"
                    )
                deleted = proof.claim is None
                revision = Revision(proof.revision, proof.tx_id, proof.tx.timestamp_ns, deleted, proof.claim)
                out.append(revision.with_tx_meta(reader.tx_meta(engine, proof.tx_id, proof.state)))
                continue
            header, doc = engine.revision_of(self.name, e)
            revision = Revision(header.revision, e.tx_id, engine.tx_time_ns(e.tx_id), header.deleted, doc)
            out.append(revision.with_tx_meta(engine.tx_meta(e.tx_id)))
        return out

    def _docs(self, filter: dict | None, at_tx: int | None) -> tuple[Iterator[dict], int | None]:  # noqa: A002
        """(the candidate documents, the ledger transaction their snapshot reflects: None when
        ``at_tx`` names it)."""
        engine = self._engine
        engine.check_open()
        if at_tx is not None:
            return (doc for _id, doc in engine.documents_at(self.name, at_tx)), None
        state = self._state()
        plan = cursor.choose_plan(filter, state.indexes, state.count)
        trusted = engine.trust.state.tx_id if engine.trust is not None else 0
        for attempt in range(STALE_TRIES):
            items: Items | None
            if plan.kind == "scan":
                items = engine.current_items(self.name)
            elif plan.kind == "or":
                items = union_documents(engine, state.indexes, plan.branches)
            else:
                assert plan.field is not None, "an index plan names its index"
                items = state.indexes[plan.field].documents_in(plan.byte_ranges())
            assert items is not None, "a collection that exists has its documents' rows"
            if items.tx_id >= trusted:
                return (doc for _id, doc in items), items.tx_id
            # the derived state is behind what this reader already trusts: a commit whose
            # derived rows are being written (wait for it), or a stale derived state (refused)
            items.close()
            if engine.readonly:
                engine.refresh()  # (a private derived state is brought up to date here)
            with engine.lock:
                pass
            time.sleep(0.01 * attempt)
        seen = items.tx_id if items is not None else 0
        raise VerificationError(
            f"the derived state reflects transaction {seen}, older than the trusted state "
            f"{trusted}: a stale (rolled back) derived state; audit the database"
        )

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
        max_time_ms: int | None = None,
        at_time: Any = None,
    ) -> Iterator[dict]:
        """Documents matching a Mongo-style ``filter`` (as of ``at_tx``, or ``at_time``: see
        :meth:`get`), as an iterator.

        Uses a secondary index for equality, ``$in`` and ranges on an indexed field when it
        can (see :meth:`explain`); the filter is always checked on every candidate. On a
        verifying database (or with ``verify=True``) every match is proven first and only
        proven documents are returned; ``verify=False`` reads them unverified.
        ``max_time_ms``: the query stops with QueryTimeoutError once that many milliseconds
        have passed (while the iterator is being read); a ``$regex`` test of one value has a
        budget of its own (docs/queries.md).
        """
        at = budget.deadline(budget.seconds_of(max_time_ms))
        at_tx = txlog.resolve(self._engine, at_tx, at_time)
        with budget.until(at):
            return budget.bounded(self._find(filter, projection, sort, skip, limit, at_tx, verify), at)

    def _find(
        self, filter: dict | None, projection: Any, sort: Any, skip: int, limit: int | None,  # noqa: A002
        at_tx: int | None, verify: bool | None,
    ) -> Iterator[dict]:
        predicate = compile_filter(filter)
        cursor.check_paging(skip, limit)
        if verify and not self._verifying:
            raise VerificationError("find(verify=True) needs a verifying database (a trusted state)")
        if self._verifying and verify is not False and at_tx is None:  # the result proven complete
            docs = iter(self._proven("find", filter, sort, skip, limit))
            return cursor.run_query(docs, None, projection, None, 0, None)
        docs, snapshot = self._docs(filter, at_tx)
        if self._verifying and verify is not False:  # prove every match; nothing unverified is returned
            docs = self._verify_matches(docs, predicate, at_tx, snapshot)
        return cursor.run_query(docs, filter, projection, sort, skip, limit, predicate=predicate)

    def _proven(self, op: str, filter: dict | None, sort: Any = None, skip: int = 0,  # noqa: A002
                limit: int | None = None, field: str | None = None) -> Any:
        """A verifying database's find, count or distinct: proven complete as of the current
        state (a filter on an indexed field by that index's ranges; any other by a listing of
        the whole collection, O(n))."""
        from docstore.proofs import reader
        from docstore.proofs.statebundle import Query

        if sort is not None:
            cursor.sort_key(sort)
        self._state()
        return reader.query(self._engine, self.name, Query(op, dict(filter or {}), sort, skip, limit, field))

    def _verify_matches(
        self, docs: Iterable[dict], predicate: Any, at_tx: int | None, snapshot: int | None
    ) -> Iterator[dict]:
        """Replace each matching document by its proven revision; a difference is tampering.
        Candidates of the current state are proven as of the transaction their snapshot
        reflects (``snapshot``), so a commit landing meanwhile is no false alarm; a snapshot
        older than the trusted state is refused before (:meth:`_docs`).

        (A verifying reader proves what it returns; it cannot prove that no other document
        would have matched: see the guarantees in the README.)
        """
        from docstore.proofs import reader

        engine, name = self._engine, self.name
        as_of = at_tx if at_tx is not None else snapshot
        if as_of is not None and as_of > engine.tx_id:  # another process's commit: take in its log
            engine.refresh()
        for doc in docs:
            if not predicate(doc):
                continue
            try:
                proven = reader.document(engine, name, doc["_id"], as_of)
            except DocumentNotFoundError:
                proven = None
            if proven is None or flatten(proven) != flatten(doc) or not predicate(proven):
                raise VerificationError(
                    f"document {doc['_id']!r} in {name!r}: what the database served differs from "
                    "what the ledger proves"
                )
            yield proven

    def find_one(
        self, filter: dict | None = None, projection: Any = None, sort: Any = None, at_tx: int | None = None,  # noqa: A002
        *, verify: bool | None = None, max_time_ms: int | None = None, at_time: Any = None,
    ) -> dict | None:
        """The first matching document, or None (proven on a verifying database)."""
        return next(self.find(filter, projection, sort, 0, 1, at_tx, verify=verify, max_time_ms=max_time_ms,
                              at_time=at_time), None)

    def count(
        self, filter: dict | None = None, at_tx: int | None = None, *,  # noqa: A002
        verify: bool | None = None, max_time_ms: int | None = None,
    ) -> int:
        """How many documents match. On a verifying database the count is proven (as of the
        current state; a count as of ``at_tx`` is refused with ProofUnavailableError unless
        ``verify=False``). ``max_time_ms`` as for :meth:`find`."""
        with budget.until(budget.deadline(budget.seconds_of(max_time_ms))):
            return self._count(filter, at_tx, verify)

    def _count(self, filter: dict | None, at_tx: int | None, verify: bool | None) -> int:  # noqa: A002
        compile_filter(filter)
        if self._verifying and verify is not False and at_tx is None:
            return int(self._proven("count", filter))
        refuse_unproven(self._verifying, verify, "a count")
        if not filter and at_tx is None:
            return self._state().count
        return sum(1 for _ in self._unverified_find(filter, at_tx))

    def distinct(
        self, field: str, filter: dict | None = None, at_tx: int | None = None, *,  # noqa: A002
        verify: bool | None = None, max_time_ms: int | None = None,
    ) -> list:
        """Distinct values of ``field`` among matching documents (arrays contribute elements).
        Proven on a verifying database as of the current state (as of ``at_tx``: refused with
        ProofUnavailableError unless ``verify=False``). ``max_time_ms`` as for :meth:`find`."""
        with budget.until(budget.deadline(budget.seconds_of(max_time_ms))):
            return self._distinct(field, filter, at_tx, verify)

    def _distinct(self, field: str, filter: dict | None, at_tx: int | None, verify: bool | None) -> list:  # noqa: A002
        check_field(field)
        compile_filter(filter)
        if self._verifying and verify is not False and at_tx is None:
            return list(self._proven("distinct", filter, field=field))
        refuse_unproven(self._verifying, verify, "a list of distinct values")
        return distinct_values(self._unverified_find(filter, at_tx), field)

    def _unverified_find(self, filter: dict | None, at_tx: int | None) -> Iterator[dict]:  # noqa: A002
        predicate = compile_filter(filter)
        return cursor.run_query(self._docs(filter, at_tx)[0], filter, None, None, 0, None, predicate=predicate)

    def aggregate(
        self, pipeline: list, *, verify: bool | None = None, max_time_ms: int | None = None,
        at_tx: int | None = None, at_time: Any = None,
    ) -> Iterator[dict]:
        """Run an aggregation pipeline (MongoDB's ``$match $project $addFields $unwind $group
        $sort $skip $limit $count``: docs/aggregation.md); returns an iterator of its output.

        The pipeline is checked first (QueryError). Its leading ``$match`` is answered by
        :meth:`find` (an index when it can; on a verifying database its documents proven as
        ``find`` proves them, ``verify=False`` reads them unverified); the other stages run here,
        over those documents. ``max_time_ms``, ``at_tx``, ``at_time`` as for :meth:`find`."""
        from docstore.collections.aggregate import aggregate_over

        def find(match: dict | None) -> Iterator[dict]:
            return self.find(match, at_tx=at_tx, verify=verify, max_time_ms=max_time_ms, at_time=at_time)

        return aggregate_over(pipeline, find, max_time_ms)

    def explain(self, filter: dict | None = None, *, verify: bool | None = None) -> dict[str, Any]:  # noqa: A002
        """How ``find(filter)`` would run: ``{"plan": "index"|"scan", ...}`` (a verifying
        database refuses unless ``verify=False``: the plan is not proven)."""
        compile_filter(filter)
        refuse_unproven(self._verifying, verify, "a query plan")
        state = self._state()
        return cursor.choose_plan(filter, state.indexes, state.count, count=True).to_dict()

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
        """Prove the document (its latest revision, or as of ``at_tx``) or one property of it.

        With ``pointer`` (RFC 6901, e.g. ``"/dosage/mg"``) the proof shows that one value and
        nothing else of the document. The proof is relative to ``state`` (default: now); with
        ``known_state`` (a state the verifier already trusts) it also carries the consistency
        proof linking the two. A deleted document's latest revision proves its tombstone.
        ``with_meta=True``: the proof also proves who wrote the revision and why (its
        transaction's metadata; ``docstore.verify(..., with_meta=True)`` returns it).
        """
        from docstore.proofs.prove import prove_document

        check_id(doc_id)
        self._engine.require_collection(self.name)
        proof = prove_document(self._engine, self.name, doc_id, pointer, at_tx, state, known_state)
        if with_meta:
            from docstore.proofs.txproof import with_tx_meta

            proof = with_tx_meta(self._engine, proof)
        return proof

    def prove_schema(
        self, at_tx: int | None = None, state: kvcore.State | None = None, known_state: kvcore.State | None = None
    ) -> Proof:
        """Prove the collection's definition (schema and indexes) as of ``at_tx``."""
        from docstore.proofs.prove import prove_collection

        self._engine.check_open()
        return prove_collection(self._engine, self.name, at_tx, state, known_state)

    def prove_latest(
        self, doc_id: str, pointer: str | None = None, *, state: kvcore.State | None = None,
        known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof:
        """Prove that this is the document's current revision (or, with ``pointer``, that
        property's current value) as of the current state: :func:`docstore.verify` returns the
        document (the value). DocumentNotFoundError when there is no live document (prove
        that with :meth:`prove_absent`).

        The bundle's signed checkpoint names the state map's root, so its verifier pins the
        ledger's key (or trusts that very checkpoint); ``with_header=True`` adds the state's
        transaction header and its inclusion path (about 600 bytes at a million
        transactions), for a verifier that holds the state without a key. The same holds for
        every proof of the current state."""
        from docstore.proofs.provestate import prove_latest

        check_id(doc_id)
        self._engine.require_collection(self.name)
        return prove_latest(self._engine, self.name, doc_id, pointer, state, known_state, with_header)

    def prove_absent(
        self, doc_id: str, *, state: kvcore.State | None = None, known_state: kvcore.State | None = None,
        with_header: bool = False,
    ) -> StateProof:
        """Prove that no live document has this id as of the current state (never written, or
        deleted): :func:`docstore.verify` returns None (``with_header``: see :meth:`prove_latest`)."""
        from docstore.proofs.provestate import prove_absent

        check_id(doc_id)
        self._engine.require_collection(self.name)
        return prove_absent(self._engine, self.name, doc_id, state, known_state, with_header)

    def prove_find(
        self, filter: dict | None = None, sort: Any = None, skip: int = 0, limit: int | None = None,  # noqa: A002
        *, state: kvcore.State | None = None, known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof:
        """Prove that the result of ``find(filter, sort=sort, skip=skip, limit=limit)`` is
        complete as of the current state: :func:`docstore.verify` returns the list of
        documents. A filter on an indexed field (equality, ``$in``, a range) is proven by that
        index's ranges, O(k log n) for k candidates (with no sort and a limit, only up to the
        limit); any other filter by a listing of the whole collection (O(n))."""
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
        from docstore.proofs.provestate import prove_find
        from docstore.proofs.statebundle import checked_query

        query = checked_query(op, filter, sort, skip, limit, field)
        self._engine.require_collection(self.name)
        return prove_find(self._engine, self.name, query, state, known_state, with_header)

    # ------------------------------------------------------- schema, indexes
    def _meta(self) -> dict[str, Any]:
        """The collection's definition; on a verifying database, proven first."""
        meta = self._state().meta
        if self._verifying:
            from docstore.proofs import reader

            return reader.definition(self._engine, self.name)
        return meta

    @property
    def schema(self) -> Any:
        """The collection's JSON Schema (None if it has none; proven on a verifying database)."""
        return self._meta().get("schema")

    def indexes(self) -> list[dict[str, Any]]:
        """The secondary indexes: ``[{"field": f, "unique": bool}, ...]`` (proven on a verifying database)."""
        return list(self._meta().get("indexes", []))

    def set_schema(self, schema: Any) -> None:
        """Set (or with None remove) the schema: a new, provable collection revision.

        Every existing document must satisfy the new schema, or SchemaError lists them.
        """
        Schema(schema) if schema is not None else None  # a bad schema: refused before any work

        def change(tx: Transaction) -> None:
            staged = tx.staged
            meta = dict(staged.meta(self.name))
            compiled = None if schema is None else Schema(schema, bool(meta.get("schema_formats")))
            if compiled is not None:
                bad = []
                for doc in staged.iter_docs(self.name):
                    try:
                        compiled.check(doc, f"document {doc.get('_id')!r}")
                    except SchemaError as e:
                        bad.append(str(e))
                        if len(bad) >= 10:
                            break
                if bad:
                    raise SchemaError(
                        "existing documents violate the new schema: " + " | ".join(bad),
                        [("", b) for b in bad],
                    )
            meta["schema"] = schema
            staged.set_meta(self.name, meta)

        self._run(change)

    def set_require_reason(self, on: bool = True) -> None:
        """Require (or no longer require) a ``reason`` for every change of an existing document
        of this collection: a new, provable collection revision."""
        if type(on) is not bool:
            raise QueryError(f"require_reason is True or False, got {on!r}")

        def change(tx: Transaction) -> None:
            meta = dict(tx.staged.meta(self.name))
            meta.pop("require_reason", None)
            if on:
                meta["require_reason"] = True
            tx.staged.set_meta(self.name, meta)

        self._run(change)

    def create_index(
        self, field: str | list[str], unique: bool = False, *, sparse: bool = False,
        partial_filter: dict | None = None,
    ) -> None:
        """Create a secondary index on a (dotted) field, backfilled from existing documents.

        With ``unique=True``, DuplicateKeyError names two documents sharing a value.
        ``sparse=True``: documents without the field are not indexed (nor claim a unique
        value); ``partial_filter``: only documents matching it are (MongoDB's
        partialFilterExpression subset: docs/queries.md, "Indexes"). A query uses a sparse or
        partial index only when its filter implies the index's condition. A list of fields (or
        their names joined by commas, "a,b") makes a compound index, named "a,b".
        """
        spec = check_spec({"field": field, "unique": unique, "sparse": sparse, "partial_filter": partial_filter})
        name: str = spec["field"]

        def create(tx: Transaction) -> None:
            staged = tx.staged
            meta = dict(staged.meta(self.name))
            indexes = list(meta.get("indexes", []))
            if any(i["field"] == name for i in indexes):
                raise QueryError(f"collection {self.name!r} already has an index on {name!r}")
            if spec.get("fields"):
                for doc in staged.iter_docs(self.name):
                    check_parallel_arrays(doc, spec, self.name)
            if unique:
                seen: dict[bytes, str] = {}
                for doc in staged.iter_docs(self.name):
                    for k in spec_keys(doc, spec):
                        if k in seen:
                            raise DuplicateKeyError(
                                f"cannot create unique index {self.name}.{name}: documents "
                                f"{seen[k]!r} and {doc['_id']!r} share a value"
                            )
                        seen[k] = doc["_id"]
                for k, doc_id in seen.items():
                    staged.claim(records.unique_key(self.name, name, k), doc_id)
            indexes.append(spec)
            meta["indexes"] = indexes
            staged.set_meta(self.name, meta)

        self._run(create)

    def drop_index(self, field: str | list[str]) -> None:
        """Drop the index on ``field`` (a compound index: its fields, or its name "a,b"): a new,
        provable revision of the collection's definition (its rows in the derived state and its
        entries in the state map go; a unique index's claims are released). NotFoundError if the
        collection has no such index."""
        name = ",".join(index_name_fields(field))

        def drop(tx: Transaction) -> None:
            staged = tx.staged
            meta = dict(staged.meta(self.name))
            indexes = list(meta.get("indexes", []))
            found = [i for i in indexes if i["field"] == name]
            if not found:
                names = ", ".join(repr(i["field"]) for i in indexes) or "none"
                raise NotFoundError(f"collection {self.name!r} has no index on {name!r} (its indexes: {names})")
            if found[0].get("unique"):
                released: set[bytes] = set()
                for doc in staged.iter_docs(self.name):
                    released.update(spec_keys(doc, found[0]))
                for k in sorted(released):
                    staged.release(records.unique_key(self.name, name, k))
            meta["indexes"] = [i for i in indexes if i["field"] != name]
            staged.set_meta(self.name, meta)

        self._run(drop)

    def info(self, *, verify: bool | None = None) -> dict[str, Any]:
        """Name, schema, indexes and document count (a verifying database refuses unless
        ``verify=False``: the count is not proven); ``"schema_formats": true`` when the
        collection asserts its schema's formats."""
        refuse_unproven(self._verifying, verify, "a collection's document count")
        state = self._state()
        info = {
            "name": self.name,
            "schema": state.meta.get("schema"),
            "indexes": list(state.meta.get("indexes", [])),
            "count": state.count,
            "require_reason": bool(state.meta.get("require_reason", False)),
        }
        if state.meta.get("schema_formats"):
            info["schema_formats"] = True
        return info


