"""Writes by filter, pymongo's ``update_one``, ``update_many``, ``replace_one``, ``delete_one``
and ``delete_many``, inside one transaction (embedded or remote alike).

The matching documents are read and their new revisions staged in the same transaction, so a
concurrent write of one of them, or of the collection (a new document that would match; a
filter naming an ``_id`` by equality reads that document alone), makes the commit conflict (a
single call then runs again, as every write does). A document an update leaves identical is
not written (pymongo's ``modified_count`` does not count it).
Before anything is staged, the writes are counted against what one ledger transaction holds
(:data:`kvcore.MAX_TX_ENTRIES` entries, :data:`kvcore.MAX_TX_BYTES` bytes): more is a
TransactionTooLargeError naming the limit, with nothing written.

An upsert that matches nothing inserts, as MongoDB: the filter's equality conditions (``{"a":
1}``, ``{"a": {"$eq": 1}}``, those inside ``$and``) make the new document, then the update
applies (``$setOnInsert`` too); its ``_id`` is the filter's, else a new one. A ``replace_one``
upsert inserts the replacement (with the filter's ``_id``, if it names one).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple

import kvcore

from docstore.api import DeleteResult, TxCollection, UpdateResult
from docstore.collections.query import compile_filter
from docstore.collections.update import apply_update, identical, validate_update
from docstore.documents.ids import check_id, new_id
from docstore.errors import DuplicateIdError, InvalidDocumentError, QueryError, TransactionTooLargeError



class Hooks(NamedTuple):
    """What a collection in a transaction lends a write by filter (see StagingCollection)."""

    name: str
    check_active: Callable[[], None]
    matches: Callable[[dict, bool], Iterator[dict]]
    """The matching documents in the transaction's view (all of them, or at least the first)."""
    current: Callable[[str], dict | None]
    prepare: Callable[[dict], Any]
    cost: Callable[[Any], tuple[int, int]]
    """(ledger entries, bytes) a prepared write takes."""
    stage: Callable[[list[tuple[str, Any]]], None]


def check_filter(filter: Any, what: str) -> Callable[[dict], bool]:  # noqa: A002
    """The filter's predicate; QueryError unless it is an object (``{}``: every document)."""
    if not isinstance(filter, dict):
        raise QueryError(f"{what} takes a filter object ({{}} for every document), got {type(filter).__name__}")
    return compile_filter(filter)


def check_upsert(upsert: Any) -> bool:
    if type(upsert) is not bool:
        raise QueryError(f"upsert is true or false, got {upsert!r}")
    return upsert


def check_replacement(doc: Any) -> dict:
    """A replacement document: an object without update operators."""
    if not isinstance(doc, dict):
        raise InvalidDocumentError(f"a document must be a JSON object, got {type(doc).__name__}")
    ops = [k for k in doc if isinstance(k, str) and k.startswith("$")]
    if ops:
        raise QueryError(f"a replacement document cannot hold update operators ({ops[0]}): use update_one for those")
    return doc


def _is_operators(value: Any) -> bool:
    return isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value)


def _equalities(filter: dict, out: list[tuple[str, Any]]) -> None:  # noqa: A002
    for key, value in filter.items():
        if key == "$and" and isinstance(value, list):
            for clause in value:
                if isinstance(clause, dict):
                    _equalities(clause, out)
        elif key.startswith("$"):
            continue
        elif not _is_operators(value):
            out.append((key, value))
        elif "$eq" in value:
            out.append((key, value["$eq"]))


def upsert_seed(filter: dict) -> dict:  # noqa: A002
    """The document an upsert starts from: ``_id`` (the filter's or a new one) and the
    filter's equality conditions (QueryError if two of them name one path or nested paths)."""
    pairs: list[tuple[str, Any]] = []
    _equalities(filter, pairs)
    ids = [v for k, v in pairs if k == "_id"]
    fields = [(k, v) for k, v in pairs if k != "_id"]
    if len(ids) > 1:
        raise QueryError("an upsert's filter names _id twice: the new document's _id is ambiguous")
    if len({k for k, _ in fields}) < len(fields):
        dup = next(k for i, (k, _) in enumerate(fields) if k in {x for x, _ in fields[:i]})
        raise QueryError(f"an upsert's filter names {dup!r} twice: the new document's value is ambiguous")
    doc_id = check_id(ids[0]) if ids else new_id()
    seeded = apply_update({}, {"$set": dict(fields)}) if fields else {}
    return {"_id": doc_id, **seeded}


def _pinned_id(filter: dict) -> str | None:  # noqa: A002
    """The ``_id`` the filter names by equality (a valid id), else None."""
    value = filter.get("_id")
    if isinstance(value, dict) and list(value) == ["$eq"]:
        value = value["$eq"]
    if not isinstance(value, str):
        return None
    try:
        return check_id(value)
    except InvalidDocumentError:
        return None


