"""kvcore: a durable, append-only key/value ledger with RFC 9162 Merkle proofs.

>>> from kvcore import Ledger, verify_entry
>>> with Ledger.open("/tmp/ledger") as led:           # doctest: +SKIP
...     tx = led.set(b"k", b"v")
...     state = led.state()
...     verify_entry(led.prove_entry(b"k", tx), b"k", b"v", state)
"""

from kvcore.audit import AuditReport
from kvcore.errors import (
    ClosedError,
    ConflictError,
    CorruptionError,
    FormatError,
    GroupAborted,
    InvalidInputError,
    KeyNotFoundError,
    KvError,
    LimitError,
    LockedError,
    ReadOnlyError,
    StorageError,
    TxNotFoundError,
    VerificationError,
)
from kvcore.hashing import HASH_VERSION
from kvcore.ledger import Ledger, RecoveryWarning

from kvcore.migrate import copy_ledger
from kvcore.limits import MAX_KEY_BYTES, MAX_TX_BYTES, MAX_TX_ENTRIES, MAX_VALUE_BYTES
from kvcore.models import ConsistencyProof, EntriesProof, Entry, EntryProof, State, Tx, TxHeader
from kvcore.storage import FileStorage, Storage
from kvcore.storage.postgres import PostgresStorage
from kvcore.transaction import CommitRequest, Transaction
from kvcore.verify import verify_consistency, verify_entries, verify_entry, verify_entry_leaf, verify_leaves, verify_tx

__all__ = [
    "AuditReport",
    "ClosedError",
    "ConflictError",
    "ConsistencyProof",
    "CorruptionError",
    "EntriesProof",
    "Entry",
    "EntryProof",
    "FileStorage",
    "FormatError",
    "GroupAborted",
    "HASH_VERSION",
    "InvalidInputError",
    "KeyNotFoundError",
    "KvError",
    "Ledger",
    "CommitRequest",
    "LimitError",
    "LockedError",
    "MAX_KEY_BYTES",
    "MAX_TX_BYTES",
    "MAX_TX_ENTRIES",
    "MAX_VALUE_BYTES",
    "PostgresStorage",
    "ReadOnlyError",
    "RecoveryWarning",
    "State",
    "Storage",
    "StorageError",
    "Transaction",
    "Tx",
    "TxHeader",
    "TxNotFoundError",
    "VerificationError",
    "copy_ledger",
    "verify_consistency",
    "verify_entries",
    "verify_entry",
    "verify_entry_leaf",
    "verify_leaves",
    "verify_tx",
]
