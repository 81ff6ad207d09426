"""The derived state on disk: an LMDB environment beside the ledger (``state.lmdb/``).

It holds what the database reads to answer queries without loading anything whole, all of it
derived from the ledger (the transaction log stays the only source of truth):

- ``colls``: collection name -> its definition (JSON, as committed);
- ``docs``: ``collection \\0 K`` -> where the document's current revision is in the ledger:
  ``u64 tx_id || u32 entry index of its header || u32 revision || u32 property count``
  (live documents only: a deletion removes the row); the document itself is read from the log;
- ``idx``: ``I || E || K`` -> ``u16 len(K)``: secondary index entries. ``I`` is the index's
  8-byte name (the first bytes of SHA-256 of ``collection \\0 field``); ``E`` the value's
  index key (:func:`docstore.collections.keyenc.encode_index_value`: prefix-free, so a range of
  values is a range of bytes), cut to its first 200 bytes (a range over such long values may
  then return a few more candidates: the filter is checked on every candidate anyway);
- ``multi``: ``I || K`` -> empty: documents whose path to an indexed field meets an array (the
  planner then uses one bound of a range only);
- ``smap``: the state map's nodes (:mod:`docstore.statemap`: the authenticated map whose root
  every transaction header commits to);
- ``meta``: ``tx`` (u64: the ledger transaction the state reflects), ``root`` (the ledger root
  at it), ``version``, ``count \\0 collection`` (u64 live documents), ``map.root`` and
  ``map.levels`` (the state map's root and node count per level), and ``damaged`` (set by an
  audit that found the state differs from the log: the next writable open rebuilds it).

Each committed transaction is applied in one LMDB write transaction after its log record is
durable (``sync=True, metasync=False``: LMDB keeps its integrity; a system crash may lose the
last one, which opening applies again from the log), so the state is never ahead of the log.
Readers use LMDB's snapshots: a read sees whole transactions. Layout in docs/storage.md.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias, cast

import lmdb
import orjson

from docstore.errors import CorruptDataError, StorageError
from docstore.statemap.tree import StateMap

if TYPE_CHECKING:
    from lmdb import _Database

_Db: TypeAlias = "_Database"
"""A named database's handle (py-lmdb's ``_Database``)."""

VERSION = 2
"""2: the state map (``smap``) added; a store of version 1 is rebuilt from the log."""
DIR = "state.lmdb"
REPLACED_CHECK_SECONDS = 0.05
"""How often a reader looks whether the files were replaced (:meth:`Store.compact`)."""
MAP_SIZE = 1 << 40  # address space reserved, not disk: the file grows as needed
_U64 = struct.Struct(">Q")
_LOC = struct.Struct(">QIII")
_LEN = struct.Struct(">H")
_META_MIN = 152  # a page header and LMDB's meta record
_NO_PAGE = (1 << 64) - 1


class Location(NamedTuple):
    """Where a document's current revision is: its header is entry ``entry`` of ledger
    transaction ``tx_id``, followed by its ``n`` property entries."""

    tx_id: int
    entry: int
    revision: int
    n: int


MAX_E = 200
"""Bytes of an index key kept in an entry (LMDB keys are at most 511 bytes)."""
MAX_K = 300
"""Bytes of a document id kept in a key; a longer id is cut and ends in 16 bytes of its hash,
the whole id then following in the row's value."""


def id_key(doc_id: str) -> bytes:
    """``K``: the id's bytes, or for an id longer than MAX_K bytes its first bytes and a hash
    (ids are UTF-8, so no key byte of an id is 0xFF)."""
    raw = doc_id.encode()
    if len(raw) <= MAX_K:
        return raw
    return raw[: MAX_K - 16] + hashlib.sha256(raw).digest()[:16]


def _full_id(k: bytes, tail: bytes) -> str:
    """The id of key part ``k`` (``tail``: the whole id, stored when ``k`` is cut)."""
    return (tail or k).decode()


