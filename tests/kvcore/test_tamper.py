"""Tampering: damaged or forged bytes are found by audit (or refused at open), never missed.

Positions are taken from the format specification (docs/storage.md) by our own parser, so
we know which transaction each damaged byte belongs to and can demand that audit names it.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from pathlib import Path

import pytest

from kvcore import CorruptionError, KvError, Ledger, VerificationError, verify_consistency, verify_entry
from kvcore import payload
from kvcore.codec import codec_for
from kvcore.hashing import HEADER_SIZE

from kvcore_testlib import (
    ledger_format,
    FRAME,
    INDEX_FILES,
    fix_crc,
    open_recording,
    overwrite_file,
    parse_txlog,
    recovery_warnings,
    xor_byte,
)


def _build(path: Path):
    with Ledger.open(path) as led:
        led.set_all({b"user/%d" % i: b"name %d" % i for i in range(5)})
        led.set(b"solo", b"one entry")
        led.set_all({b"doc/%02d" % i: (b"%d" % i) * (1 + 7 * i) for i in range(12)})
        led.delete(b"user/2")
        led.set_all({b"user/1": b"renamed", b"x": b"", b"y": b"why"})
        led.set(b"solo", b"again")
        led.set_all({b"z/%d" % i: b"zz" * i for i in range(7)})
        # 35 entries: restarts and stored tree levels in format 2, long shared key prefixes
        led.set_all({b"run/" + b"p" * 40 + b"/%03d" % i: b"r%d" % i * (i % 5) for i in range(35)})
        led.set_all({b"last/a": b"A", b"last/b": b"B"})
        return [led.state(i) for i in range(led.tx_id + 1)]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    path = tmp_path_factory.mktemp("tamper") / "pristine"
    states = _build(path)
    return path, states, parse_txlog(path / "txlog")


class Workdir:
    """``tmp_path/work``, reset to the pristine ledger before each trial.

    The files a trial can change are rewritten in place (FORMAT never changes and LOCK only
    holds a pid), which keeps hundreds of trials cheap on a slow disk.
    """

    RESET = ("txlog", "txindex", "tree", *INDEX_FILES)

    def __init__(self, src: Path, tmp_path: Path) -> None:
        self.path = tmp_path / "work"
        shutil.copytree(src, self.path)
        self.files = {name: (src / name).read_bytes() for name in self.RESET}

    def reset(self, without=()) -> Path:
        """Reset; ``without`` names files to leave out, "index" the key index's directory."""
        for p in self.path.iterdir():
            if p.name in ("FORMAT", "LOCK", "index.lmdb"):
                continue
            if p.name not in self.files or p.name in without:
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        (self.path / "index.lmdb").mkdir(exist_ok=True)
        for name, data in self.files.items():
            if name not in without:
                overwrite_file(self.path / name, data)
        if "index" in without:
            shutil.rmtree(self.path / "index.lmdb")
        return self.path


