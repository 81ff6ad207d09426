"""Aggregation pipelines with MongoDB's semantics, over an iterator of documents (no I/O here).

Stages: ``$match $project $addFields ($set) $unwind $group $sort $skip $limit $count``.
``$group`` accumulators: ``$sum $avg $min $max $count $push $addToSet $first $last``.
Expressions (:data:`OPERATORS`): field paths (``"$a.b"``), ``$$ROOT``/``$$CURRENT``/``$$REMOVE``,
literals, array and object expressions, and the operators listed in docs/aggregation.md.

:func:`compile_pipeline` checks a whole pipeline before any document is read (QueryError naming
the stage and what is wrong) and returns a :class:`Pipeline`: its leading ``$match`` (``match``,
handed by the collections to ``find``, so that it uses an index and is verified as ``find``
verifies) and :meth:`Pipeline.run`, which runs the other stages over the documents ``find``
returns. ``$match $project $addFields $unwind $skip $limit`` stream; ``$group`` holds one state
per group (at most :data:`MAX_GROUPS` groups and :data:`MAX_GROUP_BYTES` of values, estimated),
``$sort`` the documents it sorts (at most :data:`~docstore.collections.cursor.MAX_SORTED`, as
``find``; with a ``$limit`` after it only
``skip + limit`` of them). Beyond a bound the pipeline stops with a QueryError, as MongoDB stops a
stage at 100 MB. The deadline of :mod:`docstore.collections.budget` is checked as documents flow.

Semantics notes (MongoDB's, where a simpler rule would differ):

* a missing value is not null: ``{"$eq": ["$x", null]}`` is false when ``x`` is missing, and
  missing orders before null; ``$group`` puts documents whose key is missing or null together,
  under ``_id: null``; an object ``_id`` leaves a missing field out (``{"s": "$site"}`` groups a
  document without ``site`` under ``{}``, one with ``site: null`` under ``{"s": null}``);
* numbers compare by value across int and float (``1`` and ``1.0`` are one group, the first seen
  names it); ``true`` is not 1;
* ``$sum`` ignores what is not a number (0 when nothing is), ``$avg`` too (null when nothing is),
  ``$min``/``$max`` ignore null and missing values, ``$push``/``$addToSet`` missing ones; an
  accumulator with nothing to show gives null (``$first`` of a missing value);
* ``$sort`` orders as ``find`` sorts (type brackets, an array by its smallest element ascending,
  largest descending) and keeps the input order of ties;
* a field path through an array maps over its object elements (``"$items.qty"`` of
  ``{"items": [{"qty": 1}, {"qty": 2}]}`` is ``[1, 2]``); numeric parts name fields, not offsets.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from docstore.collections import budget, cursor
from docstore.collections.query import MISSING, compare_values, compile_filter, sort_key
from docstore.errors import QueryError

__all__ = [
    "ACCUMULATORS", "MAX_GROUPS", "MAX_GROUP_BYTES", "OPERATORS", "STAGES",
    "Pipeline", "compile_condition", "compile_expression", "compile_pipeline", "run",
]

MAX_GROUPS = 100_000
"""Groups one ``$group`` stage holds at most; more is a QueryError."""

MAX_GROUP_BYTES = 100 * 1024 * 1024
"""The estimated size of the keys and values one ``$group`` stage holds at most (MongoDB's
100 MB stage limit): ``$push`` and ``$addToSet`` lists grow it; more is a QueryError."""

Expr = Callable[[dict], Any]  # evaluates an expression against the stage's input document
Stage = Callable[[Iterator[dict]], Iterator[dict]]


# ---------------------------------------------------------------------------------------------
# Values
# ---------------------------------------------------------------------------------------------


def _kind(v: Any) -> str:
    """The type of a value in words (for messages)."""
    if v is MISSING:
        return "missing"
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, (int, float)):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    return "an object"


def _is_number(v: Any) -> bool:
    c = v.__class__
    return c is int or c is float


def _nullish(v: Any) -> bool:
    return v is None or v is MISSING


def _truthy(v: Any) -> bool:
    """MongoDB's coercion to a boolean: false, null, missing and zero are false."""
    if v is None or v is MISSING or v is False:
        return False
    if _is_number(v):
        return bool(v)
    return True


def _cmp(a: Any, b: Any) -> int:
    """MongoDB's order of two expression values: a missing value orders before null."""
    if a is MISSING or b is MISSING:
        return (b is MISSING) - (a is MISSING)
    return compare_values(a, b)


def _key(v: Any) -> Any:
    """A hashable key, equal for MongoDB-equal values (1 and 1.0; not true and 1; objects in
    their key order)."""
    c = v.__class__
    if c is str:
        return ("s", v)
    if c is int or c is float:
        return ("n", v) if v == v else ("nan",)
    if c is bool:
        return ("b", v)
    if v is None or v is MISSING:
        return ("z",)
    if c is list:
        return ("a", tuple(_key(e) for e in v))
    return ("o", tuple((k, _key(e)) for k, e in v.items()))


