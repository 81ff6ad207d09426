"""Full audit: recompute every hash from the stored bytes and compare with what is stored, and
check the key index against the log (:mod:`kvcore.indexaudit`), reading the log once."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from kvcore import payload
from kvcore.codec import codec_for
from kvcore.erasure import ERASED_KEY
from kvcore.erasure import decode as decode_erasure
from kvcore.errors import CorruptionError
from kvcore.hashing import HASH_SIZE, tx_leaf_hash
from kvcore.models import State
from kvcore.storage.base import Storage
from kvcore.tree import MerkleTree, node_count


@dataclass(frozen=True)
class AuditReport:
    """What an audit found. ``ok`` is True only if every check passed."""

    ok: bool
    tx_count: int
    entries: int
    first_bad_tx: int | None = None
    problems: list[str] = field(default_factory=list)
    root: bytes = b""

    def __str__(self) -> str:
        if self.ok:
            return f"audit passed: {self.tx_count} transactions, {self.entries} entries"
        where = f" (first bad transaction: {self.first_bad_tx})" if self.first_bad_tx else ""
        return "audit FAILED" + where + ": " + "; ".join(self.problems)


def _tx_of_node(pos: int, count: int) -> int:
    """The transaction whose append wrote tree node ``pos``."""
    lo, hi = 1, count
    while lo < hi:
        mid = (lo + hi) // 2
        if node_count(mid) > pos:
            hi = mid
        else:
            lo = mid + 1
    return lo


class IndexCheck(Protocol):
    """The key index's part of an audit (:class:`kvcore.indexaudit.IndexAudit`)."""

    def tx(self, tx_id: int, parsed: list[tuple[int, int, bytes, bytes]], first: int) -> None:
        """Check the index's rows for entries ``first ..`` of one transaction of the log
        (called in order)."""
        ...

    def finish(self, root_at: bytes | None) -> list[str]:
        """The problems found; ``root_at``: the log's root at the transaction the index says it
        reflects (None if unknown)."""
        ...

    @property
    def held(self) -> int:
        """The last transaction the on-disk index says it reflects."""
        ...


ENTRY_PROGRESS_EVERY = 65_536
"""Entries between two calls of an audit's entry progress within a large transaction."""


def run_audit(
    storage: Storage,
    tx_count: int,
    index: IndexCheck,
    trusted_state: State | None,
    progress: Callable[[int, int], None] | None,
    entry_progress: Callable[[int, int], None] | None = None,
    total_entries: int = 0,
    erased: dict[tuple[int, int], bytes] | None = None,
) -> AuditReport:
    """Audit the ledger's ``tx_count`` transactions on ``storage``. ``progress(done, total)``
    is called after each transaction (in transactions), ``entry_progress(done, total)`` after
    each transaction and every ENTRY_PROGRESS_EVERY entries of a large one (in entries, of
    ``total_entries``)."""
    problems: list[str] = []
    first_bad: int | None = None
    tree = MerkleTree()
    codec = codec_for(storage.format_version)  # the ledger's format: its bytes are parsed so
    entries = 0
    last_ts = 0

    by_tx: dict[int, dict[int, bytes]] = {}
    for (t, i), leaf in (erased or {}).items():
        by_tx.setdefault(t, {})[i] = leaf
    logged: dict[tuple[int, int], bytes] = {}  # what the log's erasure records say

    def bad(tx_id: int, what: str) -> None:
        nonlocal first_bad
        problems.append(f"transaction {tx_id}: {what}")
        if first_bad is None or tx_id < first_bad:
            first_bad = tx_id

    try:
        for tx_id, body, extra in storage.scan(1):
            try:
                header, (hid, ts, n, root, _sroot) = payload.header_of(body)
                erased_here = by_tx.get(tx_id)
                parsed, extra_now, root_now = codec.rebuild(body, erased_here)
            except ValueError as e:
                bad(tx_id, f"cannot be decoded ({e})")
                break
            if hid != tx_id:
                bad(tx_id, f"header says it is transaction {hid}")
            if ts < last_ts:
                bad(tx_id, "timestamp goes backwards")
            last_ts = ts
            if len(parsed) != n:
                bad(tx_id, f"header counts {n} entries, the payload holds {len(parsed)}")
            if root_now != root:
                bad(tx_id, "entries do not hash to the header's entries root")
            if extra_now != extra:
                bad(tx_id, "stored entry positions or entries-tree nodes do not match the entries")
            for i in erased_here or ():  # an erased value must be gone: all zeros
                if i < len(parsed) and any(parsed[i][3]):
                    bad(tx_id, f"entry {i} is erased but its value is still there")
            for _p, _kind, key, value in parsed:
                if key == ERASED_KEY:
                    try:
                        logged.update(((t, i), leaf) for t, i, leaf in decode_erasure(value))
                    except ValueError:
                        bad(tx_id, "an erasure record does not decode")
            tree.append(tx_leaf_hash(header))
            for start in range(0, len(parsed), ENTRY_PROGRESS_EVERY):
                index.tx(tx_id, parsed[start : start + ENTRY_PROGRESS_EVERY], start)
                if entry_progress is not None and start + ENTRY_PROGRESS_EVERY < len(parsed):
                    entry_progress(entries + start + ENTRY_PROGRESS_EVERY, total_entries)
            entries += len(parsed)
            if progress is not None:
                progress(tx_id, tx_count)
            if entry_progress is not None:
                entry_progress(entries, total_entries)
            if first_bad is not None:
                break
    except CorruptionError as e:
        problems.append(str(e))
        if first_bad is None:
            first_bad = tree.size + 1

    if first_bad is None and logged != dict(erased or {}):
        problems.append("the erased entries the ledger serves differ from those its erasure records list")

    # The stored ledger tree was written at commit time: compare it for every transaction
    # scanned, even after a problem, since it can show that an earlier header was changed
    # (e.g. a later "timestamp goes backwards" because an earlier timestamp was raised).
    stored = storage.tree_nodes()
    mine = tree.nodes()
    if storage.readonly and len(stored) < len(mine):
        mine = mine[: len(stored)]  # a reader: the writer appends tree nodes after each commit
    if stored[: len(mine)] != mine or len(stored) < len(mine):
        pos = next(
            (
                i
                for i in range(0, min(len(stored), len(mine)), HASH_SIZE)
                if stored[i : i + HASH_SIZE] != mine[i : i + HASH_SIZE]
            ),
            min(len(stored), len(mine)),
        ) // HASH_SIZE
        tx = _tx_of_node(pos, tx_count)
        problems.append(f"transaction {tx}: stored ledger-tree node {pos} does not match")
        first_bad = tx if first_bad is None else min(first_bad, tx)
    held = index.held
    index_problems = index.finish(tree.root(held) if 0 < held <= tree.size else (b"" if held == 0 else None))
    if first_bad is None:
        if tree.size != tx_count:
            problems.append(f"log holds {tree.size} transactions, the ledger counts {tx_count}")
            first_bad = tree.size + 1
        else:
            problems += index_problems
    if trusted_state is not None:
        if trusted_state.tx_id > tree.size:
            problems.append(
                f"the trusted state is at transaction {trusted_state.tx_id}, "
                f"the ledger holds only {tree.size}"
            )
        elif tree.root(trusted_state.tx_id) != trusted_state.root:
            problems.append(
                f"the ledger's root at transaction {trusted_state.tx_id} differs from the "
                "trusted state: its history was rewritten"
            )
    return AuditReport(
        ok=not problems,
        tx_count=tree.size,
        entries=entries,
        first_bad_tx=first_bad,
        problems=problems,
        root=tree.root() if tree.size else b"",
    )
