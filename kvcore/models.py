"""Plain data returned by the ledger: entries, transactions, states and proofs.

Proofs and states convert to and from plain dicts (hashes as lowercase hex) so they can be
saved as JSON and verified elsewhere.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from kvcore.errors import VerificationError
from kvcore.hashing import HASH_SIZE, KIND_DELETE, encode_header, tx_leaf_hash


def _hex_to_hash(value: Any, what: str) -> bytes:
    try:
        raw = bytes.fromhex(value)
    except (TypeError, ValueError):
        raise VerificationError(f"{what} is not a hex string") from None
    if len(raw) != HASH_SIZE:
        raise VerificationError(f"{what} is not {HASH_SIZE} bytes")
    return raw


def _int(d: dict[str, Any], name: str) -> int:
    v = d.get(name)
    if type(v) is not int or v < 0:
        raise VerificationError(f"{name!r} must be a non-negative integer, got {v!r}")
    return v


def _hashes(d: dict[str, Any], name: str) -> list[bytes]:
    v = d.get(name)
    if not isinstance(v, list):
        raise VerificationError(f"{name!r} must be a list of hex hashes")
    return [_hex_to_hash(h, f"{name}[{i}]") for i, h in enumerate(v)]


def _need_dict(d: object, what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise VerificationError(f"{what} must be a JSON object, got {type(d).__name__}")
    return d


class Entry(NamedTuple):
    """One revision of a key. ``deleted`` entries are tombstones with an empty value.

    ``index`` is the entry's position in its transaction (its leaf index in the entries
    tree; -1 for a write not committed yet).
    """

    key: bytes
    value: bytes
    tx_id: int
    revision: int
    deleted: bool = False
    index: int = -1  # type: ignore[assignment]  # a field named index shadows tuple.index (public API)


class TxHeader(NamedTuple):
    """The hashed part of a transaction (see docs/hashing.md)."""

    tx_id: int
    timestamp_ns: int
    n_entries: int
    entries_root: bytes
    state_root: bytes | None = None
    """What the application committed its state to (header version 2; None: version 1)."""

    def encode(self) -> bytes:
        return encode_header(self.tx_id, self.timestamp_ns, self.n_entries, self.entries_root, self.state_root)

    def leaf_hash(self) -> bytes:
        return tx_leaf_hash(self.encode())

    def to_dict(self) -> dict[str, Any]:
        d = {
            "tx_id": self.tx_id,
            "timestamp_ns": self.timestamp_ns,
            "n_entries": self.n_entries,
            "entries_root": self.entries_root.hex(),
        }
        if self.state_root is not None:
            d["state_root"] = self.state_root.hex()
        return d

    @classmethod
    def from_dict(cls, d: object) -> TxHeader:
        d = _need_dict(d, "header")
        extra = set(d) - {"tx_id", "timestamp_ns", "n_entries", "entries_root", "state_root"}
        if extra:
            raise VerificationError(f"header: unknown fields {sorted(map(str, extra))}")
        state_root = d.get("state_root")
        return cls(
            _int(d, "tx_id"),
            _int(d, "timestamp_ns"),
            _int(d, "n_entries"),
            _hex_to_hash(d.get("entries_root"), "entries_root"),
            None if state_root is None else _hex_to_hash(state_root, "state_root"),
        )


class Tx(NamedTuple):
    """A committed transaction: its header and its entries in commit order."""

    header: TxHeader
    entries: tuple[Entry, ...]

    @property
    def tx_id(self) -> int:
        return self.header.tx_id


class State(NamedTuple):
    """What a client trusts: the ledger after ``tx_id`` transactions has root ``root``."""

    tx_id: int
    root: bytes

    def to_dict(self) -> dict[str, Any]:
        return {"tx_id": self.tx_id, "root": self.root.hex()}

    @classmethod
    def from_dict(cls, d: object) -> State:
        d = _need_dict(d, "state")
        return cls(_int(d, "tx_id"), _hex_to_hash(d.get("root"), "root"))


class EntryProof(NamedTuple):
    """An entry is leaf ``entry_index`` of transaction ``header``, which is in the tree of ``state_tx_id``."""

    header: TxHeader
    entry_index: int
    deleted: bool
    entry_path: list[bytes]
    tx_path: list[bytes]
    state_tx_id: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header.to_dict(),
            "entry_index": self.entry_index,
            "deleted": self.deleted,
            "entry_path": [h.hex() for h in self.entry_path],
            "tx_path": [h.hex() for h in self.tx_path],
            "state_tx_id": self.state_tx_id,
        }

    @classmethod
    def from_dict(cls, d: object) -> EntryProof:
        d = _need_dict(d, "entry proof")
        deleted = d.get("deleted")
        if type(deleted) is not bool:
            raise VerificationError("'deleted' must be true or false")
        return cls(
            TxHeader.from_dict(d.get("header")),
            _int(d, "entry_index"),
            deleted,
            _hashes(d, "entry_path"),
            _hashes(d, "tx_path"),
            _int(d, "state_tx_id"),
        )

    @property
    def kind(self) -> int:
        return KIND_DELETE if self.deleted else 0


class ConsistencyProof(NamedTuple):
    """The tree at ``new_tx_id`` extends the tree at ``old_tx_id`` (RFC 9162 consistency path)."""

    old_tx_id: int
    new_tx_id: int
    path: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "old_tx_id": self.old_tx_id,
            "new_tx_id": self.new_tx_id,
            "path": [h.hex() for h in self.path],
        }

    @classmethod
    def from_dict(cls, d: object) -> ConsistencyProof:
        d = _need_dict(d, "consistency proof")
        return cls(_int(d, "old_tx_id"), _int(d, "new_tx_id"), _hashes(d, "path"))


class EntriesProof(NamedTuple):
    """Entries ``indices`` of transaction ``header`` (a set or a run), in the tree of ``state_tx_id``.

    ``path`` is a multi-leaf proof (see :func:`kvcore.merkle.multi_path`); one proof covers,
    for example, a document's header and all of its properties.
    """

    header: TxHeader
    indices: list[int]
    path: list[bytes]
    tx_path: list[bytes]
    state_tx_id: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "header": self.header.to_dict(),
            "indices": list(self.indices),
            "path": [h.hex() for h in self.path],
            "tx_path": [h.hex() for h in self.tx_path],
            "state_tx_id": self.state_tx_id,
        }

    @classmethod
    def from_dict(cls, d: object) -> EntriesProof:
        d = _need_dict(d, "entries proof")
        indices = d.get("indices")
        if not isinstance(indices, list) or not all(type(i) is int and i >= 0 for i in indices):
            raise VerificationError("'indices' must be a list of non-negative integers")
        return cls(
            TxHeader.from_dict(d.get("header")),
            list(indices),
            _hashes(d, "path"),
            _hashes(d, "tx_path"),
            _int(d, "state_tx_id"),
        )
