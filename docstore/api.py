"""The contract: what a database, a collection, a transaction and a collection inside a
transaction offer, whether embedded (:func:`docstore.open`) or remote (:func:`docstore.connect`).

These are typing Protocols: the embedded classes (:mod:`docstore.database`,
:mod:`docstore.collections.collection`, :mod:`docstore.transactions.transaction`) and the remote
ones (:mod:`docstore.remote`) implement them, the same methods with the same arguments, results
and errors; the test suite runs against both. Write code against these types to run it on
either. What each read proves on a verifying database is in the README's Trust section.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

if TYPE_CHECKING:
    import kvcore

    from docstore.proofs.bundle import Proof
    from docstore.proofs.statebundle import StateProof

__all__ = [
    "Collection", "Database", "DeleteResult", "Erasure", "InsertedIds", "Revision", "Transaction", "TxCollection", "UpdateResult",
]

T = TypeVar("T")


@dataclass(frozen=True)
class Revision:
    """One revision of a document, as ``history()`` returns it."""

    revision: int
    tx_id: int
    timestamp_ns: int
    deleted: bool
    document: dict | None
    user: str | None = None
    """Who committed it: the ``user`` its transaction was given (embedded), or the principal
    the server authenticated (remote); None if its transaction carries none."""
    reason: str | None = None
    """Why: the ``reason`` its transaction was given, or None."""
    meta: dict | None = None
    """The rest of its transaction's metadata (``meta=``), or None."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "revision": self.revision,
            "tx_id": self.tx_id,
            "timestamp_ns": self.timestamp_ns,
            "deleted": self.deleted,
            "document": self.document,
            "user": self.user,
            "reason": self.reason,
            "meta": self.meta,
        }

    def with_tx_meta(self, tx_meta: dict[str, Any] | None) -> Revision:
        """This revision with its transaction's metadata (docstore.transactions.txmeta)."""
        if not tx_meta:
            return self
        return replace(self, user=tx_meta.get("user"), reason=tx_meta.get("reason"), meta=tx_meta.get("meta"))


class InsertedIds(list[str]):
    """What ``insert_many`` returns: the inserted ids, in order (a list), and ``transactions``:
    ``(transaction, documents)`` for each transaction that wrote them (one; with
    ``per_transaction=n`` one a group), empty for a repeat of an idempotent write (the first
    call's ids come back, not its transaction)."""

    def __init__(self, ids: Iterable[str] = (), transactions: Iterable[tuple[int, int]] = ()) -> None:
        super().__init__(ids)
        self.transactions: list[tuple[int, int]] = list(transactions)

    def add(self, ids: list[str], tx: int | None) -> None:
        """Append one transaction's ids (``tx`` None: not known)."""
        self.extend(ids)
        if tx is not None:
            self.transactions.append((tx, len(ids)))

    def with_tx(self, ids: list[str], tx: int | None) -> InsertedIds:
        self.add(ids, tx)
        return self


@dataclass(frozen=True)
class Erasure:
    """What ``collection.erase()`` did (docs/documents.md, "Erasure")."""

    tx: int | None
    """The erasing transaction (None: everything asked for was erased before)."""
    erased: int
    """How many stored values it destroyed, over all revisions."""
    revisions: int
    """How many revisions held some of them."""

    def to_dict(self) -> dict[str, Any]:
        return {"tx": self.tx, "erased": self.erased, "revisions": self.revisions}


@dataclass(frozen=True)
class UpdateResult:
    """What ``update_one``, ``update_many`` or ``replace_one`` did (pymongo's names)."""

    matched_count: int
    """How many documents matched the filter (0 or 1 for ``update_one``, ``replace_one``)."""
    modified_count: int
    """How many of them changed (a document the update leaves as it was gets no new revision)."""
    upserted_id: str | None = None
    """The ``_id`` of the document an upsert inserted, or None."""
    tx: int | None = None
    """The ledger transaction that wrote them (None if nothing was written, and inside a
    transaction, whose id is known at its commit)."""

    def to_dict(self) -> dict[str, Any]:
        return {"matched_count": self.matched_count, "modified_count": self.modified_count,
                "upserted_id": self.upserted_id, "tx": self.tx}


