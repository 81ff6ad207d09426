"""The default backend: a directory of append-only files.

Layout (format versions 1 and 2, see docs/storage.md):

- ``FORMAT``: JSON naming the format and its version (a new ledger is written in
  :data:`FORMAT_VERSION`; one of version 1 stays in version 1: kvcore.codec).
- ``LOCK``: held with ``flock`` by the one writer process; holds its pid.
- ``txlog``: records ``payload_len (u32 BE) | extra_len (u32 BE) | crc32 (u32 BE) | payload |
  extra``, appended and fsynced; the CRC covers payload and extra. ``extra`` is derived data
  the ledger keeps with each transaction (its entries-tree nodes).
- ``txindex``: per record ``offset (u64 BE) | payload_len (u32 BE) | extra_len (u32 BE)``;
  derived, rebuilt from ``txlog``.
- ``tree``: 32-byte ledger-tree nodes in post-order; derived.
- ``index.lmdb/``: the key index (an LMDB environment, kvcore.keystore); derived. (An
  ``index.snap`` of earlier versions is deleted by a writer.)
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import stat
import struct
import time
import zlib
from collections.abc import Iterator, Mapping, Sequence

from kvcore.errors import CorruptionError, FormatError, LockedError, ReadOnlyError, StorageError
from kvcore.hashing import HEADER_SIZES
from kvcore.storage import atomic
from kvcore.storage.base import Storage

FORMAT_NAME = "immudoc-kvcore"
FORMAT_VERSION = 2
"""The newest format: what a new ledger is written in, and the newest this version reads."""

_FRAME = struct.Struct(">III")
FRAME_SIZE = _FRAME.size
_IDX = struct.Struct(">QII")
IDX_SIZE = _IDX.size
_TORN_SCAN_LIMIT = 4 * 1024 * 1024
TREE_MARK = "tree.ok"
"""Derived: how much of ``tree`` was checked against the log, and its CRC-32 then."""


class FileStorage(Storage):
    """A ledger directory on a local filesystem."""

    def __init__(
        self, path: str | os.PathLike[str], *, readonly: bool = False, wait: bool | float = False,
        format_version: int = FORMAT_VERSION,
    ) -> None:
        """``format_version``: the format a ledger created here is written in (an existing
        ledger keeps the one its ``FORMAT`` names)."""
        if format_version not in range(1, FORMAT_VERSION + 1):
            raise ValueError(f"no ledger format version {format_version!r}")
        self.path = os.fspath(path)
        self.readonly = readonly
        self.format_version = format_version
        self._txlog_path = os.path.abspath(os.path.join(self.path, "txlog"))
        self.recovery_notes = []
        self._fds: dict[str, int] = {}
        self._lock_fd: int | None = None
        # per transaction (0-based): record offset, payload length, extra length
        self._off: list[int] = []
        self._plen: list[int] = []
        self._elen: list[int] = []
        self._recovered = False  # set once _recover has run: only then is there derived data to persist
        try:
            self._open_dir(wait)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- opening
    def _open_dir(self, wait: bool | float) -> None:
        fmt_path = os.path.join(self.path, "FORMAT")
        if not os.path.isdir(self.path):
            if self.readonly:
                raise FormatError(f"no ledger at {self.path!r} (opened read-only)")
            try:
                os.makedirs(self.path, exist_ok=True)
            except OSError as e:
                raise StorageError(f"cannot create ledger directory {self.path!r}: {e}") from e
        if not os.path.exists(fmt_path):
            foreign = sorted(set(os.listdir(self.path)) - {"LOCK"})
            if foreign:
                raise FormatError(
                    f"{self.path!r} is not an immudoc ledger (no FORMAT file; it holds "
                    f"{', '.join(foreign[:5])})"
                )
            if self.readonly:
                raise FormatError(f"no ledger at {self.path!r} (opened read-only)")
            self._lock(wait)
            self._create()
        else:
            self._check_format(fmt_path)
            self._check_txlog()  # before taking the lock: a failed open changes nothing
            if not self.readonly:
                self._lock(wait)
        self._check_txlog()
        flags = os.O_RDONLY if self.readonly else os.O_RDWR | os.O_CREAT
        for name in ("txlog", "txindex", "tree"):
            p = os.path.join(self.path, name)
            if self.readonly and not os.path.exists(p):
                continue
            try:
                self._fds[name] = os.open(p, flags, 0o644)
            except OSError as e:
                raise StorageError(f"cannot open {p!r}: {e}") from e
            if not stat.S_ISREG(os.fstat(self._fds[name]).st_mode):  # a reader may open a directory
                raise StorageError(f"cannot open {p!r}: [Errno {errno.EISDIR}] Is a directory, not a file")
        self._recover()
        if self._lock_fd is not None:
            self._note_holder(self._lock_fd)

    def _check_txlog(self) -> None:
        if not os.path.exists(os.path.join(self.path, "txlog")):
            raise FormatError(f"ledger {self.path!r} is missing its transaction log 'txlog'")

    def _create(self) -> None:
        try:
            for name in ("txlog", "txindex", "tree"):
                fd = os.open(os.path.join(self.path, name), os.O_RDWR | os.O_CREAT, 0o644)
                os.fsync(fd)
                os.close(fd)
            data = {"format": FORMAT_NAME, "version": self.format_version}
            atomic.write_json(os.path.join(self.path, "FORMAT"), data, os.path.join(self.path, "FORMAT.tmp"))
        except OSError as e:
            raise StorageError(f"cannot create a ledger in {self.path!r}: {e}") from e

    def _check_format(self, fmt_path: str) -> None:
        try:
            with open(fmt_path, "rb") as f:
                meta = json.loads(f.read(4096))
        except (OSError, ValueError) as e:
            raise FormatError(f"{fmt_path!r} is unreadable or not a ledger FORMAT file: {e}") from e
        if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
            raise FormatError(f"{self.path!r} is not an immudoc ledger ({fmt_path!r} says otherwise)")
        version = meta.get("version")
        if type(version) is not int or version < 1 or version > FORMAT_VERSION:
            raise FormatError(
                f"ledger {self.path!r} has format version {version!r}; this immudoc reads "
                f"versions 1 to {FORMAT_VERSION} (upgrade immudoc to open it)"
            )
        self.format_version = version

    def _lock(self, wait: bool | float) -> None:
        p = os.path.join(self.path, "LOCK")
        try:
            fd = os.open(p, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            if e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
                raise ReadOnlyError(
                    f"cannot open {self.path!r} for writing ({e.strerror}); open it read-only"
                ) from e
            raise StorageError(f"cannot open {p!r}: {e}") from e
        deadline = None if wait is True else time.monotonic() + float(wait or 0)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if deadline is not None and time.monotonic() >= deadline:
                    try:
                        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                    except OSError:
                        holder = ""
                    os.close(fd)
                    raise LockedError(
                        f"ledger {self.path!r} is open for writing by another process "
                        f"(pid {holder or '?'}); open it read-only, or wait for it"
                    ) from None
                time.sleep(0.02)
        self._lock_fd = fd  # our pid goes in once the open has succeeded (_note_holder)

    def _note_holder(self, fd: int) -> None:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass

    # ---------------------------------------------------------------- recovery
    def _size(self, name: str) -> int:
        fd = self._fds.get(name)
        return os.fstat(fd).st_size if fd is not None else 0

    def _read_file(self, name: str) -> bytes:
        fd = self._fds.get(name)
        if fd is None:
            return b""
        size = os.fstat(fd).st_size
        return os.pread(fd, size, 0) if size else b""

    def _record_at(self, off: int, log_size: int) -> tuple[int, int] | None:
        """(payload_len, extra_len) of a complete, checksum-valid record at ``off``, else None."""
        if off + FRAME_SIZE > log_size:
            return None
        fd = self._fds["txlog"]
        plen, elen, crc = _FRAME.unpack(os.pread(fd, FRAME_SIZE, off))
        if off + FRAME_SIZE + plen + elen > log_size:
            return None
        if zlib.crc32(os.pread(fd, plen + elen, off + FRAME_SIZE)) != crc:
            return None
        return plen, elen

    def _recover(self) -> None:
        raw = self._read_file("txindex")
        # after txindex: a row is written only once its record is in the log, so every row
        # read here names a record that was complete (and acknowledged) before this size
        log_size = self._size("txlog")
        rows = [_IDX.unpack_from(raw, i) for i in range(0, len(raw) - len(raw) % IDX_SIZE, IDX_SIZE)]
        ok = True
        expect = 0
        listed = 0  # rows that chain from the start of the log, and where the last one starts
        last_listed = 0
        for off, plen, elen in rows:  # cheap structural check of the derived offsets
            if off != expect:
                ok = False
                break
            listed, last_listed = listed + 1, off
            expect = off + FRAME_SIZE + plen + elen
        if ok and rows:
            off, plen, elen = rows[-1]
            ok = expect <= log_size and self._record_at(off, log_size) == (plen, elen)
        chained = rows[:listed]
        if not ok:
            self.recovery_notes.append("txindex was damaged; rebuilt it from txlog")
            rows, expect = [], 0
        self._off = [r[0] for r in rows]
        self._plen = [r[1] for r in rows]
        self._elen = [r[2] for r in rows]
        end = expect
        while (rec := self._record_at(end, log_size)) is not None:
            self._off.append(end)
            self._plen.append(rec[0])
            self._elen.append(rec[1])
            end += FRAME_SIZE + rec[0] + rec[1]
        # txindex rows are written only after their records are durable: if the rows agree with
        # the records found and list more, committed transactions are gone (cut or damaged)
        lost = len(chained) > len(self._off) and [tuple(r) for r in chained[: len(self._off)]] == list(
            zip(self._off, self._plen, self._elen)
        )
        if end < log_size:
            if self._later_record_exists(end, log_size):
                raise CorruptionError(
                    f"transaction {len(self._off) + 1} in {self.path!r} is damaged and later "
                    "transactions follow it; run an audit and restore from a backup"
                )
            if end < last_listed or lost:  # only an unlisted last record can be torn
                raise CorruptionError(
                    f"transaction {len(self._off) + 1} in {self.path!r} is damaged, yet txindex "
                    f"lists {listed} committed transactions: this is not a torn write, and "
                    "nothing was discarded; run an audit and restore from a backup"
                )
            self.recovery_notes.append(
                f"discarded a torn tail of {log_size - end} bytes after transaction "
                f"{len(self._off)} (an interrupted commit that was never acknowledged)"
            )
            if not self.readonly:
                try:
                    os.ftruncate(self._fds["txlog"], end)
                    os.fsync(self._fds["txlog"])
                except OSError as e:
                    raise StorageError(f"cannot discard the torn tail: {e}") from e
        elif lost:
            raise CorruptionError(
                f"transaction {len(self._off) + 1} and later ones are missing from {self.path!r}: txindex "
                f"lists {len(chained)} committed transactions, the log holds {len(self._off)}; nothing "
                "was discarded; run an audit and restore from a backup"
            )
        self._log_end = end
        self._idx_persisted = 0
        if not self.readonly:
            want = self._index_bytes(0)
            if raw[: len(want)] != want or len(raw) != len(want):
                try:
                    os.ftruncate(self._fds["txindex"], 0)
                except OSError:
                    pass
            else:
                self._idx_persisted = len(self._off)
        self._tree_persisted = self._size("tree") // 32 * 32
        self._pending_tree = bytearray()
        self._recovered = True
        if not self.readonly:
            self._persist_derived()

    def _later_record_exists(self, start: int, log_size: int) -> bool:
        """Whether a checksum-valid record begins after ``start``: any record in the next
        4 MiB, and, anywhere after, a record of one of the next transaction ids (found by its
        header's version and id, so that a large damaged record cannot hide the ones after it)."""
        if self._later_record_by_id(start, log_size):
            return True
        tail = os.pread(self._fds["txlog"], min(log_size - start, _TORN_SCAN_LIMIT), start)
        unpack = _FRAME.unpack_from
        for p in range(1, len(tail) - FRAME_SIZE + 1):
            plen, elen, crc = unpack(tail, p)
            body = p + FRAME_SIZE
            if plen >= 53 and body + plen + elen <= len(tail):
                if zlib.crc32(tail[body : body + plen + elen]) == crc:
                    return True
        return False

    def _later_record_by_id(self, start: int, log_size: int) -> bool:
        first = len(self._off) + 1  # the damaged record's id; later ones follow it
        needles = [bytes([v]) + i.to_bytes(8, "big") for v in HEADER_SIZES for i in range(first, first + 8)]
        fd = self._fds["txlog"]
        chunk, overlap = 16 * 1024 * 1024, FRAME_SIZE + 9
        pos = start + 1
        while pos < log_size:
            data = os.pread(fd, min(chunk + overlap, log_size - pos), pos)
            for needle in needles:
                i = data.find(needle)
                while i >= 0:
                    rec = pos + i - FRAME_SIZE
                    if rec > start and self._record_at(rec, log_size) is not None:
                        return True
                    i = data.find(needle, i + 1)
            pos += chunk
        return False

    def _index_bytes(self, first: int) -> bytes:
        pack = _IDX.pack
        return b"".join(
            pack(self._off[i], self._plen[i], self._elen[i]) for i in range(first, len(self._off))
        )

    # ------------------------------------------------------------------ access
    def tx_count(self) -> int:
        return len(self._off)

    def append_many(self, records: Sequence[tuple[bytes, bytes, bytes]]) -> None:
        if self.readonly:
            raise ReadOnlyError("ledger is open read-only")
        fd = self._fds["txlog"]
        start = self._log_end
        frames: list[bytes] = []
        offsets: list[int] = []
        off = start
        for payload, extra, _nodes in records:
            crc = zlib.crc32(extra, zlib.crc32(payload))
            offsets.append(off)
            frames += (_FRAME.pack(len(payload), len(extra), crc), payload, extra)
            off += FRAME_SIZE + len(payload) + len(extra)
        try:
            at = start
            for part in frames:
                view = memoryview(part)
                while view:
                    n = os.pwrite(fd, view, at)
                    view = view[n:]
                    at += n
            os.fdatasync(fd)  # one durable write for all of them
            self._check_still_linked(fd)
        except OSError as e:
            try:  # leave nothing half-written behind
                os.ftruncate(fd, start)
            except OSError:
                pass
            raise StorageError(
                f"commit failed and was rolled back: {e.strerror or e}"
            ) from e
        for o, (payload, extra, tree_nodes) in zip(offsets, records):
            self._off.append(o)
            self._plen.append(len(payload))
            self._elen.append(len(extra))
            self._pending_tree += tree_nodes
        self._log_end = off
        self._persist_derived()

    def _check_still_linked(self, fd: int) -> None:
        """A commit counts only if it is durable where the ledger will be opened next: the open
        log file must still be the one at the ledger's path (not deleted, moved or replaced)."""
        mine = os.fstat(fd)
        try:
            there = os.stat(self._txlog_path)
        except OSError:
            there = None
        if mine.st_nlink == 0 or there is None or (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            raise OSError(
                errno.ENOENT,
                f"the transaction log {self._txlog_path!r} was deleted, moved or replaced while the "
                "ledger was open; nothing written now would be found when it is opened again",
            )

    def _persist_derived(self) -> None:
        """Write derived data lazily; a failure here is repaired on the next call or open."""
        try:
            if self._idx_persisted < len(self._off):
                data = self._index_bytes(self._idx_persisted)
                os.pwrite(self._fds["txindex"], data, self._idx_persisted * IDX_SIZE)
                self._idx_persisted = len(self._off)
            if self._pending_tree:
                os.pwrite(self._fds["tree"], self._pending_tree, self._tree_persisted)
                self._tree_persisted += len(self._pending_tree)
                self._pending_tree = bytearray()
        except OSError:
            pass

    def read_tx(self, tx_id: int) -> bytes:
        i = tx_id - 1
        return os.pread(self._fds["txlog"], self._plen[i], self._off[i] + FRAME_SIZE)

    def read(self, tx_id: int, start: int, length: int) -> bytes:
        """Up to ``length`` bytes of the payload from ``start``, never past the record: a
        damaged position or length (a read is not checksummed) gives a short read, which the
        caller reports as corruption, instead of an OSError or a huge allocation."""
        i = tx_id - 1
        plen = self._plen[i]
        if start < 0 or length <= 0 or start >= plen:
            return b""
        return os.pread(self._fds["txlog"], min(length, plen - start), self._off[i] + FRAME_SIZE + start)

    def erase_bytes(self, spans: Mapping[int, Sequence[tuple[int, int]]]) -> None:
        fd = self._fds["txlog"]
        try:
            for tx_id, ranges in spans.items():
                i = tx_id - 1
                plen, elen, off = self._plen[i], self._elen[i], self._off[i]
                for start, length in ranges:
                    if start < 0 or length < 0 or start + length > plen:
                        raise StorageError(
                            f"cannot erase bytes {start}..{start + length} of transaction {tx_id} ({plen} bytes)"
                        )
                    os.pwrite(fd, bytes(length), off + FRAME_SIZE + start)
                record = os.pread(fd, plen + elen, off + FRAME_SIZE)
                os.pwrite(fd, struct.pack(">I", zlib.crc32(record)), off + 8)
            os.fdatasync(fd)
        except OSError as e:
            raise StorageError(f"cannot erase in the transaction log: {e.strerror}") from None

    def record_intact(self, tx_id: int) -> bool:
        i = tx_id - 1
        fd = self._fds["txlog"]
        crc = _FRAME.unpack(os.pread(fd, FRAME_SIZE, self._off[i]))[2]
        return zlib.crc32(os.pread(fd, self._plen[i] + self._elen[i], self._off[i] + FRAME_SIZE)) == crc

    def read_extra(self, tx_id: int, start: int, length: int) -> bytes:
        """Like :meth:`read`, in the record's ``extra``."""
        i = tx_id - 1
        elen = self._elen[i]
        if start < 0 or length <= 0 or start >= elen:
            return b""
        return os.pread(
            self._fds["txlog"], min(length, elen - start), self._off[i] + FRAME_SIZE + self._plen[i] + start
        )

    def scan(self, first_tx: int = 1) -> Iterator[tuple[int, bytes, bytes]]:
        fd = self._fds["txlog"]
        count = len(self._off)
        if first_tx > count:
            return
        off = self._off[first_tx - 1] if first_tx >= 1 else 0
        buf, buf_off = b"", off
        chunk = 8 * 1024 * 1024
        for tx_id in range(max(first_tx, 1), count + 1):
            i = tx_id - 1
            if self._off[i] != off:
                raise CorruptionError(
                    f"transaction {tx_id}: txindex places it at byte {self._off[i]}, "
                    f"the log at byte {off}"
                )
            rel = off - buf_off
            if rel + FRAME_SIZE > len(buf):
                buf, buf_off, rel = os.pread(fd, chunk, off), off, 0
            if rel + FRAME_SIZE > len(buf):
                raise CorruptionError(f"transaction {tx_id}: the log ends inside its frame")
            plen, elen, crc = _FRAME.unpack_from(buf, rel)
            total = FRAME_SIZE + plen + elen
            if rel + total > len(buf):
                buf, buf_off, rel = os.pread(fd, max(chunk, total), off), off, 0
                if total > len(buf):
                    raise CorruptionError(f"transaction {tx_id}: its record is cut short")
            if (plen, elen) != (self._plen[i], self._elen[i]):
                raise CorruptionError(f"transaction {tx_id}: its frame disagrees with txindex")
            body = buf[rel + FRAME_SIZE : rel + total]
            if zlib.crc32(body) != crc:
                raise CorruptionError(f"transaction {tx_id}: stored bytes fail their checksum")
            yield tx_id, body[:plen], body[plen:]
            off += total

    def tree_nodes(self) -> bytes:
        data = self._read_file("tree")
        return data[: len(data) // 32 * 32]

    def tree_mark(self) -> tuple[int, int] | None:
        try:
            with open(os.path.join(self.path, TREE_MARK), "rb") as f:
                data = json.loads(f.read(256))
            count, crc = data["count"], data["crc"]
        except (OSError, ValueError, TypeError, KeyError):
            return None
        if type(count) is not int or type(crc) is not int or count < 0 or not 0 <= crc < 2**32:
            return None
        return count, crc

    def set_tree_mark(self, count: int, crc: int) -> None:
        if self.readonly or self._pending_tree:  # the file lacks nodes: leave the mark as it is
            return
        try:
            atomic.write_json(
                os.path.join(self.path, TREE_MARK), {"count": count, "crc": crc},
                os.path.join(self.path, TREE_MARK + ".tmp"),
            )
        except OSError:
            pass  # derived data: the next open checks every node instead

    def replace_tree(self, nodes: bytes) -> None:
        self._pending_tree = bytearray()
        if self.readonly:
            return
        try:
            os.ftruncate(self._fds["tree"], 0)
            os.pwrite(self._fds["tree"], nodes, 0)
            self._tree_persisted = len(nodes)
        except OSError:
            self._tree_persisted = self._size("tree") // 32 * 32

    def index_path(self) -> str:
        """``index.lmdb`` in the ledger directory (see kvcore.keystore)."""
        return os.path.join(self.path, "index.lmdb")

    def discard_legacy(self) -> None:
        """Delete ``index.snap`` (and its temporary file): the key index of format-1 ledgers
        before the on-disk index, which is no longer read or written."""
        if self.readonly:
            return
        for name in ("index.snap", "index.snap.tmp"):
            try:
                os.unlink(os.path.join(self.path, name))
            except OSError:
                pass

    def refresh(self) -> int:
        if self.readonly:
            log_size = self._size("txlog")
            end = self._log_end
            while (rec := self._record_at(end, log_size)) is not None:
                self._off.append(end)
                self._plen.append(rec[0])
                self._elen.append(rec[1])
                end += FRAME_SIZE + rec[0] + rec[1]
            self._log_end = end
        return len(self._off)

    def close(self) -> None:
        if not self.readonly and self._recovered and "txlog" in self._fds:
            self._persist_derived()
        for fd in self._fds.values():
            try:
                os.close(fd)
            except OSError:
                pass
        self._fds = {}
        if self._lock_fd is not None:
            try:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            except OSError:
                pass
            self._lock_fd = None
