"""Mongo-style update documents: ``$set``, ``$unset``, ``$inc``, ``$push`` (with ``$each``)."""

from __future__ import annotations

import copy
import marshal
from collections.abc import Callable
from typing import Any

from docstore.errors import QueryError

OPERATORS = ("$set", "$unset", "$inc", "$push")
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
    seen = sorted(paths)
    for a, b in zip(seen, seen[1:]):
        if a == b or b.startswith(a + "."):
            raise QueryError(f"updating the path {b!r} would conflict with {a!r}")


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
            if not part.isdigit():
                raise QueryError(f"{op}: cannot use the part {part!r} of {path!r} to traverse an array")
            idx = int(part)
            if idx >= len(node):
                if not create:
                    return None
                node.extend([None] * (idx - len(node)))
                node.append({})
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
    if last.isdigit() and int(last) < len(container):
        return container[int(last)]
    return _MISSING


def _put(container: Any, last: str, value: Any, path: str, op: str) -> None:
    if isinstance(container, dict):
        container[last] = value
        return
    if not last.isdigit():
        raise QueryError(f"{op}: cannot use the part {last!r} of {path!r} to index an array")
    idx = int(last)
    if idx >= len(container):
        container.extend([None] * (idx + 1 - len(container)))
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
        container[int(parts[-1])] = None


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
    if isinstance(value, dict) and any(k.startswith("$") for k in value):
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
