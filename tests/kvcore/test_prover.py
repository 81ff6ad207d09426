"""The prover is a component: over any ProofSource (here one that offers nothing but the
protocol's reads of a real ledger, and counts them) it builds the proofs the ledger gives."""

from __future__ import annotations

from collections import Counter

import pytest

from kvcore import (
    InvalidInputError,
    Ledger,
    State,
    TxNotFoundError,
    VerificationError,
    verify_consistency,
    verify_entry,
)
from kvcore.codec import codec_for
from kvcore.models import TxHeader
from kvcore.proofsource import ProofSource
from kvcore.proving import Prover


class CountingSource:
    """Only the ProofSource reads of ``inner``, each call counted in ``calls``."""

    def __init__(self, inner: ProofSource) -> None:
        self._inner = inner
        self.calls: Counter[str] = Counter()

    @property
    def tx_id(self) -> int:
        self.calls["tx_id"] += 1
        return self._inner.tx_id

    def state(self, at_tx: int | None = None) -> State:
        self.calls["state"] += 1
        return self._inner.state(at_tx)

    def header(self, tx_id: int) -> TxHeader:
        self.calls["header"] += 1
        return self._inner.header(tx_id)

    def payload_bytes(self, tx_id: int, start: int, length: int) -> bytes:
        self.calls["payload_bytes"] += 1
        return self._inner.payload_bytes(tx_id, start, length)

    def extra_bytes(self, tx_id: int, start: int, length: int) -> bytes:
        self.calls["extra_bytes"] += 1
        return self._inner.extra_bytes(tx_id, start, length)

    def key_locations(self, key: bytes) -> list[int]:
        self.calls["key_locations"] += 1
        return self._inner.key_locations(key)

    def entry_kind(self, loc: int, key: bytes) -> int:
        self.calls["entry_kind"] += 1
        return self._inner.entry_kind(loc, key)

    def tx_subtree_hash(self, start: int, end: int) -> bytes:
        self.calls["tx_subtree_hash"] += 1
        return self._inner.tx_subtree_hash(start, end)


@pytest.fixture
def filled(led):
    for t in range(1, 6):
        led.set_all([(b"t%d/k%03d" % (t, i), b"v%d.%d" % (t, i)) for i in range(37 * t)])
    led.set(b"t1/k001", b"again")
    led.delete(b"t2/k002")
    return led


def test_a_prover_over_the_protocol_alone_gives_the_ledgers_proofs(filled: Ledger):
    led = filled
    source = CountingSource(led._prover._source)
    prover = Prover(source, codec_for(led.format_version))  # it reads the ledger's format
    old, state = led.state(3), led.state()
    for key, tx_id in [(b"t1/k001", None), (b"t1/k001", 1), (b"t2/k002", None), (b"t5/k100", 5)]:
        assert prover.prove_entry(key, tx_id, state) == led.prove_entry(key, tx_id, state)
    for tx_id, index in [(1, 0), (3, 110), (5, 184), (7, 0)]:
        for s in (old, state, None) if tx_id <= 3 else (state, None):
            assert prover.prove_entry_at(tx_id, index, s) == led.prove_entry_at(tx_id, index, s)
    assert prover.prove_entries(2, range(10, 40), old) == led.prove_entries(2, range(10, 40), old)
    assert prover.prove_entries(4, range(10, 40), state) == led.prove_entries(4, range(10, 40), state)
    for first, count in [(0, 37), (5, 10), (36, 1)]:
        key = b"t1/k%03d" % (first + count - 1)
        got = prover.find_and_prove(1, first, count, len(key), key[-4:], state)
        assert got == led.find_and_prove(1, first, count, len(key), key[-4:], state)
        assert got is not None
        verify_entry(got[2], key, got[1], state)
    for a, b in [(0, 7), (1, 7), (3, 5), (6, None)]:
        proof = prover.prove_consistency(a, b)
        assert proof == led.prove_consistency(a, b)
        verify_consistency(led.state(a), led.state(proof.new_tx_id), proof)
    assert set(source.calls) == {
        "tx_id", "state", "header", "payload_bytes", "extra_bytes", "key_locations", "entry_kind",
        "tx_subtree_hash",
    }


def test_a_prover_checks_its_arguments_as_the_ledger_does(filled: Ledger):
    prover = Prover(CountingSource(filled._prover._source), codec_for(filled.format_version))
    state = filled.state()
    with pytest.raises(TxNotFoundError):
        prover.prove_entry_at(filled.tx_id + 1, 0)
    with pytest.raises(InvalidInputError):
        prover.prove_entries(1, [37])
    with pytest.raises(TxNotFoundError):
        prover.prove_consistency(0, filled.tx_id + 1)
    with pytest.raises(VerificationError):
        prover.prove_entry_at(1, 0, State(state.tx_id, bytes(32)))


def test_find_and_prove_trusts_only_the_state_it_checked(filled: Ledger):
    led = filled
    key = b"t1/k000"
    state = led.state()
    assert led.find_and_prove(1, 0, 1, len(key), key, state) is not None  # checked, remembered
    assert led.find_and_prove(1, 0, 1, len(key), key, state) is not None  # from the memory
    with pytest.raises(VerificationError):
        led.find_and_prove(1, 0, 1, len(key), key, State(state.tx_id, bytes(32)))
    with pytest.raises(VerificationError):
        led.find_and_prove(1, 0, 1, len(key), key, State(state.tx_id - 1, state.root))
    with pytest.raises(InvalidInputError):
        led.find_and_prove(1, 0, 1, len(key), key, tuple(state))
    with pytest.raises(TxNotFoundError):  # a state before the transaction cannot prove it
        led.find_and_prove(2, 0, 1, len(key), key, led.state(1))
    older = led.state(2)
    found = led.find_and_prove(1, 0, 1, len(key), key, older)
    assert found is not None and found[2].state_tx_id == 2
    verify_entry(found[2], key, found[1], older)


def test_clearing_the_caches_changes_no_proof(filled: Ledger):
    led = filled
    state = led.state()
    before = [led.prove_entry_at(t, 3, state) for t in range(1, 6)]
    led._prover.clear_caches()
    assert not led.prover.extra_cache and led.prover.extra_cache.nbytes == 0
    assert [led.prove_entry_at(t, 3, state) for t in range(1, 6)] == before
