"""A backend on PostgreSQL (issue 17): the transaction payloads and the ledger tree in tables of
one database (docs/scale-out.md), through psycopg 3 (``pip install 'immudoc[postgres]'``).

Tables (created on first open, in the connection's schema)::

    kv_meta (name text primary key, value bytea)          -- format, version, tree mark
    kv_head (id int primary key = 1, tx_count bigint)     -- the row an append locks
    kv_tx   (tx_id bigint primary key, payload bytea, extra bytea, crc bigint)
    kv_tree (seq bigint primary key, nodes bytea)         -- ledger-tree node hashes, in order

A transaction's row holds the same bytes as a record of the file backend (``crc`` is the
CRC-32 of payload and extra, checked by :meth:`scan`); an append inserts it, its tree nodes
and the new count in one PostgreSQL transaction, under a row lock on ``kv_head`` taken by
:meth:`append_lock` before the ledger builds the transaction, and returns once PostgreSQL
committed it (durable with ``synchronous_commit`` on, its default). Any number of processes
may write at once (``many_writers``): the row lock serializes their appends, and each takes
in the others' transactions under it first, so the transactions and the tree stay one chain.
With ``one_writer=True`` a writer holds a session advisory lock instead, as the file backend's
``LOCK``. Readers need no lock and may read from a hot standby.
Payloads are stored uncompressed (``STORAGE EXTERNAL``) so that reading a slice of one reads
only the chunks it needs; small payloads are kept whole in a bounded cache (they never change).
"""

from __future__ import annotations

import hashlib
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from kvcore.errors import CorruptionError, FormatError, LockedError, ReadOnlyError, StorageError
from kvcore.storage.base import Storage
from kvcore.tree import node_count

FORMAT_NAME = b"immudoc-kvcore"
FORMAT_VERSION = 2
LOCK_KEY = 0x696D6D75646F63  # "immudoc": the writer's session advisory lock
CACHE_BYTES = 128 * 1024 * 1024
"""Payload bytes kept in memory, at most this many in all (least recently used out): small
transactions whole, large ones by CHUNK (committed rows never change, so the cache is never
stale; it plays the part the operating system's page cache plays for the files)."""
WHOLE_LIMIT = 1024 * 1024
"""A transaction larger than this (payload and extra) is cached by chunks, never whole."""
CHUNK = 256 * 1024
"""The unit in which a large transaction's payload and extra are read and cached."""
LARGE_IDS = 65_536
"""Large transactions remembered as such (so that reading one asks for its chunks only)."""
SCAN_BATCH = 64
TREE_CHUNK = 1 << 20

_SCHEMA = """
CREATE TABLE IF NOT EXISTS kv_meta (name text PRIMARY KEY, value bytea NOT NULL);
CREATE TABLE IF NOT EXISTS kv_head (id int PRIMARY KEY CHECK (id = 1), tx_count bigint NOT NULL);
CREATE TABLE IF NOT EXISTS kv_tx (
    tx_id bigint PRIMARY KEY, payload bytea NOT NULL, extra bytea NOT NULL, crc bigint NOT NULL
);
ALTER TABLE kv_tx ALTER COLUMN payload SET STORAGE EXTERNAL;
ALTER TABLE kv_tx ALTER COLUMN extra SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS kv_tree (seq bigint PRIMARY KEY, nodes bytea NOT NULL);
"""


def is_url(path: object) -> bool:
    """Whether ``path`` names a PostgreSQL database rather than a directory."""
    return isinstance(path, str) and path.startswith(("postgresql://", "postgres://"))


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:
        raise StorageError(
            "a PostgreSQL ledger needs psycopg 3: pip install 'immudoc[postgres]'"
        ) from None
    return psycopg


def redact(url: str) -> str:
    """The URL without its password (for messages)."""
    head, sep, tail = url.partition("://")
    creds, at, rest = tail.rpartition("@")
    if not at or ":" not in creds:
        return url
    return f"{head}{sep}{creds.split(':', 1)[0]}:***@{rest}"