def _candidates(coll: Hooks, filter: dict, many: bool) -> Iterator[dict]:  # noqa: A002
    """The matches: by the filter's ``_id``, read alone (the transaction records that one
    document as read, not the whole collection), else the collection's matches."""
    doc_id = _pinned_id(filter)
    if doc_id is None:
        return coll.matches(filter, many)
    doc = coll.current(doc_id)
    return iter([doc] if doc is not None and compile_filter(filter)(doc) else [])


class _Budget:
    """Counts staged writes against one ledger transaction's limits, before any is staged."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.entries = 0
        self.bytes = 0
        self.docs = 0

    def add(self, entries: int, size: int) -> None:
        self.entries += entries
        self.bytes += size
        self.docs += 1
        if self.entries > kvcore.MAX_TX_ENTRIES or self.bytes > kvcore.MAX_TX_BYTES:
            limit = (
                f"{kvcore.MAX_TX_ENTRIES:,} entries" if self.entries > kvcore.MAX_TX_ENTRIES
                else f"{kvcore.MAX_TX_BYTES:,} bytes"
            )
            raise TransactionTooLargeError(
                f"{self.what} matches more documents than one transaction holds (the limit is {limit} "
                f"a transaction; {self.docs:,} documents reached it): nothing was written; narrow the "
                "filter and write in several calls"
            )


def _update(
    coll: Hooks, what: str, filter: dict, make: Callable[[dict], dict],  # noqa: A002
    insert: Callable[[], dict] | None, many: bool,
) -> UpdateResult:
    budget = _Budget(what)
    writes: list[tuple[str, Any]] = []
    matched = 0
    for doc in _candidates(coll, filter, many):
        matched += 1
        new = make(doc)
        if not identical(new, doc):
            prepared = coll.prepare(new)
            budget.add(*coll.cost(prepared))
            writes.append((doc["_id"], prepared))
        if not many:
            break
    if matched == 0 and insert is not None:
        new = insert()
        if coll.current(new["_id"]) is not None:  # the filter names an _id that did not match
            raise DuplicateIdError(f"a document with _id {new['_id']!r} already exists in {coll.name!r}")
        coll.stage([(new["_id"], coll.prepare(new))])
        return UpdateResult(0, 0, new["_id"])
    coll.stage(writes)
    return UpdateResult(matched, len(writes))


def update(coll: Hooks, filter: Any, changes: Any, upsert: Any, many: bool) -> UpdateResult:  # noqa: A002
    """``update_one`` (``many=False``) or ``update_many`` in the transaction of ``coll``."""
    what = "update_many" if many else "update_one"
    check_filter(filter, what)
    validate_update(changes)
    check_upsert(upsert)
    coll.check_active()

    now = time.time_ns()  # one time for $currentDate in every document of the call

    def insert() -> dict:
        return apply_update(upsert_seed(filter), changes, inserting=True, now_ns=now)

    return _update(coll, what, filter, lambda d: apply_update(d, changes, now_ns=now), insert if upsert else None, many)


def replace(coll: Hooks, filter: Any, doc: Any, upsert: Any) -> UpdateResult:  # noqa: A002
    """``replace_one`` in the transaction of ``coll``."""
    check_filter(filter, "replace_one")
    check_replacement(doc)
    check_upsert(upsert)
    coll.check_active()
    fields = {k: v for k, v in doc.items() if k != "_id"}

    def make(old: dict) -> dict:
        if "_id" in doc and doc["_id"] != old["_id"]:
            raise InvalidDocumentError("replace_one cannot change _id", "/_id")
        return {"_id": old["_id"], **fields}

    def insert() -> dict:
        seed_id = upsert_seed(filter)["_id"] if "_id" in filter else None
        if "_id" in doc and seed_id is not None and doc["_id"] != seed_id:
            raise InvalidDocumentError("replace_one: the replacement's _id differs from the filter's", "/_id")
        doc_id = doc["_id"] if "_id" in doc else seed_id if seed_id is not None else new_id()
        return {"_id": check_id(doc_id), **fields}

    return _update(coll, "replace_one", filter, make, insert if upsert else None, False)


def delete(coll: Hooks, filter: Any, many: bool) -> DeleteResult:  # noqa: A002
    """``delete_one`` (``many=False``) or ``delete_many`` in the transaction of ``coll``."""
    what = "delete_many" if many else "delete_one"
    check_filter(filter, what)
    coll.check_active()
    budget = _Budget(what)
    ids: list[tuple[str, Any]] = []
    for doc in _candidates(coll, filter, many):
        budget.add(1, len(doc["_id"]) + 64)  # a tombstone header
        ids.append((doc["_id"], None))
        if not many:
            break
    coll.stage(ids)
    return DeleteResult(len(ids))


def result(kind: str, recorded: dict[str, Any], tx_id: int | None) -> UpdateResult | DeleteResult:
    """A result from what a write by filter returned (or recorded under an idempotency key:
    then it carries its transaction as ``tx``)."""
    tx = recorded.get("tx", tx_id)
    if kind.startswith("delete"):
        return DeleteResult(recorded["deleted_count"], tx)
    return UpdateResult(recorded["matched_count"], recorded["modified_count"], recorded.get("upserted_id"), tx)


def write(coll: TxCollection, kind: str, filter: Any, update: Any, upsert: Any) -> UpdateResult | DeleteResult:  # noqa: A002
    """The write by filter ``kind`` on a collection in a transaction."""
    if kind == "update_one":
        return coll.update_one(filter, update, upsert)
    if kind == "update_many":
        return coll.update_many(filter, update, upsert)
    if kind == "replace_one":
        return coll.replace_one(filter, update, upsert)
    if kind == "delete_one":
        return coll.delete_one(filter)
    if kind == "delete_many":
        return coll.delete_many(filter)
    raise QueryError(f"unknown write by filter {kind!r}")


class WritesByFilter(ABC):
    """The writes by filter of a collection (pymongo's names), embedded and remote alike: each
    is one :meth:`_write_by_filter`, one transaction that finds the matches and writes them."""

    @abstractmethod
    def _write_by_filter(
        self, kind: str, filter: Any, update: Any, upsert: Any, key: str | None,  # noqa: A002
        user: str | None, reason: str | None, meta: dict[str, Any] | None,
    ) -> UpdateResult | DeleteResult: ...

    if TYPE_CHECKING:
        def count(
            self, filter: dict | None = None, at_tx: int | None = None, *,  # noqa: A002
            verify: bool | None = None, max_time_ms: int | None = None,
        ) -> int: ...

    def _updated(self, kind: str, filter: Any, update: Any, upsert: Any, key: str | None,  # noqa: A002
                 user: str | None, reason: str | None, meta: dict[str, Any] | None) -> UpdateResult:
        result = self._write_by_filter(kind, filter, update, upsert, key, user, reason, meta)
        assert isinstance(result, UpdateResult), "an update's result"
        return result

    def _deleted(self, kind: str, filter: Any, key: str | None,  # noqa: A002
                 user: str | None, reason: str | None, meta: dict[str, Any] | None) -> DeleteResult:
        result = self._write_by_filter(kind, filter, None, False, key, user, reason, meta)
        assert isinstance(result, DeleteResult), "a deletion's result"
        return result

    # ``idempotency_key``, ``user``, ``reason``, ``meta``: as for the writes by id
    def update_one(
        self, filter: dict, update: dict, upsert: bool = False, *, idempotency_key: str | None = None,  # noqa: A002
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> UpdateResult:
        """Apply update operators (docs/updates.md) to the first matching document; with
        ``upsert``, insert one if none matches (the filter's equality fields plus the update)."""
        return self._updated("update_one", filter, update, upsert, idempotency_key, user, reason, meta)

    def update_many(
        self, filter: dict, update: dict, upsert: bool = False, *, idempotency_key: str | None = None,  # noqa: A002
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> UpdateResult:
        """Apply update operators to every matching document, in one transaction (``upsert``:
        as :meth:`update_one`)."""
        return self._updated("update_many", filter, update, upsert, idempotency_key, user, reason, meta)

    def replace_one(
        self, filter: dict, doc: dict, upsert: bool = False, *, idempotency_key: str | None = None,  # noqa: A002
        user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> UpdateResult:
        """Replace the first matching document (its ``_id`` stays); with ``upsert``, insert
        ``doc`` if none matches."""
        return self._updated("replace_one", filter, doc, upsert, idempotency_key, user, reason, meta)

    def delete_one(
        self, filter: dict, *, idempotency_key: str | None = None, user: str | None = None,  # noqa: A002
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> DeleteResult:
        """Delete the first matching document (a tombstone revision; its history stays)."""
        return self._deleted("delete_one", filter, idempotency_key, user, reason, meta)

    def delete_many(
        self, filter: dict, *, idempotency_key: str | None = None, user: str | None = None,  # noqa: A002
        reason: str | None = None, meta: dict[str, Any] | None = None,
    ) -> DeleteResult:
        """Delete every matching document, in one transaction."""
        return self._deleted("delete_many", filter, idempotency_key, user, reason, meta)

    def count_documents(
        self, filter: dict, *, verify: bool | None = None, max_time_ms: int | None = None,  # noqa: A002
    ) -> int:
        """pymongo's name for :meth:`count`; ``filter`` is required (``{}``: every document)."""
        check_filter(filter, "count_documents")
        return self.count(filter, verify=verify, max_time_ms=max_time_ms)
