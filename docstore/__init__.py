"""docstore: JSON documents stored property by property on a verifiable kvcore ledger.

>>> import docstore
>>> with docstore.open("data") as db:                      # doctest: +SKIP
...     trials = db.create_collection("trials", indexes=["site"])
...     doc_id = trials.insert({"site": "Oslo", "dosage": {"mg": 5}})
...     trials.find({"dosage.mg": {"$gte": 5}})
"""

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
    QueryError,
    SchemaError,
    VerificationError,
)
from docstore.proofs import Proof, verify, verify_consistency
from docstore.transaction import Transaction, TxCollection

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
    "QueryError",
    "Revision",
    "SchemaError",
    "Transaction",
    "TxCollection",
    "VerificationError",
    "Proof",
    "open",
    "verify",
    "verify_consistency",
]
