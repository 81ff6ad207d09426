"""Entry and consistency proofs from real ledgers: every honest proof verifies, every forgery fails."""

from __future__ import annotations

import dataclasses
import json
import random
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcore import (
    ConsistencyProof,
    EntryProof,
    Ledger,
    State,
    TxNotFoundError,
    VerificationError,
    verify_consistency,
    verify_entry,
)

from kvcore_testlib import flip_bit

KEY_POOL = [b"k%d" % i for i in range(10)] + [b"", b"\x00", b"long/" + b"x" * 40]
KEY_POOL = [k for k in KEY_POOL if k]  # keys cannot be empty

TX_SIZES = st.one_of(st.integers(1, 9), st.sampled_from([1, 2, 3, 5, 7, 16, 17, 33]))


@st.composite
def ledger_plans(draw):
    """A list of transactions; each maps key -> value, or None for a delete of a live key."""
    n_tx = draw(st.integers(1, 9))
    live: set[bytes] = set()
    extra_keys = iter(b"extra/%d" % i for i in range(1000))
    plan = []
    for _ in range(n_tx):
        size = draw(TX_SIZES)
        tx: dict[bytes, bytes | None] = {}
        while len(tx) < size:
            if live and draw(st.integers(0, 4)) == 0:
                key = draw(st.sampled_from(sorted(live)))
                if key not in tx:
                    tx[key] = None
                    continue
            key = draw(st.sampled_from(KEY_POOL)) if len(tx) < len(KEY_POOL) else next(extra_keys)
            if key in tx:
                key = next(extra_keys)
            tx[key] = draw(st.binary(max_size=12))
        for k, v in tx.items():
            (live.discard if v is None else live.add)(k)
        plan.append(tx)
    return plan


def build(path: Path, plan) -> Ledger:
    led = Ledger.open(path)
    for tx in plan:
        with led.transaction() as t:
            for k, v in tx.items():
                if v is None:
                    t.delete(k)
                else:
                    t.set(k, v)
    return led


def _with(obj, **changes):
    """A copy of a proof or header with some fields changed (NamedTuple or dataclass)."""
    if hasattr(obj, "_replace"):
        return obj._replace(**changes)
    return dataclasses.replace(obj, **changes)


def mutations(proof: EntryProof, key: bytes, value: bytes | None, state: State, states, rng: random.Random):
    """Forged (proof, key, value, state) claims derived from an honest one; each must fail."""
    bit = rng.randrange(256)
    h = proof.header
    for i in range(len(proof.entry_path)):
        path = list(proof.entry_path)
        path[i] = flip_bit(path[i], bit)
        yield f"entry_path[{i}]", _with(proof, entry_path=path), key, value, state
    for i in range(len(proof.tx_path)):
        path = list(proof.tx_path)
        path[i] = flip_bit(path[i], bit)
        yield f"tx_path[{i}]", _with(proof, tx_path=path), key, value, state
    for field, width in (("tx_id", 64), ("timestamp_ns", 64), ("n_entries", 32)):
        b = rng.randrange(width)
        header = _with(h, **{field: getattr(h, field) ^ (1 << b)})
        yield f"header.{field} bit {b}", _with(proof, header=header), key, value, state
    header = _with(h, entries_root=flip_bit(h.entries_root, bit))
    yield "header.entries_root", _with(proof, header=header), key, value, state
    yield "key", proof, flip_bit(key, rng.randrange(len(key) * 8)), value, state
    yield "longer key", proof, key + b"\x00", value, state
    if value:
        yield "value", proof, key, flip_bit(value, rng.randrange(len(value) * 8)), state
    if value is not None:
        yield "value + byte", proof, key, value + b"\x00", state
        yield "claimed tombstone", proof, key, None, state
    else:
        yield "claimed empty value", proof, key, b"", state
    yield "deleted flag", _with(proof, deleted=not proof.deleted), key, value, state
    yield "state root", proof, key, value, State(state.tx_id, flip_bit(state.root, bit))
    # another genuine state of the same ledger: the proof was not made for it
    for other in {state.tx_id - 1, state.tx_id + 1, rng.randrange(len(states))} - {state.tx_id}:
        if 0 <= other < len(states):
            yield f"state {other}", proof, key, value, states[other]
            yield (
                f"proof relabelled for state {other}",
                _with(proof, state_tx_id=other),
                key,
                value,
                states[other],
            )
    for other in {proof.entry_index + 1, proof.entry_index - 1, rng.randrange(h.n_entries + 2)}:
        if other != proof.entry_index and other >= 0:
            yield f"entry_index {other}", _with(proof, entry_index=other), key, value, state
    if proof.entry_path:
        yield "entry_path cut", _with(proof, entry_path=proof.entry_path[:-1]), key, value, state
    yield "entry_path longer", _with(proof, entry_path=proof.entry_path + [h.entries_root]), key, value, state
    if proof.tx_path:
        yield "tx_path cut", _with(proof, tx_path=proof.tx_path[:-1]), key, value, state
    yield "tx_path longer", _with(proof, tx_path=proof.tx_path + [state.root]), key, value, state


