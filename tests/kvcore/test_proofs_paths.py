"""How the ledger builds inclusion paths for proofs: from the in-memory ``extra`` of a
transaction, or reading only the nodes it needs when that is not cached, with the upper part
of paths and the transaction paths cached. Every way must give RFC 9162's PATH exactly."""

from __future__ import annotations

import pytest

from kvcore import Ledger, State, VerificationError, merkle, verify_entry
from kvcore import proving as proving_mod
from kvcore.hashing import KIND_SET, entry_leaf_hash

# sizes around powers of two (right-edge partial subtrees of every shape), and one large
# enough for the cached upper part of paths (_UPPER_FROM levels)
SIZES = [1, 2, 3, 4, 5, 7, 8, 9, 13, 16, 17, 31, 33, 100, 257, 1000]


def _key(t: int, i: int) -> bytes:
    return b"t%d/k%05d" % (t, i)


def _value(t: int, i: int) -> bytes:
    return b"v%d.%d" % (t, i) * (1 + i % 3)


@pytest.fixture(scope="module")
def sized(tmp_path_factory):
    """A ledger with one transaction of each size in SIZES (tx id t+1 has SIZES[t] entries)."""
    led = Ledger.open(tmp_path_factory.mktemp("paths") / "ledger")
    for t, n in enumerate(SIZES):
        led.set_all([(_key(t, i), _value(t, i)) for i in range(n)])
    yield led
    led.close()


def _expected(t: int, n: int, index: int) -> list[bytes]:
    leaves = [entry_leaf_hash(KIND_SET, _key(t, i), _value(t, i)) for i in range(n)]
    return merkle.inclusion_path(index, n, lambda a, b: merkle.root_of(leaves[a:b]))