def _positions(rec, with_frame: bool):
    """Byte offsets across one record: frame, header fields, entry heads, keys, values, extra."""
    p = rec.payload_start
    out = {}
    if with_frame:
        out.update({"frame.plen": rec.start + 3, "frame.elen": rec.start + 7, "frame.crc": rec.start + 9})
    out.update(
        {
            "header.version": p,
            "header.tx_id": p + 8,
            "header.timestamp": p + 12,
            "header.n_entries": p + 20,
            "header.root[0]": p + 21,
            "header.root[31]": p + HEADER_SIZE - 1,
        }
    )
    entries = rec.entries
    for i in sorted({0, len(entries) // 2, len(entries) - 1}):
        estart, kstart, klen, vstart, vlen = entries[i]
        for field, at in rec.heads[i].items():  # kind, (shared,) key_len, value_len
            out[f"entry{i}.{field}"] = at
        out[f"entry{i}.key"] = kstart + klen // 2
        if vlen:
            out[f"entry{i}.value"] = vstart + vlen // 2
    n = len(entries)
    out["extra.positions"] = rec.extra_start + 3
    out["extra.end_position"] = rec.extra_start + 4 * n + 3
    if rec.elen > 4 * (n + 1):  # (format 2 stores no node of a transaction of < 16 entries)
        out["extra.first_node"] = rec.extra_start + 4 * (n + 1)
    out["extra.last_node"] = rec.end - 1
    return out


def _open_or_error(path: Path, readonly: bool = False):
    """(ledger or None, error or None, recovery warnings) — errors must be kvcore errors."""
    try:
        led, caught = open_recording(path, readonly=readonly)
    except Exception as e:  # noqa: BLE001 - the assertion is on its type
        assert isinstance(e, KvError), f"opening raised a bare {type(e).__name__}: {e}"
        return None, e, []
    return led, None, recovery_warnings(caught)


def _assert_found(work: Path, tx_id: int, states, where: str, *, snapshot: bool, readonly: bool) -> None:
    n = len(states) - 1
    led, err, warned = _open_or_error(work, readonly)
    if err is not None:
        # refusing to open is fine for damage in the log; it must say which transaction
        assert isinstance(err, CorruptionError), (where, err)
        assert f"transaction {tx_id}" in str(err), (where, str(err))
        assert not snapshot or tx_id == n, (where, "opening with a snapshot should not need the log")
        return
    with led:
        report = led.audit()
        if not report.ok:
            assert report.first_bad_tx == tx_id, (where, str(report))
            assert report.problems
            return
        # audit alone can pass only if opening treated the damage as a torn tail (or repaired
        # a derived file) and said so; a trusted state then exposes the loss or rewrite
        assert tx_id == n and warned, (where, str(report))
        trusted = led.audit(trusted_state=states[n])
        assert not trusted.ok, (where, str(trusted))


@pytest.mark.parametrize("snapshot", [True, False], ids=["with-snapshot", "no-snapshot"])
def test_flipped_byte_in_txlog_is_found(pristine, tmp_path, snapshot):
    src, states, records = pristine
    work = Workdir(src, tmp_path)
    checked = 0
    for rec in records:
        for where, pos in _positions(rec, with_frame=True).items():
            path = work.reset(without=() if snapshot else ("index",))
            xor_byte(path / "txlog", pos, 0x04)
            # alternate writer and read-only opens: audit must find the damage either way
            ro = bool(checked % 2)
            _assert_found(path, rec.tx_id, states, f"tx {rec.tx_id} {where} ro={ro}", snapshot=snapshot, readonly=ro)
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("snapshot", [True, False], ids=["with-snapshot", "no-snapshot"])
def test_forged_bytes_with_a_valid_checksum_are_found(pristine, tmp_path, snapshot):
    """A forger who fixes the CRC: only the hashes can tell."""
    src, states, records = pristine
    work = Workdir(src, tmp_path)
    for i, (rec, (where, pos)) in enumerate(
        (r, item) for r in records for item in _positions(r, with_frame=False).items()
    ):
        path = work.reset(without=() if snapshot else ("index",))
        xor_byte(path / "txlog", pos, 0x04)
        fix_crc(path / "txlog", rec)
        ro = bool(i % 2)
        _assert_found(
            path, rec.tx_id, states, f"tx {rec.tx_id} {where} (crc fixed) ro={ro}", snapshot=snapshot, readonly=ro
        )


def test_failed_open_does_not_keep_the_directory_locked(pristine, tmp_path):
    src, states, records = pristine
    path = Workdir(src, tmp_path).reset(without=("index",))
    pos = records[2].payload_start + 30
    xor_byte(path / "txlog", pos, 0x01)
    with pytest.raises(CorruptionError):
        Ledger.open(path)
    xor_byte(path / "txlog", pos, 0x01)  # repaired from a backup, say
    with Ledger.open(path) as led:  # must not raise LockedError
        assert led.state() == states[-1]
        assert led.audit().ok


def _expected_tx_of_node(n_tx: int) -> list[int]:
    """For each stored ledger-tree node, the transaction whose commit appended it."""
    owner = []
    for t in range(1, n_tx + 1):
        i = t - 1
        owner += [t] * (1 + ((i ^ (i + 1)).bit_length() - 1))  # the leaf and its new parents
    return owner


def test_flipped_byte_in_tree_file_is_found_by_audit_of_the_open_ledger(pristine, tmp_path):
    src, states, _records = pristine
    path = Workdir(src, tmp_path).reset()
    n = len(states) - 1
    owner = _expected_tx_of_node(n)
    with Ledger.open(path) as led:
        assert led.audit().ok
        tree = path / "tree"
        assert tree.stat().st_size == 32 * len(owner)
        for node in range(len(owner)):
            for byte in (0, 13, 31):
                pos = node * 32 + byte
                xor_byte(tree, pos, 0x80)
                report = led.audit()
                assert not report.ok, (node, byte)
                assert report.first_bad_tx == owner[node], (node, str(report))
                xor_byte(tree, pos, 0x80)
        assert led.audit().ok
        # the ledger's own answers were never affected
        assert led.state() == states[n]


def test_flipped_byte_in_tree_file_after_reopen(pristine, tmp_path):
    src, states, _records = pristine
    n = len(states) - 1
    owner = _expected_tx_of_node(n)
    work = Workdir(src, tmp_path)
    last_leaf = max(i for i, t in enumerate(owner) if t == n and (i == 0 or owner[i - 1] != n))
    for node in range(len(owner)):
        path = work.reset()
        xor_byte(path / "tree", node * 32 + 5, 0x01)
        led, err, warned = _open_or_error(path)
        assert err is None
        with led:
            # the newest leaf is checked against the log at open, every parent against its
            # children: any flipped node is found and the file rebuilt from the log
            report = led.audit()
            assert warned and report.ok, (node, last_leaf, str(report))
            assert led.state() == states[n]


# ------------------------------------------------------------------- rewriting history
def _rewrite(src: Path, dst: Path, tx_id: int, change) -> None:
    """Forge ``dst``: ``src`` with transaction ``tx_id`` re-encoded after ``change(entries)``.

    The forger re-hashes everything of that transaction (entries tree, header, checksum) and
    drops the derived files, so the forged ledger is internally consistent.
    """
    shutil.copytree(src, dst)
    data = (src / "txlog").read_bytes()
    codec = codec_for(ledger_format(src))  # the forger writes the ledger's own format
    out = bytearray()
    for rec in parse_txlog(src / "txlog"):
        raw = data[rec.start : rec.end]
        if rec.tx_id == tx_id:
            stored = data[rec.payload_start : rec.extra_start]
            _, (tid, ts, _n, _root, _sroot) = payload.header_of(stored)
            entries = [(kind, key, value) for _p, kind, key, value in codec.iter_entries(stored)]
            writes = [(key, None if kind else value) for kind, key, value in change(entries)]
            body, extra, _header, _pos = codec.encode(tid, ts, writes)
            raw = FRAME.pack(len(body), len(extra), zlib.crc32(body + extra)) + body + extra
        out += raw
    (dst / "txlog").write_bytes(bytes(out))
    for name in ("txindex", "tree"):
        (dst / name).unlink()
    shutil.rmtree(dst / "index.lmdb")


def test_consistent_rewrite_is_only_caught_with_a_trusted_state(pristine, tmp_path):
    src, states, _records = pristine
    n = len(states) - 1
    k = 3  # the transaction with the doc/ entries

    def change(entries):
        return [(kind, key, b"FORGED" if key == b"doc/05" else value) for kind, key, value in entries]

    forged = tmp_path / "forged"
    _rewrite(src, forged, k, change)
    led, caught = open_recording(forged)
    with led:
        # nothing looks wrong: the forger removed the derived files, which are rebuilt
        assert [str(w.message) for w in recovery_warnings(caught)] == ["the key index is missing; rebuilt it from the log"]
        assert led.tx_id == n
        assert led.get(b"doc/05").value == b"FORGED"
        # on its own, the forged ledger is perfectly consistent
        assert led.audit().ok
        verify_entry(led.prove_entry(b"doc/05"), b"doc/05", b"FORGED", led.state())
        for j in range(n + 1):
            report = led.audit(trusted_state=states[j])
            consistency = led.prove_consistency(j)
            if j < k:  # history before the rewrite is genuine
                assert report.ok, (j, str(report))
                verify_consistency(states[j], led.state(), consistency)
            else:
                assert not report.ok, j
                assert any("rewritten" in p for p in report.problems), report.problems
                with pytest.raises(VerificationError):
                    verify_consistency(states[j], led.state(), consistency)
        # a client holding the genuine state rejects the forged value's proof
        with pytest.raises(VerificationError):
            verify_entry(led.prove_entry(b"doc/05"), b"doc/05", b"FORGED", states[n])
        # and asking the forged ledger to prove against the genuine state is refused
        with pytest.raises(VerificationError):
            led.prove_entry(b"doc/05", state=states[n])


def test_rebuilt_ledger_with_changed_old_value_is_caught_with_a_trusted_state(tmp_path):
    def history(path: Path, old_value: bytes) -> Ledger:
        led = Ledger.open(path)
        led.set_all({b"acct/1": b"100", b"acct/2": b"50"})
        led.set(b"acct/1", old_value)  # the transaction that will be "rewritten"
        for i in range(5):
            led.set_all({b"acct/2": b"%d" % (50 + i), b"log/%d" % i: b"entry"})
        return led

    with history(tmp_path / "genuine", b"90") as genuine, history(tmp_path / "forged", b"9000") as forged:
        assert forged.tx_id == genuine.tx_id
        assert forged.audit().ok and genuine.audit().ok
        assert forged.get(b"acct/1", at_tx=2).value == b"9000"
        old = genuine.state(2)
        report = forged.audit(trusted_state=old)
        assert not report.ok and any("rewritten" in p for p in report.problems)
        assert not forged.audit(trusted_state=genuine.state()).ok
        with pytest.raises(VerificationError):
            verify_consistency(old, forged.state(), forged.prove_consistency(2))
        with pytest.raises(VerificationError):
            verify_entry(forged.prove_entry(b"acct/1", 2), b"acct/1", b"9000", genuine.state())
        # the genuine ledger, of course, passes against its own old state
        assert genuine.audit(trusted_state=old).ok
        verify_consistency(old, genuine.state(), genuine.prove_consistency(2))


def test_truncating_acknowledged_history_is_caught_with_a_trusted_state(pristine, tmp_path):
    """Cutting whole records off the end is caught at open while txindex still lists them; cut
    from both files, it looks like a shorter ledger, and a trusted state knows better."""
    src, states, records = pristine
    n = len(states) - 1
    path = Workdir(src, tmp_path).reset()
    os.truncate(path / "txlog", records[n - 4].end)  # keeps transactions 1 .. n-3
    with pytest.raises(CorruptionError, match=f"txindex lists {n} committed transactions"):
        Ledger.open(path)
    os.remove(path / "txindex")  # derived: the tamperer removes the evidence too
    led, caught = open_recording(path)
    with led:
        assert led.tx_id == n - 3
        assert led.audit().ok
        report = led.audit(trusted_state=states[n])
        assert not report.ok and report.problems
        assert led.audit(trusted_state=states[n - 3]).ok


# ------------------------------------------ committed transactions lost from the log are found


def _record_ends(path: Path) -> list[int]:
    import struct

    log = (path / "txlog").read_bytes()
    ends, off = [], 0
    while off < len(log):
        plen, elen, _crc = struct.unpack_from(">III", log, off)
        off += 12 + plen + elen
        ends.append(off)
    return ends


@pytest.mark.parametrize("keep", [0, 2, 4])
def test_a_log_cut_at_a_record_boundary_is_corruption_not_a_torn_tail(tmp_path, keep):
    with Ledger.open(tmp_path) as led:
        for i in range(1, 6):
            led.set(b"k%d" % i, b"v%d" % i)
    cut = ([0] + _record_ends(tmp_path))[keep]
    os.truncate(tmp_path / "txlog", cut)
    index = (tmp_path / "txindex").read_bytes()
    for readonly in (True, False):
        with pytest.raises(CorruptionError, match="txindex lists 5 committed transactions"):
            Ledger.open(tmp_path, readonly=readonly)
    assert (tmp_path / "txindex").read_bytes() == index  # the evidence is kept
    assert os.path.getsize(tmp_path / "txlog") == cut


def test_damage_before_a_large_record_is_not_taken_for_a_torn_tail(tmp_path):
    with Ledger.open(tmp_path) as led:
        led.set(b"small", b"1")
        led.set(b"big", b"B" * (5 << 20))  # more than the 4 MiB scanned byte by byte
        for i in range(3):
            led.set(b"k%d" % i, b"v")
    os.remove(tmp_path / "txindex")  # derived: rebuilt from the log when missing
    size = os.path.getsize(tmp_path / "txlog")
    with open(tmp_path / "txlog", "r+b") as f:
        f.seek(_record_ends(tmp_path)[0] + 100)  # inside the big record
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 1]))
    with pytest.raises(CorruptionError, match="later transactions follow it"):
        Ledger.open(tmp_path)
    assert os.path.getsize(tmp_path / "txlog") == size  # nothing discarded