def _size(v: Any) -> int:
    """An estimate of the memory a value holds (bytes)."""
    c = v.__class__
    if c is str:
        return 50 + len(v)
    if c is list:
        return 56 + sum(8 + _size(e) for e in v)
    if c is dict:
        return 64 + sum(50 + len(k) + _size(e) for k, e in v.items())
    return 32


# ---------------------------------------------------------------------------------------------
# Expressions
# ---------------------------------------------------------------------------------------------


def _field(v: Any, parts: tuple[str, ...]) -> Any:
    """The value of a field path (MongoDB's ExpressionFieldPath): through objects; through an
    array, the values of its object elements' remaining path (missing ones left out)."""
    for i, p in enumerate(parts):
        c = v.__class__
        if c is dict:
            v = v.get(p, MISSING)
            if v is MISSING:
                return MISSING
        elif c is list:
            rest = parts[i:]
            out = []
            for e in v:
                if e.__class__ is dict:
                    r = _field(e, rest)
                    if r is not MISSING:
                        out.append(r)
            return out
        else:
            return MISSING
    return v


def _check_path(path: str, what: str) -> tuple[str, ...]:
    parts = tuple(path.split("."))
    if "" in parts:
        raise QueryError(f"{what} {path!r} has an empty field name")
    if any(p.startswith("$") for p in parts):
        raise QueryError(f"{what} {path!r}: a field name cannot start with '$'")
    return parts


def _path_expr(text: str) -> Expr:
    """``"$a.b"``, ``"$$ROOT"``, ``"$$CURRENT.a"``, ``"$$REMOVE"``."""
    if text.startswith("$$"):
        name, _, rest = text[2:].partition(".")
        if name == "REMOVE" and not rest:
            return lambda _doc: MISSING
        if name not in ("ROOT", "CURRENT"):
            raise QueryError(f"unknown variable '$${name}' (supported: $$ROOT, $$CURRENT, $$REMOVE)")
        if not rest:
            return lambda doc: doc
        text = "$" + rest
    if text == "$":
        raise QueryError("'$' is not a field path: give a field name after the '$'")
    parts = _check_path(text[1:], "the field path")
    if len(parts) == 1:
        name = parts[0]
        return lambda doc: doc.get(name, MISSING)
    return lambda doc: _field(doc, parts)


def _const(value: Any) -> Expr:
    return lambda _doc: value


def compile_expression(spec: Any) -> Expr:
    """An expression: a field path, a literal, an array or object of expressions, or an
    operator object ``{"$op": args}``."""
    try:
        return _expr(spec)
    except RecursionError:
        raise QueryError("an expression is nested too deeply") from None


def compile_condition(spec: Any) -> Callable[[dict], bool]:
    """An expression coerced to a boolean as MongoDB coerces ``$cond``'s ``if`` and a query's
    ``$expr``: false, null, missing and zero are false, everything else (``""``, ``[]``) true."""
    f = compile_expression(spec)

    def condition(doc: dict) -> bool:
        try:
            return _truthy(f(doc))
        except OverflowError:  # arithmetic mixing a float with an integer beyond a float's range
            raise QueryError("an expression's arithmetic overflowed: a number is too large for a float") from None

    return condition


def _expr(spec: Any) -> Expr:
    c = spec.__class__
    if c is str:
        return _path_expr(spec) if spec.startswith("$") else _const(spec)
    if c is list:
        items = [_expr(e) for e in spec]
        return lambda doc: [None if (v := f(doc)) is MISSING else v for f in items]
    if isinstance(spec, Mapping):
        keys = list(spec)
        if keys and isinstance(keys[0], str) and keys[0].startswith("$"):
            if len(keys) != 1:
                raise QueryError(
                    f"an operator object has exactly one field, got {', '.join(map(str, keys))} "
                    "(an object of fields cannot have names starting with '$')"
                )
            return _operator(keys[0], spec[keys[0]])
        fields = []
        for k, v in spec.items():
            _check_name(k, "a field name of an object expression")
            fields.append((k, _expr(v)))

        def obj(doc: dict) -> dict:
            out = {}
            for k, f in fields:
                v = f(doc)
                if v is not MISSING:
                    out[k] = v
            return out

        return obj
    if spec is None or c is bool or c is int or c is float:
        if c is float and (spec != spec or spec in (math.inf, -math.inf)):
            raise QueryError(f"{spec!r} is not a JSON number")
        return _const(spec)
    raise QueryError(f"an expression must be JSON, got {type(spec).__name__}")


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise QueryError(f"{what} must be a non-empty string, got {name!r}")
    if name.startswith("$"):
        raise QueryError(f"{what} cannot start with '$' ({name!r})")
    if "." in name:
        raise QueryError(f"{what} cannot contain '.' ({name!r})")


def _args(op: str, arg: Any, n: int | None = None, at_least: int = 0) -> list[Expr]:
    """The operand list of an operator (a non-array operand is one argument)."""
    specs = arg if isinstance(arg, list) else [arg]
    if n is not None and len(specs) != n:
        raise QueryError(f"{op} takes {n} argument{'s' if n != 1 else ''}, got {len(specs)}")
    if len(specs) < at_least:
        raise QueryError(f"{op} takes at least {at_least} arguments, got {len(specs)}")
    return [_expr(s) for s in specs]


