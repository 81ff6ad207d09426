"""RFC 9162 tree math, checked against pymerkle and against the RFC's recursive definitions.

pymerkle (an independent implementation) is the oracle for leaf hashes, roots and inclusion
paths. Its consistency proofs are not in RFC 9162 form, so for those we only check that
pymerkle accepts our roots, and compare our paths with the RFC's own recursive PROOF
definition written out below from the RFC text.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache

import pymerkle
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcore import merkle, tree
from kvcore.hashing import EMPTY_ROOT, leaf_hash, node_hash
from kvcore.tree import MerkleTree, build, build_levels, level_position, node_count

from kvcore_testlib import flip_bit

MAX_LEAVES = 70
DATA = [b"leaf-%d" % i + bytes([i]) * (i % 5) for i in range(MAX_LEAVES)]
LEAVES = [leaf_hash(d) for d in DATA]

SETTINGS = settings(max_examples=150, deadline=None)


# --------------------------------------------------------------- RFC 9162 reference
@lru_cache(maxsize=None)
def ref_mth(start: int, end: int) -> bytes:
    """MTH(D[start:end]) exactly as RFC 9162 2.1.1 defines it (recursive)."""
    n = end - start
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + DATA[start]).digest()
    k = 1
    while k * 2 < n:
        k *= 2
    return hashlib.sha256(b"\x01" + ref_mth(start, start + k) + ref_mth(start + k, end)).digest()


def ref_path(m: int, start: int, end: int) -> list[bytes]:
    """PATH(m, D[start:end]) from RFC 9162 2.1.3.1 (``m`` relative to ``start``)."""
    n = end - start
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    if m < k:
        return ref_path(m, start, start + k) + [ref_mth(start + k, end)]
    return ref_path(m - k, start + k, end) + [ref_mth(start, start + k)]


def ref_subproof(m: int, start: int, end: int, complete: bool) -> list[bytes]:
    """SUBPROOF(m, D[start:end], b) from RFC 9162 2.1.4.1."""
    n = end - start
    if m == n:
        return [] if complete else [ref_mth(start, end)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return ref_subproof(m, start, start + k, complete) + [ref_mth(start + k, end)]
    return ref_subproof(m - k, start + k, end, False) + [ref_mth(start, start + k)]


def ref_proof(m: int, n: int) -> list[bytes]:
    if m == 0 or m == n:
        return []
    return ref_subproof(m, 0, n, True)


# --------------------------------------------------------------- shared trees
@pytest.fixture(scope="module")
def ours() -> MerkleTree:
    t = MerkleTree()
    for leaf in LEAVES:
        t.append(leaf)
    return t


@pytest.fixture(scope="module")
def oracle() -> pymerkle.InmemoryTree:
    t = pymerkle.InmemoryTree(algorithm="sha256")
    for d in DATA:
        t.append_entry(d)
    return t


def _full_tree() -> MerkleTree:
    t = MerkleTree()
    for leaf in LEAVES:
        t.append(leaf)
    return t


FULL = _full_tree()  # for hypothesis tests (which cannot take function fixtures)


def _oracle_root(t: pymerkle.InmemoryTree, size: int) -> bytes:
    return t.get_root(size) if hasattr(t, "get_root") else t.get_state(size)


# --------------------------------------------------------------- basics
def test_empty_tree_root_is_sha256_of_nothing(oracle):
    expected = hashlib.sha256(b"").digest()
    # RFC 9162 2.1.1: MTH({}) = HASH(); its well-known hex value:
    assert expected.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert EMPTY_ROOT == expected
    assert merkle.root_of([]) == expected
    assert MerkleTree().root() == expected
    assert build([]) == (b"", expected)
    assert build_levels([]) == (b"", expected)
    assert _oracle_root(oracle, 0) == expected


def test_leaf_and_node_hashes_use_rfc_domain_separation():
    assert leaf_hash(b"abc") == hashlib.sha256(b"\x00abc").digest()
    left, right = leaf_hash(b"l"), leaf_hash(b"r")
    assert node_hash(left, right) == hashlib.sha256(b"\x01" + left + right).digest()
    # a leaf can never be mistaken for a node with the same bytes
    assert leaf_hash(left + right) != node_hash(left, right)


def test_leaf_hashes_match_pymerkle(oracle):
    for i, leaf in enumerate(LEAVES):
        assert oracle.get_leaf(i + 1) == leaf


def test_split_point_is_largest_power_of_two_below_n():
    for n in range(2, 600):
        k = merkle.split_point(n)
        assert k & (k - 1) == 0 and k < n <= 2 * k


# --------------------------------------------------------------- roots
def test_roots_match_pymerkle_and_rfc_for_every_size(ours, oracle):
    for size in range(0, MAX_LEAVES + 1):
        expected = _oracle_root(oracle, size)
        assert ref_mth(0, size) == expected, size
        assert ours.root(size) == expected, size
        assert merkle.root_of(LEAVES[:size]) == expected, size


def test_build_matches_incremental_tree_and_root_of():
    for size in range(0, MAX_LEAVES + 1):
        incremental = MerkleTree()
        for leaf in LEAVES[:size]:
            incremental.append(leaf)
        nodes, root = build(LEAVES[:size])
        assert nodes == incremental.nodes(), size
        assert len(nodes) == node_count(size) * 32
        assert root == incremental.root() == merkle.root_of(LEAVES[:size]) == ref_mth(0, size)
        # the stored array reloads into the same tree
        assert MerkleTree(nodes, size).root() == root


def test_build_levels_holds_every_complete_aligned_subtree():
    for size in range(0, MAX_LEAVES + 1):
        nodes, root = build_levels(LEAVES[:size])
        assert root == ref_mth(0, size), size
        expected_count = sum(size >> lvl for lvl in range(max(size.bit_length(), 1)))
        assert len(nodes) == expected_count * 32
        for lvl in range(size.bit_length()):
            width = 1 << lvl
            for index in range(size >> lvl):
                pos = level_position(size, lvl, index) * 32
                assert nodes[pos : pos + 32] == ref_mth(index * width, (index + 1) * width)


def test_append_returns_exactly_the_new_nodes():
    t = MerkleTree()
    stored = b""
    for i, leaf in enumerate(LEAVES):
        added = t.append(leaf)
        trailing_ones = (i ^ (i + 1)).bit_length() - 1
        assert len(added) == 32 * (1 + trailing_ones)
        assert added[:32] == leaf
        stored += added
        assert stored == t.nodes()
    t.truncate(37)
    assert t.size == 37 and t.root() == ref_mth(0, 37)
    assert t.nodes() == build(LEAVES[:37])[0]


def test_tree_rejects_inconsistent_arrays_and_sizes(ours):
    with pytest.raises(ValueError):
        MerkleTree(b"\x00" * 32 * 3, 3)  # 3 leaves need 4 nodes
    with pytest.raises(ValueError):
        ours.root(MAX_LEAVES + 1)
    with pytest.raises(ValueError):
        ours.root(-1)


def test_subtree_hash_from_complete_subtrees_matches_rfc():
    # give subtree_hash only the RFC hashes of complete, aligned subtrees; it must build the rest
    asked = []

    def read(level: int, index: int) -> bytes:
        asked.append((level, index))
        return ref_mth(index << level, (index + 1) << level)

    for start in range(0, 40):
        for end in range(start + 1, 41):
            assert tree.subtree_hash(read, start, end) == ref_mth(start, end), (start, end)
    # the subtrees RFC 9162 proofs ask for cost O(log n) stored nodes per proof
    subtree = lambda a, b: tree.subtree_hash(read, a, b)  # noqa: E731
    for size in range(1, MAX_LEAVES + 1):
        bound = 2 * (size - 1).bit_length()
        for index in range(size):
            asked.clear()
            assert merkle.inclusion_path(index, size, subtree) == ref_path(index, 0, size)
            assert len(asked) <= bound, (index, size)
        for old in range(size + 1):
            asked.clear()
            assert merkle.consistency_path(old, size, subtree) == ref_proof(old, size)
            assert len(asked) <= bound, (old, size)


# --------------------------------------------------------------- inclusion
def test_inclusion_paths_match_pymerkle_and_rfc(ours, oracle):
    for size in range(1, MAX_LEAVES + 1):
        root = ref_mth(0, size)
        for index in range(size):
            path = ours.inclusion_path(index, size)
            proof = oracle.prove_inclusion(index + 1, size)
            assert proof.path[0] == LEAVES[index]
            assert path == [bytes(h) for h in proof.path[1:]], (index, size)
            assert path == ref_path(index, 0, size), (index, size)
            assert merkle.root_from_inclusion(index, size, LEAVES[index], path) == root
            pymerkle.verify_inclusion(LEAVES[index], root, proof)


def test_inclusion_path_length_is_logarithmic(ours):
    for size in range(1, MAX_LEAVES + 1):
        bound = (size - 1).bit_length()  # == ceil(log2(size))
        for index in range(size):
            assert len(ours.inclusion_path(index, size)) <= bound


def test_inclusion_refuses_out_of_range(ours):
    with pytest.raises(ValueError):
        ours.inclusion_path(5, 5)
    with pytest.raises(ValueError):
        merkle.root_from_inclusion(5, 5, LEAVES[0], [])
    with pytest.raises(ValueError):
        merkle.root_from_inclusion(-1, 5, LEAVES[0], [])
    with pytest.raises(ValueError):
        merkle.root_from_inclusion(0, 0, LEAVES[0], [])


def _rejects_inclusion(index: int, size: int, leaf: bytes, path: list[bytes]) -> bool:
    """True if verification fails against the true root of the claimed size."""
    if not 0 <= size <= MAX_LEAVES:
        expected = None
    else:
        expected = ref_mth(0, size)
    try:
        got = merkle.root_from_inclusion(index, size, leaf, path)
    except ValueError:
        return True
    return got != expected


@st.composite
def leaf_in_tree(draw):
    size = draw(st.integers(1, MAX_LEAVES))
    index = draw(st.integers(0, size - 1))
    return index, size


@SETTINGS
@given(leaf_in_tree(), st.data())
def test_inclusion_rejects_any_flipped_bit(pos, data):
    index, size = pos
    path = FULL.inclusion_path(index, size)
    assert merkle.root_from_inclusion(index, size, LEAVES[index], path) == ref_mth(0, size)
    if not path:
        # a one-leaf tree: the only thing to flip is the leaf itself
        bit = data.draw(st.integers(0, 255))
        assert _rejects_inclusion(index, size, flip_bit(LEAVES[index], bit), path)
        return
    which = data.draw(st.integers(0, len(path) - 1))
    bit = data.draw(st.integers(0, 255))
    bad = list(path)
    bad[which] = flip_bit(bad[which], bit)
    assert _rejects_inclusion(index, size, LEAVES[index], bad)
    assert _rejects_inclusion(index, size, flip_bit(LEAVES[index], bit), path)


@SETTINGS
@given(leaf_in_tree(), st.data())
def test_inclusion_rejects_wrong_index_or_size(pos, data):
    index, size = pos
    path = FULL.inclusion_path(index, size)
    other_index = data.draw(st.integers(-2, size + 2).filter(lambda i: i != index))
    assert _rejects_inclusion(other_index, size, LEAVES[index], path)
    other_size = data.draw(st.integers(0, MAX_LEAVES).filter(lambda s: s != size))
    assert _rejects_inclusion(index, other_size, LEAVES[index], path)
    # the right index with a different leaf (e.g. the neighbour's) is rejected too
    if size > 1:
        other_leaf = LEAVES[(index + 1) % size]
        assert _rejects_inclusion(index, size, other_leaf, path)


@SETTINGS
@given(leaf_in_tree(), st.data())
def test_inclusion_rejects_truncated_or_extended_path(pos, data):
    index, size = pos
    path = FULL.inclusion_path(index, size)
    if path:
        cut = data.draw(st.integers(0, len(path) - 1))
        with pytest.raises(ValueError):
            merkle.root_from_inclusion(index, size, LEAVES[index], path[:cut])
    extra = data.draw(st.lists(st.sampled_from(LEAVES), min_size=1, max_size=3))
    at = data.draw(st.integers(0, len(path)))
    longer = path[:at] + extra + path[at:]
    assert _rejects_inclusion(index, size, LEAVES[index], longer)
    with pytest.raises(ValueError):
        merkle.root_from_inclusion(index, size, LEAVES[index], path + extra)


@pytest.mark.slow
def test_inclusion_rejects_every_flipped_bit_exhaustively(ours):
    for size in range(1, MAX_LEAVES + 1):
        root = ref_mth(0, size)
        for index in range(size):
            path = ours.inclusion_path(index, size)
            for which in range(len(path)):
                for bit in (0, 77, 255):
                    bad = list(path)
                    bad[which] = flip_bit(bad[which], bit)
                    try:
                        got = merkle.root_from_inclusion(index, size, LEAVES[index], bad)
                    except ValueError:
                        continue
                    assert got != root, (index, size, which, bit)


@pytest.mark.slow
def test_consistency_rejects_every_flipped_bit_exhaustively(ours):
    for new in range(2, MAX_LEAVES + 1):
        for old in range(1, new):
            path = ours.consistency_path(old, new)
            for which in range(len(path)):
                for bit in (0, 77, 255):
                    bad = list(path)
                    bad[which] = flip_bit(bad[which], bit)
                    with pytest.raises(ValueError):
                        merkle.check_consistency(old, new, ours.root(old), ours.root(new), bad)


# --------------------------------------------------------------- consistency
def test_consistency_paths_are_rfc_and_verify_for_every_pair(ours, oracle):
    for new in range(0, MAX_LEAVES + 1):
        new_root = ours.root(new)
        for old in range(0, new + 1):
            path = ours.consistency_path(old, new)
            assert path == ref_proof(old, new), (old, new)
            merkle.check_consistency(old, new, ours.root(old), new_root, path)
            # RFC 9162: empty unless 0 < old < new, then at most ceil(log2(new)) + 1 hashes
            assert len(path) <= ((new - 1).bit_length() + 1 if 0 < old < new else 0)


def test_pymerkle_consistency_proofs_accept_our_roots(ours, oracle):
    for new in range(1, MAX_LEAVES + 1, 3):
        for old in range(1, new + 1, 2):
            proof = oracle.prove_consistency(old, new)
            pymerkle.verify_consistency(ours.root(old), ours.root(new), proof)
            with pytest.raises(pymerkle.InvalidProof):
                pymerkle.verify_consistency(flip_bit(ours.root(old), 7), ours.root(new), proof)


def test_consistency_path_builder_matches_generic_builder(ours):
    subtree = lambda a, b: ref_mth(a, b)  # noqa: E731
    for new in range(0, MAX_LEAVES + 1, 7):
        for old in range(0, new + 1):
            assert merkle.consistency_path(old, new, subtree) == ours.consistency_path(old, new)


def test_consistency_refuses_impossible_sizes(ours):
    with pytest.raises(ValueError):
        ours.consistency_path(5, 4)
    with pytest.raises(ValueError):
        merkle.check_consistency(5, 4, ours.root(5), ours.root(4), [LEAVES[0]])
    with pytest.raises(ValueError):  # from the empty tree: the path must be empty
        merkle.check_consistency(0, 4, EMPTY_ROOT, ours.root(4), [LEAVES[0]])
    with pytest.raises(ValueError):  # the empty tree has one root
        merkle.check_consistency(0, 4, LEAVES[0], ours.root(4), [])
    with pytest.raises(ValueError):  # equal sizes need equal roots
        merkle.check_consistency(4, 4, ours.root(4), ours.root(3), [])
    with pytest.raises(ValueError):  # equal sizes need an empty path
        merkle.check_consistency(4, 4, ours.root(4), ours.root(4), [LEAVES[0]])
    with pytest.raises(ValueError):  # a proper extension needs a path
        merkle.check_consistency(3, 4, ours.root(3), ours.root(4), [])


@st.composite
def two_sizes(draw):
    new = draw(st.integers(2, MAX_LEAVES))
    old = draw(st.integers(1, new - 1))
    return old, new


def _rejects_consistency(old: int, new: int, path: list[bytes], old_root=None, new_root=None) -> bool:
    if not 0 <= old <= new <= MAX_LEAVES:
        return True
    old_root = ref_mth(0, old) if old_root is None else old_root
    new_root = ref_mth(0, new) if new_root is None else new_root
    try:
        merkle.check_consistency(old, new, old_root, new_root, path)
    except ValueError:
        return True
    return False


@SETTINGS
@given(two_sizes(), st.data())
def test_consistency_rejects_any_flipped_bit(sizes, data):
    old, new = sizes
    path = FULL.consistency_path(old, new)
    assert not _rejects_consistency(old, new, path)
    which = data.draw(st.integers(0, len(path) - 1))
    bit = data.draw(st.integers(0, 255))
    bad = list(path)
    bad[which] = flip_bit(bad[which], bit)
    assert _rejects_consistency(old, new, bad)
    assert _rejects_consistency(old, new, path, old_root=flip_bit(ref_mth(0, old), bit))
    assert _rejects_consistency(old, new, path, new_root=flip_bit(ref_mth(0, new), bit))


@SETTINGS
@given(two_sizes(), st.data())
def test_consistency_rejects_wrong_sizes(sizes, data):
    old, new = sizes
    path = FULL.consistency_path(old, new)
    other_old = data.draw(st.integers(0, new).filter(lambda m: m != old))
    assert _rejects_consistency(other_old, new, path)
    other_new = data.draw(st.integers(old, MAX_LEAVES).filter(lambda n: n != new))
    assert _rejects_consistency(old, other_new, path)


@SETTINGS
@given(two_sizes(), st.data())
def test_consistency_rejects_truncated_or_extended_path(sizes, data):
    old, new = sizes
    path = FULL.consistency_path(old, new)
    cut = data.draw(st.integers(0, len(path) - 1))
    assert _rejects_consistency(old, new, path[:cut])
    extra = data.draw(st.lists(st.sampled_from(LEAVES), min_size=1, max_size=3))
    at = data.draw(st.integers(0, len(path)))
    assert _rejects_consistency(old, new, path[:at] + extra + path[at:])
    assert _rejects_consistency(old, new, path + extra)


# --------------------------------------------------------------- multi-leaf proofs
@st.composite
def leaf_sets(draw):
    size = draw(st.integers(1, MAX_LEAVES))
    if draw(st.booleans()):  # a contiguous run, the common case
        start = draw(st.integers(0, size - 1))
        stop = draw(st.integers(start + 1, size))
        return list(range(start, stop)), size
    picked = draw(st.sets(st.integers(0, size - 1), min_size=1, max_size=size))
    return sorted(picked), size


def _rejects_multi(indices, size, leaves, path) -> bool:
    try:
        got = merkle.root_from_multi(indices, size, leaves, path)
    except ValueError:
        return True
    return got != ref_mth(0, size)


@SETTINGS
@given(leaf_sets(), st.data())
def test_multi_leaf_proofs_verify_and_reject_tampering(picked, data):
    indices, size = picked
    path = merkle.multi_path(indices, size, ref_mth)
    leaves = [LEAVES[i] for i in indices]
    assert merkle.root_from_multi(indices, size, leaves, path) == ref_mth(0, size)
    if indices == list(range(indices[0], indices[-1] + 1)):
        assert len(path) <= 2 * (size - 1).bit_length()  # a run: about 2 log2(n) hashes
    if len(indices) == 1:  # one leaf: the RFC inclusion path's hashes, in left-to-right order
        assert sorted(path) == sorted(ref_path(indices[0], 0, size))
    bit = data.draw(st.integers(0, 255))
    if path:
        which = data.draw(st.integers(0, len(path) - 1))
        bad = list(path)
        bad[which] = flip_bit(bad[which], bit)
        assert _rejects_multi(indices, size, leaves, bad)
        assert _rejects_multi(indices, size, leaves, path[:-1])
    which = data.draw(st.integers(0, len(leaves) - 1))
    bad_leaves = list(leaves)
    bad_leaves[which] = flip_bit(bad_leaves[which], bit)
    assert _rejects_multi(indices, size, bad_leaves, path)
    assert _rejects_multi(indices, size, leaves, path + [LEAVES[0]])
    assert _rejects_multi(indices, size, leaves[:-1], path)
    shifted = [i + 1 for i in indices]
    assert _rejects_multi(shifted, size, leaves, path)
    other_size = data.draw(st.integers(indices[-1] + 1, MAX_LEAVES).filter(lambda s: s != size))
    try:
        got = merkle.root_from_multi(indices, other_size, leaves, path)
    except ValueError:
        got = None
    assert got != ref_mth(0, other_size)
