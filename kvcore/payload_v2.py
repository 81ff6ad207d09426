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
``2^STORED_FROM`` entries of its block (:func:`kvcore.runs.block_of`).

Neither layout is hashed: an entry's leaf is over (kind, key, value) as in format v1
(:func:`kvcore.hashing.entry_leaf_hash`), so both formats give the same hashes and proofs.
Decoding raises :class:`Malformed` (a ValueError) for any byte that does not add up.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence
from itertools import accumulate, islice

from kvcore.hashing import HEADER_SIZE, HEADER_SIZE_V2, encode_header, header_size
from kvcore.payload import StateRoot
from kvcore.hashing import sha256 as _sha
from kvcore.payload import extra_of
from kvcore.tree import build_levels

RESTART = 16
"""Every entry whose index is a multiple of this stores its whole key (``shared`` = 0)."""
STORED_FROM = 4
"""The lowest entries-tree level kept in ``extra`` (level 0 = the leaves)."""

_LEAF_HEAD = struct.Struct(">BII")  # the hashed record's head (hashing.entry_leaf_data)
_LEAF0 = struct.Struct(">BBII")  # 0x00 (a leaf) || that head
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


def encode(
    tx_id: int,
    timestamp_ns: int,
    writes: Sequence[tuple[bytes, bytes | None]],
    state_root: StateRoot | None = None,
) -> tuple[bytes, bytes, bytes, list[int]]:
    """(payload, extra, header bytes, byte position of each entry) for ``writes``:
    ``(key, value)`` pairs, a value of None being a tombstone (kind 1, empty value). With
    ``state_root``, the header is version 2 and commits to what it returns."""
    sha, pack, fb, head = _sha, _LEAF0.pack, int.from_bytes, _head_bytes
    keys = [w[0] for w in writes]
    kinds = [0 if w[1] is not None else 1 for w in writes]
    values = [b"" if v is None else v for _k, v in writes]
    leaves = [sha(pack(0, kd, len(k), len(v)) + k + v).digest() for kd, k, v in zip(kinds, keys, values)]
    # the bytes each key shares with the one before: where the two keys, as integers cut to
    # the shorter's length, first differ (no loop over bytes); none at a restart
    ints = [fb(k, "big") for k in keys]
    lens = [len(k) for k in keys]
    shared = [0]
    shared += [
        m - ((((a >> ((la - m) << 3)) ^ (b >> ((lb - m) << 3))).bit_length() + 7) >> 3) if (m := min(la, lb)) else 0
        for a, b, la, lb in zip(ints, islice(ints, 1, None), lens, islice(lens, 1, None))
    ]
    shared[::RESTART] = [0] * len(range(0, len(shared), RESTART))
    parts = [
        (bytes((kd, s, sl, len(v))) if (s | sl | len(v)) < 0x80 else head(kd, s, sl, len(v))) + k[s:] + v
        for kd, s, k, v, sl in zip(kinds, shared, keys, values, [len(k) - s for k, s in zip(keys, shared)])
    ]
    sroot = None if state_root is None else state_root(tx_id, leaves)
    positions = list(accumulate(map(len, parts), initial=HEADER_SIZE if sroot is None else HEADER_SIZE_V2))
    nodes, root = build_levels(leaves, STORED_FROM)
    header = encode_header(tx_id, timestamp_ns, len(leaves), root, sroot)
    table = struct.pack(f">{len(positions)}I", *positions)
    positions.pop()
    return header + b"".join(parts), table + nodes, header, positions


def _head_bytes(kind: int, shared: int, slen: int, vlen: int) -> bytes:
    """An entry's head when a length needs more than one byte."""
    return _SMALL[kind] + varint(shared) + varint(slen) + varint(vlen)


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


