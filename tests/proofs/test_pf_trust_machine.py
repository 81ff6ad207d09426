"""The trust tracker as a state machine: random sequences of honest growth, older states,
forks (signed by the real key or by a stranger), unsigned newer states and rollbacks, checked
against a model: the trusted state only ever moves forward along the honest history, only to
states the pinned key signed, and its state file always says so."""

from __future__ import annotations

import hashlib
import os
import tempfile

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

import kvcore
from docstore import VerificationError
from docstore.proofs import checkpoint as ckpt
from docstore.proofs.note import Signer
from docstore.proofs.trust import TrustTracker, read_trust_file
from kvcore.merkle import consistency_path, root_of

ORIGIN = "example.com/machine"


class Log:
    """A ledger's tree of leaf hashes: states and consistency proofs, as the RFC defines them."""

    def __init__(self, leaves: list[bytes]) -> None:
        self.leaves = leaves

    def state(self, n: int) -> kvcore.State:
        return kvcore.State(n, root_of(self.leaves[:n]))

    def proof(self, old: kvcore.State, new: kvcore.State) -> kvcore.ConsistencyProof:
        path = consistency_path(old.tx_id, new.tx_id, lambda lo, hi: root_of(self.leaves[lo:hi]))
        return kvcore.ConsistencyProof(old.tx_id, new.tx_id, path)


def _leaf(tag: str, i: int) -> bytes:
    return hashlib.sha256(f"{tag}/{i}".encode()).digest()


class TrustMachine(RuleBasedStateMachine):
    @initialize(start=st.integers(1, 5))
    def setup(self, start: int) -> None:
        self.key = Signer.generate(ORIGIN)
        self.stranger = Signer.generate(ORIGIN)
        self.honest = Log([_leaf("h", i) for i in range(start)])
        self.dir = tempfile.mkdtemp(prefix="trust-machine-")
        self.path = os.path.join(self.dir, "state.json")
        first = self.honest.state(start)
        self.tracker = TrustTracker(first, self.path, verifier_keys=[str(self.key.verifier)])
        self.model = first  # the newest honest state accepted

    # the source an attacker controls answers consistency questions from whichever log it serves
    def _fetch_from(self, log: Log):
        return lambda old, new: log.proof(old, new)

    @rule(k=st.integers(1, 4))
    def grow(self, k: int) -> None:
        n = len(self.honest.leaves)
        self.honest.leaves += [_leaf("h", n + i) for i in range(k)]

    @rule(data=st.data())
    def accept_a_signed_honest_state(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(1, len(self.honest.leaves)))
        s = self.honest.state(n)
        note = ckpt.sign(ORIGIN, s, [self.key])
        self.tracker.accept(s, note, self._fetch_from(self.honest))
        if n > self.model.tx_id:
            self.model = s

    @rule(data=st.data())
    def refuse_an_unsigned_or_strangers_newer_state(self, data: st.DataObject) -> None:
        n = len(self.honest.leaves)
        if n <= self.model.tx_id:
            return
        s = self.honest.state(data.draw(st.integers(self.model.tx_id + 1, n)))
        note = data.draw(st.sampled_from([None, ckpt.sign(ORIGIN, s, [self.stranger])]))
        with pytest.raises(VerificationError):
            self.tracker.accept(s, note, self._fetch_from(self.honest))

    @rule(data=st.data(), extra=st.integers(1, 4))
    def refuse_a_fork_even_if_the_key_signed_it(self, data: st.DataObject, extra: int) -> None:
        cut = data.draw(st.integers(0, self.model.tx_id - 1))
        fork = Log(self.honest.leaves[:cut] + [_leaf("f", i) for i in range(self.model.tx_id - cut + extra)])
        s = fork.state(len(fork.leaves))
        signer = data.draw(st.sampled_from([self.key, self.stranger]))
        with pytest.raises(VerificationError):
            self.tracker.accept(s, ckpt.sign(ORIGIN, s, [signer]), self._fetch_from(fork))

    @rule(data=st.data())
    def refuse_a_rewritten_or_rolled_back_state(self, data: st.DataObject) -> None:
        n = data.draw(st.integers(1, self.model.tx_id))
        rewritten = kvcore.State(n, hashlib.sha256(b"other" + bytes([n % 256])).digest())
        with pytest.raises(VerificationError):
            self.tracker.accept(rewritten, ckpt.sign(ORIGIN, rewritten, [self.key]), self._fetch_from(self.honest))
        if self.model.tx_id > 1:
            with pytest.raises(VerificationError, match="rolled back"):
                self.tracker.check_current(self.honest.state(self.model.tx_id - 1))

    @invariant()
    def the_trusted_state_is_the_newest_honest_signed_one_and_is_saved(self) -> None:
        if not hasattr(self, "tracker"):
            return
        assert self.tracker.state == self.model
        record = read_trust_file(self.path)
        assert record.state == self.model
        if record.checkpoint is not None:
            assert ckpt.open_checkpoint(record.checkpoint, [self.key.verifier]).state == self.model


TrustMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
test_trust_machine = TrustMachine.TestCase
