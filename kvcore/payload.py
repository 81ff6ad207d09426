"""The byte layout of a transaction in ledger storage format v1 (see docs/storage.md), which
ledgers created before format v2 keep (:mod:`kvcore.codec`; new ledgers: :mod:`kvcore.payload_v2`).
The header helpers here serve both formats (the header is the same).

``payload = header (53 bytes, see hashing) || entry*`` where
``entry = kind (u8) || key_len (u32 BE) || value_len (u32 BE) || key || value``.

``extra`` (derived, stored beside the payload) ``= position (u32 BE) per entry, then one more
for the payload's end || entries-tree nodes in level order`` (see :func:`kvcore.tree.build_levels`).
"""

from __future__ import annotations

import struct
from itertools import accumulate
from collections.abc import Iterator, Sequence

from collections.abc import Callable

from kvcore.hashing import HEADER_SIZE, HEADER_SIZE_V2, decode_header, encode_header, header_size, tx_leaf_hash
from kvcore.hashing import sha256 as _sha
from kvcore.tree import build_levels

ENTRY_HEAD = struct.Struct(">BII")
ENTRY_HEAD_SIZE = ENTRY_HEAD.size


StateRoot = Callable[[int, Sequence[bytes]], bytes]
"""``(tx_id, the entries' leaf hashes) -> the 32-byte state root`` a version-2 header commits to."""


def encode(
    tx_id: int,
    timestamp_ns: int,
    writes: Sequence[tuple[bytes, bytes | None]],
    state_root: StateRoot | None = None,
) -> tuple[bytes, bytes, bytes, list[int]]:
    """(payload, extra, header bytes, byte position of each entry) for ``writes``:
    ``(key, value)`` pairs, a value of None being a tombstone (kind 1, empty value). With
    ``state_root``, the header is version 2 and commits to what it returns."""
    pack_entry = ENTRY_HEAD.pack
    parts = [
        pack_entry(0, len(key), len(value)) + key + value if value is not None else pack_entry(1, len(key), 0) + key
        for key, value in writes
    ]
    sha = _sha
    leaves = [sha(b"\x00" + record).digest() for record in parts]
    sroot = None if state_root is None else state_root(tx_id, leaves)
    positions = list(accumulate(map(len, parts), initial=HEADER_SIZE if sroot is None else HEADER_SIZE_V2))
    nodes, root = build_levels(leaves)
    header = encode_header(tx_id, timestamp_ns, len(leaves), root, sroot)
    table = struct.pack(f">{len(positions)}I", *positions)
    positions.pop()
    return header + b"".join(parts), table + nodes, header, positions


def rebuild(
    payload: bytes, erased: dict[int, bytes] | None = None
) -> tuple[list[tuple[int, int, bytes, bytes]], bytes, bytes]:
    """(the entries as :func:`iter_entries`, ``extra``, the entries root) recomputed from a
    payload in one pass (the audit's); ``erased``: committed leaves of erased entries."""
    sha = _sha
    entries = list(iter_entries(payload))
    leaves = [
        sha(b"\x00" + payload[pos : pos + ENTRY_HEAD_SIZE + len(key) + len(value)]).digest()
        for pos, _kind, key, value in entries
    ]
    for i, leaf in (erased or {}).items():
        if 0 <= i < len(leaves):
            leaves[i] = leaf
    extra, root = extra_of([e[0] for e in entries], len(payload), leaves)
    return entries, extra, root


def extra_of(positions: Sequence[int], payload_len: int, leaves: Sequence[bytes], from_level: int = 0) -> tuple[bytes, bytes]:
    """(``extra``, the entries root) of a payload whose entries start at ``positions``, from
    their leaf hashes: the positions and the payload's end (u32 BE), then the entries-tree
    levels from ``from_level`` up (format 1 stores every level, format 2 from level 4)."""
    nodes, root = build_levels(leaves, from_level)
    return struct.pack(f">{len(positions) + 1}I", *positions, payload_len) + nodes, root


def extra_for(payload: bytes) -> bytes:
    """Recompute a payload's ``extra`` (audit and repair)."""
    return rebuild(payload)[1]


def entries_root(payload: bytes) -> bytes:
    """Recompute the entries root of a payload from its entries."""
    return rebuild(payload)[2]


def iter_entries(payload: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(position, kind, key, value) for each entry; ValueError if the layout is broken."""
    pos, end = header_size(payload), len(payload)
    unpack = ENTRY_HEAD.unpack_from
    while pos < end:
        if pos + ENTRY_HEAD_SIZE > end:
            raise ValueError(f"entry at byte {pos} is cut short")
        kind, klen, vlen = unpack(payload, pos)
        kstart = pos + ENTRY_HEAD_SIZE
        vstart = kstart + klen
        nxt = vstart + vlen
        if nxt > end or kind > 1:
            raise ValueError(f"entry at byte {pos} is malformed")
        yield pos, kind, payload[kstart:vstart], payload[vstart:nxt]
        pos = nxt


def decode_run(
    buf: bytes, positions: Sequence[int], index: int = 0, prefix: bytes = b""
) -> list[tuple[int, bytes, bytes]]:
    """(kind, key, value) of consecutive entries: ``positions`` are their payload positions
    then where the last one ends, ``buf`` the payload's bytes from ``positions[0]`` to
    ``positions[-1]`` (``index``, the first one's index, and ``prefix`` are not needed: every
    v1 entry stands alone). ValueError unless every entry ends where the next begins."""
    base = positions[0]
    unpack = ENTRY_HEAD.unpack_from
    head = ENTRY_HEAD_SIZE
    out: list[tuple[int, bytes, bytes]] = []
    append = out.append
    size = len(buf)
    for j in range(1, len(positions)):
        p = positions[j - 1] - base
        end = positions[j] - base
        if p < 0 or p + head > end or end > size:
            raise ValueError(f"entry {index + j - 1} is not where its position says")
        kind, klen, vlen = unpack(buf, p)
        k0 = p + head
        k1 = k0 + klen
        if kind > 1 or k1 + vlen != end:
            raise ValueError(f"entry {index + j - 1} is malformed")
        append((kind, buf[k0:k1], buf[k1:end]))
    return out


def header_of(payload: bytes) -> tuple[bytes, tuple[int, int, int, bytes, bytes | None]]:
    """(the header's bytes, its fields) of a payload (or of its first bytes)."""
    if len(payload) < HEADER_SIZE:
        raise ValueError("payload is shorter than a header")
    raw = payload[: header_size(payload)]
    return raw, decode_header(raw)


__all__ = [
    "encode", "rebuild", "extra_for", "entries_root", "iter_entries", "decode_run", "header_of", "tx_leaf_hash",
    "ENTRY_HEAD", "ENTRY_HEAD_SIZE",
]
