"""State-map proofs as bytes (docs/proofs.md, "Map proofs on the wire"): one proof, with every
node it opens, is one byte string (base64 in a bundle).

The proof's structure is that of :mod:`docstore.statemap.prove` (``[level, m, first, path,
items]`` per node, a level-0 item ``[key, value]``, an inner item ``[sep, child]`` with
``child`` a 32-byte hash or an opened node), written depth first::

    node  = u8 level || uvarint m || uvarint first || uvarint len(path) || path hashes (32 bytes each)
            || uvarint len(items) || item ...
    item  = key || (level 0: uvarint len(value) || value)
                 || (level > 0: 0x00 || child hash (32 bytes)  |  0x01 || node)
    key   = uvarint shared || uvarint len(rest) || rest

A key is the previous key written in the proof (none before the first: empty) cut to
``shared`` bytes, then ``rest``. ``uvarint`` is unsigned LEB128 (7 bits a byte, low first), in
its shortest form. Decoding is strict: a non-minimal varint, a ``shared`` longer than the
previous key, a node nested deeper than the map's levels or trailing bytes are refused.
"""

from __future__ import annotations

from typing import Any

from docstore.statemap.hashing import HASH_SIZE

MAX_DEPTH = 18
"""As many nested nodes as the map has levels (``tree.MAX_LEVELS``)."""
MAX_VARINT = (1 << 32) - 1


class EncodingError(ValueError):
    """Bytes that are not a map proof (or a structure that cannot be written as one)."""


def _uvarint(n: int, out: bytearray) -> None:
    if type(n) is not int or not 0 <= n <= MAX_VARINT:
        raise EncodingError(f"an integer from 0 to {MAX_VARINT} is expected, got {n!r}")
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _bytes(b: Any, what: str) -> bytes:
    if type(b) is not bytes:
        raise EncodingError(f"{what} must be bytes")
    return b


def encode(proof: Any) -> bytes:
    """The bytes of a proof given as nested lists (bytes as ``bytes``)."""
    out = bytearray()
    _node(proof, out, [b""], 0)
    return bytes(out)


def _node(node: Any, out: bytearray, prev: list[bytes], depth: int) -> None:
    if depth >= MAX_DEPTH:
        raise EncodingError("nodes nested deeper than the map's levels")
    if not isinstance(node, list) or len(node) != 5:
        raise EncodingError("a node is [level, m, first, path, items]")
    level, m, first, path, items = node
    if type(level) is not int or not 0 <= level < MAX_DEPTH:
        raise EncodingError("a node's level is a small integer")
    out.append(level)
    _uvarint(m, out)
    _uvarint(first, out)
    if not isinstance(path, list) or not isinstance(items, list):
        raise EncodingError("a node's path and items are lists")
    _uvarint(len(path), out)
    for h in path:
        if len(_bytes(h, "a path hash")) != HASH_SIZE:
            raise EncodingError("a path hash is 32 bytes")
        out += h
    _uvarint(len(items), out)
    for item in items:
        if not isinstance(item, list) or len(item) != 2:
            raise EncodingError("an item is [key, value] or [separator, child]")
        key, what = _bytes(item[0], "a key"), item[1]
        last = prev[0]
        shared = 0
        limit = min(len(key), len(last))
        while shared < limit and key[shared] == last[shared]:
            shared += 1
        _uvarint(shared, out)
        _uvarint(len(key) - shared, out)
        out += key[shared:]
        prev[0] = key
        if level == 0:
            value = _bytes(what, "a value")
            _uvarint(len(value), out)
            out += value
        elif type(what) is bytes:
            if len(what) != HASH_SIZE:
                raise EncodingError("a child hash is 32 bytes")
            out.append(0)
            out += what
        else:
            out.append(1)
            _node(what, out, prev, depth + 1)


class _Reader:
    __slots__ = ("data", "at", "prev")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0
        self.prev = b""

    def byte(self) -> int:
        if self.at >= len(self.data):
            raise EncodingError("the map proof ends early")
        b = self.data[self.at]
        self.at += 1
        return b

    def take(self, n: int) -> bytes:
        end = self.at + n
        if end > len(self.data):
            raise EncodingError("the map proof ends early")
        b = self.data[self.at : end]
        self.at = end
        return b

    def uvarint(self) -> int:
        n = shift = 0
        while True:
            b = self.byte()
            if b == 0 and shift:
                raise EncodingError("a varint is not in its shortest form")
            n |= (b & 0x7F) << shift
            if not b & 0x80:
                break
            shift += 7
            if shift > 35:
                raise EncodingError("a varint is too long")
        if n > MAX_VARINT:
            raise EncodingError("a varint is out of range")
        return n


def decode(data: bytes) -> list[Any]:
    """The nested-list proof of ``data`` (EncodingError if it is not exactly one proof)."""
    if type(data) is not bytes:
        raise EncodingError("a map proof is bytes")
    r = _Reader(data)
    node = _read_node(r, 0)
    if r.at != len(data):
        raise EncodingError("bytes follow the map proof")
    return node


def _read_node(r: _Reader, depth: int) -> list[Any]:
    if depth >= MAX_DEPTH:
        raise EncodingError("nodes nested deeper than the map's levels")
    level = r.byte()
    if level >= MAX_DEPTH:
        raise EncodingError("a node's level is above the map's highest")
    m = r.uvarint()
    first = r.uvarint()
    npath = r.uvarint()
    if npath * HASH_SIZE > len(r.data) - r.at:
        raise EncodingError("the map proof ends early")
    path = [r.take(HASH_SIZE) for _ in range(npath)]
    k = r.uvarint()
    if k > len(r.data) - r.at:  # every item takes at least two bytes
        raise EncodingError("the map proof ends early")
    items: list[Any] = []
    for _ in range(k):
        shared = r.uvarint()
        if shared > len(r.prev):
            raise EncodingError("a key shares more bytes than the previous key has")
        key = r.prev[:shared] + r.take(r.uvarint())
        r.prev = key
        if level == 0:
            items.append([key, r.take(r.uvarint())])
            continue
        tag = r.byte()
        if tag == 0:
            items.append([key, r.take(HASH_SIZE)])
        elif tag == 1:
            items.append([key, _read_node(r, depth + 1)])
        else:
            raise EncodingError("an inner item's child is tagged 0 (a hash) or 1 (a node)")
    return [level, m, first, path, items]