def doc_key(coll: str, doc_id: str) -> bytes:
    return coll.encode() + b"\x00" + id_key(doc_id)


def _index_prefix(coll: str, field: str) -> bytes:
    return hashlib.sha256(coll.encode() + b"\x00" + field.encode()).digest()[:8]


def _cut(e: bytes) -> bytes:
    return e[:MAX_E]


def _row_range(prefix: bytes, start: bytes | None, stop: bytes | None) -> tuple[bytes, bytes]:
    """The rows ``[lo, hi)`` of an index (``prefix``) whose value key lies in ``[start, stop)``
    (None: unbounded), widened where a bound is longer than the part of a value a row keeps."""
    lo = prefix + (_cut(start) if start else b"")
    if stop is None:
        return lo, prefix + b"\xff" * (MAX_E + MAX_K + 1)  # after every row of this index
    return lo, prefix + (stop if len(stop) <= MAX_E else _cut(stop) + b"\xff")


class Store:
    """The LMDB environment and its named databases (see the module); ``durable=False``: no
    fsync at commit (a throw-away store: an audit's rebuild)."""

    def __init__(self, path: str, readonly: bool, durable: bool = True) -> None:
        self.path = os.path.join(path, DIR)
        self.readonly = readonly
        self._durable = durable
        self.generation = 0
        """How many times this store took new files (:meth:`compact`, here or by another)."""
        self._next_check = time.monotonic() + REPLACED_CHECK_SECONDS
        try:
            if not readonly:
                os.makedirs(self.path, exist_ok=True)
            self._shared: _Shared | None = _acquire(self.path, readonly, durable)
        except lmdb.Error as e:
            raise StorageError(f"cannot open the derived state {self.path!r}: {e}") from None
        self._take(self._shared)

    def _take(self, shared: _Shared) -> None:
        self.env = shared.env
        self.meta, self.colls, self.docs, self.idx, self.multi, smap = shared.dbs
        self.smap = StateMap(smap, self.meta)

    def compact(self, erasure_tx: int = 0) -> None:
        """Replace the files with a clean copy (the writer, holding the commit lock, after an
        erasure): LMDB keeps freed pages, with whatever rows they held, until it reuses them, and
        the unused bytes of a page keep what a deleted row left there (so does LMDB's compacting
        copy, which copies pages whole); the copy is written row by row into new pages, and
        holds the live rows only. Other users of the old files open the new ones at
        their next read (:meth:`read` looks now and then). A crash midway leaves no derived
        state, or the old one: the next open rebuilds it, or compacts it again. ``erasure_tx``:
        the last erasure the files reflect (:meth:`compacted_through`)."""
        new, old = self.path + ".compact", self.path + ".old"
        for d in (new, old):
            shutil.rmtree(d, ignore_errors=True)
        os.makedirs(new)
        copy = lmdb.open(new, map_size=MAP_SIZE, max_dbs=8, subdir=True, lock=True, sync=False)
        try:  # row by row into new pages (LMDB's own compacting copy keeps each page's unused bytes)
            with self.env.begin(buffers=False) as src, copy.begin(write=True) as dst:
                for name, db in zip(_NAMES, self._shared.dbs if self._shared is not None else ()):
                    target = copy.open_db(name, txn=dst)
                    dst.cursor(db=target).putmulti(src.cursor(db=db).iternext(), append=True)
                # the copy says it is compacted, not these files: a crash before the swap leaves
                # them unmarked, compacted again at the next open
                dst.put(b"compacted", _U64.pack(erasure_tx), db=copy.open_db(b"meta", txn=dst))
            copy.sync(True)
        finally:
            copy.close()
        os.rename(self.path, old)
        os.rename(new, self.path)
        _fsync_dir(os.path.dirname(self.path))
        shutil.rmtree(old, ignore_errors=True)
        self._reopen()

    def _reopen(self) -> None:
        old, self._shared = self._shared, None
        try:
            self._shared = _acquire(self.path, self.readonly, self._durable)
        except lmdb.Error as e:
            raise StorageError(f"cannot open the derived state {self.path!r}: {e}") from None
        finally:
            if old is not None:
                _release(old)
        self._take(self._shared)
        self.generation += 1

    @staticmethod
    def file_problem(path: str) -> str | None:
        """What makes the LMDB file unsafe to open, or None. LMDB trusts its file (a file cut
        short would fault the process on first touch), so its two meta pages are checked
        first: the magic number and version, the page size, and that the pages they use (and
        the roots of the trees) lie inside the file."""
        name = os.path.join(path, DIR, "data.mdb")
        try:
            with open(name, "rb") as f:
                head = f.read(2 * 65536)
                size = os.fstat(f.fileno()).st_size
        except OSError as e:
            return f"cannot read {name!r}: {e.strerror}"
        if len(head) < 2 * _META_MIN:
            return "its file is too short"
        page = struct.unpack_from("<I", head, 40)[0]
        if page < 512 or page > 65536 or page & (page - 1) or len(head) < page + _META_MIN:
            return "its file has no valid meta page"
        for off in (0, page):
            magic, version = struct.unpack_from("<II", head, off + 16)
            last, _txnid = struct.unpack_from("<QQ", head, off + 136)
            roots = [struct.unpack_from("<Q", head, off + 40 + 48 * i + 40)[0] for i in range(2)]
            if magic != 0xBEEFC0DE or version != 1:
                return "its file has no valid meta page"
            if (last + 1) * page > size or any(r != _NO_PAGE and r > last for r in roots):
                return "its file is shorter than its meta pages say (cut or damaged)"
        return None

    @staticmethod
    def exists(path: str) -> bool:
        return os.path.isfile(os.path.join(path, DIR, "data.mdb"))

    @staticmethod
    def remove_leftovers(path: str) -> None:
        """Remove what a compaction that a crash interrupted left (:meth:`compact`)."""
        for suffix in (".compact", ".old"):
            shutil.rmtree(os.path.join(path, DIR) + suffix, ignore_errors=True)

    @staticmethod
    def remove(path: str) -> None:
        shutil.rmtree(os.path.join(path, DIR), ignore_errors=True)

    def close(self) -> None:
        shared, self._shared = self._shared, None
        if shared is not None:
            _release(shared)

    def read(self) -> lmdb.Transaction:
        now = time.monotonic()
        if now >= self._next_check:  # a writer may have compacted the files (an erasure)
            self._next_check = now + REPLACED_CHECK_SECONDS
            shared = self._shared
            if shared is not None and shared.identity != _identity(self.path) and _identity(self.path) is not None:
                self._reopen()
        return self.env.begin(write=False, buffers=False)

    def write(self) -> lmdb.Transaction:
        return self.env.begin(write=True, buffers=False)

    # ------------------------------------------------------------------- meta
    def reflected(self, txn: lmdb.Transaction) -> tuple[int, bytes, int] | None:
        """(transaction, root, version) the state reflects, or None for a new store."""
        tx = _get(txn, b"tx", self.meta)
        if tx is None:
            return None
        root = _get(txn, b"root", self.meta) or b""
        version = _get(txn, b"version", self.meta)
        return _U64.unpack(tx)[0], root, _U64.unpack(version)[0] if version else 0

    def set_reflected(self, txn: lmdb.Transaction, tx_id: int, root: bytes) -> None:
        txn.put(b"tx", _U64.pack(tx_id), db=self.meta)
        txn.put(b"root", root, db=self.meta)
        txn.put(b"version", _U64.pack(VERSION), db=self.meta)

    def compacted_through(self) -> int:
        """The last erasure (its transaction) after which these files were compacted (0: none)."""
        with self.read() as txn:
            raw = _get(txn, b"compacted", self.meta)
        return _U64.unpack(raw)[0] if raw else 0

    def set_compacted(self, erasure_tx: int) -> None:
        """Record that the files hold nothing of the erasures up to ``erasure_tx``."""
        with self.write() as txn:
            txn.put(b"compacted", _U64.pack(erasure_tx), db=self.meta)

    def mark_damaged(self, txn: lmdb.Transaction, why: str) -> None:
        """Record that an audit found this state differs from the log (the next writable open
        rebuilds it)."""
        txn.put(b"damaged", why.encode()[:400], db=self.meta)

    def mark_map_stale(self, txn: lmdb.Transaction) -> None:
        """Record that a commit left the state map behind (a benchmark without it): the next
        open rebuilds the store."""
        txn.put(b"map.stale", b"1", db=self.meta)

    def map_stale(self, txn: lmdb.Transaction) -> bool:
        return _get(txn, b"map.stale", self.meta) is not None

    def damaged(self, txn: lmdb.Transaction) -> bool:
        return _get(txn, b"damaged", self.meta) is not None

    def count(self, txn: lmdb.Transaction, coll: str) -> int:
        raw = _get(txn, b"count\x00" + coll.encode(), self.meta)
        return _U64.unpack(raw)[0] if raw else 0

    def add_count(self, txn: lmdb.Transaction, coll: str, delta: int) -> None:
        if delta:
            key = b"count\x00" + coll.encode()
            raw = _get(txn, key, self.meta)
            txn.put(key, _U64.pack((_U64.unpack(raw)[0] if raw else 0) + delta), db=self.meta)

    # ------------------------------------------------------------ definitions
    def definitions(self, txn: lmdb.Transaction) -> dict[str, dict[str, Any]]:
        out = {}
        for k, v in _rows(txn.cursor(db=self.colls)):
            out[k.decode()] = orjson.loads(v)
        return out

    def definition(self, txn: lmdb.Transaction, coll: str) -> dict[str, Any] | None:
        raw = _get(txn, coll.encode(), self.colls)
        return None if raw is None else orjson.loads(raw)

    def has_definition(self, txn: lmdb.Transaction, coll: str) -> bool:
        return _get(txn, coll.encode(), self.colls) is not None

    def set_definition(self, txn: lmdb.Transaction, coll: str, meta: dict[str, Any]) -> None:
        txn.put(coll.encode(), orjson.dumps(meta), db=self.colls)

    # -------------------------------------------------------------- documents
    def location(self, txn: lmdb.Transaction, coll: str, doc_id: str) -> Location | None:
        raw = _get(txn, doc_key(coll, doc_id), self.docs)
        return None if raw is None else _decode_loc(raw[: _LOC.size])

    def locations(self, txn: lmdb.Transaction, coll: str) -> Iterator[tuple[str, Location]]:
        """(id, location) of every live document of ``coll``, in id order."""
        prefix = coll.encode() + b"\x00"
        cut = len(prefix)
        cur = txn.cursor(db=self.docs)
        if not cur.set_range(prefix):
            return
        for k, v in _rows(cur):
            if not k.startswith(prefix):
                return
            yield _full_id(k[cut:], v[_LOC.size :]), _decode_loc(v[: _LOC.size])

    def put_location(self, txn: lmdb.Transaction, coll: str, doc_id: str, loc: Location) -> bool:
        """Set the document's location; True if it was not live before."""
        k = id_key(doc_id)
        value = _LOC.pack(*loc) + (doc_id.encode() if len(k) == MAX_K and k != doc_id.encode() else b"")
        return txn.replace(coll.encode() + b"\x00" + k, value, db=self.docs) is None

    def delete_location(self, txn: lmdb.Transaction, coll: str, doc_id: str) -> bool:
        return txn.delete(doc_key(coll, doc_id), db=self.docs)

    # ---------------------------------------------------------------- indexes
    def index_put(self, txn: lmdb.Transaction, coll: str, field: str, keys: list[bytes], doc_id: str) -> None:
        prefix, k_id = _index_prefix(coll, field), id_key(doc_id)
        value = _LEN.pack(len(k_id)) + (doc_id.encode() if len(k_id) == MAX_K and k_id != doc_id.encode() else b"")
        for k in keys:
            txn.put(prefix + _cut(k) + k_id, value, db=self.idx)

    def index_delete(self, txn: lmdb.Transaction, coll: str, field: str, keys: list[bytes], doc_id: str) -> None:
        prefix, k_id = _index_prefix(coll, field), id_key(doc_id)
        for k in keys:
            txn.delete(prefix + _cut(k) + k_id, db=self.idx)

    def index_delete_doc(self, txn: lmdb.Transaction, coll: str, field: str, doc_id: str) -> None:
        """Remove every row of ``doc_id`` from an index (a scan of that index: for erasures,
        whose old values are gone)."""
        prefix, k_id = _index_prefix(coll, field), id_key(doc_id)
        cur = txn.cursor(db=self.idx)
        doomed = []
        if cur.set_range(prefix):
            for k, v in _rows(cur):
                if not k.startswith(prefix):
                    break
                n = _LEN.unpack(v[:2])[0]
                if k[len(k) - n :] == k_id and (not v[2:] or v[2:] == doc_id.encode()):
                    doomed.append(k)
        cur.close()
        for k in doomed:
            txn.delete(k, db=self.idx)

    def index_ids(
        self, txn: lmdb.Transaction, coll: str, field: str, ranges: list[tuple[bytes | None, bytes | None]]
    ) -> Iterator[str]:
        """Ids of documents with an index key in one of the byte ``ranges`` ``[start, stop)``
        (None: unbounded), in (key, id) order; an id may repeat (multikey, or ranges over values
        whose keys were cut, which widen to the cut)."""
        prefix = _index_prefix(coll, field)
        cur = txn.cursor(db=self.idx)
        for start, stop in ranges:
            lo, hi = _row_range(prefix, start, stop)
            if not cur.set_range(lo):
                continue
            for k, v in _rows(cur):
                if k >= hi:
                    break
                n = _LEN.unpack(v[:2])[0]
                yield _full_id(k[len(k) - n :], v[2:])

    @staticmethod
    def rows_in(
        coll: str, field: str, keys: list[bytes], doc_id: str, ranges: list[tuple[bytes | None, bytes | None]]
    ) -> bool:
        """Whether :meth:`index_ids` over ``ranges`` yields ``doc_id``, whose index keys in the
        index of ``coll.field`` are ``keys`` (its rows compared as that scan compares them)."""
        prefix, k_id = _index_prefix(coll, field), id_key(doc_id)
        rows = [prefix + _cut(k) + k_id for k in keys]
        for start, stop in ranges:
            lo, hi = _row_range(prefix, start, stop)
            if any(lo <= r < hi for r in rows):
                return True
        return False

    def drop_index(self, txn: lmdb.Transaction, coll: str, field: str) -> None:
        for db in (self.idx, self.multi):
            prefix = _index_prefix(coll, field)
            cur = txn.cursor(db=db)
            if cur.set_range(prefix):
                while _key(cur).startswith(prefix):
                    if not cur.delete():
                        break
            cur.close()

    def set_multi(self, txn: lmdb.Transaction, coll: str, field: str, doc_id: str, meets_array: bool) -> None:
        key = _index_prefix(coll, field) + id_key(doc_id)
        if meets_array:
            txn.put(key, b"", db=self.multi)
        else:
            txn.delete(key, db=self.multi)

    def multikey(self, txn: lmdb.Transaction, coll: str, field: str) -> bool:
        prefix = _index_prefix(coll, field)
        cur = txn.cursor(db=self.multi)
        return bool(cur.set_range(prefix)) and _key(cur).startswith(prefix)

    # ------------------------------------------------------------------ audit
    def dump(self, txn: lmdb.Transaction) -> Iterator[tuple[str, bytes, bytes]]:
        """Every row, database by database, in key order (the audit compares two stores)."""
        for name, db in (
            ("colls", self.colls), ("docs", self.docs), ("idx", self.idx), ("meta", self.meta),
            ("multi", self.multi), ("smap", self.smap.db),
        ):  # in the order of their names (the audit merges two dumps by (name, key))
            for k, v in _rows(txn.cursor(db=db)):
                if name != "meta" or k.startswith((b"count\x00", b"map.root", b"map.levels")):
                    yield name, k, v


