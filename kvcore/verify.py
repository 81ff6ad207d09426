"""Pure verification: functions of (proof, claimed data, trusted state), no I/O, no ledger."""

from __future__ import annotations

import struct

from kvcore import merkle
from kvcore.errors import VerificationError
from kvcore.hashing import KIND_DELETE, KIND_SET, entry_leaf_hash, tx_leaf_hash
from collections.abc import Sequence

from kvcore.models import ConsistencyProof, EntriesProof, EntryProof, State, TxHeader


def verify_entry(proof: EntryProof, key: bytes, value: bytes | None, state: State) -> None:
    """Check that ``key`` had ``value`` (``None`` for a tombstone) in a transaction of ``state``.

    Raises :class:`VerificationError` naming the first check that fails.
    """
    if not isinstance(proof, EntryProof):
        raise VerificationError(f"expected an EntryProof, got {type(proof).__name__}")
    if not isinstance(state, State):
        raise VerificationError(f"expected a State, got {type(state).__name__}")
    if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
        raise VerificationError("key and value must be bytes (value None for a tombstone)")
    if (value is None) != proof.deleted:
        raise VerificationError(
            "entry kind mismatch: the proof is of a "
            + ("tombstone" if proof.deleted else "value")
            + " but the claim is of a "
            + ("tombstone" if value is None else "value")
        )
    kind = KIND_DELETE if value is None else KIND_SET
    verify_entry_leaf(proof, entry_leaf_hash(kind, key, b"" if value is None else value), state)


def verify_entry_leaf(proof: EntryProof, leaf: bytes, state: State) -> None:
    """:func:`verify_entry` for an entry known by its leaf hash alone (an erased entry:
    kvcore.erasure): that leaf is entry ``proof.entry_index`` of a transaction of ``state``."""
    if not isinstance(proof, EntryProof) or not isinstance(state, State):
        raise VerificationError("expected an EntryProof and a State")
    if not isinstance(leaf, bytes) or len(leaf) != 32:
        raise VerificationError("an entry's leaf hash is 32 bytes")
    _check_state(proof.state_tx_id, proof.header.tx_id, state)
    header = proof.header
    try:
        entries_root = merkle.root_from_inclusion(
            proof.entry_index, header.n_entries, leaf, proof.entry_path
        )
    except ValueError as e:
        raise VerificationError(f"entry inclusion path is malformed: {e}") from None
    if entries_root != header.entries_root:
        raise VerificationError(
            f"entry check failed: key/value is not entry {proof.entry_index} of transaction "
            f"{header.tx_id}"
        )
    _check_tx(header, proof.tx_path, state)


def verify_consistency(old_state: State, new_state: State, proof: ConsistencyProof) -> None:
    """Check that ``new_state`` extends ``old_state``; raises :class:`VerificationError`."""
    if not isinstance(proof, ConsistencyProof):
        raise VerificationError(f"expected a ConsistencyProof, got {type(proof).__name__}")
    if not isinstance(old_state, State) or not isinstance(new_state, State):
        raise VerificationError("expected two States (the trusted one and the newer one)")
    if (proof.old_tx_id, proof.new_tx_id) != (old_state.tx_id, new_state.tx_id):
        raise VerificationError(
            f"proof links states {proof.old_tx_id}->{proof.new_tx_id}, "
            f"not {old_state.tx_id}->{new_state.tx_id}"
        )
    try:
        merkle.check_consistency(
            old_state.tx_id, new_state.tx_id, old_state.root, new_state.root, proof.path
        )
    except ValueError as e:
        raise VerificationError(f"consistency check failed: {e}") from None


def verify_entries(
    proof: EntriesProof, entries: Sequence[tuple[bytes, bytes | None]], state: State
) -> None:
    """Check that ``entries`` ((key, value-or-None) pairs) are entries ``proof.indices`` of a
    transaction in the ledger whose state is ``state``. Raises :class:`VerificationError`."""
    if not isinstance(proof, EntriesProof):
        raise VerificationError(f"expected an EntriesProof, got {type(proof).__name__}")
    if not isinstance(state, State):
        raise VerificationError(f"expected a State, got {type(state).__name__}")
    if len(entries) != len(proof.indices):
        raise VerificationError(
            f"the proof covers {len(proof.indices)} entries, the claim has {len(entries)}"
        )
    leaves = []
    for key, value in entries:
        if not isinstance(key, bytes) or not (value is None or isinstance(value, bytes)):
            raise VerificationError("keys and values must be bytes (value None for a tombstone)")
        kind = KIND_DELETE if value is None else KIND_SET
        leaves.append(entry_leaf_hash(kind, key, b"" if value is None else value))
    verify_leaves(proof, leaves, state)


