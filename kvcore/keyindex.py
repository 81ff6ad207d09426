"""Locations of revisions, and the in-memory key index.

A revision is located by ``loc = tx_id << 56 | ordinal << 32 | position``: the transaction
that wrote it, the entry's ordinal in that transaction (its leaf index) and its byte position
in the transaction's payload. Locations therefore sort by transaction.

The ledger's key index lives on disk (:mod:`kvcore.keystore`); :class:`KeyIndex` holds in
memory the revisions the on-disk index does not (yet) hold (:mod:`kvcore.index`: a bounded
overlay), or every revision when there is no usable on-disk index. Both are derived data,
rebuilt from the transaction log.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections.abc import Iterator

from sortedcontainers import SortedList  # no stubs (pyproject: ignore_missing_imports): SortedList is Any

TX_SHIFT = 56
MAX_ORDINAL = (1 << 24) - 1
MAX_POSITION = (1 << 32) - 1


def make_loc(tx_id: int, ordinal: int, position: int) -> int:
    return (tx_id << TX_SHIFT) | (ordinal << 32) | position


def tx_of(loc: int) -> int:
    return loc >> TX_SHIFT


def ordinal_of(loc: int) -> int:
    return (loc >> 32) & MAX_ORDINAL


def position_of(loc: int) -> int:
    return loc & MAX_POSITION


def bound_for(at_tx: int) -> int:
    """Every location written by a transaction <= ``at_tx`` is below this bound."""
    return (at_tx + 1) << TX_SHIFT


class KeyIndex:
    """key -> locations of its revisions (an int for one revision, a list for several).

    Keys are also kept in order for scans; keys new since the last ordered access wait in a
    list and are merged in on the next one, so writers that nobody scans pay nothing for order.
    """

    __slots__ = ("by_key", "_keys", "_new")

    def __init__(self) -> None:
        self.by_key: dict[bytes, int | list[int]] = {}
        """key -> the location of its only revision, or a list of them (read it; the index writes it)."""
        self._keys = SortedList()
        self._new: list[bytes] = []

    def _ordered(self) -> SortedList:
        if self._new:
            self._new.sort()
            self._keys.update(self._new)
            self._new = []
        return self._keys

    def __len__(self) -> int:
        return len(self.by_key)

    def add_many(self, items: list[tuple[bytes, int]]) -> None:
        m = self.by_key
        keys = [k for k, _ in items]
        if m.keys().isdisjoint(keys) and len(set(keys)) == len(keys):  # all new (inserts)
            m.update(items)
            self._new += keys
            return
        new: list[bytes] = []
        for key, loc in items:
            cur = m.get(key)
            if cur is None:
                m[key] = loc
                new.append(key)
            elif isinstance(cur, int):
                m[key] = [cur, loc]
            else:
                cur.append(loc)
        if new:
            self._new += new

    def locations(self, key: bytes) -> list[int]:
        cur = self.by_key.get(key)
        if cur is None:
            return []
        return [cur] if isinstance(cur, int) else list(cur)

    def __contains__(self, key: object) -> bool:
        return key in self.by_key

    def latest(self, key: bytes, bound: int | None = None) -> tuple[int, int] | None:
        """(location, revision) of the newest revision below ``bound``, or None."""
        cur = self.by_key.get(key)
        if cur is None:
            return None
        if isinstance(cur, int):
            return (cur, 1) if bound is None or cur < bound else None
        if bound is None or cur[-1] < bound:
            return cur[-1], len(cur)
        i = bisect_left(cur, bound)
        return (cur[i - 1], i) if i else None

    def revision_of(self, key: bytes, loc: int) -> int:
        """How many revisions of ``key`` are at or below ``loc``."""
        cur = self.by_key.get(key)
        if isinstance(cur, int):
            return 1 if cur <= loc else 0
        return bisect_right(cur, loc) if cur else 0

    def keys_from(self, start: bytes, inclusive: bool, limit: int) -> list[bytes]:
        """Up to ``limit`` keys >= ``start`` (> if not inclusive), in order."""
        it = self._ordered().irange(minimum=start, inclusive=(inclusive, True))
        out = []
        for k in it:
            out.append(k)
            if len(out) >= limit:
                break
        return out

    def iter_keys(self) -> Iterator[bytes]:
        return iter(self._ordered())
