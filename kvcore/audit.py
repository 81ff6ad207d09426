"""Full audit: recompute every hash from the stored bytes and compare with what is stored."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from kvcore import payload
from kvcore.errors import CorruptionError
from kvcore.hashing import HASH_SIZE, tx_leaf_hash
from kvcore.keyindex import KeyIndex, make_loc
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


def run_audit(
    storage: Storage,
    tx_count: int,
    expected_index: bytes,
    trusted_state: State | None,
    progress: Callable[[int, int], None] | None,
) -> AuditReport:
    problems: list[str] = []
    first_bad: int | None = None
    tree = MerkleTree()
    index = KeyIndex()
    entries = 0
    last_ts = 0

    def bad(tx_id: int, what: str) -> None:
        nonlocal first_bad
        problems.append(f"transaction {tx_id}: {what}")
        if first_bad is None or tx_id < first_bad:
            first_bad = tx_id

    try:
        for tx_id, body, extra in storage.scan(1):
            try:
                header, (hid, ts, n, root) = payload.header_of(body)
                parsed = list(payload.iter_entries(body))
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
            if payload.entries_root(body) != root:
                bad(tx_id, "entries do not hash to the header's entries root")
            if payload.extra_for(body) != extra:
                bad(tx_id, "stored entry positions or entries-tree nodes do not match the entries")
            tree.append(tx_leaf_hash(header))
            index.add_many(
                [(key, make_loc(tx_id, i, pos)) for i, (pos, _k, key, _v) in enumerate(parsed)]
            )
            entries += len(parsed)
            if progress is not None:
                progress(tx_id, tx_count)
            if first_bad is not None:
                break
    except CorruptionError as e:
        problems.append(str(e))
        if first_bad is None:
            first_bad = tree.size + 1

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
    if first_bad is None:
        if tree.size != tx_count:
            problems.append(f"log holds {tree.size} transactions, the ledger counts {tx_count}")
            first_bad = tree.size + 1
        if index.dump(tx_count) != expected_index:
            problems.append("the in-memory key index does not match the log")
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
