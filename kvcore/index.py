"""The ledger's key index: the on-disk store (:mod:`kvcore.keystore`) and, in memory, the
transactions it does not hold yet (an *overlay*).

What each process keeps in memory is bounded by what the writer has not yet indexed:

- a writer appends each committed transaction to the overlay once the log holds it durably,
  and moves the overlay into the store (one LMDB write transaction) once it holds more than
  ``lag`` entries: with ``lag=0``, the default, at every commit;
- a reader (``readonly=True``; another process may be writing) opens the store read-only and
  keeps in its overlay the transactions it has seen in the log that the store did not hold
  when it last looked (at open and :meth:`LedgerIndex.refresh`).

A read sees the store as of one LMDB read transaction plus the overlay's transactions after
the last one that state holds (so a transaction moved into the store meanwhile is counted
once). Without a usable store (no directory for one, a reader that cannot open it, a disk
that refuses to hold it) the overlay holds every transaction: the old in-memory index.

If LMDB reports damage while the ledger is open, a writer rebuilds the store from the log and
a reader goes on with an in-memory index (a recovery note says so), and the read is retried.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TypeVar

from kvcore import lmdbenv
from kvcore.errors import KvError, StorageError
from kvcore.indexopen import IndexLog, build, fill, indexed, present, remove_leftovers, validate
from kvcore.indexpolicy import IndexPolicy
from kvcore.keyindex import TX_SHIFT, KeyIndex
from kvcore.keystore import Batch, IndexDamagedError, KeyStore, Snapshot

T = TypeVar("T")


class Overlay:
    """Transactions the store does not hold: their (key, loc) pairs in a :class:`KeyIndex`,
    and the batches themselves, in order, to move them into the store."""

    __slots__ = ("index", "batches", "entries")

    def __init__(self) -> None:
        self.index = KeyIndex()
        self.batches: list[Batch] = []
        self.entries = 0
        """Entries of its transactions, indexed or not."""

    def add(self, batch: Batch) -> None:
        self.index.add_many(batch[1])
        self.batches.append(batch)
        self.entries += batch[2]

    def after(self, tx: int) -> Overlay:
        """A new overlay of the transactions after ``tx``."""
        out = Overlay()
        for b in self.batches:
            if b[0] > tx:
                out.add(b)
        return out

    def locs_after(self, key: bytes, tx: int) -> list[int]:
        """Locations of ``key``'s revisions written after transaction ``tx``, oldest first."""
        return [loc for loc in self.index.locations(key) if loc >> TX_SHIFT > tx]


View = tuple[KeyStore | None, Overlay, int]
"""What reads use: (the store or None, the overlay, a generation counted up when the store is
replaced)."""


