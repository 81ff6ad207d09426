"""The audit of the key index against the log, in bounded memory.

The audit reads the log once, in order (:mod:`kvcore.audit`); for each transaction this check
looks up the row every indexed entry should have (in the store if the store holds the
transaction, else in the overlay) and counts them. Then it reads the store's rows once, in
key order: each must be well formed, of an indexed key, and numbered 1, 2, 3... along its
key's run. Every expected row is there, and as many rows are there as expected: so the rows
are exactly the log's, whatever was added or removed behind the ledger's back. Nothing is
kept per key, so memory does not grow with the ledger (the overlay aside, which is in
memory anyway).
"""

from __future__ import annotations

from kvcore import keyrows
from kvcore.errors import KvError
from kvcore.index import LedgerIndex
from kvcore.keyindex import TX_SHIFT, make_loc

_EXAMPLES = 3  # rows named in a problem


class IndexAudit:
    """One audit's check of the index (use :meth:`tx` for every transaction of the log, in
    order, then :meth:`finish`). Holds one LMDB read transaction until :meth:`finish`."""

    def __init__(self, index: LedgerIndex, count: int) -> None:
        self._policy = index.policy
        self._count = count
        self.problems: list[str] = []
        self._snap, self._ov = index.snapshot_for_audit()
        self._held = 0
        self._meta_entries = 0
        self._meta_root = b""
        if self._snap is not None:
            try:
                meta = self._snap.meta()
                self._held, self._meta_entries, self._meta_root = meta.tx, meta.entries, meta.root
            except KvError as e:
                self.problems.append(f"the key index cannot be read: {e}")
                self._snap.close()
                self._snap = None
        self._disk_rows = 0  # rows the store should hold (of transactions <= count)
        self._mem_rows = 0
        self._disk_entries = 0
        self._missing: list[str] = []
        self._missing_count = 0

    @property
    def held(self) -> int:
        """The last transaction the store says it reflects (0 without a store)."""
        return self._held

    def tx(self, tx_id: int, parsed: list[tuple[int, int, bytes, bytes]], first: int = 0) -> None:
        """Check the rows of entries ``first ..`` of transaction ``tx_id``, which are ``parsed``
        ((position, kind, key, value) each, as :func:`kvcore.payload.iter_entries`)."""
        snap = self._snap
        on_disk = snap is not None and tx_id <= self._held
        if on_disk:
            self._disk_entries += len(parsed)
        indexed = self._policy.indexed
        for i, (pos, _kind, key, _value) in enumerate(parsed, first):
            if not indexed(key):
                continue
            loc = make_loc(tx_id, i, pos)
            if on_disk:
                assert snap is not None
                self._disk_rows += 1
                try:
                    found = snap.revision(key, loc) > 0
                except KvError:
                    found = False
            else:
                self._mem_rows += 1
                found = loc in self._ov.index.locations(key)
            if not found:
                self._missing_count += 1
                if len(self._missing) < _EXAMPLES:
                    self._missing.append(f"{key[:64]!r} of transaction {tx_id}")

    def finish(self, root_at: bytes | None) -> list[str]:
        """The problems found (none: the index is the log's). ``root_at`` is the log's root at
        the transaction the store says it reflects (None if the audit could not compute it)."""
        try:
            self._finish(root_at)
        finally:
            if self._snap is not None:
                self._snap.close()
        return self.problems

    def _finish(self, root_at: bytes | None) -> None:
        out = self.problems
        if self._missing_count:
            out.append(
                f"the key index lacks {self._missing_count} rows of the log ({', '.join(self._missing)})"
            )
        snap = self._snap
        if snap is not None:
            if self._held <= self._count:
                if root_at is not None and root_at != self._meta_root:
                    out.append(f"the key index's root at transaction {self._held} is not the log's")
                if self._disk_entries != self._meta_entries:
                    out.append(
                        f"the key index counts {self._meta_entries} entries up to transaction "
                        f"{self._held}, the log holds {self._disk_entries}"
                    )
            self._check_rows()
        mem = sum(
            1
            for locs in self._ov.index.by_key.values()
            for loc in ((locs,) if isinstance(locs, int) else locs)
            if self._held < loc >> TX_SHIFT <= self._count
        )
        if mem != self._mem_rows:
            out.append(f"the key index's overlay holds {mem} revisions, the log {self._mem_rows}")

    def _check_rows(self) -> None:
        from_store = self._snap
        assert from_store is not None
        rows = malformed = unindexed = misnumbered = 0
        prev_pre, prev_rev = b"", 0
        examples: list[str] = []
        indexed = self._policy.indexed
        try:
            for r, v in from_store.rows():
                if not keyrows.well_formed(r, v):
                    malformed += 1
                    prev_pre = b""
                    continue
                if keyrows.loc_of(r) >> TX_SHIFT > min(self._held, self._count):
                    continue  # written after what this audit read of the log (a reader's)
                rows += 1
                pre = keyrows.prefix_of(r)
                rev = keyrows.revision_of(v, len(r) == keyrows.LONG_ROW)
                want = prev_rev + 1 if pre == prev_pre else 1
                key = keyrows.key_of(r, v)
                if rev != want:
                    misnumbered += 1
                    if len(examples) < _EXAMPLES:
                        examples.append(f"{key[:64]!r} revision {rev} where {want} was due")
                if not indexed(key):
                    unindexed += 1
                prev_pre, prev_rev = pre, rev
        except KvError as e:
            self.problems.append(f"the key index cannot be read through: {e}")
            return
        out = self.problems
        if malformed:
            out.append(f"the key index holds {malformed} malformed rows")
        if unindexed:
            out.append(f"the key index holds {unindexed} rows of keys under unindexed prefixes")
        if misnumbered:
            out.append(f"the key index numbers {misnumbered} revisions wrongly ({', '.join(examples)})")
        if rows != self._disk_rows:
            out.append(f"the key index holds {rows} rows, the log {self._disk_rows}")
