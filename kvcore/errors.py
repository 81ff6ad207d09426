"""Every error kvcore raises derives from :class:`KvError`."""

from __future__ import annotations


class KvError(Exception):
    """Base class of every kvcore error."""


class InvalidInputError(KvError, ValueError):
    """An argument has the wrong type or value (a str key, a negative limit, ...)."""


class LimitError(InvalidInputError):
    """A key, value or transaction is empty or exceeds a documented size limit."""


class KeyNotFoundError(KvError, KeyError):
    """The key has no entry (at the requested transaction)."""

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0]) if self.args else "key not found"


class TxNotFoundError(KvError, LookupError):
    """No transaction has that id."""


class ConflictError(KvError):
    """A key this transaction read or wrote was committed by another transaction since its snapshot.

    ``key`` is the key (or scanned prefix) found changed, when known.
    """

    def __init__(self, message: str, key: bytes | None = None) -> None:
        super().__init__(message)
        self.key = key


class LockedError(KvError):
    """Another process holds the ledger open for writing."""


class ClosedError(KvError):
    """The ledger has been closed."""


class ReadOnlyError(KvError):
    """The ledger was opened read-only."""


class FormatError(KvError):
    """The directory holds something that is not a ledger of a format this version reads."""


class CorruptionError(KvError):
    """Stored bytes do not match what was committed (found on open or by audit)."""


class VerificationError(KvError):
    """A proof does not verify; the message says which check failed."""


class StorageError(KvError, OSError):
    """The storage failed to persist or read bytes (disk full, I/O error)."""


def printable(data: bytes, limit: int = 64) -> str:
    """Bytes (a key, a stored value) for a message: quoted text, NUL bytes shown as "/" (the
    separator of docstore's keys), other undecodable or control bytes as \\xNN, cut at
    ``limit`` bytes with "…" (never Python's b'...' form)."""
    cut = bytes(data[:limit])
    text = cut.decode("utf-8", "backslashreplace").replace("\x00", "/")
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return f"'{text}{'…' if len(data) > limit else ''}'"


def corrupt_entry(tx_id: int, key: bytes) -> CorruptionError:
    """The error for a damaged stored entry (or entries tree) of a transaction (the ledger's
    reads and proofs raise it)."""
    return CorruptionError(
        f"stored entry for key {printable(key)} in transaction {tx_id} is damaged; run an audit"
    )


class GroupAborted(KvError):
    """Raised by a group commit's ``state_root`` callback when no transaction of the group may
    be committed (:meth:`kvcore.Ledger.commit_many` raises it; nothing is written)."""
