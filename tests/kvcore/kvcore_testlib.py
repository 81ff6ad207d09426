"""Helpers shared by the kvcore tests (a uniquely named module: tests/ has no packages).

Everything here reads the on-disk format from its specification (docs/storage.md) rather
than through kvcore's own storage code, so tests that damage files know independently
where each record, header, entry and node lies.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path

import kvcore
from kvcore import Ledger

REPO_ROOT = Path(__file__).resolve().parents[2]

FRAME = struct.Struct(">III")  # payload_len, extra_len, crc32(payload || extra)
HEADER_SIZE = 53  # u8 version || u64 tx_id || u64 timestamp_ns || u32 n || 32-byte root
HEADER_SIZES = {1: HEADER_SIZE, 2: HEADER_SIZE + 32}  # version 2: || 32-byte state root
ENTRY_HEAD = struct.Struct(">BII")  # format 1: kind, key_len, value_len
RESTART = 16  # format 2: every 16th entry stores its whole key


def read_varint(data: bytes, pos: int) -> tuple[int, int]:
    """An unsigned LEB128 varint at ``pos``: (its value, where it ends)."""
    n = shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            return n, pos
        shift += 7


def parse_entry(data: bytes, pos: int, version: int) -> tuple[dict[str, int], tuple[int, int, int, int, int]]:
    """The byte offsets of an entry's head fields, and (entry_start, key_start, key_len,
    value_start, value_len): in format 2 the key is the stored suffix of the front-coded key."""
    if version == 1:
        _kind, klen, vlen = ENTRY_HEAD.unpack_from(data, pos)
        heads = {"kind": pos, "key_len": pos + 4, "value_len": pos + 8}
        kstart = pos + ENTRY_HEAD.size
        return heads, (pos, kstart, klen, kstart + klen, vlen)
    heads = {"kind": pos}
    q = pos + 1
    fields = []
    for name in ("shared", "key_len", "value_len"):
        heads[name] = q
        value, q = read_varint(data, q)
        fields.append(value)
    _shared, slen, vlen = fields
    return heads, (pos, q, slen, q + slen, vlen)


def ledger_format(directory: str | os.PathLike[str]) -> int:
    """The format version a ledger directory's ``FORMAT`` file names."""
    return int(json.loads((Path(directory) / "FORMAT").read_text())["version"])


@dataclass(frozen=True)
class Record:
    """One transaction's record in ``txlog``, with absolute byte offsets."""

    tx_id: int
    start: int  # first byte of the frame
    plen: int
    elen: int
    entries: tuple[tuple[int, int, int, int, int], ...]  # (entry_start, key_start, key_len, value_start, value_len)
    heads: tuple[dict[str, int], ...] = ()  # per entry: its head fields' offsets (parse_entry)
    version: int = 1

    @property
    def payload_start(self) -> int:
        return self.start + FRAME.size

    @property
    def extra_start(self) -> int:
        return self.payload_start + self.plen

    @property
    def end(self) -> int:
        return self.extra_start + self.elen


def parse_txlog(path: str | os.PathLike[str]) -> list[Record]:
    """Split a healthy ``txlog`` into its records (raises AssertionError if it is not), in
    the format its directory's ``FORMAT`` names."""
    data = Path(path).read_bytes()
    version = ledger_format(Path(path).parent)
    out: list[Record] = []
    off = 0
    while off < len(data):
        plen, elen, crc = FRAME.unpack_from(data, off)
        body = data[off + FRAME.size : off + FRAME.size + plen + elen]
        assert len(body) == plen + elen and zlib.crc32(body) == crc, f"bad record at {off}"
        pstart = off + FRAME.size
        entries, heads = [], []
        pos = pstart + HEADER_SIZES[data[pstart]]
        while pos < pstart + plen:
            fields, entry = parse_entry(data, pos, version)
            entries.append(entry)
            heads.append(fields)
            pos = entry[3] + entry[4]
        assert pos == pstart + plen
        out.append(Record(len(out) + 1, off, plen, elen, tuple(entries), tuple(heads), version))
        off += FRAME.size + plen + elen
    return out


