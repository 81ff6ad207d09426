"""Mongo-style update documents: ``$set``, ``$unset``, ``$inc``, ``$push`` (with ``$each``).

Paths are dotted. Through an array, a part must be an offset as MongoDB reads one: ASCII digits
without a leading zero (``a.0``, ``a.12``; not ``a.01``, ``a.²``); anything else is a
QueryError, except under ``$unset``, which then changes nothing. Setting past an array's end pads
it with nulls, by at most :data:`MAX_PADDING` elements. One update may not name a path twice,
nor a path and another inside it (``q`` and ``q.b``). A failing update writes nothing.
"""

from __future__ import annotations

import copy
import marshal
from collections.abc import Callable
from typing import Any

from docstore.collections.query import array_index
from docstore.errors import QueryError

OPERATORS = ("$set", "$unset", "$inc", "$push")
MAX_PADDING = 1_500_000
"""As in MongoDB: an update may extend an array by at most this many elements (nulls)."""
_MISSING = object()


def _is_number(v: Any) -> bool:
    return type(v) in (int, float)


def _split(path: Any, op: str) -> list[str]:
    if not isinstance(path, str) or not path:
        raise QueryError(f"{op}: field names must be non-empty strings, got {path!r}")
    parts = path.split(".")
    if any(p == "" for p in parts):
        raise QueryError(f"{op}: {path!r} has an empty path component")
    if parts[0] == "_id":
        raise QueryError(f"{op}: the _id field cannot be changed")
    if any(p.startswith("$") for p in parts):
        raise QueryError(f"{op}: {path!r}: field names in updates cannot start with '$'")
    return parts


def _check_conflicts(paths: list[str]) -> None:
    """No path may be updated twice, or together with a path inside it."""
    seen: set[str] = set()
    for p in paths:
        if p in seen:
            raise QueryError(f"updating the path {p!r} would conflict with {p!r}")
        seen.add(p)
    for p in paths:
        parts = p.split(".")
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if prefix in seen:
                raise QueryError(f"updating the path {p!r} would conflict with {prefix!r}")


def _index(part: str, path: str, op: str) -> int:
    """The array offset ``part`` names (ASCII digits, no leading zero, as MongoDB), else QueryError."""
    idx = array_index(part)
    if idx < 0:
        raise QueryError(
            f"{op}: cannot use the part {part!r} of {path!r} to index an array (an index is 0, 1, 2, ... "
            "in ASCII digits, without leading zeros)"
        )
    return idx


def _pad(array: list, idx: int, path: str, op: str) -> None:
    """Extend ``array`` with nulls so that ``idx`` is its last offset."""
    if idx + 1 - len(array) > MAX_PADDING:
        raise QueryError(
            f"{op}: {path!r} would pad an array of {len(array)} elements to {idx + 1} (at most "
            f"{MAX_PADDING:,} new elements)"
        )
    array.extend([None] * (idx + 1 - len(array)))


def _parent(doc: Any, parts: list[str], create: bool, path: str, op: str) -> Any:
    """The container holding the last part, creating objects on the way if ``create``."""
    node = doc
    for i, part in enumerate(parts[:-1]):
        if isinstance(node, dict):
            nxt = node.get(part, _MISSING)
            if nxt is _MISSING:
                if not create:
                    return None
                nxt = node[part] = {}
        elif isinstance(node, list):
            idx = _index(part, path, op)
            if idx >= len(node):
                if not create:
                    return None
                _pad(node, idx, path, op)
                node[idx] = {}
            nxt = node[idx]
        else:
            if not create:
                return None
            where = ".".join(parts[: i + 1])
            raise QueryError(
                f"{op}: cannot create the field {part!r} of {path!r}: {where!r} holds a "
                f"{type(node).__name__} value"
            )
        node = nxt
    if not isinstance(node, (dict, list)):
        if not create:
            return None
        raise QueryError(f"{op}: cannot set {path!r}: its parent is a {_json_type(node)}, not an object")
    return node


def _json_type(v: Any) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number"
    )