class LedgerIndex:
    """Where each key's revisions are (locations and revision numbers), as of any transaction.

    Thread-safe. Writes (:meth:`add`, :meth:`flush`, :meth:`refresh`) are made under the
    ledger's commit lock, ``lock`` (re-entrant: a repair takes it from any read).
    """

    def __init__(
        self, path: str | None, policy: IndexPolicy, log: IndexLog, *, readonly: bool, lag: int,
        lock: threading.RLock, note: Callable[[str], None],
    ) -> None:
        self.path = path
        self.policy = policy
        self.readonly = readonly
        self.lag = lag
        """Entries the store may trail the log by (a writer's overlay holds them)."""
        self.write_error: str | None = None
        """Why the last move of the overlay into the store failed (None: it did not)."""
        self._log = log
        self._lock = lock
        self._ov_lock = threading.Lock()  # the overlay's ordered keys against its writer
        self._note = note
        self._view: View = (None, Overlay(), 0)
        self._count = 0
        self._rejected: tuple[int, ...] | None = None  # a reader's last refused store, by identity
        self._fresh = -1  # the generation last built from the log while open (not suspected again)
        self.progress: Callable[[int, int], None] | None = None
        """Called with (transactions indexed, of how many) while a writer builds or catches up
        the store at :meth:`open` (the ledger sets it for its open only)."""

    # ------------------------------------------------------------ lifecycle
    def open(self, count: int, newer: Callable[[], int]) -> None:
        """Open the index of a log of ``count`` transactions: check the store, catch it up
        or rebuild it (a writer), or read what it holds plus an overlay (a reader; ``newer()``
        re-reads the log when the store is ahead of what the reader saw, and returns the new
        count)."""
        self._count = count
        if self.path is None:
            self._set(None, self._memory(count))
        elif self.readonly:
            self._open_reader(count, newer)
        else:
            self._open_writer(count)

    def _open_writer(self, count: int) -> None:
        assert self.path is not None
        remove_leftovers(self.path)
        if count == 0 and not os.path.lexists(self.path):
            try:
                self._set(KeyStore.create(self.path, self.policy.encode()), Overlay())
            except KvError as e:
                self._note(f"the key index cannot be created ({e}); using an in-memory index")
                self._set(None, self._memory(count))
            return
        store = None
        try:
            if not present(self.path, self.readonly):
                raise IndexDamagedError("the key index is missing")
            store = KeyStore.open(self.path, readonly=False)
            meta = validate(store, self.policy, count, self._log)
        except IndexDamagedError as e:
            self._rebuild(count, str(e), store)
            return
        self._set(store, Overlay())
        if meta.tx < count:
            self._catch_up(store, meta.tx, count)

    def _catch_up(self, store: KeyStore, tx: int, count: int) -> None:
        """Append transactions tx+1..count of the log to the store, in chunks (after a crash:
        the writer's last commits). If the disk refuses, what is left stays in memory."""
        try:
            fill(store, self._log, self.policy, tx + 1, count, self.progress)
        except StorageError as e:
            self.write_error = str(e)
            try:
                self._set(store, self._tail(store.meta().tx, count))
            except IndexDamagedError as d:
                self._rebuild(count, str(d), store)
        except IndexDamagedError as e:
            self._rebuild(count, str(e), store)

    def _open_reader(self, count: int, newer: Callable[[], int]) -> None:
        assert self.path is not None
        store = None
        try:
            if not present(self.path, self.readonly):
                raise IndexDamagedError("the key index is missing")
            store = KeyStore.open(self.path, readonly=True)
            if store.check().tx > count:  # the writer indexed transactions this reader has not read yet
                count = self._count = newer()
            meta = validate(store, self.policy, count, self._log)
        except IndexDamagedError as e:
            if store is not None:
                store.close()
            self._reader_without_store(count, str(e))
            return
        self._set(store, self._tail(meta.tx, count))

    def _reader_without_store(self, count: int, reason: str) -> None:
        self._rejected = None if self.path is None else lmdbenv.identity(self.path)
        ov = self._memory(count)  # (raises if the log itself cannot be read)
        self._note(f"{reason}; reading with an in-memory index until a writer rebuilds it")
        self._set(None, ov)
        self._fresh = self._view[2]

    def _tail(self, tx: int, count: int) -> Overlay:
        ov = Overlay()
        for b in self._log.batches(tx + 1, count):
            ov.add(indexed(b, self.policy))
        return ov

    def _memory(self, count: int) -> Overlay:
        return self._tail(0, count)

    def _set(self, store: KeyStore | None, ov: Overlay) -> None:
        old = self._view[0]
        self._view = (store, ov, self._view[2] + (store is not old))

    def _rebuild(self, count: int, reason: str, old: KeyStore | None) -> None:
        assert self.path is not None
        self._note(f"{reason}; rebuilt it from the log")
        try:
            store: KeyStore | None = build(
                self.path, self.policy, self._log, count, lambda: old.detach() if old is not None else None,
                self.progress,
            )
            ov = Overlay()
        except (OSError, KvError) as e:
            ov = self._memory(count)  # (raises if the log itself cannot be read)
            store = None
            self._note(f"the key index cannot be rebuilt ({e}); using an in-memory index")
        self._set(store, ov)
        self._fresh = self._view[2]
        if old is not None:
            old.close()

    def close(self) -> None:
        """Move the overlay into the store (a writer) and let the store go."""
        if not self.readonly:
            try:
                self.flush()
            except KvError:
                pass  # derived data: the next open catches up from the log
        store = self._view[0]
        self._view = (None, Overlay(), self._view[2] + 1)
        if store is not None:
            store.close()

    def abandon(self) -> None:
        """Let the store go without writing anything (the ledger failed to open)."""
        store = self._view[0]
        self._view = (None, Overlay(), self._view[2] + 1)
        if store is not None:
            store.close()

    # --------------------------------------------------------------- writes
    def add(self, batch: Batch) -> None:
        """The writer committed ``batch`` (the log holds it durably): index it."""
        b = indexed(batch, self.policy)
        store, ov, _gen = self._view
        with self._ov_lock:
            ov.add(b)
        self._count = b[0]
        if store is not None and ov.entries > self.lag:
            self.flush()

    def add_many(self, batches: list[Batch]) -> None:
        """:meth:`add` for a group commit's transactions, moved to the store in one flush."""
        store, ov, _gen = self._view
        with self._ov_lock:
            for batch in batches:
                b = indexed(batch, self.policy)
                ov.add(b)
                self._count = b[0]
        if store is not None and ov.entries > self.lag:
            self.flush()

    def flush(self) -> None:
        """Move the overlay into the store, in one LMDB write transaction (a writer's, under
        the commit lock). If the disk refuses, the overlay stays (tried again at the next
        flush, and caught up from the log by the next open if the process stops first)."""
        store, ov, _gen = self._view
        if store is None or self.readonly or not ov.batches:
            return
        last = ov.batches[-1][0]
        try:
            store.append(ov.batches, last, self._log.root(last))
        except StorageError as e:
            self.write_error = str(e)
            return
        except IndexDamagedError as e:
            self._rebuild(self._count, str(e), store)
            return
        self.write_error = None
        self._view = (store, Overlay(), self._view[2])

    def checkpoint(self) -> None:
        """Move the overlay into the store and flush the store to disk, metadata included."""
        self.flush()
        store = self._view[0]
        if store is not None and not self.readonly:
            store.sync()

    def refresh(self, batches: list[Batch], count: int) -> None:
        """A reader read ``batches`` (its log's new transactions, up to ``count``): keep in the
        overlay those the store does not hold, and drop those it now holds. First opens the
        store anew if a writer replaced it (or made one where there was none)."""
        assert self.readonly
        store = self._view[0]
        if self.path is not None and present(self.path, self.readonly):
            ident = lmdbenv.identity(self.path)
            stale = store.replaced() if store is not None else ident != self._rejected
            if stale and self._reopen(count):
                return
        store, ov, _gen = self._view
        self._count = count
        if store is None:
            with self._ov_lock:
                for b in batches:
                    ov.add(indexed(b, self.policy))
            return
        try:
            held = store.meta().tx
        except IndexDamagedError as e:
            store.close()
            self._reader_without_store(count, str(e))
            return
        new = ov.after(held)
        for b in batches:
            if b[0] > held:
                new.add(indexed(b, self.policy))
        self._view = (store, new, self._view[2])

    def _reopen(self, count: int) -> bool:
        """Open the store a writer put at the path; False (the view unchanged) if it cannot be
        used (tried again once its files change, or once this reader has read as far)."""
        assert self.path is not None
        old = self._view[0]
        try:
            store = KeyStore.open(self.path, readonly=True)
        except IndexDamagedError:
            self._rejected = lmdbenv.identity(self.path)
            return False
        try:
            if store.check().tx > count:
                store.close()  # indexed past what this reader has read: next time
                return False
            meta = validate(store, self.policy, count, self._log)
        except IndexDamagedError:
            store.close()
            self._rejected = lmdbenv.identity(self.path)
            return False
        self._count = count
        self._set(store, self._tail(meta.tx, count))
        if old is not None:
            old.close()
        return True

    # ---------------------------------------------------------------- reads
    @property
    def generation(self) -> int:
        """Counted up whenever the store is replaced (for :meth:`distrust`)."""
        return self._view[2]

    def distrust(self, gen: int, reason: str) -> bool:
        """A location the index of generation ``gen`` gave does not hold the key in the log.
        Unless that index was built from the log while open (then the log is at fault: False),
        or has been replaced since, rebuild it (a writer) or read without it (a reader), with
        a recovery note; True: ask again."""
        with self._lock:
            if self._view[2] != gen:
                return True
            if gen == self._fresh:
                return False
            store = self._view[0]
            why = f"the key index gave a location the log does not confirm ({reason})"
            try:
                if self.readonly or store is None or self.path is None:
                    self._reader_without_store(self._count, why)
                    if store is not None:
                        store.close()
                else:
                    self._rebuild(self._count, why, store)
            except KvError:
                self._fresh = gen  # the log cannot be read whole: it is at fault, not the index
                raise
            return True

    def _recover(self, gen: int, error: IndexDamagedError) -> None:
        """A read met damage in the store of generation ``gen``: replace the store (unless
        another thread already has), so that the read can be retried."""
        with self._lock:
            store = self._view[0]
            if self._view[2] != gen or store is None:
                return
            if self.readonly:
                self._reader_without_store(self._count, str(error))
                store.close()
            else:
                self._rebuild(self._count, str(error), store)

    def _read(self, fn: Callable[[View], T]) -> T:
        view = self._view
        try:
            return fn(view)
        except IndexDamagedError as e:
            self._recover(view[2], e)
            return fn(self._view)

    def latest(self, key: bytes, bound: int | None) -> tuple[int, int] | None:
        """(location, revision) of ``key``'s newest revision below location ``bound`` (None:
        its newest), or None."""
        view = self._view
        try:
            store = view[0]
            if store is not None and key not in view[1].index.by_key:  # the common case, inlined
                return store.latest(key, bound)
            return _latest(view, key, bound)
        except IndexDamagedError as e:
            self._recover(view[2], e)
            return _latest(self._view, key, bound)

    def locations(self, key: bytes) -> list[int]:
        """Locations of every revision of ``key``, oldest first (a new list)."""
        return self._read(lambda v: _locations(v, key))

    def revisions(self, pairs: list[tuple[bytes, int]]) -> list[int]:
        """The revision number of each (key, loc) (0 for a key the policy leaves out)."""
        return self._read(lambda v: _revisions(v, pairs, self.policy))

    def keys_from(self, start: bytes, inclusive: bool, limit: int) -> list[bytes]:
        """Up to ``limit`` keys ever written, ``>= start`` (``>`` if not inclusive), in order.
        May include keys written by transactions the caller does not see yet."""
        return self._read(lambda v: self._keys_from(v, start, inclusive, limit))

    def _keys_from(self, view: View, start: bytes, inclusive: bool, limit: int) -> list[bytes]:
        store, ov, _gen = view
        with self._ov_lock:
            mem = ov.index.keys_from(start, inclusive, limit)
        if store is None:
            return mem
        with store.snapshot() as snap:
            disk = snap.keys_from(start, inclusive, limit)
        if not mem:
            return disk
        return sorted(set(disk).union(mem))[:limit]

    # ---------------------------------------------------------------- audit
    def snapshot_for_audit(self) -> tuple[Snapshot | None, Overlay]:
        """One read transaction of the store (None without a store) and the overlay, for
        :mod:`kvcore.indexaudit`."""
        store, ov, _gen = self._view
        return (store.snapshot() if store is not None else None), ov

    def rebuild_now(self, reason: str) -> None:
        """A writer's audit found the store wrong: rebuild it from the log."""
        with self._lock:
            store = self._view[0]
            if not self.readonly and self.path is not None:
                self._rebuild(self._count, reason, store)