def xor_byte(path: str | os.PathLike[str], pos: int, mask: int = 0x01) -> None:
    with open(path, "r+b") as f:
        f.seek(pos)
        b = f.read(1)
        assert len(b) == 1, f"{path} has no byte {pos}"
        f.seek(pos)
        f.write(bytes([b[0] ^ mask]))


def fix_crc(path: str | os.PathLike[str], rec: Record) -> None:
    """Recompute a record's CRC after its payload or extra was changed (a deliberate forger)."""
    with open(path, "r+b") as f:
        f.seek(rec.payload_start)
        body = f.read(rec.plen + rec.elen)
        f.seek(rec.start + 8)
        f.write(struct.pack(">I", zlib.crc32(body)))


def open_recording(path: str | os.PathLike[str], **kw) -> tuple[Ledger, list[warnings.WarningMessage]]:
    """Open a ledger, returning it with the warnings raised while opening."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        led = Ledger.open(path, **kw)
    return led, list(caught)


def recovery_warnings(caught: list[warnings.WarningMessage]) -> list[warnings.WarningMessage]:
    return [w for w in caught if issubclass(w.category, kvcore.RecoveryWarning)]


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO_ROOT) + (
        os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else ""
    )
    env["PYTHONUNBUFFERED"] = "1"
    return env


def spawn(script: str | os.PathLike[str], *args: str) -> subprocess.Popen:
    """Start ``python script args...`` with kvcore importable and line-based pipes."""
    return subprocess.Popen(
        [sys.executable, os.fspath(script), *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        bufsize=1,
        env=child_env(),
        cwd=str(REPO_ROOT),
    )


def expect_line(proc: subprocess.Popen, prefix: str) -> str:
    """Read the child's next stdout line, which must start with ``prefix``."""
    line = proc.stdout.readline()
    if not line.startswith(prefix):
        proc.kill()
        err = proc.stderr.read()
        raise AssertionError(f"expected {prefix!r} from child, got {line!r}; stderr:\n{err}")
    return line.strip()


def stop(proc: subprocess.Popen) -> None:
    """Make sure a child we started is gone (kills only that pid)."""
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=30)
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