def verify_leaves(proof: EntriesProof, leaves: Sequence[bytes], state: State) -> None:
    """:func:`verify_entries` for entries given by their leaf hashes (some may be erased:
    kvcore.erasure, known by the leaf their erasure committed)."""
    if not isinstance(proof, EntriesProof) or not isinstance(state, State):
        raise VerificationError("expected an EntriesProof and a State")
    if len(leaves) != len(proof.indices):
        raise VerificationError(
            f"the proof covers {len(proof.indices)} entries, the claim has {len(leaves)}"
        )
    if any(not isinstance(h, bytes) or len(h) != 32 for h in leaves):
        raise VerificationError("an entry's leaf hash is 32 bytes")
    _check_state(proof.state_tx_id, proof.header.tx_id, state)
    try:
        root = merkle.root_from_multi(proof.indices, proof.header.n_entries, list(leaves), proof.path)
    except ValueError as e:
        raise VerificationError(f"entries path is malformed: {e}") from None
    if root != proof.header.entries_root:
        raise VerificationError(
            f"entries check failed: the claimed entries are not entries {_span(proof.indices)} "
            f"of transaction {proof.header.tx_id}"
        )
    _check_tx(proof.header, proof.tx_path, state)


def verify_tx(header: TxHeader, tx_path: Sequence[bytes], state: State) -> None:
    """Check that transaction ``header`` is in the ledger whose state is ``state`` (by its
    RFC 9162 inclusion path); raises VerificationError."""
    if not 1 <= header.tx_id <= state.tx_id:
        raise VerificationError(f"transaction {header.tx_id} is not in a ledger of {state.tx_id}")
    _check_tx(header, list(tx_path), state)


def _span(indices: Sequence[int]) -> str:
    if len(indices) > 1 and indices[-1] - indices[0] == len(indices) - 1:
        return f"{indices[0]}..{indices[-1]}"
    return ", ".join(map(str, indices[:8])) + (" ..." if len(indices) > 8 else "")


def _check_state(proof_state: int, tx_id: int, state: State) -> None:
    if proof_state != state.tx_id:
        raise VerificationError(
            f"proof is relative to state {proof_state}, the trusted state is {state.tx_id}; "
            "verify a consistency proof between them first"
        )
    if not 1 <= tx_id <= state.tx_id:
        raise VerificationError(f"transaction {tx_id} is not in a ledger of {state.tx_id}")


_TX_CHECKED: dict[tuple[bytes, tuple[bytes, ...], int, bytes], None] = {}
"""(encoded header, tx path, state tx id, state root) already checked by :func:`_check_tx`.

A memo of a pure computation over exactly these inputs (the same bytes give the same hashes):
proofs of many entries of one transaction against one state (a verifier checking a batch)
recompute that transaction's leaf hash and inclusion path once. Only successes are kept."""
_TX_CHECKED_MAX = 1024


def _check_tx(header: TxHeader, tx_path: Sequence[bytes], state: State) -> None:
    try:
        raw = header.encode()
    except (struct.error, TypeError):  # a field out of range, or not an integer
        raise VerificationError("the proof's transaction header has a field out of range") from None
    key = None
    if type(state.tx_id) is int and type(state.root) is bytes and type(tx_path) is list:
        try:
            key = (raw, tuple(tx_path), state.tx_id, state.root)
            if key in _TX_CHECKED:
                return
        except TypeError:  # unhashable path items: check without the memo
            key = None
    try:
        root = merkle.root_from_inclusion(header.tx_id - 1, state.tx_id, tx_leaf_hash(raw), tx_path)
    except ValueError as e:
        raise VerificationError(f"transaction inclusion path is malformed: {e}") from None
    if root != state.root:
        raise VerificationError(
            f"transaction check failed: transaction {header.tx_id} is not in the ledger whose "
            f"state {state.tx_id} has the trusted root"
        )
    if key is not None:
        if len(_TX_CHECKED) >= _TX_CHECKED_MAX:
            _TX_CHECKED.clear()
        _TX_CHECKED[key] = None
