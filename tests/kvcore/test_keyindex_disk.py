"""The key index on disk (``index.lmdb``, docs/storage.md): opened without reading the log,
caught up from the log after a crash, rebuilt when damaged, read by other processes while a
writer commits, checked by the audit in bounded memory, and the unindexed-prefix policy.

Real files and real processes throughout; the index is inspected with LMDB itself as
docs/storage.md describes it (kvcore_testlib), never through kvcore's own index code.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kvcore import (
    InvalidInputError,
    KeyNotFoundError,
    Ledger,
    RecoveryWarning,
    verify_entries,
    verify_entry,
)
from kvcore.storage import FileStorage

from kvcore_testlib import (
    change_index,
    child_env,
    index_row,
    index_tx,
    ledger_files,
    open_recording,
    read_index,
    recovery_warnings,
    stop,
    xor_byte,
)

TESTLIB_DIR = str(Path(__file__).resolve().parent)
U64 = 8


def _notes(caught) -> list[str]:
    return [str(w.message) for w in recovery_warnings(caught)]


@pytest.fixture
def scans(monkeypatch):
    """The first transaction of every scan of the log (Storage.scan) made while it is in use."""
    calls: list[int] = []
    real = FileStorage.scan

    def counting(self, first_tx=1):
        calls.append(first_tx)
        return real(self, first_tx)

    monkeypatch.setattr(FileStorage, "scan", counting)
    return calls


def _fill(path: Path, n_tx: int = 30, seed: int = 1) -> dict:
    """A ledger with overwrites, deletes and keys that share prefixes; returns its model."""
    rng = random.Random(seed)
    model: dict[bytes, list[tuple[int, bytes | None]]] = {}
    keys = [b"k/%02d" % i for i in range(12)] + [b"k", b"k/", b"k/00\x00x", b"\x00", b"\xff\xff", b"z" * 700]
    with Ledger.open(path) as led:
        for _ in range(n_tx):
            writes = {}
            for key in rng.sample(keys, rng.randint(1, 5)):
                writes[key] = b"v%d" % rng.getrandbits(20)
            tx = led.set_all(writes)
            for k, v in writes.items():
                model.setdefault(k, []).append((tx, v))
            live = [k for k, revs in model.items() if revs[-1][1] is not None]
            if rng.random() < 0.3 and live:
                k = rng.choice(live)
                tx = led.delete(k)
                model[k].append((tx, None))
    return model


def _check_model(led: Ledger, model: dict) -> None:
    """Every read by key agrees with the model, now and as of a few past transactions."""
    n = led.tx_id
    for at in sorted({n, n // 2, 1}):
        live = {}
        for k, revs in model.items():
            seen = [(t, v) for t, v in revs if t <= at]
            if seen and seen[-1][1] is not None:
                live[k] = (seen[-1][1], len(seen))
        got = {e.key: (e.value, e.revision) for e in led.scan(at_tx=at)}
        assert got == live, at
        assert [e.key for e in led.scan(at_tx=at)] == sorted(live)
        for k in model:
            e = led.lookup(k, at_tx=at)
            assert (None if e is None else (e.value, e.revision)) == live.get(k), (k, at)
    for k, revs in model.items():
        assert [(e.tx_id, None if e.deleted else e.value) for e in led.history(k)] == revs


# ------------------------------------------------------------------ open without the log
def test_a_clean_reopen_reads_no_transaction_of_the_log(tmp_path, scans):
    path = tmp_path / "led"
    model = _fill(path)
    scans.clear()
    for readonly in (False, True, False):
        led, caught = open_recording(path, readonly=readonly)
        with led:
            assert _notes(caught) == [] and scans == [], (readonly, scans)
            _check_model(led, model)
            scans.clear()
    meta, rows = read_index(path)
    assert int.from_bytes(meta[b"tx"], "big") == led.tx_id
    assert int.from_bytes(meta[b"rows"], "big") == len(rows) == sum(len(r) for r in model.values())
    assert meta[b"format"] == b"immudoc-keyindex 1" and meta[b"policy"] == b""


def test_rows_are_spelled_as_the_format_says(tmp_path):
    path = tmp_path / "led"
    long_key = b"L" * 1024
    with Ledger.open(path) as led:
        led.set_all({b"a\x00b": b"1", b"a": b"2"})
        led.set(b"a", b"3")
        led.set(long_key, b"4")
        where = {(e.key, e.tx_id): e for t in (1, 2, 3) for e in led.tx(t).entries}
    _meta, rows = read_index(path)
    by_row = dict(rows)
    assert list(by_row) == [r for r, _v in rows] == sorted(by_row)

    def position(key, tx):  # the entry's byte position in its transaction's payload
        e = where[(key, tx)]
        with Ledger.open(path, readonly=True) as ro:
            return ro.prove_entry(key, tx).entry_index, e.index

    # short keys: 0x00 escaped as 0x00 0xFF, a 0x00 terminator, then the 15-byte location;
    # the value is the revision number
    expected = []
    for key, tx, rev in ((b"a", 1, 1), (b"a", 2, 2), (b"a\x00b", 1, 1)):
        match = [r for r in by_row if r[:-15] == key.replace(b"\x00", b"\x00\xff") + b"\x00"
                 and int.from_bytes(r[-15:-7], "big") == tx]
        assert len(match) == 1 and by_row[match[0]] == bytes([rev]), (key, tx)
        assert int.from_bytes(match[0][-7:-4], "big") == where[(key, tx)].index
        expected.append(match[0])
    assert expected == sorted(expected)  # a's revisions, in transaction order, before a\x00b's
    # a long key: 463 bytes of its escaped form, 0xFF, sha256(key), the location; the value is
    # the revision (u64) then the key
    import hashlib

    long_rows = [r for r in by_row if len(r) == 511]
    assert len(long_rows) == 1 and by_row[long_rows[0]] == (1).to_bytes(8, "big") + long_key
    assert long_rows[0][:464] == long_key[:463] + b"\xff"
    assert long_rows[0][464:496] == hashlib.sha256(long_key).digest()
    assert int.from_bytes(long_rows[0][-15:-7], "big") == 3
    assert position(b"a", 2)[0] == position(b"a", 2)[1]


# ------------------------------------------------------------------- crashes
KILL_BEFORE_INDEX = r'''
import os, signal, sys
from kvcore import Ledger
import kvcore.keystore

led = Ledger.open(sys.argv[1], index_lag=0)
for i in range(5):
    led.set_all({b"k%d" % i: b"v%d" % i, b"common": b"%d" % i})
print("committed", led.tx_id, flush=True)

def die(*a, **k):  # the log record is durable (fdatasync): die before the index's commit
    os.kill(os.getpid(), signal.SIGKILL)

kvcore.keystore.KeyStore.append = die
led.set_all({b"k-last": b"durable", b"common": b"last"})
print("not reached", flush=True)
'''


def test_a_writer_killed_between_the_log_fsync_and_the_index_commit(tmp_path, scans):
    path = tmp_path / "led"
    child = subprocess.run(
        [sys.executable, "-c", KILL_BEFORE_INDEX, str(path)], capture_output=True, text=True, env=child_env(), timeout=60
    )
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert child.stdout.split() == ["committed", "5"]
    assert index_tx(path) == 5  # never ahead of the log: the sixth transaction is not in it
    scans.clear()
    led, caught = open_recording(path, readonly=True)
    with led:  # a reader reads the tail from the log into memory
        assert _notes(caught) == [] and scans == [6]
        assert led.get(b"k-last").value == b"durable" and led.get(b"common").revision == 6
    scans.clear()
    led, caught = open_recording(path)
    with led:  # the writer catches the index up: the tail only, no rebuild
        assert _notes(caught) == [] and scans == [6]
        assert led.tx_id == 6 and led.get(b"common").value == b"last"
        assert [e.value for e in led.history(b"common")] == [b"0", b"1", b"2", b"3", b"4", b"last"]
        assert led.audit().ok
    assert index_tx(path) == 6


LAGGING_WRITER = r'''
import random, sys
from kvcore import Ledger

rng = random.Random(int(sys.argv[2]))
led = Ledger.open(sys.argv[1], wait=60, index_lag=int(sys.argv[3]))
print("open", led.tx_id, flush=True)
while True:
    n = rng.choice([1, 1, 2, 5, 40])
    tx = led.tx_id + 1
    writes = {b"key/%03d" % rng.randrange(300): b"%d" % tx for _ in range(n)}
    writes[b"last"] = b"%d" % tx
    assert led.set_all(writes) == tx
    print("ack", tx, flush=True)
    if rng.random() < 0.05:
        led.checkpoint()
'''


@pytest.mark.parametrize("lag", [0, 64])
def test_writers_killed_at_random_moments_leave_an_index_the_log_catches_up(tmp_path, lag):
    """kill -9 anywhere: in the log's write, between it and the index's commit, inside LMDB's
    commit. The index is never ahead of the log (no rebuild is ever needed), and opening
    catches it up from the log."""
    path = tmp_path / "led"
    rng = random.Random(lag)
    acked = 0
    for round_no in range(12):
        proc = subprocess.Popen(
            [sys.executable, "-c", LAGGING_WRITER, str(path), str(rng.getrandbits(32)), str(lag)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
        )
        try:
            first = proc.stdout.readline()
            assert first.startswith("open "), proc.stderr.read() if proc.poll() is not None else first
            for _ in range(rng.choice([1, 3, 10, 30])):
                line = proc.stdout.readline()
                assert line.startswith("ack "), line
                acked = max(acked, int(line.split()[1]))
            time.sleep(rng.random() * 0.01)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            for line in proc.stdout.read().splitlines():
                parts = line.split()
                if len(parts) == 2 and parts[0] == "ack":  # (a line the kill cut short names nothing)
                    acked = max(acked, int(parts[1]))
        finally:
            stop(proc)
        led, caught = open_recording(path)
        with led:
            assert not [n for n in _notes(caught) if "key index" in n], (round_no, _notes(caught))
            assert led.tx_id >= acked
            assert led.get(b"last").value == b"%d" % led.tx_id
            if round_no % 4 == 3:
                assert led.audit().ok
        assert index_tx(path) == led.tx_id  # caught up (and committed again on close)


# ------------------------------------------------------------------- damage
def _pristine(tmp_path: Path) -> tuple[Path, dict]:
    path = tmp_path / "pristine"
    return path, _fill(path, n_tx=40)


def _reopen_checked(path: Path, model: dict, expect_note: str | None) -> list[str]:
    led, caught = open_recording(path)
    with led:
        notes = _notes(caught)
        if expect_note is not None:
            assert any(expect_note in n and "rebuilt it from the log" in n for n in notes), notes
        _check_model(led, model)
        assert led.audit().ok
    led, caught = open_recording(path)
    with led:
        assert _notes(caught) == []  # the rebuilt index is kept
    return notes


@pytest.mark.parametrize(
    "damage,note",
    [
        ("deleted", "missing"),
        ("data.mdb deleted", "missing"),
        ("lock.mdb deleted", None),
        ("truncated to 0", "cannot be opened"),
        ("truncated to one page", "cannot be opened"),
        ("truncated by half", "cannot be opened"),
        ("a file instead", "missing"),
        ("meta pages flipped", "cannot be opened"),
        ("wrong root", "root"),
        ("another ledger's", "root"),
        ("ahead of the log", "reflects transaction"),
        ("a row removed", "rows"),
        ("a row added", "rows"),
        ("other format", "format"),
        ("metadata missing", "metadata"),
    ],
)
def test_a_damaged_index_is_rebuilt_with_a_recovery_note(tmp_path, damage, note):
    src, model = _pristine(tmp_path)
    path = tmp_path / "work"
    shutil.copytree(src, path)
    idx = path / "index.lmdb"
    data = idx / "data.mdb"
    n = index_tx(path)
    if damage == "deleted":
        shutil.rmtree(idx)
    elif damage == "data.mdb deleted":
        data.unlink()
    elif damage == "lock.mdb deleted":  # LMDB's reader table: a writer makes a new one
        (idx / "lock.mdb").unlink()
    elif damage.startswith("truncated"):
        used = (int(read_index_info(path)["last_pgno"]) + 1) * 4096
        os.truncate(data, {"truncated to 0": 0, "truncated to one page": 4096, "truncated by half": used // 2}[damage])
    elif damage == "a file instead":
        shutil.rmtree(idx)
        idx.write_bytes(b"not an environment")
    elif damage == "meta pages flipped":
        for page in (0, 1):
            xor_byte(data, page * 4096 + 16, 0xFF)  # the magic of each of LMDB's two metadata pages
    elif damage == "wrong root":
        change_index(path, lambda txn, rows, meta: txn.put(b"root", b"\x01" * 32, db=meta))
    elif damage == "another ledger's":
        other = tmp_path / "other"  # the same writes, at other times: another history
        _fill(other, n_tx=40)
        assert index_tx(other) == n
        shutil.rmtree(idx)
        shutil.copytree(other / "index.lmdb", idx)
    elif damage == "ahead of the log":
        change_index(path, lambda txn, rows, meta: txn.put(b"tx", (n + 3).to_bytes(U64, "big"), db=meta))
    elif damage == "a row removed":
        change_index(path, lambda txn, rows, meta: txn.delete(next(iter(txn.cursor(db=rows)))[0], db=rows))
    elif damage == "a row added":
        change_index(path, lambda txn, rows, meta: txn.put(index_row(b"k/05", 2, 9, 100), b"\x09", db=rows))
    elif damage == "other format":
        change_index(path, lambda txn, rows, meta: txn.put(b"format", b"immudoc-keyindex 0", db=meta))
    elif damage == "metadata missing":
        change_index(path, lambda txn, rows, meta: txn.delete(b"entries", db=meta))
    before = ledger_files(path) if damage != "lock.mdb deleted" else None
    # a reader repairs nothing: it reads with an in-memory index (or the index, if it can)
    ro, caught = open_recording(path, readonly=True)
    with ro:
        _check_model(ro, model)
        assert ro.audit().ok
    if before is not None:
        assert ledger_files(path) == before
    notes = _reopen_checked(path, model, note)
    if note is None:
        assert notes == []
    assert index_tx(path) == n


def read_index_info(path: Path) -> dict:
    import lmdb

    env = lmdb.open(str(path / "index.lmdb"), readonly=True, lock=False, max_dbs=4)
    try:
        return env.info()
    finally:
        env.close()


FLIP_TRIALS = r'''
import json, os, random, shutil, sys, warnings
sys.path.insert(0, sys.argv[4])
warnings.simplefilter("ignore")
from kvcore import Ledger, KvError
src, work, positions = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
def read(led):
    return ({e.key: (e.value, e.revision) for e in led.scan()},
            {k: [(e.tx_id, e.value, e.revision) for e in led.history(k)] for k in keys})
with Ledger.open(src, readonly=True) as led:
    keys = sorted({e.key for t in range(1, led.tx_id + 1) for e in led.tx(t).entries})
    want, hist = read(led)
out = {"opened_with_note": 0, "repaired_by_a_read": 0, "repaired_by_the_audit": 0, "unnoticed": 0, "errors": []}
for pos in positions:
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(src, work)
    with open(os.path.join(work, "index.lmdb", "data.mdb"), "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        f.seek(pos)
        f.write(bytes([b[0] ^ 0x20]))
    led = Ledger.open(work)
    notes = len(led.recovery_notes)
    try:
        got, got_hist = read(led)
    except KvError as e:
        out["errors"].append([pos, "read", repr(e)])
        got, got_hist = None, None
    after_reads = len(led.recovery_notes)
    report = led.audit()
    after_audit = len(led.recovery_notes)
    # after an audit a writer's index is the log's: every read right, the next audit clean
    final, final_hist = read(led)
    if final != want or final_hist != hist or not led.audit().ok:
        out["errors"].append([pos, "after the audit", str(report)])
    if notes:
        out["opened_with_note"] += 1
    elif after_reads > notes:
        out["repaired_by_a_read"] += 1
    elif after_audit > after_reads:
        out["repaired_by_the_audit"] += 1
        if report.ok:
            out["errors"].append([pos, "audit rebuilt but said ok", str(report)])
    elif got != want or got_hist != hist:
        out["errors"].append([pos, "a wrong answer nobody noticed", str(report)])
    else:
        out["unnoticed"] += 1  # a byte nothing reads (free space, a page's unused tail)
    led.close()
print(json.dumps(out))
'''


def test_flipped_bytes_in_the_index_file_never_outlive_an_audit(tmp_path):
    """Bytes flipped all over ``data.mdb`` (LMDB keeps no checksums): opening rebuilds what its
    checks see (metadata pages, the row count, the first and last rows, the last transaction's
    rows), a read that meets damage LMDB reports rebuilds and retries, and the audit finds the
    rest (and a writer's audit rebuilds). The process never dies of it (a child process runs
    the trials, so that a crash would show)."""
    src, _model = _pristine(tmp_path)
    size = (src / "index.lmdb" / "data.mdb").stat().st_size
    used = (int(read_index_info(src)["last_pgno"]) + 1) * 4096
    assert used <= size
    rng = random.Random(3)
    positions = sorted({*range(0, 64, 4), *range(4096, 4096 + 64, 4), *(rng.randrange(8192, used) for _ in range(200))})
    child = subprocess.run(
        [sys.executable, "-c", FLIP_TRIALS, str(src), str(tmp_path / "work"), json.dumps(positions), TESTLIB_DIR],
        capture_output=True, text=True, env=child_env(), timeout=600,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    out = json.loads(child.stdout)
    assert out["errors"] == [], out["errors"][:5]
    assert out["opened_with_note"] > 0 and out["repaired_by_the_audit"] + out["repaired_by_a_read"] > 0, out


def test_damage_met_by_a_read_is_repaired_and_the_read_retried(tmp_path, monkeypatch):
    import kvcore.keystore

    path = tmp_path / "led"
    model = _fill(path)
    real = kvcore.keystore.KeyStore.latest
    failures = [1]

    def damaged(self, key, bound):
        if failures:
            failures.pop()
            raise kvcore.keystore.IndexDamagedError("the key index is damaged (CorruptedError: as if)")
        return real(self, key, bound)

    monkeypatch.setattr(kvcore.keystore.KeyStore, "latest", damaged)
    with Ledger.open(path) as led:
        with pytest.warns(RecoveryWarning, match="as if.*rebuilt it from the log"):
            got = led.lookup(b"k/01")  # answered, from the rebuilt index
        revs = model[b"k/01"]
        assert (None if got is None else got.value) == revs[-1][1]
        _check_model(led, model)
    failures[:] = [1]
    with Ledger.open(path, readonly=True) as ro:
        with pytest.warns(RecoveryWarning, match="as if.*in-memory index"):
            ro.lookup(b"k/01")
        _check_model(ro, model)


def test_an_index_the_disk_refuses_to_write_stays_in_memory_until_it_can(tmp_path, monkeypatch):
    import kvcore.keystore
    from kvcore import StorageError

    path = tmp_path / "led"
    real = kvcore.keystore.KeyStore.append
    refuse = [True]

    def full(self, batches, tx, root):
        if refuse[0]:
            raise StorageError("the key index cannot be written (Error: No space left on device)")
        return real(self, batches, tx, root)

    monkeypatch.setattr(kvcore.keystore.KeyStore, "append", full)
    with Ledger.open(path) as led:
        led.set(b"a", b"1")  # the commit succeeds: the log holds it; the index keeps it in memory
        led.set(b"a", b"2")
        assert led.get(b"a").value == b"2" and led.get(b"a").revision == 2
        assert [e.value for e in led.scan()] == [b"2"]
        assert led.audit().ok
        refuse[0] = False
        led.set(b"b", b"3")  # the disk takes it again: everything moves to the index
    assert index_tx(path) == 3


# ------------------------------------------------------------------- readers and writers
MVCC_WRITER = r'''
import sys
from kvcore import Ledger

led = Ledger.open(sys.argv[1], index_lag=int(sys.argv[3]))
print("ready", flush=True)
for tx in range(2, int(sys.argv[2]) + 1):
    # every transaction rewrites the same 20 keys with its own id, and adds one new key
    writes = {b"row/%02d" % i: b"%d" % tx for i in range(20)}
    writes[b"new/%05d" % tx] = b"%d" % tx
    assert led.set_all(writes) == tx
led.close()
print("done", flush=True)
'''


@pytest.mark.parametrize("lag", [0, 500])
def test_a_reader_process_reads_consistently_while_a_writer_commits(tmp_path, lag):
    path = tmp_path / "led"
    with Ledger.open(path) as led:
        led.set_all({b"row/%02d" % i: b"1" for i in range(20)})
    writer = subprocess.Popen(
        [sys.executable, "-c", MVCC_WRITER, str(path), "400", str(lag)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=child_env(),
    )
    try:
        assert writer.stdout.readline().strip() == "ready"
        ro, _caught = open_recording(path, readonly=True)
        seen = set()
        with ro:
            while True:
                tx = ro.refresh()
                seen.add(tx)
                # whole transactions only: every row holds the same transaction's id
                rows = [e.value for e in ro.scan(b"row/")]
                assert rows == [b"%d" % tx] * 20, (tx, rows)
                assert [e.revision for e in ro.scan(b"row/")] == [tx] * 20
                assert [int(e.key[4:]) for e in ro.scan(b"new/")] == list(range(2, tx + 1))
                old = max(1, tx // 2)
                assert ro.get(b"row/07", at_tx=old).value == b"%d" % old
                assert len(ro.history(b"row/03")) == tx
                pending = ro._index._view[1].entries  # the overlay: what the store lacked at refresh
                assert pending <= 21 * 3 + lag + 21, (tx, pending)
                if writer.poll() is not None and tx == 400:
                    break
        assert writer.wait(timeout=60) == 0, writer.stderr.read()
        assert len(seen) > 3
    finally:
        stop(writer)
    with Ledger.open(path, readonly=True) as ro:
        assert ro.tx_id == 400 and ro._index._view[1].entries == 0  # the writer closed: all on disk
        assert ro.audit().ok


def test_a_writer_and_readers_in_one_process_share_the_index(tmp_path):
    path = tmp_path / "led"
    with Ledger.open(path) as led, Ledger.open(path, readonly=True) as ro1:
        ro2 = Ledger.open(path, readonly=True)
        led.set(b"a", b"1")
        assert ro1.refresh() == 1 and ro1.get(b"a").value == b"1"
        ro2.close()  # closing one does not close the others' environment
        led.set(b"a", b"2")
        assert ro1.refresh() == 2 and ro1.get(b"a").value == b"2" and ro1.get(b"a", at_tx=1).value == b"1"
        assert led.get(b"a").revision == 2
    # reader first, then a writer in the same process
    with Ledger.open(path, readonly=True) as ro, Ledger.open(path) as led:
        led.set(b"b", b"3")
        assert ro.refresh() == 3 and ro.get(b"b").value == b"3"


FORKED = r'''
import os, sys
from kvcore import Ledger

path = sys.argv[1]
led = Ledger.open(path)
led.set(b"parent", b"1")
pid = os.fork()
if pid == 0:  # the child opens the ledger anew (a forked child must not use the parent's LMDB)
    code = 0
    try:
        with Ledger.open(path, readonly=True) as ro:
            code = 0 if ro.get(b"parent").value == b"1" else 3
    except Exception as e:
        print("child:", repr(e), flush=True)
        code = 4
    os._exit(code)
_, status = os.waitpid(pid, 0)
led.set(b"after", b"2")
led.close()
print("child", os.waitstatus_to_exitcode(status), flush=True)
'''


def test_a_forked_child_opens_the_ledger_its_parent_has_open(tmp_path):
    path = tmp_path / "led"
    done = subprocess.run([sys.executable, "-c", FORKED, str(path)], capture_output=True, text=True, env=child_env(), timeout=60)
    assert done.returncode == 0 and done.stdout.split()[-2:] == ["child", "0"], (done.stdout, done.stderr)
    with Ledger.open(path) as led:
        assert led.get(b"after").value == b"2" and led.audit().ok


def test_a_reader_sees_an_index_a_writer_rebuilt_while_it_was_open(tmp_path):
    path = tmp_path / "led"
    with Ledger.open(path) as led:
        led.set(b"a", b"1")
    ro = Ledger.open(path, readonly=True)
    with ro:
        # another process damages the index (this one has it open: LMDB allows one open a process)
        damage = (
            f"import sys; sys.path.insert(0, {TESTLIB_DIR!r}); from kvcore_testlib import change_index; "
            f"change_index({str(path)!r}, lambda txn, rows, meta: txn.put(b'root', b'\\x02' * 32, db=meta))"
        )
        subprocess.run([sys.executable, "-c", damage], check=True, env=child_env(), timeout=60)
        with pytest.warns(RecoveryWarning, match="root"):
            led = Ledger.open(path, index_lag=0)  # rebuilds and swaps in a new environment
        with led:
            led.set(b"a", b"2")
            assert ro.refresh() == 2 and ro.get(b"a").value == b"2" and ro.get(b"a").revision == 2
            assert ro._index._view[1].entries == 0  # reading the new environment, no overlay
            assert ro.audit().ok


# ------------------------------------------------------------------- the audit
def _audit_problems(path: Path, readonly: bool = False) -> list[str]:
    led, _caught = open_recording(path, readonly=readonly)
    with led:
        return led.audit().problems


def test_the_audit_catches_rows_removed_or_added_behind_its_back(tmp_path):
    path = tmp_path / "led"
    model = _fill(path)

    def remove(txn, rows, meta):  # keeping the metadata's row count right, so opening trusts it
        first = next(iter(txn.cursor(db=rows)))[0]
        txn.delete(first, db=rows)
        count = int.from_bytes(txn.get(b"rows", db=meta), "big")
        txn.put(b"rows", (count - 1).to_bytes(U64, "big"), db=meta)

    def add(txn, rows, meta):
        txn.put(index_row(b"k/05", 2, 9, 100), b"\x01", db=rows)
        count = int.from_bytes(txn.get(b"rows", db=meta), "big")
        txn.put(b"rows", (count + 1).to_bytes(U64, "big"), db=meta)

    def renumber(txn, rows, meta):
        cur = txn.cursor(db=rows)
        cur.first()
        cur.next()
        cur.put(cur.key(), b"\x07")

    for change, words in ((remove, "lacks 1 rows"), (add, "holds"), (renumber, "revisions wrongly")):
        change_index(path, change)
        assert any(words in p for p in _audit_problems(path, readonly=True))  # a reader reports it
        led, _ = open_recording(path)
        with led:
            report = led.audit()
            assert not report.ok and report.first_bad_tx is None
            assert any(p.startswith("the key index") and words in p for p in report.problems), report.problems
            assert any("the audit found" in n for n in led.recovery_notes)  # and a writer rebuilds it
            assert led.audit().ok
            _check_model(led, model)


def test_the_audit_reports_progress_by_entries(tmp_path):
    path = tmp_path / "led"
    with Ledger.open(path) as led:
        for i in range(20):
            led.set_all({b"k%d/%d" % (i, j): b"v" for j in range(i + 1)})
        total = sum(i + 1 for i in range(20))
        by_tx, by_entry = [], []
        report = led.audit(progress=lambda d, t: by_tx.append((d, t)), entry_progress=lambda d, t: by_entry.append((d, t)))
        assert report.ok and report.entries == total
        assert by_tx == [(i, 20) for i in range(1, 21)]  # the contract callers already use
        assert by_entry[-1] == (total, total) and all(t == total for _d, t in by_entry)
        assert [d for d, _t in by_entry] == sorted(d for d, _t in by_entry) and len(by_entry) == 20


def test_the_audit_holds_no_dump_of_the_index(tmp_path):
    """The audit compares the index with the log without a copy of either: its memory does
    not grow with the number of keys (a ledger 10x larger costs about the same)."""
    import tracemalloc

    peaks = []
    for n in (2_000, 20_000):
        path = tmp_path / f"led{n}"
        with Ledger.open(path) as led:
            for start in range(0, n, 2_000):
                led.set_all({b"key/%08d" % i: b"v" for i in range(start, start + 2_000)})
            tracemalloc.start()
            assert led.audit().ok
            peaks.append(tracemalloc.get_traced_memory()[1])
            tracemalloc.stop()
    assert peaks[1] < 2 * peaks[0] + 1_000_000, peaks


# ------------------------------------------------------------------- the policy
POLICY = (b"p\x00",)


def _docs(led: Ledger, n: int) -> list[int]:
    """n records, as docstore writes a document: a header entry, then its property entries."""
    txs = []
    for i in range(n):
        writes = [(b"d\x00c\x00%03d" % i, b"header %d" % i)]
        writes += [(b"p\x00c\x00%03d\x00/%s" % (i, name), b"%s of %d" % (name, i)) for name in (b"a", b"b", b"c")]
        txs.append(led.set_all(writes))
    return txs


def test_unindexed_entries_are_stored_provable_and_read_by_position(tmp_path):
    path = tmp_path / "led"
    with Ledger.open(path, unindexed_prefixes=POLICY) as led:
        txs = _docs(led, 5)
        assert led.unindexed_prefixes == POLICY and not led.indexed(b"p\x00x") and led.indexed(b"d\x00x")
        state = led.state()
        header = led.get(b"d\x00c\x00003")
        props = led.entries(header.tx_id, header.index + 1, 3)
        assert [(e.key, e.value, e.revision) for e in props] == [
            (b"p\x00c\x00003\x00/%s" % n, b"%s of 3" % n, 0) for n in (b"a", b"b", b"c")
        ]
        assert led.entry_items(header.tx_id, 1, 3) == [(e.key, e.value) for e in props]
        for e in props:
            verify_entry(led.prove_entry_at(e.tx_id, e.index, state), e.key, e.value, state)
        proof = led.prove_entries(txs[3], [1, 2, 3], state)
        verify_entries(proof, [(e.key, e.value) for e in props], state)
        found = led.find_and_prove(txs[3], 1, 3, len(props[1].key), b"/b", state)
        assert found is not None and found[1] == b"b of 3"
        verify_entry(found[2], props[1].key, b"b of 3", state)
        assert [e.revision for e in led.tx(txs[3]).entries] == [1, 0, 0, 0]
        assert led.audit().ok
    meta, rows = read_index(path)
    assert len(rows) == 5 and all(r.startswith(b"d\x00\xff") for r, _v in rows)  # headers only
    assert meta[b"policy"] == b"\x00\x02p\x00"


@pytest.mark.parametrize(
    "call",
    [
        lambda led: led.get(b"p\x00c\x00001\x00/a"),
        lambda led: led.lookup(b"p\x00c\x00001\x00/a"),
        lambda led: led.history(b"p\x00c\x00001\x00/a"),
        lambda led: led.prove_entry(b"p\x00c\x00001\x00/a"),
        lambda led: led.last_write(b"p\x00zzz"),
        lambda led: led.delete(b"p\x00c\x00001\x00/a"),
        lambda led: list(led.scan(b"p\x00c")),
        lambda led: list(led.scan(b"p")),
        lambda led: list(led.scan()),
        lambda led: list(led.keys_ever_written(b"")),
        lambda led: led.transaction().get(b"p\x00c\x00001\x00/a"),
        lambda led: list(led.transaction().scan(b"")),
    ],
)
def test_reads_by_key_of_unindexed_keys_are_refused_not_answered_wrongly(tmp_path, call):
    with Ledger.open(tmp_path / "led", unindexed_prefixes=POLICY) as led:
        _docs(led, 2)
        n = led.tx_id
        with pytest.raises(InvalidInputError, match="unindexed"):
            call(led)
        assert led.tx_id == n
        # what the index holds still reads as ever
        assert [e.key for e in led.scan(b"d\x00")] == [b"d\x00c\x00000", b"d\x00c\x00001"]
        assert led.get(b"d\x00c\x00001").value == b"header 1"
        with pytest.raises(KeyNotFoundError):
            led.get(b"q")


def test_transactions_write_unindexed_keys_blind(tmp_path):
    with Ledger.open(tmp_path / "led", unindexed_prefixes=POLICY) as led:
        t1, t2 = led.transaction(), led.transaction()
        t1.set(b"p\x00x", b"1")
        t1.set(b"d\x00x", b"1")
        t2.set(b"p\x00x", b"2")
        assert t1.commit() == 1
        assert t2.commit() == 2  # no conflict can be seen on a key the index leaves out
        assert [e.value for e in led.entries(2)] == [b"2"]


def test_the_policy_is_part_of_the_index(tmp_path, scans):
    path = tmp_path / "led"
    with Ledger.open(path, unindexed_prefixes=POLICY) as led:
        _docs(led, 4)
    scans.clear()
    led, caught = open_recording(path, unindexed_prefixes=[b"p\x00", b"p\x00c"])  # the same policy
    with led:
        assert _notes(caught) == [] and scans == []
    # a reader with another policy cannot use the index: it reads with its own, in memory
    ro, caught = open_recording(path, readonly=True)
    with ro:
        assert any("other unindexed prefixes" in n and "in-memory" in n for n in _notes(caught))
        assert ro.get(b"p\x00c\x00002\x00/b").value == b"b of 2"
    # a writer with another policy rebuilds it
    led, caught = open_recording(path)
    with led:
        assert any("other unindexed prefixes" in n and "rebuilt" in n for n in _notes(caught))
        assert led.get(b"p\x00c\x00002\x00/b").value == b"b of 2" and len(list(led.scan())) == 16
        assert led.audit().ok
    assert len(read_index(path)[1]) == 16
    led, caught = open_recording(path, unindexed_prefixes=POLICY)
    with led:
        assert any("rebuilt" in n for n in _notes(caught))
        with pytest.raises(InvalidInputError):
            led.get(b"p\x00c\x00002\x00/b")
    assert len(read_index(path)[1]) == 4


def test_bad_policies_are_refused_before_anything_is_touched(tmp_path):
    for bad in (b"p\x00", [b""], ["p"], [None], 5, [b"x" * 1025]):
        with pytest.raises(InvalidInputError):
            Ledger.open(tmp_path / "led", unindexed_prefixes=bad)
    for bad in (-1, 1.5, "3", None):
        with pytest.raises(InvalidInputError):
            Ledger.open(tmp_path / "led", index_lag=bad)
    assert not (tmp_path / "led").exists()
    with Ledger.open(tmp_path / "led") as led:  # a failed open left nothing locked
        led.set(b"a", b"1")


# ------------------------------------------------------------------- keys
def test_keys_of_every_shape_scan_in_order(tmp_path):
    """Escaped zeros, 0xFF bytes, keys that are prefixes of others, and long keys (whose rows
    hold a hash) that share their first 463 escaped bytes: scans, pages and reads as of any
    transaction agree with a model."""
    rng = random.Random(11)
    base = b"\x00" * 200 + b"s"
    shapes = [b"a", b"a\x00", b"a\x00\x00", b"a\x00\xff", b"a\xff", b"a\x01", b"\xff", b"\x00", b"\x00\xff\x00",
              base, base + b"\x00", b"x" * 462, b"x" * 463, b"x" * 464, b"x" * 1024]
    shapes += [b"y" * 500 + bytes([rng.randrange(256)]) * rng.randint(1, 300) for _ in range(20)]
    shapes += [b"\x00" * 300 + b"%d" % i for i in range(10)] + [b"\x00" * 231 + b"\x01" * rng.randint(1, 500) for _ in range(5)]
    shapes = list(dict.fromkeys(shapes))
    model: dict[bytes, list[tuple[int, bytes | None]]] = {}
    path = tmp_path / "led"
    with Ledger.open(path) as led:
        for round_no in range(6):
            writes = {k: b"%d/%d" % (round_no, i) for i, k in enumerate(rng.sample(shapes, len(shapes) // 2))}
            tx = led.set_all(writes)
            for k, v in writes.items():
                model.setdefault(k, []).append((tx, v))
            victim = rng.choice([k for k in model if model[k][-1][1] is not None])
            model[victim].append((led.delete(victim), None))
        _check_model(led, model)
        for prefix in (b"", b"a", b"a\x00", b"\x00", b"\x00" * 200, b"x" * 463, b"y" * 500):
            live = sorted(k for k, r in model.items() if k.startswith(prefix) and r[-1][1] is not None)
            assert [e.key for e in led.scan(prefix)] == live
            paged, after = [], None
            while True:
                page = list(led.scan(prefix, start_after=after, limit=3))
                if not page:
                    break
                paged += [e.key for e in page]
                after = page[-1].key
            assert paged == live, prefix
        assert sorted(led.keys_ever_written(b"")) == list(led.keys_ever_written(b"")) == sorted(model)
        assert led.audit().ok
    with Ledger.open(path, readonly=True) as ro:
        _check_model(ro, model)


def test_a_key_written_twice_in_one_transaction_has_two_revisions(tmp_path):
    with Ledger.open(tmp_path / "led") as led:
        led.commit([(b"k", b"1"), (b"k", b"2")])
        led.set(b"k", b"3")
        assert [(e.value, e.revision) for e in led.history(b"k")] == [(b"1", 1), (b"2", 2), (b"3", 3)]
        assert led.get(b"k").revision == 3 and led.audit().ok


def test_an_index_that_cannot_be_rebuilt_is_kept_in_memory(tmp_path, monkeypatch):
    """If rebuilding fails too (a full disk, say), the ledger reads and writes with an
    in-memory index and says so."""
    import kvcore.indexopen

    path = tmp_path / "led"
    model = _fill(path)
    shutil.rmtree(path / "index.lmdb")

    def cannot(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(kvcore.indexopen, "build", cannot)
    monkeypatch.setattr(kvcore.index, "build", cannot)
    led, caught = open_recording(path)
    with led:
        assert any("cannot be rebuilt" in n and "in-memory" in n for n in _notes(caught))
        _check_model(led, model)
        led.set(b"k/01", b"more")
        assert led.get(b"k/01").value == b"more" and led.audit().ok
