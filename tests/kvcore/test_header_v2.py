"""Header version 2 (docs/hashing.md): a transaction may commit to a state root computed by its
writer from the transaction id and the entries' leaf hashes. Version-1 and version-2 headers
mix in one ledger (both storage formats), every proof of either verifies, reopening and the
audit read both, and a callback that raises aborts the commit with nothing written."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kvcore import FileStorage, Ledger, TxHeader, VerificationError, verify_consistency, verify_entries, verify_entry
from kvcore.hashing import entry_leaf_hash
from kvcore.merkle import root_of


def _root_of_leaves(tx_id: int, leaves) -> bytes:
    """A state root a test can recompute: H(tx_id || MTH(leaves))."""
    return hashlib.sha256(tx_id.to_bytes(8, "big") + root_of(list(leaves))).digest()


@pytest.mark.parametrize("fmt", [1, 2])
def test_v1_and_v2_headers_mix_and_verify(tmp_path, fmt):
    path = tmp_path / "l"
    seen: list[tuple[int, list[bytes]]] = []

    def state_root(tx_id: int, leaves) -> bytes:
        seen.append((tx_id, list(leaves)))
        return _root_of_leaves(tx_id, leaves)

    with Ledger(FileStorage(path, format_version=fmt)) as led:
        t1 = led.commit([(b"a", b"1"), (b"b", b"2")])
        t2 = led.commit([(b"a", b"3"), (b"c", None), (b"d", b"")], state_root=state_root)
        t3 = led.commit([(b"e", b"5")])
        assert seen == [(t2, [entry_leaf_hash(0, b"a", b"3"), entry_leaf_hash(1, b"c", b""), entry_leaf_hash(0, b"d", b"")])]
        h1, h2, h3 = led.header(t1), led.header(t2), led.header(t3)
        assert h1.state_root is None and h3.state_root is None
        assert h2.state_root == _root_of_leaves(t2, seen[0][1])
        assert len(h2.encode()) == 85 and h2.encode()[0] == 2 and len(h1.encode()) == 53
        state = led.state()
        verify_entry(led.prove_entry(b"a"), b"a", b"3", state)
        verify_entry(led.prove_entry(b"d"), b"d", b"", state)
        verify_entry(led.prove_entry(b"e"), b"e", b"5", state)
        verify_entries(led.prove_entries(t2, range(0, 3), state), [(b"a", b"3"), (b"c", None), (b"d", b"")], state)
        old = led.state(t1)
        verify_consistency(old, state, led.prove_consistency(t1))
        assert [e.key for e in led.tx(t2).entries] == [b"a", b"c", b"d"]
        assert led.tx(t2).header == h2
    with Ledger.open(path) as led:  # reopened: headers, tree and index read both versions
        assert led.header(t2) == h2 and led.state() == state
        assert led.get(b"d").value == b"" and led.get(b"a").value == b"3"
        assert led.audit().ok
        # a forged state root in a claimed header breaks the proof
        proof = led.prove_entry(b"a")
        forged = proof._replace(header=proof.header._replace(state_root=b"\x00" * 32))
        with pytest.raises(VerificationError):
            verify_entry(forged, b"a", b"3", state)
        dropped = proof._replace(header=proof.header._replace(state_root=None))
        with pytest.raises(VerificationError):
            verify_entry(dropped, b"a", b"3", state)


def test_a_raising_state_root_aborts_the_commit(tmp_path):
    with Ledger.open(tmp_path / "l") as led:
        led.set(b"a", b"1")
        before = led.state()

        def refuse(_tx: int, _leaves) -> bytes:
            raise RuntimeError("no")

        with pytest.raises(RuntimeError):
            led.commit([(b"a", b"2")], state_root=refuse)
        with pytest.raises(ValueError):
            led.commit([(b"a", b"2")], state_root=lambda _t, _l: b"short")
        assert led.state() == before and led.get(b"a").value == b"1"
        led.commit([(b"a", b"3")], state_root=_root_of_leaves)
        assert led.get(b"a").value == b"3" and led.tx_id == 2
    with Ledger.open(tmp_path / "l") as led:
        assert led.tx_id == 2 and led.audit().ok


def test_header_json_round_trips_and_is_strict():
    h = TxHeader(7, 123, 2, b"\x01" * 32, b"\x02" * 32)
    d = h.to_dict()
    assert d["state_root"] == "02" * 32 and TxHeader.from_dict(d) == h
    v1 = h._replace(state_root=None)
    assert "state_root" not in v1.to_dict() and TxHeader.from_dict(v1.to_dict()) == v1
    for bad in ({**d, "state_root": "zz"}, {**d, "state_root": "00"}, {**d, "extra": 1}):
        with pytest.raises(VerificationError):
            TxHeader.from_dict(bad)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    txs=st.lists(
        st.tuples(st.booleans(), st.dictionaries(st.binary(min_size=1, max_size=8), st.one_of(st.none(), st.binary(max_size=20)), min_size=1, max_size=20)),
        min_size=1,
        max_size=6,
    )
)
def test_mixed_versions_reopen_to_the_same_state(tmp_path_factory, txs):
    path = tmp_path_factory.mktemp("mix") / "l"
    with Ledger.open(path) as led:
        for v2, writes in txs:
            led.commit(list(writes.items()), state_root=_root_of_leaves if v2 else None)
        state = led.state()
        headers = [led.header(t) for t in range(1, led.tx_id + 1)]
    assert [h.state_root is not None for h in headers] == [v2 for v2, _w in txs]
    with Ledger.open(path, readonly=True) as led:
        assert led.state() == state
        assert [led.header(t) for t in range(1, led.tx_id + 1)] == headers
