"""The ledger: durable, append-only transactions of key/value entries with Merkle proofs.

This module opens, writes and reads the ledger; its proofs are built by a
:class:`kvcore.proving.Prover` it owns, which reads the ledger through the
:class:`kvcore.proofsource.ProofSource` this module gives it (:class:`_ProofReads`). Its size
limits and argument checks are :mod:`kvcore.limits` (re-exported here).
"""

from __future__ import annotations

import heapq
import os
import struct
import threading
import zlib
import time
import warnings
from contextlib import nullcontext
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from kvcore import gcpause, payload, payload_v2
from kvcore.audit import AuditReport, run_audit
from kvcore.codec import Codec, codec_for
from kvcore.errors import (
    ClosedError,
    CorruptionError,
    GroupAborted,
    InvalidInputError,
    KeyNotFoundError,
    LimitError,
    ReadOnlyError,
    TxNotFoundError,
)
from kvcore.errors import corrupt_entry as _corrupt
from kvcore.erasure import ERASED_KEY
from kvcore.erasure import decode as decode_erasure
from kvcore.erasure import encode as encode_erasure
from kvcore.hashing import HASH_SIZE, KIND_DELETE, KIND_SET, MAX_HEADER_SIZE, entry_leaf_hash, tx_leaf_hash
from kvcore.index import LedgerIndex
from kvcore.payload import StateRoot
from kvcore.indexaudit import IndexAudit
from kvcore.indexpolicy import IndexPolicy
from kvcore.keyindex import (
    MAX_ORDINAL,
    bound_for,
    make_loc,
    ordinal_of,
    tx_of,
)
from kvcore.keystore import Batch
from kvcore.limits import (
    MAX_KEY_BYTES,
    MAX_TX_BYTES,
    MAX_TX_ENTRIES,
    MAX_VALUE_BYTES,
    check_key,
    check_tx,
    check_value,
    valid_pairs,
)
from kvcore.models import ConsistencyProof, EntriesProof, Entry, EntryProof, State, Tx, TxHeader
from kvcore.proving import Prover
from kvcore.runs import read_run
from kvcore.storage import FileStorage, Storage
from kvcore.storage.file import FORMAT_VERSION as FILE_FORMAT
from kvcore.storage.postgres import FORMAT_VERSION as PG_FORMAT
from kvcore.storage.postgres import PostgresStorage
from kvcore.storage.postgres import is_url as is_postgres_url
from kvcore.transaction import CommitRequest, Transaction
from kvcore.tree import MerkleTree, node_count
from kvcore.tree import build as build_tree

__all__ = [
    "BULK_ENTRIES",
    "MAX_KEY_BYTES",
    "MAX_TX_BYTES",
    "MAX_TX_ENTRIES",
    "MAX_VALUE_BYTES",
    "Ledger",
    "RecoveryWarning",
]

BULK_ENTRIES = 1024
"""A commit of at least this many entries pauses the cyclic GC (see kvcore.gcpause)."""
_SCAN_CHUNK = 256
_READ_AHEAD = 256
_ENTRY_HEAD_SIZE = payload.ENTRY_HEAD_SIZE
_unpack_entry_head = payload.ENTRY_HEAD.unpack_from


class RecoveryWarning(UserWarning):
    """Opening a ledger repaired something (a torn tail, a damaged derived file); also raised
    when a damaged key index is rebuilt while the ledger is open."""


DEFAULT_INDEX_LAG = 131_072
"""Entries whose key-index rows a writer may hold in memory before committing them to disk
(see :meth:`Ledger.open`)."""


@dataclass
class _Grouped:
    """The keys a group commit's requests so far write (for the later ones' checks), and the
    thread committing it (other threads read the ledger as it was)."""

    owner: int = field(default_factory=threading.get_ident)
    last_write: dict[bytes, int] = field(default_factory=dict)

    def wrote(self, writes: list[tuple[bytes, bytes | None]], tx_id: int) -> None:
        for key, _value in writes:
            self.last_write[key] = tx_id


def _refusal(writes: list[tuple[bytes, bytes | None]]) -> LimitError | None:
    if not writes:
        return LimitError("a transaction needs at least one entry")
    if len(writes) > MAX_TX_ENTRIES:
        return LimitError(f"{len(writes)} entries exceed the limit of {MAX_TX_ENTRIES} per transaction")
    return None


