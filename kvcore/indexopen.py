"""Opening the on-disk key index: check it against the log, catch it up, or rebuild it.

The transaction log is the only source of truth; the index (:mod:`kvcore.keystore`) is
derived from it and never ahead of it (a writer commits an index transaction only after the
log holds the transactions it reflects). Opening trusts an index only after O(1) checks
(:func:`validate`): LMDB opens it, its metadata is complete and of this format and policy,
it reflects no transaction the log does not hold, its root is the log's root at the
transaction it reflects (so it is of this ledger's history), its row count is LMDB's, its
first and last rows are well formed, and the rows of the last transaction it reflects are
there. Anything else is rebuilt from the log (:func:`build`): into a fresh environment beside
it, then swapped in with two renames.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from typing import Protocol

from kvcore.errors import CorruptionError
from kvcore.indexpolicy import IndexPolicy
from kvcore.keystore import FORMAT, Batch, IndexDamagedError, IndexMeta, KeyStore
from kvcore.storage.atomic import fsync_dir

FILL_ENTRIES = 65_536
"""Entries of the log per LMDB write transaction when filling an index from the log."""
_LAST_TX_ROWS = 64  # rows of the last reflected transaction checked at open


class IndexLog(Protocol):
    """What the index reads of the log (the ledger gives it one)."""

    def batches(self, first: int, last: int) -> Iterator[Batch]:
        """Transactions ``first .. last``, in order, each with every entry's (key, loc)."""
        ...

    def head(self, tx_id: int, k: int) -> list[tuple[bytes, int]]:
        """(key, loc) of the first ``k`` entries of transaction ``tx_id`` (fewer if it has
        fewer), read without reading the whole transaction."""
        ...

    def root(self, tx_id: int) -> bytes:
        """The ledger's root after transaction ``tx_id`` (b"" for 0)."""
        ...


def indexed(batch: Batch, policy: IndexPolicy) -> Batch:
    """``batch`` with only the entries the policy indexes."""
    if not policy:
        return batch
    tx_id, items, n = batch
    return tx_id, [it for it in items if policy.indexed(it[0])], n


def present(path: str, readonly: bool) -> bool:
    """Whether ``path`` holds an index to open: its ``data.mdb``, and for a reader (which may
    not create it) its ``lock.mdb``."""
    names = ("data.mdb", "lock.mdb") if readonly else ("data.mdb",)
    return all(os.path.isfile(os.path.join(path, f)) for f in names)


def validate(store: KeyStore, policy: IndexPolicy, count: int, log: IndexLog) -> IndexMeta:
    """The index's metadata, if opening may trust it for a log of ``count`` transactions;
    IndexDamagedError says why not. O(1): a few pages and the last transaction's rows."""
    meta = store.check()
    if meta.format != FORMAT:
        raise IndexDamagedError(f"the key index has another format ({meta.format[:40]!r})")
    if meta.policy != policy.encode():
        raise IndexDamagedError("the key index was built for other unindexed prefixes")
    if meta.tx > count:
        raise IndexDamagedError(f"the key index reflects transaction {meta.tx}, the log holds {count}")
    if meta.root != log.root(meta.tx):
        raise IndexDamagedError(
            f"the key index's root at transaction {meta.tx} is not the log's (another ledger's index, or damaged)"
        )
    if meta.tx:
        try:
            items = [it for it in log.head(meta.tx, _LAST_TX_ROWS) if policy.indexed(it[0])]
        except CorruptionError:
            items = []  # the log's own damage: found by reads and the audit, not the index's
        with store.snapshot() as snap:
            for key, loc in items:
                if not snap.revision(key, loc):
                    raise IndexDamagedError(f"the key index lacks rows of transaction {meta.tx}")
    return meta


def fill(
    store: KeyStore, log: IndexLog, policy: IndexPolicy, first: int, last: int,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Append transactions ``first .. last`` of the log to ``store``, FILL_ENTRIES entries an
    LMDB transaction (each a consistent index: its metadata names the last transaction in it),
    calling ``progress(tx, last)`` after each. Raises StorageError or IndexDamagedError as
    :meth:`KeyStore.append`."""
    chunk: list[Batch] = []
    entries = 0
    for batch in log.batches(first, last):
        chunk.append(indexed(batch, policy))
        entries += batch[2]
        if entries >= FILL_ENTRIES:
            store.append(chunk, chunk[-1][0], log.root(chunk[-1][0]))
            if progress is not None:
                progress(chunk[-1][0], last)
            chunk, entries = [], 0
    if chunk:
        store.append(chunk, chunk[-1][0], log.root(chunk[-1][0]))
        if progress is not None:
            progress(chunk[-1][0], last)


def build(
    path: str, policy: IndexPolicy, log: IndexLog, count: int, before_swap: Callable[[], None],
    progress: Callable[[int, int], None] | None = None,
) -> KeyStore:
    """A new index of transactions 1..count at ``path``: built in ``path + ".new"``, flushed to
    disk, then swapped in (the old directory renamed to ``path + ".old"`` and deleted).
    ``before_swap`` runs just before (the caller detaches a store it has open on the old
    one). Raises OSError, StorageError or IndexDamagedError if it cannot be built."""
    new, old = path + ".new", path + ".old"
    _remove(new)
    store = KeyStore.create(new, policy.encode())
    try:
        fill(store, log, policy, 1, count, progress)
        store.sync()
    finally:
        store.close()
    before_swap()
    _remove(old)
    if os.path.lexists(path):
        os.rename(path, old)
    os.rename(new, path)
    fsync_dir(path)
    _remove(old)
    return KeyStore.open(path, readonly=False)


def remove_leftovers(path: str) -> None:
    """Delete what an interrupted rebuild left beside the index (a writer does, at open)."""
    for p in (path + ".new", path + ".old"):
        _remove(p)


def _remove(p: str) -> None:
    try:
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.unlink(p)
    except OSError:
        pass  # what is left is removed by the next writer's open