# ---------------------------------------------------------------- one environment a process
class _Shared:
    """An LMDB environment shared by the stores of one path in this process (LMDB forbids
    opening an environment twice in a process: a database open for writing and again read-only
    in the same process share it), closed by its last user."""

    __slots__ = ("env", "dbs", "identity", "writable", "durable", "users")

    def __init__(self, env: lmdb.Environment, dbs: tuple[Any, ...], identity: tuple[int, ...] | None,
                 writable: bool, durable: bool) -> None:
        self.env = env
        self.dbs = dbs
        self.identity = identity
        self.writable = writable
        self.durable = durable
        self.users = 1


_registry: dict[str, _Shared] = {}
_registry_lock = threading.Lock()
_registry_pid = os.getpid()
_NAMES = (b"meta", b"colls", b"docs", b"idx", b"multi", b"smap")


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _identity(path: str) -> tuple[int, ...] | None:
    """Which files the path names now (device and inode of ``data.mdb``): a store rebuilt and
    swapped in is new files, which this process must open anew."""
    try:
        st = os.stat(os.path.join(path, "data.mdb"))
    except OSError:
        return None
    return (st.st_dev, st.st_ino)


def _acquire(path: str, readonly: bool, durable: bool) -> _Shared:
    """This process's environment at ``path``, opened now unless a store of this process has
    it open on the same files. A reader opens it writable when it may write its files (so that
    a writer of this process can share it; the reader never writes)."""
    global _registry_pid
    real = os.path.realpath(path)
    with _registry_lock:
        if os.getpid() != _registry_pid:  # a child made by fork: the parent's environments are not ours
            _registry.clear()
            _registry_pid = os.getpid()
        shared = _registry.get(real)
        if shared is not None and shared.identity == _identity(real) and shared.durable == durable:
            if not readonly and not shared.writable:
                raise lmdb.ReadonlyError(f"{real!r} is open read-only in this process")
            shared.users += 1
            return shared
        writable = not readonly or (
            os.path.isfile(os.path.join(real, "data.mdb"))
            and all(os.access(os.path.join(real, f), os.W_OK) for f in ("data.mdb", "lock.mdb"))
        )
        env = lmdb.open(
            real, map_size=MAP_SIZE, max_dbs=8, readonly=not writable, sync=durable, metasync=False,
            readahead=False, lock=True, create=not readonly, subdir=True, max_readers=1024,
        )
        try:
            dbs = tuple(env.open_db(name, create=not readonly) for name in _NAMES)
        except BaseException:
            env.close()
            raise
        shared = _Shared(env, dbs, _identity(real), writable, durable)
        _registry[real] = shared
        return shared


def _release(shared: _Shared) -> None:
    with _registry_lock:
        shared.users -= 1
        if shared.users > 0:
            return
        for real, s in list(_registry.items()):
            if s is shared:
                del _registry[real]
        if os.getpid() == _registry_pid:
            shared.env.close()


# py-lmdb returns bytes when a transaction is begun with buffers=False (as here); its type
# stubs also allow memoryview
def _get(txn: lmdb.Transaction, key: bytes, db: _Db) -> bytes | None:
    return cast("bytes | None", txn.get(key, db=db))


def _rows(cur: lmdb.Cursor) -> Iterator[tuple[bytes, bytes]]:
    return cast("Iterator[tuple[bytes, bytes]]", iter(cur))


def _key(cur: lmdb.Cursor) -> bytes:
    return cast(bytes, cur.key())


def _decode_loc(raw: bytes) -> Location:
    try:
        return Location(*_LOC.unpack(raw))
    except struct.error:
        raise CorruptDataError("a document location in the derived state is damaged") from None