@pytest.mark.parametrize("offset", [0, 32, 64, 96, 127])
def test_a_damaged_tree_file_is_rebuilt_from_the_log(tmp_path, offset):
    with Ledger.open(tmp_path) as led:
        for i in range(1, 4):
            led.set(b"k%d" % i, b"v%d" % i)
        state = led.state()
        proofs = {k: led.prove_entry(k) for k in (b"k1", b"k2", b"k3")}
    tree = bytearray((tmp_path / "tree").read_bytes())
    tree[offset] ^= 1
    (tmp_path / "tree").write_bytes(tree)
    for readonly in (True, False):
        with Ledger.open(tmp_path, readonly=readonly) as led:
            assert led.state() == state
            assert "the tree file did not match the log; rebuilt it" in led.recovery_notes
            for k, old in proofs.items():
                verify_entry(led.prove_entry(k), k, b"v" + k[1:], state)
                assert led.prove_entry(k).to_dict() == old.to_dict()
            # read-only, the damaged file stays on disk and the audit names it; a writer
            # rewrote it
            report = led.audit()
            assert report.ok is (not readonly), report
            assert readonly is any("ledger-tree node" in p for p in report.problems)


def test_reads_of_a_damaged_record_raise_kvcore_errors_only(tmp_path):
    """Reads are not checksummed (the audit is): a flipped byte anywhere in a record gives
    right data, or a KvError (CorruptionError), never an OSError, struct.error or MemoryError."""
    import struct
    import warnings

    src = tmp_path / "src"
    with Ledger.open(src) as led:
        led.set_all({b"a": b"1", b"b": b"2"})
        led.set(b"c", b"3")
    log = (src / "txlog").read_bytes()
    plen, elen, _crc = struct.unpack_from(">III", log, 0)
    escaped, refused, read_errors = [], 0, 0
    for off in range(12 + plen + elen):
        work = tmp_path / "w"
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(src, work)
        xor_byte(work / "txlog", off, 0xFF)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                led = Ledger.open(work)
            except KvError:
                refused += 1
                continue
        with led:
            for read in (lambda: led.entries(1), lambda: led.entry_items(1), lambda: led.tx(1), lambda: led.get(b"a")):
                try:
                    read()
                except KvError:
                    read_errors += 1
                except Exception as e:  # noqa: BLE001 - what the test looks for
                    escaped.append((off, type(e).__name__))
    assert escaped == []
    assert read_errors > 0  # damage the open does not see is reported by the reads


