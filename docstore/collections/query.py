"""The pure query layer: MongoDB filter, projection and sort semantics over JSON documents.

Nothing here does I/O.  Documents are plain decoded JSON: ``dict`` (with ``str`` keys),
``list``, ``str``, ``int`` (arbitrarily large), ``float``, ``bool`` and ``None``.

Public API
----------
``compile_filter(filter) -> Callable[[dict], bool]``
    Validates a Mongo filter once (raising :class:`~docstore.errors.QueryError`) and returns a
    fast predicate.
``compile_projection(projection) -> Callable[[dict], dict]``
    Mongo include/exclude projection.  The result may share nested containers with the input.
``sort_key(sort) -> Callable[[dict], object]``
    A key for ``sorted()`` implementing a Mongo sort specification.
``compare_values(a, b) -> int``
    Mongo's total order over values (type brackets first).
``values_equal(a, b) -> bool``
    Mongo equality (``1 == 1.0``, ``True != 1``, objects compare key order too).
``get_path_values(doc, path) -> list``
    Every value a dotted path reaches, with Mongo's array traversal (leaf arrays whole).
``index_keys(doc, path) -> list``
    The scalar-or-container keys a multikey index stores for ``doc`` (``None`` for missing).
``distinct_values(docs, field) -> list``
    Mongo ``distinct``: leaf arrays flattened one level, Mongo-equal values deduplicated.
``extract_bounds(filter, multikey=True) -> dict[str, FieldBounds]``
    Sound per-field index bounds for the planner.

Semantics notes
---------------
* Path traversal follows MongoDB's ``BSONElementIterator``: walking ``a.b.c`` descends through
  objects; when it meets an array with path left over, each *object* element continues the
  remaining path, and a numeric path part additionally selects the element at that index.
  Scalars met before the end of the path make the path *missing*; scalars inside an array met
  with path left over contribute nothing.  When the path ends at an array, most operators see
  each element and the array itself; ``$size`` and ``$elemMatch`` see only the array.
* ``bool`` is never a number, although Python says ``True == 1``.
* Numbers compare exactly across ``int``/``float`` (Python int/float comparison is exact).
* ``NaN`` equals ``NaN`` and sorts below every other number; ``$gt``/``$lt`` never match it.
* ``$regex`` uses the ``regex`` engine in its ``re``-compatible mode (Python's :mod:`re` syntax:
  close to, not identical with, PCRE), with a time budget for each value tested
  (:mod:`docstore.collections.budget`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cmp_to_key
from typing import Any

import regex

from docstore.collections import budget
from docstore.errors import QueryError, QueryTimeoutError

__all__ = [
    "FieldBounds",
    "RANK_ARRAY",
    "RANK_BOOL",
    "RANK_NULL",
    "RANK_NUMBER",
    "RANK_OBJECT",
    "RANK_STRING",
    "compare_values",
    "compile_filter",
    "compile_projection",
    "distinct_values",
    "conjuncts",
    "extract_bounds",
    "get_path_values",
    "index_keys",
    "sort_key",
    "type_rank",
    "values_equal",
]


# ---------------------------------------------------------------------------------------------
# Sentinels, type ranks and the total order
# ---------------------------------------------------------------------------------------------


class _Missing:
    """The value of a path that reaches nothing (BSON "EOO")."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