@dataclass(frozen=True)
class DeleteResult:
    """What ``delete_one`` or ``delete_many`` did (pymongo's names)."""

    deleted_count: int
    tx: int | None = None
    """The ledger transaction that deleted them (None as for :class:`UpdateResult`)."""

    def to_dict(self) -> dict[str, Any]:
        return {"deleted_count": self.deleted_count, "tx": self.tx}


@runtime_checkable
class TxCollection(Protocol):
    """A collection inside a transaction: writes are buffered until commit; reads see the
    transaction's snapshot plus its own writes."""

    name: str

    def insert(self, doc: dict) -> str: ...
    def insert_many(self, docs: Iterable[dict]) -> list[str]: ...
    def replace(self, doc_id: str, doc: dict) -> dict: ...
    def update(self, doc_id: str, changes: dict) -> dict: ...
    def delete(self, doc_id: str) -> None: ...
    # writes by filter (pymongo's names): atomic with the rest of the transaction
    def update_one(self, filter: dict, update: dict, upsert: bool = False) -> UpdateResult: ...  # noqa: A002
    def update_many(self, filter: dict, update: dict, upsert: bool = False) -> UpdateResult: ...  # noqa: A002
    def replace_one(self, filter: dict, doc: dict, upsert: bool = False) -> UpdateResult: ...  # noqa: A002
    def delete_one(self, filter: dict) -> DeleteResult: ...  # noqa: A002
    def delete_many(self, filter: dict) -> DeleteResult: ...  # noqa: A002
    def count_documents(self, filter: dict, *, verify: bool | None = None) -> int: ...  # noqa: A002
    def get(self, doc_id: str) -> dict: ...
    def find(
        self, filter: dict | None = None, projection: Any = None, sort: Any = None,  # noqa: A002
        skip: int = 0, limit: int | None = None,
    ) -> Iterator[dict]: ...
    def find_one(self, filter: dict | None = None, projection: Any = None, sort: Any = None) -> dict | None: ...  # noqa: A002
    def count(self, filter: dict | None = None, *, verify: bool | None = None) -> int: ...  # noqa: A002
    def distinct(self, field: str, filter: dict | None = None, *, verify: bool | None = None) -> list: ...  # noqa: A002


@runtime_checkable
class Transaction(Protocol):
    """A multi-document, multi-collection optimistic transaction (``with db.transaction() as tx``)."""

    snapshot: int
    tx_id: int | None

    @property
    def done(self) -> bool: ...
    def __enter__(self) -> Transaction: ...
    def __exit__(self, exc_type: object, exc: object, tb: object) -> None: ...
    def __getitem__(self, name: str) -> TxCollection: ...
    def collection(self, name: str) -> TxCollection: ...
    def commit(self) -> int | None: ...
    def rollback(self) -> None: ...