def _get(container: Any, last: str) -> Any:
    if isinstance(container, dict):
        return container.get(last, _MISSING)
    idx = array_index(last)
    if 0 <= idx < len(container):
        return container[idx]
    return _MISSING


def _put(container: Any, last: str, value: Any, path: str, op: str) -> None:
    if isinstance(container, dict):
        container[last] = value
        return
    idx = _index(last, path, op)
    if idx >= len(container):
        _pad(container, idx, path, op)
    container[idx] = value


def _op_set(doc: dict, path: str, value: Any) -> None:
    parts = _split(path, "$set")
    _put(_parent(doc, parts, True, path, "$set"), parts[-1], value, path, "$set")


def _op_unset(doc: dict, path: str, _value: Any) -> None:
    parts = _split(path, "$unset")
    container = _parent(doc, parts, False, path, "$unset")
    if container is None or _get(container, parts[-1]) is _MISSING:
        return
    if isinstance(container, dict):
        del container[parts[-1]]
    else:  # Mongo sets array elements to null rather than shifting the array
        container[array_index(parts[-1])] = None


def _op_inc(doc: dict, path: str, amount: Any) -> None:
    parts = _split(path, "$inc")
    if not _is_number(amount):
        raise QueryError(f"$inc: the amount for {path!r} must be a number, got {amount!r}")
    container = _parent(doc, parts, True, path, "$inc")
    cur = _get(container, parts[-1])
    if cur is _MISSING:
        _put(container, parts[-1], amount, path, "$inc")
    elif not _is_number(cur):
        raise QueryError(f"$inc: cannot increment {path!r}: it holds a {_json_type(cur)}, not a number")
    else:
        _put(container, parts[-1], cur + amount, path, "$inc")


def _op_push(doc: dict, path: str, value: Any) -> None:
    parts = _split(path, "$push")
    items = [value]
    if isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value):
        if set(value) != {"$each"} or not isinstance(value["$each"], list):
            raise QueryError(f"$push: {path!r} supports only the modifier {{'$each': [...]}}")
        items = value["$each"]
    container = _parent(doc, parts, True, path, "$push")
    cur = _get(container, parts[-1])
    if cur is _MISSING:
        _put(container, parts[-1], list(items), path, "$push")
    elif not isinstance(cur, list):
        raise QueryError(f"$push: {path!r} holds a {_json_type(cur)}, not an array")
    else:
        cur.extend(items)


_APPLY: dict[str, Callable[[dict, str, Any], None]] = {
    "$set": _op_set,
    "$unset": _op_unset,
    "$inc": _op_inc,
    "$push": _op_push,
}


def validate_update(changes: Any) -> None:
    """Raise QueryError unless ``changes`` is a well-formed update document."""
    if not isinstance(changes, dict) or not changes:
        raise QueryError("an update must be a non-empty object of operators such as {'$set': {...}}")
    paths = []
    for op, fields in changes.items():
        if op not in _APPLY:
            hint = " (to replace a whole document use replace())" if not str(op).startswith("$") else ""
            raise QueryError(f"unknown update operator {op!r}; supported: {', '.join(OPERATORS)}{hint}")
        if not isinstance(fields, dict) or not fields:
            raise QueryError(f"{op} takes a non-empty object of field paths, got {fields!r}")
        for path in fields:
            _split(path, op)
            paths.append(path)
    _check_conflicts(paths)


def _copy(value: Any) -> Any:
    try:
        return marshal.loads(marshal.dumps(value))
    except ValueError:  # not plain JSON: copy it anyway; flattening will reject it
        return copy.deepcopy(value)


def apply_update(doc: dict, changes: dict) -> dict:
    """A new document: ``doc`` with ``changes`` applied (``doc`` itself is not modified)."""
    validate_update(changes)
    new = _copy(doc)
    for op, fields in changes.items():
        apply = _APPLY[op]
        for path, value in fields.items():
            apply(new, path, _copy(value) if isinstance(value, (dict, list)) else value)
    return new