class Ledger:
    """A verifiable key/value ledger. Open it with :meth:`open`.

    Thread-safe: many threads may read while one commits (commits are serialized).
    Only one process may hold a ledger directory open for writing. Its proofs
    (:meth:`prove_entry`, :meth:`prove_entries`, :meth:`prove_consistency`, ...) are built by
    its :class:`kvcore.proving.Prover`. Its key index (where each key's revisions are) is on
    disk (:mod:`kvcore.index`); entries under ``unindexed_prefixes`` have no index rows
    (:mod:`kvcore.indexpolicy`).
    """

    def __init__(
        self, storage: Storage, *, unindexed_prefixes: Iterable[bytes] = (), index_lag: int = DEFAULT_INDEX_LAG,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """A ledger on ``storage`` (its key index in ``storage.index_path()``; see :meth:`open`
        for ``unindexed_prefixes``, ``index_lag`` and ``progress``)."""
        self._storage = storage
        self._write_lock = threading.RLock()  # re-entrant: a read may repair the index under it
        self._grouped: _Grouped | None = None  # during a group commit (commit_many)
        self._closed = False
        self._opened = False
        self.recovery_notes: list[str] = list(storage.recovery_notes)
        self._erasing: set[bytes] = set()  # erasure entries made, not committed yet
        self._erased_in: dict[int, dict[int, int]] = {}  # tx -> {index: erasing tx}
        self._erasures_to = 0  # erasure records read up to this transaction
        self._last_erasure = 0
        self._codec = codec = codec_for(storage.format_version)
        count = storage.tx_count()
        try:
            policy = IndexPolicy(unindexed_prefixes)
            _check_lag(index_lag)
            self._policy = policy
            self._unindexed = bool(policy)  # (read by every get)
            self._tree = self._load_tree(count)
            self._tx_count = count
            self._index = LedgerIndex(
                storage.index_path(), policy, _IndexLog(storage, self._tree, codec),
                readonly=storage.readonly, lag=index_lag, lock=self._write_lock, note=self._note,
            )
            self._index.progress = progress
            try:
                self._index.open(count, self._read_newer)
            finally:
                self._index.progress = None
            count = self._tx_count
            self._last_ts = self._timestamp_of(count) if count else 0
            if not storage.readonly:
                storage.discard_legacy()
        except BaseException:
            index = getattr(self, "_index", None)
            if index is not None:
                index.abandon()
            storage.close()  # a failed open must not keep the directory locked
            raise
        self._root_cache: tuple[int, bytes] = (count, self._tree.root(count))
        self._headers: dict[int, TxHeader] = {}
        self._prover = Prover(
            _ProofReads(
                tx_count=lambda: self._tx_count,
                state=self.state,
                header=self.header,
                payload_bytes=self._storage.read,
                extra_bytes=self._storage.read_extra,
                key_locations=self._index.locations,
                entry_kind=lambda loc, key: self._read_entry(loc, key)[0],
                tx_subtree_hash=self._tree.subtree,
            ),
            codec,
        )
        self._opened = True
        self._load_erasures()
        self._mark_tree()
        for note in self.recovery_notes:
            warnings.warn(note, RecoveryWarning, stacklevel=3)

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        readonly: bool = False,
        wait: bool | float = False,
        unindexed_prefixes: Iterable[bytes] = (),
        index_lag: int = DEFAULT_INDEX_LAG,
        progress: Callable[[int, int], None] | None = None,
    ) -> Ledger:
        """Open (creating if missing) the ledger in directory ``path``, or in the PostgreSQL
        database ``path`` names when it is a ``postgresql://`` URL (kvcore.storage.postgres).

        ``readonly`` opens without taking the writer lock (another process may write; call
        :meth:`refresh` to see its new transactions). ``wait`` makes a writer wait for the
        lock (``True`` forever, or a number of seconds) instead of raising ``LockedError``.

        ``unindexed_prefixes`` (bytes prefixes; default none): entries whose key starts with
        one of them are stored, hashed and provable as any other, but the key index has no row
        for them: ``get``, ``lookup``, ``history``, ``scan``, ``delete`` and ``prove_entry``
        refuse their keys (InvalidInputError), and ``scan`` refuses a prefix that could hold
        one; read them by position (:meth:`entries`, :meth:`entry_items`,
        :meth:`prove_entries`, :meth:`prove_entry_at`, :meth:`find_and_prove`); their
        :class:`Entry.revision` is 0. The prefixes are part of the index: opening with others
        rebuilds it (a reader with others reads with an in-memory index).

        ``index_lag`` (entries, default DEFAULT_INDEX_LAG = 131,072): how far the on-disk key
        index may trail the log. The writer keeps up to that many entries' rows in memory and
        commits them to the index together (one LMDB commit for many small ones: bulk writes
        run about twice as fast as with 0); after a crash, opening reads them again from the
        log, and a reader opening meanwhile reads them from the log too (up to that many
        entries parsed at open). With 0, every commit also commits its index rows (a second
        fsync), and readers open in O(1) whatever the writer is doing.

        ``progress(done, total)``, if given, is called in transactions while opening builds the
        key index from the log (the first open of a ledger of an earlier version, or after
        the index was found damaged) or catches it up.
        """
        if not isinstance(path, (str, os.PathLike)):
            raise InvalidInputError(f"a ledger path is a str or os.PathLike, got {type(path).__name__}")
        if not (type(wait) is bool or (type(wait) in (int, float) and wait >= 0)):
            raise InvalidInputError(f"wait is True, False or a number of seconds, got {wait!r}")
        policy = IndexPolicy(unindexed_prefixes)  # InvalidInputError before the directory is touched
        _check_lag(index_lag)
        return cls(
            open_storage(path, readonly=readonly, wait=wait),
            unindexed_prefixes=policy.prefixes,
            index_lag=index_lag,
            progress=progress,
        )

    def _note(self, note: str) -> None:
        """A repair of derived data: recorded, and warned about once the ledger is open (the
        notes of opening are warned about together)."""
        self.recovery_notes.append(note)
        if self._opened:
            warnings.warn(note, RecoveryWarning, stacklevel=4)

    # --------------------------------------------------------------- opening
    def _load_tree(self, count: int) -> MerkleTree:
        stored = self._storage.tree_nodes()
        want = node_count(count) * HASH_SIZE
        have = count
        if len(stored) < want:
            have = count
            while node_count(have) * HASH_SIZE > len(stored):
                have -= 1
        nodes = stored[: node_count(have) * HASH_SIZE]
        tree = MerkleTree(nodes, have)
        # Every stored parent must be the hash of its stored children (a flipped node or leaf
        # breaks that), and the last leaf must be the log's last header. The nodes of the
        # transactions a writer already checked (the tree mark) are checked by their CRC-32,
        # the others by their hashes: opening costs one hash per transaction added since.
        checked = self._checked_prefix(nodes, have)
        if have and (
            tree.leaf(have - 1) != tx_leaf_hash(self._header_bytes(have))
            or not _parents_match(tree, nodes, have, checked)
        ):
            self.recovery_notes.append("the tree file did not match the log; rebuilt it")
            tree, have, checked = MerkleTree(), 0, 0
        for tx_id in range(have + 1, count + 1):
            tree.append(tx_leaf_hash(self._header_bytes(tx_id)))
        if have != count or len(stored) != want:
            self._storage.replace_tree(tree.nodes())
        self._marked = checked if have == count else 0  # what tree.ok vouches for (recorded at open and close)
        return tree

    def _header_bytes(self, tx_id: int) -> bytes:
        """The stored header of ``tx_id`` (its bytes; a damaged one still hashes, differently)."""
        raw = self._storage.read(tx_id, 0, MAX_HEADER_SIZE)
        try:
            return _header_of(tx_id, raw)[0]
        except CorruptionError:
            return raw

    def _mark_tree(self) -> None:
        """Record in tree.ok that the tree as now is checked (a writer; only when that
        changed: an unchanged ledger opens and closes without writing it)."""
        count = self._tx_count
        if count and count != self._marked and not self._storage.readonly:
            self._storage.set_tree_mark(count, zlib.crc32(self._tree.nodes()))
            self._marked = count

    def _checked_prefix(self, nodes: bytes, have: int) -> int:
        """How many transactions' tree nodes the tree mark vouches for (0: none)."""
        mark = self._storage.tree_mark()
        if mark is None or not 0 < mark[0] <= have:
            return 0
        size = node_count(mark[0]) * HASH_SIZE
        return mark[0] if zlib.crc32(memoryview(nodes)[:size]) == mark[1] else 0

    def _read_newer(self) -> int:
        """A reader whose key index is ahead of the log it read at open: read the log's newer
        transactions (their tree leaves) and return the new count."""
        old = self._tx_count
        new = self._storage.refresh()
        for tx_id in range(old + 1, new + 1):
            self._tree.append(tx_leaf_hash(_header_of(tx_id, self._storage.read(tx_id, 0, MAX_HEADER_SIZE))[0]))
        self._tx_count = new
        return new

    def _timestamp_of(self, tx_id: int) -> int:
        return _header_of(tx_id, self._storage.read(tx_id, 0, MAX_HEADER_SIZE))[1][1]

    # ----------------------------------------------------------- lifecycle
    def close(self) -> None:
        """Commit the key index's rows still in memory (a writer) and release the directory."""
        if self._closed:
            return
        with self._write_lock:
            self._closed = True
            self._mark_tree()
            try:
                self._index.close()
            finally:
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

    @property
    def format_version(self) -> int:
        """The storage format of the ledger's transactions (kvcore.codec; docs/storage.md)."""
        return self._codec.version

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedError("the ledger is closed")

    def stored(self, first_tx: int = 1) -> Iterator[tuple[int, bytes, bytes]]:
        """``(tx_id, payload, extra)`` of each stored transaction from ``first_tx`` to the
        ledger's last, as stored (framing and checksums checked), in bounded memory: what a
        copy to another backend appends (kvcore.migrate)."""
        self._check_open()
        last = self._tx_count
        for tx_id, body, extra in self._storage.scan(first_tx):
            if tx_id > last:
                return
            yield tx_id, body, extra

    @property
    def many_writers(self) -> bool:
        """Whether other processes may commit to this ledger while it is open for writing."""
        return self._storage.many_writers and not self._storage.readonly

    def durable_count(self) -> int:
        """How many transactions the storage holds now, other processes' included (on a
        storage with many writers one look at its head, else :attr:`tx_id`): more than
        :attr:`tx_id` when others committed what :meth:`refresh` has not taken in yet."""
        self._check_open()
        return self._storage.durable_count() if self._storage.many_writers else self._tx_count

    def refresh(self) -> int:
        """Take in transactions other processes committed since (a reader: the writer's; on a
        storage with many writers, a writer too: the others')."""
        self._check_open()
        with self._write_lock:
            if self._storage.many_writers:
                with self._storage.append_lock() as durable:
                    if durable > self._tx_count:
                        self._take_in(durable)
                self._erasures_taken_in()
                return self._tx_count
            old = self._tx_count
            new = self._storage.refresh()
            batches: list[Batch] = []
            for tx_id, body, _extra in self._storage.scan(old + 1):
                header_raw, _ = _header_of(tx_id, body)
                self._tree.append(tx_leaf_hash(header_raw))
                batches.append(_batch_of(self._codec, tx_id, body))
            if self._storage.readonly:
                self._index.refresh(batches, new)
            self._tx_count = new
            self._erasures_taken_in()
            return new

    def _take_in(self, durable: int) -> None:
        """A writer takes in the transactions other writers appended (under the append lock):
        into the tree and the key index, its timestamps too (they never go back)."""
        self._storage.refresh()
        for tx_id, body, _extra in self._storage.scan(self._tx_count + 1):
            header_raw, (_tid, ts, _n, _root, _sroot) = _header_of(tx_id, body)
            self._tree.append(tx_leaf_hash(header_raw))
            self._index.add(_batch_of(self._codec, tx_id, body))
            self._tx_count = tx_id
            self._last_ts = max(self._last_ts, ts)
        if self._tx_count != durable:
            raise CorruptionError(f"the storage holds {durable} transactions, the ledger read {self._tx_count}")

    def checkpoint(self) -> None:
        """Commit the key index's rows still in memory and flush the index to disk (a writer
        does both on close; with ``index_lag=0`` every commit already commits its rows)."""
        self._check_open()
        with self._write_lock:
            self._index.checkpoint()

    # --------------------------------------------------------------- writes
    def set(self, key: bytes, value: bytes) -> int:
        """Commit one entry; returns its transaction id once it is on disk."""
        key = check_key(key)
        return self.commit([(key, check_value(key, value))])

    def set_all(self, items: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]]) -> int:
        """Commit several entries as one atomic transaction; returns its id."""
        try:
            pairs = list(items.items() if isinstance(items, Mapping) else items)
        except TypeError:
            raise InvalidInputError(f"set_all takes a mapping or (key, value) pairs, got {type(items).__name__}") from None
        if valid_pairs(pairs) is not None:  # the common case: no per-item calls
            return self.commit(list(dict(pairs).items()))
        writes: dict[bytes, bytes] = {}
        for item in pairs:
            try:
                key, value = item
            except (TypeError, ValueError):
                raise InvalidInputError(f"set_all takes (key, value) pairs, got {item!r:.80}") from None
            key = check_key(key)
            writes[key] = check_value(key, value)
        return self.commit(list(writes.items()))

    # ------------------------------------------------------------------ erasure
    def erase(
        self, locations: Iterable[tuple[int, int]], record: Mapping[bytes, bytes] | Iterable[tuple[bytes, bytes]] = ()
    ) -> int | None:
        """Destroy the values of the entries at ``locations`` ((transaction, index) each),
        keeping their leaf hashes, so that every tree, proof and audit still holds
        (kvcore.erasure): one transaction is committed holding ``record`` (the caller's
        entries: who, why) and :meth:`erasure_entry`; then the listed values are overwritten
        with zeros in place. Returns that transaction's id (None if every location was erased
        before)."""
        entry = self.erasure_entry(locations)
        if entry is None:
            return None
        pairs = list(record.items() if isinstance(record, Mapping) else record)
        return self.set_all([*pairs, entry])

    def erasure_entry(self, locations: Iterable[tuple[int, int]]) -> tuple[bytes, bytes] | None:
        """The entry that erases the entries at ``locations`` ((transaction, index) each; those
        erased before are left out) when committed in any transaction of this ledger: their
        leaf hashes under :data:`kvcore.erasure.ERASED_KEY`. Once that transaction is durable,
        the commit overwrites the listed values with zeros (a crash before it: reopening
        does). None when there is nothing left to erase. InvalidInputError for a location that
        names no entry, or an erasure record."""
        self._check_open()
        if self._storage.readonly:
            raise ReadOnlyError("the ledger is open read-only")
        erased = self._prover.erased
        items: list[tuple[int, int, bytes]] = []
        for tx_id, index in sorted(set(locations)):
            check_tx(tx_id, self._tx_count)
            if (tx_id, index) in erased:
                continue
            found = self.entries(tx_id, index, 1) if type(index) is int and 0 <= index < self.header(tx_id).n_entries else []
            if not found:
                raise InvalidInputError(f"transaction {tx_id} has no entry {index!r}")
            e = found[0]
            if e.key == ERASED_KEY:
                raise InvalidInputError("an erasure record cannot be erased")
            kind = KIND_DELETE if e.deleted else KIND_SET
            items.append((tx_id, index, entry_leaf_hash(kind, e.key, b"" if e.deleted else e.value)))
        if not items:
            return None
        value = encode_erasure(items)
        self._erasing.add(value)
        return ERASED_KEY, value

    def erased_leaf(self, tx_id: int, index: int) -> bytes | None:
        """The committed leaf of an erased entry, None if the entry is not erased."""
        return self._prover.erased.get((tx_id, index))

    def erased_by(self, tx_id: int, start: int = 0, count: int | None = None) -> dict[int, int]:
        """Of entries ``start .. start+count-1`` of transaction ``tx_id``, those erased: index
        -> the transaction that erased it (empty when none is)."""
        marks = self._erased_in.get(tx_id)
        if not marks:
            return {}
        end = None if count is None else start + count
        return {i: by for i, by in marks.items() if i >= start and (end is None or i < end)}

    @property
    def last_erasure(self) -> int:
        """The transaction of the last erasure this ledger knows of (0: none)."""
        return self._last_erasure

    def _note_erased(self, items: Iterable[tuple[int, int, bytes]], by: int) -> None:
        self._last_erasure = max(self._last_erasure, by)
        for t, i, leaf in items:
            self._prover.erased[(t, i)] = leaf
            self._erased_in.setdefault(t, {})[i] = by

    def _load_erasures(self, after: int = 0) -> None:
        """Read the erasure records (kvcore.erasure) of transactions after ``after``; a writer
        completes any that a crash interrupted (an entry listed and not zeroed yet)."""
        if not self._tx_count:
            return
        items: list[tuple[int, int, bytes]] = []
        last: list[tuple[int, int, bytes]] = []
        for rec in self.history(ERASED_KEY):
            if rec.tx_id <= after:
                continue
            try:
                mine = decode_erasure(rec.value)
            except ValueError:
                raise CorruptionError(f"the erasure record of transaction {rec.tx_id} does not decode") from None
            self._note_erased(mine, rec.tx_id)
            items += mine
            last = mine
        self._erasures_to = self._tx_count
        if items and not self._storage.readonly and not after:
            # values not zeroed yet (a crash after the commit; on PostgreSQL perhaps another
            # writer's), or, in the last erasure (in a file each completes under the write lock
            # before the next commit), zeroed without the new checksum: a crash between the two
            torn = {t for t in {t for t, _i, _leaf in last} if not self._storage.record_intact(t)}
            pending = [it for it in items if it[0] in torn or any(self.entries(it[0], it[1], 1)[0].value)]
            if pending:
                self._zero(pending)
                self.recovery_notes.append(f"completed an interrupted erasure of {len(pending)} entries")

    def _erasures_taken_in(self) -> None:
        """After taking in other processes' transactions: learn the erasures they committed."""
        if self._tx_count > self._erasures_to:
            newest = self._index.latest(ERASED_KEY, None)
            if newest is not None and (newest[0] >> 56) > self._erasures_to:
                self._load_erasures(self._erasures_to)
            self._erasures_to = self._tx_count

    def _zero_committed(self, committed: list[tuple[int, list[tuple[bytes, bytes | None]]]]) -> None:
        """Zero the values that the just-committed (durable) transactions erase."""
        for tx_id, writes in committed:
            for key, value in writes:
                if key == ERASED_KEY and value is not None:
                    self._erasing.discard(value)
                    items = decode_erasure(value)
                    self._note_erased(items, tx_id)
                    self._zero(items)
        self._erasures_to = self._tx_count

    def _zero(self, items: list[tuple[int, int, bytes]]) -> None:
        """Overwrite the listed entries' value bytes with zeros (their leaves kept)."""
        spans: dict[int, list[tuple[int, int]]] = {}
        for tx_id, index, _leaf in items:
            e = self.entries(tx_id, index, 1)[0]
            end = int.from_bytes(self._storage.read_extra(tx_id, 4 * (index + 1), 4), "big")
            spans.setdefault(tx_id, []).append((end - len(e.value), len(e.value)))
        self._storage.erase_bytes(spans)  # one durable write for all
        for tx_id, index, leaf in items:
            self._prover.erased[(tx_id, index)] = leaf

    def delete(self, key: bytes) -> int:
        """Commit a tombstone for ``key`` (its history stays); KeyNotFoundError if absent."""
        key = check_key(key)

        if not self._policy.indexed(key):
            raise self._policy.refuse(key, "delete")

        def must_exist(_snapshot: int) -> None:
            found = self._index.latest(key, None)
            if found is None or self._read_entry(found[0], key)[0] == KIND_DELETE:
                raise KeyNotFoundError(f"key {key!r} does not exist (or is already deleted)")

        return self.commit([(key, None)], check=must_exist)

    def transaction(self, at_tx: int | None = None) -> Transaction:
        """An optimistic transaction reading the snapshot after ``at_tx`` (default: now).

        See :class:`kvcore.Transaction`. An older snapshot reads as of then, and its commit
        conflicts with anything committed since then to the keys it read or wrote.
        """
        self._check_open()
        if at_tx is not None:
            self._bound(at_tx)  # TxNotFoundError for a transaction that does not exist
        return Transaction(self, at_tx)

    def commit(
        self,
        writes: list[tuple[bytes, bytes | None]],
        *,
        check: Callable[[int], None] | None = None,
        state_root: StateRoot | None = None,
    ) -> int:
        """Commit validated ``(key, value-or-None-for-delete)`` pairs atomically.

        ``check(last_tx_id)`` runs under the commit lock first; an exception from it aborts
        the commit with nothing written (transactions use it to detect conflicts).
        ``state_root(tx_id, leaf_hashes)``, also under the lock, returns the 32 bytes a
        version-2 header commits to (an application's state after this transaction: kvcore
        does not interpret it); an exception from it aborts the commit likewise.
        """
        outcome = self.commit_many([CommitRequest(writes, check, state_root)])[0]
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    def commit_many(self, requests: Sequence[CommitRequest]) -> list[int | Exception]:
        """Group commit: commit each request as its own transaction, in order, with one
        durable write for all of them; returns each one's transaction id, or the exception
        that refused it (its ``check``, its ``state_root``, a limit). A request's ``check``
        sees the ones before it in the group as committed (a key written by an earlier one is
        its ``last_write``). If the durable write fails, the error is raised and none of them
        is committed."""
        self._check_open()
        if self._storage.readonly:
            raise ReadOnlyError("the ledger is open read-only")
        outcomes: list[int | Exception | None] = [_refusal(r.writes) for r in requests]
        if all(o is not None for o in outcomes):
            return [o for o in outcomes if o is not None]
        bulk = sum(len(r.writes) for r in requests) >= BULK_ENTRIES
        # a big batch's temporaries are freed by reference counts: see kvcore.gcpause
        with gcpause.paused() if bulk else nullcontext():
            with self._write_lock, self._storage.append_lock() as durable:
                self._check_open()
                if durable > self._tx_count:  # other processes appended: take theirs in first
                    self._take_in(durable)
                    self._erasures_taken_in()
                self._group(requests, outcomes)
        return [o for o in outcomes if o is not None]

    def _group(self, requests: Sequence[CommitRequest], outcomes: list[int | Exception | None]) -> None:
        start, last_ts = self._tx_count, self._last_ts
        records: list[tuple[bytes, bytes, bytes]] = []
        batches: list[Batch] = []
        self._grouped = grouped = _Grouped()
        erasing: list[tuple[int, list[tuple[bytes, bytes | None]]]] = []
        try:
            for i, req in enumerate(requests):
                if outcomes[i] is not None:
                    continue
                tx_id = start + len(records) + 1
                writes = req.writes
                try:
                    if req.check is not None:
                        req.check(tx_id - 1)
                    ts = max(time.time_ns(), last_ts)
                    body, extra, header, positions = self._codec.encode(tx_id, ts, writes, req.state_root)
                    if len(body) > MAX_TX_BYTES:
                        raise LimitError(f"transaction of {len(body)} bytes exceeds the limit of {MAX_TX_BYTES} bytes")
                except GroupAborted:  # the caller's state cannot go on: none of the group
                    raise
                except Exception as e:  # this request is refused; the others go on
                    outcomes[i] = e
                    continue
                records.append((body, extra, self._tree.append(tx_leaf_hash(header))))
                last_ts = ts
                base = tx_id << 56
                ordinals = range(base, base + (len(writes) << 32), 1 << 32)  # tx | ordinal << 32
                items = [(w[0], o | p) for w, o, p in zip(writes, ordinals, positions)]
                batches.append((tx_id, items, len(items)))
                grouped.wrote(writes, tx_id)
                if self._erasing:
                    erasing.append((tx_id, writes))
                outcomes[i] = tx_id
            if records:
                self._storage.append_many(records)
        except BaseException:
            self._tree.truncate(start)
            raise
        finally:
            self._grouped = None
        if records:
            self._index.add_many(batches)  # after the log holds them durably
            self._tx_count = start + len(records)
            self._last_ts = last_ts
        if erasing:
            self._zero_committed(erasing)

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
        if not 0 < tx_id <= self._tx_count:  # (a damaged index could name any transaction)
            raise _corrupt(tx_id, key)
        if self._codec.restart != 1:
            return self._read_coded(tx_id, (loc >> 32) & 0xFFFFFF, pos, key)
        head = _ENTRY_HEAD_SIZE + len(key)
        buf = self._storage.read(tx_id, pos, head + _READ_AHEAD)
        if len(buf) < head:
            raise _corrupt(tx_id, key)
        kind, klen, vlen = _unpack_entry_head(buf)
        if klen != len(key) or buf[_ENTRY_HEAD_SIZE:head] != key or kind > 1:
            raise _corrupt(tx_id, key)
        return kind, self._value_at(tx_id, pos, buf, head, vlen, key)

    def _value_at(self, tx_id: int, pos: int, buf: bytes, v0: int, vlen: int, key: bytes) -> bytes:
        """The ``vlen`` bytes from ``v0`` of the entry at ``pos`` read ahead as ``buf`` (read
        again, whole, when the read-ahead fell short)."""
        if v0 + vlen > len(buf):
            buf = self._storage.read(tx_id, pos, v0 + vlen)
            if len(buf) < v0 + vlen:
                raise _corrupt(tx_id, key)
        return buf[v0 : v0 + vlen]

    def _read_coded(self, tx_id: int, ordinal: int, pos: int, key: bytes) -> tuple[int, bytes]:
        """:meth:`_read_entry` in a format of front-coded keys: the entry is read alone when it
        stores its whole key (at a restart, or when it shares nothing with the key before it),
        else from the restart before it."""
        buf = self._storage.read(tx_id, pos, 16 + len(key) + _READ_AHEAD)
        try:
            kind, shared, klen, vlen, k0 = payload_v2.head_at(buf, 0)
        except ValueError:
            raise _corrupt(tx_id, key) from None
        if shared:
            codec = self._codec
            if ordinal % codec.restart == 0:  # a restart shares nothing
                raise _corrupt(tx_id, key)
            positions, entries = read_run(codec, self._storage.read, self._storage.read_extra, tx_id, ordinal, 1, what=key)
            kind, got, value = entries[0]
            if positions[0] != pos or got != key:
                raise _corrupt(tx_id, key)
            return kind, value
        k1 = k0 + klen
        if klen != len(key) or buf[k0:k1] != key or kind > 1:
            raise _corrupt(tx_id, key)
        return kind, self._value_at(tx_id, pos, buf, k1, vlen, key)

    def get(self, key: bytes, at_tx: int | None = None) -> Entry:
        """The newest revision of ``key`` (as of transaction ``at_tx``).

        Raises KeyNotFoundError if the key never existed then, or its newest revision is a
        tombstone; InvalidInputError for a key under an unindexed prefix.
        """
        found = self._newest(key, at_tx)
        if found is not None:
            loc, revision, kind, value, key = found
            if kind != KIND_DELETE:
                return Entry(key, value, loc >> 56, revision, False, (loc >> 32) & 0xFFFFFF)
            raise KeyNotFoundError(f"key {key!r} was deleted in transaction {tx_of(loc)}")
        where = "" if at_tx is None else f" as of transaction {at_tx}"
        raise KeyNotFoundError(f"key {key!r} not found{where}")

    def lookup(self, key: bytes, at_tx: int | None = None) -> Entry | None:
        """Like :meth:`get`, but None where ``get`` raises KeyNotFoundError (a key never
        written, or deleted, as of ``at_tx``): the cheap probe for keys that are usually new."""
        found = self._newest(key, at_tx)
        if found is None or found[2] == KIND_DELETE:
            return None
        loc = found[0]
        return Entry(found[4], found[3], loc >> 56, found[1], False, (loc >> 32) & 0xFFFFFF)

    def _newest(self, key: bytes, at_tx: int | None) -> tuple[int, int, int, bytes, bytes] | None:
        """(loc, revision, kind, value, key) of ``key``'s newest revision as of ``at_tx``."""
        if self._closed:
            raise ClosedError("the ledger is closed")
        if type(key) is not bytes or not 0 < len(key) <= MAX_KEY_BYTES:
            key = check_key(key)
        if self._unindexed and not self._policy.indexed(key):
            raise self._policy.refuse(key, "a read")
        found = self._locate(key, (self._tx_count + 1) << 56 if at_tx is None else self._bound(at_tx))
        return None if found is None else (*found, key)

    def _locate(self, key: bytes, bound: int) -> tuple[int, int, int, bytes] | None:
        """(loc, revision, kind, value) of ``key``'s newest revision below ``bound``. A location
        the log does not confirm makes the key index suspect: it is rebuilt (once) and asked
        again; if the log still disagrees, the log is damaged (CorruptionError)."""
        index = self._index
        gen = index.generation
        found = index.latest(key, bound)
        if found is None:
            return None
        try:
            kind, value = self._read_entry(found[0], key)
            return found[0], found[1], kind, value
        except CorruptionError as e:
            if not index.distrust(gen, str(e)):
                raise
            found = index.latest(key, bound)
            if found is None:
                return None
            kind, value = self._read_entry(found[0], key)
        return found[0], found[1], kind, value

    def history(self, key: bytes, offset: int = 0, limit: int | None = None) -> list[Entry]:
        """Every revision of ``key``, oldest first (tombstones included), paged."""
        self._check_open()
        key = check_key(key)
        if type(offset) is not int or offset < 0 or (limit is not None and (type(limit) is not int or limit < 0)):
            raise InvalidInputError("offset and limit must not be negative")
        if self._unindexed and not self._policy.indexed(key):
            raise self._policy.refuse(key, "history")
        bound = bound_for(self._tx_count)
        gen = self._index.generation
        try:
            return self._history(key, bound, offset, limit)
        except CorruptionError as e:
            if not self._index.distrust(gen, str(e)):
                raise
            return self._history(key, bound, offset, limit)

    def _history(self, key: bytes, bound: int, offset: int, limit: int | None) -> list[Entry]:
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
        self._check_scannable(prefix)
        return self._scan(prefix, self._bound(at_tx), start_after, limit)

    def _check_scannable(self, prefix: bytes) -> None:
        if self._policy.overlaps(prefix):
            unindexed = ", ".join(repr(p) for p in self._policy.prefixes if p.startswith(prefix) or prefix.startswith(p))
            raise InvalidInputError(
                f"a scan of prefix {prefix[:64]!r} could include keys under the unindexed "
                f"prefixes {unindexed}, which the key index does not hold; scan a prefix that "
                "excludes them"
            )

    def _scan(
        self, prefix: bytes, bound: int, start_after: bytes | None, limit: int | None
    ) -> Iterator[Entry]:
        cur, inclusive = prefix, True
        if start_after is not None and start_after >= prefix:
            cur, inclusive = start_after, False
        left = -1 if limit is None else limit
        index = self._index
        while left:
            if self._closed:  # iterated after close()
                raise ClosedError("the ledger is closed")
            gen = index.generation
            keys = index.keys_from(cur, inclusive, _SCAN_CHUNK)
            for key in keys:
                if not key.startswith(prefix):
                    return
                if self._closed:
                    raise ClosedError("the ledger is closed")
                found = self._locate(key, bound)
                if index.generation != gen:  # the index was rebuilt: read the rest anew
                    break
                cur, inclusive = key, False
                if found is None or found[2] == KIND_DELETE:
                    continue
                yield Entry(key, found[3], tx_of(found[0]), found[1], False, ordinal_of(found[0]))
                left -= 1
                if not left:
                    return
            else:
                if len(keys) < _SCAN_CHUNK:
                    return

    def last_write(self, key: bytes) -> int | None:
        """The transaction that last wrote ``key`` (a value or a tombstone); None if none did.
        For optimistic conflict checks (:class:`kvcore.Transaction`). InvalidInputError for a
        key the index leaves out (``unindexed_prefixes``)."""
        if self._unindexed and not self._policy.indexed(key):
            raise self._policy.refuse(key, "last_write")
        grouped = self._grouped
        if grouped is not None and grouped.owner == threading.get_ident():
            tx = grouped.last_write.get(key)
            if tx is not None:
                return tx
        found = self._index.latest(key, bound_for(self._tx_count))
        return None if found is None else tx_of(found[0])

    def indexed(self, key: bytes) -> bool:
        """Whether ``key`` has index rows (False under one of the ``unindexed_prefixes``)."""
        return self._policy.indexed(key)

    @property
    def unindexed_prefixes(self) -> tuple[bytes, ...]:
        """The prefixes whose keys the key index leaves out (sorted; see :meth:`open`)."""
        return self._policy.prefixes

    def keys_ever_written(self, prefix: bytes) -> Iterator[bytes]:
        """Every key ever written under ``prefix`` (live or not), in key order, for conflict checks
        (in a group commit's checks, keys the group's earlier requests write too, once more)."""
        self._check_scannable(prefix)
        grouped = self._grouped
        if grouped is not None and grouped.owner == threading.get_ident():
            mine = sorted(k for k in grouped.last_write if k.startswith(prefix))
            return heapq.merge(self._keys_ever_written(prefix), mine)
        return self._keys_ever_written(prefix)

    def _keys_ever_written(self, prefix: bytes) -> Iterator[bytes]:
        cur, inclusive = prefix, True
        while True:
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
        check_tx(tx_id, self._tx_count)
        body = self._storage.read_tx(tx_id)
        _, (tid, ts, n, root, sroot) = _header_of(tx_id, body)
        parsed = _entries_of(self._codec, tx_id, body)
        revs = self._index.revisions([(key, make_loc(tx_id, i, pos)) for i, (pos, _k, key, _v) in enumerate(parsed)])
        entries = [
            Entry(key, value, tx_id, rev, kind == KIND_DELETE, i)
            for i, ((_pos, kind, key, value), rev) in enumerate(zip(parsed, revs))
        ]
        return Tx(TxHeader(tid, ts, n, root, sroot), tuple(entries))

    def entries(self, tx_id: int, start: int = 0, count: int | None = None) -> list[Entry]:
        """Entries ``start .. start+count-1`` of transaction ``tx_id``, in commit order.

        One read of the stored bytes; cheaper than :meth:`tx` for a run of a large
        transaction (a writer that commits related keys together reads them back this way).
        """
        return self._entries(tx_id, start, count, False)

    def entry_items(
        self, tx_id: int, start: int = 0, count: int | None = None
    ) -> list[tuple[bytes, bytes | None]]:
        """Like :meth:`entries`, as bare ``(key, value)`` pairs (value None for a tombstone)."""
        return self._entries(tx_id, start, count, True)

    def _entries(self, tx_id: int, start: int, count: int | None, raw: bool) -> list[Any]:
        self._check_open()
        check_tx(tx_id, self._tx_count)
        n = self.header(tx_id).n_entries
        if type(start) is not int:
            raise InvalidInputError(f"start must be an integer, got {start!r}")
        if count is None:
            count = n - start
        if type(count) is not int:
            raise InvalidInputError(f"count must be an integer or None, got {count!r}")
        if type(start) is not int or type(count) is not int or start < 0 or count < 0 or start + count > n:
            raise InvalidInputError(
                f"entries {start}..{start + count - 1} are outside transaction {tx_id} "
                f"({n} entries)"
            )
        if count == 0:
            return []
        positions, entries = read_run(
            self._codec, self._storage.read, self._storage.read_extra, tx_id, start, count, what=b"<entry run>"
        )
        if raw:
            return [(key, None if kind == KIND_DELETE else value) for kind, key, value in entries]
        revs = self._index.revisions(
            [(key, make_loc(tx_id, start + i, pos)) for i, ((_k, key, _v), pos) in enumerate(zip(entries, positions))]
        )
        return [
            Entry(key, value, tx_id, rev, kind == KIND_DELETE, start + i)
            for i, ((kind, key, value), rev) in enumerate(zip(entries, revs))
        ]

    def header(self, tx_id: int) -> TxHeader:
        """The header of a committed transaction (cached: headers never change)."""
        if self._closed:  # _check_open, inlined: every proof reads a header
            raise ClosedError("the ledger is closed")
        check_tx(tx_id, self._tx_count)  # before the cache: 1.0 and True hash like 1
        cached = self._headers.get(tx_id)
        if cached is not None:
            return cached
        _, (tid, ts, n, root, sroot) = _header_of(tx_id, self._storage.read(tx_id, 0, MAX_HEADER_SIZE))
        if len(self._headers) > 100_000:
            self._headers.clear()
        h = self._headers[tx_id] = TxHeader(tid, ts, n, root, sroot)
        return h

    # ------------------------------------------------------ states and audit
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

    # ------------------------------------------------ proofs (kvcore.proving)
    def prove_entry(
        self, key: bytes, tx_id: int | None = None, state: State | None = None
    ) -> EntryProof:
        """Prove the entry ``key`` got in transaction ``tx_id`` (default: its newest).

        The proof is relative to ``state`` (default: the current state).
        """
        self._check_open()
        if self._unindexed and type(key) is bytes and not self._policy.indexed(key):
            raise self._policy.refuse(key, "prove_entry")
        return self._prover.prove_entry(key, tx_id, state)

    def prove_entry_at(self, tx_id: int, index: int, state: State | None = None) -> EntryProof:
        """Prove entry number ``index`` of transaction ``tx_id`` (an RFC 9162 inclusion path).

        Like :meth:`prove_entry`, for a caller that knows where the entry is (as
        :meth:`entries` and :class:`Entry.index` tell). ``deleted`` is set from the entry.
        """
        self._check_open()
        return self._prover.prove_entry_at(tx_id, index, state)

    def prove_entries(
        self, tx_id: int, indices: Iterable[int], state: State | None = None
    ) -> EntriesProof:
        """Prove entries ``indices`` (positions in the transaction) of ``tx_id`` with one proof.

        Verify with :func:`kvcore.verify_entries` against the entries read with
        :meth:`entries`. Proving a run of ``k`` consecutive entries costs about
        ``2 log2(n_entries)`` hashes.
        """
        self._check_open()
        return self._prover.prove_entries(tx_id, indices, state)

    def find_and_prove(
        self,
        tx_id: int,
        first: int,
        count: int,
        key_len: int,
        key_suffix: bytes,
        state: State | None = None,
    ) -> tuple[int, bytes, EntryProof] | None:
        """Prove the entry among entries ``first .. first+count-1`` of transaction ``tx_id``
        whose key is ``key_len`` bytes long and ends with ``key_suffix``.

        For a writer whose keys make that entry unique (were several to match, which one is
        proven is unspecified). Returns (its index in the transaction, its value, its
        :class:`EntryProof` relative to ``state``, default the current state), or None when
        no entry of the run matches or the one that does is a tombstone. Cheaper than
        :meth:`entries` and :meth:`prove_entry_at`: only the entries' heads and the ends of
        the keys that have the length are compared, no key or value is copied but the
        match's value. TxNotFoundError for a ``tx_id`` not committed, InvalidInputError for a
        run outside the transaction (``count`` 0 is an empty run: None).
        """
        if self._closed:  # _check_open, inlined: property proofs call this once each
            raise ClosedError("the ledger is closed")
        return self._prover.find_and_prove(tx_id, first, count, key_len, key_suffix, state)

    def prove_consistency(self, old_tx_id: int, new_tx_id: int | None = None) -> ConsistencyProof:
        """Prove the ledger at ``new_tx_id`` (default: now) extends the ledger at ``old_tx_id``."""
        self._check_open()
        return self._prover.prove_consistency(old_tx_id, new_tx_id)

    @property
    def prover(self) -> Prover:
        """The ledger's proof builder, with its caches (read-only use: inspecting or emptying
        :attr:`Prover.extra_cache`)."""
        return self._prover

    # ---------------------------------------------------------------- audit
    def audit(
        self,
        trusted_state: State | None = None,
        progress: Callable[[int, int], None] | None = None,
        *,
        entry_progress: Callable[[int, int], None] | None = None,
    ) -> AuditReport:
        """Recompute every hash from what is on disk, and check the key index against the log
        (in bounded memory); report the first mismatch.

        ``progress(done, total)`` is called after each transaction, in transactions;
        ``entry_progress(done, total)`` after each transaction and every 65,536 entries of a
        large one, in entries. A writer whose key index does not match the log rebuilds it
        (the report still lists the problem; a recovery note says so)."""
        self._check_open()
        with self._write_lock:
            count = self._tx_count
            total = sum(self.header(t).n_entries for t in range(1, count + 1)) if entry_progress else 0
            check = IndexAudit(self._index, count)
            report = run_audit(
                self._storage, count, check, trusted_state, progress, entry_progress, total,
                dict(self._prover.erased),
            )
            index_problems = [p for p in report.problems if p.startswith("the key index")]
            if index_problems and report.first_bad_tx is None and not self._storage.readonly:
                self._index.rebuild_now("the audit found that " + "; ".join(index_problems))
            return report


