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
    if "\x00" in field or not _utf8(field):  # it becomes part of ledger keys and stored JSON
        raise QueryError(f"invalid index field {field!r}: NUL characters and lone surrogates are not allowed")
    return field


def _utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


_SCALARS = frozenset((str, int, float, bool, type(None)))
_NULL_KEY = [encode_index_value(None)]
_ABSENT: Any = object()


def keys_for(doc: dict, field: str, parts: list[str] | None = None) -> list[bytes]:
    """The encoded index keys of ``doc`` for ``field`` (distinct); ``parts``: its dotted parts.

    The common case, a path through objects only to a scalar (or to nothing: null), is
    answered directly; arrays and objects on the path take Mongo's general path rules.
    """
    node: Any = doc
    for part in parts or field.split("."):
        if node.__class__ is dict:
            node = node.get(part, _ABSENT)
        elif node.__class__ is list:
            break
        else:  # a scalar before the end of the path: the field is missing
            return list(_NULL_KEY)
    else:
        if node is _ABSENT:
            return list(_NULL_KEY)
        if node.__class__ in _SCALARS:
            return [encode_index_value(node)]
    out = []
    for v in index_keys(doc, field):
        e = encode_index_value(v)
        if e not in out:
            out.append(e)
    return out


class SecondaryIndex:
    """One field's index. Not thread-safe by itself: the database serializes changes."""

    __slots__ = ("field", "unique", "_entries", "_by_doc", "_parts", "_array_docs")

    def __init__(
        self,
        field: str,
        unique: bool = False,
        entries: list[tuple[bytes, str]] | None = None,
        array_docs: Iterable[str] = (),
    ) -> None:
        """An empty index, or one holding ``entries`` (key, id) and ``array_docs`` (a snapshot:
        the per-document map is then derived on the first write)."""
        self.field = check_field(field)
        self.unique = unique
        self._entries: SortedList = SortedList(entries or ())
        self._by_doc: dict[str, list[bytes]] | None = None if entries else {}  # None: derive when needed
        self._parts = self.field.split(".")
        self._array_docs: set[str] = set(array_docs)  # documents whose path meets an array

    @property
    def multikey(self) -> bool:
        """Whether some document meets an array on the path (then a range's bounds may be
        met by different elements, and the planner may use only one of them)."""
        return bool(self._array_docs)

    def _note_arrays(self, doc_id: str, doc: dict | None) -> None:
        node: Any = doc
        for part in self._parts:
            if type(node) is list:
                self._array_docs.add(doc_id)
                return
            if type(node) is not dict:
                break
            node = node.get(part)
        if type(node) is list:
            self._array_docs.add(doc_id)
        else:
            self._array_docs.discard(doc_id)

    def __len__(self) -> int:
        if self._by_doc is None:  # not built yet: count without building (writers build it)
            return len({doc_id for _k, doc_id in self._entries})
        return len(self._by_doc)

    def describe(self) -> dict[str, Any]:
        return {"field": self.field, "unique": self.unique}

    def put(self, doc_id: str, doc: dict | None) -> None:
        """Index ``doc`` under ``doc_id`` (None removes it)."""
        self.put_many([(doc_id, doc)])

    def put_many(self, items: Iterable[tuple[str, dict | None]]) -> None:
        """Index many distinct documents (None removes one); new keys are merged in one update."""
        by_doc, entries, field, parts = self._doc_keys(), self._entries, self.field, self._parts
        added: list[tuple[bytes, str]] = []
        for doc_id, doc in items:
            old = by_doc.pop(doc_id, None)
            if old:
                for k in old:
                    entries.discard((k, doc_id))
            self._note_arrays(doc_id, doc)
            if doc is not None:
                keys = keys_for(doc, field, parts)
                by_doc[doc_id] = keys
                added += [(k, doc_id) for k in keys]
        entries.update(added)

    def bulk_load(self, items: Iterable[tuple[str, dict]]) -> None:
        pairs: list[tuple[bytes, str]] = []
        by_doc: dict[str, list[bytes]] = {}
        self._by_doc = by_doc
        for doc_id, doc in items:
            self._note_arrays(doc_id, doc)
            keys = keys_for(doc, self.field)
            by_doc[doc_id] = keys
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
    def dump(self) -> tuple[str, bool, list[tuple[bytes, str]], list[str]]:
        return (self.field, self.unique, list(self._entries), sorted(self._array_docs))

    @classmethod
    def load(cls, data: tuple[str, bool, list[tuple[bytes, str]], list[str]]) -> SecondaryIndex:
        field, unique, entries, array_docs = data
        return cls(field, unique, entries, array_docs)  # the per-document map: on the first write

    def _doc_keys(self) -> dict[str, list[bytes]]:
        """doc id -> its index keys (what a write must remove first); writers call it, under
        the database's lock, so it is built once."""
        by_doc = self._by_doc
        if by_doc is None:
            by_doc = {}
            for k, doc_id in self._entries:
                by_doc.setdefault(doc_id, []).append(k)
            self._by_doc = by_doc
        return by_doc
