"""What a collection inside a transaction does, embedded and remote alike.

:class:`StagingCollection` validates every write the same way in both (a document is a JSON
object, ``_id`` given or generated and valid, no duplicate ids, ``replace`` keeps ``_id``,
``update`` applies the operators of :mod:`docstore.collections.update`, a missing document is
``DocumentNotFoundError``) and answers reads from the transaction's view. An implementation
supplies only how it reads the current state of a document and stages a write:

- :meth:`_current`: the document as this transaction sees it (snapshot plus own writes);
- :meth:`_known`: the same, from what is already known without asking anyone (used to refuse
  an insert of an id already seen; an implementation that cannot read cheaply may return None
  and let its commit refuse the duplicate);
- :meth:`_prepare`: check and copy one complete document before it is staged;
- :meth:`_stage`: stage prepared writes (None: a deletion), all of them or none;
- :meth:`_find`: run a query over the transaction's view;
- :meth:`_check_active`: refuse use after commit or rollback;
- :meth:`_copy`: a private copy of a document to hand out;
- :meth:`_matches` (default: :meth:`_find`) and :meth:`_cost`: what writes by filter read and
  count against a transaction's limits (:mod:`docstore.transactions.by_filter`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from typing import Any

from docstore.api import DeleteResult, UpdateResult
from docstore.collections.query import compile_filter, distinct_values
from docstore.collections.update import apply_update
from docstore.transactions import by_filter
from docstore.documents.ids import check_id, new_id
from docstore.collections.indexes import check_field
from docstore.errors import DocumentNotFoundError, DuplicateIdError, InvalidDocumentError, refuse_unproven


class TransactionBase(ABC):
    """What every transaction does alike: ``with`` commits on a clean exit and rolls back on
    an exception; ``tx[name]`` is ``tx.collection(name)``."""

    snapshot: int
    tx_id: int | None

    @property
    @abstractmethod
    def done(self) -> bool: ...

    @abstractmethod
    def collection(self, name: str) -> StagingCollection: ...

    @abstractmethod
    def commit(self) -> int | None: ...

    @abstractmethod
    def rollback(self) -> None: ...

    def __enter__(self) -> TransactionBase:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self.done:
            return
        if exc_type is None:
            self.commit()
        else:
            self.rollback()

    def __getitem__(self, name: str) -> StagingCollection:
        return self.collection(name)


class StagingCollection(ABC):
    """A collection as seen from inside a transaction (the same methods as a Collection's
    writes and reads, without time travel)."""

    name: str

    # ------------------------------------------------------------------ hooks
    @abstractmethod
    def _check_active(self) -> None: ...

    @abstractmethod
    def _current(self, doc_id: str) -> dict | None: ...

    @abstractmethod
    def _known(self, doc_id: str) -> dict | None: ...

    @abstractmethod
    def _prepare(self, doc: dict) -> Any: ...

    @abstractmethod
    def _stage(self, writes: list[tuple[str, Any]]) -> None: ...

    @abstractmethod
    def _find(self, filter: dict | None, projection: Any, sort: Any, skip: int, limit: int | None) -> Iterator[dict]: ...  # noqa: A002

    @abstractmethod
    def _copy(self, doc: dict) -> dict: ...

    def _matches(self, filter: dict, many: bool) -> Iterator[dict]:  # noqa: A002
        """The matching documents in the transaction's view (``many=False``: the first suffices)."""
        return self._find(filter, None, None, 0, None if many else 1)

    def _cost(self, prepared: Any) -> tuple[int, int]:
        """(ledger entries, bytes) a prepared write takes (an estimate here: the commit checks)."""
        return 1, 0

    def _hooks(self) -> by_filter.Hooks:
        return by_filter.Hooks(
            self.name, self._check_active, self._matches, self._current, self._prepare, self._cost, self._stage
        )

    @property
    @abstractmethod
    def _verifying(self) -> bool:
        """Whether the database proves what it reads (then counts and distinct lists, which
        cannot be proven yet, are refused unless ``verify=False``)."""

    # ----------------------------------------------------------------- writes
    def insert(self, doc: dict) -> str:
        """Insert one document; returns its ``_id``."""
        return self.insert_many([doc])[0]

    def insert_many(self, docs: Iterable[dict]) -> list[str]:
        """Insert documents (all or none, at commit); returns their ids in order."""
        self._check_active()
        if isinstance(docs, (dict, str, bytes)) or not isinstance(docs, Iterable):
            raise InvalidDocumentError(f"insert_many takes a list of documents, got {type(docs).__name__}")
        prepared: list[tuple[str, Any]] = []
        seen: set[str] = set()
        for doc in docs:
            full = self._with_id(doc)
            doc_id = full["_id"]
            if doc_id in seen or self._known(doc_id) is not None:
                raise DuplicateIdError(f"a document with _id {doc_id!r} already exists in {self.name!r}")
            seen.add(doc_id)
            prepared.append((doc_id, self._prepare(full)))
        self._stage(prepared)
        return [doc_id for doc_id, _ in prepared]

    def replace(self, doc_id: str, doc: dict) -> dict:
        """Replace a whole document (its ``_id`` stays); returns the new document."""
        self._existing(doc_id)
        if not isinstance(doc, dict):
            raise InvalidDocumentError(f"a document must be a JSON object, got {type(doc).__name__}")
        if "_id" in doc and doc["_id"] != doc_id:
            raise InvalidDocumentError("a replacement cannot change _id", "/_id")
        new = {"_id": doc_id, **{k: v for k, v in doc.items() if k != "_id"}}
        return self._write(doc_id, new)

    def update(self, doc_id: str, changes: dict) -> dict:
        """Apply update operators (docs/updates.md); returns the new document."""
        return self._write(doc_id, apply_update(self._existing(doc_id), changes))

    def delete(self, doc_id: str) -> None:
        """Delete a document (a tombstone revision at commit; its history stays)."""
        self._existing(doc_id)
        self._stage([(doc_id, None)])

    # ------------------------------------------------- writes by filter (pymongo's names)
    def update_one(self, filter: dict, update: dict, upsert: bool = False) -> UpdateResult:  # noqa: A002
        """Apply update operators to the first matching document (with ``upsert``, insert one
        if none matches: docstore.transactions.by_filter)."""
        return by_filter.update(self._hooks(), filter, update, upsert, many=False)

    def update_many(self, filter: dict, update: dict, upsert: bool = False) -> UpdateResult:  # noqa: A002
        """Apply update operators to every matching document (with ``upsert``, as update_one)."""
        return by_filter.update(self._hooks(), filter, update, upsert, many=True)

    def replace_one(self, filter: dict, doc: dict, upsert: bool = False) -> UpdateResult:  # noqa: A002
        """Replace the first matching document (its ``_id`` stays); with ``upsert``, insert
        ``doc`` if none matches."""
        return by_filter.replace(self._hooks(), filter, doc, upsert)

    def delete_one(self, filter: dict) -> DeleteResult:  # noqa: A002
        """Delete the first matching document."""
        return by_filter.delete(self._hooks(), filter, many=False)

    def delete_many(self, filter: dict) -> DeleteResult:  # noqa: A002
        """Delete every matching document."""
        return by_filter.delete(self._hooks(), filter, many=True)

    def _write(self, doc_id: str, new: dict) -> dict:
        prepared = self._prepare(new)
        self._stage([(doc_id, prepared)])
        return self._copy(new)

    def _with_id(self, doc: Any) -> dict:
        if not isinstance(doc, dict):
            raise InvalidDocumentError(f"a document must be a JSON object, got {type(doc).__name__}")
        if "_id" in doc:
            check_id(doc["_id"])
            return dict(doc)
        return {"_id": new_id(), **doc}

    def _existing(self, doc_id: Any) -> dict:
        check_id(doc_id)
        self._check_active()
        cur = self._current(doc_id)
        if cur is None:
            raise DocumentNotFoundError(f"no document {doc_id!r} in {self.name!r}")
        return cur

    # ------------------------------------------------------------------ reads
    def get(self, doc_id: str) -> dict:
        """The document in this transaction's view; DocumentNotFoundError if none."""
        return self._copy(self._existing(doc_id))

    def find(
        self,
        filter: dict | None = None,  # noqa: A002
        projection: Any = None,
        sort: Any = None,
        skip: int = 0,
        limit: int | None = None,
    ) -> Iterator[dict]:
        """Matching documents in this transaction's view (its snapshot plus its own writes)."""
        self._check_active()
        return self._find(filter, projection, sort, skip, limit)

    def find_one(self, filter: dict | None = None, projection: Any = None, sort: Any = None) -> dict | None:  # noqa: A002
        """The first matching document, or None."""
        return next(self.find(filter, projection, sort, 0, 1), None)

    def count(self, filter: dict | None = None, *, verify: bool | None = None) -> int:  # noqa: A002
        """How many documents match, in this transaction's view (a verifying database refuses,
        ProofUnavailableError, unless ``verify=False``)."""
        compile_filter(filter)
        refuse_unproven(self._verifying, verify, "a count")
        return sum(1 for _ in self.find(filter))

    def count_documents(self, filter: dict, *, verify: bool | None = None) -> int:  # noqa: A002
        """pymongo's name for :meth:`count`; ``filter`` is required (``{}``: every document)."""
        by_filter.check_filter(filter, "count_documents")
        return self.count(filter, verify=verify)

    def distinct(self, field: str, filter: dict | None = None, *, verify: bool | None = None) -> list:  # noqa: A002
        """Distinct values of ``field`` among matching documents, in this transaction's view
        (a verifying database refuses, ProofUnavailableError, unless ``verify=False``)."""
        check_field(field)
        compile_filter(filter)
        refuse_unproven(self._verifying, verify, "a list of distinct values")
        return distinct_values(self.find(filter), field)
