"""Secondary indexes: sorted (index key, document id) pairs, kept in memory.

Index keys are :func:`keyenc.encode_index_value` of each value :func:`query.index_keys` yields
for the field (multikey over arrays; missing fields index as null). Indexes are derived data:
they are rebuilt from the documents and saved in the database's snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from sortedcontainers import SortedList

from docstore.collections.keyenc import encode_index_value, index_range
from docstore.collections.query import FieldBounds, index_keys
from docstore.errors import QueryError


def check_field(field: Any) -> str:
    if not isinstance(field, str) or not field or field.startswith("$") or ".." in field:
        raise QueryError(f"invalid index field {field!r}: use a dotted path such as 'site.country'")
    if field.startswith(".") or field.endswith("."):
        raise QueryError(f"invalid index field {field!r}: use a dotted path such as 'site.country'")
    return field


def keys_for(doc: dict, field: str) -> list[bytes]:
    """The encoded index keys of ``doc`` for ``field`` (distinct)."""
    out = []
    for v in index_keys(doc, field):
        e = encode_index_value(v)
        if e not in out:
            out.append(e)
    return out


class SecondaryIndex:
    """One field's index. Not thread-safe by itself: the database serializes changes."""

    __slots__ = ("field", "unique", "_entries", "_by_doc")

    def __init__(self, field: str, unique: bool = False) -> None:
        self.field = check_field(field)
        self.unique = unique
        self._entries: SortedList = SortedList()
        self._by_doc: dict[str, list[bytes]] = {}

    def __len__(self) -> int:
        return len(self._by_doc)

    def describe(self) -> dict[str, Any]:
        return {"field": self.field, "unique": self.unique}

    def put(self, doc_id: str, doc: dict | None) -> None:
        """Index ``doc`` under ``doc_id`` (None removes it)."""
        old = self._by_doc.pop(doc_id, None)
        if old:
            for k in old:
                self._entries.discard((k, doc_id))
        if doc is not None:
            keys = keys_for(doc, self.field)
            self._by_doc[doc_id] = keys
            for k in keys:
                self._entries.add((k, doc_id))

    def bulk_load(self, items: Iterable[tuple[str, dict]]) -> None:
        pairs = []
        for doc_id, doc in items:
            keys = keys_for(doc, self.field)
            self._by_doc[doc_id] = keys
            pairs.extend((k, doc_id) for k in keys)
        self._entries = SortedList(pairs)

    def candidates(self, bounds: FieldBounds) -> Iterator[str]:
        """Ids of documents with a key inside ``bounds`` (possibly repeated for multikeys)."""
        for start, stop in index_range(bounds):
            lo = None if start is None else (start,)
            hi = None if stop is None else (stop,)
            for _k, doc_id in self._entries.irange(lo, hi, inclusive=(True, False)):
                yield doc_id

    def count_range(self, bounds: FieldBounds) -> int:
        return sum(1 for _ in self.candidates(bounds))

    # snapshots
    def dump(self) -> tuple[str, bool, list[tuple[bytes, str]]]:
        return (self.field, self.unique, list(self._entries))

    @classmethod
    def load(cls, data: tuple[str, bool, list[tuple[bytes, str]]]) -> SecondaryIndex:
        field, unique, entries = data
        idx = cls(field, unique)
        idx._entries = SortedList(entries)
        by_doc: dict[str, list[bytes]] = {}
        for k, doc_id in entries:
            by_doc.setdefault(doc_id, []).append(k)
        idx._by_doc = by_doc
        return idx
