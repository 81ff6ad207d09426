"""The ledger: durable, append-only transactions of key/value entries with Merkle proofs."""

from __future__ import annotations

import os
import struct
import threading
from collections import OrderedDict
import time
import warnings
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from kvcore import gcpause, merkle
from kvcore import payload as txformat
from kvcore.audit import AuditReport, run_audit
from kvcore.errors import (
    ClosedError,
    InvalidInputError,
    KeyNotFoundError,
    LimitError,
    ReadOnlyError,
    TxNotFoundError,
    VerificationError,
)
from kvcore.hashing import HASH_SIZE, HEADER_SIZE, KIND_DELETE, tx_leaf_hash
from kvcore.keyindex import (
    MAX_ORDINAL,
    KeyIndex,
    bound_for,
    make_loc,
    ordinal_of,
    tx_of,
)
from kvcore.models import ConsistencyProof, EntriesProof, Entry, EntryProof, State, Tx, TxHeader
from kvcore.storage import FileStorage, Storage
from kvcore.tree import MerkleTree, level_starts, node_count, subtree_hash

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 32 * 1024 * 1024
MAX_TX_ENTRIES = 1 << 20
BULK_ENTRIES = 1024
"""A commit of at least this many entries pauses the cyclic GC (see kvcore.gcpause)."""
MAX_TX_BYTES = 256 * 1024 * 1024
_SNAPSHOT_AFTER_REPLAY = 50_000  # entries replayed at open before a fresh snapshot is saved
_SCAN_CHUNK = 256
_READ_AHEAD = 256
_ENTRY_HEAD_SIZE = txformat.ENTRY_HEAD_SIZE
_unpack_entry_head = txformat.ENTRY_HEAD.unpack_from
_EXTRA_CACHE_BYTES = 64 * 1024 * 1024  # entries-tree bytes kept in memory for fast proofs


class RecoveryWarning(UserWarning):
    """Opening a ledger repaired something (a torn tail, a damaged derived file)."""


def check_key(key: Any) -> bytes:
    if type(key) is not bytes:
        if not isinstance(key, (bytearray, memoryview)):
            raise InvalidInputError(f"keys are bytes, got {type(key).__name__}")
        key = bytes(key)  # then apply the same limits as to bytes
    if not key:
        raise LimitError("a key cannot be empty")
    if len(key) > MAX_KEY_BYTES:
        raise LimitError(f"key of {len(key)} bytes exceeds the limit of {MAX_KEY_BYTES} bytes")
    return key


_BYTES, _TUPLE, _PAIR = {bytes}, {tuple}, {2}


def valid_pairs(items: list[Any]) -> tuple[bytes, ...] | None:
    """The keys of ``items`` if every item is a ``(bytes key, bytes value)`` tuple within the
    limits (checked a column at a time, in C loops), else None: check one by one to learn why."""
    if not items or set(map(type, items)) != _TUPLE or set(map(len, items)) != _PAIR:
        return None
    keys, values = zip(*items)
    if (
        set(map(type, keys)) == _BYTES
        and set(map(type, values)) == _BYTES
        and 0 < min(map(len, keys))
        and max(map(len, keys)) <= MAX_KEY_BYTES
        and max(map(len, values)) <= MAX_VALUE_BYTES
    ):
        return keys
    return None


def check_value(key: bytes, value: Any) -> bytes:
    if type(value) is not bytes:
        if not isinstance(value, (bytearray, memoryview)):
            raise InvalidInputError(f"values are bytes, got {type(value).__name__} for key {key!r}")
        value = bytes(value)  # then apply the same limit as to bytes
    if len(value) > MAX_VALUE_BYTES:
        raise LimitError(
            f"value of {len(value)} bytes for key {key[:64]!r} exceeds the limit of "
            f"{MAX_VALUE_BYTES} bytes"
        )
    return value


