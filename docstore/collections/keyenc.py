"""Order-preserving byte encoding of JSON values for index keys.

``encode_index_value(v)`` maps a value to bytes such that, for scalars,

* ``compare_values(a, b) < 0``  implies ``encode(a) <= encode(b)`` (bytewise), and
* ``compare_values(a, b) == 0`` implies ``encode(a) == encode(b)`` (``1`` and ``1.0`` encode
  alike, ``-0.0`` like ``0.0``; ``True`` never like ``1``).

Layout: one type byte, increasing in Mongo's bracket order, then a payload:

=========  ====  ==========================================================================
bracket    byte  payload
=========  ====  ==========================================================================
null       0x10  (none)
number     0x20  8 bytes: the IEEE-754 float64 of the value made sortable (sign bit flipped
                 for positives, all bits flipped for negatives); NaN is 8 zero bytes (below
                 -inf, as Mongo orders it)
string     0x30  UTF-8 with 0x00 escaped as 0x00 0xFF, terminated by 0x00 0x00
object     0x40  per field: value type byte, key (string payload), value payload; then 0x00
array      0x50  per element: type byte, payload; then 0x00
bool       0x60  0x00 or 0x01
=========  ====  ==========================================================================

Every encoding is *prefix-free* (none is a proper prefix of another), so an index may append
anything (e.g. a document id) after it without disturbing the order.

Numbers go through float64, so integers with magnitude above 2**53 may round onto a neighbour
(and beyond the float range clamp to +/-inf): distinct huge integers can share an encoding.  The
order stays monotonic (never inverted) for scalars; the planner re-checks the full filter on
candidates, so such collisions only cost a few extra candidates.  For objects and arrays the
encoding preserves equality and, as long as they contain no integers beyond 2**53, the order.
"""

from __future__ import annotations

import struct
from typing import Any

from docstore.collections.query import (
    RANK_ARRAY,
    RANK_BOOL,
    RANK_NULL,
    RANK_NUMBER,
    RANK_OBJECT,
    RANK_STRING,
    FieldBounds,
    type_rank,
)
from docstore.errors import QueryError

__all__ = [
    "TYPE_BYTES",
    "encode_index_value",
    "index_range",
    "prefix_successor",
    "type_bracket_range",
]

T_NULL = 0x10
T_NUMBER = 0x20
T_STRING = 0x30
T_OBJECT = 0x40
T_ARRAY = 0x50
T_BOOL = 0x60

#: type byte of each bracket (``RANK_*`` constant of :mod:`docstore.collections.query`)
TYPE_BYTES: dict[int, int] = {
    RANK_NULL: T_NULL,
    RANK_NUMBER: T_NUMBER,
    RANK_STRING: T_STRING,
    RANK_OBJECT: T_OBJECT,
    RANK_ARRAY: T_ARRAY,
    RANK_BOOL: T_BOOL,
}

_EXACT_LIMIT = 2**53  # below this magnitude no two distinct numbers share an encoding
_INF = float("inf")
_pack_double = struct.Struct(">d").pack
_unpack_u64 = struct.Struct(">Q").unpack
_SIGN = 1 << 63
_MASK = (1 << 64) - 1


def _number_payload(x: int | float) -> bytes:
    if x.__class__ is int or (isinstance(x, int) and not isinstance(x, bool)):
        try:
            f = float(x)
        except OverflowError:
            f = _INF if x > 0 else -_INF
    else:
        f = float(x)
    if f != f:
        return b"\x00" * 8
    if f == 0.0:
        f = 0.0  # -0.0 == 0.0
    (bits,) = _unpack_u64(_pack_double(f))
    bits = (bits ^ _MASK) if bits & _SIGN else (bits | _SIGN)
    return bits.to_bytes(8, "big")


def _string_payload(s: str) -> bytes:
    return s.encode("utf-8", "surrogatepass").replace(b"\x00", b"\x00\xff") + b"\x00\x00"


def _type_byte(v: Any) -> int:
    try:
        return TYPE_BYTES[type_rank(v)]
    except (TypeError, KeyError):
        raise QueryError(f"cannot encode {v!r} ({type(v).__name__}) as an index key") from None


