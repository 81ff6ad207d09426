"""Optimistic transactions: snapshots, own writes, conflicts, and many threads at once."""

from __future__ import annotations

import threading

import pytest

from kvcore import ConflictError, KeyNotFoundError, KvError, Ledger

from kvcore_testlib import dir_snapshot


def test_reads_see_the_snapshot_plus_own_writes(led):
    led.set_all({b"a": b"1", b"b": b"2", b"gone": b"x"})
    t = led.transaction()
    assert t.snapshot == 1
    led.set(b"a", b"changed outside")  # after the snapshot: invisible to t
    led.set(b"new", b"outside")
    assert t.get(b"a").value == b"1"
    assert t.get(b"a").tx_id == 1
    assert not t.exists(b"new")
    t.set(b"b", b"mine")
    t.set(b"c", b"3")
    t.delete(b"gone")
    pending = t.get(b"b")
    assert (pending.value, pending.tx_id) == (b"mine", 0)
    assert t.get(b"c").value == b"3"
    with pytest.raises(KeyNotFoundError):
        t.get(b"gone")
    assert not t.exists(b"gone") and t.exists(b"c")
    with pytest.raises(KeyNotFoundError):
        t.delete(b"never")
    # nothing is visible outside before commit
    assert led.get(b"b").value == b"2"
    with pytest.raises(KeyNotFoundError):
        led.get(b"c")
    t.rollback()


def test_lookup_sees_own_writes_and_records_the_read(led):
    led.set(b"a", b"1")
    with led.transaction() as tx:
        assert tx.lookup(b"a").value == b"1" and tx.lookup(b"new") is None
        tx.set(b"new", b"x")
        assert tx.lookup(b"new").value == b"x"
        tx.delete(b"a")
        assert tx.lookup(b"a") is None
    racing = led.transaction()
    assert racing.lookup(b"fresh") is None  # a read of a missing key: a later insert conflicts
    led.set(b"fresh", b"someone else")
    racing.set(b"other", b"y")
    with pytest.raises(ConflictError):
        racing.commit()


def test_scan_merges_snapshot_with_own_writes(led):
    led.set_all({b"p/1": b"a", b"p/3": b"c", b"p/5": b"e", b"q": b"z"})
    t = led.transaction()
    led.set(b"p/2", b"outside")  # not in t's snapshot
    t.set(b"p/0", b"new-first")
    t.set(b"p/3", b"overwritten")
    t.set(b"p/4", b"new-middle")
    t.set(b"p/9", b"new-last")
    t.delete(b"p/5")
    t.set(b"o", b"outside the prefix")
    got = [(e.key, e.value, e.tx_id) for e in t.scan(b"p/")]
    assert got == [
        (b"p/0", b"new-first", 0),
        (b"p/1", b"a", 1),
        (b"p/3", b"overwritten", 0),
        (b"p/4", b"new-middle", 0),
        (b"p/9", b"new-last", 0),
    ]
    assert [e.key for e in t.scan()] == [b"o", b"p/0", b"p/1", b"p/3", b"p/4", b"p/9", b"q"]
    t.rollback()


def test_commit_writes_one_transaction(led, ledger_dir):
    led.set(b"x", b"0")
    with led.transaction() as t:
        t.set(b"a", b"1")
        t.set(b"b", b"2")
        t.delete(b"x")
    assert t.tx_id == 2 and led.tx_id == 2
    entries = led.tx(2).entries
    assert {(e.key, e.value, e.deleted) for e in entries} == {
        (b"a", b"1", False),
        (b"b", b"2", False),
        (b"x", b"", True),
    }
    # a finished transaction cannot be used again
    for call in (lambda: t.get(b"a"), lambda: t.set(b"a", b"v"), lambda: t.commit(), lambda: t.scan()):
        with pytest.raises(KvError):
            call()


def test_rollback_and_exceptions_write_nothing(led, ledger_dir):
    led.set(b"k", b"v")
    files = dir_snapshot(ledger_dir)
    t = led.transaction()
    t.set(b"k", b"other")
    t.rollback()
    with pytest.raises(RuntimeError):
        with led.transaction() as t2:
            t2.set(b"k", b"other")
            raise RuntimeError("abort")
    assert led.tx_id == 1 and led.get(b"k").value == b"v"
    assert dir_snapshot(ledger_dir) == files
    # a transaction that only reads commits to nothing
    with led.transaction() as t3:
        assert t3.get(b"k").value == b"v"
    assert t3.tx_id is None and led.tx_id == 1


def _conflict_leaves_nothing(led, ledger_dir, t):
    before_tx, files = led.tx_id, dir_snapshot(ledger_dir)
    with pytest.raises(ConflictError):
        t.commit()
    assert led.tx_id == before_tx
    assert dir_snapshot(ledger_dir) == files