def _numbers(op: str, values: list) -> list | None:
    """The values of an arithmetic operator: None if one is null or missing, QueryError if one
    is not a number."""
    for v in values:
        if _nullish(v):
            return None
        if not _is_number(v):
            raise QueryError(f"{op} takes numbers, got {_kind(v)}: {v!r}")
    return values


def _add(op: str, fs: list[Expr]) -> Expr:
    def add(doc: dict) -> Any:
        vals = _numbers(op, [f(doc) for f in fs])
        return None if vals is None else sum(vals, 0)

    return add


def _multiply(op: str, fs: list[Expr]) -> Expr:
    def multiply(doc: dict) -> Any:
        vals = _numbers(op, [f(doc) for f in fs])
        if vals is None:
            return None
        out: int | float = 1
        for v in vals:
            out *= v
        return out

    return multiply


def _binary(op: str, fs: list[Expr], fn: Callable[[Any, Any], Any]) -> Expr:
    a, b = fs

    def binary(doc: dict) -> Any:
        vals = _numbers(op, [a(doc), b(doc)])
        return None if vals is None else fn(vals[0], vals[1])

    return binary


def _divide(x: Any, y: Any) -> float:
    if y == 0:
        raise QueryError("$divide by zero")
    return x / y


def _mod(x: Any, y: Any) -> int | float:
    if y == 0:
        raise QueryError("$mod by zero")
    if x.__class__ is int and y.__class__ is int:
        r = abs(x) % abs(y)
        return r if x >= 0 else -r
    return math.fmod(x, y)


def _concat(fs: list[Expr]) -> Expr:
    def concat(doc: dict) -> Any:
        out = []
        for f in fs:
            v = f(doc)
            if _nullish(v):
                return None
            if v.__class__ is not str:
                raise QueryError(f"$concat takes strings, got {_kind(v)}: {v!r}")
            out.append(v)
        return "".join(out)

    return concat


_UPPER = str.maketrans("abcdefghijklmnopqrstuvwxyz", "ABCDEFGHIJKLMNOPQRSTUVWXYZ")
_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def _case(op: str, f: Expr, table: dict[int, int]) -> Expr:
    def case(doc: dict) -> str:
        v = f(doc)
        if _nullish(v):
            return ""
        if v.__class__ is int:
            return str(v)
        if v.__class__ is not str:
            raise QueryError(f"{op} takes a string, got {_kind(v)}: {v!r}")
        return v.translate(table)  # ASCII letters only, as MongoDB

    return case


def _size_of(f: Expr) -> Expr:
    def size(doc: dict) -> int:
        v = f(doc)
        if v.__class__ is not list:
            raise QueryError(f"$size takes an array, got {_kind(v)}")
        return len(v)

    return size


def _cond(arg: Any) -> Expr:
    if isinstance(arg, Mapping):
        extra = set(arg) - {"if", "then", "else"}
        if extra:
            raise QueryError(f"$cond has no field {sorted(extra)[0]!r} (it takes if, then, else)")
        missing = [k for k in ("if", "then", "else") if k not in arg]
        if missing:
            raise QueryError(f"$cond needs '{missing[0]}'")
        test, yes, no = _expr(arg["if"]), _expr(arg["then"]), _expr(arg["else"])
    else:
        test, yes, no = _args("$cond", arg, 3)
    return lambda doc: yes(doc) if _truthy(test(doc)) else no(doc)


def _if_null(fs: list[Expr]) -> Expr:
    def if_null(doc: dict) -> Any:
        for f in fs[:-1]:
            v = f(doc)
            if not _nullish(v):
                return v
        return fs[-1](doc)

    return if_null


_COMPARE: dict[str, Callable[[int], bool]] = {
    "$eq": lambda c: c == 0,
    "$ne": lambda c: c != 0,
    "$gt": lambda c: c > 0,
    "$gte": lambda c: c >= 0,
    "$lt": lambda c: c < 0,
    "$lte": lambda c: c <= 0,
}


def _compare(op: str, fs: list[Expr]) -> Expr:
    a, b = fs
    if op == "$cmp":
        return lambda doc: _cmp(a(doc), b(doc))
    test = _COMPARE[op]
    return lambda doc: test(_cmp(a(doc), b(doc)))


def _in(fs: list[Expr]) -> Expr:
    x, arr = fs

    def in_(doc: dict) -> bool:
        v, values = x(doc), arr(doc)
        if values.__class__ is not list:
            raise QueryError(f"$in takes an array as its second argument, got {_kind(values)}")
        return any(_cmp(v, e) == 0 for e in values)

    return in_


