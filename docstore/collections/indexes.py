"""Secondary indexes: (index key, document id) entries in the derived state on disk.

Index keys are :func:`keyenc.encode_index_value` of each value :func:`query.index_keys` yields
for the field (multikey over arrays; missing fields index as null). Indexes are derived data:
the engine keeps them (docstore/engine/store.py), rebuilt from the documents when needed.
"""

from __future__ import annotations

from typing import Any

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


def meets_array(doc: dict, field: str) -> bool:
    """Whether the path to ``field`` meets an array in ``doc`` (then the index is multikey for
    it: a range's two bounds may be met by different elements)."""
    node: Any = doc
    for part in field.split("."):
        if type(node) is list:
            return True
        if type(node) is not dict:
            return False
        node = node.get(part)
    return type(node) is list


class Index:
    """One field's secondary index as the planner sees it: entries ``(index key, id)`` in the
    database's derived state (read through ``source``: the engine)."""

    __slots__ = ("collection", "field", "unique", "spec", "_source")

    def __init__(self, source: Any, collection: str, field: str, unique: bool, spec: dict | None = None) -> None:
        self._source = source
        self.collection = collection
        self.field = field
        self.unique = unique
        self.spec: dict[str, Any] = spec if spec is not None else {"field": field, "unique": unique}
        """Its definition (docstore.collections.indexspec: sparse, partial_filter)."""

    def answers(self, filter: dict | None) -> bool:  # noqa: A002
        """Whether every document ``filter`` matches has its keys here (a sparse or partial
        index holds only some documents)."""
        from docstore.collections.indexspec import covers

        return covers(self.spec, filter)

    @property
    def multikey(self) -> bool:
        """Whether some document meets an array on the path (then a range's bounds may be
        met by different elements, and the planner may use only one of them)."""
        return bool(self._source.index_multikey(self.collection, self.field))

    @property
    def compound(self) -> bool:
        """Whether the index is on several fields (its keys: theirs, concatenated)."""
        return bool(self.spec.get("fields"))

    def documents(self, bounds: FieldBounds) -> Any:
        """The current (id, document) pairs with a key inside ``bounds``, each once, in index
        order (the engine's Items: they carry the transaction their snapshot reflects)."""
        return self.documents_in(index_range(bounds))

    def documents_in(self, ranges: list[tuple[bytes | None, bytes | None]]) -> Any:
        """As :meth:`documents`, for byte ranges of index keys."""
        return self._source.indexed_items(self.collection, self.field, ranges, self.multikey)

    def count_range(self, bounds: FieldBounds) -> int:
        """Index entries inside ``bounds`` (a document may count more than once if multikey)."""
        return self.count_in(index_range(bounds))

    def count_in(self, ranges: list[tuple[bytes | None, bytes | None]]) -> int:
        """Index entries inside byte ``ranges``."""
        return int(self._source.index_count(self.collection, self.field, ranges))

    def describe(self) -> dict[str, Any]:
        return dict(self.spec)


def union_documents(source: Any, indexes: dict[str, Index], branches: Any) -> Any:
    """The current (id, document) pairs of the index plans ``branches`` (an ``or`` plan of
    docstore.collections.cursor), each document once, from one snapshot of the derived state
    (the engine's Items). A document of a branch is left out when an earlier branch holds it
    (its keys in that branch's ranges), so nothing is remembered but the multikey case's ids."""
    parts = []
    for plan in branches:
        idx = indexes[plan.field]
        parts.append((idx.spec, plan.byte_ranges(), idx.multikey))
    return source.union_items(indexes[branches[0].field].collection, parts)
