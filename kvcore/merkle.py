"""RFC 9162 Merkle tree math: roots, inclusion and consistency proofs, and their verification.

The functions that build proofs take ``subtree(start, end)``, a callable returning
MTH(D[start:end]); whoever stores the tree decides how to answer it. Verification functions
are pure and follow RFC 9162 sections 2.1.3.2 and 2.1.4.2 step by step.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence

from kvcore.hashing import EMPTY_ROOT, node_hash
from kvcore.hashing import sha256 as _sha256

Subtree = Callable[[int, int], bytes]


def split_point(n: int) -> int:
    """The largest power of two strictly smaller than ``n`` (n >= 2)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_of(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves (iterative, same result as the recursive definition)."""
    if not leaf_hashes:
        return EMPTY_ROOT
    level = list(leaf_hashes)
    # Pairing left to right and promoting an odd last node yields the RFC 9162 tree, whose
    # split is at the largest power of two: left subtrees are always complete.
    sha = _sha256
    while len(level) > 1:  # node_hash, inlined: a call per node costs as much as the hash
        nxt = [sha(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)]
        if len(level) & 1:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def inclusion_path(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """PATH(index, D[0:size]) from RFC 9162 2.1.3.1, leaf-side first."""
    if not 0 <= index < size:
        raise ValueError(f"leaf {index} is not in a tree of size {size}")
    path: list[bytes] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = 1 << ((hi - lo - 1).bit_length() - 1)
        if index < lo + k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo = lo + k
    path.reverse()
    return path


def consistency_path(old_size: int, new_size: int, subtree: Subtree) -> list[bytes]:
    """PROOF(old_size, D[0:new_size]) from RFC 9162 2.1.4.1."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"no consistency proof from size {old_size} to {new_size}")
    if old_size == 0 or old_size == new_size:
        return []
    path: list[bytes] = []
    lo, hi, m, complete = 0, new_size, old_size, True
    while True:
        n = hi - lo
        if m == n:
            if not complete:
                path.append(subtree(lo, hi))
            break
        k = split_point(n)
        if m <= k:
            path.append(subtree(lo + k, hi))
            hi = lo + k
        else:
            path.append(subtree(lo, lo + k))
            lo, m, complete = lo + k, m - k, False
    path.reverse()
    return path


def root_from_inclusion(index: int, size: int, leaf: bytes, path: Sequence[bytes]) -> bytes:
    """Root implied by an inclusion proof (RFC 9162 2.1.3.2); raises ValueError if malformed."""
    if not 0 <= index < size:
        raise ValueError(f"leaf index {index} is outside a tree of size {size}")
    sha = _sha256
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ValueError("inclusion path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = sha(b"\x01" + p + r).digest()
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = sha(b"\x01" + r + p).digest()
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("inclusion path is shorter than the tree is deep")
    return r


def check_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]
) -> None:
    """Verify a consistency proof (RFC 9162 2.1.4.2); raises ValueError naming the failed check."""
    if not 0 <= old_size <= new_size:
        raise ValueError(f"old size {old_size} is not between 0 and new size {new_size}")
    if old_size == 0:
        if path:
            raise ValueError("a proof from the empty tree must be empty")
        if old_root != EMPTY_ROOT:
            raise ValueError("the old root is not the root of the empty tree")
        if new_size == 0 and new_root != EMPTY_ROOT:
            raise ValueError("the new root is not the root of the empty tree")
        return
    if old_size == new_size:
        if path:
            raise ValueError("a proof between equal sizes must be empty")
        if old_root != new_root:
            raise ValueError("roots differ for the same tree size")
        return
    if not path:
        raise ValueError("consistency path is empty")
    proof = list(path)
    if old_size & (old_size - 1) == 0:  # exact power of two
        proof.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ValueError("consistency path is longer than expected")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ValueError("consistency path is shorter than expected")
    if fr != old_root:
        raise ValueError("consistency path does not lead to the old root")
    if sr != new_root:
        raise ValueError("consistency path does not lead to the new root")


def _check_indices(indices: Sequence[int], size: int) -> None:
    if not indices:
        raise ValueError("no leaves to prove")
    prev = -1
    for i in indices:
        if type(i) is not int or i <= prev or i >= size:
            raise ValueError(f"leaf indices must be increasing and below the tree size {size}")
        prev = i


def multi_path(indices: Sequence[int], size: int, subtree: Subtree) -> list[bytes]:
    """Sibling hashes proving several leaves at once (a set or a range).

    Walking the RFC 9162 tree from the root, left before right, every maximal subtree that
    holds none of ``indices`` contributes its hash, in that order. A contiguous range of
    ``k`` leaves needs at most about ``2 log2(size)`` hashes; one leaf needs ``log2(size)``.
    """
    _check_indices(indices, size)
    out: list[bytes] = []

    def walk(lo: int, hi: int, i: int, j: int) -> None:
        if i == j:
            out.append(subtree(lo, hi))
        elif hi - lo > 1:
            mid = lo + split_point(hi - lo)
            m = bisect_left(indices, mid, i, j)
            walk(lo, mid, i, m)
            walk(mid, hi, m, j)

    walk(0, size, 0, len(indices))
    return out


def root_from_multi(
    indices: Sequence[int], size: int, leaves: Sequence[bytes], path: Sequence[bytes]
) -> bytes:
    """Root implied by a :func:`multi_path` proof; raises ValueError if it is malformed."""
    _check_indices(indices, size)
    if len(leaves) != len(indices):
        raise ValueError(f"{len(leaves)} leaves for {len(indices)} indices")
    it = iter(path)

    def walk(lo: int, hi: int, i: int, j: int) -> bytes:
        if i == j:
            h = next(it, None)
            if h is None:
                raise ValueError("multi-leaf path is too short")
            return h
        if hi - lo == 1:
            return leaves[i]
        mid = lo + split_point(hi - lo)
        m = bisect_left(indices, mid, i, j)
        return node_hash(walk(lo, mid, i, m), walk(mid, hi, m, j))

    root = walk(0, size, 0, len(indices))
    if next(it, None) is not None:
        raise ValueError("multi-leaf path is too long")
    return root
