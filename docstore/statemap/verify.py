"""Verifying state-map proofs (pure: a function of the proof, the range and the root). A proof
is given decoded (:func:`docstore.statemap.encoding.decode`): nested lists, bytes as bytes.

:func:`verify_range` returns the map's items in ``[lo, hi)`` when the proof shows they are all
of them (``complete=True``), or the items the proof reveals in it (``complete=False``: a key
proof); anything else is a VerificationError. The checks, at every node: its level is one
below its parent's; its revealed items are consecutive (the multi-leaf path of their
positions among ``m``) and their keys strictly increase inside the key interval the parent
gives the child (a child's last item is the parent's separator). For a complete range, also:
a node revealing from a position after its first starts with a fence below ``lo``, one ending
before its last ends with a fence at or above ``hi``, and every revealed child that may hold a
key of the range is opened.
"""

from __future__ import annotations

from typing import Any

from kvcore.merkle import root_from_multi

from docstore.errors import VerificationError
from docstore.statemap.hashing import EMPTY_ROOT, inner_item_hash, leaf_item_hash, node_hash
from docstore.statemap.tree import MAX_LEVELS

MAX_ITEMS = 1 << 20
"""More items than any node of a real map holds (a guard against absurd counts)."""


def _bytes(v: Any, what: str) -> bytes:
    if type(v) is not bytes:
        raise VerificationError(f"state map proof: {what} must be bytes")
    return v


def _hash(v: Any, what: str) -> bytes:
    h = _bytes(v, what)
    if len(h) != 32:
        raise VerificationError(f"state map proof: {what} is not a 32-byte hash")
    return h


def _count(v: Any, what: str, limit: int) -> int:
    if type(v) is not int or not 0 <= v <= limit:
        raise VerificationError(f"state map proof: {what} must be an integer from 0 to {limit}")
    return v


def verify_range(
    proof: Any, root: bytes, lo: bytes, hi: bytes | None, complete: bool = True
) -> list[tuple[bytes, bytes]]:
    """The (key, value) items of the map with root ``root`` in ``[lo, hi)``, in key order."""
    out: list[tuple[bytes, bytes]] = []
    if hi is not None and hi <= lo:
        raise VerificationError("state map proof: an empty key range")
    h, _low = _node(proof, None, None, None, lo, hi, complete, out)
    if h != root:
        raise VerificationError("state map proof: it does not lead to the state root the ledger committed")
    return out


def verify_key(proof: Any, root: bytes, key: bytes) -> bytes:
    """The value the map with root ``root`` holds for ``key`` (the proof reveals it)."""
    found = verify_range(proof, root, key, key + b"\x00", complete=False)
    if len(found) != 1 or found[0][0] != key:
        raise VerificationError("state map proof: it does not reveal the key it should prove")
    return found[0][1]


def _node(
    node: Any,
    want_level: int | None,
    lower: bytes | None,
    upper: bytes | None,
    lo: bytes,
    hi: bytes | None,
    complete: bool,
    out: list[tuple[bytes, bytes]],
) -> tuple[bytes, bytes]:
    """(the node's hash, the lowest key it reveals)."""
    if not isinstance(node, list) or len(node) != 5:
        raise VerificationError("state map proof: a node is [level, m, first, path, items]")
    level = _count(node[0], "level", MAX_LEVELS - 1)
    m = _count(node[1], "m", MAX_ITEMS)
    first = _count(node[2], "first", MAX_ITEMS)
    path, items = node[3], node[4]
    if not isinstance(path, list) or not isinstance(items, list):
        raise VerificationError("state map proof: a node's path and items are lists")
    if want_level is not None and level != want_level:
        raise VerificationError("state map proof: a child's level is not one below its parent's")
    if m == 0:  # only the root of an empty map
        if want_level is not None or level != 0 or first or path or items:
            raise VerificationError("state map proof: an empty node inside the tree")
        return EMPTY_ROOT, b""
    k = len(items)
    if k == 0 or first + k > m:
        raise VerificationError("state map proof: a node's items are not among its m items")
    hashes: list[bytes] = []
    prev = lower
    keys: list[bytes] = []
    low = b""
    for j, item in enumerate(items):
        if not isinstance(item, list) or len(item) != 2:
            raise VerificationError("state map proof: an item is [key, value] or [separator, child]")
        key = _bytes(item[0], "a key")
        if prev is not None and key <= prev:
            raise VerificationError("state map proof: keys are not in strictly increasing order")
        if upper is not None and (key > upper or (first + j == m - 1 and key != upper)):
            raise VerificationError("state map proof: a key lies outside its node's range")
        if level == 0:
            value = _bytes(item[1], "a value")
            hashes.append(leaf_item_hash(key, value))
            if lo <= key and (hi is None or key < hi):
                out.append((key, value))
        else:
            child_lower = prev if (j > 0 or first == 0) else None
            may_hold = key >= lo and (hi is None or child_lower is None or child_lower < hi)
            if type(item[1]) is bytes:
                if complete and may_hold:
                    raise VerificationError("state map proof: a child that may hold keys of the range is not opened")
                child = _hash(item[1], "a child hash")
                child_low = key
            else:
                child, child_low = _node(item[1], level - 1, child_lower, key, lo, hi, complete, out)
            hashes.append(inner_item_hash(key, child))
            if j == 0:
                low = child_low
        keys.append(key)
        prev = key
    if level == 0:
        low = keys[0]
    if complete:
        # a revealed key below ``lo`` in the first item's subtree fences the start: every key
        # of the items before it is lower still (a child's keys lie between its neighbours')
        if first > 0 and not low < lo:
            raise VerificationError("state map proof: the range's start is not fenced (keys before it may be missing)")
        if first + k < m and not (hi is not None and keys[-1] >= hi):
            raise VerificationError("state map proof: the range's end is not fenced (keys after it may be missing)")
    try:
        mth = root_from_multi(list(range(first, first + k)), m, hashes, [_hash(p, "a path hash") for p in path])
    except ValueError as e:
        raise VerificationError(f"state map proof: {e}") from None
    return node_hash(level, m, mth), low