def test_write_write_conflict(led, ledger_dir):
    led.set(b"k", b"0")
    t1, t2 = led.transaction(), led.transaction()
    t1.set(b"k", b"t1")
    t2.set(b"k", b"t2")
    assert t1.commit() == 2
    _conflict_leaves_nothing(led, ledger_dir, t2)
    assert led.get(b"k").value == b"t1"


def test_blind_write_conflicts_with_a_plain_set(led, ledger_dir):
    t = led.transaction()
    t.set(b"k", b"from t")
    led.set(b"k", b"plain")  # not through a transaction
    _conflict_leaves_nothing(led, ledger_dir, t)


def test_read_write_conflict(led, ledger_dir):
    led.set_all({b"balance": b"10", b"other": b"x"})
    t = led.transaction()
    seen = int(t.get(b"balance").value)
    led.set(b"balance", b"0")
    t.set(b"other", str(seen).encode())  # writes a different key than it read
    _conflict_leaves_nothing(led, ledger_dir, t)


def test_reading_a_missing_key_conflicts_with_its_creation(led, ledger_dir):
    t = led.transaction()
    assert not t.exists(b"flag")
    led.set(b"flag", b"up")
    t.set(b"action", b"because flag was down")
    _conflict_leaves_nothing(led, ledger_dir, t)


def test_read_of_deleted_key_conflicts(led, ledger_dir):
    led.set(b"k", b"v")
    t = led.transaction()
    assert t.get(b"k").value == b"v"
    led.delete(b"k")
    t.set(b"j", b"x")
    _conflict_leaves_nothing(led, ledger_dir, t)


def test_scan_conflicts_with_new_changed_or_deleted_keys_under_its_prefix(led, ledger_dir):
    led.set_all({b"p/1": b"a", b"p/2": b"b", b"q/1": b"c"})
    for outside_change in (
        lambda: led.set(b"p/3", b"new key"),
        lambda: led.set(b"p/1", b"changed"),
        lambda: led.delete(b"p/2"),
    ):
        t = led.transaction()
        total = len(list(t.scan(b"p/")))
        outside_change()
        t.set(b"summary", str(total).encode())
        _conflict_leaves_nothing(led, ledger_dir, t)


def test_changes_outside_what_was_read_do_not_conflict(led):
    led.set_all({b"p/1": b"a", b"q/1": b"b", b"k": b"c"})
    t = led.transaction()
    list(t.scan(b"p/"))
    t.get(b"k")
    led.set(b"q/2", b"elsewhere")
    led.set(b"pp", b"shares a byte with the prefix, but is not under it")
    t.set(b"r", b"ok")
    assert t.commit() == led.tx_id == 4


def test_disjoint_transactions_both_commit(led):
    t1, t2 = led.transaction(), led.transaction()
    t1.set(b"a", b"1")
    t2.set(b"b", b"2")
    assert t1.commit() == 1
    assert t2.commit() == 2
    assert led.get(b"a").value == b"1" and led.get(b"b").value == b"2"


def test_conflict_in_with_block_propagates(led):
    led.set(b"k", b"0")
    with pytest.raises(ConflictError):
        with led.transaction() as t:
            t.get(b"k")
            led.set(b"k", b"1")
            t.set(b"k", b"2")
    assert led.get(b"k").value == b"1"


def test_concurrent_increments_are_serializable(ledger_dir):
    threads_n, per_thread, counters = 8, 50, 3
    with Ledger.open(ledger_dir) as led:
        led.set_all({b"total": b"0", **{b"c%d" % i: b"0" for i in range(counters)}})
        commits = [0] * threads_n
        conflicts = [0] * threads_n
        errors: list[BaseException] = []
        start = threading.Barrier(threads_n)

        def worker(n: int) -> None:
            try:
                start.wait()
                for i in range(per_thread):
                    key = b"c%d" % ((n + i) % counters)
                    while True:
                        t = led.transaction()
                        t.set(key, str(int(t.get(key).value) + 1).encode())
                        t.set(b"total", str(int(t.get(b"total").value) + 1).encode())
                        try:
                            t.commit()
                            commits[n] += 1
                            break
                        except ConflictError:
                            conflicts[n] += 1
            except BaseException as e:
                errors.append(e)

        ths = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        assert not errors, errors
        assert commits == [per_thread] * threads_n
        total = threads_n * per_thread
        assert int(led.get(b"total").value) == total
        assert sum(int(led.get(b"c%d" % i).value) for i in range(counters)) == total
        # every increment of the total is its own revision: 0, 1, 2, ... total
        assert [int(e.value) for e in led.history(b"total")] == list(range(total + 1))
        assert led.tx_id == 1 + total  # conflicts wrote nothing
        assert led.audit().ok
    with Ledger.open(ledger_dir) as again:
        assert int(again.get(b"total").value) == total


