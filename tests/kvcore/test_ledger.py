"""Ledger API behaviour on real directories: writes, reads, validation, reopening, processes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kvcore import (
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    ClosedError,
    ConsistencyProof,
    EntryProof,
    FormatError,
    InvalidInputError,
    KeyNotFoundError,
    KvError,
    Ledger,
    LimitError,
    LockedError,
    ReadOnlyError,
    State,
    TxNotFoundError,
    VerificationError,
    verify_consistency,
    verify_entry,
)
from kvcore.hashing import EMPTY_ROOT

from kvcore_testlib import dir_snapshot, expect_line, index_tx, open_recording, recovery_warnings


# ------------------------------------------------------------------- writes and reads
def test_new_ledger_is_empty(led):
    assert led.tx_id == 0
    assert led.state() == State(0, EMPTY_ROOT)
    assert list(led.scan()) == []
    with pytest.raises(KeyNotFoundError):
        led.get(b"k")
    assert led.history(b"k") == []


def test_set_returns_tx_and_get_sees_revisions(led):
    t1 = led.set(b"k", b"v1")
    t2 = led.set(b"other", b"x")
    t3 = led.set(b"k", b"v2")
    assert (t1, t2, t3) == (1, 2, 3)
    assert led.tx_id == 3
    e = led.get(b"k")
    assert (e.key, e.value, e.tx_id, e.revision, e.deleted, e.index) == (b"k", b"v2", 3, 2, False, 0)
    assert led.get(b"k", at_tx=2).value == b"v1"
    assert led.get(b"k", at_tx=1).revision == 1
    with pytest.raises(KeyNotFoundError):
        led.get(b"k", at_tx=0)
    with pytest.raises(KeyNotFoundError):
        led.get(b"other", at_tx=1)


def test_lookup_is_get_with_none_for_missing_or_deleted(led):
    led.set(b"k", b"v1")
    led.set(b"k", b"v2")
    led.delete(b"k")
    for at_tx in (None, 0, 1, 2, 3):
        try:
            expected = led.get(b"k", at_tx=at_tx)
        except KeyNotFoundError:
            expected = None
        assert led.lookup(b"k", at_tx=at_tx) == expected
    assert led.lookup(b"k", at_tx=2).value == b"v2" and led.lookup(b"k") is None
    assert led.lookup(b"never") is None and led.lookup(b"never", at_tx=1) is None
    with pytest.raises(TxNotFoundError):
        led.lookup(b"never", at_tx=99)
    with pytest.raises(InvalidInputError):
        led.lookup(b"")


def test_set_all_is_one_transaction_in_given_order(led):
    led.set(b"b", b"old")
    items = [(b"c", b"3"), (b"a", b"1"), (b"b", b"2")]
    tx = led.set_all(items)
    assert tx == 2
    t = led.tx(tx)
    assert t.header.n_entries == 3
    assert [(e.key, e.value, e.index) for e in t.entries] == [(b"c", b"3", 0), (b"a", b"1", 1), (b"b", b"2", 2)]
    assert [e.revision for e in t.entries] == [1, 1, 2]
    assert all(e.tx_id == tx for e in t.entries)
    # a mapping works too, and values may be empty
    tx2 = led.set_all({b"x": b"", b"y": b"\x00\xff"})
    assert led.get(b"x").value == b"" and led.get(b"y", at_tx=tx2).value == b"\x00\xff"
    # a key given twice is written once, with its last value
    tx3 = led.set_all([(b"d", b"first"), (b"d", b"second")])
    assert [(e.key, e.value) for e in led.tx(tx3).entries] == [(b"d", b"second")]


def test_entries_reads_a_run_of_a_transaction(led):
    tx = led.set_all({b"k%02d" % i: b"v%d" % i for i in range(20)})
    full = led.tx(tx).entries
    assert led.entries(tx) == list(full)
    for start, count in [(0, 1), (5, 7), (19, 1), (0, 20), (20, 0)]:
        assert led.entries(tx, start, count) == list(full[start : start + count])
    for start, count in [(-1, 2), (15, 6), (0, 21)]:
        with pytest.raises(InvalidInputError):
            led.entries(tx, start, count)
    with pytest.raises(TxNotFoundError):
        led.entries(tx + 1)


def test_delete_writes_a_tombstone_and_keeps_history(led):
    led.set(b"k", b"v1")
    t_del = led.delete(b"k")
    assert t_del == 2
    with pytest.raises(KeyNotFoundError):
        led.get(b"k")
    assert led.get(b"k", at_tx=1).value == b"v1"
    hist = led.history(b"k")
    assert [(e.value, e.tx_id, e.revision, e.deleted) for e in hist] == [
        (b"v1", 1, 1, False),
        (b"", 2, 2, True),
    ]
    # deleting again, or a key that never existed, fails and writes nothing
    for key in (b"k", b"never"):
        with pytest.raises(KeyNotFoundError):
            led.delete(key)
    assert led.tx_id == 2
    # the key can come back; revisions keep counting
    led.set(b"k", b"v3")
    assert led.get(b"k").revision == 3
    assert led.tx(2).entries[0].deleted


def test_history_pages(led):
    for i in range(10):
        led.set(b"k", b"v%d" % i)
        led.set(b"noise", b"n%d" % i)
    full = led.history(b"k")
    assert [e.value for e in full] == [b"v%d" % i for i in range(10)]
    assert [e.revision for e in full] == list(range(1, 11))
    assert [e.tx_id for e in full] == list(range(1, 20, 2))
    pages = []
    for offset in range(0, 10, 3):
        pages += led.history(b"k", offset=offset, limit=3)
    assert pages == full
    assert led.history(b"k", offset=8) == full[8:]
    assert led.history(b"k", offset=10) == []
    assert led.history(b"k", limit=0) == []
    with pytest.raises(InvalidInputError):
        led.history(b"k", offset=-1)
    with pytest.raises(InvalidInputError):
        led.history(b"k", limit=-1)


def _scan_keys(it):
    return [e.key for e in it]


def test_scan_order_prefix_snapshot_and_tombstones(led):
    t1 = led.set_all({b"b/2": b"x", b"a/1": b"x", b"b/1": b"x", b"b\xff": b"x", b"b/\x00": b"x", b"c": b"x"})
    t2 = led.set(b"b/1", b"y")
    t3 = led.delete(b"b/2")
    t4 = led.set(b"b/3", b"z")
    everything = [b"a/1", b"b/\x00", b"b/1", b"b/3", b"b\xff", b"c"]
    assert _scan_keys(led.scan()) == everything
    assert _scan_keys(led.scan(b"b/")) == [b"b/\x00", b"b/1", b"b/3"]
    assert _scan_keys(led.scan(b"b")) == [b"b/\x00", b"b/1", b"b/3", b"b\xff"]
    assert _scan_keys(led.scan(b"zzz")) == []
    # snapshots
    assert _scan_keys(led.scan(b"b/", at_tx=t1)) == [b"b/\x00", b"b/1", b"b/2"]
    assert _scan_keys(led.scan(b"b/", at_tx=t3)) == [b"b/\x00", b"b/1"]
    assert [e.value for e in led.scan(b"b/1", at_tx=t1)] == [b"x"]
    assert [(e.value, e.tx_id, e.revision) for e in led.scan(b"b/1", at_tx=t2)] == [(b"y", t2, 2)]
    assert _scan_keys(led.scan(at_tx=0)) == []
    assert _scan_keys(led.scan(b"b/", at_tx=t4)) == [b"b/\x00", b"b/1", b"b/3"]


def test_scan_start_after_and_limit(led):
    keys = [b"p/%04d" % i for i in range(0, 1400, 2)]  # more than one internal chunk
    led.set_all({k: k[::-1] for k in keys})
    led.set_all({b"o": b"before", b"q": b"after"})
    assert _scan_keys(led.scan(b"p/")) == keys
    assert all(e.value == e.key[::-1] for e in led.scan(b"p/"))
    # resume page by page
    pages, last = [], None
    while True:
        page = _scan_keys(led.scan(b"p/", start_after=last, limit=97))
        if not page:
            break
        assert len(page) <= 97
        pages += page
        last = page[-1]
    assert pages == keys
    assert _scan_keys(led.scan(b"p/", start_after=b"p/0101", limit=2)) == [b"p/0102", b"p/0104"]
    assert _scan_keys(led.scan(b"p/", start_after=b"a")) == keys  # before the prefix: ignored
    assert _scan_keys(led.scan(b"p/", start_after=b"p0")) == []  # after every key of the prefix
    assert _scan_keys(led.scan(limit=0)) == []
    assert _scan_keys(led.scan(limit=3)) == [b"o", b"p/0000", b"p/0002"]


def test_scan_iterator_keeps_its_snapshot(led):
    led.set_all({b"k%d" % i: b"old" for i in range(5)})
    it = led.scan(b"k")
    first = next(it)
    led.set_all({b"k%d" % i: b"new" for i in range(10)})
    rest = list(it)
    assert [e.value for e in [first, *rest]] == [b"old"] * 5


def test_tx_header_and_state(led):
    before = led.state()
    t1 = led.set_all({b"a": b"1", b"b": b"2"})
    t2 = led.set(b"a", b"3")
    h1, h2 = led.header(t1), led.header(t2)
    assert (h1.tx_id, h1.n_entries) == (1, 2)
    assert (h2.tx_id, h2.n_entries) == (2, 1)
    assert h1.timestamp_ns <= h2.timestamp_ns
    assert led.tx(t1).header == h1
    assert led.tx(t2).entries[0].revision == 2
    s1, s2 = led.state(1), led.state()
    assert s2 == led.state(2) and s2.tx_id == 2
    assert len({before.root, s1.root, s2.root}) == 3
    assert led.state(0) == before
    for bad in (0, 3, -1, "1", 1.0, None):
        with pytest.raises(TxNotFoundError):
            led.tx(bad)
        with pytest.raises(TxNotFoundError):
            led.header(bad)
    for bad in (3, -1, "1", 1.5):
        with pytest.raises(TxNotFoundError):
            led.state(bad)


# ------------------------------------------------------------------- validation
def _assert_rejected(led, ledger_dir, exc, call):
    before_tx, before_files = led.tx_id, dir_snapshot(ledger_dir)
    with pytest.raises(exc):
        call()
    assert led.tx_id == before_tx
    assert dir_snapshot(ledger_dir) == before_files


def test_bad_input_raises_and_writes_nothing(led, ledger_dir):
    led.set(b"k", b"v")
    big_key = b"k" * (MAX_KEY_BYTES + 1)
    cases = [
        (InvalidInputError, lambda: led.set("k", b"v")),
        (InvalidInputError, lambda: led.set(b"k", "v")),
        (InvalidInputError, lambda: led.set(1, b"v")),
        (InvalidInputError, lambda: led.set(b"k", None)),
        (InvalidInputError, lambda: led.set_all({"k": b"v"})),
        (InvalidInputError, lambda: led.set_all([(b"ok", b"v"), (b"k", 5)])),
        (InvalidInputError, lambda: led.delete("k")),
        (InvalidInputError, lambda: led.get("k")),
        (InvalidInputError, lambda: led.history("k")),
        (InvalidInputError, lambda: led.prove_entry("k")),
        (InvalidInputError, lambda: list(led.scan("k"))),
        (InvalidInputError, lambda: list(led.scan(b"k", start_after="k"))),
        (InvalidInputError, lambda: list(led.scan(b"k", limit=-1))),
        (LimitError, lambda: led.set(b"", b"v")),
        (LimitError, lambda: led.set(bytearray(), b"v")),
        (LimitError, lambda: led.set(big_key, b"v")),
        (LimitError, lambda: led.set(bytearray(big_key), b"v")),
        (LimitError, lambda: led.set(memoryview(big_key), b"v")),
        (LimitError, lambda: led.set_all({})),
        (LimitError, lambda: led.set_all([])),
        (LimitError, lambda: led.set_all([(b"fine", b"v"), (b"", b"v")])),
        (LimitError, lambda: led.set_all([(b"fine", b"v"), (big_key, b"v")])),
        (TxNotFoundError, lambda: led.get(b"k", at_tx=2)),
        (TxNotFoundError, lambda: led.get(b"k", at_tx=-1)),
        (TxNotFoundError, lambda: led.get(b"k", at_tx="1")),
        (TxNotFoundError, lambda: list(led.scan(at_tx=5))),
        (TxNotFoundError, lambda: led.prove_entry(b"k", 2)),
        (TxNotFoundError, lambda: led.prove_consistency(0, 9)),
        (KeyNotFoundError, lambda: led.delete(b"missing")),
        (KeyNotFoundError, lambda: led.prove_entry(b"missing")),
    ]
    for exc, call in cases:
        _assert_rejected(led, ledger_dir, exc, call)
    # every error is a KvError, and limit errors are also ValueErrors for callers that want that
    assert issubclass(LimitError, InvalidInputError) and issubclass(InvalidInputError, ValueError)
    assert issubclass(KeyNotFoundError, KeyError) and issubclass(KeyNotFoundError, KvError)


def test_oversize_value_is_rejected_and_writes_nothing(led, ledger_dir):
    led.set(b"k", b"v")
    too_big = bytes(MAX_VALUE_BYTES + 1)
    _assert_rejected(led, ledger_dir, LimitError, lambda: led.set(b"k", too_big))
    _assert_rejected(led, ledger_dir, LimitError, lambda: led.set(b"k", bytearray(too_big)))
    _assert_rejected(led, ledger_dir, LimitError, lambda: led.set_all({b"a": b"1", b"k": too_big}))


def test_sizes_at_the_limits_are_accepted(led):
    key = b"\xab" * MAX_KEY_BYTES
    led.set(key, b"")
    assert led.get(key).value == b""
    led.set(bytearray(b"ba"), memoryview(b"mv"))  # buffer types are taken as bytes
    assert led.get(b"ba").value == b"mv"


@pytest.mark.slow
def test_value_of_exactly_the_limit_is_accepted(led):
    value = os.urandom(64) * (MAX_VALUE_BYTES // 64)
    tx = led.set(b"big", value)
    assert led.get(b"big").value == value
    verify_entry(led.prove_entry(b"big", tx), b"big", value, led.state())


# ------------------------------------------------------------------- persistence
def _fill(led):
    led.set_all({b"user/%d" % i: b"name-%d" % i for i in range(30)})
    led.set(b"user/3", b"renamed")
    led.delete(b"user/4")
    with led.transaction() as t:
        t.set(b"counter", b"1")
        t.delete(b"user/5")
    for i in range(5):
        led.set(b"log", b"line %d" % i)


def _observe(led):
    """Everything the API shows about a ledger, for comparing two opens."""
    return {
        "tx_id": led.tx_id,
        "states": [led.state(i) for i in range(led.tx_id + 1)],
        "txs": [led.tx(i) for i in range(1, led.tx_id + 1)],
        "scan": [list(led.scan(at_tx=i)) for i in range(led.tx_id + 1)],
        "hist": {k: led.history(k) for k in (b"user/3", b"user/4", b"log", b"counter", b"none")},
    }


def test_reopen_persists_everything(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        _fill(led)
        before = _observe(led)
    assert (ledger_dir / "index.lmdb" / "data.mdb").is_file() and not (ledger_dir / "index.snap").exists()
    led2, caught = open_recording(ledger_dir)
    with led2:
        assert recovery_warnings(caught) == []
        assert led2.recovery_notes == []
        assert _observe(led2) == before
        assert led2.audit().ok
        # and it keeps going from where it was
        assert led2.set(b"after", b"reopen") == before["tx_id"] + 1
    with Ledger.open(ledger_dir) as led3:
        assert led3.get(b"after").tx_id == before["tx_id"] + 1


def test_reopen_without_the_key_index_rebuilds_it(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        _fill(led)
        before = _observe(led)
    shutil.rmtree(ledger_dir / "index.lmdb")
    led2, caught = open_recording(ledger_dir)
    with led2:
        assert [str(w.message) for w in recovery_warnings(caught)] == [
            "the key index is missing; rebuilt it from the log"
        ]
        assert _observe(led2) == before
    assert index_tx(ledger_dir) == before["tx_id"]


def test_an_old_index_snapshot_is_ignored_and_a_writer_deletes_it(ledger_dir):
    """index.snap (the in-memory index's snapshot of earlier versions) is neither read nor
    written any more."""
    with Ledger.open(ledger_dir) as led:
        _fill(led)
        before = _observe(led)
    (ledger_dir / "index.snap").write_bytes(b"IMKIDX02" + b"\x00" * 40)
    (ledger_dir / "index.snap.tmp").write_bytes(b"half")
    ro, caught = open_recording(ledger_dir, readonly=True)
    with ro:
        assert recovery_warnings(caught) == [] and _observe(ro) == before
    assert (ledger_dir / "index.snap").exists()
    led2, caught = open_recording(ledger_dir)
    with led2:
        assert recovery_warnings(caught) == [] and _observe(led2) == before
    assert not (ledger_dir / "index.snap").exists() and not (ledger_dir / "index.snap.tmp").exists()


def test_checkpoint_commits_what_the_index_lags_behind(ledger_dir):
    with Ledger.open(ledger_dir, index_lag=1000) as led:
        led.set(b"a", b"1")
        led.set(b"a", b"2")
        led.checkpoint()
        led.set(b"b", b"3")
        before = _observe(led)
    assert index_tx(ledger_dir) == 3  # close commits the rest
    with Ledger.open(ledger_dir) as led2:
        assert _observe(led2) == before


def test_directory_that_is_not_a_ledger_is_refused(tmp_path):
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("hello")
    with pytest.raises(FormatError):
        Ledger.open(foreign)
    assert sorted(os.listdir(foreign)) == ["notes.txt"]
    with pytest.raises(FormatError):
        Ledger.open(tmp_path / "missing", readonly=True)
    assert not (tmp_path / "missing").exists()
    newer = tmp_path / "newer"
    Ledger.open(newer).close()
    (newer / "FORMAT").write_text(json.dumps({"format": "immudoc-kvcore", "version": 99}))
    with pytest.raises(FormatError):
        Ledger.open(newer)


# ------------------------------------------------------------------- read-only and processes
def test_readonly_sees_data_refuses_writes_and_changes_nothing(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        _fill(led)
        before = _observe(led)
    files = dir_snapshot(ledger_dir)
    ro, caught = open_recording(ledger_dir, readonly=True)
    with ro:
        assert recovery_warnings(caught) == []
        assert ro.readonly
        assert _observe(ro) == before
        for call in (
            lambda: ro.set(b"k", b"v"),
            lambda: ro.set_all({b"k": b"v"}),
            lambda: ro.delete(b"log"),
        ):
            with pytest.raises(ReadOnlyError):
                call()
        t = ro.transaction()
        t.set(b"k", b"v")
        with pytest.raises(ReadOnlyError):
            t.commit()
        assert ro.tx_id == before["tx_id"]
        assert ro.audit().ok
        # proofs work read-only
        verify_entry(ro.prove_entry(b"log"), b"log", b"line 4", ro.state())
    assert dir_snapshot(ledger_dir) == files


def test_refresh_picks_up_a_writer_process(ledger_dir, server):
    with Ledger.open(ledger_dir) as led:
        led.set(b"first", b"1")
    child = server(ledger_dir)
    assert expect_line(child, "locked") == "locked 1"
    ro = Ledger.open(ledger_dir, readonly=True)
    try:
        assert ro.tx_id == 1
        child.stdin.write("set second 2\n")
        _, tx, root = expect_line(child, "tx ").split()
        assert ro.tx_id == 1  # not yet refreshed
        with pytest.raises(KeyNotFoundError):
            ro.get(b"second")
        assert ro.refresh() == int(tx) == 2
        assert ro.tx_id == 2
        assert ro.get(b"second").value == b"2"
        assert ro.state().root.hex() == root
        for i in range(3):
            child.stdin.write(f"set k{i} v{i}\n")
            _, tx, root = expect_line(child, "tx ").split()
        assert ro.refresh() == int(tx) == 5
        assert ro.state() == State(5, bytes.fromhex(root))
        assert [e.key for e in ro.scan(b"k")] == [b"k0", b"k1", b"k2"]
        proof = ro.prove_entry(b"k1")
        verify_entry(proof, b"k1", b"v1", State(5, bytes.fromhex(root)))
        verify_consistency(ro.state(2), ro.state(), ro.prove_consistency(2))
        assert ro.refresh() == 5  # nothing new
        child.stdin.write("close\n")
        expect_line(child, "closed")
        assert ro.audit().ok
    finally:
        ro.close()


def test_second_writer_gets_locked_error_naming_the_holder(ledger_dir, server):
    child = server(ledger_dir)
    expect_line(child, "locked")
    with pytest.raises(LockedError) as err:
        Ledger.open(ledger_dir)
    assert str(child.pid) in str(err.value)
    with pytest.raises(LockedError):
        Ledger.open(ledger_dir, wait=0.2)  # waits a little, then gives up
    # a reader is always welcome
    with Ledger.open(ledger_dir, readonly=True) as ro:
        assert ro.tx_id == 0
    child.stdin.write("set k v\n")
    expect_line(child, "tx 1 ")


def test_wait_blocks_until_the_holder_closes(ledger_dir, server):
    child = server(ledger_dir)
    expect_line(child, "locked")
    result = {}

    def opener():
        try:
            result["ledger"] = Ledger.open(ledger_dir, wait=120)
        except BaseException as e:  # reported through the assertion below
            result["error"] = e

    th = threading.Thread(target=opener)
    th.start()
    th.join(0.5)
    # the lock is still held, so the opener cannot have finished either way
    assert th.is_alive() and not result
    child.stdin.write("set k v\n")
    expect_line(child, "tx 1 ")
    child.stdin.write("close\n")
    expect_line(child, "closed")
    th.join(120)
    assert not th.is_alive()
    assert "error" not in result, result.get("error")
    with result["ledger"] as led:
        assert led.get(b"k").value == b"v"
        assert led.set(b"k", b"w") == 2


def test_killed_holder_releases_the_lock(ledger_dir, server):
    child = server(ledger_dir)
    expect_line(child, "locked")
    child.stdin.write("set k v\n")
    expect_line(child, "tx 1 ")
    with pytest.raises(LockedError):
        Ledger.open(ledger_dir)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(30)
    with Ledger.open(ledger_dir, wait=30) as led:
        assert led.get(b"k").value == b"v"
        assert led.audit().ok


def test_closing_releases_the_lock_in_process(ledger_dir):
    led = Ledger.open(ledger_dir)
    with pytest.raises(LockedError):
        Ledger.open(ledger_dir)  # even from the same process
    led.close()
    Ledger.open(ledger_dir).close()


# ------------------------------------------------------------------- closed
def test_closed_ledger_raises_closed_error(ledger_dir):
    led = Ledger.open(ledger_dir)
    led.set(b"k", b"v")
    # use everything once first, so nothing can be answered from a cache after closing
    led.header(1), led.tx(1), led.entries(1), led.state(), led.prove_entry(b"k"), led.get(b"k")
    led.close()
    assert led.closed
    led.close()  # closing twice is harmless
    calls = [
        lambda: led.get(b"k"),
        lambda: led.set(b"k", b"v"),
        lambda: led.set_all({b"k": b"v"}),
        lambda: led.delete(b"k"),
        lambda: led.history(b"k"),
        lambda: led.scan(),
        lambda: led.tx(1),
        lambda: led.header(1),
        lambda: led.entries(1),
        lambda: led.state(),
        lambda: led.prove_entry(b"k"),
        lambda: led.prove_entry_at(1, 0),
        lambda: led.prove_entries(1, [0]),
        lambda: led.find_and_prove(1, 0, 1, 1, b"k"),
        lambda: led.prove_consistency(0),
        lambda: led.audit(),
        lambda: led.transaction(),
        lambda: led.refresh(),
        lambda: led.checkpoint(),
    ]
    for call in calls:
        with pytest.raises(ClosedError):
            call()


def test_context_manager_closes(ledger_dir):
    with Ledger.open(ledger_dir) as led:
        led.set(b"k", b"v")
    assert led.closed
    with pytest.raises(ClosedError):
        led.get(b"k")


def test_transaction_on_closed_ledger_cannot_commit(ledger_dir):
    led = Ledger.open(ledger_dir)
    t = led.transaction()
    t.set(b"k", b"v")
    led.close()
    with pytest.raises(ClosedError):
        t.commit()
    with Ledger.open(ledger_dir) as again:
        assert again.tx_id == 0


# ------------------------------------------------------------------- JSON forms
def test_states_and_proofs_round_trip_through_json(led):
    led.set_all({b"a": b"1", b"b": b"2", b"c": b"3"})
    led.set(b"b", b"22")
    led.delete(b"c")
    old = led.state(1)
    now = led.state()
    for obj, cls in [
        (now, State),
        (old, State),
        (led.prove_entry(b"b", 1), EntryProof),
        (led.prove_entry(b"c"), EntryProof),
        (led.prove_entry(b"a", 1, state=old), EntryProof),
        (led.prove_consistency(1), ConsistencyProof),
        (led.prove_consistency(0, 2), ConsistencyProof),
    ]:
        text = json.dumps(obj.to_dict())
        back = cls.from_dict(json.loads(text))
        assert back == obj
        assert back.to_dict() == obj.to_dict()
    # what came back through JSON still verifies
    s = State.from_dict(json.loads(json.dumps(now.to_dict())))
    p = EntryProof.from_dict(json.loads(json.dumps(led.prove_entry(b"b").to_dict())))
    verify_entry(p, b"b", b"22", s)
    tomb = EntryProof.from_dict(json.loads(json.dumps(led.prove_entry(b"c").to_dict())))
    assert tomb.deleted
    verify_entry(tomb, b"c", None, s)
    c = ConsistencyProof.from_dict(json.loads(json.dumps(led.prove_consistency(1).to_dict())))
    verify_consistency(old, s, c)


def test_from_dict_rejects_malformed_input(led):
    led.set(b"a", b"1")
    good_state = led.state().to_dict()
    good_proof = led.prove_entry(b"a").to_dict()
    bad_states = [
        None,
        [],
        {},
        {**good_state, "tx_id": -1},
        {**good_state, "tx_id": "1"},
        {**good_state, "tx_id": True},
        {**good_state, "root": "zz"},
        {**good_state, "root": good_state["root"][:-2]},
    ]
    for d in bad_states:
        with pytest.raises(VerificationError):
            State.from_dict(d)
    bad_proofs = [
        {**good_proof, "deleted": "no"},
        {**good_proof, "entry_path": "abc"},
        {**good_proof, "tx_path": ["00"]},
        {**good_proof, "header": None},
        {**good_proof, "header": {**good_proof["header"], "entries_root": 5}},
        {**good_proof, "entry_index": 1.0},
    ]
    for d in bad_proofs:
        with pytest.raises(VerificationError):
            EntryProof.from_dict(d)
    with pytest.raises(VerificationError):
        ConsistencyProof.from_dict({"old_tx_id": 0, "new_tx_id": 1, "path": None})


# ------------------------------------------------------------------- model-based round trip
KEYS = st.sampled_from([b"a", b"b", b"ab", b"b\x00", b"c/1", b"c/2", b"\xff"])
VALUES = st.binary(max_size=12)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("set"), KEYS, VALUES),
        st.tuples(st.just("set_all"), st.dictionaries(KEYS, VALUES, min_size=1, max_size=5)),
        st.tuples(st.just("delete"), KEYS),
    ),
    min_size=1,
    max_size=14,
)


def _check_against_model(led, snapshots, histories):
    assert led.tx_id == len(snapshots) - 1
    for t, model in enumerate(snapshots):
        assert [(e.key, e.value) for e in led.scan(at_tx=t)] == sorted(model.items())
        for key in (b"a", b"b", b"ab", b"b\x00", b"c/1", b"c/2", b"\xff"):
            if key in model:
                assert led.get(key, at_tx=t).value == model[key]
            else:
                with pytest.raises(KeyNotFoundError):
                    led.get(key, at_tx=t)
    for key, revs in histories.items():
        got = led.history(key)
        assert [(e.value if not e.deleted else None, e.tx_id) for e in got] == revs
        assert [e.revision for e in got] == list(range(1, len(revs) + 1))
    assert [(e.key, e.value) for e in led.scan(b"c/")] == sorted(
        (k, v) for k, v in snapshots[-1].items() if k.startswith(b"c/")
    )


@settings(max_examples=40, deadline=None)
@given(OPS)
def test_random_operations_match_a_model_and_survive_reopen(ops):
    _model_round_trip(ops)


@pytest.mark.slow
@settings(max_examples=250, deadline=None)
@given(OPS)
def test_random_operations_match_a_model_and_survive_reopen_long(ops):
    _model_round_trip(ops)


def _model_round_trip(ops):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ledger"
        snapshots: list[dict[bytes, bytes]] = [{}]
        histories: dict[bytes, list] = {}
        with Ledger.open(path) as led:
            for op in ops:
                model = dict(snapshots[-1])
                if op[0] == "set":
                    _, k, v = op
                    tx = led.set(k, v)
                    model[k] = v
                    histories.setdefault(k, []).append((v, tx))
                elif op[0] == "set_all":
                    tx = led.set_all(op[1])
                    for k, v in op[1].items():
                        model[k] = v
                        histories.setdefault(k, []).append((v, tx))
                else:
                    k = op[1]
                    if k not in model:
                        with pytest.raises(KeyNotFoundError):
                            led.delete(k)
                        continue
                    tx = led.delete(k)
                    del model[k]
                    histories[k].append((None, tx))
                assert tx == len(snapshots)
                snapshots.append(model)
            _check_against_model(led, snapshots, histories)
            state = led.state()
        with Ledger.open(path) as led:
            assert led.state() == state
            _check_against_model(led, snapshots, histories)
            assert led.audit().ok