def test_the_tree_mark_spares_the_check_of_what_was_checked_and_still_catches_damage(tmp_path):
    """A writer records how much of the tree it checked (``tree.ok``: a count and a CRC-32);
    opening then hashes only the transactions added since. Damage before or after the mark,
    and a mark that is stale, garbled or lying, are all still caught or harmless."""
    with Ledger.open(tmp_path) as led:
        for i in range(1, 40):
            led.set(b"k%d" % (i % 5), b"v%d" % i)
    mark = (tmp_path / "tree.ok").read_text()
    assert json.loads(mark)["count"] == 39
    with Ledger.open(tmp_path) as led:
        for i in range(40, 60):
            led.set(b"k%d" % (i % 5), b"v%d" % i)
        state = led.state()
    good_tree = (tmp_path / "tree").read_bytes()
    (tmp_path / "tree.ok").write_text(mark)  # stale: vouches for the first 39 only
    with Ledger.open(tmp_path, readonly=True) as led:
        assert led.recovery_notes == [] and led.state() == state
    for offset in (5 * 32, len(good_tree) - 40):  # a node before the mark, one after it
        (tmp_path / "tree.ok").write_text(mark)
        tree = bytearray(good_tree)
        tree[offset] ^= 1
        (tmp_path / "tree").write_bytes(tree)
        with Ledger.open(tmp_path) as led:
            assert "the tree file did not match the log; rebuilt it" in led.recovery_notes
            assert led.state() == state and led.audit().ok
        assert (tmp_path / "tree").read_bytes() == good_tree
    for bad in ("", "{", '{"count": 59, "crc": -1}', '{"count": 1000, "crc": 1}', '{"count": "x"}'):
        (tmp_path / "tree.ok").write_text(bad)
        with Ledger.open(tmp_path) as led:
            assert led.recovery_notes == [] and led.state() == state
    lying = json.dumps({"count": 59, "crc": zlib.crc32(good_tree)})  # right CRC, damaged file
    tree = bytearray(good_tree)
    tree[32] ^= 1
    (tmp_path / "tree").write_bytes(tree)
    (tmp_path / "tree.ok").write_text(lying)
    with Ledger.open(tmp_path) as led:  # the CRC no longer matches what is on disk: checked in full
        assert "the tree file did not match the log; rebuilt it" in led.recovery_notes
        assert led.state() == state
