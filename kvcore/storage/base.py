"""The storage interface: a durable, append-only sequence of transaction payloads.

A backend stores opaque payloads (transaction ``i`` is the ``i``-th appended, from 1) and the
ledger tree's node hashes, and may give the ledger a directory for its key index. It knows
nothing of hashing or keys; everything it keeps besides the payloads is derived data the
ledger can rebuild.
A backend on a server database implements these methods and nothing else changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext


class Storage(ABC):
    """Append-only transaction payloads plus derived data (tree nodes, the key index's directory)."""

    readonly: bool
    format_version: int = 1
    """The storage format of the payloads and ``extra`` it holds (kvcore.codec), which the
    ledger encodes and decodes them in; a backend names it, and never mixes two."""
    recovery_notes: list[str]
    """What opening had to repair (a torn tail discarded, derived files rebuilt)."""

    @abstractmethod
    def tx_count(self) -> int:
        """How many transactions are durably stored."""

    def append(self, payload: bytes, extra: bytes, tree_nodes: bytes) -> None:
        """Durably store transaction ``tx_count() + 1`` before returning.

        ``extra`` is derived data kept with the transaction and returned by
        :meth:`read_extra` (the ledger stores its entries-tree nodes there). ``tree_nodes``
        are the node hashes it adds to the ledger tree; storing them may be lazy (they are
        derived). On failure nothing of the transaction remains visible.
        """
        self.append_many([(payload, extra, tree_nodes)])

    @abstractmethod
    def append_many(self, records: Sequence[tuple[bytes, bytes, bytes]]) -> None:
        """Durably store transactions ``(payload, extra, tree_nodes)`` as :meth:`append` does,
        numbered from ``tx_count() + 1``: all or none, with one durable write (group commit)."""

    @abstractmethod
    def read_tx(self, tx_id: int) -> bytes:
        """The whole payload of transaction ``tx_id`` (1-based)."""

    @abstractmethod
    def read(self, tx_id: int, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of a payload from ``start`` (fewer at its end)."""

    @abstractmethod
    def read_extra(self, tx_id: int, start: int, length: int) -> bytes:
        """``length`` bytes of a transaction's ``extra`` from ``start``."""

    @abstractmethod
    def scan(self, first_tx: int = 1) -> Iterator[tuple[int, bytes, bytes]]:
        """Re-read transactions from the medium itself, checking their framing.

        Yields ``(tx_id, payload, extra)`` in order; raises ``CorruptionError`` naming the
        transaction whose stored bytes are damaged. Used by audit and recovery.
        """

    @abstractmethod
    def tree_nodes(self) -> bytes:
        """The stored tree node hashes, as persisted (possibly fewer than expected)."""

    @abstractmethod
    def replace_tree(self, nodes: bytes) -> None:
        """Replace the stored tree nodes (repair after a crash, never new content)."""

    def tree_mark(self) -> tuple[int, int] | None:
        """``(count, crc)``: the stored tree's nodes of transactions 1..count were checked
        against the log, and had this CRC-32 then (opening checks only what came after, and
        the CRC of the rest); None if unknown (opening checks every node)."""
        return None

    def set_tree_mark(self, count: int, crc: int) -> None:
        """Record :meth:`tree_mark` (a writer, after checking or appending; derived data). A
        storage that keeps no mark ignores it."""
        return None

    many_writers: bool = False
    """Whether other processes may append to this storage while it is open for writing (then
    the ledger takes in their transactions under :meth:`append_lock` before each commit)."""

    def append_lock(self) -> AbstractContextManager[int]:
        """Held around a commit: serializes appends across processes and yields how many
        transactions are durably stored as it is taken (more than the ledger holds when another
        process appended). The one :meth:`append` made inside it is the commit. A storage with
        one writer has nothing to serialize."""
        return nullcontext(self.tx_count())

    def index_path(self) -> str | None:
        """A directory the ledger may use for its on-disk key index (derived data: it creates,
        checks, rebuilds and replaces what is there), or None to keep the index in memory."""
        return None

    def discard_legacy(self) -> None:
        """Delete derived files of earlier versions that nothing reads any more (a writer
        calls this once it has opened the ledger). None by default."""
        return None

    def durable_count(self) -> int:
        """How many transactions the medium holds now, other processes' appends included (a
        cheap look, no lock taken); a storage with one writer: :meth:`tx_count`."""
        return self.tx_count()

    def erase_bytes(self, spans: Mapping[int, Sequence[tuple[int, int]]]) -> None:
        """Overwrite, for each transaction id of ``spans``, its ``(start, length)`` byte ranges
        of the payload with zeros, in place, fix the records' checksums and make it all durable
        (one sync): the one write that changes committed records (erasure: kvcore.erasure).
        Not supported by default."""
        raise NotImplementedError(f"{type(self).__name__} cannot erase")

    def record_intact(self, tx_id: int) -> bool:
        """Whether transaction ``tx_id``'s stored record passes its checksum (an erasure that a
        crash cut between its zeros and its new checksum does not: reopening completes it)."""
        return True

    @abstractmethod
    def refresh(self) -> int:
        """Pick up transactions another process appended; return the new count."""

    @abstractmethod
    def close(self) -> None:
        """Release files and locks."""