@runtime_checkable
class Collection(Protocol):
    """Documents of one kind."""

    name: str

    # writes (``idempotency_key``: committed once however often sent; docs/errors.md; ``user``
    # (embedded only), ``reason``, ``meta``: committed with the write's transaction)
    def insert(
        self, doc: dict, *, idempotency_key: str | None = None, user: str | None = None, reason: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> str: ...
    def insert_many(
        self, docs: Iterable[dict], *, per_transaction: int | None = None, idempotency_key: str | None = None,
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> InsertedIds: ...
    def replace(
        self, doc_id: str, doc: dict, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> dict: ...
    def update(
        self, doc_id: str, changes: dict, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> dict: ...
    def delete(
        self, doc_id: str, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> None: ...
    def erase(
        self, doc_id: str, pointers: list[str] | None = None, *, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> Erasure: ...
    def erasures(self, doc_id: str) -> list[dict[str, Any]]: ...
    def prove_erasures(self, doc_id: str, state: kvcore.State | None = None) -> list[dict[str, Any]]: ...
    # writes by filter (pymongo's names), each atomic: one transaction finds and writes
    def update_one(
        self, filter: dict, update: dict, upsert: bool = False, *, idempotency_key: str | None = None,  # noqa: A002
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> UpdateResult: ...
    def update_many(
        self, filter: dict, update: dict, upsert: bool = False, *, idempotency_key: str | None = None,  # noqa: A002
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> UpdateResult: ...
    def replace_one(
        self, filter: dict, doc: dict, upsert: bool = False, *, idempotency_key: str | None = None,  # noqa: A002
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> UpdateResult: ...
    def delete_one(
        self, filter: dict, *, idempotency_key: str | None = None, user: str | None = None,  # noqa: A002
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> DeleteResult: ...
    def delete_many(
        self, filter: dict, *, idempotency_key: str | None = None, user: str | None = None,  # noqa: A002
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> DeleteResult: ...
    def count_documents(
        self, filter: dict, *, verify: bool | None = None, max_time_ms: int | None = None,  # noqa: A002
    ) -> int: ...

    # reads
    def get(self, doc_id: str, at_tx: int | None = None, *, at_time: Any = None) -> dict: ...
    def revision(self, doc_id: str, at_tx: int | None = None) -> tuple[dict | None, int | None]: ...
    def history(self, doc_id: str, offset: int = 0, limit: int | None = None) -> list[Revision]: ...
    def find(
        self, filter: dict | None = None, projection: Any = None, sort: Any = None,  # noqa: A002
        skip: int = 0, limit: int | None = None, at_tx: int | None = None, *, verify: bool | None = None,
        max_time_ms: int | None = None, at_time: Any = None,
    ) -> Iterator[dict]: ...
    def find_one(
        self, filter: dict | None = None, projection: Any = None, sort: Any = None,  # noqa: A002
        at_tx: int | None = None, *, verify: bool | None = None, max_time_ms: int | None = None,
        at_time: Any = None,
    ) -> dict | None: ...
    def count(
        self, filter: dict | None = None, at_tx: int | None = None, *,  # noqa: A002
        verify: bool | None = None, max_time_ms: int | None = None,
    ) -> int: ...
    def distinct(
        self, field: str, filter: dict | None = None, at_tx: int | None = None, *,  # noqa: A002
        verify: bool | None = None, max_time_ms: int | None = None,
    ) -> list: ...
    def explain(self, filter: dict | None = None, *, verify: bool | None = None) -> dict[str, Any]: ...  # noqa: A002
    def aggregate(
        self, pipeline: list, *, verify: bool | None = None, max_time_ms: int | None = None,
        at_tx: int | None = None, at_time: Any = None,
    ) -> Iterator[dict]: ...

    # proofs
    def prove(
        self, doc_id: str, pointer: str | None = None, at_tx: int | None = None,
        state: kvcore.State | None = None, known_state: kvcore.State | None = None, *, with_meta: bool = False,
    ) -> Proof: ...
    def prove_schema(
        self, at_tx: int | None = None, state: kvcore.State | None = None, known_state: kvcore.State | None = None
    ) -> Proof: ...
    # proofs of the current state (bundle version 3)
    def prove_latest(
        self, doc_id: str, pointer: str | None = None, *, state: kvcore.State | None = None,
        known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof: ...
    def prove_absent(
        self, doc_id: str, *, state: kvcore.State | None = None, known_state: kvcore.State | None = None,
        with_header: bool = False,
    ) -> StateProof: ...
    def prove_find(
        self, filter: dict | None = None, sort: Any = None, skip: int = 0, limit: int | None = None,  # noqa: A002
        *, state: kvcore.State | None = None, known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof: ...
    def prove_count(
        self, filter: dict | None = None, *, state: kvcore.State | None = None,  # noqa: A002
        known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof: ...
    def prove_distinct(
        self, field: str, filter: dict | None = None, *, state: kvcore.State | None = None,  # noqa: A002
        known_state: kvcore.State | None = None, with_header: bool = False,
    ) -> StateProof: ...

    # definition
    @property
    def schema(self) -> Any: ...
    def indexes(self) -> list[dict[str, Any]]: ...
    def set_schema(self, schema: Any) -> None: ...
    def set_require_reason(self, on: bool = True) -> None: ...
    def create_index(
        self, field: str | list[str], unique: bool = False, *, sparse: bool = False,
        partial_filter: dict | None = None,
    ) -> None: ...
    def drop_index(self, field: str | list[str]) -> None: ...
    def info(self, *, verify: bool | None = None) -> dict[str, Any]: ...


@runtime_checkable
class Database(Protocol):
    """A database: collections, transactions, states, proofs and audit."""

    local: bool
    """Capability: whether the database runs in this process (progress can be reported, keys
    rotated here); False for a remote one."""

    @property
    def readonly(self) -> bool: ...
    @property
    def tx_id(self) -> int: ...
    @property
    def verifying(self) -> bool: ...
    @property
    def trusted_state(self) -> kvcore.State | None: ...

    def close(self) -> None: ...
    def __enter__(self) -> Database: ...
    def __exit__(self, *exc: object) -> None: ...

    # collections
    def create_collection(
        self, name: str, schema: Any = None, indexes: Iterable[Any] = (), *, require_reason: bool = False,
        schema_formats: bool = False,
    ) -> Collection: ...
    def collection(self, name: str) -> Collection: ...
    def __getitem__(self, name: str) -> Collection: ...
    def __contains__(self, name: object) -> bool: ...
    def collections(self, *, verify: bool | None = None) -> list[str]: ...
    def prove_collections(
        self, *, state: kvcore.State | None = None, known_state: kvcore.State | None = None,
        with_header: bool = False,
    ) -> StateProof: ...

    # the audit trail
    def log(
        self, *, user: str | None = None, since: Any = None, until: Any = None, limit: int = 100,
        before_tx: int | None = None,
    ) -> list[dict[str, Any]]: ...
    def tx_at_time(self, at_time: Any) -> int: ...

    # transactions
    def transaction(
        self, at_tx: int | None = None, *, idempotency_key: str | None = None, user: str | None = None,
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> Transaction: ...
    def run_transaction(
        self, fn: Callable[[Any], T], *, user: str | None = None, reason: str | None = None,
        meta: dict[str, Any] | None = None,
    ) -> T: ...

    # states, signed checkpoints, audit
    def state(self) -> kvcore.State: ...
    def checkpoint(self, state: kvcore.State | None = None) -> str: ...
    def verifier_key(self) -> str: ...
    def verifier_keys(self) -> list[str]: ...
    def prove_consistency(
        self, old_state: kvcore.State, new_state: kvcore.State | None = None
    ) -> kvcore.ConsistencyProof: ...
    def audit(
        self, trusted_state: kvcore.State | None = None, progress: Callable[[int, int], None] | None = None
    ) -> kvcore.AuditReport: ...


if TYPE_CHECKING:  # mypy checks that both implementations fulfil the contract

    def _embedded(db: docstore.database.Database) -> Database:
        c: Collection = db.collection("c")
        t: Transaction = db.transaction()
        tc: TxCollection = t["c"]
        del c, tc
        return db

    def _remote(db: docstore.remote.client.RemoteDatabase) -> Database:
        c: Collection = db.collection("c")
        t: Transaction = db.transaction()
        tc: TxCollection = t["c"]
        del c, tc
        return db

    import docstore.database
    import docstore.remote.client