class Ledger:
    """A verifiable key/value ledger. Open it with :meth:`open`.

    Thread-safe: many threads may read while one commits (commits are serialized).
    Only one process may hold a ledger directory open for writing.
    """

    def __init__(self, storage: Storage) -> None:
        self._storage = storage
        self._write_lock = threading.Lock()
        self._index_lock = threading.Lock()
        self._closed = False
        self.recovery_notes: list[str] = list(storage.recovery_notes)
        count = storage.tx_count()
        try:
            self._tree = self._load_tree(count)
            self._tx_count = count
            self._index = self._load_index(count)
            self._last_ts = self._timestamp_of(count) if count else 0
        except BaseException:
            storage.close()  # a failed open must not keep the directory locked
            raise
        self._root_cache: tuple[int, bytes] = (count, self._tree.root(count))
        self._extra_cache: OrderedDict[int, tuple[bytes, dict[tuple[int, int], bytes], list[int]]] = OrderedDict()
        self._headers: dict[int, TxHeader] = {}
        self._extra_cached_bytes = 0
        for note in self.recovery_notes:
            warnings.warn(note, RecoveryWarning, stacklevel=3)

    @classmethod
    def open(
        cls, path: str | os.PathLike[str], *, readonly: bool = False, wait: bool | float = False
    ) -> Ledger:
        """Open (creating if missing) the ledger in directory ``path``.

        ``readonly`` opens without taking the writer lock (another process may write; call
        :meth:`refresh` to see its new transactions). ``wait`` makes a writer wait for the
        lock (``True`` forever, or a number of seconds) instead of raising ``LockedError``.
        """
        return cls(FileStorage(path, readonly=readonly, wait=wait))

    # --------------------------------------------------------------- opening
    def _load_tree(self, count: int) -> MerkleTree:
        stored = self._storage.tree_nodes()
        want = node_count(count) * HASH_SIZE
        have = count
        if len(stored) < want:
            have = count
            while node_count(have) * HASH_SIZE > len(stored):
                have -= 1
        tree = MerkleTree(stored[: node_count(have) * HASH_SIZE], have)
        if have and tree.leaf(have - 1) != tx_leaf_hash(self._storage.read(have, 0, HEADER_SIZE)):
            self.recovery_notes.append("the tree file did not match the log; rebuilt it")
            tree, have = MerkleTree(), 0
        for tx_id in range(have + 1, count + 1):
            tree.append(tx_leaf_hash(self._storage.read(tx_id, 0, HEADER_SIZE)))
        if have != count or len(stored) != want:
            self._storage.replace_tree(tree.nodes())
        return tree

    def _load_index(self, count: int) -> KeyIndex:
        index, first = KeyIndex(), 1
        blob = self._storage.load_index()
        if blob is not None:
            loaded = KeyIndex.load(blob)
            if (
                loaded is not None
                and loaded[1] <= count
                and loaded[2] == self._tree.root(loaded[1])
            ):
                index, first = loaded[0], loaded[1] + 1
            else:
                self.recovery_notes.append("the index snapshot was damaged; rebuilt the index")
        replayed = 0
        for tx_id, body, _extra in self._storage.scan(first):
            items = [
                (key, make_loc(tx_id, i, pos))
                for i, (pos, _k, key, _v) in enumerate(_entries_of(tx_id, body))
            ]
            index.add_many(items)
            replayed += len(items)
        if replayed >= _SNAPSHOT_AFTER_REPLAY and not self._storage.readonly:
            self._storage.save_index(index.dump(count, self._tree.root(count)))
        return index

    def _timestamp_of(self, tx_id: int) -> int:
        return _header_of(tx_id, self._storage.read(tx_id, 0, HEADER_SIZE))[1][1]

    # ----------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Save an index snapshot (so the next open is fast) and release the directory."""
        if self._closed:
            return
        with self._write_lock:
            self._closed = True
            if not self._storage.readonly:
                with self._index_lock:
                    blob = self._index.dump(self._tx_count, self._tree.root(self._tx_count))
                self._storage.save_index(blob)
            self._storage.close()

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def readonly(self) -> bool:
        return self._storage.readonly

    @property
    def tx_id(self) -> int:
        """Id of the newest committed transaction (0 for an empty ledger)."""
        return self._tx_count

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the ledger is closed")

    def refresh(self) -> int:
        """Read-only ledgers: take in transactions the writer process committed since."""
        self._check_open()
        with self._write_lock:
            old = self._tx_count
            new = self._storage.refresh()
            for tx_id, body, _extra in self._storage.scan(old + 1):
                header_raw, _ = _header_of(tx_id, body)
                self._tree.append(tx_leaf_hash(header_raw))
                items = [
                    (key, make_loc(tx_id, i, pos))
                    for i, (pos, _k, key, _v) in enumerate(_entries_of(tx_id, body))
                ]
                with self._index_lock:
                    self._index.add_many(items)
                    self._tx_count = tx_id
            self._tx_count = new
            return new

    def checkpoint(self) -> None:
        """Save a snapshot of the key index now (it is also saved on close)."""
        self._check_open()
        with self._write_lock, self._index_lock:
            blob = self._index.dump(self._tx_count, self._tree.root(self._tx_count))
        self._storage.save_index(blob)

    # --------------------------------------------------------------- writes
    def set(self, key: bytes, value: bytes) -> int:
        """Commit one entry; returns its transaction id once it is on disk."""
        key = check_key(key)
        return self.commit([(key, check_value(key, value))])

    def set_all(self, items: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> int:
        """Commit several entries as one atomic transaction; returns its id."""
        pairs = list(items.items() if isinstance(items, Mapping) else items)
        if valid_pairs(pairs) is not None:  # the common case: no per-item calls
            return self.commit(list(dict(pairs).items()))
        writes: dict[bytes, bytes] = {}
        for key, value in pairs:
            key = check_key(key)
            writes[key] = check_value(key, value)
        return self.commit(list(writes.items()))

    def delete(self, key: bytes) -> int:
        """Commit a tombstone for ``key`` (its history stays); KeyNotFoundError if absent."""
        key = check_key(key)

        def must_exist(_snapshot: int) -> None:
            found = self._index.latest(key)
            if found is None or self._read_entry(found[0], key)[0] == KIND_DELETE:
                raise KeyNotFoundError(f"key {key!r} does not exist (or is already deleted)")

        return self.commit([(key, None)], check=must_exist)

    def transaction(self, at_tx: int | None = None) -> Transaction:
        """An optimistic transaction reading the snapshot after ``at_tx`` (default: now).

        See :class:`kvcore.Transaction`. An older snapshot reads as of then, and its commit
        conflicts with anything committed since then to the keys it read or wrote.
        """
        from kvcore.transaction import Transaction

        self._check_open()
        if at_tx is not None:
            self._bound(at_tx)  # TxNotFoundError for a transaction that does not exist
        return Transaction(self, at_tx)

    def commit(
        self,
        writes: list[tuple[bytes, bytes | None]],
        *,
        check: Callable[[int], None] | None = None,
    ) -> int:
        """Commit validated ``(key, value-or-None-for-delete)`` pairs atomically.

        ``check(last_tx_id)`` runs under the commit lock first; an exception from it aborts
        the commit with nothing written (transactions use it to detect conflicts).
        """
        self._check_open()
        if self._storage.readonly:
            raise ReadOnlyError("the ledger is open read-only")
        if not writes:
            raise LimitError("a transaction needs at least one entry")
        if len(writes) > MAX_TX_ENTRIES:
            raise LimitError(f"{len(writes)} entries exceed the limit of {MAX_TX_ENTRIES} per transaction")
        if len(writes) >= BULK_ENTRIES:
            with gcpause.paused():  # a big batch's temporaries are freed by reference counts
                return self._commit(writes, check)
        return self._commit(writes, check)

    def _commit(self, writes: list[tuple[bytes, bytes | None]], check: Callable[[int], None] | None) -> int:
        with self._write_lock:
            self._check_open()
            if check is not None:
                check(self._tx_count)
            tx_id = self._tx_count + 1
            ts = max(time.time_ns(), self._last_ts)
            body, extra, header, positions = txformat.encode(tx_id, ts, writes)
            if len(body) > MAX_TX_BYTES:
                raise LimitError(
                    f"transaction of {len(body)} bytes exceeds the limit of {MAX_TX_BYTES} bytes"
                )
            added = self._tree.append(tx_leaf_hash(header))
            try:
                self._storage.append(body, extra, added)
            except BaseException:
                self._tree.truncate(tx_id - 1)
                raise
            base = tx_id << 56
            ordinals = range(base, base + (len(writes) << 32), 1 << 32)  # tx | ordinal << 32
            items = [(w[0], o | p) for w, o, p in zip(writes, ordinals, positions)]
            with self._index_lock:
                self._index.add_many(items)
                self._tx_count = tx_id
            self._last_ts = ts
            return tx_id

    # ---------------------------------------------------------------- reads
    def _bound(self, at_tx: int | None) -> int:
        if at_tx is None:
            return bound_for(self._tx_count)
        if type(at_tx) is not int or not 0 <= at_tx <= self._tx_count:
            raise TxNotFoundError(
                f"transaction {at_tx!r} does not exist (the ledger is at {self._tx_count})"
            )
        return bound_for(at_tx)

    def _read_entry(self, loc: int, key: bytes) -> tuple[int, bytes]:
        """(kind, value) of the entry at ``loc``, which must be for ``key``."""
        tx_id, pos = loc >> 56, loc & 0xFFFFFFFF
        head = _ENTRY_HEAD_SIZE + len(key)
        buf = self._storage.read(tx_id, pos, head + _READ_AHEAD)
        if len(buf) < head:
            raise _corrupt(tx_id, key)
        kind, klen, vlen = _unpack_entry_head(buf)
        if klen != len(key) or buf[_ENTRY_HEAD_SIZE:head] != key or kind > 1:
            raise _corrupt(tx_id, key)
        if head + vlen > len(buf):
            buf = self._storage.read(tx_id, pos, head + vlen)
            if len(buf) < head + vlen:
                raise _corrupt(tx_id, key)
        return kind, buf[head : head + vlen]

    def get(self, key: bytes, at_tx: int | None = None) -> Entry:
        """The newest revision of ``key`` (as of transaction ``at_tx``).

        Raises KeyNotFoundError if the key never existed then, or its newest revision is a
        tombstone.
        """
        if self._closed:
            raise ClosedError("the ledger is closed")
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = check_key(key)
        if at_tx is None:  # the common case, inlined: the newest committed revision
            cur = self._index._map.get(key)
            found = (cur, 1) if type(cur) is int and cur < ((self._tx_count + 1) << 56) else (
                None if cur is None else self._index.latest(key, bound_for(self._tx_count))
            )
        else:
            found = self._index.latest(key, self._bound(at_tx))
        if found is not None:
            loc, revision = found
            kind, value = self._read_entry(loc, key)
            if kind != KIND_DELETE:
                return Entry(key, value, loc >> 56, revision, False, (loc >> 32) & 0xFFFFFF)
            raise KeyNotFoundError(f"key {key!r} was deleted in transaction {tx_of(loc)}")
        where = "" if at_tx is None else f" as of transaction {at_tx}"
        raise KeyNotFoundError(f"key {key!r} not found{where}")

    def lookup(self, key: bytes, at_tx: int | None = None) -> Entry | None:
        """Like :meth:`get`, but None where ``get`` raises KeyNotFoundError (a key never
        written, or deleted, as of ``at_tx``): the cheap probe for keys that are usually new."""
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = check_key(key)
        if key not in self._index._map and not self._closed:
            if at_tx is not None:
                self._bound(at_tx)  # the same TxNotFoundError as get
            return None
        try:
            return self.get(key, at_tx)
        except KeyNotFoundError:
            return None

    def history(self, key: bytes, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """Every revision of ``key``, oldest first (tombstones included), paged."""
        self._check_open()
        key = check_key(key)
        if type(offset) is not int or offset < 0 or (limit is not None and (type(limit) is not int or limit < 0)):
            raise InvalidInputError("offset and limit must not be negative")
        bound = bound_for(self._tx_count)
        locs = [loc for loc in self._index.locations(key) if loc < bound]
        stop = len(locs) if limit is None else min(len(locs), offset + limit)
        out = []
        for i in range(offset, stop):
            kind, value = self._read_entry(locs[i], key)
            loc = locs[i]
            out.append(Entry(key, value, tx_of(loc), i + 1, kind == KIND_DELETE, ordinal_of(loc)))
        return out

    def scan(
        self,
        prefix: bytes = b"",
        at_tx: int | None = None,
        *,
        start_after: bytes | None = None,
        limit: int | None = None,
    ) -> Iterator[Entry]:
        """Live keys starting with ``prefix`` (as of ``at_tx``), in key order, newest revisions.

        The snapshot is fixed when the iterator is created; ``start_after`` resumes a page.
        """
        self._check_open()
        if not isinstance(prefix, bytes):
            raise InvalidInputError(f"prefix must be bytes, got {type(prefix).__name__}")
        if start_after is not None and not isinstance(start_after, bytes):
            raise InvalidInputError(f"start_after must be bytes, got {type(start_after).__name__}")
        if limit is not None and (type(limit) is not int or limit < 0):
            raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")
        return self._scan(prefix, self._bound(at_tx), start_after, limit)

    def _scan(
        self, prefix: bytes, bound: int, start_after: bytes | None, limit: int | None
    ) -> Iterator[Entry]:
        cur, inclusive = prefix, True
        if start_after is not None and start_after >= prefix:
            cur, inclusive = start_after, False
        left = -1 if limit is None else limit
        index = self._index
        while left:
            with self._index_lock:
                keys = index.keys_from(cur, inclusive, _SCAN_CHUNK)
            for key in keys:
                if not key.startswith(prefix):
                    return
                found = index.latest(key, bound)
                if found is None:
                    continue
                kind, value = self._read_entry(found[0], key)
                if kind == KIND_DELETE:
                    continue
                yield Entry(key, value, tx_of(found[0]), found[1], False, ordinal_of(found[0]))
                left -= 1
                if not left:
                    return
            if len(keys) < _SCAN_CHUNK:
                return
            cur, inclusive = keys[-1], False

    def _keys_with_prefix(self, prefix: bytes) -> Iterator[bytes]:
        """Every key ever written under ``prefix`` (live or not), for conflict checks."""
        cur, inclusive = prefix, True
        while True:
            with self._index_lock:
                keys = self._index.keys_from(cur, inclusive, _SCAN_CHUNK)
            for key in keys:
                if not key.startswith(prefix):
                    return
                yield key
            if len(keys) < _SCAN_CHUNK:
                return
            cur, inclusive = keys[-1], False

    def tx(self, tx_id: int) -> Tx:
        """A committed transaction: header and entries (with their revisions)."""
        self._check_open()
        self._check_tx(tx_id)
        body = self._storage.read_tx(tx_id)
        _, (tid, ts, n, root) = _header_of(tx_id, body)
        entries = []
        for i, (pos, kind, key, value) in enumerate(_entries_of(tx_id, body)):
            rev = self._index.revision_of(key, make_loc(tx_id, i, pos))
            entries.append(Entry(key, value, tx_id, rev, kind == KIND_DELETE, i))
        return Tx(TxHeader(tid, ts, n, root), tuple(entries))

    def entries(self, tx_id: int, start: int = 0, count: int | None = None) -> list[Entry]:
        """Entries ``start .. start+count-1`` of transaction ``tx_id``, in commit order.

        One read of the stored bytes; cheaper than :meth:`tx` for a run of a large
        transaction (a writer that commits related keys together reads them back this way).
        """
        return self._entries(tx_id, start, count, False)  # type: ignore[return-value]

    def entry_items(
        self, tx_id: int, start: int = 0, count: int | None = None
    ) -> list[tuple[bytes, bytes | None]]:
        """Like :meth:`entries`, as bare ``(key, value)`` pairs (value None for a tombstone)."""
        return self._entries(tx_id, start, count, True)  # type: ignore[return-value]

    def _entries(self, tx_id: int, start: int, count: int | None, raw: bool) -> list[Any]:
        self._check_open()
        self._check_tx(tx_id)
        n = self.header(tx_id).n_entries
        if type(start) is not int:
            raise InvalidInputError(f"start must be an integer, got {start!r}")
        if count is None:
            count = n - start
        if type(start) is not int or type(count) is not int or start < 0 or count < 0 or start + count > n:
            raise InvalidInputError(
                f"entries {start}..{start + count - 1} are outside transaction {tx_id} "
                f"({n} entries)"
            )
        if count == 0:
            return []
        positions = struct.unpack_from(f">{count + 1}I", self._extra(tx_id, n), 4 * start)
        first = positions[0]
        buf = self._storage.read(tx_id, first, positions[-1] - first)
        unpack = txformat.ENTRY_HEAD.unpack_from
        head = txformat.ENTRY_HEAD_SIZE
        out: list[Any] = []
        index = self._index
        for i in range(count):
            p = positions[i] - first
            kind, klen, vlen = unpack(buf, p)
            k0 = p + head
            key = buf[k0 : k0 + klen]
            if raw:
                out.append((key, None if kind == KIND_DELETE else buf[k0 + klen : k0 + klen + vlen]))
                continue
            loc = make_loc(tx_id, start + i, positions[i])
            out.append(
                Entry(
                    key,
                    buf[k0 + klen : k0 + klen + vlen],
                    tx_id,
                    index.revision_of(key, loc),
                    kind == KIND_DELETE,
                    start + i,
                )
            )
        return out

    def _check_tx(self, tx_id: Any) -> None:
        if type(tx_id) is not int or not 1 <= tx_id <= self._tx_count:
            raise TxNotFoundError(
                f"transaction {tx_id!r} does not exist (the ledger is at {self._tx_count})"
            )

    def header(self, tx_id: int) -> TxHeader:
        """The header of a committed transaction (cached: headers never change)."""
        self._check_open()
        self._check_tx(tx_id)  # before the cache: 1.0 and True hash like 1
        cached = self._headers.get(tx_id)
        if cached is not None:
            return cached
        _, (tid, ts, n, root) = _header_of(tx_id, self._storage.read(tx_id, 0, HEADER_SIZE))
        if len(self._headers) > 100_000:
            self._headers.clear()
        h = self._headers[tx_id] = TxHeader(tid, ts, n, root)
        return h

    # --------------------------------------------------------------- proofs
    def state(self, at_tx: int | None = None) -> State:
        """The ledger's state (its root) after transaction ``at_tx`` (default: the newest)."""
        self._check_open()
        n = self._tx_count if at_tx is None else at_tx
        if type(n) is not int or not 0 <= n <= self._tx_count:
            raise TxNotFoundError(f"transaction {at_tx!r} does not exist")
        cached = self._root_cache
        if cached[0] == n:
            return State(n, cached[1])
        root = self._tree.root(n)
        if n == self._tx_count:
            self._root_cache = (n, root)
        return State(n, root)

    def _resolve_state(self, state: State | None, at_least: int) -> State:
        if state is None:
            return self.state()
        if not isinstance(state, State):
            raise InvalidInputError(f"state must be a State, got {type(state).__name__}")
        if not at_least <= state.tx_id <= self._tx_count:
            raise TxNotFoundError(
                f"state {state.tx_id} cannot prove transaction {at_least} "
                f"(the ledger is at {self._tx_count})"
            )
        if self.state(state.tx_id).root != state.root:
            raise VerificationError(
                f"the given state's root is not this ledger's root at transaction {state.tx_id}"
            )
        return state

    def prove_entry(
        self, key: bytes, tx_id: int | None = None, state: State | None = None
    ) -> EntryProof:
        """Prove the entry ``key`` got in transaction ``tx_id`` (default: its newest).

        The proof is relative to ``state`` (default: the current state).
        """
        self._check_open()
        key = check_key(key)
        locs = self._index.locations(key)
        bound = bound_for(self._tx_count)
        locs = [loc for loc in locs if loc < bound]
        if tx_id is None:
            if not locs:
                raise KeyNotFoundError(f"key {key!r} not found")
            loc = locs[-1]
        else:
            self._check_tx(tx_id)
            i = bisect_left(locs, tx_id << 56)
            if i == len(locs) or tx_of(locs[i]) != tx_id:
                raise KeyNotFoundError(f"key {key!r} has no entry in transaction {tx_id}")
            loc = locs[i]
        return self._prove_loc(key, loc, state)

    def _prove_loc(self, key: bytes, loc: int, state: State | None) -> EntryProof:
        kind, _ = self._read_entry(loc, key)
        proof = self.prove_entry_at(tx_of(loc), ordinal_of(loc), state)
        return proof._replace(deleted=kind == KIND_DELETE)

    def prove_entry_at(self, tx_id: int, index: int, state: State | None = None) -> EntryProof:
        """Prove entry number ``index`` of transaction ``tx_id`` (an RFC 9162 inclusion path).

        Like :meth:`prove_entry`, for a caller that knows where the entry is (as
        :meth:`entries` and :class:`Entry.index` tell). ``deleted`` is set from the entry.
        """
        self._check_open()
        self._check_tx(tx_id)
        header = self.header(tx_id)
        n = header.n_entries
        if type(index) is not int or not 0 <= index < n:
            raise InvalidInputError(f"transaction {tx_id} has no entry {index!r} ({n} entries)")
        state = self._resolve_state(state, tx_id)
        blob = self._proof_extra(tx_id, n)
        raw = blob[4 * index : 4 * index + 4] if blob is not None else self._storage.read_extra(tx_id, 4 * index, 4)
        if len(raw) != 4:
            raise _corrupt(tx_id, b"<entries tree>")
        deleted = self._storage.read(tx_id, int.from_bytes(raw, "big"), 1) == b"\x01"
        return EntryProof(
            header, index, deleted, self._entry_path(tx_id, n, index, blob), self._tx_path(tx_id, state.tx_id),
            state.tx_id,
        )

    def _proof_extra(self, tx_id: int, n: int) -> bytes | None:
        """A transaction's ``extra`` for a proof: from the cache, or loaded into it while it has
        room; None (the caller reads only what it needs) rather than evicting another's: a
        proof needs ~log2(n) of its nodes, so random proofs over more transactions than fit
        must not thrash the cache reading whole entries trees."""
        hit = self._extra_cache.get(tx_id)
        if hit is not None:
            return hit[0]
        size = 4 * (n + 1) + (2 * n - n.bit_count()) * HASH_SIZE
        if self._extra_cached_bytes + size > _EXTRA_CACHE_BYTES:
            return None
        return self._extra_entry(tx_id, n)[0]

    def _prove_in_run(
        self, tx_id: int, start: int, count: int, key_len: int, suffix: bytes, state: State | None
    ) -> tuple[int, bytes, EntryProof] | None:
        """Find and prove the entry of entries ``start .. start+count-1`` of ``tx_id`` whose
        key is ``key_len`` bytes long and ends with ``suffix`` (docstore's property proofs: the
        run is a document, the suffix a pointer, and only one entry can match).

        Returns (its index in the transaction, its value, its :class:`EntryProof`), or None
        when no entry of the run matches or the match is a tombstone. The entry at the run
        ordinal where ``suffix`` last matched is read alone and tried first (documents of a
        collection tend to share their layout); else the run is read at once and only the
        entries' heads and candidate keys are looked at (the first match wins).
        """
        if self._closed:
            raise ClosedError("the ledger is closed")
        self._check_tx(tx_id)
        header = self._headers.get(tx_id) or self.header(tx_id)
        n = header.n_entries
        if type(start) is not int or type(count) is not int or start < 0 or count < 0 or start + count > n:
            raise InvalidInputError(f"entries {start}..{start + count - 1} are outside transaction {tx_id} ({n} entries)")
        cur = self._root_cache
        if not (type(state) is State and state.tx_id == cur[0] and state.root == cur[1] and tx_id <= cur[0]):
            state = self._resolve_state(state, tx_id)  # not the current state: check it
        if count == 0:
            return None
        blob = self._proof_extra(tx_id, n)
        cut, head = len(suffix), _ENTRY_HEAD_SIZE
        hint = _RUN_HINTS.get(suffix, 0)
        if hint < count:  # first read only the entry where the last match was
            i = start + hint
            if blob is not None:
                at, end = _U32x2.unpack_from(blob, 4 * i)
            else:
                raw = self._storage.read_extra(tx_id, 4 * i, 8)
                if len(raw) != 8:
                    raise _corrupt(tx_id, b"<entries tree>")
                at, end = _U32x2.unpack(raw)
            buf = self._storage.read(tx_id, at, end - at)
            if len(buf) < head or len(buf) != end - at:
                raise _corrupt(tx_id, suffix)
            kind, klen, vlen = _unpack_entry_head(buf)
            k1 = head + klen
            if klen == key_len and buf[k1 - cut : k1] == suffix and k1 + vlen == len(buf):
                if kind == KIND_DELETE:
                    return None
                return i, buf[k1:], EntryProof(
                    header, i, False, self._entry_path(tx_id, n, i, blob), self._tx_path(tx_id, state.tx_id),
                    state.tx_id,
                )
        table = _positions(count + 1)
        if blob is not None:
            positions = table.unpack_from(blob, 4 * start)
        else:  # read only the run's positions, not the whole entries tree
            raw = self._storage.read_extra(tx_id, 4 * start, table.size)
            if len(raw) != table.size:
                raise _corrupt(tx_id, b"<entries tree>")
            positions = table.unpack(raw)
        first = positions[0]
        buf = self._storage.read(tx_id, first, positions[-1] - first)
        if len(buf) != positions[-1] - first or positions[-1] < first:
            raise _corrupt(tx_id, suffix)
        unpack = _unpack_entry_head
        for i in range(count):
            p = positions[i] - first
            try:
                kind, klen, vlen = unpack(buf, p)
            except struct.error:
                raise _corrupt(tx_id, suffix) from None
            if klen != key_len:
                continue
            k1 = p + head + klen
            if buf[k1 - cut : k1] != suffix:
                continue
            if len(_RUN_HINTS) >= 1024:
                _RUN_HINTS.clear()
            _RUN_HINTS[suffix] = i
            if kind == KIND_DELETE:
                return None
            index = start + i
            proof = EntryProof(
                header, index, False, self._entry_path(tx_id, n, index, blob), self._tx_path(tx_id, state.tx_id),
                state.tx_id,
            )
            return index, buf[k1 : k1 + vlen], proof
        return None

    def _entry_path(self, tx_id: int, n: int, index: int, blob: bytes | None) -> list[bytes]:
        """PATH(index, entries) of a transaction (RFC 9162 2.1.3.1, leaf-side first), read
        bottom-up from the stored level-order nodes (see :meth:`_path_part`).

        Its part from level _UPPER_FROM up depends only on ``index >> _UPPER_FROM`` and is
        shared by 2^_UPPER_FROM neighbouring entries: it is cached (up to 16,384 parts of a
        few hundred bytes)."""
        levels, lower, upper_levels = _path_levels(n)[:3]
        if not upper_levels:
            return self._path_part(tx_id, n, index, levels, blob)
        path = self._path_part(tx_id, n, index, lower, blob)
        uppers = self._path_uppers
        if uppers is None:
            uppers = self._path_uppers = {}
        key = (tx_id, index >> _UPPER_FROM)
        upper = uppers.get(key)
        if upper is None:
            upper = tuple(self._path_part(tx_id, n, index >> _UPPER_FROM, upper_levels, blob))
            if len(uppers) >= 16384:
                uppers.clear()
            uppers[key] = upper
        path += upper
        return path

    _path_uppers: dict[tuple[int, int], tuple[bytes, ...]] | None = None

    def _path_part(
        self, tx_id: int, n: int, fn: int, levels: tuple[tuple[int, int, int, int], ...], blob: bytes | None
    ) -> list[bytes]:
        """The path's siblings at ``levels`` (consecutive, from the lowest; ``fn`` is the
        node's index at the first of them): at each level one stored complete node, except at
        most one incomplete subtree at the right edge (memoized); the rightmost node of a
        level may have no sibling (it is promoted, and the path has nothing for it).

        From the transaction's ``extra`` when it is in memory (``blob``); otherwise without
        loading it (a proof needs ~log2(n) of its ~2n nodes): the small top levels come from
        a per-transaction cache, each lower level's sibling is one 32-byte read."""
        path: list[bytes] = []
        append = path.append
        if blob is not None:
            for off, complete, last, level in levels:
                sib = fn ^ 1
                if sib < complete:
                    p = off + sib * HASH_SIZE
                    append(blob[p : p + HASH_SIZE])
                elif sib <= last:
                    append(self._partial_subtree(tx_id, n, sib << level, blob))
                fn >>= 1
            return path
        top_level, top_start, top_size = _path_levels(n)[3:]
        top = self._path_top(tx_id, top_start, top_size)
        read = self._storage.read_extra
        for off, complete, last, level in levels:
            sib = fn ^ 1
            if sib < complete:
                p = off + sib * HASH_SIZE
                if level >= top_level:
                    p -= top_start
                    append(top[p : p + HASH_SIZE])
                else:
                    h = read(tx_id, p, HASH_SIZE)
                    if len(h) != HASH_SIZE:
                        raise _corrupt(tx_id, b"<entries tree>")
                    append(h)
            elif sib <= last:
                append(self._partial_subtree(tx_id, n, sib << level, None))
            fn >>= 1
        return path

    _path_tops: dict[int, bytes] | None = None

    def _path_top(self, tx_id: int, start: int, size: int) -> bytes:
        """The stored top levels of a transaction's entries tree (a few KB; cached)."""
        tops = self._path_tops
        if tops is None:
            tops = self._path_tops = {}
        top = tops.get(tx_id)
        if top is None:
            top = self._storage.read_extra(tx_id, start, size)
            if len(top) != size:
                raise _corrupt(tx_id, b"<entries tree>")
            if len(tops) >= 2048:  # at most 16 MB
                tops.clear()
            tops[tx_id] = top
        return top

    _partials: dict[tuple[int, int], bytes] | None = None

    def _partial_subtree(self, tx_id: int, n: int, start: int, blob: bytes | None) -> bytes:
        """MTH(entries[start:n]) of a transaction: an incomplete right-edge subtree (memoized;
        it never changes). Its O(log n) complete parts come from the cached ``extra`` or are
        read one by one."""
        memo = self._partials
        if memo is None:
            memo = self._partials = {}
        h = memo.get((tx_id, start))
        if h is not None:
            return h
        levels = _path_levels(n)[0]

        def node(level: int, i: int) -> bytes:
            p = levels[level][0] + i * HASH_SIZE
            if blob is not None:
                return blob[p : p + HASH_SIZE]
            got = self._storage.read_extra(tx_id, p, HASH_SIZE)
            if len(got) != HASH_SIZE:
                raise _corrupt(tx_id, b"<entries tree>")
            return got

        h = subtree_hash(node, start, n)
        if len(memo) >= 8192:
            memo.clear()
        memo[(tx_id, start)] = h
        return h

    _tx_paths: dict[tuple[int, int], tuple[bytes, ...]] | None = None

    def _tx_path(self, tx_id: int, size: int) -> list[bytes]:
        """PATH(tx_id - 1, ledger tree of ``size`` transactions), cached: for a committed
        ``size`` it never changes (the tree only grows)."""
        cache = self._tx_paths
        if cache is None:
            cache = self._tx_paths = {}
        key = (tx_id, size)
        hit = cache.get(key)
        if hit is None:
            hit = tuple(self._tree.inclusion_path(tx_id - 1, size))
            if len(cache) >= 1024:  # one per transaction and state proven: a growing ledger
                cache.clear()  # makes new states all the time, most are never asked for again
            cache[key] = hit
        return list(hit)

    def _extra_entry(self, tx_id: int, n: int) -> tuple[bytes, dict[tuple[int, int], bytes], list[int]]:
        """A transaction's stored positions and entries-tree nodes, with a memo of its partial
        subtree hashes (cached in memory, bounded by _EXTRA_CACHE_BYTES)."""
        cache = self._extra_cache
        hit = cache.get(tx_id)
        if hit is not None:
            cache.move_to_end(tx_id)
            return hit
        size = 4 * (n + 1) + (2 * n - n.bit_count()) * HASH_SIZE
        blob = self._storage.read_extra(tx_id, 0, size)
        if len(blob) != size:
            raise _corrupt(tx_id, b"<entries tree>")
        hit = (blob, {}, level_starts(n))
        with self._index_lock:
            cache[tx_id] = hit
            self._extra_cached_bytes += len(blob)
            while self._extra_cached_bytes > _EXTRA_CACHE_BYTES and len(cache) > 1:
                _, (old, _memo, _starts) = cache.popitem(last=False)
                self._extra_cached_bytes -= len(old)
        return hit

    def _extra(self, tx_id: int, n: int) -> bytes:
        return self._extra_entry(tx_id, n)[0]

    def _entries_subtree(self, tx_id: int, n: int) -> Callable[[int, int], bytes]:
        """MTH(entries[a:b]) of a transaction, from its stored level-order nodes."""
        blob, memo, starts = self._extra_entry(tx_id, n)
        base = 4 * (n + 1)

        def node(level: int, index: int) -> bytes:
            p = base + (starts[level] + index) * HASH_SIZE
            return blob[p : p + HASH_SIZE]

        def sub(a: int, b: int) -> bytes:
            size = b - a
            if size & (size - 1) == 0 and a % size == 0:
                return node(size.bit_length() - 1, a // size)
            k = (a, b)
            h = memo.get(k)
            if h is None:
                h = memo[k] = subtree_hash(node, a, b)
            return h

        return sub

    def prove_entries(
        self, tx_id: int, indices: Iterable[int], state: State | None = None
    ) -> EntriesProof:
        """Prove entries ``indices`` (positions in the transaction) of ``tx_id`` with one proof.

        Verify with :func:`kvcore.verify_entries` against the entries read with
        :meth:`entries`. Proving a run of ``k`` consecutive entries costs about
        ``2 log2(n_entries)`` hashes.
        """
        self._check_open()
        self._check_tx(tx_id)
        idx = sorted(set(indices))
        header = self.header(tx_id)
        n = header.n_entries
        if not idx or idx[0] < 0 or idx[-1] >= n or any(type(i) is not int for i in idx):
            raise InvalidInputError(f"entry indices must be within 0..{n - 1} of transaction {tx_id}")
        state = self._resolve_state(state, tx_id)
        path = merkle.multi_path(idx, n, self._proof_subtree(tx_id, n))
        return EntriesProof(header, idx, path, self._tx_path(tx_id, state.tx_id), state.tx_id)

    def _proof_subtree(self, tx_id: int, n: int) -> Callable[[int, int], bytes]:
        """MTH(entries[a:b]) of a transaction for a proof: from its in-memory ``extra`` (see
        :meth:`_proof_extra`), else reading only the stored nodes asked for."""
        if self._proof_extra(tx_id, n) is not None:
            return self._entries_subtree(tx_id, n)
        levels = _path_levels(n)[0]

        def node(level: int, i: int) -> bytes:
            h = self._storage.read_extra(tx_id, levels[level][0] + i * HASH_SIZE, HASH_SIZE)
            if len(h) != HASH_SIZE:
                raise _corrupt(tx_id, b"<entries tree>")
            return h

        def sub(a: int, b: int) -> bytes:
            size = b - a
            if size & (size - 1) == 0 and a % size == 0:
                return node(size.bit_length() - 1, a // size)
            if b == n:  # in an RFC 9162 tree only right-edge subtrees are incomplete
                return self._partial_subtree(tx_id, n, a, None)
            return subtree_hash(node, a, b)

        return sub

    def prove_consistency(self, old_tx_id: int, new_tx_id: int | None = None) -> ConsistencyProof:
        """Prove the ledger at ``new_tx_id`` (default: now) extends the ledger at ``old_tx_id``."""
        self._check_open()
        new = self._tx_count if new_tx_id is None else new_tx_id
        for t in (old_tx_id, new):
            if type(t) is not int or not 0 <= t <= self._tx_count:
                raise TxNotFoundError(f"transaction {t!r} does not exist")
        if old_tx_id > new:
            raise InvalidInputError(f"old state {old_tx_id} is newer than {new}")
        return ConsistencyProof(old_tx_id, new, self._tree.consistency_path(old_tx_id, new))

    def audit(
        self,
        trusted_state: State | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> AuditReport:
        """Recompute every hash from what is on disk; report the first mismatch."""
        self._check_open()
        with self._write_lock:
            with self._index_lock:
                expected_index = self._index.dump(self._tx_count)
            return run_audit(
                self._storage, self._tx_count, expected_index, trusted_state, progress
            )


_RUN_HINTS: dict[bytes, int] = {}  # key suffix -> ordinal in its run of its last match (_prove_in_run)
_POSITIONS: dict[int, struct.Struct] = {}
_U32x2 = struct.Struct(">II")


def _positions(count: int) -> struct.Struct:
    """The layout of ``count`` stored entry positions (u32 BE), cached per count."""
    table = _POSITIONS.get(count)
    if table is None:
        if len(_POSITIONS) >= 1024:
            _POSITIONS.clear()
        table = _POSITIONS[count] = struct.Struct(f">{count}I")
    return table


_Levels = tuple[tuple[int, int, int, int], ...]
_PATH_LEVELS: dict[int, tuple[_Levels, _Levels, _Levels, int, int, int]] = {}
_PATH_TOP_BYTES = 8192  # the top levels of an entries tree kept per transaction for proofs
_UPPER_FROM = 8  # inclusion paths are cached from this level up, per 2^_UPPER_FROM entries


def _path_levels(n: int) -> tuple[_Levels, _Levels, _Levels, int, int, int]:
    """The layout of an entries tree of ``n`` leaves in its stored ``extra``, for proofs:
    per level below the root (byte offset of the level, its count of complete nodes, the
    index of its last node, the level); those levels split below and from _UPPER_FROM; the
    first level of the top (the levels whose nodes fit in _PATH_TOP_BYTES together) and that
    top's byte offset and size. Cached."""
    layout = _PATH_LEVELS.get(n)
    if layout is None:
        starts, base = level_starts(n), 4 * (n + 1)
        levels = tuple(
            (base + starts[lv] * HASH_SIZE, n >> lv, (n - 1) >> lv, lv) for lv in range((n - 1).bit_length())
        )
        top = 0
        while (starts[-1] - starts[top]) * HASH_SIZE > _PATH_TOP_BYTES:
            top += 1
        layout = (
            levels, levels[:_UPPER_FROM], levels[_UPPER_FROM:],
            top, base + starts[top] * HASH_SIZE, (starts[-1] - starts[top]) * HASH_SIZE,
        )
        if len(_PATH_LEVELS) >= 4096:
            _PATH_LEVELS.clear()
        _PATH_LEVELS[n] = layout
    return layout


def _entries_of(tx_id: int, body: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """A stored payload's entries; a malformed payload is a CorruptionError, not a ValueError."""
    try:
        return list(txformat.iter_entries(body))
    except ValueError as e:
        raise _undecodable(tx_id, e) from None


def _header_of(tx_id: int, raw: bytes) -> tuple[bytes, tuple[int, int, int, bytes]]:
    """A stored header, decoded; a malformed one is a CorruptionError, not a ValueError."""
    try:
        return txformat.header_of(raw)
    except ValueError as e:
        raise _undecodable(tx_id, e) from None


def _undecodable(tx_id: int, e: ValueError) -> Exception:
    from kvcore.errors import CorruptionError

    return CorruptionError(f"transaction {tx_id}: stored bytes cannot be decoded ({e}); run an audit")


def _corrupt(tx_id: int, key: bytes) -> Exception:
    from kvcore.errors import CorruptionError

    return CorruptionError(
        f"stored entry for key {key[:64]!r} in transaction {tx_id} is damaged; run an audit"
    )


from kvcore.transaction import Transaction  # noqa: E402  (re-exported for typing)

assert MAX_ORDINAL >= MAX_TX_ENTRIES
