"""Group commit: transactions committed at the same time by several threads share one append
to the log, one durable write and one update of the derived state.

A committing thread queues its transaction. If no other thread is committing, it becomes the
leader: under the engine's lock it commits every transaction queued by then as one group
(:meth:`kvcore.Ledger.commit_many`): each is still its own ledger transaction, checked for
conflicts in order against the ones before it (and the rest of the log), with its own header
and state-map root; one failing its check is refused alone (a transaction that changes a
collection's definition is committed in a group of its own). The others wait (not on the
engine's lock: on a condition, woken once) and find their outcome set. The derived state of
a group is written in one LMDB transaction, committed only once the log holds the group
durably (never ahead of the log): the state map of the group's second transaction is planned
on top of the first's, in that same LMDB transaction, before it is committed. On a ledger that
other processes write to (PostgreSQL), the leader first brings that LMDB transaction up to the
transactions the ledger took in from them, checking each one's state root.
"""

from __future__ import annotations

import dataclasses
import os
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import lmdb

import kvcore

from docstore.engine import derive
from docstore.engine.store import Location, Store
from docstore.errors import StorageError
from docstore.statemap.hashing import run_root
from docstore.statemap.tree import Plan

if TYPE_CHECKING:
    from docstore.engine.engine import Engine, Written


@dataclass
class _Queued:
    """A transaction waiting in the queue, then its outcome (a transaction id or an error)."""

    kv: kvcore.Transaction
    request: kvcore.CommitRequest
    metas: dict[str, dict[str, Any]]
    written: list[Written]
    definitions: dict[str, int]
    keep_map: bool
    erasures: list[derive.ErasedDoc] = dataclasses.field(default_factory=list)
    outcome: int | BaseException | None = None
    done: bool = False
    old: dict[tuple[str, str], dict | None] = dataclasses.field(init=False)

    def changes(self, tx_id: int, leaves: Sequence[bytes] | None) -> list[derive.DocChange]:
        return [
            derive.DocChange(
                w.collection, w.id, w.doc, Location(tx_id, w.index, w.revision, w.n),
                b"" if leaves is None else run_root(list(leaves[w.index : w.index + w.n + 1])),
            )
            for w in self.written
        ]

    def __post_init__(self) -> None:
        # the revisions its documents replace (for planning its map and reflecting it)
        self.old = {(w.collection, w.id): w.old for w in self.written}


GROUP_COMMIT = os.environ.get("IMMUDOC_BENCHMARK_WITHOUT_GROUP_COMMIT") != "1"
"""Off only to measure what group commit gains (``python -m benchmarks scale-out``)."""