def _elem_at(fs: list[Expr]) -> Expr:
    a, i = fs

    def elem_at(doc: dict) -> Any:
        arr, idx = a(doc), i(doc)
        if _nullish(arr) or _nullish(idx):
            return None
        if arr.__class__ is not list:
            raise QueryError(f"$arrayElemAt takes an array, got {_kind(arr)}")
        if not _is_number(idx) or idx != int(idx):
            raise QueryError(f"$arrayElemAt takes a whole number as the index, got {idx!r}")
        k = int(idx)
        return arr[k] if -len(arr) <= k < len(arr) else MISSING

    return elem_at


def _over(op: str, arg: Any) -> Expr:
    """``$sum $avg $min $max`` as expressions: of one array's elements, or of several arguments."""
    fs = _args(op, arg)
    single = not isinstance(arg, list) or len(arg) == 1

    def over(doc: dict) -> Any:
        if single:
            v = fs[0](doc)
            values = v if v.__class__ is list else [v]
        else:
            values = [f(doc) for f in fs]
        acc = _ACCUMULATORS[op]()
        for v in values:
            acc.add(v)
        out = acc.value()
        return None if out is MISSING else out

    return over


def _logic(op: str, fs: list[Expr]) -> Expr:
    if op == "$and":
        return lambda doc: all(_truthy(f(doc)) for f in fs)
    if op == "$or":
        return lambda doc: any(_truthy(f(doc)) for f in fs)
    (f,) = fs
    return lambda doc: not _truthy(f(doc))


def _abs(f: Expr) -> Expr:
    def abs_(doc: dict) -> Any:
        vals = _numbers("$abs", [f(doc)])
        return None if vals is None else abs(vals[0])

    return abs_


OPERATORS: tuple[str, ...] = (
    "$abs", "$add", "$and", "$arrayElemAt", "$avg", "$cmp", "$concat", "$cond", "$divide", "$eq", "$gt",
    "$gte", "$ifNull", "$in", "$literal", "$lt", "$lte", "$max", "$min", "$mod", "$multiply", "$ne",
    "$not", "$or", "$size", "$subtract", "$sum", "$toLower", "$toUpper",
)
"""The expression operators :func:`compile_expression` knows."""


def _operator(op: str, arg: Any) -> Expr:
    if op == "$literal":
        return _const(arg)
    if op == "$cond":
        return _cond(arg)
    if op in ("$sum", "$avg", "$min", "$max"):
        return _over(op, arg)
    if op in ("$add", "$multiply"):
        return (_add if op == "$add" else _multiply)(op, _args(op, arg))
    if op == "$subtract":
        return _binary(op, _args(op, arg, 2), lambda x, y: x - y)
    if op == "$divide":
        return _binary(op, _args(op, arg, 2), _divide)
    if op == "$mod":
        return _binary(op, _args(op, arg, 2), _mod)
    if op == "$abs":
        return _abs(*_args(op, arg, 1))
    if op == "$concat":
        return _concat(_args(op, arg))
    if op in ("$toUpper", "$toLower"):
        (f,) = _args(op, arg, 1)
        return _case(op, f, _UPPER if op == "$toUpper" else _LOWER)
    if op == "$size":
        return _size_of(*_args(op, arg, 1))
    if op == "$ifNull":
        return _if_null(_args(op, arg, at_least=2))
    if op in _COMPARE or op == "$cmp":
        return _compare(op, _args(op, arg, 2))
    if op in ("$and", "$or"):
        return _logic(op, _args(op, arg))
    if op == "$not":
        return _logic(op, _args(op, arg, 1))
    if op == "$in":
        return _in(_args(op, arg, 2))
    if op == "$arrayElemAt":
        return _elem_at(_args(op, arg, 2))
    raise QueryError(f"unknown expression operator {op!r} (supported: {' '.join(OPERATORS)})")


# ---------------------------------------------------------------------------------------------
# Accumulators
# ---------------------------------------------------------------------------------------------