def flip_bit(data: bytes, bit: int) -> bytes:
    """``data`` with bit ``bit`` (0 = most significant bit of byte 0) inverted."""
    buf = bytearray(data)
    buf[bit // 8] ^= 0x80 >> (bit % 8)
    return bytes(buf)


def dir_snapshot(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file in a ledger directory with its bytes (to prove nothing was written)."""
    return {p.name: p.read_bytes() for p in sorted(Path(path).iterdir()) if p.is_file()}


# A small ledger server run as a real child process: it opens the ledger for writing and
# obeys one command per stdin line, answering on stdout.
#   set KEY VALUE   -> "tx <id> <state root hex>"
#   close           -> "closed" (then exits)
#   hold            -> blocks until stdin closes or it is killed
SERVER_SCRIPT = r'''
import sys
from kvcore import Ledger

led = Ledger.open(sys.argv[1])
print("locked", led.tx_id, flush=True)
for line in sys.stdin:
    cmd = line.split()
    if not cmd:
        continue
    if cmd[0] == "set":
        tx = led.set(cmd[1].encode(), cmd[2].encode())
        print("tx", tx, led.state().root.hex(), flush=True)
    elif cmd[0] == "close":
        led.close()
        print("closed", flush=True)
        break
'''


def tx_content(seed: int) -> list[tuple[bytes, bytes]]:
    """The entries of a crash-test transaction, all derived from its seed.

    The first entry records the seed, so any transaction found in a ledger can be checked
    against what it must contain, whether or not its commit was acknowledged.
    """
    import random

    rng = random.Random(seed)
    n = rng.choice([1, 2, 3, 5, 8, 13, 40, 200])
    size = rng.choice([0, 7, 100, 3000, 30000])
    entries = [(b"meta", b"%d" % seed)]
    for k in sorted(rng.sample(range(5000), n)):
        entries.append((b"d/%04d" % k, rng.randbytes(size)))
    return entries


# The crash-test writer, run as a real child process: commits transactions forever, printing
# "ack <tx_id> <seed>" after each commit returns, and checkpointing the index now and then.
WRITER_SCRIPT = r'''
import random, sys
sys.path.insert(0, sys.argv[3])
from kvcore import Ledger
from kvcore_testlib import tx_content

rng = random.Random(int(sys.argv[2]))
led = Ledger.open(sys.argv[1], wait=60)
print("open", led.tx_id, flush=True)
i = 0
while True:
    seed = rng.getrandbits(48)
    tx = led.set_all(tx_content(seed))
    print("ack", tx, seed, flush=True)
    i += 1
    if i % 7 == 0:
        led.checkpoint()
'''


def overwrite_file(path: str | os.PathLike[str], data: bytes) -> None:
    """Make a file hold exactly ``data``, rewriting in place (no truncation to zero first,
    which on ext4 forces a flush, and is slow over hundreds of trials)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        view = memoryview(data)
        off = 0
        while off < len(data):
            off += os.pwrite(fd, view[off:], off)
        if os.fstat(fd).st_size != len(data):
            os.ftruncate(fd, len(data))
    finally:
        os.close(fd)


# ------------------------------------------------------------------ the on-disk key index
INDEX = "index.lmdb"
INDEX_FILES = ("index.lmdb/data.mdb", "index.lmdb/lock.mdb")


def _index_env(path: str | os.PathLike[str], write: bool):
    import lmdb

    return lmdb.open(
        os.path.join(path, INDEX), readonly=not write, lock=write, max_dbs=4, subdir=True, create=False,
        map_size=1 << 40,
    )


def read_index(path: str | os.PathLike[str]) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes]]]:
    """(metadata, rows) of a closed ledger's key index, read with LMDB itself as docs/storage.md
    describes it (databases ``meta`` and ``revisions``)."""
    env = _index_env(path, False)
    try:
        rows_db = env.open_db(b"revisions", create=False)
        meta_db = env.open_db(b"meta", create=False)
        with env.begin() as txn:
            meta = dict(txn.cursor(db=meta_db))
            rows = list(txn.cursor(db=rows_db))
    finally:
        env.close()
    return meta, rows


def index_tx(path: str | os.PathLike[str]) -> int:
    """The last transaction a closed ledger's key index says it reflects."""
    return int.from_bytes(read_index(path)[0][b"tx"], "big")


def change_index(path: str | os.PathLike[str], change) -> None:
    """Change a closed ledger's key index behind its back: ``change(txn, rows_db, meta_db)`` in
    one LMDB write transaction."""
    env = _index_env(path, True)
    try:
        rows_db = env.open_db(b"revisions", create=False)
        meta_db = env.open_db(b"meta", create=False)
        with env.begin(write=True) as txn:
            change(txn, rows_db, meta_db)
    finally:
        env.close()


def index_row(key: bytes, tx_id: int, ordinal: int, position: int) -> bytes:
    """The row of a (short) key's revision, spelled from docs/storage.md."""
    return key.replace(b"\x00", b"\x00\xff") + b"\x00" + ((tx_id << 56) | (ordinal << 32) | position).to_bytes(15, "big")


def ledger_files(path: str | os.PathLike[str]) -> dict[str, bytes]:
    """Every file under a ledger directory with its bytes, but LMDB's reader table
    (``index.lmdb/lock.mdb``), which readers write to register (docs/storage.md)."""
    root = Path(path)
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.relative_to(root).as_posix() != "index.lmdb/lock.mdb"
    }
