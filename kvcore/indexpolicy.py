"""Which keys the key index leaves out: the ledger's *unindexed prefixes*.

``Ledger.open(path, unindexed_prefixes=(b"p\\x00",))``: an entry whose key starts with one of
these prefixes is stored, hashed and provable like any other, but the key index holds no row
for it, so reads by key (``get``, ``lookup``, ``history``, ``scan``, ``prove_entry``) cannot
find it and refuse to look (InvalidInputError) rather than answer "not found". Such entries
are read by position: ``entries``, ``entry_items``, ``prove_entries``, ``prove_entry_at``,
``find_and_prove``. A writer that reads a record through one indexed entry and the run of
entries after it (docstore: a document's header, then its properties) saves an index row per
entry that is never looked up by key.

The policy is part of the index: an index built under another policy is rebuilt on open.
"""

from __future__ import annotations

from collections.abc import Iterable

from kvcore.errors import InvalidInputError
from kvcore.limits import MAX_KEY_BYTES


class IndexPolicy:
    """A set of unindexed key prefixes (none: every key is indexed)."""

    __slots__ = ("prefixes",)

    def __init__(self, prefixes: Iterable[bytes] = ()) -> None:
        """``prefixes``: non-empty bytes of at most MAX_KEY_BYTES each (InvalidInputError
        otherwise). A prefix that starts with another one adds nothing and is dropped."""
        if isinstance(prefixes, (bytes, bytearray, str)):
            raise InvalidInputError("unindexed_prefixes is a sequence of bytes prefixes, e.g. (b'p\\x00',)")
        try:
            given = list(prefixes)
        except TypeError:
            raise InvalidInputError(
                f"unindexed_prefixes is a sequence of bytes prefixes, got {type(prefixes).__name__}"
            ) from None
        for p in given:
            if type(p) is not bytes or not 0 < len(p) <= MAX_KEY_BYTES:
                raise InvalidInputError(
                    f"an unindexed prefix is 1 to {MAX_KEY_BYTES} bytes, got {p!r:.80}"
                )
        kept: list[bytes] = []
        for p in sorted(set(given)):
            if not any(p.startswith(q) for q in kept):
                kept.append(p)
        self.prefixes: tuple[bytes, ...] = tuple(kept)
        """The unindexed prefixes, sorted, none starting with another."""

    def __bool__(self) -> bool:
        return bool(self.prefixes)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IndexPolicy) and other.prefixes == self.prefixes

    def __hash__(self) -> int:
        return hash(self.prefixes)

    def __repr__(self) -> str:
        return f"IndexPolicy({list(self.prefixes)!r})"

    def indexed(self, key: bytes) -> bool:
        """Whether ``key`` gets index rows."""
        return not self.prefixes or not key.startswith(self.prefixes)

    def overlaps(self, prefix: bytes) -> bool:
        """Whether some key starting with ``prefix`` is unindexed (a scan of ``prefix`` could
        not see it)."""
        return any(p.startswith(prefix) or prefix.startswith(p) for p in self.prefixes)

    def encode(self) -> bytes:
        """The policy as stored in the index's metadata: ``u16 length || prefix`` each, sorted."""
        return b"".join(len(p).to_bytes(2, "big") + p for p in self.prefixes)

    def refuse(self, key: bytes, what: str) -> InvalidInputError:
        """The error for a read by key of an unindexed ``key``."""
        unindexed = next(p for p in self.prefixes if key.startswith(p))
        return InvalidInputError(
            f"{what} of key {key[:64]!r}: keys under the unindexed prefix {unindexed!r} have no "
            "index rows (read them by position: entries, entry_items, prove_entry_at)"
        )
