"""A state-map node as stored in LMDB (derived data: rebuilt from the log when damaged).

Record key: ``u8 level || the node's last key``. Value::

    node hash (32) || u16 m || u8 last level || u16 prefix length || prefix
    || m x u16 key suffix length || m x u16 value length || m x item hash (32)
    || key suffixes || values

Every key of the node is ``prefix || its suffix`` (the prefix is the keys' longest common
prefix when written; any common prefix decodes the same). Leaf items' values are the map's
values; inner items' values are their child's hash. Key levels are not stored but for the
last item's (the **last level**): inside a node of level ``L`` every other key has a level
``<= L`` (a key of a higher level ends its node), which is all the update needs to know of
them; the last level is the last key's level when above ``L``, else 0 (the last node of a
level may end at any key). A record is a function of the node's items alone (an audit
compares the records with those of a map rebuilt from scratch).

The record keeps its item hashes (an update rehashes a node from them, hashing only the items
it changes). The update reads a record as :class:`Parts` (:func:`decode_parts`: the keys'
suffixes, and where the values, value lengths and item hashes lie in the record, so that runs
of unchanged items are copied as slices of it); readers get a :class:`Node` (:func:`decode`).
"""

from __future__ import annotations

import struct
from itertools import accumulate
from typing import NamedTuple

from docstore.errors import CorruptDataError

HASH_SIZE = 32
_HEAD = struct.Struct(">HBH")
_HEAD_END = HASH_SIZE + _HEAD.size


class Node(NamedTuple):
    """A node's hash and its items (keys, values, item hashes, all in key order)."""

    hash: bytes
    keys: list[bytes]
    values: list[bytes]
    hashes: list[bytes]


class Parts(NamedTuple):
    """A node as the update reads it: its record ``raw`` and where its parts lie in it. The
    update copies runs of unchanged items as slices of ``raw`` (values, value lengths, item
    hashes) and compares keys by their suffixes (every key is ``prefix || suffix``)."""

    raw: bytes
    prefix: bytes
    suffixes: list[bytes]
    value_ends: list[int]
    """Item ``i``'s value is ``raw[value_ends[i] : value_ends[i + 1]]``."""
    value_lengths_at: int
    """Item ``i``'s value length (u16) is at ``value_lengths_at + 2 i``."""
    hashes_at: int
    """Item ``i``'s hash is at ``hashes_at + 32 i``."""
    last_level: int


EMPTY_PARTS = Parts(b"", b"", [], [0], 0, 0, 0)


def common_prefix(a: bytes, b: bytes) -> int:
    """The length of the longest common prefix of ``a`` and ``b``."""
    lo, hi = 0, min(len(a), len(b))
    if a[:hi] == b[:hi]:
        return hi
    while hi - lo > 1:  # a[:lo] == b[:lo], a[:hi] != b[:hi]
        mid = (lo + hi) >> 1
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def encode(node_hash: bytes, prefix: bytes, suffixes: list[bytes], values: bytes, value_lengths: bytes, hashes: bytes, last_level: int) -> bytes:
    """The record of a node: keys ``prefix || suffix`` (increasing, not empty), ``values``
    concatenated, ``value_lengths`` (u16 each) and ``hashes`` (32 bytes each) as blobs. The
    prefix is extended to the keys' longest common one."""
    m = len(suffixes)
    p = common_prefix(suffixes[0], suffixes[-1])
    if p:
        prefix += suffixes[0][:p]
        suffixes = [s[p:] for s in suffixes]
    return b"".join(
        (
            node_hash,
            _HEAD.pack(m, last_level, len(prefix)),
            prefix,
            struct.pack(f">{m}H", *map(len, suffixes)),
            value_lengths,
            hashes,
            *suffixes,
            values,
        )
    )


def decode_parts(raw: bytes) -> tuple[bytes, Parts]:
    """(node hash, parts) of a record; CorruptDataError if it is not one."""
    try:
        m, last_level, plen = _HEAD.unpack_from(raw, HASH_SIZE)
        p = _HEAD_END + plen
        vl_at = p + 2 * m
        h_at = vl_at + 2 * m
        kends = list(accumulate(struct.unpack_from(f">{m}H", raw, p), initial=h_at + HASH_SIZE * m))
        suffixes = [raw[a:b] for a, b in zip(kends, kends[1:])]
        vends = list(accumulate(struct.unpack_from(f">{m}H", raw, vl_at), initial=kends[-1]))
        if vends[-1] != len(raw) or m == 0:
            raise ValueError
    except (struct.error, ValueError, IndexError):
        raise CorruptDataError("a state-map node in the derived state is damaged") from None
    return raw[:HASH_SIZE], Parts(raw, raw[_HEAD_END:p], suffixes, vends, vl_at, h_at, last_level)


def decode(raw: bytes) -> Node:
    """The node a record holds; CorruptDataError if it is not one."""
    h, parts = decode_parts(raw)
    prefix, vends, at = parts.prefix, parts.value_ends, parts.hashes_at
    keys = [prefix + s for s in parts.suffixes] if prefix else parts.suffixes
    values = [raw[a:b] for a, b in zip(vends, vends[1:])]
    return Node(h, keys, values, [raw[i : i + HASH_SIZE] for i in range(at, at + HASH_SIZE * len(keys), HASH_SIZE)])