class _ProofReads:
    """The reads a ledger's :class:`~kvcore.proving.Prover` makes: a
    :class:`kvcore.proofsource.ProofSource` made of the ledger's own bound methods (so the reads
    proofs repeat cost no call in between); the ledger never replaces the storage, tree or index
    it was opened with."""

    def __init__(
        self,
        tx_count: Callable[[], int],
        state: Callable[..., State],
        header: Callable[[int], TxHeader],
        payload_bytes: Callable[[int, int, int], bytes],
        extra_bytes: Callable[[int, int, int], bytes],
        key_locations: Callable[[bytes], list[int]],
        entry_kind: Callable[[int, bytes], int],
        tx_subtree_hash: Callable[[int, int], bytes],
    ) -> None:
        self._tx_count = tx_count
        self.state = state
        self.header = header
        self.payload_bytes = payload_bytes
        self.extra_bytes = extra_bytes
        self.key_locations = key_locations
        self.entry_kind = entry_kind
        self.tx_subtree_hash = tx_subtree_hash

    @property
    def tx_id(self) -> int:
        return self._tx_count()


class _IndexLog:
    """What the key index reads of the log (:class:`kvcore.indexopen.IndexLog`): decoded
    transactions of the storage, roots of the tree."""

    def __init__(self, storage: Storage, tree: MerkleTree, codec: Codec) -> None:
        self._storage = storage
        self._tree = tree
        self._codec = codec

    def batches(self, first: int, last: int) -> Iterator[Batch]:
        if first > last:
            return
        for tx_id, body, _extra in self._storage.scan(first):
            if tx_id > last:
                return
            yield _batch_of(self._codec, tx_id, body)

    def head(self, tx_id: int, k: int) -> list[tuple[bytes, int]]:
        """(key, loc) of the first ``k`` entries of ``tx_id``: a few reads of their heads, not
        of the transaction."""
        storage = self._storage
        n = _header_of(tx_id, storage.read(tx_id, 0, MAX_HEADER_SIZE))[1][2]
        k = min(k, n)
        if k <= 0:
            return []
        if self._codec.restart != 1:  # front-coded keys: the run from the first restart
            positions, entries = read_run(self._codec, storage.read, storage.read_extra, tx_id, 0, k, what=b"<entry head>")
            return [(key, make_loc(tx_id, i, pos)) for i, ((_kind, key, _v), pos) in enumerate(zip(entries, positions))]
        raw = storage.read_extra(tx_id, 0, 4 * k)
        if len(raw) != 4 * k:
            raise _corrupt(tx_id, b"<entry positions>")
        out = []
        for i, pos in enumerate(struct.unpack(f">{k}I", raw)):
            buf = storage.read(tx_id, pos, _ENTRY_HEAD_SIZE + MAX_KEY_BYTES)
            if len(buf) < _ENTRY_HEAD_SIZE:
                raise _corrupt(tx_id, b"<entry head>")
            _kind, klen, _vlen = _unpack_entry_head(buf)
            key = buf[_ENTRY_HEAD_SIZE : _ENTRY_HEAD_SIZE + klen]
            if len(key) != klen:
                raise _corrupt(tx_id, b"<entry head>")
            out.append((key, make_loc(tx_id, i, pos)))
        return out

    def root(self, tx_id: int) -> bytes:
        return self._tree.root(tx_id) if tx_id else b""


