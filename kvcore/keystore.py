"""The on-disk key index: an LMDB environment in the ledger directory (``index.lmdb/``).

Two named databases (docs/storage.md):

- ``revisions``: one row per indexed entry, spelled by :mod:`kvcore.keyrows` (a key's
  revisions are one run of rows, in transaction order; the value is the revision number);
- ``meta``: ``format`` (:data:`FORMAT`), ``policy`` (the unindexed prefixes,
  :meth:`kvcore.indexpolicy.IndexPolicy.encode`), ``tx`` (u64: the index holds the rows of
  transactions 1..tx and no others), ``root`` (the ledger root at ``tx``: which history the
  index belongs to), ``rows`` (u64: how many rows), ``entries`` (u64: entries of transactions
  1..tx, indexed or not).

Rows and metadata change together, in one LMDB write transaction (:meth:`KeyStore.append`), so
the metadata always describes the rows beside it. The environment is opened ``sync=True,
metasync=False``: a commit flushes its pages, not the metadata page, so a system crash may lose
the last commit but never leaves a damaged tree (LMDB's two metadata pages). It is derived data:
the ledger checks it when opening (:meth:`KeyStore.check`), catches it up from the log and
rebuilds it when in doubt (:mod:`kvcore.indexopen`).

Every LMDB error, and a row or value that is not spelled as it should be, is raised as
:class:`IndexDamagedError` (a CorruptionError).
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType

import lmdb

from kvcore import keyrows, lmdbenv
from kvcore.errors import CorruptionError, KvError, StorageError
from kvcore.lmdbenv import DbHandle


class IndexDamagedError(CorruptionError):
    """The on-disk key index (derived data) cannot be read or written as it should: LMDB
    reports damage, a row is malformed, or it does not match the log. The ledger rebuilds it
    from the log (a writer) or reads without it (a reader), so callers see it (as the
    CorruptionError it is) only if that fails."""


FORMAT = b"immudoc-keyindex 1"
"""The index's format: a different one is rebuilt."""
_U64 = struct.Struct(">Q")
_SUFFIX = keyrows.SUFFIX
_AFTER = keyrows.AFTER
_LONG_ROW = keyrows.LONG_ROW
_SHORT_MAX = keyrows.SHORT_MAX
_REV = [keyrows.value(i, b"", False) for i in range(256)]  # the values of revisions 1..255
_SLACK = 1 << 20  # zero bytes kept past the last page (see KeyStore._pad)
_META_KEYS = (b"format", b"policy", b"tx", b"root", b"rows", b"entries")


@dataclass(frozen=True)
class IndexMeta:
    """The ``meta`` database: what the rows beside it are."""

    format: bytes
    policy: bytes
    tx: int
    root: bytes
    rows: int
    entries: int


Batch = tuple[int, list[tuple[bytes, int]], int]
"""One transaction's share of an append: (tx_id, its indexed (key, loc) pairs in entry order,
its number of entries, indexed or not)."""


_DAMAGE = (
    lmdb.CorruptedError, lmdb.PageNotFoundError, lmdb.PanicError, lmdb.InvalidError,
    lmdb.VersionMismatchError, lmdb.BadValsizeError, lmdb.IncompatibleError, lmdb.BadDbiError,
)
_BUSY = (lmdb.ReadersFullError, lmdb.MapResizedError)


def _damaged(e: lmdb.Error) -> KvError:
    """A failed read: LMDB reports damage (IndexDamagedError), or too many readers at once."""
    if isinstance(e, _BUSY):
        return StorageError(f"the key index cannot be read now ({type(e).__name__}: {e})")
    return IndexDamagedError(f"the key index is damaged ({type(e).__name__}: {e})")


def _failed(e: lmdb.Error) -> KvError:
    """A failed write: damage (IndexDamagedError), or the disk refused it (StorageError: a
    full disk, an I/O error; LMDB wrote nothing of the transaction)."""
    if isinstance(e, _DAMAGE):
        return IndexDamagedError(f"the key index is damaged ({type(e).__name__}: {e})")
    return StorageError(f"the key index cannot be written ({type(e).__name__}: {e})")