def _indices(n: int) -> list[int]:
    if n <= 40:
        return list(range(n))
    return sorted({0, 1, n // 2, n - 2, n - 1, *range(0, n, 7), *range(n - 40, n)})


def _forget_caches(led: Ledger) -> None:
    led._prover.clear_caches()


def _without_caches(led, monkeypatch, cached: bool):
    """``led`` with its proof caches emptied; with ``cached`` False, no entries tree is kept in
    memory, so paths are read node by node."""
    _forget_caches(led)
    if not cached:
        monkeypatch.setattr(proving_mod, "_EXTRA_CACHE_BYTES", 0)
    return led


@pytest.mark.parametrize("cached", [True, False], ids=["extra in memory", "nodes read one by one"])
def test_entry_paths_are_rfc9162_paths(sized, monkeypatch, cached):
    led = sized
    _forget_caches(led)
    if not cached:  # the proof path must never load a whole entries tree then
        monkeypatch.setattr(proving_mod, "_EXTRA_CACHE_BYTES", 0)
    state = led.state()
    for t, n in enumerate(SIZES):
        tx_id = t + 1
        header = led.header(tx_id)
        for index in _indices(n):
            want = _expected(t, n, index)
            for _ in range(2):  # the second time from the caches
                proof = led.prove_entry_at(tx_id, index, state)
                assert proof.entry_path == want, (n, index)
                assert proof.tx_path == merkle.inclusion_path(tx_id - 1, state.tx_id, led._tree.subtree)
                verify_entry(proof, _key(t, index), _value(t, index), state)
                assert proof.header == header
        assert (tx_id in led.prover.extra_cache) is cached


def test_older_states_get_their_own_tx_paths(sized):
    led = sized
    for size in range(1, led.tx_id + 1):
        old = led.state(size)
        for tx_id in range(1, size + 1):
            proof = led.prove_entry_at(tx_id, 0, old)
            assert proof.state_tx_id == size
            assert proof.tx_path == merkle.inclusion_path(tx_id - 1, size, led._tree.subtree)
            verify_entry(proof, _key(tx_id - 1, 0), _value(tx_id - 1, 0), old)
            if size < led.tx_id:
                with pytest.raises(VerificationError):
                    verify_entry(proof, _key(tx_id - 1, 0), _value(tx_id - 1, 0), led.state())


@pytest.mark.parametrize("cached", [True, False], ids=["extra in memory", "nodes read one by one"])
def test_find_and_prove_finds_and_proves_the_matching_entry(sized, monkeypatch, cached):
    led = _without_caches(sized, monkeypatch, cached)
    t = SIZES.index(257)
    tx_id, state = t + 1, led.state()
    for start, count, target in [(0, 257, 0), (0, 257, 256), (10, 20, 29), (100, 50, 120), (100, 50, 100), (255, 2, 256)]:
        key = _key(t, target)
        suffix = key[-5:]  # the run's keys are equally long and differ in their last digits
        found = led.find_and_prove(tx_id, start, count, len(key), suffix, state)
        assert found is not None
        index, value, proof = found
        assert (index, value) == (target, _value(t, target))
        assert proof.entry_path == _expected(t, 257, target)
        verify_entry(proof, key, value, state)
    # the hint left by the last match does not hide another entry
    assert led.find_and_prove(tx_id, 0, 257, len(_key(t, 3)), _key(t, 3)[-5:], state)[0] == 3
    # outside the run, another length, no such suffix: nothing
    assert led.find_and_prove(tx_id, 10, 20, len(_key(t, 5)), _key(t, 5)[-5:], state) is None
    assert led.find_and_prove(tx_id, 0, 257, len(_key(t, 5)) + 1, _key(t, 5)[-5:], state) is None
    assert led.find_and_prove(tx_id, 0, 257, len(_key(t, 5)), b"nope!", state) is None
    assert led.find_and_prove(tx_id, 5, 0, len(_key(t, 5)), _key(t, 5)[-5:], state) is None


def test_find_and_prove_checks_its_arguments(sized):
    from kvcore import InvalidInputError, TxNotFoundError

    led = sized
    key = _key(0, 0)
    with pytest.raises(TxNotFoundError):
        led.find_and_prove(led.tx_id + 1, 0, 1, len(key), key, None)
    with pytest.raises(InvalidInputError):
        led.find_and_prove(1, 0, 2, len(key), key, None)  # tx 1 has one entry
    with pytest.raises(VerificationError):  # a state that is not this ledger's
        led.find_and_prove(1, 0, 1, len(key), key, State(led.tx_id, b"\x00" * 32))
    older = led.state(1)
    found = led.find_and_prove(1, 0, 1, len(key), key, older)
    assert found is not None and found[2].state_tx_id == 1
    verify_entry(found[2], key, found[1], older)


def test_a_deleted_entry_is_proven_as_a_tombstone(tmp_path, monkeypatch):
    monkeypatch.setattr(proving_mod, "_EXTRA_CACHE_BYTES", 0)
    with Ledger.open(tmp_path / "ledger") as led:
        led.set_all([(b"a", b"1"), (b"b", b"2"), (b"c", b"3")])
        led.delete(b"b")
        proof = led.prove_entry_at(2, 0)
        assert proof.deleted
        verify_entry(proof, b"b", None, led.state())
        assert led.find_and_prove(2, 0, 1, 1, b"b", None) is None  # a tombstone is no value


@pytest.mark.parametrize("cached", [True, False], ids=["extra in memory", "nodes read one by one"])
def test_multi_entry_proofs_read_the_same_nodes_either_way(sized, monkeypatch, cached):
    from kvcore import verify_entries

    led = _without_caches(sized, monkeypatch, cached)
    state = led.state()
    for t, n in enumerate(SIZES):
        leaves = [entry_leaf_hash(KIND_SET, _key(t, i), _value(t, i)) for i in range(n)]
        for run in {(0, n), (0, 1), (n - 1, n), (n // 3, n // 3 + 17), (n // 2, n)}:
            idx = list(range(max(0, run[0]), min(n, run[1])))
            if not idx:
                continue
            proof = led.prove_entries(t + 1, idx, state)
            assert proof.path == merkle.multi_path(idx, n, lambda a, b: merkle.root_of(leaves[a:b]))
            verify_entries(proof, [(_key(t, i), _value(t, i)) for i in idx], state)
        assert (t + 1 in led.prover.extra_cache) is cached


def test_the_transaction_check_memo_never_accepts_a_changed_input(sized):
    """verify_entry remembers transaction checks that passed; anything changed is checked anew."""
    from kvcore import verify as kv_verify

    led = sized
    state = led.state()
    t = SIZES.index(33)
    key, value = _key(t, 5), _value(t, 5)
    proof = led.prove_entry_at(t + 1, 5, state)
    for _ in range(2):
        verify_entry(proof, key, value, state)  # the second time from the memo
    header = proof.header
    forged_headers = [
        header._replace(timestamp_ns=header.timestamp_ns + 1),
        header._replace(tx_id=header.tx_id + 1 if header.tx_id < state.tx_id else header.tx_id - 1),
    ]
    for h in forged_headers:
        with pytest.raises(VerificationError):
            verify_entry(proof._replace(header=h), key, value, state)
    for i in range(len(proof.tx_path)):
        for bit in (0, 7, 255):
            bad = list(proof.tx_path)
            b = bytearray(bad[i])
            b[bit // 8] ^= 1 << (bit % 8)
            bad[i] = bytes(b)
            with pytest.raises(VerificationError):
                verify_entry(proof._replace(tx_path=bad), key, value, state)
    with pytest.raises(VerificationError):
        verify_entry(proof._replace(tx_path=proof.tx_path[:-1]), key, value, state)
    with pytest.raises(VerificationError):
        verify_entry(proof, key, value, State(state.tx_id, bytes(32)))
    # the memo is bounded, and a proof still verifies once it has been emptied
    kv_verify._TX_CHECKED.clear()
    for i in range(kv_verify._TX_CHECKED_MAX):
        kv_verify._TX_CHECKED[(b"%d" % i, (), 0, b"")] = None
    verify_entry(proof, key, value, state)
    assert 0 < len(kv_verify._TX_CHECKED) <= kv_verify._TX_CHECKED_MAX
