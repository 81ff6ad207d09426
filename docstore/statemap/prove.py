"""Proofs from the state map: a key's value (membership) and a key range complete.

A proof is a tree of lists, one per node visited, root first (docs/proofs.md; on the wire,
one byte string: :mod:`docstore.statemap.encoding`)::

    node = [level, m, first, path, items]

``m`` is the node's item count, ``items`` its items ``first .. first + len(items) - 1``,
``path`` the RFC 9162 multi-leaf path (hashes) proving them among the ``m``. A level-0 item
is ``[key, value]``; an inner item is ``[sep, child]``, ``child`` being the child's proof
node when opened, else its hash.

A **range proof** of ``[lo, hi)`` opens every child that may hold a key of the range and
reveals one item on each side as a fence: the item before the range (whose key is below
``lo``) and the item after it (whose key is at least ``hi``), unless the range starts or ends
the node. A **key proof** opens the one path to the key.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import OrderedDict
from typing import Any

import lmdb

from kvcore.hashing import sha256 as _sha
from kvcore.merkle import multi_path, root_of

from docstore.statemap.nodes import Node
from docstore.statemap.tree import StateMap


_LEVELS: OrderedDict[bytes, list[list[bytes]]] = OrderedDict()
"""The item trees of recently proven nodes, by node hash (a node's bytes never change under
its hash): the upper levels of the map, which every proof passes through, are hashed once."""
_LEVELS_MAX = 4096
_LEVELS_LOCK = threading.Lock()


def _levels(node: Node) -> list[list[bytes]]:
    """Every level of the node's RFC 9162 item tree, built by pairing left to right (an odd
    last node moves up as it is): node ``j`` of level ``l`` covers items
    ``[j * 2**l, min((j + 1) * 2**l, m))``."""
    with _LEVELS_LOCK:
        got = _LEVELS.get(node.hash)
        if got is not None:
            _LEVELS.move_to_end(node.hash)
            return got
    level = list(node.hashes)
    out = [level]
    while len(level) > 1:
        nxt = [_sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            nxt.append(level[-1])
        out.append(nxt)
        level = nxt
    with _LEVELS_LOCK:
        _LEVELS[node.hash] = out
        if len(_LEVELS) > _LEVELS_MAX:
            _LEVELS.popitem(last=False)
    return out


def _path(node: Node, first: int, last: int) -> list[bytes]:
    hashes = node.hashes
    levels = _levels(node)
    m = len(hashes)

    def subtree(a: int, b: int) -> bytes:
        lv = (b - a - 1).bit_length()  # the RFC subtrees multi_path asks for are nodes of the levels
        if a >> lv << lv == a and b == min(a + (1 << lv), m):
            return levels[lv][a >> lv]
        return root_of(hashes[a:b])

    return multi_path(list(range(first, last + 1)), m, subtree)


def prove_range(smap: StateMap, txn: lmdb.Transaction, lo: bytes, hi: bytes | None) -> list[Any]:
    """A proof that the map's keys in ``[lo, hi)`` (``hi`` None: unbounded) are exactly the
    level-0 items it reveals inside that range."""
    level, node = smap.top(txn)
    return _range(smap, txn, level, node, lo, hi)


def _range(smap: StateMap, txn: lmdb.Transaction, level: int, node: Node, lo: bytes, hi: bytes | None) -> list[Any]:
    keys = node.keys
    m = len(keys)
    if m == 0:
        return [level, 0, 0, [], []]
    jl = bisect_left(keys, lo)
    jh = m if hi is None else bisect_left(keys, hi)
    first = jl - 1 if jl > 0 else 0
    last = min(jh, m - 1)
    items: list[Any] = []
    for i in range(first, last + 1):
        if level == 0:
            items.append([keys[i], node.values[i]])
        elif i >= jl:
            child = smap.node_at(txn, level - 1, keys[i])
            items.append([keys[i], _range(smap, txn, level - 1, child, lo, hi)])
        else:
            items.append([keys[i], node.values[i]])
    if level and first < jl and len(items) > 1 and lowest(items[1]) < lo:
        # the first opened child reveals a key below the range: that fences the start (every
        # key of the children before it is lower still), so the parent's fence is left out
        first += 1
        del items[0]
    return [level, m, first, _path(node, first, last), items]


def lowest(item: list[Any]) -> bytes:
    """The lowest key an item of a proof reveals: its key, or the lowest its opened child
    reveals."""
    while isinstance(item[1], list):
        item = item[1][4][0]
    return item[0]


def prove_key(smap: StateMap, txn: lmdb.Transaction, key: bytes) -> list[Any] | None:
    """A proof of ``key``'s value (None if the map does not hold it: prove a range instead)."""
    level, node = smap.top(txn)
    return _key(smap, txn, level, node, key)


def _key(smap: StateMap, txn: lmdb.Transaction, level: int, node: Node, key: bytes) -> list[Any] | None:
    keys = node.keys
    i = bisect_left(keys, key)
    if i == len(keys):
        return None
    if level == 0:
        if keys[i] != key:
            return None
        item: list[Any] = [key, node.values[i]]
    else:
        child = _key(smap, txn, level - 1, smap.node_at(txn, level - 1, keys[i]), key)
        if child is None:
            return None
        item = [keys[i], child]
    return [level, len(keys), i, _path(node, i, i), [item]]
