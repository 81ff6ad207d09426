"""Crash safety with real processes and real damage to real files.

A writer child process is SIGKILLed at random moments; afterwards every acknowledged commit
must be there in full, no commit may be visible in part, and the ledger must audit clean.
Torn writes are simulated byte by byte at the end of the log, and derived files are cut
short or damaged: the ledger must recover to the last whole transaction, or rebuild.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvcore import KvError, Ledger, RecoveryWarning
from kvcore.storage import FileStorage
from kvcore.tree import node_count

from kvcore_testlib import (
    INDEX_FILES,
    WRITER_SCRIPT,
    child_env,
    index_tx,
    ledger_files,
    open_recording,
    overwrite_file,
    parse_txlog,
    recovery_warnings,
    stop,
    tx_content,
    xor_byte,
)

TESTLIB_DIR = str(Path(__file__).resolve().parent)


# ------------------------------------------------------------------- SIGKILL
def _check_ledger(led: Ledger, acked: dict[int, int], checked_upto: int) -> int:
    """Check acknowledged and unacknowledged transactions; return the count checked."""
    assert led.tx_id >= max(acked, default=0), "an acknowledged commit was lost"
    for tx_id, seed in acked.items():
        if tx_id > checked_upto:
            assert led.entries(tx_id)[0].value == b"%d" % seed
    for tx_id in range(checked_upto + 1, led.tx_id + 1):
        entries = led.tx(tx_id).entries
        # whatever the transaction (acknowledged or not), it is whole: everything its seed implies
        assert entries[0].key == b"meta", tx_id
        seed = int(entries[0].value)
        if tx_id in acked:
            assert seed == acked[tx_id]
        assert [(e.key, e.value) for e in entries] == tx_content(seed), tx_id
        assert led.header(tx_id).n_entries == len(entries)
    return led.tx_id


def _kill_loop(tmp_path: Path, kills: int, seed: int) -> None:
    rng = random.Random(seed)
    script = tmp_path / "crash_writer.py"
    script.write_text(WRITER_SCRIPT)
    path = tmp_path / "ledger"
    acked: dict[int, int] = {}
    checked = 0
    warned = 0
    for round_no in range(kills):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(rng.getrandbits(32)), TESTLIB_DIR],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
        )
        try:
            # let it acknowledge a random number of commits (0: kill it while it opens)
            want = rng.choice([0, 1, 1, 2, 3, 5, 8])
            lines = []
            if want:
                first = proc.stdout.readline()
                assert first.startswith("open "), (first, proc.stderr.read() if proc.poll() is not None else "")
                assert int(first.split()[1]) >= max(acked, default=0)
                while len(lines) < want:
                    line = proc.stdout.readline()
                    assert line.startswith("ack "), (line, proc.stderr.read() if not line else "")
                    lines.append(line)
            time.sleep(rng.random() * 0.004)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            assert proc.returncode == -signal.SIGKILL, proc.stderr.read()
            # lines it printed before dying are acknowledgements too
            lines += [ln for ln in proc.stdout.read().splitlines(keepends=True) if ln.endswith("\n")]
        finally:
            stop(proc)
        for line in lines:
            if line.startswith("ack "):
                _, tx, s = line.split()
                assert int(tx) not in acked
                acked[int(tx)] = int(s)
        if not path.exists():
            continue  # killed before it created anything
        led, caught = open_recording(path)
        with led:
            warned += bool(recovery_warnings(caught))
            checked = _check_ledger(led, acked, checked)
            if round_no % 5 == 4 or round_no == kills - 1:
                report = led.audit()
                assert report.ok, str(report)
                assert report.tx_count == led.tx_id
    # finally: everything acknowledged is still there, and the ledger takes new writes
    assert acked, "the writer never got to commit anything"
    with Ledger.open(path) as led:
        _check_ledger(led, acked, 0)
        assert led.audit().ok
        n = led.tx_id
        assert led.set(b"after-the-crashes", b"ok") == n + 1
    with Ledger.open(path) as led:
        assert led.get(b"after-the-crashes").tx_id == n + 1
        assert led.audit().ok


def test_sigkill_never_loses_an_acknowledged_commit(tmp_path):
    _kill_loop(tmp_path, kills=24, seed=20240611)


@pytest.mark.slow
def test_sigkill_many_times(tmp_path):
    _kill_loop(tmp_path, kills=120, seed=7)


# ------------------------------------------------------------------- torn writes
def _make_ledger(path: Path) -> list:
    """A small ledger whose last record is small; returns the scan at every state."""
    with Ledger.open(path) as led:
        led.set_all({b"a/%d" % i: b"x" * i for i in range(9)})
        led.set(b"a/3", b"changed")
        led.delete(b"a/4")
        led.set_all({b"b/%d" % i: os.urandom(5) for i in range(4)})
        led.set_all({b"c": b"last", b"a/5": b""})
        return [
            (led.state(t), list(led.scan(at_tx=t)), [led.tx(i) for i in range(1, t + 1)])
            for t in range(led.tx_id + 1)
        ]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("torn") / "pristine"
    views = _make_ledger(path)
    return path, views


class _Workdir:
    """``tmp_path/work``, reset to the pristine ledger before each trial.

    Files are rewritten in place from bytes read once (FORMAT never changes; LOCK only
    holds our pid), which keeps hundreds of trials cheap on a slow disk.
    """

    RESET = ("txlog", "txindex", "tree", *INDEX_FILES)

    def __init__(self, pristine_path: Path, tmp_path: Path) -> None:
        self.path = tmp_path / "work"
        shutil.copytree(pristine_path, self.path)
        self.files = {name: (pristine_path / name).read_bytes() for name in self.RESET}

    def reset(self) -> Path:
        for extra in ("index.lmdb.new", "index.lmdb.old"):
            shutil.rmtree(self.path / extra, ignore_errors=True)
        (self.path / "index.lmdb").mkdir(exist_ok=True)
        for name, data in self.files.items():
            overwrite_file(self.path / name, data)
        return self.path


def _assert_view(led: Ledger, view) -> None:
    state, scan, txs = view
    assert led.tx_id == state.tx_id
    assert led.state() == state
    assert list(led.scan()) == scan
    assert [led.tx(i) for i in range(1, led.tx_id + 1)] == txs


@pytest.mark.parametrize("damage", ["truncate", "garble"])
def test_torn_last_record_recovers_to_the_previous_transaction(pristine, tmp_path, damage):
    src, views = pristine
    n = len(views) - 1
    last = parse_txlog(src / "txlog")[-1]
    assert last.tx_id == n and last.end == (src / "txlog").stat().st_size
    rng = random.Random(5)
    # every offset is opened and audited; a sample is also written to and reopened
    sample = set(range(last.start, last.end, 11)) | {last.start, last.start + 1, last.end - 1}
    workdir = _Workdir(src, tmp_path)
    for offset in range(last.start, last.end):
        work = workdir.reset()
        log = work / "txlog"
        # a torn record was never acknowledged, so txindex (written after the record is
        # durable) does not list it; a listed record cut short is lost data (test_tamper)
        index = work / "txindex"
        os.truncate(index, min(index.stat().st_size, (n - 1) * 16))
        if damage == "truncate":
            os.truncate(log, offset)
        else:
            data = bytearray(log.read_bytes())
            for i in range(offset, len(data)):
                data[i] ^= rng.randrange(1, 256)
            log.write_bytes(bytes(data))
        # garbled tails are also opened read-only (every other offset): same view, no repair
        readonly = damage == "garble" and offset % 2 == 1 and offset not in sample
        size_before = log.stat().st_size
        with pytest.warns(RecoveryWarning):
            led = Ledger.open(work, readonly=readonly)
        with led:
            assert led.recovery_notes, offset
            if offset > last.start or damage == "garble":
                assert any("torn" in note for note in led.recovery_notes), led.recovery_notes
            _assert_view(led, views[n - 1])
            assert led.audit().ok
            if readonly:
                assert log.stat().st_size == size_before  # a reader repairs nothing
                continue
            assert log.stat().st_size == last.start  # the torn tail is gone from disk
            if offset not in sample:
                continue
            assert led.set(b"new", b"after recovery") == n
        led2, caught = open_recording(work)
        with led2:
            assert recovery_warnings(caught) == [], offset  # the repair was persisted
            assert led2.get(b"new").tx_id == n
            assert led2.audit().ok


@pytest.mark.parametrize("name", ["txindex", "tree"])
def test_cut_derived_files_are_rebuilt(pristine, tmp_path, name):
    src, views = pristine
    n = len(views) - 1
    original = (src / name).read_bytes()
    sizes = {"txindex": 16 * n, "tree": 32 * node_count(n)}
    assert len(original) == sizes[name]
    if name == "txindex":
        cuts = range(len(original))
    else:  # at and inside every node
        cuts = sorted({c for node in range(0, len(original), 32) for c in (node, node + 1, node + 17)})
    workdir = _Workdir(src, tmp_path)
    for cut in [None, *cuts]:  # None: the file is missing altogether
        work = workdir.reset()
        if cut is None:
            (work / name).unlink()
        else:
            os.truncate(work / name, cut)
        led, _caught = open_recording(work)
        with led:
            _assert_view(led, views[n])
            assert led.audit().ok
            # rebuilt at open, byte for byte what it was
            assert (work / name).read_bytes() == original, (name, cut)


def test_close_leaves_the_index_for_an_open_without_the_log(tmp_path, monkeypatch):
    """The key index is on disk: a clean reopen reads no transaction of the log."""
    path = tmp_path / "ledger"
    with Ledger.open(path) as led:
        for i in range(50):
            led.set(b"k%d" % (i % 7), b"v%d" % i)
        n = led.tx_id
    assert index_tx(path) == n and not (path / "index.snap").exists()
    scans = []
    real = FileStorage.scan

    def counting(self, first_tx=1):
        scans.append(first_tx)
        return real(self, first_tx)

    monkeypatch.setattr(FileStorage, "scan", counting)
    for readonly in (False, True):
        led, caught = open_recording(path, readonly=readonly)
        with led:
            assert recovery_warnings(caught) == [] and scans == []
            assert led.get(b"k0").value == b"v49"
            assert [e.value for e in led.history(b"k0")][-1] == b"v49"
            assert [e.key for e in led.scan()] == sorted(b"k%d" % i for i in range(7))
    assert scans == []


def test_readonly_open_of_a_torn_log_repairs_nothing(pristine, tmp_path):
    src, views = pristine
    n = len(views) - 1
    last = parse_txlog(src / "txlog")[-1]
    work = _Workdir(src, tmp_path).reset()
    os.truncate(work / "txlog", last.start + 5)
    os.truncate(work / "txindex", (n - 1) * 16)  # a torn record is not listed (never acknowledged)
    before = ledger_files(work)
    with pytest.warns(RecoveryWarning):
        ro = Ledger.open(work, readonly=True)
    with ro:
        _assert_view(ro, views[n - 1])
        # the key index reflects the torn transaction: the reader reads without it
        assert any("reflects transaction" in note and "in-memory" in note for note in ro.recovery_notes)
    assert ledger_files(work) == before
    with pytest.warns(RecoveryWarning):
        led = Ledger.open(work)
    with led:
        assert any("key index reflects transaction" in note and "rebuilt" in note for note in led.recovery_notes)
        _assert_view(led, views[n - 1])
    assert index_tx(work) == n - 1


def test_damage_before_a_valid_record_is_not_mistaken_for_a_torn_tail(pristine, tmp_path):
    src, views = pristine
    records = parse_txlog(src / "txlog")
    work = _Workdir(src, tmp_path).reset()
    (work / "txindex").unlink()  # force a rescan of the whole log
    xor_byte(work / "txlog", records[-2].payload_start + 3)  # inside the second-to-last record
    with pytest.raises(KvError) as err:
        Ledger.open(work)
    assert type(err.value).__name__ == "CorruptionError"
    # nothing was discarded: the last (valid) record is still on disk
    assert (work / "txlog").stat().st_size == records[-1].end
