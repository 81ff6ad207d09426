"""Mongo-style update documents, with MongoDB's semantics (docs/updates.md).

Fields: ``$set``, ``$unset``, ``$inc``, ``$mul``, ``$min``, ``$max``, ``$rename``,
``$currentDate``, ``$setOnInsert`` (applied only when an upsert inserts). Arrays: ``$push``
(modifiers ``$each``, ``$position``, ``$sort``, ``$slice``), ``$addToSet`` (``$each``),
``$pop``, ``$pull`` (a value or a condition, matched by the query engine), ``$pullAll``.
Values compare as the query engine compares them (:func:`~docstore.collections.query.values_equal`:
``1 == 1.0``, ``True != 1``, objects in key order).

Paths are dotted. Through an array, a part must be an offset as MongoDB reads one: ASCII digits
without a leading zero (``a.0``, ``a.12``; not ``a.01``, ``a.²``); anything else is a
QueryError, except under ``$unset``, which then changes nothing. Setting past an array's end pads
it with nulls, by at most :data:`MAX_PADDING` elements. One update may not name a path twice,
nor a path and another inside it (``q`` and ``q.b``; both paths of a ``$rename`` count). Every
operand is checked before any document is touched; a failing update writes nothing.
"""

from __future__ import annotations

import copy
import datetime as _dt
import marshal
import time
from collections.abc import Callable
from functools import cmp_to_key, partial
from typing import Any

from docstore.collections.query import array_index, compare_values, compile_filter, sort_key, values_equal
from docstore.errors import QueryError

OPERATORS = (
    "$set", "$unset", "$inc", "$mul", "$min", "$max", "$rename", "$currentDate", "$setOnInsert",
    "$push", "$addToSet", "$pop", "$pull", "$pullAll",
)
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


def _arithmetic(op: str, what: str, verb: str, combine: Callable[[Any, Any], Any],
                start: Callable[[Any], Any]) -> Callable[[dict, str, Any], None]:
    """``$inc`` or ``$mul``: ``combine(current, operand)``; a missing field becomes ``start(operand)``."""

    def apply(doc: dict, path: str, operand: Any) -> None:
        parts = _split(path, op)
        if not _is_number(operand):
            raise QueryError(f"{op}: the {what} for {path!r} must be a number, got {operand!r}")
        container = _parent(doc, parts, True, path, op)
        cur = _get(container, parts[-1])
        if cur is _MISSING:
            _put(container, parts[-1], start(operand), path, op)
        elif not _is_number(cur):
            raise QueryError(f"{op}: cannot {verb} {path!r}: it holds a {_json_type(cur)}, not a number")
        else:
            _put(container, parts[-1], combine(cur, operand), path, op)

    return apply


_op_inc = _arithmetic("$inc", "amount", "increment", lambda cur, n: cur + n, lambda n: n)
_op_mul = _arithmetic("$mul", "factor", "multiply", lambda cur, n: cur * n, lambda n: 0 * n)  # MongoDB: a zero of the factor's type


def _is_int(v: Any) -> bool:
    return type(v) is int


def _missing_error(op: str, path: str, cur: Any, what: str = "an array") -> QueryError:
    return QueryError(f"{op}: {path!r} holds a {_json_type(cur)}, not {what}")


def _array_at(doc: dict, path: str, op: str) -> tuple[Any, list | None]:
    """(the container of ``path``'s last part, the array there) for operators that change an
    existing array: (None, None) when the path holds nothing (a no-op), QueryError when it holds
    something other than an array."""
    parts = _split(path, op)
    container = _parent(doc, parts, False, path, op)
    if container is None:
        return None, None
    cur = _get(container, parts[-1])
    if cur is _MISSING:
        return container, None
    if not isinstance(cur, list):
        raise _missing_error(op, path, cur)
    return container, cur


def _op_set_on_insert(doc: dict, path: str, value: Any) -> None:
    parts = _split(path, "$setOnInsert")
    _put(_parent(doc, parts, True, path, "$setOnInsert"), parts[-1], value, path, "$setOnInsert")


def _min_max(op: str, keep: int) -> Callable[[dict, str, Any], None]:
    def apply(doc: dict, path: str, value: Any) -> None:
        parts = _split(path, op)
        container = _parent(doc, parts, True, path, op)
        cur = _get(container, parts[-1])
        if cur is _MISSING or compare_values(value, cur) == keep:
            _put(container, parts[-1], value, path, op)

    return apply