def check_entry_proof(
    led: Ledger, key: bytes, value: bytes | None, tx_id: int, state: State, states, rng, forge: bool
):
    proof = led.prove_entry(key, tx_id, state=state)
    assert proof.state_tx_id == state.tx_id and proof.header == led.header(tx_id)
    verify_entry(proof, key, value, state)
    # O(log n) sizes: RFC 9162 paths have at most ceil(log2(n)) hashes
    assert len(proof.tx_path) <= (state.tx_id - 1).bit_length()
    assert len(proof.entry_path) <= (proof.header.n_entries - 1).bit_length()
    if not forge:
        return
    # through JSON and back, it still verifies
    verify_entry(EntryProof.from_dict(json.loads(json.dumps(proof.to_dict()))), key, value, state)
    tried = 0
    for what, p, k, v, s in mutations(proof, key, value, state, states, rng):
        try:
            verify_entry(p, k, v, s)
        except VerificationError:
            tried += 1
            continue
        pytest.fail(f"forged proof verified ({what})")
    assert tried >= 12


@settings(max_examples=50, deadline=None)
@given(ledger_plans(), st.randoms(use_true_random=False))
def test_every_entry_proof_verifies_and_every_forgery_fails(plan, rng):
    _entry_proofs(plan, rng)


@pytest.mark.slow
@settings(max_examples=300, deadline=None)
@given(ledger_plans(), st.randoms(use_true_random=False))
def test_every_entry_proof_verifies_and_every_forgery_fails_long(plan, rng):
    _entry_proofs(plan, rng)


def _entry_proofs(plan, rng):
    with tempfile.TemporaryDirectory() as d:
        with build(Path(d) / "ledger", plan) as led:
            n = led.tx_id
            assert n == len(plan)
            states = [led.state(i) for i in range(n + 1)]
            all_entries = [(t, e) for t in range(1, n + 1) for e in led.tx(t).entries]
            # every proof is checked honestly; forgeries of a sample of them (cost stays modest)
            forged = set(rng.sample(range(len(all_entries)), min(8, len(all_entries))))
            for i, (tx_id, e) in enumerate(all_entries):
                value = None if e.deleted else e.value
                assert value == plan[tx_id - 1][e.key]
                # against the newest state (the default) and against an older one
                check_entry_proof(led, e.key, value, tx_id, states[n], states, rng, i in forged)
                older = states[rng.randint(tx_id, n)]
                check_entry_proof(led, e.key, value, tx_id, older, states, rng, i in forged)
                assert led.prove_entry(e.key, tx_id) == led.prove_entry(e.key, tx_id, states[n])
            for tx_id in range(1, n + 1):
                assert [e.key for e in led.tx(tx_id).entries] == list(plan[tx_id - 1])
            # a proof for one key does not prove another key's value
            last = led.tx(n).entries
            if len(last) > 1:
                a, b = last[0], last[1]
                proof_a = led.prove_entry(a.key, n)
                with pytest.raises(VerificationError):
                    verify_entry(proof_a, b.key, None if b.deleted else b.value, states[n])