class KeyStore:
    """An open ``index.lmdb`` environment (shared by the ledgers of this process that use it:
    :mod:`kvcore.lmdbenv`). Thread-safe: each call runs in its own LMDB transaction (reads in
    a read transaction, a snapshot; :meth:`snapshot` gives one for several reads)."""

    def __init__(self, shared: lmdbenv.SharedEnv, readonly: bool) -> None:
        self._shared = shared
        self._env = shared.env
        self._begin = shared.env.begin
        self._rows = shared.rows
        self._meta = shared.meta
        self.path = shared.path
        self.readonly = readonly
        """True for a reader's store: it never writes (even when the environment is writable)."""
        self._closed = False

    # ------------------------------------------------------------ lifecycle
    @classmethod
    def open(cls, path: str, *, readonly: bool) -> KeyStore:
        """Open the index in directory ``path`` (never creating anything). A reader opens it
        writable if this process may write it (so that a writer of this process can share it)
        and never writes. IndexDamagedError if it is missing or LMDB cannot open it."""
        writable = not readonly or lmdbenv.writable_here(path)
        try:
            shared = lmdbenv.acquire(path, writable=writable, create=False)
        except (lmdb.Error, OSError) as e:
            raise IndexDamagedError(f"the key index cannot be opened ({e})") from e
        return cls(shared, readonly)

    @classmethod
    def create(cls, path: str, policy: bytes) -> KeyStore:
        """A new, empty index (of no transaction) in directory ``path``, which must not exist.
        StorageError if it cannot be made."""
        try:
            os.mkdir(path)
            shared = lmdbenv.acquire(path, writable=True, create=True)
        except (lmdb.Error, OSError) as e:
            raise StorageError(f"cannot create the key index {path!r}: {e}") from e
        store = cls(shared, False)
        try:
            store.init_meta(policy)
        except BaseException:
            store.close()
            raise
        return store

    def init_meta(self, policy: bytes) -> None:
        """Write the metadata of an empty index (of no transaction)."""
        try:
            with self._env.begin(write=True, db=self._meta) as txn:
                for k, v in zip(_META_KEYS, (FORMAT, policy, _U64.pack(0), b"", _U64.pack(0), _U64.pack(0))):
                    txn.put(k, v)
            self._pad()
        except lmdb.Error as e:
            raise _failed(e) from e

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            lmdbenv.release(self._shared)

    def detach(self) -> None:
        """Its files are being replaced: later opens of the path open the new ones."""
        lmdbenv.detach(self._shared)

    def replaced(self) -> bool:
        """Whether the path now holds other files than this store's (a writer swapped in a
        rebuilt index, or removed it)."""
        return lmdbenv.identity(self.path) != self._shared.identity

    def sync(self) -> None:
        """Flush everything committed, metadata included, to disk."""
        try:
            self._env.sync(True)
        except lmdb.Error as e:
            raise _failed(e) from e

    # -------------------------------------------------------------- checks
    def meta(self) -> IndexMeta:
        try:
            with self._env.begin() as txn:
                return _read_meta(txn, self._meta)
        except lmdb.Error as e:
            raise _damaged(e) from e

    def check(self) -> IndexMeta:
        """Cheap structural checks (a few pages): the row count LMDB keeps equals the
        metadata's, and the first and last rows are well formed and of transactions the index
        reflects. Returns the metadata; IndexDamagedError says what is wrong."""
        try:
            with self._env.begin() as txn:
                meta = _read_meta(txn, self._meta)
                held = txn.stat(self._rows)["entries"]
                if held != meta.rows:
                    raise IndexDamagedError(f"the key index holds {held} rows, its metadata counts {meta.rows}")
                cur = txn.cursor(db=self._rows)
                for ok in (cur.first(), cur.last()):
                    if ok:
                        r, v = cur.item()
                        if not keyrows.well_formed(r, v) or keyrows.loc_of(r) >> 56 > meta.tx:
                            raise IndexDamagedError("the key index holds a malformed row")
                return meta
        except lmdb.Error as e:
            raise _damaged(e) from e

    # --------------------------------------------------------------- reads
    def snapshot(self) -> Snapshot:
        """A read transaction for several reads of one state of the index (use as a context
        manager)."""
        try:
            return Snapshot(self._env.begin(), self._rows, self._meta)
        except lmdb.Error as e:
            raise _damaged(e) from e

    def latest(self, key: bytes, bound: int | None) -> tuple[int, int] | None:
        """(location, revision) of ``key``'s newest revision below location ``bound`` (None:
        its newest), or None."""
        pre = key.replace(b"\x00", b"\x00\xff") + b"\x00"  # keyrows.prefix, inlined for short keys
        if len(pre) > _SHORT_MAX:
            pre = keyrows.prefix(key)
        try:
            txn = self._begin(db=self._rows)
            try:
                return _latest(txn.cursor(), pre, bound)
            finally:
                txn.abort()
        except lmdb.Error as e:
            raise _damaged(e) from e

    # --------------------------------------------------------------- write
    def append(self, batches: list[Batch], tx: int, root: bytes) -> int:
        """Add the rows of transactions after those the index reflects, in one LMDB write
        transaction, and set the metadata to ``tx`` (the last of them) and ``root`` (the
        ledger root at ``tx``). Returns the rows added. Nothing is written if it fails:
        StorageError if the disk refuses (full, say), IndexDamagedError if LMDB reports damage
        or a row is already there."""
        if self.readonly:
            raise IndexDamagedError("a reader's key index is not written")
        try:
            with self._env.begin(write=True) as txn:
                meta = _read_meta(txn, self._meta)
                if batches and batches[0][0] <= meta.tx:
                    raise IndexDamagedError(
                        f"the key index already reflects transaction {batches[0][0]} (it is at {meta.tx})"
                    )
                cur = txn.cursor(db=self._rows)
                newest: dict[bytes, int] = {}
                rows: list[tuple[bytes, bytes]] = []
                entries = 0
                seek, prev, last, item = cur.set_range, cur.prev, cur.last, cur.item
                for _tx_id, items, n in batches:
                    entries += n
                    for key, loc in items:  # (keyrows.prefix and _latest, inlined: the hot loop)
                        pre = key.replace(b"\x00", b"\x00\xff") + b"\x00"
                        long = len(pre) > _SHORT_MAX
                        if long:
                            pre = keyrows.prefix(key)
                        rev = newest.get(pre)
                        if rev is None:  # the key's newest revision in the index, if any
                            rev = 0
                            if prev() if seek(pre + _AFTER) else last():
                                r, v = item()
                                if len(r) == len(pre) + _SUFFIX and r.startswith(pre):
                                    rev = int.from_bytes(v[:8] if long else v, "big")
                        newest[pre] = rev = rev + 1
                        value = _REV[rev] if rev < 256 and not long else keyrows.value(rev, key, long)
                        rows.append((pre + loc.to_bytes(_SUFFIX, "big"), value))
                rows.sort()
                added = cur.putmulti(rows, overwrite=False)[1] if rows else 0
                if added != len(rows):
                    raise IndexDamagedError(f"{len(rows) - added} rows were already in the key index")
                put = txn.put
                m = self._meta
                put(b"tx", _U64.pack(tx), db=m)
                put(b"root", root, db=m)
                put(b"rows", _U64.pack(meta.rows + added), db=m)
                put(b"entries", _U64.pack(meta.entries + entries), db=m)
            self._pad()
            return added
        except lmdb.Error as e:
            raise _failed(e) from e

    def _pad(self) -> None:
        """Keep zero bytes after the last page in use, so that a damaged page whose offsets
        point past it reads zeros, not past the end of the mapped file (SIGBUS)."""
        data = os.path.join(self.path, "data.mdb")
        try:
            used = (self._env.info()["last_pgno"] + 1) * self._env.stat()["psize"]
            if os.path.getsize(data) < used + _SLACK // 2:
                os.truncate(data, used + _SLACK)
        except OSError:
            pass  # a full disk: the slack is a precaution