class PostgresStorage(Storage):
    """A ledger in a PostgreSQL database (see the module)."""

    def __init__(
        self, url: str, *, readonly: bool = False, wait: bool | float = False, format_version: int = FORMAT_VERSION,
        one_writer: bool = False, index_dir: str | None = None,
    ) -> None:
        """``index_dir``: a local directory for the ledger's key index (derived data: checked
        against the log at open, rebuilt when it is another ledger's or damaged); None keeps
        the index in memory, built from the log at open."""
        if format_version not in (1, 2):
            raise ValueError(f"no ledger format version {format_version!r}")
        self.url = url
        self.readonly = readonly
        self.many_writers = not one_writer and not readonly
        self._in_append = False
        self._index_dir = index_dir
        self.format_version = format_version
        self.recovery_notes = []
        self._psycopg = _psycopg()
        self._lock = threading.RLock()
        self._listener: threading.Thread | None = None  # a writer's: LISTEN for others' commits
        self._notified: int | None = None  # the highest count another writer notified
        self._notify_lock = threading.Lock()
        self._channel_name: str | None = None
        self._cache_lock = threading.Lock()  # the payload cache's own: reads never wait for a commit
        self._thread = threading.local()  # .appending: this thread is inside append_lock (the head
        # row locked on self._conn: its reads belong to that PostgreSQL transaction)
        self._pool: Any = None  # psycopg_pool.ConnectionPool for reads, made at the first
        self._no_pool = False
        self._pool_errors: tuple[type[BaseException], ...] = ()
        self._cache: OrderedDict[Any, tuple[Any, int]] = OrderedDict()  # key -> (value, bytes)
        self._large: OrderedDict[int, None] = OrderedDict()  # transactions cached by chunks
        self._cached_bytes = 0
        self._count = 0
        self._closed = False
        try:
            self._conn = self._psycopg.connect(url, autocommit=True)
        except self._psycopg.Error as e:
            raise StorageError(f"cannot connect to {redact(url)}: {_first_line(e)}") from None
        try:
            self._open(wait)
        except BaseException:
            self.close()
            raise

    # ----------------------------------------------------------------- opening
    def _open(self, wait: bool | float) -> None:
        with self._sql() as cur:
            cur.execute("SELECT to_regclass('kv_head') IS NOT NULL")
            exists = cur.fetchone()[0]
        if not exists:
            if self.readonly:
                raise FormatError(f"no ledger in {redact(self.url)} (opened read-only)")
            if not self.many_writers:
                self._take_lock(wait)
            self._create()
        else:
            self._check_format()
            if not self.readonly and not self.many_writers:
                self._take_lock(wait)
        self._count = self._head()

    def _create(self) -> None:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                cur.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK_KEY + 1,))  # two creators: one at a time
                cur.execute(_SCHEMA)
                cur.execute("INSERT INTO kv_head VALUES (1, 0) ON CONFLICT DO NOTHING")
                cur.execute(
                    "INSERT INTO kv_meta VALUES ('format', %s), ('version', %s) ON CONFLICT DO NOTHING",
                    (FORMAT_NAME, str(self.format_version).encode()),
                )
        except self._psycopg.Error as e:
            if isinstance(e, self._psycopg.errors.InsufficientPrivilege):
                raise ReadOnlyError(f"cannot create a ledger in {redact(self.url)}: {_first_line(e)}") from None
            raise StorageError(f"cannot create a ledger in {redact(self.url)}: {_first_line(e)}") from None
        self._check_format()

    def _check_format(self) -> None:
        with self._sql() as cur:
            cur.execute("SELECT to_regclass('kv_meta') IS NOT NULL")
            if not cur.fetchone()[0]:
                raise FormatError(f"{redact(self.url)} is not an immudoc ledger (it has kv_head but no kv_meta)")
            cur.execute("SELECT name, value FROM kv_meta WHERE name IN ('format', 'version')")
            meta = {name: bytes(value) for name, value in cur.fetchall()}
        if meta.get("format") != FORMAT_NAME:
            raise FormatError(f"{redact(self.url)} is not an immudoc ledger (its kv_meta says otherwise)")
        try:
            version = int(meta.get("version", b""))
        except ValueError:
            version = -1
        if not 1 <= version <= FORMAT_VERSION:
            raise FormatError(
                f"ledger {redact(self.url)} has format version {version!r}; this immudoc reads versions 1 to "
                f"{FORMAT_VERSION} (upgrade immudoc to open it)"
            )
        self.format_version = version

    def _take_lock(self, wait: bool | float) -> None:
        deadline = None if wait is True else time.monotonic() + float(wait or 0)
        while True:
            with self._sql() as cur:
                cur.execute("SELECT pg_try_advisory_lock(%s)", (LOCK_KEY,))
                if cur.fetchone()[0]:
                    return
            if deadline is not None and time.monotonic() >= deadline:
                raise LockedError(
                    f"ledger {redact(self.url)} is open for writing by another process; open it read-only, or wait for it"
                )
            time.sleep(0.05)

    def _head(self) -> int:
        row = self._fetch_one("SELECT tx_count FROM kv_head WHERE id = 1", ())
        if row is None:
            raise CorruptionError(f"ledger {redact(self.url)}: its kv_head row is missing")
        return int(row[0])

    # ------------------------------------------------------------------ helpers
    def _fetch_one(self, sql: str, params: tuple[Any, ...]) -> Any:
        """The first row of a read of committed rows: through a connection of the storage's
        pool (up to READ_POOL), so that threads reading at once (a server's calls) neither wait
        for each other nor for a commit; through the storage's own connection in the thread
        appending (its reads belong to its PostgreSQL transaction) or without the pool. A
        pooled connection found broken (a network cut, a restart) is replaced and the read
        made once more (reads change nothing)."""
        if self._closed:
            raise StorageError("the PostgreSQL storage is closed")
        pool = None if getattr(self._thread, "appending", False) else self._read_pool()
        if pool is None:
            with self._sql() as cur:
                cur.execute(sql, params)
                return cur.fetchone()
        for attempt in range(2):
            try:
                with pool.connection(timeout=POOL_WAIT) as conn:
                    return conn.execute(sql, params).fetchone()
            except self._pool_errors as e:  # (a kind of OperationalError: caught first)
                raise StorageError(f"no connection to {redact(self.url)} within {POOL_WAIT:g} s: {e}") from None
            except self._psycopg.OperationalError as e:
                if attempt:
                    raise StorageError(f"PostgreSQL ({redact(self.url)}): {_first_line(e)}") from None
                pool.check()  # drop the connections a cut or a restart broke
            except self._psycopg.Error as e:
                raise StorageError(f"PostgreSQL ({redact(self.url)}): {_first_line(e)}") from None
        raise AssertionError("unreachable")

    def _read_pool(self) -> Any:
        """The read pool, made at the first read (None if psycopg_pool is missing)."""
        pool = self._pool
        if pool is not None or self._no_pool:
            return pool
        with self._notify_lock:
            if self._pool is None and not self._no_pool:
                try:
                    from psycopg_pool import ConnectionPool, PoolTimeout
                except ImportError:
                    self._no_pool = True
                    return None
                self._pool_errors = (PoolTimeout,)
                self._pool = ConnectionPool(
                    self.url, min_size=1, max_size=READ_POOL, kwargs={"autocommit": True}, open=True,
                    name=f"immudoc-read-{id(self)}", timeout=POOL_WAIT,
                )
            return self._pool

    @contextmanager
    def _sql(self) -> Iterator[Any]:
        """A cursor of the storage's connection, under its lock; psycopg's errors as StorageError."""
        if self._closed:
            raise StorageError("the PostgreSQL storage is closed")
        with self._lock:
            self._live()
            try:
                cur = self._conn.cursor()
            except self._psycopg.Error as e:
                raise StorageError(f"PostgreSQL ({redact(self.url)}): {_first_line(e)}") from None
            try:
                yield cur
            except self._psycopg.Error as e:
                raise StorageError(f"PostgreSQL ({redact(self.url)}): {_first_line(e)}") from None
            finally:
                cur.close()

    # --------------------------------------------------------------- interface
    def tx_count(self) -> int:
        return self._count

    def durable_count(self) -> int:
        """The head as the other writers' notifications tell it (no round trip) while this
        storage listens; else one look at ``kv_head``."""
        if self._listening():
            notified = self._notified
            if notified is not None:
                return max(notified, self._count)
        return self._head()

    def _listening(self) -> bool:
        """Whether the listener (LISTEN on CHANNEL, its own connection and thread) is up; starts
        it at the first call (then reads the head once, so nothing committed before it began is
        missed)."""
        if self._listener is not None and self._listener.is_alive():
            return True
        if self._closed or not self.many_writers:
            return False
        with self._lock:
            if self._listener is not None and self._listener.is_alive():
                return True
            try:
                conn = self._psycopg.connect(self.url, autocommit=True, **KEEPALIVE)
                conn.execute(f"LISTEN {self._channel()}")
            except self._psycopg.Error:
                self._notified = None
                return False
            self._notified = None
            thread = threading.Thread(target=self._listen, args=(conn,), name="immudoc-notify", daemon=True)
            self._listener = thread
            thread.start()
            self._note_head(self._head())  # after LISTEN: a later commit is notified
        return True

    def _note_head(self, count: int) -> None:
        with self._notify_lock:  # the highest seen: a notification and the first read may cross
            if self._notified is None or count > self._notified:
                self._notified = count

    def _channel(self) -> str:
        """This ledger's notification channel: one per schema (two ledgers in two schemas of
        one database must not hear each other's heads)."""
        name = self._channel_name
        if name is None:
            row = self._fetch_one("SELECT current_schema()", ())
            schema = str(row[0]) if row is not None and row[0] is not None else ""
            name = self._channel_name = f"{CHANNEL}_{hashlib.sha256(schema.encode()).hexdigest()[:16]}"
        return name

    def _listen(self, conn: Any) -> None:
        try:
            while not self._closed:
                for note in conn.notifies(timeout=LISTEN_POLL):
                    try:
                        count = int(note.payload)
                    except ValueError:
                        continue
                    self._note_head(count)
                if conn.closed or conn.broken:
                    break
        except Exception:  # noqa: BLE001 - the connection broke: durable_count reads the head instead
            pass
        finally:
            self._notified = None
            try:
                conn.close()
            except Exception:  # noqa: BLE001
                pass

    def index_path(self) -> str | None:
        return self._index_dir

    @contextmanager
    def append_lock(self) -> Iterator[int]:
        """Begin the append's PostgreSQL transaction and lock the head row in it (other
        writers wait here); yields the durable count. :meth:`append` commits it; leaving
        without one rolls it back."""
        if self.readonly:
            raise ReadOnlyError("the ledger is open read-only")
        with self._lock:
            self._live()
            try:
                self._conn.execute("BEGIN")
                row = self._conn.execute("SELECT tx_count FROM kv_head WHERE id = 1 FOR UPDATE").fetchone()
            except self._psycopg.Error as e:
                self._rollback()
                raise StorageError(f"cannot lock the head of {redact(self.url)}: {_first_line(e)}") from None
            if row is None:
                self._rollback()
                raise CorruptionError(f"ledger {redact(self.url)}: its kv_head row is missing")
            self._in_append = True
            self._thread.appending = True
            try:
                yield int(row[0])
            finally:
                self._thread.appending = False
                if self._in_append:  # no append (an error, a conflict): nothing written
                    self._in_append = False
                    self._rollback()

    def _live(self) -> None:
        """Connect again if the connection was lost (a network cut, the server restarted, the
        backend terminated): the call that met the loss failed with StorageError (nothing of
        it written, or, for a commit, see the message); the next one gets a new connection.
        Not a one-writer ledger's: its advisory lock went with the old session."""
        conn = self._conn
        if not (conn.closed or conn.broken) or self._in_append:
            return
        if not self.readonly and not self.many_writers:
            raise StorageError(
                f"the connection to {redact(self.url)} was lost, and with it this writer's lock: reopen the ledger"
            )
        try:
            self._conn = self._psycopg.connect(self.url, autocommit=True)
        except self._psycopg.Error as e:
            raise StorageError(f"cannot connect again to {redact(self.url)}: {_first_line(e)}") from None
        try:
            conn.close()
        except self._psycopg.Error:
            pass

    def _rollback(self) -> None:
        try:
            self._conn.execute("ROLLBACK")
        except self._psycopg.Error:
            pass  # a lost connection rolled it back already

    def append_many(self, records: Sequence[tuple[bytes, bytes, bytes]]) -> None:
        if self.readonly:
            raise ReadOnlyError("the ledger is open read-only")
        if not self._in_append:
            with self.append_lock() as count:
                if count != self._count:
                    raise StorageError(
                        f"ledger {redact(self.url)}: another writer appended transaction {self._count + 1}; "
                        "take it in first (refresh)"
                    )
                self.append_many(records)
            return
        first = self._count + 1
        last = self._count + len(records)
        rows = [
            (tx_id, payload, extra, zlib.crc32(extra, zlib.crc32(payload)))
            for tx_id, (payload, extra, _nodes) in enumerate(records, first)
        ]
        nodes = b"".join(r[2] for r in records)
        with self._lock:
            self._in_append = False
            try:
                conn = self._conn
                with conn.cursor() as cur:
                    cur.executemany("INSERT INTO kv_tx VALUES (%s, %s, %s, %s)", rows)
                if nodes:  # the next row number: another writer may have added rows since
                    conn.execute("INSERT INTO kv_tree SELECT coalesce(max(seq), 0) + 1, %s FROM kv_tree", (nodes,))
                moved = conn.execute(
                    "UPDATE kv_head SET tx_count = %s WHERE id = 1 AND tx_count = %s", (last, first - 1)
                ).rowcount
                conn.execute(f"NOTIFY {self._channel()}, '{last}'")  # delivered to listeners at COMMIT
                if moved != 1:
                    raise StorageError(
                        f"ledger {redact(self.url)}: its head is not at {first - 1}: another writer appended "
                        "without its lock"
                    )
                conn.execute("COMMIT")  # one durable commit for all of them
            except self._psycopg.Error as e:
                self._rollback()
                what = f"transaction {first}" if first == last else f"transactions {first}..{last}"
                raise StorageError(
                    f"commit of {what} to {redact(self.url)} failed: {_first_line(e)} "
                    "(if the connection was lost, it may have been committed: reopen the ledger to see)"
                ) from None
            except BaseException:
                self._rollback()
                raise
            self._count = last
            for tx_id, payload, extra, _crc in rows:
                self._remember(tx_id, payload, extra)

    def _remember(self, tx_id: int, payload: bytes, extra: bytes) -> None:
        """Cache a transaction just appended or read whole: small ones whole, large ones by
        chunks."""
        if len(payload) + len(extra) <= WHOLE_LIMIT:
            self._cache_put(tx_id, (payload, extra), len(payload) + len(extra))
            return
        self._mark_large(tx_id)
        for which, data in ((0, payload), (1, extra)):
            for i in range(0, len(data), CHUNK):
                chunk = data[i : i + CHUNK]
                self._cache_put((tx_id, which, i // CHUNK), chunk, len(chunk))

    def erase_bytes(self, spans: Mapping[int, Sequence[tuple[int, int]]]) -> None:
        """Zero bytes of a committed payload (erasure): one PostgreSQL transaction rewrites the
        row and its checksum. The row's old version stays in the table's files until
        PostgreSQL reclaims it (VACUUM; VACUUM FULL rewrites the files), and in WAL archives
        until they expire: docs/storage.md says what that means for backups."""
        if self.readonly:
            raise ReadOnlyError("the ledger is open read-only")
        self._live()
        psycopg = self._psycopg
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:  # all rows, or none
                for tx_id, ranges in spans.items():
                    cur.execute("SELECT payload, extra FROM kv_tx WHERE tx_id = %s FOR UPDATE", (tx_id,))
                    row = cur.fetchone()
                    if row is None:
                        raise StorageError(f"no transaction {tx_id} to erase in")
                    payload, extra = bytearray(row[0]), bytes(row[1])
                    for start, length in ranges:
                        if start < 0 or length < 0 or start + length > len(payload):
                            raise StorageError(f"cannot erase bytes {start}..{start + length} of transaction {tx_id}")
                        payload[start : start + length] = bytes(length)
                    data = bytes(payload)
                    cur.execute("UPDATE kv_tx SET payload = %s, crc = %s WHERE tx_id = %s",
                                (data, zlib.crc32(extra, zlib.crc32(data)), tx_id))
        except psycopg.Error as e:
            self._rollback()
            raise StorageError(f"cannot erase in {redact(self.url)}: {_first_line(e)}") from None
        with self._cache_lock:  # the cached bytes of those transactions are stale now
            for key in [k for k in self._cache if (k[0] if isinstance(k, tuple) else k) in spans]:
                _v, n = self._cache.pop(key)
                self._cached_bytes -= n

    def _cache_put(self, key: Any, value: Any, size: int) -> None:
        with self._cache_lock:
            if key in self._cache:
                return
            self._cache[key] = (value, size)
            self._cached_bytes += size
            while self._cached_bytes > CACHE_BYTES and self._cache:
                _k, (_v, n) = self._cache.popitem(last=False)
                self._cached_bytes -= n

    def _cache_get(self, key: Any) -> Any:
        with self._cache_lock:
            hit = self._cache.get(key)
            if hit is None:
                return None
            self._cache.move_to_end(key)
            return hit[0]

    def _mark_large(self, tx_id: int) -> None:
        with self._cache_lock:
            self._large[tx_id] = None
            if len(self._large) > LARGE_IDS:
                self._large.popitem(last=False)

    def _whole(self, tx_id: int) -> tuple[bytes, bytes] | None:
        """(payload, extra) of a small transaction (cached), or None for a large one."""
        hit = self._cache_get(tx_id)
        if hit is not None:
            return hit
        self._check_tx(tx_id)
        if tx_id in self._large:
            return None
        row = self._fetch_one(  # one round trip: the bytes only if the transaction is small
            "SELECT octet_length(payload) + octet_length(extra) <= %s, "
            "CASE WHEN octet_length(payload) + octet_length(extra) <= %s THEN payload END, "
            "CASE WHEN octet_length(payload) + octet_length(extra) <= %s THEN extra END "
            "FROM kv_tx WHERE tx_id = %s",
            (WHOLE_LIMIT, WHOLE_LIMIT, WHOLE_LIMIT, tx_id),
        )
        if row is None:
            raise CorruptionError(f"transaction {tx_id} is missing from {redact(self.url)}")
        if not row[0]:
            self._mark_large(tx_id)
            return None
        payload, extra = bytes(row[1]), bytes(row[2])
        self._remember(tx_id, payload, extra)
        return payload, extra

    def _check_tx(self, tx_id: int) -> None:
        if not 1 <= tx_id <= self._count:
            raise StorageError(f"transaction {tx_id} is not in the ledger (it holds {self._count})")

    def read_tx(self, tx_id: int) -> bytes:
        whole = self._whole(tx_id)
        if whole is not None:
            return whole[0]
        return bytes(self._fetch_one("SELECT payload FROM kv_tx WHERE tx_id = %s", (tx_id,))[0])

    def read(self, tx_id: int, start: int, length: int) -> bytes:
        return self._slice("payload", 0, tx_id, start, length)

    def read_extra(self, tx_id: int, start: int, length: int) -> bytes:
        return self._slice("extra", 1, tx_id, start, length)

    def _slice(self, column: str, which: int, tx_id: int, start: int, length: int) -> bytes:
        whole = self._whole(tx_id)
        if whole is not None:
            return whole[which][start : start + length]
        if length <= 0:
            return b""
        first, last = start // CHUNK, (start + length - 1) // CHUNK
        chunks = [self._cache_get((tx_id, which, i)) for i in range(first, last + 1)]
        missing = [first + j for j, c in enumerate(chunks) if c is None]
        if missing:  # the chunks from the first missing to the last missing: one round trip
            lo, hi = missing[0], missing[-1]
            row = self._fetch_one(
                f"SELECT substring({column} FROM %s FOR %s) FROM kv_tx WHERE tx_id = %s",
                (lo * CHUNK + 1, (hi - lo + 1) * CHUNK, tx_id),
            )
            if row is None:
                raise CorruptionError(f"transaction {tx_id} is missing from {redact(self.url)}")
            data = bytes(row[0])
            for i in range(lo, hi + 1):
                chunk = data[(i - lo) * CHUNK : (i - lo + 1) * CHUNK]
                if chunk:
                    self._cache_put((tx_id, which, i), chunk, len(chunk))
                chunks[i - first] = chunk
        joined = b"".join(c or b"" for c in chunks)
        offset = start - first * CHUNK
        return joined[offset : offset + length]

    def scan(self, first_tx: int = 1) -> Iterator[tuple[int, bytes, bytes]]:
        """Re-read transactions from the rows, checking each one's checksum and that none is
        missing. Inside an append (a writer taking in others' transactions, under the head
        lock) on the storage's connection; otherwise (an audit, a reader's refresh, which may
        take long while other threads commit) on a connection of its own."""
        first = max(first_tx, 1)
        last = self._count
        if first > last:
            return
        if getattr(self._thread, "appending", False):
            yield from self._scan_rows(self._conn, first, last)
            return
        try:
            own = self._psycopg.connect(self.url)
        except self._psycopg.Error as e:
            raise StorageError(f"cannot connect to {redact(self.url)}: {_first_line(e)}") from None
        try:
            with own.transaction():
                yield from self._scan_rows(own, first, last)
        except self._psycopg.Error as e:
            raise StorageError(f"PostgreSQL ({redact(self.url)}): {_first_line(e)}") from None
        finally:
            own.close()

    def _scan_rows(self, conn: Any, first: int, last: int) -> Iterator[tuple[int, bytes, bytes]]:
        expected = first
        with conn.cursor(name=f"kv_scan_{id(self)}_{first}") as cur:
            cur.itersize = SCAN_BATCH
            cur.execute(
                "SELECT tx_id, payload, extra, crc FROM kv_tx WHERE tx_id >= %s AND tx_id <= %s ORDER BY tx_id",
                (first, last),
            )
            for tx_id, payload, extra, crc in cur:
                if tx_id != expected:
                    raise CorruptionError(f"transaction {expected} is missing from {redact(self.url)}")
                payload, extra = bytes(payload), bytes(extra)
                if zlib.crc32(extra, zlib.crc32(payload)) != crc:
                    raise CorruptionError(f"transaction {tx_id}: stored bytes fail their checksum")
                yield tx_id, payload, extra
                expected += 1
        if expected != last + 1:
            raise CorruptionError(f"transaction {expected} is missing from {redact(self.url)}")

    def tree_nodes(self) -> bytes:
        parts = []
        with self._lock:
            try:
                with self._conn.transaction(), self._conn.cursor(name=f"kv_tree_{id(self)}") as cur:
                    cur.itersize = 4096
                    cur.execute("SELECT nodes FROM kv_tree ORDER BY seq")
                    for (nodes,) in cur:
                        parts.append(bytes(nodes))
            except self._psycopg.Error as e:
                raise StorageError(f"PostgreSQL ({redact(self.url)}): {_first_line(e)}") from None
        data = b"".join(parts)
        return data[: len(data) // 32 * 32]

    def replace_tree(self, nodes: bytes) -> None:
        """Replace the stored tree (a repair at open), under the head lock and only if ``nodes``
        are those of the ledger as it still is: with many writers, another may have appended
        since this one read the count (then its rows stay; the next open checks them again)."""
        if self.readonly:
            return
        with self._lock:
            try:
                self._conn.execute("BEGIN")
                row = self._conn.execute("SELECT tx_count FROM kv_head WHERE id = 1 FOR UPDATE").fetchone()
                if row is None or len(nodes) != node_count(int(row[0])) * 32:
                    self._rollback()
                    return
                self._conn.execute("DELETE FROM kv_tree")
                for seq, i in enumerate(range(0, len(nodes), TREE_CHUNK), start=1):
                    self._conn.execute("INSERT INTO kv_tree VALUES (%s, %s)", (seq, nodes[i : i + TREE_CHUNK]))
                self._conn.execute("COMMIT")
            except self._psycopg.Error as e:
                self._rollback()
                raise StorageError(f"cannot repair the tree in {redact(self.url)}: {_first_line(e)}") from None

    def tree_mark(self) -> tuple[int, int] | None:
        with self._sql() as cur:
            cur.execute("SELECT value FROM kv_meta WHERE name = 'tree_mark'")
            row = cur.fetchone()
        if row is None:
            return None
        try:
            count, crc = (int(x) for x in bytes(row[0]).split(b" "))
        except ValueError:
            return None
        return count, crc

    def set_tree_mark(self, count: int, crc: int) -> None:
        if self.readonly:
            return
        try:
            with self._sql() as cur:
                cur.execute(
                    "INSERT INTO kv_meta VALUES ('tree_mark', %s) ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (f"{count} {crc}".encode(),),
                )
        except StorageError:
            pass  # derived data: the next open checks the whole tree instead

    def refresh(self) -> int:
        self._count = self._head()
        return self._count



    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # the listener thread (a daemon) sees _closed within LISTEN_POLL and closes its own
        # connection: not waited for (a close that waited cost half a second, each time)
        pool = getattr(self, "_pool", None)
        if pool is not None:
            try:
                pool.close(timeout=5)
            except Exception:  # noqa: BLE001 - closing what may be broken
                pass
        conn = getattr(self, "_conn", None)
        if conn is not None:
            try:
                conn.close()  # ends the session: the writer's advisory lock goes with it
            except Exception:  # noqa: BLE001 - closing a broken connection
                pass
        self._cache.clear()


LISTEN_POLL = 0.5
"""Seconds the listener waits for a notification before looking whether the storage closed."""

KEEPALIVE = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 5, "keepalives_count": 3}
"""TCP keepalives of the listening connection, which otherwise only waits: a half-open one
(a peer gone without a word) is found out within about 25 s (on a Unix socket: unused)."""

CHANNEL = "immudoc_ledger"
"""The PostgreSQL notification channel on which every append announces the new head."""

READ_POOL = 8
"""Connections a storage reads through at most (besides its own, which commits)."""

POOL_WAIT = 10.0
"""Seconds a read waits for a pooled connection (or for the pool's first) before StorageError."""


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
