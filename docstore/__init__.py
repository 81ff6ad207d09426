"""docstore: JSON documents stored property by property on a verifiable kvcore ledger.

>>> import docstore
>>> with docstore.open("data") as db:                      # doctest: +SKIP
...     trials = db.create_collection("trials", indexes=["site"])
...     doc_id = trials.insert({"site": "Oslo", "dosage": {"mg": 5}})
...     trials.find({"dosage.mg": {"$gte": 5}})

The names below are imported on first use (PEP 562), so ``import docstore`` (and with it the
``immudoc`` command's ``--help``) does not load kvcore, orjson or jsonschema_rs until needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from docstore.collections.collection import Collection, Revision
    from docstore.database import Database, open
    from docstore.errors import (
        CollectionExistsError,
        CollectionNotFoundError,
        ConflictError,
        CorruptDataError,
        DocstoreError,
        DocumentNotFoundError,
        DuplicateIdError,
        DuplicateKeyError,
        InvalidDocumentError,
        InvalidPointerError,
        NotFoundError,
        ProofUnavailableError,
        QueryError,
        SchemaError,
        StorageError,
        TransactionTooLargeError,
        VerificationError,
    )
    from docstore.proofs import Proof, verify, verify_consistency
    from docstore.remote import connect
    from docstore.transaction import Transaction, TxCollection

_LAZY = {
    "Collection": "docstore.collections.collection",
    "Revision": "docstore.collections.collection",
    "Database": "docstore.database",
    "open": "docstore.database",
    "CollectionExistsError": "docstore.errors",
    "CollectionNotFoundError": "docstore.errors",
    "ConflictError": "docstore.errors",
    "CorruptDataError": "docstore.errors",
    "DocstoreError": "docstore.errors",
    "DocumentNotFoundError": "docstore.errors",
    "DuplicateIdError": "docstore.errors",
    "DuplicateKeyError": "docstore.errors",
    "InvalidDocumentError": "docstore.errors",
    "InvalidPointerError": "docstore.errors",
    "NotFoundError": "docstore.errors",
    "ProofUnavailableError": "docstore.errors",
    "QueryError": "docstore.errors",
    "SchemaError": "docstore.errors",
    "StorageError": "docstore.errors",
    "TransactionTooLargeError": "docstore.errors",
    "VerificationError": "docstore.errors",
    "Proof": "docstore.proofs",
    "verify": "docstore.proofs",
    "verify_consistency": "docstore.proofs",
    "connect": "docstore.remote",
    "Transaction": "docstore.transaction",
    "TxCollection": "docstore.transaction",
}
_SUBMODULES = {
    "cli", "collections", "database", "errors", "flatten", "ids", "proofs", "records", "state", "transaction",
}

__all__ = [
    "Collection",
    "CollectionExistsError",
    "CollectionNotFoundError",
    "ConflictError",
    "CorruptDataError",
    "Database",
    "DocstoreError",
    "DocumentNotFoundError",
    "DuplicateIdError",
    "DuplicateKeyError",
    "InvalidDocumentError",
    "InvalidPointerError",
    "NotFoundError",
    "ProofUnavailableError",
    "QueryError",
    "Revision",
    "SchemaError",
    "StorageError",
    "Transaction",
    "TransactionTooLargeError",
    "TxCollection",
    "VerificationError",
    "Proof",
    "connect",
    "open",
    "verify",
    "verify_consistency",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is not None:
        value = getattr(importlib.import_module(module), name)
    elif name in _SUBMODULES:
        value = importlib.import_module(f"docstore.{name}")
    else:
        raise AttributeError(f"module 'docstore' has no attribute {name!r}")
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__) | _SUBMODULES)