@settings(max_examples=40, deadline=None)
@given(ledger_plans(), st.randoms(use_true_random=False))
def test_consistency_proofs_between_every_pair_of_states(plan, rng):
    _consistency_proofs(plan, rng)


@pytest.mark.slow
@settings(max_examples=250, deadline=None)
@given(ledger_plans(), st.randoms(use_true_random=False))
def test_consistency_proofs_between_every_pair_of_states_long(plan, rng):
    _consistency_proofs(plan, rng)


def _consistency_proofs(plan, rng):
    with tempfile.TemporaryDirectory() as d:
        with build(Path(d) / "ledger", plan) as led:
            n = led.tx_id
            states = [led.state(i) for i in range(n + 1)]
            for new in range(n + 1):
                for old in range(new + 1):
                    proof = led.prove_consistency(old, new)
                    assert (proof.old_tx_id, proof.new_tx_id) == (old, new)
                    verify_consistency(states[old], states[new], proof)
                    back = ConsistencyProof.from_dict(json.loads(json.dumps(proof.to_dict())))
                    verify_consistency(states[old], states[new], back)
                    bit = rng.randrange(256)
                    for i in range(len(proof.path)):
                        path = list(proof.path)
                        path[i] = flip_bit(path[i], bit)
                        with pytest.raises(VerificationError):
                            verify_consistency(states[old], states[new], ConsistencyProof(old, new, path))
                    with pytest.raises(VerificationError):
                        verify_consistency(
                            State(old, flip_bit(states[old].root, bit)), states[new], proof
                        )
                    if old > 0:  # every tree extends the empty one, whatever its root
                        with pytest.raises(VerificationError):
                            verify_consistency(
                                states[old], State(new, flip_bit(states[new].root, bit)), proof
                            )
                    if new > 0:  # claimed for other states than it was made for
                        other = rng.choice([m for m in range(new + 1) if m != old])
                        with pytest.raises(VerificationError):
                            verify_consistency(states[other], states[new], proof)
                        relabelled = ConsistencyProof(other, new, proof.path)
                        if led.prove_consistency(other, new).path != proof.path:
                            with pytest.raises(VerificationError):
                                verify_consistency(states[other], states[new], relabelled)
            # the default is "to now"
            assert led.prove_consistency(0) == led.prove_consistency(0, n)