class Snapshot:
    """A read transaction of a :class:`KeyStore`: reads of one state of the index."""

    __slots__ = ("_txn", "_cur", "_rows_db", "_meta_db")

    def __init__(self, txn: lmdb.Transaction[bytes], rows: DbHandle, meta: DbHandle) -> None:
        self._txn = txn
        self._rows_db = rows
        self._meta_db = meta
        self._cur = txn.cursor(db=rows)

    def __enter__(self) -> Snapshot:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        try:
            self._txn.abort()
        except lmdb.Error:
            pass

    def meta(self) -> IndexMeta:
        try:
            return _read_meta(self._txn, self._meta_db)
        except lmdb.Error as e:
            raise _damaged(e) from e

    def tx(self) -> int:
        """The last transaction whose rows this state holds."""
        try:
            raw = self._txn.get(b"tx", db=self._meta_db)
        except lmdb.Error as e:
            raise _damaged(e) from e
        if raw is None or len(raw) != 8:
            raise IndexDamagedError("the key index's metadata is incomplete")
        return int(_U64.unpack(raw)[0])

    def latest(self, key: bytes, bound: int | None) -> tuple[int, int] | None:
        """As :meth:`KeyStore.latest`."""
        try:
            return _latest(self._cur, keyrows.prefix(key), bound)
        except lmdb.Error as e:
            raise _damaged(e) from e

    def revision(self, key: bytes, loc: int) -> int:
        """The revision number of ``key``'s revision at ``loc`` (0: no such row)."""
        pre = keyrows.prefix(key)
        try:
            v = self._txn.get(pre + loc.to_bytes(_SUFFIX, "big"), db=self._rows_db)
        except lmdb.Error as e:
            raise _damaged(e) from e
        if v is None:
            return 0
        rev = keyrows.revision_of(v, len(pre) > keyrows.SHORT_MAX)
        if rev <= 0:
            raise IndexDamagedError("the key index holds a malformed row")
        return rev

    def locations(self, key: bytes) -> list[int]:
        """Locations of every revision of ``key``, oldest first."""
        pre = keyrows.prefix(key)
        n = len(pre) + _SUFFIX
        out: list[int] = []
        cur = self._cur
        try:
            ok = cur.set_range(pre)
            while ok:
                r = cur.key()
                if len(r) != n or not r.startswith(pre):
                    break
                out.append(int.from_bytes(r[-_SUFFIX:], "big"))
                ok = cur.next()
        except lmdb.Error as e:
            raise _damaged(e) from e
        return out

    def keys_from(self, start: bytes, inclusive: bool, limit: int) -> list[bytes]:
        """Up to ``limit`` keys with rows, ``>= start`` (``>`` if not ``inclusive``), in order."""
        out: list[bytes] = []
        cur = self._cur
        try:
            ok = cur.set_range(keyrows.seek_from(start))
            while ok and len(out) < limit:
                r, v = cur.item()
                if len(r) == _LONG_ROW:  # a group of long keys: read it whole, in key order
                    group = keyrows.group_of(r)
                    keys: set[bytes] = set()
                    while ok:
                        r, v = cur.item()
                        if len(r) != _LONG_ROW or not r.startswith(group):
                            break
                        keys.add(keyrows.key_of(r, v))
                        ok = cur.next()
                    out += [k for k in sorted(keys) if k > start or (inclusive and k == start)]
                    ok = cur.set_range(keyrows.after_group(group))
                    continue
                k = keyrows.key_of(r, v)
                if k > start or (inclusive and k == start):
                    out.append(k)
                ok = cur.set_range(r[:-_SUFFIX] + _AFTER)
        except lmdb.Error as e:
            raise _damaged(e) from e
        return out[:limit]

    def rows(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (row, value), in order (the audit reads them)."""
        try:
            if not self._cur.first():
                return
            yield from self._cur.iternext()
        except lmdb.Error as e:
            raise _damaged(e) from e


def _latest(cur: lmdb.Cursor[bytes], pre: bytes, bound: int | None) -> tuple[int, int] | None:
    seek = pre + (_AFTER if bound is None else bound.to_bytes(_SUFFIX, "big"))
    ok = cur.prev() if cur.set_range(seek) else cur.last()
    if not ok:
        return None
    r, v = cur.item()
    if len(r) != len(pre) + _SUFFIX or not r.startswith(pre):
        return None
    rev = int.from_bytes(v[:8] if len(r) == _LONG_ROW else v, "big")
    if rev <= 0:
        raise IndexDamagedError("the key index holds a malformed row")
    return int.from_bytes(r[-_SUFFIX:], "big"), rev


def _read_meta(txn: lmdb.Transaction[bytes], db: DbHandle) -> IndexMeta:
    vals = [txn.get(k, db=db) for k in _META_KEYS]
    fmt, policy, tx, root, rows, entries = vals
    if fmt is None or policy is None or root is None or any(x is None or len(x) != 8 for x in (tx, rows, entries)):
        raise IndexDamagedError("the key index's metadata is incomplete")
    assert tx is not None and rows is not None and entries is not None
    return IndexMeta(fmt, policy, _U64.unpack(tx)[0], root, _U64.unpack(rows)[0], _U64.unpack(entries)[0])