def test_readers_never_see_a_transaction_in_part(led):
    n_keys, n_tx, n_readers = 40, 150, 3
    keys = [b"row/%03d" % i for i in range(n_keys)]
    led.set_all({k: b"0" for k in keys})
    done = threading.Event()
    errors: list[BaseException] = []
    reads = [0] * n_readers

    def writer() -> None:
        try:
            for v in range(1, n_tx + 1):
                value = str(v).encode()
                # a different order each time, so no prefix of the key order is "first"
                order = keys[v % n_keys :] + keys[: v % n_keys]
                led.set_all([(k, value) for k in order])
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    def reader(n: int) -> None:
        try:
            while not done.is_set() or reads[n] < 5:
                at = led.tx_id
                snap = [e.value for e in led.scan(b"row/", at_tx=at)]
                assert len(snap) == n_keys and len(set(snap)) == 1, (at, set(snap))
                assert int(snap[0]) == at - 1
                live = [e.value for e in led.scan(b"row/")]  # snapshot fixed at creation
                assert len(live) == n_keys and len(set(live)) == 1, set(live)
                point = {led.get(k, at_tx=at).value for k in keys[::7]}
                assert point == {snap[0]}
                t = led.transaction()
                in_tx = {t.get(k).value for k in keys[::5]} | {e.value for e in t.scan(b"row/")}
                assert len(in_tx) == 1, in_tx
                t.rollback()
                reads[n] += 1
        except BaseException as e:
            errors.append(e)

    ths = [threading.Thread(target=writer)] + [
        threading.Thread(target=reader, args=(n,)) for n in range(n_readers)
    ]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    assert not errors, errors[0]
    assert all(r >= 5 for r in reads)
    assert led.tx_id == n_tx + 1
    assert {e.value for e in led.scan(b"row/")} == {str(n_tx).encode()}


def test_set_many_keeps_order_and_blind_writes_skip_write_conflicts(led):
    t = led.transaction()
    t.set_many([(b"h", b"header")])
    t.set_many([(b"p1", b"one"), (b"p0", b"zero")], blind=True)
    led.set(b"p1", b"written by someone else")  # a blind write does not conflict with this
    tx_id = t.commit()
    assert [e.key for e in led.entries(tx_id)] == [b"h", b"p1", b"p0"]  # commit order kept
    assert led.get(b"p1").value == b"one"

    t2 = led.transaction()
    t2.set_many([(b"h", b"again")])  # a checked write does conflict
    led.set(b"h", b"changed meanwhile")
    with pytest.raises(ConflictError):
        t2.commit()

    t3 = led.transaction()
    t3.get(b"p0")  # a key read is checked even when its write is blind
    t3.set_many([(b"p0", b"new")], blind=True)
    led.set(b"p0", b"changed meanwhile")
    with pytest.raises(ConflictError):
        t3.commit()


def test_set_many_buffers_nothing_unless_every_pair_is_valid(tmp_path):
    from kvcore import InvalidInputError

    with Ledger.open(tmp_path) as led:
        t = led.transaction()
        with pytest.raises(InvalidInputError):
            t.set_many([(b"x1", b"1"), (b"x2", "not bytes")])
        for bad in ([b"k"], [1], [(bytearray(b"k"), 5)], [(b"k", b"v", b"w")]):
            with pytest.raises(InvalidInputError):
                t.set_many(bad)
        t.set_many([(bytearray(b"k"), b"v")])  # accepted as set() accepts it
        assert t.commit() == 1
        assert led.lookup(b"x1") is None and led.get(b"k").value == b"v"


def test_bad_arguments_anywhere_in_the_api_are_invalid_input_errors(tmp_path):
    from kvcore import ClosedError, InvalidInputError

    led = Ledger.open(tmp_path / "l")
    led.set_all({b"a": b"1", b"b": b"2"})
    t = led.transaction()
    calls = [
        lambda: led.entries(1, 0, "x"),
        lambda: led.set_all(5),
        lambda: led.set_all(None),
        lambda: led.set_all([1, 2]),
        lambda: led.prove_entries(1, ["a"]),
        lambda: led.prove_entries(1, None),
        lambda: Ledger.open(None),
        lambda: Ledger.open(tmp_path / "m", wait="x"),
        lambda: list(t.scan(bytearray(b"a"))),
        lambda: list(t.scan("a")),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError):
            call()
    assert t.commit() is None  # the refused scans were not recorded
    it = led.scan()
    led.close()
    with pytest.raises(ClosedError):
        list(it)
    assert not (tmp_path / "m").exists()
