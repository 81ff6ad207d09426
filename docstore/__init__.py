"""docstore: JSON documents stored property by property on a verifiable kvcore ledger.

>>> import docstore
>>> with docstore.open("data") as db:                      # doctest: +SKIP
...     trials = db.create_collection("trials", indexes=["site"])
...     doc_id = trials.insert({"site": "Oslo", "dosage": {"mg": 5}})
...     trials.find({"dosage.mg": {"$gte": 5}})

``docstore.Database``, ``Collection``, ``Transaction`` and ``TxCollection`` are the contract
(:mod:`docstore.api`) that the embedded database (:func:`open`) and the remote one
(:func:`connect`) both implement. The names below are imported on first use (PEP 562), so
``import docstore`` (and with it the ``immudoc`` command's ``--help``) does not load kvcore,
orjson or jsonschema_rs until needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_PUBLIC: dict[str, tuple[str, ...]] = {  # the public names, listed once: module -> names
    "docstore.api": (
        "Collection", "Database", "DeleteResult", "Erasure", "InsertedIds", "Revision", "Transaction", "TxCollection",
        "UpdateResult",
    ),
    "docstore.backup": ("restore",),
    "docstore.database": ("open",),
    "docstore.errors": (
        "CollectionExistsError", "CollectionNotFoundError", "ConflictError", "CorruptDataError",
        "DocstoreError", "DocumentNotFoundError", "DuplicateIdError", "DuplicateKeyError", "ErasureRefusedError",
        "InvalidDocumentError", "InvalidPointerError", "NotFoundError", "ProofUnavailableError",
        "QueryError", "QueryTimeoutError", "ReasonRequiredError", "SchemaError", "StorageError", "TransactionTooLargeError",
        "VerificationError",
    ),
    "docstore.proofs": ("Proof", "verify", "verify_consistency"),
    "docstore.remote": ("connect",),
}
_LAZY = {name: module for module, names in _PUBLIC.items() for name in names}
_SUBMODULES = {
    "api", "backup", "cli", "collections", "database", "documents", "engine", "errors", "migrate", "proofs", "remote", "transactions",
}
__all__ = sorted(_LAZY)

if TYPE_CHECKING:  # the same names, for type checkers (each module's __all__ lists them)
    from docstore.api import *  # noqa: F403
    from docstore.backup import restore  # noqa: F401
    from docstore.database import open  # noqa: A004, F401
    from docstore.errors import *  # noqa: F403
    from docstore.proofs import Proof, verify, verify_consistency  # noqa: F401
    from docstore.remote import connect  # noqa: F401


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