def decode_run(
    buf: bytes, positions: Sequence[int], index: int, prefix: bytes = b""
) -> list[tuple[int, bytes, bytes]]:
    """(kind, key, value) of consecutive entries, the first being entry ``index`` of its
    transaction: ``positions`` are their payload positions then where the last one ends,
    ``buf`` the payload's bytes from ``positions[0]`` to ``positions[-1]``, ``prefix`` the
    bytes the first entry's key shares with the key before it (:func:`key_prefix`; none at
    a restart). Every entry must end where the next begins."""
    base = positions[0]
    out: list[tuple[int, bytes, bytes]] = []
    append = out.append
    prev = prefix
    p = 0
    i = index
    try:
        for nxt in islice(positions, 1, None):
            kind, shared, slen, vlen = buf[p], buf[p + 1], buf[p + 2], buf[p + 3]
            if (shared | slen | vlen) >= 0x80:
                kind, shared, slen, vlen, q = _head(buf, p)
            else:
                q = p + 4
            k1 = q + slen
            p = k1 + vlen
            if p != nxt - base or kind > 1 or shared > len(prev) or (shared and not i % RESTART):
                raise Malformed(f"entry {i} is malformed, or not where its position says")
            prev = prev[:shared] + buf[q:k1] if shared else buf[q:k1]
            append((kind, prev, buf[k1:p]))
            i += 1
    except IndexError:
        raise Malformed(f"entry {i} is cut short") from None
    if p > len(buf):
        raise Malformed(f"entry {i - 1} is cut short")
    return out


def shared_at(buf: bytes, p: int) -> int:
    """How many bytes the key of the entry at byte ``p`` shares with the key before it."""
    return head_at(buf, p)[1]


def key_prefix(buf: bytes, positions: Sequence[int], index: int, need: int) -> bytes:
    """The first ``need`` bytes of the key of the last of the consecutive entries ``index ..``
    (a restart first) at ``positions`` (then where the last ends) in ``buf``, resolved from
    their heads backwards: only the entries whose stored suffix holds some of those bytes are
    looked at, and no whole key is rebuilt."""
    base = positions[0]
    pieces = []
    try:
        for j in range(len(positions) - 2, -1, -1):
            kind, shared, slen, vlen, q = _head(buf, positions[j] - base)
            if q + slen + vlen != positions[j + 1] - base or kind > 1 or (shared and not (index + j) % RESTART):
                raise Malformed(f"entry {index + j} is malformed, or not where its position says")
            if need > shared:
                if need - shared > slen:
                    raise Malformed(f"entry {index + j + 1} shares more than the key before it holds")
                pieces.append(buf[q : q + need - shared])
                need = shared
            if not need:
                return b"".join(reversed(pieces))
    except IndexError:
        raise Malformed(f"an entry after entry {index} is cut short") from None
    raise Malformed(f"entry {index + len(positions) - 1} shares more than the key before it holds")


def iter_entries(payload: bytes) -> Iterator[tuple[int, int, bytes, bytes]]:
    """(position, kind, key, value) for each entry of a whole payload; Malformed if the
    layout is broken."""
    pos, end = header_size(payload), len(payload)
    prev = b""
    i = 0
    try:
        while pos < end:
            kind, shared, slen, vlen = payload[pos], payload[pos + 1], payload[pos + 2], payload[pos + 3]
            if (shared | slen | vlen) >= 0x80:
                kind, shared, slen, vlen, q = _head(payload, pos)
            else:
                q = pos + 4
            k1 = q + slen
            nxt = k1 + vlen
            if nxt > end or kind > 1 or shared > len(prev) or (shared and not i % RESTART):
                raise Malformed(f"entry at byte {pos} is malformed")
            prev = prev[:shared] + payload[q:k1] if shared else payload[q:k1]
            yield pos, kind, prev, payload[k1:nxt]
            pos = nxt
            i += 1
    except IndexError:
        raise Malformed(f"entry at byte {pos} is cut short") from None


def rebuild(
    payload: bytes, erased: dict[int, bytes] | None = None
) -> tuple[list[tuple[int, int, bytes, bytes]], bytes, bytes]:
    """(the entries as :func:`iter_entries`, ``extra``, the entries root) recomputed from a
    payload in one pass (the audit's); ``erased``: the committed leaves of erased entries, by
    index (their bytes are zeros: kvcore.erasure)."""
    sha, pack = _sha, _LEAF_HEAD.pack
    entries = list(iter_entries(payload))
    leaves = [sha(b"\x00" + pack(kind, len(key), len(value)) + key + value).digest() for _p, kind, key, value in entries]
    for i, leaf in (erased or {}).items():
        if 0 <= i < len(leaves):
            leaves[i] = leaf
    extra, root = extra_of([e[0] for e in entries], len(payload), leaves, STORED_FROM)
    return entries, extra, root


def extra_for(payload: bytes) -> bytes:
    """Recompute a payload's ``extra`` (audit and repair)."""
    return rebuild(payload)[1]


def entries_root(payload: bytes) -> bytes:
    """Recompute the entries root of a payload from its entries."""
    return rebuild(payload)[2]
