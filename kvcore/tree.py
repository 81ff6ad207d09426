"""Stored Merkle trees: every complete, aligned subtree hash kept in post-order ("MMR") layout.

Appending leaf ``i`` appends the leaf and then one parent for every trailing one bit of ``i``.
Any RFC 9162 subtree hash MTH(D[a:b]) is then at most O(log n) stored nodes away, so roots,
inclusion and consistency proofs for every past size come from the same array. The ledger
tree (one leaf per transaction) and each transaction's entries tree use this layout.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from kvcore import merkle
from kvcore.hashing import EMPTY_ROOT, HASH_SIZE, node_hash
from kvcore.hashing import sha256 as _sha

NodeReader = Callable[[int, int], bytes]
"""Returns the 32-byte hash of complete subtree (level, index): leaves [i*2^l, (i+1)*2^l)."""


def node_count(leaves: int) -> int:
    """Stored nodes for ``leaves`` leaves: 2n - popcount(n)."""
    return 2 * leaves - leaves.bit_count()


def node_position(level: int, index: int) -> int:
    """Position of the complete subtree covering leaves [index*2^level, (index+1)*2^level)."""
    last = ((index + 1) << level) - 1
    return 2 * last - last.bit_count() + level


def subtree_hash(read: NodeReader, start: int, end: int) -> bytes:
    """MTH(D[start:end]) from stored complete subtrees (O(log n) reads and hashes)."""
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        return read(n.bit_length() - 1, start // n)
    k = merkle.split_point(n)
    return node_hash(subtree_hash(read, start, start + k), subtree_hash(read, start + k, end))


def build(leaves: Sequence[bytes]) -> tuple[bytes, bytes]:
    """(post-order node bytes, RFC 9162 root) for a whole list of leaf hashes."""
    out = bytearray()
    stack: list[bytes] = []
    for i, h in enumerate(leaves):
        out += h
        while i & 1:
            h = node_hash(stack.pop(), h)
            out += h
            i >>= 1
        stack.append(h)
    if not stack:
        return b"", EMPTY_ROOT
    root = stack[-1]
    for left in reversed(stack[:-1]):
        root = node_hash(left, root)
    return bytes(out), root


def build_levels(leaves: Sequence[bytes], from_level: int = 0) -> tuple[bytes, bytes]:
    """(level-order node bytes of the levels from ``from_level`` up, RFC 9162 root) for a
    whole, fixed list of leaf hashes.

    Level ``l`` holds the ``n >> l`` complete subtrees of ``2^l`` leaves, left to right, and
    levels follow each other; see :func:`level_position`. A transaction's entries tree is
    stored this way (it never grows, so no post-order is needed); format v2 stores only its
    levels from 4 up.
    """
    if not leaves:
        return b"", EMPTY_ROOT
    sha = _sha
    levels = [list(leaves)]
    level = levels[0]
    while len(level) > 1:
        pairs = iter(level)  # zip(pairs, pairs): (0, 1), (2, 3), ...; an odd last node waits
        level = [sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs)]
        levels.append(level)
    n = len(leaves)
    low = (n & -n).bit_length() - 1  # the lowest set bit of n: the smallest subtree, rightmost
    root = levels[low][(n >> low) - 1]
    for lvl in range(low + 1, n.bit_length()):  # fold the other set bits of n into it
        if n >> lvl & 1:
            root = node_hash(levels[lvl][(n >> lvl) - 1], root)
    return b"".join(b"".join(lv) for lv in levels[from_level:]), root


def level_starts(n: int) -> list[int]:
    """Where each level begins in :func:`build_levels` output for ``n`` leaves."""
    starts: list[int] = []
    pos, j = 0, 0
    while (n >> j) or not starts:
        starts.append(pos)
        pos += n >> j
        j += 1
    starts.append(pos)
    return starts


def level_position(n: int, level: int, index: int) -> int:
    """Position of node (level, index) in :func:`build_levels` output for ``n`` leaves."""
    return sum(n >> j for j in range(level)) + index


class MerkleTree:
    """An in-memory, append-only stored tree (the ledger tree); the owner persists the nodes."""

    __slots__ = ("_nodes", "_size", "_memo")

    def __init__(self, nodes: bytes | bytearray = b"", size: int = 0) -> None:
        if len(nodes) != node_count(size) * HASH_SIZE:
            raise ValueError("node array does not match the leaf count")
        self._nodes = bytearray(nodes)
        self._size = size
        self._memo: dict[tuple[int, int], bytes] = {}  # incomplete subtrees: never change

    def subtree(self, start: int, end: int) -> bytes:
        """MTH(D[start:end]) for ``0 <= start < end <= size`` (incomplete ones memoized)."""
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:
            return self._read(n.bit_length() - 1, start // n)
        key = (start, end)
        h = self._memo.get(key)
        if h is None:
            if len(self._memo) > 65536:
                self._memo.clear()
            h = self._memo[key] = subtree_hash(self._read, start, end)
        return h

    @property
    def size(self) -> int:
        return self._size

    def nodes(self) -> bytes:
        return bytes(self._nodes)

    def _read(self, level: int, index: int) -> bytes:
        p = node_position(level, index) * HASH_SIZE
        return bytes(self._nodes[p : p + HASH_SIZE])

    def append(self, leaf: bytes) -> bytes:
        """Add a leaf; return the node bytes appended (the leaf, then its new parents)."""
        nodes = self._nodes
        start = len(nodes)
        nodes += leaf
        i, h, level = self._size, leaf, 0
        while i & 1:
            h = node_hash(self._read(level, i ^ 1), h)
            nodes += h
            i >>= 1
            level += 1
        self._size += 1
        return bytes(nodes[start:])

    def truncate(self, size: int) -> None:
        """Forget leaves past ``size`` (rolling back a commit that failed to persist)."""
        del self._nodes[node_count(size) * HASH_SIZE :]
        self._size = size
        self._memo = {k: v for k, v in self._memo.items() if k[1] <= size}

    def root(self, size: int | None = None) -> bytes:
        """Root of the tree as it was with ``size`` leaves (default: now)."""
        size = self._size if size is None else size
        if not 0 <= size <= self._size:
            raise ValueError(f"tree has {self._size} leaves, not {size}")
        return EMPTY_ROOT if size == 0 else self.subtree(0, size)

    def leaf(self, index: int) -> bytes:
        return self._read(0, index)

    def inclusion_path(self, index: int, size: int) -> list[bytes]:
        return merkle.inclusion_path(index, size, self.subtree)

    def consistency_path(self, old_size: int, new_size: int) -> list[bytes]:
        return merkle.consistency_path(old_size, new_size, self.subtree)


def block_levels(leaves: Sequence[bytes], levels: int) -> bytes:
    """Levels ``0 .. levels-1`` of the complete subtrees over ``leaves`` (a block of a
    transaction's entries that starts at a multiple of ``2^levels``), in level order as
    :func:`build_levels` lays them out (level ``l`` holds ``len(leaves) >> l`` hashes: see
    :func:`level_starts`). Format v2 recomputes these from the payload."""
    sha = _sha
    level = list(leaves)
    out = [b"".join(level)]
    for _ in range(1, levels):
        pairs = iter(level)
        level = [sha(b"\x01" + left + right).digest() for left, right in zip(pairs, pairs)]
        out.append(b"".join(level))
    return b"".join(out)
