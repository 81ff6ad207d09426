"""The state map in ``state.lmdb``: nodes addressed by ``(level, last key)``, so that the node
holding a key at any level is one cursor seek away, and a batched update per transaction.

An update is planned first (:meth:`StateMap.plan`: reads only, the new root and the node
records to write), because the root goes into the transaction's header before the log record
is written; the plan is applied (:meth:`Plan.apply`) in the same LMDB transaction as the rest
of the derived state, after the log record is durable. Planning touches the nodes that hold a
changed key and their ancestors: ``O(changed keys x depth)`` nodes, each rehashed once.

The update is the hot path of every write, so it works on records as they are stored
(:class:`~docstore.statemap.nodes.Parts`): runs of unchanged items are copied as slices,
only new or changed items are hashed (and only inserted keys' levels), a node whose items do
not change is not rewritten, and each rewritten node's MTH is computed inline over its item
hashes (:func:`_mth`).
"""

from __future__ import annotations

import hashlib
import struct
import threading
from collections import OrderedDict
from bisect import bisect_left
from collections.abc import Iterator
from itertools import accumulate
from typing import Any, NamedTuple, cast

import lmdb

from docstore.errors import CorruptDataError
from docstore.statemap import nodes
from docstore.statemap.hashing import EMPTY_ROOT, NODE_MAX, key_level
from docstore.statemap.nodes import HASH_SIZE, Node

ROOT_KEY = b"map.root"
LEVELS_KEY = b"map.levels"
MAX_LEVELS = 18
"""A key's level is at most 16, so the tree has at most 18 levels (0 .. 17)."""

_EMPTY_NODE = Node(EMPTY_ROOT, [], [], [])


class Plan(NamedTuple):
    """An update computed and not yet written: the new root, the node counts per level, and
    the records to put (a value) or delete (None)."""

    root: bytes
    levels: list[int]
    puts: dict[bytes, bytes | None]

    def apply(self, txn: lmdb.Transaction, smap: StateMap) -> None:
        for rk, value in self.puts.items():
            if value is None:
                txn.delete(rk, db=smap.db)
            else:
                txn.put(rk, value, db=smap.db)
        txn.put(ROOT_KEY, self.root, db=smap.meta)
        txn.put(LEVELS_KEY, struct.pack(f">{len(self.levels)}Q", *self.levels), db=smap.meta)