class Committer:
    """The engine's group commit (see the module)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._queue: list[_Queued] = []
        self._turn = threading.Condition(threading.Lock())  # guards the queue and the leader flag
        self._leading = False

    def commit(
        self,
        kv: kvcore.Transaction,
        metas: dict[str, dict[str, Any]],
        written: list[Written],
        definitions: dict[str, int],
        keep_map: bool,
        erasures: list[derive.ErasedDoc] | None = None,
    ) -> int | None | BaseException:
        """Commit ``kv`` with others queued at the same time; its transaction id (None: it
        wrote nothing) or the (kvcore or docstore) error that refused it, for the caller to
        raise."""
        request = kv.request()
        if request is None:
            return None
        mine = _Queued(kv, request, metas, written, definitions, keep_map, erasures or [])
        lock = self._engine.lock
        if not GROUP_COMMIT or lock.owned():
            # benchmark only: each transaction its own durable writes; or a caller that
            # staged under the engine's lock (a single operation's last try): it commits at
            # once, alone, and cannot conflict (the queued ones wait for the lock)
            with lock:
                self._lead([mine])
            return self._done(mine)
        with self._turn:
            self._queue.append(mine)
            while self._leading and not mine.done:  # a leader is committing: wait for its turn
                self._turn.wait()
            if mine.done:  # a leader took it
                return self._done(mine)
            self._leading = True
            group, self._queue = self._queue, []
        try:
            with lock:
                for part in _parts(group):
                    self._lead(part)
        finally:
            for q in group:  # a part left out by an interruption: its caller must not think
                if not q.done:  # it wrote nothing
                    q.outcome = StorageError("the commit was interrupted before this transaction was written")
                    q.done = True
            with self._turn:
                self._leading = False
                self._turn.notify_all()  # those it committed return; the next one leads
        return self._done(mine)

    @staticmethod
    def _done(mine: _Queued) -> int | None | BaseException:
        if isinstance(mine.outcome, int):
            mine.kv.tx_id = mine.outcome
        return mine.outcome

    def _lead(self, group: list[_Queued]) -> None:
        try:
            self._run(group)
        except Exception as e:  # before or in the durable write: none of the group is committed
            for q in group:
                q.outcome = _copy(e)
        except BaseException:  # interrupted in the leader's thread: the others cannot know
            for q in group:
                if q.outcome is None:
                    q.outcome = StorageError(
                        "the commit was interrupted; it may or may not have been committed: read to see"
                    )
            raise
        finally:
            for q in group:
                q.done = True

    def _run(self, group: list[_Queued]) -> None:
        engine = self._engine
        store = engine.store
        ledger = engine.ledger
        keep_map = group[0].keep_map
        txn = store.write() if keep_map else None
        pending: list[tuple[int, _Queued, list[derive.DocChange], Plan]] = []
        caught_up: list[int] = []

        def state_root_for(q: _Queued) -> Callable[[int, Sequence[bytes]], bytes]:
            def state_root(tx_id: int, leaves: Sequence[bytes]) -> bytes:
                assert txn is not None
                try:  # what the group's LMDB transaction must hold before this one is planned
                    if not caught_up:  # other processes' commits, taken in by the ledger: first
                        caught_up.append(_catch_up(engine, store, txn, tx_id - 1))
                    if pending:  # the transaction before it in the group: reflect it first
                        prev_tx, prev, changes, plan = pending.pop()
                        if prev_tx < tx_id:  # (the same number again: that one was refused)
                            _reflect(engine, store, txn, prev_tx, prev, changes, plan)
                except Exception as e:  # the LMDB transaction is half-written: no state root of
                    raise kvcore.GroupAborted(  # this group can be trusted; none of it commits
                        f"the derived state could not follow the group ({type(e).__name__}: {e})"
                    ) from e
                changes = q.changes(tx_id, leaves)
                defs = {name: (i, leaves[i]) for name, i in q.definitions.items()}
                plan = derive.plan_map(store, txn, engine.read_doc, tx_id, q.metas, defs, changes, q.old, q.erasures)
                pending.append((tx_id, q, changes, plan))
                return plan.root

            return state_root

        requests = [
            dataclasses.replace(q.request, state_root=state_root_for(q)) if keep_map else q.request for q in group
        ]
        try:
            outcomes = ledger.commit_many(requests)
        except BaseException:
            if txn is not None:
                txn.abort()
            raise
        try:
            self._reflect_group(group, outcomes, txn, pending)
        except BaseException:
            if txn is not None:
                txn.abort()  # (a no-op once committed)
            raise

    def _reflect_group(
        self, group: list[_Queued], outcomes: list[int | Exception],
        txn: lmdb.Transaction | None, pending: list[tuple[int, _Queued, list[derive.DocChange], Plan]],
    ) -> None:
        """Set each one's outcome; write the derived state of those committed (the last one's
        reflection, the group's marker) and commit the LMDB transaction."""
        engine = self._engine
        store = engine.store
        ledger = engine.ledger
        committed = [(o, q) for o, q in zip(outcomes, group) if isinstance(o, int)]
        for o, q in zip(outcomes, group):
            q.outcome = o
        if not committed:
            if txn is not None:
                txn.abort()
            return
        try:
            if txn is None:  # benchmark only: the map is not kept (the next open rebuilds it)
                txn = store.write()
                _catch_up(engine, store, txn, committed[0][0] - 1)
                for tx_id, q in committed:
                    derive.apply(store, txn, engine.read_doc, tx_id, b"", q.metas, q.changes(tx_id, None), q.old, q.erasures)
                store.mark_map_stale(txn)
            elif pending and pending[0][0] == committed[-1][0]:
                _reflect(engine, store, txn, *pending[0])
            last = committed[-1][0]
            store.set_reflected(txn, last, ledger.state(last).root)
            txn.commit()
            engine.reflected_tx = last
        except Exception as e:  # the log holds the group: the next open applies it
            if txn is not None:
                txn.abort()
            engine.mark_damaged(f"the derived state could not be updated: {e}")
            for tx_id, q in committed:
                q.outcome = StorageError(
                    f"transaction {tx_id} is committed, but the derived state could not be updated ({e}): "
                    "reopen the database (it is brought up to date from the log)"
                )


def _reflect(
    engine: Engine, store: Store, txn: lmdb.Transaction, tx_id: int, q: _Queued,
    changes: list[derive.DocChange], plan: Plan,
) -> None:
    """Write a committed transaction's derived state and map into the group's LMDB transaction
    (its ledger root is set for the group's last one)."""
    derive.apply(store, txn, engine.read_doc, tx_id, b"", q.metas, changes, q.old, q.erasures)
    plan.apply(txn, store.smap)


def _parts(group: list[_Queued]) -> list[list[_Queued]]:
    """The group in order, a transaction that changes a collection's definition alone: its
    update of the derived state reads every document of the collection from the log, which
    must then hold the transactions before it."""
    parts: list[list[_Queued]] = [[]]
    for q in group:
        if q.metas:
            parts += [[q], []]
        else:
            parts[-1].append(q)
    return [p for p in parts if p]


def _catch_up(engine: Engine, store: Store, txn: lmdb.Transaction, upto: int) -> int:
    """Bring the derived state in ``txn`` up to transaction ``upto`` from the log (what other
    processes writing to the same ledger committed: PostgreSQL); returns how many."""
    reflected = store.reflected(txn)
    start = 0 if reflected is None else reflected[0]
    for tx_id in range(start + 1, upto + 1):
        derive.apply_logged(store, txn, engine.ledger, engine.read_doc, tx_id)
    return upto - start


def _copy(e: BaseException) -> BaseException:
    """The same error for another waiting thread (each raises its own object)."""
    try:
        return type(e)(*e.args)
    except Exception:
        return e
