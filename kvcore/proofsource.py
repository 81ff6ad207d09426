"""What a :class:`kvcore.proving.Prover` reads of a ledger: the reader interface of proofs.

The prover decides which stored bytes and hashes a proof needs (as RFC 9162 says which
nodes make a path) and caches them; a :class:`ProofSource` only answers reads. The ledger
gives its prover one (``kvcore.ledger``); a test or another store can give its own.
Reads are of committed transactions; the prover checks transaction ids and indices before it
asks, so a source need not check them again, except :meth:`~ProofSource.header`.
"""

from __future__ import annotations

from typing import Protocol

from kvcore.models import State, TxHeader


class ProofSource(Protocol):
    """The reads proofs make: transactions' headers and stored bytes, entries of a key, and
    hashes of the ledger tree (one leaf per transaction: leaf ``i`` is transaction ``i+1``)."""

    @property
    def tx_id(self) -> int:
        """The id of the newest committed transaction (0 when there is none)."""
        ...

    def state(self, at_tx: int | None = None) -> State:
        """The ledger's state after transaction ``at_tx`` (default: the newest)."""
        ...

    def header(self, tx_id: int) -> TxHeader:
        """The header of a committed transaction (TxNotFoundError for any other ``tx_id``)."""
        ...

    def payload_bytes(self, tx_id: int, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of transaction ``tx_id``'s stored payload from byte ``start``
        (fewer at its end: the prover checks the length it gets)."""
        ...

    def extra_bytes(self, tx_id: int, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of transaction ``tx_id``'s stored ``extra`` (its entries'
        positions, then its entries tree in level order, the levels its format stores:
        :mod:`kvcore.codec`) from
        ``start`` (fewer at its end: the prover checks the length it gets)."""
        ...

    def key_locations(self, key: bytes) -> list[int]:
        """The locations (:mod:`kvcore.keyindex`: ``tx_id << 56 | index << 32 | position``)
        of every entry of ``key``, oldest first; a new list. It may end with entries of a
        transaction being committed, past :attr:`tx_id`: the prover leaves those out."""
        ...

    def entry_kind(self, loc: int, key: bytes) -> int:
        """The kind (:data:`kvcore.hashing.KIND_SET` or ``KIND_DELETE``) of the stored entry at
        location ``loc``, which must be an entry of ``key`` (CorruptionError otherwise)."""
        ...

    def tx_subtree_hash(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) of the ledger tree (RFC 9162 2.1.1): the hash of the subtree of
        transactions ``start+1 .. end`` (``0 <= start < end <= tx_id``)."""
        ...