def _payload(v: Any, tb: int, out: bytearray) -> None:
    if tb == T_NUMBER:
        out += _number_payload(v)
    elif tb == T_STRING:
        out += _string_payload(v)
    elif tb == T_BOOL:
        out.append(1 if v else 0)
    elif tb == T_OBJECT:
        for k, x in v.items():
            xtb = _type_byte(x)
            out.append(xtb)
            out += _string_payload(k)
            _payload(x, xtb, out)
        out.append(0)
    elif tb == T_ARRAY:
        for x in v:
            xtb = _type_byte(x)
            out.append(xtb)
            _payload(x, xtb, out)
        out.append(0)
    # null: no payload


def encode_index_value(v: Any) -> bytes:
    """The order-preserving, prefix-free encoding of a JSON value (see the module docs)."""
    tb = _type_byte(v)
    if tb == T_NUMBER:
        return bytes((T_NUMBER,)) + _number_payload(v)
    if tb == T_STRING:
        return bytes((T_STRING,)) + _string_payload(v)
    if tb == T_NULL:
        return b"\x10"
    if tb == T_BOOL:
        return b"\x60\x01" if v else b"\x60\x00"
    out = bytearray((tb,))
    _payload(v, tb, out)
    return bytes(out)


def prefix_successor(b: bytes) -> bytes | None:
    """The smallest byte string greater than every string starting with ``b`` (None: none)."""
    stripped = b.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes((stripped[-1] + 1,))


def type_bracket_range(rank: int) -> tuple[bytes, bytes]:
    """``(start, stop)``: every encoding of the bracket ``rank`` lies in ``[start, stop)``.

    ``rank`` is a ``RANK_*`` constant of :mod:`docstore.collections.query`; for a value use
    ``type_bracket_range(type_rank(value))``.
    """
    tb = TYPE_BYTES.get(rank) if rank.__class__ is int else None
    if tb is None:
        raise QueryError(f"unknown type bracket {rank!r}")
    return bytes((tb,)), bytes((tb + 1,))


def _may_collide(v: Any) -> bool:
    """Whether a *different* Mongo value may share ``v``'s encoding."""
    c = v.__class__
    return (c is int or c is float) and not (-_EXACT_LIMIT < v < _EXACT_LIMIT)


def index_range(bounds: FieldBounds) -> list[tuple[bytes | None, bytes | None]]:
    """Byte ranges ``[start, stop)`` (None: unbounded) covering the bounds' index keys.

    A stored index entry ``encode_index_value(v) + suffix`` (any suffix) lies inside one of the
    returned ranges whenever ``bounds.contains(v)``.  Ranges are sorted and disjoint; an empty
    list means nothing can match.  Exclusive ends are exact except near number collisions
    (magnitudes >= 2**53), where they widen to inclusive -- the caller re-checks the filter.
    """
    ranges: list[tuple[bytes | None, bytes | None]] = []
    if bounds.values is not None:
        for v in bounds.values:
            e = encode_index_value(v)
            ranges.append((e, prefix_successor(e)))
    else:
        assert bounds.bracket is not None, "a range lies in one type bracket"
        first, last = type_bracket_range(bounds.bracket)
        start: bytes | None = first
        stop: bytes | None = last
        if bounds.lo is not None:
            e = encode_index_value(bounds.lo)
            if bounds.lo_inclusive or _may_collide(bounds.lo):
                start = e
            else:
                start = prefix_successor(e)
        if bounds.hi is not None:
            e = encode_index_value(bounds.hi)
            if bounds.hi_inclusive or _may_collide(bounds.hi):
                stop = prefix_successor(e)
            else:
                stop = e
        if start is not None and stop is not None and start >= stop:
            return []
        ranges.append((start, stop))
    ranges.sort(key=lambda r: r[0] if r[0] is not None else b"")
    merged: list[tuple[bytes | None, bytes | None]] = []
    for s, t in ranges:
        if merged:
            ps, pt = merged[-1]
            if pt is None or (s is not None and s <= pt):
                if pt is not None and (t is None or t > pt):
                    merged[-1] = (ps, t)
                continue
        merged.append((s, t))
    return merged