def _latest(view: View, key: bytes, bound: int | None) -> tuple[int, int] | None:
    store, ov, _gen = view
    if store is None:
        return ov.index.latest(key, bound)
    if key not in ov.index.by_key:
        return store.latest(key, bound)
    with store.snapshot() as snap:
        held = snap.tx()
        locs = ov.locs_after(key, held)
        below = locs if bound is None else [loc for loc in locs if loc < bound]
        if not below:
            return snap.latest(key, bound)
        base = snap.latest(key, None)
        return below[-1], (base[1] if base else 0) + len(below)


def _locations(view: View, key: bytes) -> list[int]:
    store, ov, _gen = view
    if store is None:
        return ov.index.locations(key)
    with store.snapshot() as snap:
        found = snap.locations(key)
        if key in ov.index.by_key:
            found += ov.locs_after(key, snap.tx())
        return found


def _revisions(view: View, pairs: list[tuple[bytes, int]], policy: IndexPolicy) -> list[int]:
    store, ov, _gen = view
    if store is None:
        rev = ov.index.revision_of
        return [rev(k, loc) if policy.indexed(k) else 0 for k, loc in pairs]
    out: list[int] = []
    mem = ov.index.by_key
    with store.snapshot() as snap:
        held: int | None = None
        for key, loc in pairs:
            if not policy.indexed(key):
                out.append(0)
            elif key in mem:
                if held is None:
                    held = snap.tx()
                if loc >> TX_SHIFT > held:
                    base = snap.latest(key, None)
                    later = ov.locs_after(key, held)
                    out.append((base[1] if base else 0) + sum(1 for x in later if x <= loc))
                else:
                    out.append(snap.revision(key, loc))
            else:
                out.append(snap.revision(key, loc))
    return out
