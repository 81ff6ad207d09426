"""The byte layout of a transaction in ledger format v2 (see docs/storage.md).

``payload = header (53 bytes, see hashing) || entry*`` where ``entry = kind (u8) || shared ||
suffix_len || value_len || key[shared:] || value``: the three lengths are unsigned LEB128
varints (7 bits a byte, low group first, at most 5 bytes), ``shared`` is how many leading
bytes the key has in common with the previous entry's key, and it is 0 at every *restart*
(an entry whose index is a multiple of :data:`RESTART`), so that any entry decodes from the
restart at or before it.

``extra`` (derived, stored beside the payload) ``= position (u32 BE) of each entry's first
byte, then the payload's end || the entries-tree levels from`` :data:`STORED_FROM` ``up, in
level order`` (see :func:`kvcore.tree.build_levels`): a node below them is recomputed from the
``2^STORED_FROM`` entries of its block (:mod:`kvcore.entryblocks`).

Neither layout is hashed: an entry's leaf is over (kind, key, value) as in format v1
(:func:`kvcore.hashing.entry_leaf_hash`), so both formats give the same hashes and proofs.
Decoding raises :class:`Malformed` (a ValueError) for any byte that does not add up.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from kvcore.hashing import HEADER_SIZE, encode_header
from kvcore.hashing import sha256 as _sha
from kvcore.tree import build_levels

RESTART = 16
"""Every entry whose index is a multiple of this stores its whole key (``shared`` = 0)."""
STORED_FROM = 4
"""The lowest entries-tree level kept in ``extra`` (level 0 = the leaves)."""

_LEAF_HEAD = struct.Struct(">BII")  # the hashed record's head (hashing.entry_leaf_data)
_SMALL = [bytes((i,)) for i in range(128)]


class Malformed(ValueError):
    """Stored v2 bytes that cannot be decoded."""


def varint(n: int) -> bytes:
    """``n`` (0 <= n < 2^32) as an unsigned LEB128 varint."""
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append(n & 0x7F | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def shared_prefix(a: bytes, b: bytes) -> int:
    """How many leading bytes ``a`` and ``b`` have in common (two int conversions, no loop)."""
    m = min(len(a), len(b))
    if not m:
        return 0
    x = int.from_bytes(a[:m], "big") ^ int.from_bytes(b[:m], "big")
    return m - ((x.bit_length() + 7) >> 3)


def encode(
    tx_id: int, timestamp_ns: int, writes: Sequence[tuple[bytes, bytes | None]]
) -> tuple[bytes, bytes, bytes, list[int]]:
    """(payload, extra, header bytes, byte position of each entry) for ``writes``:
    ``(key, value)`` pairs, a value of None being a tombstone (kind 1, empty value)."""
    sha, pack, small, vi, common = _sha, _LEAF_HEAD.pack, _SMALL, varint, shared_prefix
    parts: list[bytes] = []
    leaves: list[bytes] = []
    positions: list[int] = []
    pos = HEADER_SIZE
    prev = b""
    for i, (key, value) in enumerate(writes):
        kind = 0
        if value is None:
            kind, value = 1, b""
        klen, vlen = len(key), len(value)
        leaves.append(sha(b"\x00" + pack(kind, klen, vlen) + key + value).digest())
        shared = common(prev, key) if i % RESTART else 0
        slen = klen - shared
        if shared < 0x80 and slen < 0x80 and vlen < 0x80:
            head = bytes((kind, shared, slen, vlen))
        else:
            head = small[kind] + vi(shared) + vi(slen) + vi(vlen)
        part = head + key[shared:] + value if shared else head + key + value
        parts.append(part)
        positions.append(pos)
        pos += len(part)
        prev = key
    nodes, root = build_levels(leaves, STORED_FROM)
    header = encode_header(tx_id, timestamp_ns, len(leaves), root)
    table = struct.pack(f">{len(positions) + 1}I", *positions, pos)
    return header + b"".join(parts), table + nodes, header, positions


def _head(buf: bytes, p: int) -> tuple[int, int, int, int, int]:
    """(kind, shared, suffix_len, value_len, where the key suffix starts) of the entry at
    ``p``; IndexError past the end of ``buf``, Malformed for an overlong varint."""
    kind = buf[p]
    p += 1
    out = [kind]
    for _ in range(3):
        n = shift = 0
        while True:
            b = buf[p]
            p += 1
            n |= (b & 0x7F) << shift
            if b < 0x80:
                break
            shift += 7
            if shift > 28:
                raise Malformed(f"a length at byte {p} is longer than 5 bytes")
        out.append(n)
    return out[0], out[1], out[2], out[3], p


def head_at(buf: bytes, p: int) -> tuple[int, int, int, int, int]:
    """(kind, shared, suffix_len, value_len, where the key suffix starts) of the entry at
    byte ``p`` of ``buf``; Malformed if ``buf`` ends inside it or a length is overlong."""
    try:
        return _head(buf, p)
    except IndexError:
        raise Malformed(f"the entry at byte {p} is cut short") from None


def decode_run(buf: bytes, positions: Sequence[int], index: int) -> list[tuple[int, bytes, bytes]]:
    """(kind, key, value) of consecutive entries, the first being entry ``index`` of its
    transaction (a restart): ``positions`` are their payload positions then where the last
    one ends, ``buf`` the payload's bytes from ``positions[0]`` to ``positions[-1]``.
    Every entry must end where the next begins."""
    base = positions[0]
    out: list[tuple[int, bytes, bytes]] = []
    append = out.append
    prev = b""
    size = len(buf)
    p = 0
    try:
        for j in range(1, len(positions)):
            end = positions[j] - base
            if positions[j - 1] - base != p or end > size:
                raise Malformed(f"entry {index + j - 1} is not where its position says")
            kind, shared = buf[p], buf[p + 1]
            if shared < 0x80 and (slen := buf[p + 2]) < 0x80 and (vlen := buf[p + 3]) < 0x80:
                q = p + 4
            else:
                kind, shared, slen, vlen, q = _head(buf, p)
            k1 = q + slen
            p = k1 + vlen
            if kind > 1 or p != end or shared > len(prev) or (shared and (index + j - 1) % RESTART == 0):
                raise Malformed(f"entry {index + j - 1} is malformed")
            prev = prev[:shared] + buf[q:k1] if shared else buf[q:k1]
            append((kind, prev, buf[k1:p]))
    except IndexError:
        raise Malformed(f"entry {index + len(out)} is cut short") from None
    return out


def iter_entries(payload: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(position, kind, key, value) for each entry of a whole payload; Malformed if the
    layout is broken."""
    pos, end = HEADER_SIZE, len(payload)
    prev = b""
    i = 0
    while pos < end:
        try:
            kind, shared, slen, vlen, q = _head(payload, pos)
        except IndexError:
            raise Malformed(f"entry at byte {pos} is cut short") from None
        k1 = q + slen
        nxt = k1 + vlen
        if nxt > end or kind > 1 or shared > len(prev) or (shared and i % RESTART == 0):
            raise Malformed(f"entry at byte {pos} is malformed")
        prev = prev[:shared] + payload[q:k1]
        yield pos, kind, prev, payload[k1:nxt]
        pos = nxt
        i += 1


def _leaves_and_positions(payload: bytes) -> tuple[list[bytes], list[int]]:
    sha, pack = _sha, _LEAF_HEAD.pack
    leaves, positions = [], []
    for pos, kind, key, value in iter_entries(payload):
        positions.append(pos)
        leaves.append(sha(b"\x00" + pack(kind, len(key), len(value)) + key + value).digest())
    positions.append(len(payload))
    return leaves, positions


def extra_for(payload: bytes) -> bytes:
    """Recompute a payload's ``extra`` (audit and repair)."""
    leaves, positions = _leaves_and_positions(payload)
    nodes, _root = build_levels(leaves, STORED_FROM)
    return struct.pack(f">{len(positions)}I", *positions) + nodes


def entries_root(payload: bytes) -> bytes:
    """Recompute the entries root of a payload from its entries."""
    return build_levels(_leaves_and_positions(payload)[0], STORED_FROM)[1]
