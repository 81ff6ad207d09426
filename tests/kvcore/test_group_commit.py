"""Group commit (kvcore.Ledger.commit_many) on both backends: each request its own transaction,
checked in order against the ones before it, refused alone; one durable write for the group;
byte-identical to committing them one by one; nothing of the group if the write fails."""

from __future__ import annotations

import os
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvcore
from kvcore import CommitRequest, Ledger
from kvcore.errors import ConflictError, LimitError, StorageError


@pytest.fixture(params=["file", "postgres"])
def where(request, tmp_path):
    if request.param == "file":
        return str(tmp_path / "ledger")
    return request.getfixturevalue("pg_url")


def _tx(led: Ledger, writes: dict[bytes, bytes], reads: tuple[bytes, ...] = (), scan: bytes | None = None):
    tx = led.transaction()
    for k in reads:
        tx.lookup(k)
    if scan is not None:
        list(tx.scan(scan))
    for k, v in writes.items():
        tx.set(k, v)
    return tx


def test_each_request_is_its_own_transaction_and_refused_alone(where):
    with Ledger.open(where) as led:
        led.set(b"hot", b"0")
        a = _tx(led, {b"hot": b"a"}, reads=(b"hot",))
        b = _tx(led, {b"hot": b"b"}, reads=(b"hot",))  # same snapshot, same key: conflicts with a
        c = _tx(led, {b"cold": b"c"})
        d = _tx(led, {b"p/new": b"d"})
        e = _tx(led, {b"other": b"e"}, scan=b"p/")  # scanned a prefix d writes into: conflicts
        empty = CommitRequest([])
        outcomes = led.commit_many([a.request(), b.request(), c.request(), empty, d.request(), e.request()])
        assert outcomes[0] == 2 and outcomes[2] == 3 and outcomes[4] == 4
        assert isinstance(outcomes[1], ConflictError) and outcomes[1].key == b"hot"
        assert isinstance(outcomes[3], LimitError)
        assert isinstance(outcomes[5], ConflictError) and outcomes[5].key == b"p/"
        assert led.tx_id == 4
        assert led.get(b"hot").value == b"a" and led.get(b"cold").value == b"c"
        assert led.last_write(b"p/new") == 4
        state = led.state()
        assert led.audit().ok
    with Ledger.open(where) as again:
        assert again.state() == state


def test_a_refused_state_root_refuses_that_request_only(where):
    with Ledger.open(where) as led:
        seen: list[int] = []

        def root(tx_id: int, leaves) -> bytes:
            seen.append(tx_id)
            return bytes([tx_id]) * 32

        def bad(tx_id: int, leaves) -> bytes:
            raise ValueError("no root for you")

        outcomes = led.commit_many(
            [CommitRequest([(b"a", b"1")], state_root=root), CommitRequest([(b"b", b"2")], state_root=bad),
             CommitRequest([(b"c", b"3")], state_root=root)]
        )
        assert outcomes[0] == 1 and isinstance(outcomes[1], ValueError) and outcomes[2] == 2
        assert seen == [1, 2]  # the refused one's number went to the next
        assert led.header(2).state_root == bytes([2]) * 32
        assert led.lookup(b"b") is None
        assert led.audit().ok


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(groups=st.lists(st.lists(st.dictionaries(st.binary(min_size=1, max_size=4), st.binary(max_size=8),
                                                min_size=1, max_size=4), min_size=1, max_size=5),
                       min_size=1, max_size=5))
def test_a_group_is_byte_identical_to_one_by_one(tmp_path_factory, groups):
    """The same transactions committed in groups and one by one give the same roots (the
    timestamps aside, which are in the headers: so both ledgers take theirs from one clock)."""
    base = tmp_path_factory.mktemp("g")
    clock = iter(range(10**18, 10**18 + 10_000))
    real = kvcore.ledger.time.time_ns
    kvcore.ledger.time.time_ns = lambda: next(clock)  # type: ignore[attr-defined]
    try:
        with Ledger.open(str(base / "grouped")) as g:
            for group in groups:
                assert all(isinstance(o, int) for o in g.commit_many([CommitRequest(list(w.items())) for w in group]))
            grouped = g.state()
        clock = iter(range(10**18, 10**18 + 10_000))
        with Ledger.open(str(base / "single")) as s:
            for group in groups:
                for w in group:
                    s.commit(list(w.items()))
            assert s.state() == grouped
    finally:
        kvcore.ledger.time.time_ns = real  # type: ignore[attr-defined]


def test_a_failed_durable_write_commits_none_of_the_group(tmp_path):
    """The log file replaced under the writer: the group's one durable write fails, none of it
    is committed (in memory or on disk), and the ledger goes on from where it was."""
    path = str(tmp_path / "ledger")
    with Ledger.open(path) as led:
        led.set(b"a", b"1")
        before = led.state()
        log = os.path.join(path, "txlog")
        os.rename(log, log + ".moved")
        with pytest.raises(StorageError):
            led.commit_many([CommitRequest([(b"x", b"1")]), CommitRequest([(b"y", b"2")])])
        assert led.tx_id == 1 and led.state() == before and led.lookup(b"x") is None
        os.rename(log + ".moved", log)
        assert led.commit_many([CommitRequest([(b"x", b"1")])]) == [2]
        assert led.audit().ok
    with Ledger.open(path) as again:
        assert again.tx_id == 2 and again.lookup(b"y") is None


def test_threads_committing_in_groups_lose_nothing(where):
    """Threads each committing its own requests in groups of three, interleaved: every
    acknowledged transaction is there with its content, one chain."""
    with Ledger.open(where) as led:
        acks: dict[int, bytes] = {}
        lock = threading.Lock()

        def worker(t: int) -> None:
            for i in range(15):
                keys = [b"t%d/%d/%d" % (t, i, j) for j in range(3)]
                outs = led.commit_many([CommitRequest([(k, k)]) for k in keys])
                with lock:
                    for k, o in zip(keys, outs):
                        assert isinstance(o, int)
                        acks[o] = k

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert sorted(acks) == list(range(1, 4 * 15 * 3 + 1))
        for tx_id, key in acks.items():
            assert [(e.key, e.value) for e in led.entries(tx_id)] == [(key, key)]
        assert led.audit().ok


def test_a_group_aborted_by_a_callback_commits_none_of_it(where):
    """A state_root callback that raises GroupAborted (docstore's derived state could not follow
    the group): commit_many raises it, nothing of the group is committed, the ledger goes on."""
    with Ledger.open(where) as led:
        led.set(b"a", b"1")
        before = led.state()

        def breaks(tx_id: int, leaves) -> bytes:
            raise kvcore.GroupAborted("the caller's state is half-written")

        with pytest.raises(kvcore.GroupAborted):
            led.commit_many([CommitRequest([(b"x", b"1")]), CommitRequest([(b"y", b"2")], state_root=breaks),
                             CommitRequest([(b"z", b"3")])])
        assert led.state() == before and led.lookup(b"x") is None
        assert led.commit_many([CommitRequest([(b"x", b"1")])]) == [2]
        assert led.audit().ok
