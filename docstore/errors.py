"""Every error docstore raises derives from :class:`DocstoreError`."""

from __future__ import annotations

from collections.abc import Iterable

import kvcore

__all__ = [
    "CollectionExistsError", "CollectionNotFoundError", "ConflictError", "CorruptDataError",
    "DocstoreError", "DocumentNotFoundError", "DuplicateIdError", "DuplicateKeyError", "ErasureRefusedError",
    "InvalidDocumentError", "InvalidPointerError", "NotFoundError", "ProofUnavailableError",
    "QueryError", "QueryTimeoutError", "ReasonRequiredError", "SchemaError", "StorageError", "TransactionTooLargeError",
    "VerificationError",
]


class DocstoreError(Exception):
    """Base class of every docstore error."""


class InvalidDocumentError(DocstoreError, ValueError):
    """A document is not storable JSON (NaN, a non-string key, a set, too large, ...).

    ``path`` is the RFC 6901 pointer of the offending value ("" for the root).
    """

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(f"{message} (at {path!r})" if path or message else message)
        self.path = path


class InvalidPointerError(DocstoreError, ValueError):
    """A string is not a valid RFC 6901 JSON pointer."""


class QueryError(DocstoreError, ValueError):
    """A filter, projection, sort or update document is malformed."""


class QueryTimeoutError(DocstoreError, TimeoutError):
    """A query ran past its deadline (``max_time_ms``, the remote call's timeout, the server's
    limit) or a ``$regex`` test of one value past its budget; nothing was written."""


class SchemaError(DocstoreError, ValueError):
    """A document violates its collection's schema, or a schema is itself invalid.

    ``errors`` lists ``(path, reason)`` pairs, one for every failing location.
    """

    def __init__(self, message: str, errors: list[tuple[str, str]] | None = None) -> None:
        super().__init__(message)
        self.errors = errors or []


class NotFoundError(DocstoreError, LookupError):
    """A collection, document or revision does not exist."""


class CollectionNotFoundError(NotFoundError):
    """The named collection does not exist."""

    @classmethod
    def named(cls, name: str, known: Iterable[str] = ()) -> CollectionNotFoundError:
        """The error for ``name``, suggesting the closest of the ``known`` collection names
        ("did you mean 'visits'?"), if one is close."""
        import difflib

        close = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return cls(f"collection '{name}' does not exist{hint}")


class DocumentNotFoundError(NotFoundError):
    """No document has that id (or it was deleted)."""


class DuplicateIdError(DocstoreError, ValueError):
    """A document with that ``_id`` already exists."""


class DuplicateKeyError(DocstoreError, ValueError):
    """A write would put two documents under the same key of a unique index."""


class ReasonRequiredError(DocstoreError, ValueError):
    """The collection requires a reason for every change of an existing document (an update,
    a replace, a delete: ``require_reason``), and the write gave none; nothing was written."""


class ErasureRefusedError(DocstoreError, ValueError):
    """An erasure that cannot be done: of the ``_id`` (the document's key in the ledger), or
    of a field with a unique index (its values are part of ledger keys); nothing was written."""


class CollectionExistsError(DocstoreError, ValueError):
    """A collection of that name already exists."""


class ConflictError(DocstoreError, kvcore.ConflictError):
    """A concurrent transaction committed a document this transaction read or wrote."""


class TransactionTooLargeError(DocstoreError, ValueError):
    """A transaction exceeds the ledger's limits (entries or bytes per transaction)."""


class StorageError(DocstoreError, kvcore.StorageError):
    """The disk refused a commit (disk full, file too large, I/O error); nothing of it was written."""


class CorruptDataError(DocstoreError):
    """Stored data does not decode as a docstore structure (damaged or foreign)."""


class VerificationError(DocstoreError, kvcore.VerificationError):
    """A proof or a verified read failed; the message says which check."""


class ProofUnavailableError(VerificationError):
    """A verifying reader was asked for something it cannot prove yet (a count, distinct
    values, the list of collections, a plan): pass ``verify=False`` to read it unverified."""


def refuse_unproven(verifying: bool, verify: bool | None, what: str) -> None:
    """On a verifying reader, ``what`` is refused unless the caller passes ``verify=False``."""
    if verifying and verify is not False:
        raise ProofUnavailableError(
            f"{what} cannot be proven yet, and this reader verifies what it returns: pass "
            "verify=False to read it unverified (immudoc: --no-verify)"
        )