class _Acc:
    """One accumulator's state for one group; ``held`` estimates the bytes it keeps."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0

    def add(self, v: Any) -> None:
        raise NotImplementedError

    def value(self) -> Any:
        raise NotImplementedError


class _Sum(_Acc):
    __slots__ = ("whole", "floats", "comp", "any_float")

    def __init__(self) -> None:
        super().__init__()
        self.whole = 0  # the ints, exactly
        self.floats = 0.0  # the floats, Neumaier-compensated (MongoDB sums doubles precisely too)
        self.comp = 0.0
        self.any_float = False

    def add(self, v: Any) -> None:
        c = v.__class__
        if c is int:
            self.whole += v
        elif c is float:
            self.any_float = True
            t = self.floats + v
            if abs(self.floats) >= abs(v):
                self.comp += (self.floats - t) + v
            else:
                self.comp += (v - t) + self.floats
            self.floats = t

    def value(self) -> Any:
        if not self.any_float:
            return self.whole
        try:
            return math.fsum((float(self.whole), self.floats, self.comp))
        except OverflowError:
            return math.copysign(math.inf, self.whole)


class _Avg(_Sum):
    __slots__ = ("n",)

    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def add(self, v: Any) -> None:
        if _is_number(v):
            self.n += 1
            super().add(v)

    def value(self) -> Any:
        if not self.n:
            return None
        total = super().value()
        return total / self.n if total.__class__ is float else _int_div(total, self.n)


def _int_div(total: int, n: int) -> float:
    try:
        return total / n
    except OverflowError:
        return math.copysign(math.inf, total)


class _MinMax(_Acc):
    __slots__ = ("best", "sign")

    def __init__(self, sign: int) -> None:
        super().__init__()
        self.best: Any = MISSING
        self.sign = sign

    def add(self, v: Any) -> None:
        if _nullish(v):
            return
        if self.best is MISSING or compare_values(v, self.best) * self.sign > 0:
            self.held = _size(v)
            self.best = v

    def value(self) -> Any:
        return self.best


class _First(_Acc):
    __slots__ = ("v", "seen")

    def __init__(self) -> None:
        super().__init__()
        self.v: Any = MISSING
        self.seen = False

    def add(self, v: Any) -> None:
        if not self.seen:
            self.seen = True
            self.v = v
            self.held = _size(v)

    def value(self) -> Any:
        return self.v


class _Last(_First):
    __slots__ = ()

    def add(self, v: Any) -> None:
        self.v = v
        self.held = _size(v)


class _Push(_Acc):
    __slots__ = ("items",)

    def __init__(self) -> None:
        super().__init__()
        self.items: list = []

    def add(self, v: Any) -> None:
        if v is not MISSING:
            self.items.append(v)
            self.held += 8 + _size(v)

    def value(self) -> Any:
        return self.items


class _AddToSet(_Push):
    __slots__ = ("keys",)

    def __init__(self) -> None:
        super().__init__()
        self.keys: set = set()

    def add(self, v: Any) -> None:
        if v is MISSING:
            return
        k = _key(v)
        if k not in self.keys:
            self.keys.add(k)
            self.items.append(v)
            self.held += 8 + 2 * _size(v)


_ACCUMULATORS: dict[str, Callable[[], _Acc]] = {
    "$sum": _Sum,
    "$avg": _Avg,
    "$min": lambda: _MinMax(-1),
    "$max": lambda: _MinMax(1),
    "$first": _First,
    "$last": _Last,
    "$push": _Push,
    "$addToSet": _AddToSet,
    "$count": _Sum,
}

ACCUMULATORS: tuple[str, ...] = tuple(sorted(_ACCUMULATORS, key=str.lower))
"""The ``$group`` accumulators."""


# ---------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------


def _match(spec: Any) -> Stage:
    if not isinstance(spec, Mapping):
        raise QueryError(f"$match takes a filter object, got {_kind(spec)}")
    predicate = compile_filter(spec)
    return lambda docs: (d for d in docs if predicate(d))


def _group(spec: Any) -> Stage:
    if not isinstance(spec, Mapping):
        raise QueryError(f"$group takes an object, got {_kind(spec)}")
    if "_id" not in spec:
        raise QueryError("$group needs an _id: the expression to group by (null: one group of all)")
    by = _expr(spec["_id"])
    fields: list[tuple[str, str, Expr]] = []
    for name, acc in spec.items():
        if name == "_id":
            continue
        _check_name(name, "a $group output field")
        if not isinstance(acc, Mapping) or len(acc) != 1:
            raise QueryError(f"$group field {name!r} must be one accumulator object, e.g. {{\"$sum\": 1}}")
        ((op, arg),) = acc.items()
        if op not in _ACCUMULATORS:
            raise QueryError(f"unknown $group accumulator {op!r} in field {name!r} (supported: {' '.join(ACCUMULATORS)})")
        if op == "$count":
            if arg != {}:
                raise QueryError(f"$count in field {name!r} takes no argument: {{\"$count\": {{}}}}")
            arg = 1
        fields.append((name, op, _expr(arg)))

    def group(docs: Iterator[dict]) -> Iterator[dict]:
        groups: dict[Any, tuple[Any, list[_Acc]]] = {}
        held = 0
        for doc in docs:
            key_value = by(doc)
            if key_value is MISSING:
                key_value = None
            k = _key(key_value)
            entry = groups.get(k)
            if entry is None:
                if len(groups) >= MAX_GROUPS:
                    raise QueryError(
                        f"$group would hold more than {MAX_GROUPS:,} groups (the most one stage holds "
                        "in memory): group by fewer values, or $match fewer documents first"
                    )
                entry = groups[k] = (key_value, [_ACCUMULATORS[op]() for _name, op, _f in fields])
                held += 100 + _size(key_value)
            for acc, (_name, _op, f) in zip(entry[1], fields):
                before = acc.held
                acc.add(f(doc))
                held += acc.held - before
            if held > MAX_GROUP_BYTES:
                raise QueryError(
                    f"$group would hold more than {MAX_GROUP_BYTES // 2**20} MB of keys and values (the "
                    "most one stage holds in memory): $push or $addToSet less, or $match fewer documents first"
                )
        for key_value, accs in groups.values():
            out = {"_id": key_value}
            for acc, (name, _op, _f) in zip(accs, fields):
                v = acc.value()
                out[name] = None if v is MISSING else v
            yield out

    return group


def _sort(spec: Any, first: int | None) -> Stage:
    if not isinstance(spec, Mapping) or not spec:
        raise QueryError("$sort takes an object of fields and directions, e.g. {\"n\": -1}")
    key: Any = sort_key(dict(spec))

    def sort(docs: Iterator[dict]) -> Iterator[dict]:
        yield from cursor.sorted_bounded(
            docs, key, first, "a $sort",
            "follow it with a $limit (skips before it plus the limit at most that), or $match fewer documents first",
        )

    return sort


def _count_of(spec: Any) -> int:
    if type(spec) is int and spec >= 0:
        return spec
    if type(spec) is float and spec >= 0 and spec == int(spec):
        return int(spec)
    raise QueryError(f"takes a non-negative whole number, got {spec!r}")


def _skip(spec: Any) -> Stage:
    n = _count_of(spec)

    def skip(docs: Iterator[dict]) -> Iterator[dict]:
        for i, doc in enumerate(docs):
            if i >= n:
                yield doc

    return skip


def _limit(n: int) -> Stage:
    def limit(docs: Iterator[dict]) -> Iterator[dict]:
        if n <= 0:
            return
        for i, doc in enumerate(docs, 1):
            yield doc
            if i >= n:
                return

    return limit


def _limit_of(spec: Any) -> int:
    n = _count_of(spec)
    if n == 0:
        raise QueryError("$limit takes a positive whole number, got 0")
    return n


def _count(spec: Any) -> Stage:
    if not isinstance(spec, str) or not spec:
        raise QueryError(f"$count takes the name of the output field, got {spec!r}")
    _check_name(spec, "the $count field")
    if spec == "_id":
        raise QueryError("$count cannot name its field _id")

    def count(docs: Iterator[dict]) -> Iterator[dict]:
        n = sum(1 for _ in docs)
        if n:
            yield {spec: n}

    return count


def _unwind(spec: Any) -> Stage:
    if isinstance(spec, str):
        spec = {"path": spec}
    if not isinstance(spec, Mapping):
        raise QueryError(f"$unwind takes a field path or an object, got {_kind(spec)}")
    extra = set(spec) - {"path", "includeArrayIndex", "preserveNullAndEmptyArrays"}
    if extra:
        raise QueryError(f"$unwind has no option {sorted(extra)[0]!r}")
    path = spec.get("path")
    if not isinstance(path, str) or not path.startswith("$") or path.startswith("$$"):
        raise QueryError(f"$unwind's path is a field path starting with '$', got {path!r}")
    parts = _check_path(path[1:], "$unwind's path")
    index = spec.get("includeArrayIndex")
    index_parts = None
    if index is not None:
        if not isinstance(index, str) or not index or index.startswith("$"):
            raise QueryError(f"includeArrayIndex is a field name (no '$'), got {index!r}")
        index_parts = _check_path(index, "includeArrayIndex")
    preserve = spec.get("preserveNullAndEmptyArrays", False)
    if type(preserve) is not bool:
        raise QueryError(f"preserveNullAndEmptyArrays is true or false, got {preserve!r}")

    def indexed(doc: dict, i: int | None) -> dict:
        return doc if index_parts is None else _set_path(doc, index_parts, i)

    def unwind(docs: Iterator[dict]) -> Iterator[dict]:
        for doc in docs:
            v = _nested(doc, parts)
            if v.__class__ is list:
                if not v:
                    if preserve:
                        yield indexed(_set_path(doc, parts, MISSING), None)
                    continue
                for i, e in enumerate(v):
                    yield indexed(_set_path(doc, parts, e), i)
            elif _nullish(v):
                if preserve:
                    yield indexed(doc, None)
            else:
                yield indexed(doc, None)

    return unwind


def _nested(doc: Any, parts: tuple[str, ...]) -> Any:
    """A dotted path through objects only (no array traversal)."""
    for p in parts:
        if doc.__class__ is not dict:
            return MISSING
        doc = doc.get(p, MISSING)
    return doc


def _set_path(doc: dict, parts: tuple[str, ...], value: Any) -> dict:
    """A copy of ``doc`` with the path set (MISSING: removed), copying only the objects on the
    path; a non-object on the path is replaced by an object."""
    out = dict(doc)
    head = parts[0]
    if len(parts) == 1:
        if value is MISSING:
            out.pop(head, None)
        else:
            out[head] = value
        return out
    inner = doc.get(head)
    if inner.__class__ is not dict:
        if value is MISSING:
            return out
        inner = {}
    out[head] = _set_path(inner, parts[1:], value)
    return out


# --------------------------------------------------------------------- $project and $addFields


class _Node:
    """A level of a projection (MongoDB's ProjectionNode): fields included or excluded, fields
    computed, and sub-levels, in the order given."""

    __slots__ = ("flags", "computed", "children", "order")

    def __init__(self) -> None:
        self.flags: dict[str, bool] = {}
        self.computed: dict[str, Expr] = {}
        self.children: dict[str, _Node] = {}
        self.order: list[str] = []  # computed fields and children, in the order given

    def child(self, name: str, dotted: str) -> _Node:
        if name in self.flags or name in self.computed:
            raise QueryError(f"projection path collision at {dotted!r}")
        child = self.children.get(name)
        if child is None:
            child = self.children[name] = _Node()
            self.order.append(name)
        return child

    def leaf(self, name: str, dotted: str) -> None:
        if name in self.flags or name in self.computed or name in self.children:
            raise QueryError(f"projection path collision at {dotted!r}")

    def add(self, parts: tuple[str, ...], value: Any, dotted: str) -> None:
        node = self
        for p in parts[:-1]:
            node = node.child(p, dotted)
        name = parts[-1]
        node.leaf(name, dotted)
        if isinstance(value, bool):
            node.flags[name] = value
        else:
            node.computed[name] = value
            node.order.append(name)

    def has_computed(self) -> bool:
        return bool(self.computed) or any(c.has_computed() for c in self.children.values())

    # inclusion ------------------------------------------------------------------------
    def include(self, doc: dict) -> dict:
        out = {}
        for k, v in doc.items():
            if self.flags.get(k):
                out[k] = v
            elif k in self.children:
                r = self.children[k].include_value(v)
                if r is not MISSING:
                    out[k] = r
        return out

    def include_value(self, v: Any) -> Any:
        c = v.__class__
        if c is dict:
            return self.include(v)
        if c is list:
            return [r for e in v if (r := self.include_value(e)) is not MISSING]
        return MISSING

    # exclusion ------------------------------------------------------------------------
    def exclude(self, doc: dict) -> dict:
        out = {}
        for k, v in doc.items():
            if self.flags.get(k) is False:
                continue
            child = self.children.get(k)
            out[k] = v if child is None else child.exclude_value(v)
        return out

    def exclude_value(self, v: Any) -> Any:
        c = v.__class__
        if c is dict:
            return self.exclude(v)
        if c is list:
            return [self.exclude_value(e) for e in v]
        return v

    # computed fields ------------------------------------------------------------------
    def compute(self, root: dict, out: dict) -> dict:
        """``out`` with the computed fields set (in place), evaluated against ``root``."""
        for name in self.order:
            f = self.computed.get(name)
            if f is not None:
                v = f(root)
                if v is MISSING:
                    out.pop(name, None)
                else:
                    out[name] = v
                continue
            child = self.children[name]
            if not child.has_computed():
                continue
            v = child.compute_value(root, out.get(name, MISSING))
            if v is MISSING:
                out.pop(name, None)
            else:
                out[name] = v
        return out

    def compute_value(self, root: dict, v: Any) -> Any:
        c = v.__class__
        if c is dict:
            return self.compute(root, dict(v))
        if c is list:
            return [self.compute_value(root, e) for e in v]
        return self.compute(root, {})  # a scalar or nothing is replaced by the computed fields


def _projection_tree(spec: Mapping, stage: str, computed_only: bool) -> _Node:
    """Parse ``$project`` (flags and expressions) or ``$addFields`` (expressions only)."""
    root = _Node()

    def walk(node_spec: Mapping, prefix: tuple[str, ...]) -> None:
        if not node_spec:
            raise QueryError(f"{stage} needs at least one field")
        for field, value in node_spec.items():
            if not isinstance(field, str) or not field:
                raise QueryError(f"{stage} field names are non-empty strings, got {field!r}")
            parts = prefix + _check_path(field, f"{stage} field")
            dotted = ".".join(parts)
            if isinstance(value, Mapping) and not str(next(iter(value), "")).startswith("$"):
                if not value:
                    raise QueryError(f"{stage} field {dotted!r}: an empty object is not a specification")
                walk(value, parts)  # a nested specification
                continue
            if not computed_only and (value.__class__ in (bool, int, float)):
                root.add(parts, bool(value), dotted)
            else:
                root.add(parts, _expr(value), dotted)

    walk(spec, ())
    return root


def _project(spec: Any) -> Stage:
    if not isinstance(spec, Mapping):
        raise QueryError(f"$project takes an object, got {_kind(spec)}")
    tree = _projection_tree(spec, "$project", computed_only=False)
    id_flag = tree.flags.pop("_id", None)
    flags = _all_flags(tree)
    include = any(flags) or tree.has_computed()
    if include and False in flags:
        raise QueryError("$project cannot mix including and excluding fields (other than _id), nor exclude "
                         "and compute fields")
    if include or (id_flag is True and not flags):  # (only {"_id": 1}: _id alone)
        if id_flag is not False and "_id" not in tree.computed and "_id" not in tree.children:
            tree.flags = {"_id": True, **tree.flags}

        def project_in(docs: Iterator[dict]) -> Iterator[dict]:
            for doc in docs:
                yield tree.compute(doc, tree.include(doc))

        return project_in
    if id_flag is False:
        tree.flags["_id"] = False
    return lambda docs: (tree.exclude(doc) for doc in docs)


def _all_flags(node: _Node) -> list[bool]:
    return list(node.flags.values()) + [f for c in node.children.values() for f in _all_flags(c)]


def _add_fields(spec: Any) -> Stage:
    if not isinstance(spec, Mapping):
        raise QueryError(f"$addFields takes an object, got {_kind(spec)}")
    tree = _projection_tree(spec, "$addFields", computed_only=True)
    return lambda docs: (tree.compute(doc, dict(doc)) for doc in docs)


# ---------------------------------------------------------------------------------------------
# Pipelines
# ---------------------------------------------------------------------------------------------

STAGES: tuple[str, ...] = (
    "$match", "$project", "$addFields", "$set", "$unwind", "$group", "$sort", "$skip", "$limit", "$count",
)
"""The stages :func:`compile_pipeline` knows (``$set`` is ``$addFields``)."""

_STAGES: dict[str, Callable[[Any], Stage]] = {
    "$match": _match,
    "$project": _project,
    "$addFields": _add_fields,
    "$set": _add_fields,
    "$unwind": _unwind,
    "$group": _group,
    "$skip": _skip,
    "$limit": lambda spec: _limit(_limit_of(spec)),
    "$count": _count,
}


class Pipeline:
    """A checked pipeline: ``match`` (its leading ``$match``, or None) and the stages after it."""

    def __init__(self, match: dict | None, stages: list[Stage]) -> None:
        self.match = match
        self._stages = stages

    def run(self, docs: Iterable[dict]) -> Iterator[dict]:
        """The stages after the leading ``$match`` over ``docs`` (lazy; under the current deadline)."""
        out: Iterator[dict] = budget.checked(docs)
        for stage in self._stages:
            out = stage(out)
        return _no_overflow(out)


def _no_overflow(docs: Iterator[dict]) -> Iterator[dict]:
    """The stages' documents; arithmetic that overflows a float (an integer beyond a float's
    range meeting a float) is a QueryError, as in ``$expr``."""
    try:
        yield from docs
    except OverflowError:
        raise QueryError("an expression's arithmetic overflowed: a number is too large for a float") from None


def _stage_parts(pipeline: Any) -> list[tuple[str, Any]]:
    if isinstance(pipeline, (str, bytes, Mapping)) or not isinstance(pipeline, (list, tuple)):
        raise QueryError(f"a pipeline is a list of stages, got {_kind(pipeline)}")
    parts = []
    for i, stage in enumerate(pipeline, 1):
        if not isinstance(stage, Mapping) or len(stage) != 1:
            raise QueryError(f"stage {i} of the pipeline must be an object with one field, e.g. {{\"$match\": {{...}}}}")
        ((name, spec),) = stage.items()
        if name not in _STAGES and name != "$sort":
            raise QueryError(f"unknown aggregation stage {name!r} (stage {i}; supported: {' '.join(STAGES)})")
        parts.append((name, spec))
    return parts


def _sort_bound(parts: list[tuple[str, Any]], i: int) -> int | None:
    """How many documents the ``$sort`` at ``i`` must deliver: the skips and limit after it."""
    skipped = 0
    try:
        for name, spec in parts[i + 1:]:
            if name == "$skip":
                skipped += _count_of(spec)
            elif name == "$limit":
                return skipped + _limit_of(spec)
            else:
                return None
    except QueryError:
        return None  # refused by that stage itself
    return None


def compile_pipeline(pipeline: Any) -> Pipeline:
    """Check ``pipeline`` (a list of stages) and compile it; QueryError for anything malformed
    or unknown, naming the stage."""
    parts = _stage_parts(pipeline)
    match = None
    if parts and parts[0][0] == "$match":
        spec = parts[0][1]
        _match(spec)  # checked here, whoever runs it
        match = dict(spec)
        parts = parts[1:]
    stages = []
    for i, (name, spec) in enumerate(parts):
        try:
            if name == "$sort":
                stages.append(_sort(spec, _sort_bound(parts, i)))
            else:
                stages.append(_STAGES[name](spec))
        except QueryError as e:
            raise QueryError(f"{name}: {e}") from None
        except RecursionError:
            raise QueryError(f"{name}: the stage is nested too deeply") from None
    return Pipeline(match, stages)


def run(pipeline: Any, docs: Iterable[dict]) -> Iterator[dict]:
    """The whole pipeline (its leading ``$match`` too) over ``docs``."""
    plan = compile_pipeline(pipeline)
    if plan.match is not None:
        predicate = compile_filter(plan.match)
        docs = (d for d in docs if predicate(d))
    return plan.run(docs)


def aggregate_over(
    pipeline: Any, find: Callable[[dict | None], Iterator[dict]], max_time_ms: int | None
) -> Iterator[dict]:
    """A collection's aggregate: the pipeline checked, its leading ``$match`` answered by
    ``find`` (indexes, verification), the rest run here under the ``max_time_ms`` deadline."""
    at = budget.deadline(budget.seconds_of(max_time_ms))
    plan = compile_pipeline(pipeline)
    docs = find(plan.match)
    return budget.bounded(plan.run(docs), at)