class _Undefined:
    """Sort key of an empty array: Mongo orders it before null (BSON ``undefined``)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDEFINED"


_UNDEFINED: Any = _Undefined()

#: Type brackets in Mongo's comparison order (MinKey < null < numbers < strings < objects <
#: arrays < ... < booleans < MaxKey).  Values of different brackets never compare in queries.
RANK_UNDEFINED = 0
RANK_NULL = 1
RANK_NUMBER = 2
RANK_STRING = 3
RANK_OBJECT = 4
RANK_ARRAY = 5
RANK_BOOL = 6

_RANKS: dict[type, int] = {
    type(None): RANK_NULL,
    int: RANK_NUMBER,
    float: RANK_NUMBER,
    str: RANK_STRING,
    dict: RANK_OBJECT,
    list: RANK_ARRAY,
    bool: RANK_BOOL,
    _Missing: RANK_NULL,  # a missing field sorts and compares as null
    _Undefined: RANK_UNDEFINED,
}


def type_rank(value: Any) -> int:
    """The Mongo type bracket of ``value`` (one of the ``RANK_*`` constants)."""
    r = _RANKS.get(value.__class__)
    if r is not None:
        return r
    if isinstance(value, bool):
        return RANK_BOOL
    if isinstance(value, (int, float)):
        return RANK_NUMBER
    if isinstance(value, str):
        return RANK_STRING
    if isinstance(value, Mapping):
        return RANK_OBJECT
    if isinstance(value, (list, tuple)):
        return RANK_ARRAY
    raise TypeError(f"not a JSON value: {value!r} ({type(value).__name__})")


def _cmp_numbers(a: int | float, b: int | float) -> int:
    if a < b:
        return -1
    if a > b:
        return 1
    if a == b:
        return 0
    # at least one NaN: NaN == NaN and NaN sorts below every other number
    a_nan = a != a
    b_nan = b != b
    if a_nan and b_nan:
        return 0
    return -1 if a_nan else 1


def compare_values(a: Any, b: Any) -> int:
    """Compare two JSON values in MongoDB's total order; returns -1, 0 or 1.

    Brackets first (null < numbers < strings < objects < arrays < booleans); numbers compare
    exactly across int/float; strings by code point (= UTF-8 byte order); objects pair by pair
    (value type, then key, then value), shorter first; arrays element by element, shorter first.
    A missing value compares as null.
    """
    ra = type_rank(a)
    rb = type_rank(b)
    if ra != rb:
        return -1 if ra < rb else 1
    if ra == RANK_NUMBER:
        return _cmp_numbers(a, b)
    if ra == RANK_STRING or ra == RANK_BOOL:
        return -1 if a < b else (1 if a > b else 0)
    if ra == RANK_OBJECT:
        for (ka, va), (kb, vb) in zip(a.items(), b.items()):
            ta = type_rank(va)
            tb = type_rank(vb)
            if ta != tb:
                return -1 if ta < tb else 1
            if ka != kb:
                return -1 if ka < kb else 1
            c = compare_values(va, vb)
            if c:
                return c
        la, lb = len(a), len(b)
        return -1 if la < lb else (1 if la > lb else 0)
    if ra == RANK_ARRAY:
        for x, y in zip(a, b):
            c = compare_values(x, y)
            if c:
                return c
        la, lb = len(a), len(b)
        return -1 if la < lb else (1 if la > lb else 0)
    return 0  # null / undefined


def values_equal(a: Any, b: Any) -> bool:
    """Mongo equality of two JSON values (``compare_values(a, b) == 0``, but faster)."""
    ca = a.__class__
    cb = b.__class__
    if ca is cb:
        if ca is dict:
            if len(a) != len(b):
                return False
            for (ka, va), (kb, vb) in zip(a.items(), b.items()):
                if ka != kb or not values_equal(va, vb):
                    return False
            return True
        if ca is list:
            if len(a) != len(b):
                return False
            for x, y in zip(a, b):
                if not values_equal(x, y):
                    return False
            return True
        if ca is float:
            return a == b or (a != a and b != b)
        return a == b
    if (ca is int and cb is float) or (ca is float and cb is int):
        return a == b
    if ca in _RANKS and cb in _RANKS:
        return False
    return compare_values(a, b) == 0  # unusual (sub)classes: fall back to the general order


# ---------------------------------------------------------------------------------------------
# Paths
# ---------------------------------------------------------------------------------------------


def array_index(part: str) -> int:
    """The array offset a path part names ("0", "12"), or -1 ("01", "x", "" name none)."""
    if part and len(part) < 19 and part.isascii() and part.isdigit() and (part == "0" or part[0] != "0"):
        return int(part)
    return -1


class _Path:
    __slots__ = ("dotted", "parts", "idxs", "key")

    def __init__(self, dotted: str) -> None:
        if not isinstance(dotted, str):
            raise QueryError(f"field names must be strings, not {dotted!r}")
        parts = tuple(dotted.split("."))
        if len(parts) > 1 and "" in parts:
            raise QueryError(f"empty field name in path {dotted!r}")
        self.dotted = dotted
        self.parts = parts
        self.idxs = tuple(array_index(p) for p in parts)
        self.key = parts[0] if len(parts) == 1 else None


_PATH_CACHE: dict[str, _Path] = {}


def _path(dotted: str) -> _Path:
    p = _PATH_CACHE.get(dotted) if isinstance(dotted, str) else None
    if p is None:
        p = _Path(dotted)
        if len(_PATH_CACHE) < 4096:
            _PATH_CACHE[dotted] = p
    return p


def _collect(obj: dict, parts: tuple, idxs: tuple, i: int, traverse: bool, out: list) -> None:
    """Append to ``out`` every element Mongo's path iterator yields for ``parts[i:]`` in ``obj``.

    ``MISSING`` is yielded where the path reaches nothing.  With ``traverse`` a leaf array yields
    each element and then itself; without, only itself.
    """
    n = len(parts)
    while True:
        v = obj.get(parts[i], MISSING)
        i += 1
        c = v.__class__
        if c is dict:
            if i == n:
                out.append(v)
                return
            obj = v
            continue
        if c is list:
            _collect_array(v, parts, idxs, i, traverse, out)
            return
        out.append(v if i == n else MISSING)
        return


def _collect_array(arr: list, parts: tuple, idxs: tuple, j: int, traverse: bool, out: list) -> None:
    """``arr`` was reached with ``parts[j:]`` still to walk."""
    n = len(parts)
    if j == n:
        if traverse:
            out.extend(arr)
        out.append(arr)
        return
    idx = idxs[j]
    last = j + 1 == n
    if idx < 0:
        for e in arr:
            if e.__class__ is dict:
                _collect(e, parts, idxs, j, traverse, out)
        return
    for k, e in enumerate(arr):
        c = e.__class__
        if c is dict:
            # an object element continues the remaining path (whose next part is numeric) ...
            _collect(e, parts, idxs, j, traverse, out)
            # ... and, being at the named offset, is also indexed into
            if k == idx:
                if last:
                    out.append(e)
                else:
                    _collect(e, parts, idxs, j + 1, traverse, out)
        elif k == idx:
            if last:
                out.append(e)
            elif c is list:
                _collect_array(e, parts, idxs, j + 1, traverse, out)


def _yields(doc: dict, path: _Path, traverse: bool) -> list:
    out: list = []
    _collect(doc, path.parts, path.idxs, 0, traverse, out)
    return out


def get_path_values(doc: dict, dotted: str) -> list:
    """All values the dotted path reaches in ``doc`` (Mongo array traversal), missing excluded.

    Arrays at the end of the path are returned whole (not flattened); numeric parts index arrays
    (``"a.0"``) and also name fields of object elements.
    """
    return [v for v in _yields(doc, _path(dotted), False) if v is not MISSING]


def index_keys(doc: dict, dotted: str) -> list:
    """The keys a (multikey) index on ``dotted`` should store for ``doc``.

    Leaf arrays are flattened one level (their elements are keys; nested arrays stay whole),
    a path that is missing somewhere contributes ``None`` (Mongo indexes missing as null), and
    Mongo-equal duplicates are removed.  An empty leaf array contributes no key.
    :func:`extract_bounds` is sound with respect to these keys: every document matching the
    filter has at least one key inside the bounds of each extracted field.
    """
    keys: list = []
    cand: Any
    for y in _yields(doc, _path(dotted), False):
        if y is MISSING:
            cand = (None,)
        elif y.__class__ is list:
            cand = y
        else:
            cand = (y,)
        for v in cand:
            for k in keys:
                if values_equal(k, v):
                    break
            else:
                keys.append(v)
    return keys


def distinct_values(docs, field: str) -> list:
    """Mongo ``distinct``: the field's values over ``docs``, leaf arrays flattened one level,
    missing values skipped, Mongo-equal values kept once (first occurrence wins), in order of
    first occurrence."""
    path = _path(field)
    out: list = []
    seen: set = set()  # fast dedup for hashable scalars, keyed so that True and 1 stay apart
    for doc in docs:
        for y in _yields(doc, path, False):
            if y is MISSING:
                continue
            for v in (y if y.__class__ is list else (y,)):
                hk = _hash_key(v)
                if hk is not None:
                    if hk in seen:
                        continue
                    seen.add(hk)
                    out.append(v)
                else:
                    for k in out:
                        if values_equal(k, v):
                            break
                    else:
                        out.append(v)
    return out


def _hash_key(v: Any) -> Any:
    """A hashable key equal for Mongo-equal scalars, or None for containers."""
    c = v.__class__
    if c is bool:
        return ("b", v)
    if c is float and v != v:
        return ("nan",)
    if c is int or c is float:
        return ("n", v)  # 1 and 1.0 hash and compare equal
    if c is str:
        return ("s", v)
    if v is None:
        return ("z",)
    return None


# ---------------------------------------------------------------------------------------------
# Operand validation
# ---------------------------------------------------------------------------------------------

_PATTERN = (re.Pattern, regex.Pattern)  # a compiled pattern given as a filter value


def _norm(value: Any, where: str, allow_regex: bool = False) -> Any:
    """Validate a filter operand as JSON and copy it (tuples become lists, mappings dicts)."""
    c = value.__class__
    if value is None or c is bool or c is int or c is float or c is str:
        return value
    if c is list or c is tuple:
        return [_norm(x, where) for x in value]
    if c is dict or isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise QueryError(f"{where}: object keys must be strings, got {k!r}")
            out[k] = _norm(v, where)
        return out
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_norm(x, where) for x in value]
    if isinstance(value, _PATTERN):
        if allow_regex:
            return value
        raise QueryError(f"{where}: a regular expression is not allowed here")
    raise QueryError(f"{where}: {type(value).__name__} is not a JSON value ({value!r})")


def _is_operator_object(spec: Any) -> bool:
    """Mongo decides on the first key: ``{"$gt": 1, ...}`` is an operator object."""
    if isinstance(spec, Mapping) and spec:
        first = next(iter(spec))
        return isinstance(first, str) and first.startswith("$")
    return False


def _is_nan(v: Any) -> bool:
    return v.__class__ is float and v != v


def _array_operand(op: str, field: str, arg: Any) -> list:
    if not isinstance(arg, (list, tuple)):
        raise QueryError(f"{op} needs an array (field {field!r}), got {arg!r}")
    return list(arg)


# ---------------------------------------------------------------------------------------------
# Conditions
#
# Every operator compiles to a condition with two faces:
#   single(v)      -- Mongo's matchesSingleElement (used inside $elemMatch value form)
#   on_path(path)  -- a document predicate applying the condition along a path
# ---------------------------------------------------------------------------------------------


def _never(_v: Any) -> bool:
    return False


def _always(_d: Any) -> bool:
    return True


def _and_preds(preds: list) -> Callable[[Any], bool]:
    if not preds:
        return _always
    if len(preds) == 1:
        return preds[0]
    if len(preds) == 2:
        p0, p1 = preds

        def and2(d: Any) -> bool:
            return p0(d) and p1(d)

        return and2
    ps = tuple(preds)

    def and_n(d: Any) -> bool:
        for p in ps:
            if not p(d):
                return False
        return True

    return and_n


def _not_pred(p: Callable[[Any], bool]) -> Callable[[Any], bool]:
    def negated(d: Any) -> bool:
        return not p(d)

    return negated


class _Leaf:
    """An element predicate applied along a path: matches when any yielded element matches."""

    __slots__ = ("elem", "traverse", "negate", "fast")

    def __init__(self, elem, traverse: bool = True, negate: bool = False, fast=None) -> None:
        self.elem = elem
        self.traverse = traverse
        self.negate = negate
        self.fast = fast  # optional: key -> predicate, for single-part paths (positive form)

    def negated(self) -> "_Leaf":
        return _Leaf(self.elem, self.traverse, not self.negate, self.fast)

    def single(self, v: Any) -> bool:
        return bool(self.elem(v)) != self.negate

    def on_path(self, path: _Path) -> Callable[[dict], bool]:
        p = _any_on_path(path, self.elem, self.traverse, self.fast)
        return _not_pred(p) if self.negate else p


class _AllOf:
    """A conjunction of conditions on the same path (``$not``'s operand, ``$all``)."""

    __slots__ = ("conds", "negate")

    def __init__(self, conds: list, negate: bool = False) -> None:
        self.conds = conds
        self.negate = negate

    def single(self, v: Any) -> bool:
        r = True
        for c in self.conds:
            if not c.single(v):
                r = False
                break
        return r != self.negate

    def on_path(self, path: _Path) -> Callable[[dict], bool]:
        p = _and_preds([c.on_path(path) for c in self.conds])
        return _not_pred(p) if self.negate else p


def _any_on_path(path: _Path, elem, traverse: bool, fast=None) -> Callable[[dict], bool]:
    if path.key is not None:
        if fast is not None:
            return fast(path.key)
        k = path.key
        if traverse:

            def top(doc: dict) -> bool:
                v = doc.get(k, MISSING)
                if v.__class__ is list:
                    for e in v:
                        if elem(e):
                            return True
                return elem(v)

            return top

        def top_whole(doc: dict) -> bool:
            return elem(doc.get(k, MISSING))

        return top_whole

    parts = path.parts
    idxs = path.idxs
    head = parts[:-1]
    last = parts[-1]

    def dotted(doc: dict) -> bool:
        cur = doc
        for p in head:
            cur = cur.get(p, MISSING)
            if cur.__class__ is not dict:
                break
        else:
            v = cur.get(last, MISSING)
            if traverse and v.__class__ is list:
                for e in v:
                    if elem(e):
                        return True
            return elem(v)
        if cur.__class__ is list:
            out: list = []
            _collect(doc, parts, idxs, 0, traverse, out)
            for v in out:
                if elem(v):
                    return True
            return False
        return elem(MISSING)

    return dotted


# --- element predicates -------------------------------------------------------------------


def _eq_elem(rhs: Any):
    c = rhs.__class__
    if rhs is None:
        return lambda v: v is None or v is MISSING
    if c is bool:
        return lambda v: v is rhs
    if c is float and rhs != rhs:
        return _is_nan
    if c is int or c is float:
        return lambda v: v == rhs and v.__class__ is not bool
    if c is str:
        return lambda v: v == rhs
    if c is dict or c is list:
        return lambda v: v.__class__ is c and values_equal(v, rhs)
    if isinstance(rhs, _PATTERN):  # a regex value: documents never hold one
        return _never
    raise AssertionError(rhs)


def _eq_fast(rhs: Any):
    """Specialised single-key equality predicates (the hot path of most filters)."""
    c = rhs.__class__
    if c is str:

        def fac_str(k: str):
            def eq_str(doc: dict) -> bool:
                v = doc.get(k, MISSING)
                if v == rhs:  # nothing but a str equals a str
                    return True
                if v.__class__ is list:
                    for e in v:
                        if e == rhs:
                            return True
                return False

            return eq_str

        return fac_str
    if (c is int or c is float) and rhs == rhs:

        def fac_num(k: str):
            def eq_num(doc: dict) -> bool:
                v = doc.get(k, MISSING)
                if v == rhs:
                    return v.__class__ is not bool  # True == 1 in Python, not in Mongo
                if v.__class__ is list:
                    for e in v:
                        if e == rhs and e.__class__ is not bool:
                            return True
                return False

            return eq_num

        return fac_num
    if c is bool:

        def fac_bool(k: str):
            def eq_bool(doc: dict) -> bool:
                v = doc.get(k, MISSING)
                if v is rhs:
                    return True
                if v.__class__ is list:
                    for e in v:
                        if e is rhs:
                            return True
                return False

            return eq_bool

        return fac_bool
    if rhs is None:

        def fac_null(k: str):
            def eq_null(doc: dict) -> bool:
                v = doc.get(k, MISSING)
                if v is None or v is MISSING:
                    return True
                if v.__class__ is list:
                    for e in v:
                        if e is None:
                            return True
                return False

            return eq_null

        return fac_null
    return None


def _eq_cond(rhs: Any) -> _Leaf:
    return _Leaf(_eq_elem(rhs), True, False, _eq_fast(rhs))


def _cmp_elem(op: str, rhs: Any):
    c = rhs.__class__
    if rhs is None:
        if op in ("$gte", "$lte"):
            return lambda v: v is None or v is MISSING
        return _never
    if c is float and rhs != rhs:
        if op in ("$gte", "$lte"):
            return _is_nan
        return _never
    if c is int or c is float:
        if op == "$gt":
            return lambda v: (v.__class__ is int or v.__class__ is float) and v > rhs
        if op == "$gte":
            return lambda v: (v.__class__ is int or v.__class__ is float) and v >= rhs
        if op == "$lt":
            return lambda v: (v.__class__ is int or v.__class__ is float) and v < rhs
        return lambda v: (v.__class__ is int or v.__class__ is float) and v <= rhs
    if c is str or c is bool:
        if op == "$gt":
            return lambda v: v.__class__ is c and v > rhs
        if op == "$gte":
            return lambda v: v.__class__ is c and v >= rhs
        if op == "$lt":
            return lambda v: v.__class__ is c and v < rhs
        return lambda v: v.__class__ is c and v <= rhs
    if c is dict or c is list:
        if op == "$gt":
            return lambda v: v.__class__ is c and compare_values(v, rhs) > 0
        if op == "$gte":
            return lambda v: v.__class__ is c and compare_values(v, rhs) >= 0
        if op == "$lt":
            return lambda v: v.__class__ is c and compare_values(v, rhs) < 0
        return lambda v: v.__class__ is c and compare_values(v, rhs) <= 0
    raise AssertionError(rhs)


def _in_elem(values: list, field: str):
    """Mongo ``$in`` over already-normalised values (regexes allowed)."""
    scalars: set = set()  # non-bool numbers and strings (Python never equates those wrongly)
    bools: set = set()
    containers: list = []
    regexes: list = []
    has_null = False
    has_nan = False
    for x in values:
        c = x.__class__
        if x is None:
            has_null = True
        elif c is bool:
            bools.add(x)
        elif c is float and x != x:
            has_nan = True
        elif c is int or c is float or c is str:
            scalars.add(x)
        elif c is dict or c is list:
            containers.append(x)
        else:  # a compiled pattern
            regexes.append(_compile_regex(x, None, field).search)

    def in_elem(v: Any) -> bool:
        c = v.__class__
        if c is str:
            if v in scalars:
                return True
            for search in regexes:
                if search(v):
                    return True
            return False
        if c is int:
            return v in scalars
        if c is float:
            return v in scalars or (has_nan and v != v)
        if c is bool:
            return v in bools
        if v is None or v is MISSING:
            return has_null
        if c is dict or c is list:
            for x in containers:
                if x.__class__ is c and values_equal(v, x):
                    return True
        return False

    return in_elem


_TYPE_ALIASES: dict[str, int] = {
    "double": 1,
    "string": 2,
    "object": 3,
    "array": 4,
    "binData": 5,
    "undefined": 6,
    "objectId": 7,
    "bool": 8,
    "date": 9,
    "null": 10,
    "regex": 11,
    "dbPointer": 12,
    "javascript": 13,
    "symbol": 14,
    "javascriptWithScope": 15,
    "int": 16,
    "timestamp": 17,
    "long": 18,
    "decimal": 19,
    "minKey": -1,
    "maxKey": 127,
}
_TYPE_CODES = frozenset(_TYPE_ALIASES.values())
_NUMBER_CODES = frozenset((1, 16, 18, 19))
_CLASS_CODES: dict[type, int] = {type(None): 10, bool: 8, float: 1, str: 2, dict: 3, list: 4}
_INT32_MIN = -(2**31)
_INT32_MAX = 2**31 - 1


def _type_code(v: Any) -> int:
    """The BSON type code a value would be stored as (ints: int32 or else long)."""
    c = v.__class__
    if c is int:
        return 16 if _INT32_MIN <= v <= _INT32_MAX else 18
    code = _CLASS_CODES.get(c)
    return 0 if code is None else code  # 0: missing (EOO) matches no type


def _parse_type_operand(arg: Any, field: str) -> frozenset:
    items = list(arg) if isinstance(arg, (list, tuple)) else [arg]
    if not items:
        raise QueryError(f"$type (field {field!r}) must name at least one type")
    codes: set[int] = set()
    for t in items:
        if isinstance(t, str):
            if t == "number":
                codes |= _NUMBER_CODES
            elif t in _TYPE_ALIASES:
                codes.add(_TYPE_ALIASES[t])
            else:
                raise QueryError(f"$type (field {field!r}): unknown type name {t!r}")
        elif isinstance(t, (int, float)) and not isinstance(t, bool):
            if (isinstance(t, float) and not t.is_integer()) or int(t) not in _TYPE_CODES:  # NaN, inf: no int()
                raise QueryError(f"$type (field {field!r}): invalid numerical type code {t!r}")
            codes.add(int(t))
        else:
            raise QueryError(f"$type (field {field!r}) needs a type name or number, got {t!r}")
    return frozenset(codes)


_REGEX_FLAGS = {"i": regex.IGNORECASE, "m": regex.MULTILINE, "s": regex.DOTALL, "x": regex.VERBOSE, "u": 0}
_RE_FLAGS = regex.IGNORECASE | regex.MULTILINE | regex.DOTALL | regex.VERBOSE | regex.ASCII  # carried over from a Pattern


class _Rx:
    """A compiled ``$regex`` whose :meth:`search` keeps to the query's time budget."""

    __slots__ = ("pattern", "field")

    def __init__(self, pattern: regex.Pattern, field: str) -> None:
        self.pattern = pattern
        self.field = field

    def search(self, value: str) -> bool:
        try:
            return self.pattern.search(value, timeout=budget.regex_seconds(), concurrent=True) is not None
        except TimeoutError:
            raise QueryTimeoutError(
                f"$regex (field {self.field!r}) {self.pattern.pattern!r} took more than its time budget on one "
                f"value ({budget.REGEX_SECONDS:g} s, or what was left of the query's deadline): a pattern "
                "that backtracks catastrophically, such as ^(a|aa)+$; anchor it or simplify it"
            ) from None


def _compile_regex(pattern: Any, options: Any, field: str) -> _Rx:
    flags = 0
    if options is not None:
        if not isinstance(options, str):
            raise QueryError(f"$options (field {field!r}) has to be a string, got {options!r}")
        for ch in options:
            if ch not in _REGEX_FLAGS:
                raise QueryError(f"$options (field {field!r}): invalid regex flag {ch!r}")
            flags |= _REGEX_FLAGS[ch]
    if isinstance(pattern, _PATTERN):
        if not isinstance(pattern.pattern, str):
            raise QueryError(f"$regex (field {field!r}) must be a text pattern")
        flags |= pattern.flags & _RE_FLAGS
        pattern = pattern.pattern
    elif not isinstance(pattern, str):
        raise QueryError(f"$regex (field {field!r}) has to be a string, got {pattern!r}")
    if "\x00" in pattern:
        raise QueryError(f"$regex (field {field!r}) cannot contain a NUL character")
    try:
        return _Rx(regex.compile(pattern, flags | regex.VERSION0), field)
    except (regex.error, re.error, ValueError, OverflowError, RecursionError) as exc:
        raise QueryError(f"$regex (field {field!r}): invalid regular expression {pattern!r}: {exc}") from None


def _regex_cond(rx: _Rx) -> _Leaf:
    search = rx.search
    return _Leaf(lambda v: v.__class__ is str and search(v))


def _exists_truthy(arg: Any) -> bool:
    """BSON trueValue: false, 0, null are false; every other value (even "" and {}) is true."""
    if arg is None:
        return False
    if isinstance(arg, bool):
        return arg
    if isinstance(arg, (int, float)):
        return arg != 0
    return True


def _size_operand(arg: Any, field: str) -> int:
    if isinstance(arg, bool) or not isinstance(arg, (int, float)):
        raise QueryError(f"$size (field {field!r}) needs a number, got {arg!r}")
    if isinstance(arg, float) and not (math.isfinite(arg) and arg == int(arg)):
        raise QueryError(f"$size (field {field!r}) must be a whole number, got {arg!r}")
    n = int(arg)
    if n < 0:
        raise QueryError(f"$size (field {field!r}) may not be negative, got {arg!r}")
    return n


_INT64_MIN = -(2**63)
_INT64_MAX = 2**63 - 1


def _mod_number(v: Any, what: str, field: str) -> int:
    """A ``$mod`` divisor or remainder: a number, truncated toward zero (MongoDB's coercion to a
    64-bit integer); NaN, infinities and values beyond 64 bits are refused."""
    if v.__class__ is bool or not isinstance(v, (int, float)):
        raise QueryError(f"$mod (field {field!r}): the {what} must be a number, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise QueryError(f"$mod (field {field!r}): the {what} must be a finite number, got {v!r}")
    n = int(v)  # truncates toward zero
    if not _INT64_MIN <= n <= _INT64_MAX:
        raise QueryError(f"$mod (field {field!r}): the {what} must fit in a 64-bit integer, got {v!r}")
    return n


def _mod_elem(arg: Any, field: str) -> Callable[[Any], bool]:
    """MongoDB's ``$mod: [divisor, remainder]``: a number whose remainder (of truncated division,
    its sign the dividend's) is ``remainder``; a float is truncated toward zero first (NaN, the
    infinities and floats beyond 64-bit integers match nothing); what is not a number never
    matches."""
    if not isinstance(arg, (list, tuple)):
        raise QueryError(f"$mod (field {field!r}) needs an array [divisor, remainder], got {arg!r}")
    if len(arg) != 2:
        raise QueryError(
            f"$mod (field {field!r}) needs an array of two numbers [divisor, remainder], got {len(arg)} element(s)"
        )
    divisor = _mod_number(arg[0], "divisor", field)
    remainder = _mod_number(arg[1], "remainder", field)
    if divisor == 0:
        raise QueryError(f"$mod (field {field!r}): the divisor cannot be 0")
    d = abs(divisor)

    def mod(v: Any) -> bool:
        c = v.__class__
        if c is float:
            if not (-9.223372036854775808e18 <= v < 9.223372036854775808e18):  # NaN too
                return False
            v = int(v)
        elif c is not int:
            return False
        r = abs(v) % d
        return (r if v >= 0 else -r) == remainder

    return mod


_LOGICAL = ("$and", "$or", "$nor")
_UNSUPPORTED_TOP = ("$where", "$text", "$jsonSchema", "$sampleRate")
_UNSUPPORTED_FIELD_OPS = (
    "$bitsAllSet",
    "$bitsAllClear",
    "$bitsAnySet",
    "$bitsAnyClear",
    "$geoWithin",
    "$geoIntersects",
    "$near",
    "$nearSphere",
    "$maxDistance",
    "$minDistance",
    "$slice",
)


def _compile_ops(spec: Mapping, field: str) -> list:
    """Compile an operator object (``{"$gt": 1, "$lt": 5}``) into a list of conditions."""
    conds: list = []
    has_regex = "$regex" in spec
    for op, arg in spec.items():
        if not isinstance(op, str) or not op.startswith("$"):
            raise QueryError(
                f"unknown operator {op!r} in the condition on field {field!r}: an operator "
                f"object cannot mix operators with plain field names"
            )
        where = f"{op} (field {field!r})"
        if op == "$eq":
            conds.append(_eq_cond(_norm(arg, where, allow_regex=True)))
        elif op == "$ne":
            if isinstance(arg, _PATTERN):
                raise QueryError(f"$ne (field {field!r}) cannot take a regular expression; use $not")
            conds.append(_eq_cond(_norm(arg, where)).negated())
        elif op in ("$gt", "$gte", "$lt", "$lte"):
            if isinstance(arg, _PATTERN):
                raise QueryError(f"{where} cannot take a regular expression")
            conds.append(_Leaf(_cmp_elem(op, _norm(arg, where))))
        elif op in ("$in", "$nin"):
            vals = _array_operand(op, field, arg)
            normed = []
            for x in vals:
                if _is_operator_object(x):
                    raise QueryError(f"cannot nest $-operators under {op} (field {field!r})")
                normed.append(_norm(x, where, allow_regex=True))
            leaf = _Leaf(_in_elem(normed, field))
            conds.append(leaf.negated() if op == "$nin" else leaf)
        elif op == "$exists":
            leaf = _Leaf(lambda v: v is not MISSING, fast=lambda k: (lambda d: k in d))
            conds.append(leaf if _exists_truthy(arg) else leaf.negated())
        elif op == "$regex":
            conds.append(_regex_cond(_compile_regex(arg, spec.get("$options"), field)))
        elif op == "$options":
            if not has_regex:
                raise QueryError(f"$options needs a $regex (field {field!r})")
        elif op == "$not":
            conds.append(_compile_not(arg, field))
        elif op == "$all":
            conds.append(_compile_all(arg, field))
        elif op == "$size":
            n = _size_operand(arg, field)
            conds.append(_Leaf(lambda v, n=n: v.__class__ is list and len(v) == n, traverse=False))
        elif op == "$type":
            codes = _parse_type_operand(arg, field)
            conds.append(_Leaf(lambda v, codes=codes: _type_code(v) in codes))
        elif op == "$elemMatch":
            conds.append(_compile_elem_match(arg, field))
        elif op == "$mod":
            conds.append(_Leaf(_mod_elem(arg, field)))
        elif op in _LOGICAL or op == "$expr":
            raise QueryError(f"{op} is a top-level operator; it cannot be applied to field {field!r}")
        elif op in _UNSUPPORTED_FIELD_OPS or op in _UNSUPPORTED_TOP or op == "$comment":
            raise QueryError(f"unsupported operator {op} (field {field!r})")
        else:
            raise QueryError(f"unknown operator {op} (field {field!r})")
    return conds


def _compile_not(arg: Any, field: str):
    if isinstance(arg, _PATTERN):
        return _AllOf([_regex_cond(_compile_regex(arg, None, field))], negate=True)
    if not isinstance(arg, Mapping):
        raise QueryError(f"$not (field {field!r}) needs a regex or a document, got {arg!r}")
    if not arg:
        raise QueryError(f"$not (field {field!r}) cannot be empty")
    if not _is_operator_object(arg):
        raise QueryError(f"$not (field {field!r}) needs an operator expression, got {arg!r}")
    return _AllOf(_compile_ops(arg, field), negate=True)


def _compile_all(arg: Any, field: str):
    vals = _array_operand("$all", field, arg)
    if not vals:
        return _Leaf(_never)  # Mongo: $all with an empty array matches nothing
    elem_matches = [isinstance(x, Mapping) and len(x) >= 1 and next(iter(x)) == "$elemMatch" for x in vals]
    if any(elem_matches):
        if not all(elem_matches):
            raise QueryError(f"$all (field {field!r}) cannot mix $elemMatch with other values")
        conds = []
        for x in vals:
            if len(x) != 1:
                raise QueryError(f"$all (field {field!r}): {{$elemMatch: ...}} cannot have other keys")
            conds.append(_compile_elem_match(x["$elemMatch"], field))
        return _AllOf(conds)
    conds = []
    for x in vals:
        if _is_operator_object(x):
            raise QueryError(f"$all (field {field!r}) cannot contain $-operators other than $elemMatch")
        x = _norm(x, f"$all (field {field!r})", allow_regex=True)
        conds.append(_regex_cond(_compile_regex(x, None, field)) if isinstance(x, _PATTERN) else _eq_cond(x))
    return conds[0] if len(conds) == 1 else _AllOf(conds)


def _as_object(arr: list) -> dict:
    return {str(i): x for i, x in enumerate(arr)}


def _element_matcher(arg: Any, field: str) -> Callable[[Any], bool]:
    """Whether one array element satisfies ``$elemMatch``'s operand: operators applied to the
    element itself (value form), or a query over an object element (object form)."""
    if not isinstance(arg, Mapping):
        raise QueryError(f"$elemMatch (field {field!r}) needs an object, got {arg!r}")
    first = next(iter(arg), None)
    value_form = (
        isinstance(first, str) and first.startswith("$") and first not in _LOGICAL
        and first not in _UNSUPPORTED_TOP and first != "$expr"
    )
    if value_form:
        conds = _compile_ops(arg, field)

        def matches_element(e: Any) -> bool:
            for c in conds:
                if not c.single(e):
                    return False
            return True

    else:
        sub = _compile_query(arg, top=False)

        def matches_element(e: Any) -> bool:
            c = e.__class__
            if c is dict:
                return sub(e)
            if c is list:  # Mongo sees a nested array as an object with keys "0", "1", ...
                return sub(_as_object(e))
            return False

    return matches_element


def _compile_elem_match(arg: Any, field: str) -> _Leaf:
    matches_element = _element_matcher(arg, field)

    def elem_match(v: Any) -> bool:
        if v.__class__ is not list:
            return False
        for e in v:
            if matches_element(e):
                return True
        return False

    return _Leaf(elem_match, traverse=False)


def _compile_field(field: str, spec: Any) -> list:
    path = _path(field)
    if _is_operator_object(spec):
        conds = _compile_ops(spec, field)
    elif isinstance(spec, _PATTERN):
        conds = [_regex_cond(_compile_regex(spec, None, field))]
    else:
        conds = [_eq_cond(_norm(spec, f"value of field {field!r}"))]
    return [c.on_path(path) for c in conds]


def _compile_expr(spec: Any) -> Callable[[dict], bool]:
    """``$expr``: an aggregation expression over the document (field paths, comparisons between
    fields, arithmetic...), compiled by the aggregation module and coerced to a boolean."""
    from docstore.collections.aggregate import compile_condition  # (aggregate imports this module)

    return compile_condition(spec)


def _compile_query(query: Any, top: bool = True) -> Callable[[dict], bool]:
    if not isinstance(query, Mapping):
        raise QueryError(f"a filter must be an object, got {query!r}")
    preds: list = []
    for key, val in query.items():
        if not isinstance(key, str):
            raise QueryError(f"field names must be strings, got {key!r}")
        if key.startswith("$"):
            if key in _LOGICAL:
                if not isinstance(val, (list, tuple)) or not val:
                    raise QueryError(f"{key} must be a nonempty array, got {val!r}")
                subs = []
                for clause in val:
                    if not isinstance(clause, Mapping):
                        raise QueryError(f"{key} entries must be objects, got {clause!r}")
                    subs.append(_compile_query(clause, top))
                preds.append(_logical(key, subs))
            elif key == "$comment":
                continue
            elif key == "$expr":
                if not top:
                    raise QueryError("$expr can only be applied to the top-level document (not inside $elemMatch or $pull)")
                preds.append(_compile_expr(val))
            elif key in _UNSUPPORTED_TOP:
                raise QueryError(f"unsupported top-level operator {key}")
            else:
                raise QueryError(f"unknown top-level operator {key}")
        else:
            preds.extend(_compile_field(key, val))
    return _and_preds(preds)


def _logical(op: str, subs: list) -> Callable[[dict], bool]:
    if op == "$and":
        return _and_preds(subs)
    ps = tuple(subs)
    if op == "$or":
        if len(ps) == 1:
            return ps[0]

        def or_n(d: dict) -> bool:
            for p in ps:
                if p(d):
                    return True
            return False

        return or_n

    def nor_n(d: dict) -> bool:
        for p in ps:
            if p(d):
                return False
        return True

    return nor_n


def compile_filter(filter: Mapping | None, *, allow_expr: bool = True) -> Callable[[dict], bool]:  # noqa: A002 - Mongo's name
    """Compile a MongoDB filter into ``predicate(doc) -> bool``.

    The filter is validated completely here; a malformed one raises
    :class:`~docstore.errors.QueryError` naming the operator and field.  ``None`` and ``{}``
    match every document.  Supported: implicit equality (scalars, whole subdocuments, whole
    arrays, compiled ``re.Pattern``), dotted paths with array traversal, ``$eq $ne $gt $gte $lt
    $lte $in $nin $exists $and $or $nor $not $regex/$options $all $size $elemMatch $type $mod``,
    ``$expr`` (an aggregation expression, :func:`docstore.collections.aggregate.compile_expression`,
    coerced to a boolean; it may raise QueryError while documents are tested, as an expression
    over a value of the wrong type does in MongoDB) and the no-op ``$comment``.
    ``allow_expr=False`` refuses ``$expr`` (a filter over something other than a whole document,
    such as ``$pull``'s condition on array elements).
    """
    if filter is None:
        return _always
    return _compile_query(filter, allow_expr)


# ---------------------------------------------------------------------------------------------
# Projection
# ---------------------------------------------------------------------------------------------


def _projection_flag(field: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, (int, float)) and v == v:
        return v != 0
    raise QueryError(
        f"projection of {field!r} must be 0/1, true/false, {{\"$slice\": ...}} or {{\"$elemMatch\": ...}}; "
        f"expressions and nested projection objects are not supported (got {v!r})"
    )


def _slice_int(v: Any, field: str, what: str) -> int:
    if v.__class__ is bool or not isinstance(v, (int, float)):
        raise QueryError(f"$slice projection of {field!r}: the {what} must be a number, got {v!r}")
    if isinstance(v, float) and not math.isfinite(v):
        raise QueryError(f"$slice projection of {field!r}: the {what} must be a finite number, got {v!r}")
    return int(v)  # truncated toward zero, as MongoDB reads it


def _slice_operand(arg: Any, field: str) -> tuple[int | None, int]:
    """``$slice: n`` -> (None, n); ``$slice: [skip, limit]`` -> (skip, limit), limit positive."""
    if isinstance(arg, (list, tuple)):
        if len(arg) != 2:
            raise QueryError(f"$slice projection of {field!r} takes a number or [skip, limit], got {len(arg)} element(s)")
        skip = _slice_int(arg[0], field, "skip")
        limit = _slice_int(arg[1], field, "limit")
        if limit <= 0:
            raise QueryError(f"$slice projection of {field!r}: the limit must be positive, got {arg[1]!r}")
        return skip, limit
    if arg.__class__ is bool or not isinstance(arg, (int, float)):
        raise QueryError(f"$slice projection of {field!r} takes a number or [skip, limit], got {arg!r}")
    return None, _slice_int(arg, field, "count")


def _sliced(arr: list, skip: int | None, limit: int) -> list:
    """MongoDB's find ``$slice``: the first ``limit`` (last ``-limit``) elements, or ``limit``
    elements from ``skip`` (counted from the end when negative, from 0 when past the start)."""
    n = len(arr)
    if skip is None:
        return arr[max(0, n + limit):] if limit < 0 else arr[:limit]
    start = max(0, n + skip) if skip < 0 else min(n, skip)
    return arr[start:start + limit]


def _slice_at(v: Any, parts: tuple, i: int, skip: int | None, limit: int) -> Any:
    """``v`` with the array at ``parts[i:]`` sliced (through objects, and each element of an
    array on the way); a value that is not an array, or a path reaching nothing, is left as is.
    Copies what it changes; ``v`` is not modified."""
    c = v.__class__
    if c is dict:
        k = parts[i]
        if k not in v:
            return v
        out = dict(v)
        x = v[k]
        if i + 1 == len(parts):
            if x.__class__ is list:
                out[k] = _sliced(x, skip, limit)
        else:
            out[k] = _slice_at(x, parts, i + 1, skip, limit)
        return out
    if c is list:
        return [_slice_at(e, parts, i, skip, limit) for e in v]
    return v


def _projection_operator(field: str, spec: Mapping) -> tuple[str, Any]:
    """``{"$slice": ...}`` -> ("$slice", (skip, limit)); ``{"$elemMatch": ...}`` -> ("$elemMatch",
    element matcher)."""
    if len(spec) != 1:
        raise QueryError(
            f"projection of {field!r} must be 0/1, true/false, {{\"$slice\": ...}} or {{\"$elemMatch\": ...}}: "
            f"an object of {len(spec)} fields is not supported"
        )
    ((op, arg),) = spec.items()
    if op == "$slice":
        return op, _slice_operand(arg, field)
    if op == "$elemMatch":
        if "." in field:
            raise QueryError(f"$elemMatch projection of {field!r}: it applies to a top-level field only, not a nested one")
        if not isinstance(arg, Mapping):
            raise QueryError(f"$elemMatch projection of {field!r} needs an object, got {arg!r}")
        return op, _element_matcher(arg, field)
    raise QueryError(
        f"projection of {field!r}: unsupported {op!r} (a projection takes 0/1, true/false, $slice or $elemMatch; "
        "expressions and nested projection objects are not supported)"
    )


def _projection_tree(paths: list[str]) -> dict:
    tree: dict = {}
    for dotted in paths:
        parts = dotted.split(".")
        node = tree
        for i, p in enumerate(parts):
            last = i == len(parts) - 1
            cur = node.get(p)
            if last:
                if cur is not None:
                    raise QueryError(f"projection path collision at {dotted!r}")
                node[p] = True
            else:
                if cur is True:
                    raise QueryError(f"projection path collision at {dotted!r}")
                if cur is None:
                    cur = node[p] = {}
                node = cur
    return tree


def _incl_obj(obj: dict, tree: dict) -> dict:
    out = {}
    for k, v in obj.items():
        sub = tree.get(k)
        if sub is None:
            continue
        if sub is True:
            out[k] = v
        else:
            r = _incl_val(v, sub)
            if r is not MISSING:
                out[k] = r
    return out


def _incl_val(v: Any, tree: dict) -> Any:
    c = v.__class__
    if c is dict:
        return _incl_obj(v, tree)
    if c is list:
        res = []
        for e in v:
            r = _incl_val(e, tree)
            if r is not MISSING:
                res.append(r)
        return res
    return MISSING  # a scalar has no sub-fields: drop it


def _excl_obj(obj: dict, tree: dict) -> dict:
    out = {}
    for k, v in obj.items():
        sub = tree.get(k)
        if sub is None:
            out[k] = v
        elif sub is not True:
            out[k] = _excl_val(v, sub)
    return out


def _excl_val(v: Any, tree: dict) -> Any:
    c = v.__class__
    if c is dict:
        return _excl_obj(v, tree)
    if c is list:
        return [_excl_val(e, tree) for e in v]
    return v


def _identity(doc: dict) -> dict:
    return doc


def compile_projection(projection: Mapping | list | tuple | None) -> Callable[[dict], dict]:
    """Compile a Mongo find projection into ``project(doc) -> dict``.

    ``{"a": 1, "b.c": 1}`` includes (plus ``_id`` unless ``"_id": 0``), ``{"a": 0}`` excludes;
    a list of field names includes those fields.  Mixing inclusion and exclusion (other than
    ``_id``) or overlapping paths raise :class:`QueryError`.  Inclusion through an array applies
    to each element: object elements keep the included sub-fields, scalar elements are dropped
    (MongoDB 4.4+).  Field order follows the document.  ``None`` or ``{}`` returns the document
    itself; results may share nested containers with the input.

    Array operators, as MongoDB's find:

    * ``{"a.b": {"$slice": n}}`` keeps the first ``n`` elements of the array (the last ``-n``);
      ``{"$slice": [skip, limit]}`` ``limit`` (> 0) elements after ``skip`` (negative: from the
      end). Through objects and arrays of objects; a value that is not an array is left as is.
      It goes with inclusions (the field is then included, sliced) or exclusions; alone, or with
      ``"_id": 0``, the projection is an exclusion (every other field kept); with ``"_id": 1``
      an inclusion.
    * ``{"a": {"$elemMatch": cond}}`` (a top-level field only) replaces the array by a list of
      its first element that matches ``cond`` (as the query operator), or leaves the field out
      when none does or it is not an array. Without inclusions or exclusions the projection is
      an inclusion (``_id`` and the field); in an inclusion the field comes after the included
      ones, in an exclusion it keeps its place.
    """
    if projection is None:
        return _identity
    if isinstance(projection, Mapping):
        items = list(projection.items())
    elif isinstance(projection, (list, tuple)):
        items = [(f, 1) for f in projection]
    else:
        raise QueryError(f"a projection must be an object or a list of field names, got {projection!r}")
    if not items:
        return _identity
    id_flag: bool | None = None
    include: list[str] = []
    exclude: list[str] = []
    slices: list[tuple[str, tuple, int | None, int]] = []
    elem_matches: list[tuple[str, Callable[[Any], bool]]] = []
    for field, v in items:
        if not isinstance(field, str) or not field:
            raise QueryError(f"projection field names must be non-empty strings, got {field!r}")
        if "" in field.split("."):
            raise QueryError(f"empty field name in projection path {field!r}")
        if field.startswith("$") or ".$" in field:
            raise QueryError(f"positional and operator projections are not supported ({field!r})")
        if isinstance(v, Mapping):
            op, arg = _projection_operator(field, v)
            if op == "$slice":
                slices.append((field, tuple(field.split(".")), arg[0], arg[1]))
            else:
                elem_matches.append((field, arg))
            continue
        flag = _projection_flag(field, v)
        if field == "_id":
            id_flag = flag
        else:
            (include if flag else exclude).append(field)
    if include and exclude:
        raise QueryError(
            f"cannot mix inclusion {include[0]!r} and exclusion {exclude[0]!r} in one projection"
        )
    if slices or elem_matches:  # no path may lie on another (MongoDB's "path collision")
        _projection_tree(include + exclude + [f for f, *_ in slices] + [f for f, _ in elem_matches])
    if include:
        inclusion = True
    elif exclude:
        inclusion = False
    elif slices:  # MongoDB: a $slice makes it an exclusion unless _id is included
        inclusion = id_flag is True
    else:
        inclusion = bool(elem_matches) or id_flag is True
    if inclusion:
        tree = _projection_tree(include + [f for f, *_ in slices])
        if id_flag is not False and "_id" not in tree:
            tree["_id"] = True

        def base(doc: dict) -> dict:
            return _incl_obj(doc, tree)

    else:
        if id_flag is False:
            exclude.append("_id")
        tree = _projection_tree(exclude)

        def base(doc: dict) -> dict:
            return _excl_obj(doc, tree)

    if not slices and not elem_matches:
        return base
    ops = tuple(slices)
    matchers = tuple(elem_matches)

    def project_with_operators(doc: dict) -> dict:
        out = base(doc)
        for _field, parts, skip, limit in ops:
            out = _slice_at(out, parts, 0, skip, limit)
        for key, matches in matchers:
            arr = doc.get(key, MISSING)  # matched on the stored document, as MongoDB
            found = MISSING
            if arr.__class__ is list:
                for e in arr:
                    if matches(e):
                        found = [e]
                        break
            if found is MISSING:
                out.pop(key, None)
            else:
                out[key] = found  # in place in an exclusion; after the included fields otherwise
        return out

    return project_with_operators


# ---------------------------------------------------------------------------------------------
# Sorting
# ---------------------------------------------------------------------------------------------

_cmp_key = cmp_to_key(compare_values)


def _parse_sort(sort: Any) -> list[tuple[_Path, int]]:
    if sort is None:
        return []
    if isinstance(sort, str):
        pairs: list = [(sort, 1)]
    elif isinstance(sort, Mapping):
        pairs = list(sort.items())
    elif isinstance(sort, (list, tuple)):
        pairs = []
        if len(sort) == 2 and isinstance(sort[0], str) and not isinstance(sort[1], (str, list, tuple)):
            sort = [tuple(sort)]  # a bare ("field", direction) pair
        for item in sort:
            if isinstance(item, str):
                pairs.append((item, 1))
            elif isinstance(item, (list, tuple)) and len(item) == 2:
                pairs.append((item[0], item[1]))
            else:
                raise QueryError(f"a sort item must be a field name or a (field, direction) pair, got {item!r}")
    else:
        raise QueryError(f"a sort specification must be a field, a list of pairs or an object, got {sort!r}")
    out: list[tuple[_Path, int]] = []
    seen: set[str] = set()
    for field, direction in pairs:
        if not isinstance(field, str) or not field:
            raise QueryError(f"sort field names must be non-empty strings, got {field!r}")
        if field.startswith("$") or "" in field.split("."):
            raise QueryError(f"invalid sort field {field!r}")
        if field in seen:
            raise QueryError(f"duplicate sort field {field!r}")
        seen.add(field)
        if isinstance(direction, bool) or not isinstance(direction, (int, float)) or direction not in (1, -1):
            raise QueryError(f"sort direction of {field!r} must be 1 or -1, got {direction!r}")
        out.append((_path(field), int(direction)))
    return out


# Sort keys follow MongoDB's: the keys a compound multikey index on the sort fields would hold
# for the document (its BtreeKeyGenerator), of which the first in the sort's order is the
# document's sort key. Fields that run through the same array take their values from the same
# element; a path through an array that reaches nothing, or a scalar element, gives null; an
# empty array at the end of a path gives "undefined" (before null), in the middle null; a
# numeric part indexes the array; two different arrays on one level are "parallel arrays".


def _along(node: Any, parts: tuple, i: int) -> tuple[Any, int]:
    """(value, next part) walking ``parts[i:]`` from ``node`` through objects, stopping at the
    first array met (with the parts left after it); ``(MISSING, n)`` if the path breaks. A
    list ``node`` is read as MongoDB reads an array as an object: by offset names."""
    n = len(parts)
    while True:
        c = node.__class__
        if c is dict:
            v = node.get(parts[i], MISSING)
        elif c is list:
            k = array_index(parts[i])
            v = node[k] if 0 <= k < len(node) else MISSING
        else:
            return MISSING, n
        i += 1
        if v is MISSING:
            return MISSING, n
        if v.__class__ is list or i == n:
            return v, i
        node = v


def _sort_index_keys(obj: Any, paths: tuple, at: list, fixed: list, positional: list, out: list) -> None:
    """Append to ``out`` the compound keys for ``obj``; ``at[f]`` is the next part of field f
    (``len(parts)`` once its value is in ``fixed[f]``), ``positional[f]`` what an offset in the
    enclosing array named for it: (indexed element is an array, value, next part) or None."""
    at, fixed = list(at), list(fixed)
    arr: list | None = None
    through: list[int] = []
    expand_elements = True
    for f, parts in enumerate(paths):
        if at[f] >= len(parts):
            continue
        pos = positional[f]
        in_obj = obj.__class__ is dict and parts[at[f]] in obj
        if in_obj and pos is not None:
            raise QueryError(
                f"cannot sort on {'.'.join(parts)!r}: an array holds objects with the numeric field "
                f"name {parts[at[f]]!r} as well (MongoDB refuses such a sort too)"
            )
        if in_obj:
            v, at[f] = _along(obj, parts, at[f])
        elif pos is not None:
            nested, v, at[f] = pos
            if nested:
                expand_elements = False
        else:
            v = MISSING
        if v is MISSING:
            fixed[f], at[f] = None, len(parts)
        elif v.__class__ is list:
            through.append(f)
            if arr is None:
                arr = v
            elif v is not arr:
                raise QueryError(f"cannot sort with keys that are parallel arrays ({'.'.join(parts)!r})")
        else:
            fixed[f], at[f] = v, len(parts)
    if arr is None:
        out.append(tuple(fixed))
        return
    if not arr:
        _sort_element_keys(_UNDEFINED, arr, paths, at, fixed, through, True, [None] * len(paths), out)
        return
    sub: list = [None] * len(paths)
    for f in through:
        parts = paths[f]
        if at[f] < len(parts):
            k = array_index(parts[at[f]])
            if 0 <= k < len(arr):
                v, nxt = _along(arr, parts, at[f])
                sub[f] = (arr[k].__class__ is list, v, nxt)
    for element in arr:
        _sort_element_keys(element, arr, paths, at, fixed, through, expand_elements, sub, out)


def _sort_element_keys(
    element: Any, arr: list, paths: tuple, at: list, fixed: list, through: list, expand: bool, sub: list, out: list
) -> None:
    fixed = list(fixed)
    for f in through:
        if at[f] >= len(paths[f]):
            fixed[f] = element if expand else arr
    _sort_index_keys(element if element.__class__ is dict else {}, paths, at, fixed, sub, out)


def _sort_values(doc: dict, paths: tuple, dirs: tuple) -> tuple:
    """The document's sort key: the first of its compound index keys in the sort's order."""
    vals = []
    for path in paths:  # the common case: no array on any path
        v, _ = _along(doc, path.parts, 0)
        if v.__class__ is list:
            break
        vals.append(None if v is MISSING else v)
    else:
        return tuple(vals)
    keys: list = []
    parts = tuple(p.parts for p in paths)
    _sort_index_keys(doc, parts, [0] * len(parts), [None] * len(parts), [None] * len(parts), keys)
    if len(keys) == 1:
        return keys[0]
    return min(keys, key=lambda k: _SortKey(k, dirs))


class _SortKey:
    __slots__ = ("vals", "dirs")

    def __init__(self, vals: tuple, dirs: tuple) -> None:
        self.vals = vals
        self.dirs = dirs

    def _cmp(self, other: "_SortKey") -> int:
        for a, b, d in zip(self.vals, other.vals, self.dirs):
            ca = a.__class__
            if ca is b.__class__ and (ca is int or ca is str):  # fast path, exact for these
                c = -1 if a < b else (1 if a > b else 0)
            else:
                c = compare_values(a, b)
            if c:
                return c if d > 0 else -c
        return 0

    def __lt__(self, other: "_SortKey") -> bool:  # the only comparison sorted() uses
        for a, b, d in zip(self.vals, other.vals, self.dirs):
            ca = a.__class__
            if ca is b.__class__ and (ca is int or ca is str):
                if a == b:
                    continue
                return (a < b) if d > 0 else (a > b)
            c = compare_values(a, b)
            if c:
                return (c < 0) if d > 0 else (c > 0)
        return False

    def __gt__(self, other: "_SortKey") -> bool:
        return self._cmp(other) > 0

    def __le__(self, other: "_SortKey") -> bool:
        return self._cmp(other) <= 0

    def __ge__(self, other: "_SortKey") -> bool:
        return self._cmp(other) >= 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _SortKey) and self._cmp(other) == 0

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"_SortKey({self.vals!r}, {self.dirs!r})"


def _constant_key(_doc: dict) -> int:
    return 0


def sort_key(sort: Any) -> Callable[[dict], object]:
    """A ``key=`` function for ``sorted()`` implementing a Mongo sort specification.

    ``sort`` is a field name (ascending), a list of ``(field, 1 | -1)`` pairs (plain names mean
    ascending) or an object ``{field: 1 | -1}``.  Values order as :func:`compare_values`; a
    missing field sorts as null, an empty array before null; through arrays, a document sorts
    by the first, in the sort's order, of the keys a compound index on the sort fields would
    hold for it (MongoDB's rule: an array field sorts by its smallest element ascending and its
    largest descending; fields under one array take values from the same element; sorting on
    two different arrays of one document is a QueryError, as in MongoDB). Python's sort is
    stable, so ties keep their input order.
    """
    spec = _parse_sort(sort)
    if not spec:
        return _constant_key
    paths = tuple(p for p, _ in spec)
    dirs = tuple(d for _, d in spec)

    def key(doc: dict) -> _SortKey:
        return _SortKey(_sort_values(doc, paths, dirs), dirs)

    return key


# ---------------------------------------------------------------------------------------------
# Index bounds for the planner
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldBounds:
    """A necessary condition on a field's :func:`index_keys`, derived from a filter.

    Either an equality set -- ``values`` is a tuple of distinct scalars in Mongo order (the
    document has a key Mongo-equal to one of them; ``values == ()`` means no document can
    match) -- or, when ``values`` is None, a range inside one type bracket ``bracket`` (a
    ``RANK_*`` constant): ``lo``/``hi`` are scalars of that bracket, None meaning unbounded on
    that side (within the bracket; null never appears as a range end, ``$gte: null`` becomes the
    equality ``(None,)``).
    """

    values: tuple | None = None
    bracket: int | None = None
    lo: Any = None
    lo_inclusive: bool = True
    hi: Any = None
    hi_inclusive: bool = True

    @property
    def is_equality(self) -> bool:
        return self.values is not None

    @property
    def is_empty(self) -> bool:
        return self.values == ()

    def contains(self, value: Any) -> bool:
        """Whether a key value satisfies these bounds."""
        if self.values is not None:
            return any(values_equal(value, x) for x in self.values)
        if type_rank(value) != self.bracket:
            return False
        if self.lo is not None:
            c = compare_values(value, self.lo)
            if c < 0 or (c == 0 and not self.lo_inclusive):
                return False
        if self.hi is not None:
            c = compare_values(value, self.hi)
            if c > 0 or (c == 0 and not self.hi_inclusive):
                return False
        return True


_EMPTY_BOUNDS = FieldBounds(values=())


def _is_bound_scalar(v: Any) -> bool:
    c = v.__class__
    return v is None or c is bool or c is str or c is int or (c is float and v == v)


def _eq_bounds(vals: list) -> FieldBounds:
    uniq: list = []
    for v in vals:
        if not any(values_equal(v, u) for u in uniq):
            uniq.append(v)
    uniq.sort(key=_cmp_key)
    return FieldBounds(values=tuple(uniq))


def _range_bounds(op: str, rhs: Any) -> FieldBounds:
    if rhs is None:
        return FieldBounds(values=(None,)) if op in ("$gte", "$lte") else _EMPTY_BOUNDS
    bracket = type_rank(rhs)
    if op in ("$gt", "$gte"):
        return FieldBounds(bracket=bracket, lo=rhs, lo_inclusive=op == "$gte")
    return FieldBounds(bracket=bracket, hi=rhs, hi_inclusive=op == "$lte")


def _normalize_range(b: FieldBounds) -> FieldBounds:
    if b.values is not None or b.lo is None or b.hi is None:
        return b
    c = compare_values(b.lo, b.hi)
    if c > 0 or (c == 0 and not (b.lo_inclusive and b.hi_inclusive)):
        return _EMPTY_BOUNDS
    if c == 0:
        return FieldBounds(values=(b.lo,))
    return b


def _intersect(a: FieldBounds, b: FieldBounds) -> FieldBounds:
    if a.values is not None and b.values is not None:
        return FieldBounds(values=tuple(x for x in a.values if any(values_equal(x, y) for y in b.values)))
    if a.values is not None:
        return FieldBounds(values=tuple(x for x in a.values if b.contains(x)))
    if b.values is not None:
        return FieldBounds(values=tuple(x for x in b.values if a.contains(x)))
    if a.bracket != b.bracket:
        return _EMPTY_BOUNDS
    lo, lo_inc = a.lo, a.lo_inclusive
    if b.lo is not None:
        c = 1 if lo is None else compare_values(b.lo, lo)
        if c > 0:
            lo, lo_inc = b.lo, b.lo_inclusive
        elif c == 0:
            lo_inc = lo_inc and b.lo_inclusive
    hi, hi_inc = a.hi, a.hi_inclusive
    if b.hi is not None:
        c = -1 if hi is None else compare_values(b.hi, hi)
        if c < 0:
            hi, hi_inc = b.hi, b.hi_inclusive
        elif c == 0:
            hi_inc = hi_inc and b.hi_inclusive
    return _normalize_range(FieldBounds(bracket=a.bracket, lo=lo, lo_inclusive=lo_inc, hi=hi, hi_inclusive=hi_inc))


def _selectivity(b: FieldBounds) -> tuple:
    if b.values is not None:
        return (0, len(b.values))
    return (1, (b.lo is None) + (b.hi is None))


def _op_bounds(op: str, arg: Any) -> FieldBounds | None:
    """Bounds implied by one operator on its own (None: nothing usable)."""
    if op == "$eq":
        return _eq_bounds([arg]) if _is_bound_scalar(arg) else None
    if op == "$in":
        if isinstance(arg, (list, tuple)) and all(_is_bound_scalar(x) for x in arg):
            return _eq_bounds(list(arg))
        return None
    if op in ("$gt", "$gte", "$lt", "$lte"):
        return _range_bounds(op, arg) if _is_bound_scalar(arg) else None
    if op == "$all":
        if isinstance(arg, (list, tuple)):
            if not arg:
                return _EMPTY_BOUNDS
            for x in arg:
                if _is_bound_scalar(x):
                    return _eq_bounds([x])  # the document must hold each value; any one will do
        return None
    return None


def _spec_bounds(spec: Any) -> list[FieldBounds]:
    """Candidate bounds for one field condition; each is sound on its own."""
    if not _is_operator_object(spec):
        return [_eq_bounds([spec])] if _is_bound_scalar(spec) else []
    out: list[FieldBounds] = []
    for op, arg in spec.items():
        b = _op_bounds(op, arg)
        if b is not None:
            out.append(b)
        elif op == "$elemMatch" and _is_operator_object(arg):
            # value form: every operator applies to the *same* array element, and the array's
            # elements are index keys -- so intersecting is sound even for multikey fields
            inner = [x for x in (_op_bounds(o, a) for o, a in arg.items()) if x is not None]
            if inner:
                acc = inner[0]
                for x in inner[1:]:
                    acc = _intersect(acc, x)
                out.append(acc)
    return out


def _conjuncts(query: Mapping, out: list) -> None:
    for key, val in query.items():
        if not isinstance(key, str):
            continue
        if key == "$and" or (key == "$or" and isinstance(val, (list, tuple)) and len(val) == 1):
            if isinstance(val, (list, tuple)):
                for clause in val:
                    if isinstance(clause, Mapping):
                        _conjuncts(clause, out)
        elif not key.startswith("$"):
            out.append((key, val))


def conjuncts(filter: Mapping) -> list[tuple[str, Any]]:  # noqa: A002
    """The (field, condition) pairs of the filter's top-level AND (``$and`` and one-clause
    ``$or`` flattened): a document matching the filter meets each of them."""
    out: list = []
    _conjuncts(filter, out)
    return out


def extract_bounds(filter: Mapping | None, multikey: bool = True) -> dict[str, FieldBounds]:  # noqa: A002
    """Per-field index bounds implied by the top-level AND of ``filter``.

    Sound: every document matching the filter has, for each returned field, at least one of its
    :func:`index_keys` inside the bounds.  Conditions under ``$or`` (of 2+ clauses), ``$nor``,
    ``$not``, ``$ne``, ``$nin``, ``$regex``, ``$exists``, ``$type``, object-form ``$elemMatch``
    and non-scalar operands are not used.  Call :func:`compile_filter` first to validate.

    With ``multikey=True`` (the default, always safe) separate conditions on one field are *not*
    intersected, because on an array field each may be satisfied by a different element
    (``{a: {$gt: 1, $lt: 5}}`` matches ``{a: [0, 9]}``): the most selective one is returned.  An
    index that knows no document has an array along the field's path may pass
    ``multikey=False`` to get the intersection of all conditions.
    """
    if filter is None:
        return {}
    if not isinstance(filter, Mapping):
        raise QueryError(f"a filter must be an object, got {filter!r}")
    pairs: list = []
    _conjuncts(filter, pairs)
    per_field: dict[str, list[FieldBounds]] = {}
    for field, spec in pairs:
        cands = _spec_bounds(spec)
        if cands:
            per_field.setdefault(field, []).extend(cands)
    out: dict[str, FieldBounds] = {}
    for field, cands in per_field.items():
        if multikey:
            out[field] = min(cands, key=_selectivity)
        else:
            acc = cands[0]
            for b in cands[1:]:
                acc = _intersect(acc, b)
            out[field] = acc
    return out