def test_proof_sizes_grow_logarithmically(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        big_tx = led.set_all({b"big/%04d" % i: b"v%d" % i for i in range(1000)})
        for i in range(299):
            led.set(b"t%d" % i, b"x")
        n = led.tx_id
        assert n == 300
        state = led.state()
        for i in (0, 1, 2, 499, 511, 512, 998, 999):
            key = b"big/%04d" % i
            p = led.prove_entry(key, big_tx)
            assert len(p.entry_path) <= 10  # ceil(log2(1000))
            assert len(p.tx_path) <= 9  # ceil(log2(300))
            verify_entry(p, key, b"v%d" % i, state)
        for tx_id in range(2, n + 1, 13):
            p = led.prove_entry(b"t%d" % (tx_id - 2), tx_id)
            assert p.entry_path == []  # a one-entry transaction: its leaf is its root
            assert len(p.tx_path) <= 9
            verify_entry(p, b"t%d" % (tx_id - 2), b"x", state)
            older = led.state(tx_id)
            p_old = led.prove_entry(b"t%d" % (tx_id - 2), tx_id, state=older)
            assert len(p_old.tx_path) <= (tx_id - 1).bit_length()
            verify_entry(p_old, b"t%d" % (tx_id - 2), b"x", older)
        for old in range(0, n + 1, 17):
            assert len(led.prove_consistency(old).path) <= 10  # ceil(log2(300)) + 1


def test_prove_entry_refuses_states_it_cannot_prove_against(led):
    led.set(b"a", b"1")
    led.set(b"b", b"2")
    led.set(b"a", b"3")
    with pytest.raises(TxNotFoundError):  # state before the transaction
        led.prove_entry(b"b", 2, state=led.state(1))
    with pytest.raises(TxNotFoundError):  # a state the ledger has not reached
        led.prove_entry(b"b", 2, state=State(9, led.state().root))
    with pytest.raises(VerificationError):  # not this ledger's root
        led.prove_entry(b"b", 2, state=State(3, flip_bit(led.state().root, 0)))
    # default tx is the key's newest entry
    assert led.prove_entry(b"a").header.tx_id == 3
    assert led.prove_entry(b"a", 1).header.tx_id == 1
    with pytest.raises(Exception) as err:
        led.prove_entry(b"a", 2)  # no entry for "a" in tx 2
    assert type(err.value).__name__ == "KeyNotFoundError"


def test_verifier_refuses_wrong_types(led):
    led.set(b"a", b"1")
    proof, state = led.prove_entry(b"a"), led.state()
    for args in [
        (proof.to_dict(), b"a", b"1", state),
        (proof, b"a", b"1", state.to_dict()),
        (proof, "a", b"1", state),
        (proof, b"a", "1", state),
    ]:
        with pytest.raises(VerificationError):
            verify_entry(*args)
    with pytest.raises(VerificationError):
        verify_consistency(state, state, {"old_tx_id": 1, "new_tx_id": 1, "path": []})


def test_one_proof_for_a_run_of_entries(ledger_dir):
    from kvcore import EntriesProof, verify_entries

    with Ledger.open(ledger_dir) as led:
        led.set(b"before", b"x")
        tx = led.set_all([(b"doc/%02d" % i, b"value %d" % i) for i in range(37)])
        led.set(b"after", b"y")
        state, at_tx = led.state(), led.state(tx)
        for start, count in [(0, 1), (5, 12), (0, 37), (36, 1), (17, 2)]:
            run = led.entries(tx, start, count)
            claim = [(e.key, e.value) for e in run]
            for st_ in (state, at_tx):
                proof = led.prove_entries(tx, range(start, start + count), state=st_)
                verify_entries(proof, claim, st_)
                back = EntriesProof.from_dict(json.loads(json.dumps(proof.to_dict())))
                verify_entries(back, claim, st_)
            proof = led.prove_entries(tx, range(start, start + count))
            assert len(proof.path) <= 2 * 6  # about 2 log2(37)
            forged = list(claim)
            forged[count // 2] = (forged[count // 2][0], b"forged")
            for bad_claim in (forged, claim[:-1], claim + [(b"doc/99", b"z")], claim[::-1] if count > 1 else [(b"x", b"y")]):
                with pytest.raises(VerificationError):
                    verify_entries(proof, bad_claim, state)
            with pytest.raises(VerificationError):
                verify_entries(proof, claim, at_tx)  # made for the newest state
            with pytest.raises(VerificationError):
                verify_entries(proof, claim, State(state.tx_id, flip_bit(state.root, 3)))
        # a scattered set works too
        picked = [0, 3, 4, 20, 36]
        proof = led.prove_entries(tx, picked)
        verify_entries(proof, [(b"doc/%02d" % i, b"value %d" % i) for i in picked], state)
        with pytest.raises(VerificationError):
            verify_entries(proof, [(b"doc/%02d" % i, b"value %d" % i) for i in [0, 3, 4, 21, 36]], state)


def test_a_proof_with_header_fields_out_of_range_fails_verification(tmp_path):
    with Ledger.open(tmp_path / "l") as led:
        led.set(b"a", b"1")
        state, proof = led.state(), led.prove_entry(b"a")
    for field, value in (("timestamp_ns", 2**64), ("tx_id", -1), ("n_entries", 2**40)):
        d = proof.to_dict()
        d["header"][field] = value
        try:
            forged = EntryProof.from_dict(d)
        except VerificationError:
            continue  # refused while parsing: as good
        with pytest.raises(VerificationError):
            verify_entry(forged, b"a", b"1", state)
    with pytest.raises(VerificationError):
        verify_consistency(None, state, ConsistencyProof(0, 1, []))