def _current_date_type(path: str, spec: Any) -> str:
    if type(spec) is bool:  # as MongoDB: true and false both mean a date
        return "date"
    if isinstance(spec, dict) and list(spec) == ["$type"] and spec["$type"] in ("date", "timestamp"):
        return str(spec["$type"])
    raise QueryError(
        f"$currentDate: {path!r} takes true or {{'$type': 'date'}} or {{'$type': 'timestamp'}}, got {spec!r}"
    )


def current_date_value(kind: str, now_ns: int) -> str | int:
    """What ``$currentDate`` stores (documents are JSON): for ``"date"`` the time as ISO 8601 in
    UTC with milliseconds (``2026-12-06T20:01:38.123Z``), for ``"timestamp"`` milliseconds since
    the Unix epoch (an integer)."""
    ms = now_ns // 1_000_000
    if kind == "timestamp":
        return ms
    when = _dt.datetime.fromtimestamp(ms // 1000, _dt.timezone.utc)
    return when.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"


def _op_current_date(doc: dict, path: str, spec: Any, now_ns: int = 0) -> None:
    kind = _current_date_type(path, spec)
    parts = _split(path, "$currentDate")
    value = current_date_value(kind, now_ns)
    _put(_parent(doc, parts, True, path, "$currentDate"), parts[-1], value, path, "$currentDate")


def _has_operator_keys(value: Any) -> bool:
    return isinstance(value, dict) and any(isinstance(k, str) and k.startswith("$") for k in value)


_PUSH_MODIFIERS = ("$each", "$slice", "$sort", "$position")


def _push_sort_key(path: str, spec: Any) -> Callable[[Any], Any]:
    """The key ``$push``'s ``$sort`` orders elements by: 1 / -1 (the elements themselves) or
    ``{field: 1 | -1, ...}`` (fields of elements that are objects; others sort as missing)."""
    if spec in (1, -1) and type(spec) is not bool:
        direction = int(spec)
        return cmp_to_key(lambda a, b: direction * compare_values(a, b))
    if not isinstance(spec, dict) or not spec:
        raise QueryError(f"$push: the $sort of {path!r} is 1, -1 or a non-empty object such as {{'n': 1}}, got {spec!r}")
    for field, d in spec.items():
        if not isinstance(field, str) or not field or field.startswith("$") or "" in field.split("."):
            raise QueryError(f"$push: the $sort of {path!r} names an invalid field {field!r}")
        if type(d) not in (int, float) or d not in (1, -1):
            raise QueryError(f"$push: the $sort of {path!r}: the direction of {field!r} is 1 or -1, got {d!r}")
    by_fields = sort_key([(f, int(d)) for f, d in spec.items()])
    return lambda e: by_fields(e if isinstance(e, dict) else {})


def _push_modifiers(path: str, value: dict) -> tuple[list, int | None, Callable[[Any], Any] | None, int | None]:
    unknown = [k for k in value if k not in _PUSH_MODIFIERS]
    if "$each" not in value:
        raise QueryError(f"$push: the modifiers of {path!r} ({', '.join(map(str, value))}) need $each: [...]")
    if unknown:
        raise QueryError(f"$push: unknown modifier {unknown[0]!r} for {path!r} (supported: {', '.join(_PUSH_MODIFIERS)})")
    items = value["$each"]
    if not isinstance(items, list):
        raise QueryError(f"$push: $each of {path!r} takes an array, got {items!r}")
    limit = position = None
    if "$slice" in value:
        limit = value["$slice"]
        if not _is_int(limit):
            raise QueryError(f"$push: $slice of {path!r} takes an integer, got {limit!r}")
    if "$position" in value:
        position = value["$position"]
        if not _is_int(position):
            raise QueryError(f"$push: $position of {path!r} takes an integer, got {position!r}")
    key = _push_sort_key(path, value["$sort"]) if "$sort" in value else None
    return items, limit, key, position


def _growing_array(doc: dict, parts: list[str], path: str, op: str) -> list:
    """The array at ``path`` that ``$push`` or ``$addToSet`` extends (a new empty one where
    the field is missing); QueryError if the field holds something else."""
    container = _parent(doc, parts, True, path, op)
    cur = _get(container, parts[-1])
    if cur is _MISSING:
        cur = []
        _put(container, parts[-1], cur, path, op)
    elif not isinstance(cur, list):
        raise _missing_error(op, path, cur)
    return cur


def _op_push(doc: dict, path: str, value: Any) -> None:
    parts = _split(path, "$push")
    items, limit, key, position = [value], None, None, None
    if _has_operator_keys(value):
        items, limit, key, position = _push_modifiers(path, value)
    cur = _growing_array(doc, parts, path, "$push")
    if position is None or position >= len(cur):
        cur.extend(items)
    else:
        at = position if position >= 0 else max(0, len(cur) + position)
        cur[at:at] = items
    if key is not None:
        cur.sort(key=key)
    if limit is not None:
        if limit < 0:
            del cur[: max(0, len(cur) + limit)]
        else:
            del cur[limit:]


def _each(op: str, path: str, value: Any) -> list:
    """The values ``$addToSet`` adds: ``value``, or the array of ``{"$each": [...]}``."""
    if not _has_operator_keys(value):
        return [value]
    if list(value) != ["$each"]:
        raise QueryError(f"{op}: {path!r} takes a value or {{'$each': [...]}} (no other modifier), got {value!r}")
    if not isinstance(value["$each"], list):
        raise QueryError(f"{op}: $each of {path!r} takes an array, got {value['$each']!r}")
    return list(value["$each"])


def _op_add_to_set(doc: dict, path: str, value: Any) -> None:
    parts = _split(path, "$addToSet")
    items = _each("$addToSet", path, value)
    cur = _growing_array(doc, parts, path, "$addToSet")
    for item in items:
        if not any(values_equal(item, e) for e in cur):
            cur.append(item)


def _op_pop(doc: dict, path: str, end: Any) -> None:
    if type(end) not in (int, float) or end not in (1, -1):
        raise QueryError(f"$pop: {path!r} takes 1 (the last element) or -1 (the first), got {end!r}")
    _container, cur = _array_at(doc, path, "$pop")
    if cur:
        cur.pop(-1 if end == 1 else 0)


def pull_matcher(path: str, cond: Any) -> Callable[[Any], bool]:
    """Which elements ``$pull`` removes, as MongoDB: an object of conditions on fields (the
    element, an object, matched as a document: ``{"n": {"$gt": 1}}``); an object of operators
    (the element itself matched: ``{"$gte": 6}``); else elements equal to ``cond``."""
    if isinstance(cond, dict):
        first = next(iter(cond), None)
        if isinstance(first, str) and first.startswith("$") and first not in ("$and", "$or", "$nor"):
            wrapped = compile_filter({"v": cond})
            return lambda e: wrapped({"v": e})
        query = compile_filter(cond, allow_expr=False)
        return lambda e: isinstance(e, dict) and query(e)
    return lambda e: values_equal(e, cond)


def _op_pull(doc: dict, path: str, cond: Any) -> None:
    matches = pull_matcher(path, cond)
    _container, cur = _array_at(doc, path, "$pull")
    if cur:
        cur[:] = [e for e in cur if not matches(e)]


def _op_pull_all(doc: dict, path: str, values: Any) -> None:
    if not isinstance(values, list):
        raise QueryError(f"$pullAll: {path!r} takes an array of values, got {values!r}")
    _container, cur = _array_at(doc, path, "$pullAll")
    if cur:
        cur[:] = [e for e in cur if not any(values_equal(e, v) for v in values)]


def _rename_target(to: Any, path: str) -> str:
    if not isinstance(to, str):
        raise QueryError(f"$rename: the new name of {path!r} must be a string, got {to!r}")
    _split(to, "$rename")
    if to == path:
        raise QueryError(f"$rename: the source and target field must differ ({path!r})")
    if to.startswith(path + ".") or path.startswith(to + "."):
        raise QueryError(f"$rename: the source {path!r} and target {to!r} must not be on the same path")
    return to


def _op_rename(doc: dict, path: str, to: Any) -> None:
    to = _rename_target(to, path)
    src, dst = _split(path, "$rename"), _split(to, "$rename")
    node: Any = doc
    for part in src[:-1]:
        if isinstance(node, list):
            raise QueryError(f"$rename: the source {path!r} cannot be inside an array")
        if not isinstance(node, dict) or part not in node:
            return
        node = node[part]
    if isinstance(node, list):
        raise QueryError(f"$rename: the source {path!r} cannot be inside an array")
    if not isinstance(node, dict) or src[-1] not in node:
        return
    node = doc
    for i, part in enumerate(dst[:-1]):  # the target's parents: objects (or missing), not arrays
        nxt = node.get(part, _MISSING)
        if isinstance(nxt, list):
            raise QueryError(f"$rename: the target {to!r} cannot be inside an array")
        if nxt is _MISSING:
            break
        if not isinstance(nxt, dict):
            where = ".".join(dst[: i + 1])
            raise QueryError(f"$rename: cannot create {to!r}: {where!r} holds a {_json_type(nxt)}, not an object")
        node = nxt
    value = _parent(doc, src, False, path, "$rename").pop(src[-1])
    _put(_parent(doc, dst, True, to, "$rename"), dst[-1], value, to, "$rename")


_APPLY: dict[str, Callable[[dict, str, Any], None]] = {
    "$set": _op_set,
    "$unset": _op_unset,
    "$inc": _op_inc,
    "$mul": _op_mul,
    "$min": _min_max("$min", -1),
    "$max": _min_max("$max", 1),
    "$rename": _op_rename,
    "$currentDate": _op_current_date,
    "$setOnInsert": _op_set_on_insert,
    "$push": _op_push,
    "$addToSet": _op_add_to_set,
    "$pop": _op_pop,
    "$pull": _op_pull,
    "$pullAll": _op_pull_all,
}


def _check_operand(op: str, path: str, value: Any) -> None:
    """QueryError for an operand the operator refuses whatever the document (checked before
    any document is touched, as MongoDB checks an update when it parses it)."""
    if op in ("$inc", "$mul") and not _is_number(value):
        what = "amount" if op == "$inc" else "factor"
        raise QueryError(f"{op}: the {what} for {path!r} must be a number, got {value!r}")
    if op == "$pop" and (type(value) not in (int, float) or value not in (1, -1)):
        raise QueryError(f"$pop: {path!r} takes 1 (the last element) or -1 (the first), got {value!r}")
    if op == "$pullAll" and not isinstance(value, list):
        raise QueryError(f"$pullAll: {path!r} takes an array of values, got {value!r}")
    if op == "$pull":
        pull_matcher(path, value)
    if op == "$push" and _has_operator_keys(value):
        _push_modifiers(path, value)
    if op == "$addToSet":
        _each(op, path, value)
    if op == "$currentDate":
        _current_date_type(path, value)


def validate_update(changes: Any) -> None:
    """Raise QueryError unless ``changes`` is a well-formed update document."""
    if not isinstance(changes, dict) or not changes:
        raise QueryError("an update must be a non-empty object of operators such as {'$set': {...}}")
    paths = []
    for op, fields in changes.items():
        if op not in _APPLY:
            hint = " (to replace a whole document use replace or replace_one)" if not str(op).startswith("$") else ""
            raise QueryError(f"unknown update operator {op!r}; supported: {', '.join(OPERATORS)}{hint}")
        if not isinstance(fields, dict) or not fields:
            raise QueryError(f"{op} takes a non-empty object of field paths, got {fields!r}")
        for path, value in fields.items():
            _split(path, op)
            _check_operand(op, path, value)
            paths.append(path)
            if op == "$rename":
                paths.append(_rename_target(value, path))
    _check_conflicts(paths)


def _copy(value: Any) -> Any:
    try:
        return marshal.loads(marshal.dumps(value))
    except ValueError:  # not plain JSON: copy it anyway; flattening will reject it
        return copy.deepcopy(value)


def apply_update(doc: dict, changes: dict, *, inserting: bool = False, now_ns: int | None = None) -> dict:
    """A new document: ``doc`` with ``changes`` applied (``doc`` itself is not modified).
    ``inserting``: the document is being inserted by an upsert (``$setOnInsert`` applies);
    ``now_ns``: the time ``$currentDate`` writes (default: now)."""
    validate_update(changes)
    new = _copy(doc)
    for op, fields in changes.items():
        if op == "$setOnInsert" and not inserting:
            continue
        apply = _APPLY[op]
        if op == "$currentDate":
            apply = partial(_op_current_date, now_ns=time.time_ns() if now_ns is None else now_ns)
        for path, value in fields.items():
            apply(new, path, _copy(value) if isinstance(value, (dict, list)) else value)
    return new


def identical(a: Any, b: Any) -> bool:
    """Whether two JSON values are the same, types and key order included (``1`` and ``1.0``,
    ``True`` and ``1`` differ): an update that leaves a document identical modifies nothing."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return list(a) == list(b) and all(identical(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(identical(x, y) for x, y in zip(a, b))
    if isinstance(a, float):
        return a == b or (a != a and b != b)
    return bool(a == b)