def _batch_of(codec: Codec, tx_id: int, body: bytes) -> Batch:
    """A stored transaction as the key index takes it: (tx_id, every entry's (key, loc), n)."""
    items = [(key, make_loc(tx_id, i, pos)) for i, (pos, _k, key, _v) in enumerate(_entries_of(codec, tx_id, body))]
    return tx_id, items, len(items)


def _parents_match(tree: MerkleTree, nodes: bytes, have: int, checked: int) -> bool:
    """Whether the stored ``nodes`` of a tree of ``have`` leaves are what its leaves make,
    given that those of the first ``checked`` leaves are known good: the tree is rebuilt from
    that prefix by appending the later leaves, and compared."""
    if checked == have:
        return True
    if checked == 0:
        return build_tree([tree.leaf(i) for i in range(have)])[0] == nodes
    rebuilt = MerkleTree(nodes[: node_count(checked) * HASH_SIZE], checked)
    for i in range(checked, have):
        rebuilt.append(tree.leaf(i))
    return rebuilt.nodes() == nodes


def _check_lag(index_lag: object) -> None:
    if type(index_lag) is not int or index_lag < 0:
        raise InvalidInputError(f"index_lag is a number of entries >= 0, got {index_lag!r}")


def _entries_of(codec: Codec, tx_id: int, body: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """A stored payload's entries; a malformed payload is a CorruptionError, not a ValueError."""
    try:
        return list(codec.iter_entries(body))
    except ValueError as e:
        raise _undecodable(tx_id, e) from None


def open_storage(
    path: str | os.PathLike[str], *, readonly: bool = False, wait: bool | float = False, format_version: int | None = None
) -> Storage:
    """The storage at ``path``: a directory (FileStorage), or a PostgreSQL database when ``path``
    is a ``postgresql://`` URL (PostgresStorage). ``format_version``: the format a new ledger
    is written in (default the newest)."""
    if is_postgres_url(path):
        return PostgresStorage(str(path), readonly=readonly, wait=wait, format_version=format_version or PG_FORMAT)
    return FileStorage(path, readonly=readonly, wait=wait, format_version=format_version or FILE_FORMAT)


def _header_of(tx_id: int, raw: bytes) -> tuple[bytes, tuple[int, int, int, bytes, bytes | None]]:
    """A stored header, decoded; a malformed one is a CorruptionError, not a ValueError."""
    try:
        return payload.header_of(raw)
    except ValueError as e:
        raise _undecodable(tx_id, e) from None


def _undecodable(tx_id: int, e: ValueError) -> CorruptionError:
    return CorruptionError(f"transaction {tx_id}: stored bytes cannot be decoded ({e}); run an audit")


assert MAX_ORDINAL >= MAX_TX_ENTRIES