class StateMap:
    """The map's nodes in LMDB database ``db``, its root and level sizes in ``meta``."""

    def __init__(self, db: Any, meta: Any) -> None:
        self.db = db
        self.meta = meta

    # ---------------------------------------------------------------- reads
    def root(self, txn: lmdb.Transaction) -> bytes:
        raw = txn.get(ROOT_KEY, db=self.meta)
        return EMPTY_ROOT if raw is None else cast(bytes, raw)

    def levels(self, txn: lmdb.Transaction) -> list[int]:
        raw = cast("bytes | None", txn.get(LEVELS_KEY, db=self.meta))
        if not raw:
            return []
        if len(raw) % 8 or len(raw) // 8 > MAX_LEVELS:
            raise CorruptDataError("the state map's level sizes in the derived state are damaged")
        return list(struct.unpack(f">{len(raw) // 8}Q", raw))

    def read(self, txn: lmdb.Transaction, rk: bytes) -> Node:
        raw = txn.get(rk, db=self.db)
        if raw is None:
            raise CorruptDataError("a state-map node is missing from the derived state")
        return nodes.decode(cast(bytes, raw))

    def node_at(self, txn: lmdb.Transaction, level: int, key: bytes) -> Node:
        """The node of ``level`` whose key range holds ``key`` (the first whose last key is at
        least ``key``, else the level's last)."""
        cur = txn.cursor(db=self.db)
        pre = bytes((level,))
        if cur.set_range(pre + key) and cast(bytes, cur.key())[:1] == pre:
            return _decoded(cast(bytes, cur.value()))
        if _last_record(cur, level) is None:
            raise CorruptDataError(f"the state map has no node of level {level}")
        return _decoded(cast(bytes, cur.value()))

    def top(self, txn: lmdb.Transaction) -> tuple[int, Node]:
        """(level, node) of the root (level 0 and an empty node for an empty map)."""
        levels = self.levels(txn)
        if not levels or levels[-1] == 0:
            return 0, _EMPTY_NODE
        top = len(levels) - 1
        cur = txn.cursor(db=self.db)
        pre = bytes((top,))
        if not (cur.set_range(pre) and cast(bytes, cur.key())[:1] == pre):
            raise CorruptDataError("the state map's root node is missing from the derived state")
        return top, _decoded(cast(bytes, cur.value()))

    def get(self, txn: lmdb.Transaction, key: bytes) -> bytes | None:
        levels = self.levels(txn)
        if not levels or levels[0] == 0:
            return None
        node = self.node_at(txn, 0, key)
        i = bisect_left(node.keys, key)
        return node.values[i] if i < len(node.keys) and node.keys[i] == key else None

    def items(self, txn: lmdb.Transaction, lo: bytes, hi: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """The map's (key, value) pairs with ``lo <= key < hi``, in key order."""
        cur = txn.cursor(db=self.db)
        if not cur.set_range(b"\x00" + lo):
            return
        for rk, raw in cast("Iterator[tuple[bytes, bytes]]", iter(cur)):
            if rk[:1] != b"\x00":
                return
            node = nodes.decode(raw)
            for k, v in zip(node.keys, node.values):
                if k < lo:
                    continue
                if hi is not None and k >= hi:
                    return
                yield k, v

    # --------------------------------------------------------------- update
    def plan(self, txn: lmdb.Transaction, changes: dict[bytes, bytes | None]) -> Plan:
        """The update that sets each key of ``changes`` to its value (None: removes it)."""
        levels = self.levels(txn)
        puts: dict[bytes, bytes | None] = {}
        if not changes:
            return Plan(self.root(txn), levels, puts)
        pending: list[_Change] = [(k, v, -1) for k, v in sorted(changes.items())]
        level = 0
        while True:
            if level == len(levels):
                levels.append(0)
            removed, added = self._plan_level(txn, level, pending, puts)
            levels[level] += len(added) - len(removed)
            if levels[level] <= 1:
                if levels[level] == 0:
                    root = EMPTY_ROOT
                elif added:
                    root = added[-1][1]
                else:
                    root = self._only_node(txn, level, puts).hash
                for above in range(level + 1, len(levels)):
                    self._drop_level(txn, above, puts)
                del levels[level + 1 :]
                if levels == [0]:
                    levels = []
                return Plan(root, levels, puts)
            up: dict[bytes, tuple[bytes | None, int]] = dict.fromkeys(removed, (None, 0))
            for sep, h, lv in added:
                up[sep] = (h, lv)
            pending = [(k, v, lv) for k, (v, lv) in sorted(up.items())]
            level += 1
            if level >= MAX_LEVELS:
                raise CorruptDataError("the state map grew past its highest level (damaged derived state)")

    def _plan_level(
        self, txn: lmdb.Transaction, level: int, pending: list[_Change], puts: dict[bytes, bytes | None]
    ) -> tuple[list[bytes], list[_Node]]:
        """Plan one level: (last keys of the nodes replaced, (last key, hash, last level) of the
        new ones)."""
        cur = txn.cursor(db=self.db)
        pre = bytes((level,))
        last_rk = _last_record(cur, level)
        # the changes by the node holding them: [record key, its record, the changes]
        groups: list[tuple[bytes | None, bytes | None, list[_Change]]] = []
        rk0: bytes | None = None
        for change in pending:
            k = change[0]
            if rk0 is not None and pre + k <= rk0:
                groups[-1][2].append(change)
                continue
            if cur.set_range(pre + k) and cast(bytes, cur.key())[:1] == pre:
                rk = cast(bytes, cur.key())
                groups.append((rk, cast(bytes, cur.value()), [change]))
            elif groups and groups[-1][0] == last_rk:
                groups[-1][2].append(change)
                continue
            else:
                groups.append((last_rk, None, [change]))
                rk = None
            rk0 = rk
        removed: list[bytes] = []
        added: list[_Node] = []
        carry: _Items | None = None
        prev_rk: bytes | None = None
        gi = 0
        while gi < len(groups) or carry is not None:
            raw: bytes | None
            if carry is not None:
                nxt = _next_record(cur, cast(bytes, prev_rk), level)
                if nxt is None:  # the carried items end the level
                    _emit(level, carry, 0, len(carry[1]), puts, added)
                    carry = None
                    continue
                if gi < len(groups) and groups[gi][0] == nxt:
                    rk, raw, changes = groups[gi]
                    gi += 1
                else:
                    rk, raw, changes = nxt, cast(bytes, cur.value()), []
            else:
                rk, raw, changes = groups[gi]
                gi += 1
            prev_rk = rk
            if rk is None:
                parts = nodes.EMPTY_PARTS
            else:
                if raw is None:
                    raw = cast("bytes | None", txn.get(rk, db=self.db))
                    if raw is None:
                        raise CorruptDataError("a state-map node is missing from the derived state")
                parts = nodes.decode_parts(raw)[1]
            merged = _merge(parts, changes, level)
            if merged is None:  # the node does not change
                if carry is None:
                    continue
                merged = _whole(parts)
            if rk is not None:
                removed.append(rk[1:])
                puts[rk] = None
            if carry is not None:
                merged = _concat(carry, merged)
                carry = None
            cuts = merged[5].translate(_ABOVE[level])
            m = len(cuts)
            if m >= NODE_MAX:
                cuts = _capped(cuts)
            start = 0
            end = cuts.find(1)
            while end >= 0:
                _emit(level, merged, start, end + 1, puts, added)
                start = end + 1
                end = cuts.find(1, start)
            if start < m:
                if rk is None or rk == last_rk:
                    _emit(level, merged, start, m, puts, added)
                else:
                    carry = _slice(merged, start, m)
        return removed, added

    def _only_node(self, txn: lmdb.Transaction, level: int, puts: dict[bytes, bytes | None]) -> Node:
        """The one node of ``level`` left after the plan: a stored one that the plan does not
        remove (the plan's removals are not applied yet: its stored neighbours still are)."""
        cur = txn.cursor(db=self.db)
        pre = bytes((level,))
        if cur.set_range(pre):
            for rk, raw in cast("Iterator[tuple[bytes, bytes]]", iter(cur)):
                if rk[:1] != pre:
                    break
                if rk in puts and puts[rk] is None:
                    continue
                return nodes.decode(raw)
        raise CorruptDataError(f"the state map has no node of level {level}")

    def _drop_level(self, txn: lmdb.Transaction, level: int, puts: dict[bytes, bytes | None]) -> None:
        cur = txn.cursor(db=self.db)
        pre = bytes((level,))
        if not cur.set_range(pre):
            return
        for rk in cast("Iterator[bytes]", cur.iternext(keys=True, values=False)):
            if rk[:1] != pre:
                return
            puts[rk] = None


_Change = tuple[bytes, "bytes | None", int]
"""A change planned at a level: (key, value or None to remove, the key's level: -1 unknown
(level 0), else its level or 0 when that is at most the level below)."""

_Node = tuple[bytes, bytes, int]
"""A node planned: its last key, its hash and its last level (:mod:`~docstore.statemap.nodes`)."""

_Items = tuple[bytes, list[bytes], bytes, bytes, bytes, bytes]
"""Items being regrouped into nodes: a common prefix of their keys, the keys' suffixes after
it, then as blobs: the values, the value lengths (u16 each), the item hashes (32 bytes each)
and the key levels (a byte each: the key's level when above the level being planned, else
any level at most it)."""

_ABOVE = [bytes(int(b > level) for b in range(256)) for level in range(MAX_LEVELS)]
"""Per level, a table mapping a key level to 1 when it ends a node of that level, else 0."""
_ITEM_TAG = (b"\x00\x00", b"\x00\x01")
_NODE_TAG = [b"\x02" + bytes((level,)) for level in range(MAX_LEVELS)]
_sha = hashlib.sha256
"""OpenSSL's SHA-256: same digests as ``kvcore.hashing.sha256``; faster on the 65 to ~100 byte
messages hashed here wherever the CPU has SHA instructions (measured: 0.34 against 0.48 us
for 65 bytes)."""
_u32 = struct.Struct(">I").pack
_u16 = struct.Struct(">H").pack


def _capped(cuts: bytes) -> bytes:
    """``cuts`` (a 1 after each item that ends a node at its key's level) with a cut added after
    every NODE_MAX items since the last one (the items follow a cut: a node's first, or a
    carry's)."""
    if not _long_run(cuts):
        return cuts
    out = bytearray(cuts)
    run = 0
    for i, c in enumerate(out):
        run += 1
        if c:
            run = 0
        elif run == NODE_MAX:
            out[i] = 1
            run = 0
    return bytes(out)


def _long_run(cuts: bytes) -> bool:
    """Whether NODE_MAX items or more follow one another without a cut."""
    start = 0
    end = cuts.find(1)
    while end >= 0:
        if end - start + 1 > NODE_MAX:
            return True
        start = end + 1
        end = cuts.find(1, start)
    return len(cuts) - start >= NODE_MAX


def _mth(hashes: bytes) -> bytes:
    """RFC 9162 MTH over the item hashes in blob ``hashes`` (not empty): kvcore.merkle.root_of,
    inlined (``H(0x01 || left || right)``) and pairing the first level straight from the blob."""
    n = len(hashes)
    if n == HASH_SIZE:
        return hashes
    odd = n & HASH_SIZE
    pairs = n - odd
    sha = _sha
    row = [sha(b"\x01" + hashes[i : i + 2 * HASH_SIZE]).digest() for i in range(0, pairs, 2 * HASH_SIZE)]
    if odd:
        row.append(hashes[pairs:])
    while len(row) > 1:
        nxt = [sha(b"\x01" + row[i] + row[i + 1]).digest() for i in range(0, len(row) - 1, 2)]
        if len(row) & 1:
            nxt.append(row[-1])
        row = nxt
    return row[0]


def _emit(level: int, src: _Items, a: int, b: int, puts: dict[bytes, bytes | None], added: list[_Node]) -> None:
    """Plan the node of ``level`` holding items ``a .. b - 1`` of ``src``."""
    if a or b < len(src[1]):
        src = _slice(src, a, b)
    prefix, suffixes, values, value_lengths, hashes, lvs = src
    h = _sha(_NODE_TAG[level] + _u32(len(suffixes)) + _mth(hashes)).digest()
    last = prefix + suffixes[-1]
    lv = lvs[-1] if lvs[-1] > level else 0  # canonical: a rebuilt map's records are the same bytes
    puts[_NODE_TAG[level][1:] + last] = nodes.encode(h, prefix, suffixes, values, value_lengths, hashes, lv)
    added.append((last, h, lv))


def _slice(src: _Items, a: int, b: int) -> _Items:
    """Items ``a .. b - 1`` of ``src``."""
    prefix, suffixes, values, value_lengths, hashes, lvs = src
    ends = list(accumulate(struct.unpack(f">{len(suffixes)}H", value_lengths), initial=0))
    return (
        prefix,
        suffixes[a:b],
        values[ends[a] : ends[b]],
        value_lengths[2 * a : 2 * b],
        hashes[HASH_SIZE * a : HASH_SIZE * b],
        lvs[a:b],
    )


def _concat(x: _Items, y: _Items) -> _Items:
    """The items of ``x`` then those of ``y``."""
    if x[0] == y[0]:
        sx, sy = x[1], y[1]
    else:
        sx, sy = [x[0] + s for s in x[1]], [y[0] + s for s in y[1]]
    return (x[0] if x[0] == y[0] else b"", sx + sy, x[2] + y[2], x[3] + y[3], x[4] + y[4], x[5] + y[5])


def _whole(node: nodes.Parts) -> _Items:
    """The items of ``node`` unchanged."""
    raw, n = node.raw, len(node.suffixes)
    return (
        node.prefix,
        node.suffixes,
        raw[node.value_ends[0] : node.value_ends[n]],
        raw[node.value_lengths_at : node.value_lengths_at + 2 * n],
        raw[node.hashes_at : node.hashes_at + HASH_SIZE * n],
        bytes(n - 1) + bytes((node.last_level,)),
    )


def _merge(node: nodes.Parts, changes: list[_Change], level: int) -> _Items | None:
    """``node``'s items with ``changes`` (sorted; None removes) applied (None: no change).

    Runs of unchanged items are copied as slices of the node's record; keys are compared by
    their suffixes after the node's prefix (a change outside the prefix, below or above all of
    the node's keys, turns the node's keys into whole keys first)."""
    raw, prefix, suffixes, vends, vl_at, h_at, last_level = node
    plen = len(prefix)
    os: list[bytes] = []
    ov: list[bytes] = []
    ovl: list[bytes] = []
    oh: list[bytes] = []
    ol = bytearray()
    tag = _ITEM_TAG[level > 0]
    changed = False
    i, n = 0, len(suffixes)
    for k, v, lv in changes:
        if plen:
            if k[:plen] != prefix:
                return _merge(node._replace(prefix=b"", suffixes=[prefix + s for s in suffixes]), changes, level)
            s = k[plen:]
        else:
            s = k
        j = bisect_left(suffixes, s, i)
        if j > i:
            os += suffixes[i:j]
            ov.append(raw[vends[i] : vends[j]])
            ovl.append(raw[vl_at + 2 * i : vl_at + 2 * j])
            oh.append(raw[h_at + HASH_SIZE * i : h_at + HASH_SIZE * j])
            ol += bytes(j - i)
            if j == n:
                ol[-1] = last_level
            i = j
        if i < n and suffixes[i] == s:
            if v is not None and raw[vends[i] : vends[i + 1]] == v:
                continue  # unchanged: copied with the items after it
            if lv < 0:  # a key keeps its level: only the last one's may be above this level
                lv = last_level if i == n - 1 else 0
            i += 1
            changed = True
        if v is not None:
            os.append(s)
            ov.append(v)
            ovl.append(_u16(len(v)))
            oh.append(_sha(tag + _u32(len(k)) + k + v).digest())
            ol.append(key_level(k) if lv < 0 else lv)
            changed = True
    if not changed:
        return None
    if i < n:
        os += suffixes[i:]
        ov.append(raw[vends[i] : vends[n]])
        ovl.append(raw[vl_at + 2 * i : vl_at + 2 * n])
        oh.append(raw[h_at + HASH_SIZE * i : h_at + HASH_SIZE * n])
        ol += bytes(n - i)
        ol[-1] = last_level
    return prefix, os, b"".join(ov), b"".join(ovl), b"".join(oh), bytes(ol)


_DECODED: OrderedDict[bytes, Node] = OrderedDict()
_DECODED_MAX = 4096
_DECODED_LOCK = threading.Lock()


def _decoded(raw: bytes) -> Node:
    """A record decoded, from a small cache by the node hash it begins with (a node's items
    are a function of its hash: the upper levels, read by every proof, are decoded once; a
    record damaged after its hash decodes to the items that hash commits to, or is refused)."""
    h = raw[: nodes.HASH_SIZE]
    with _DECODED_LOCK:
        got = _DECODED.get(h)
        if got is not None:
            _DECODED.move_to_end(h)
            return got
    node = nodes.decode(raw)
    with _DECODED_LOCK:
        _DECODED[h] = node
        if len(_DECODED) > _DECODED_MAX:
            _DECODED.popitem(last=False)
    return node


def _last_record(cur: lmdb.Cursor, level: int) -> bytes | None:
    """Positions ``cur`` on the last record of ``level`` and returns its key (None: no node)."""
    pre = bytes((level,))
    if level < 255 and cur.set_range(bytes((level + 1,))):
        if not cur.prev():
            return None
    elif not cur.last():
        return None
    rk = cast(bytes, cur.key())
    return rk if rk[:1] == pre else None


def _next_record(cur: lmdb.Cursor, rk: bytes, level: int) -> bytes | None:
    """The record of ``level`` right after ``rk`` (None: ``rk`` is the level's last)."""
    if not cur.set_range(rk):
        return None
    k = cast(bytes, cur.key())
    if k == rk and not cur.next():
        return None
    k = cast(bytes, cur.key())
    return k if k[:1] == bytes((level,)) else None
