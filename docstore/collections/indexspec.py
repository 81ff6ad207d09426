"""What an index holds, from its definition: plain, sparse and partial indexes.

An index's definition (an element of a collection definition's ``"indexes"``:
docs/documents.md) is ``{"field": f, "unique": bool}``, and optionally ``"sparse": true``
and ``"partial_filter": {...}``. A document is *covered* by the index when

- the index is not sparse, or the document has the field (``{f: {"$exists": true}}``
  matches it), and
- the index has no partial filter, or the filter matches the document.

A covered document has the index keys :func:`docstore.collections.indexes.keys_for` gives
(null for a missing field); a document that is not covered has none: no row in the derived
state, no entry in the state map, no unique claim. Every writer of index rows (the derived
state, the state map, unique claims, erasures) and the verifier of proofs take a document's
keys from :func:`spec_keys`, so they agree.

A query may be answered by a sparse or partial index only when its filter *implies* the
index's condition (:func:`covers`): every document the filter matches is covered. The test is
syntactic and conservative (as MongoDB's): when in doubt, the index is not used. It is pure,
so the planner of a proof and its verifier compute the same answer.

Partial filters take MongoDB's ``partialFilterExpression`` subset: equality to a scalar,
``$eq``, ``$exists: true``, ``$gt``/``$gte``/``$lt``/``$lte`` (a scalar operand), ``$type``,
and ``$and`` of those, at the top level.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import orjson

from docstore.collections.indexes import check_field, keys_for, meets_array
from docstore.collections.query import compare_values, compile_filter, conjuncts, type_rank
from docstore.errors import QueryError

_RANGE = ("$gt", "$gte", "$lt", "$lte")
_PARTIAL_OPS = frozenset(("$eq", "$exists", "$type", *_RANGE))
Atom = tuple[str, str, Any]
"""One condition of a partial filter: (field, operator, operand); equality is ``$eq``."""


# --------------------------------------------------------------------------- definitions
def check_spec(spec: Any) -> dict[str, Any]:
    """An index definition as stored: ``{"field", "unique"}`` plus ``"sparse": true`` and
    ``"partial_filter"`` only when given (a plain index's definition stays byte for byte as
    before). Accepts a field name, or a dict with those members (``partialFilterExpression``
    is accepted for ``partial_filter``). QueryError on anything else."""
    if isinstance(spec, str):
        spec = {"field": spec}
    if not isinstance(spec, dict):
        raise QueryError(f"an index is a field name or {{'field': f, 'unique': bool}}, got {spec!r}")
    spec = dict(spec)
    if "partialFilterExpression" in spec:
        if "partial_filter" in spec:
            raise QueryError("give partial_filter or partialFilterExpression, not both")
        spec["partial_filter"] = spec.pop("partialFilterExpression")
    extra = set(spec) - {"field", "unique", "sparse", "partial_filter"}
    if extra:
        raise QueryError(
            f"unknown index option {sorted(extra)[0]!r}: an index takes field, unique, sparse and partial_filter"
        )
    field = check_field(spec.get("field"))
    unique = spec.get("unique", False)
    if type(unique) is not bool:
        raise QueryError(f"'unique' must be true or false, got {unique!r}")
    sparse = spec.get("sparse", False)
    if type(sparse) is not bool:
        raise QueryError(f"'sparse' must be true or false, got {sparse!r}")
    out: dict[str, Any] = {"field": field, "unique": unique}
    if sparse:
        out["sparse"] = True
    partial = spec.get("partial_filter")
    if partial is not None:
        if sparse:
            raise QueryError("an index is sparse or partial, not both (a partial filter can say {field: {$exists: true}})")
        partial_atoms(partial)
        out["partial_filter"] = partial
    return out


def partial_atoms(partial: Any) -> list[Atom]:
    """The conditions of a partial filter, all of which a covered document meets; QueryError
    for a filter outside the subset partial indexes take."""
    if not isinstance(partial, dict) or not partial:
        raise QueryError(f"a partial filter is a non-empty filter object, got {partial!r}")
    out: list[Atom] = []
    _atoms(partial, out)
    compile_filter(partial)  # and a valid filter
    return out


def _atoms(clause: Mapping, out: list[Atom]) -> None:
    for key, cond in clause.items():
        if key == "$and":
            if not isinstance(cond, list) or not cond or not all(isinstance(c, dict) and c for c in cond):
                raise QueryError("$and in a partial filter takes a non-empty list of filter objects")
            for c in cond:
                _atoms(c, out)
            continue
        if not isinstance(key, str) or key.startswith("$"):
            raise QueryError(
                f"a partial filter takes field conditions and $and only, got {key!r} (MongoDB's "
                "partialFilterExpression: equality, $exists: true, $gt, $gte, $lt, $lte, $type, $and)"
            )
        check_field(key)
        if isinstance(cond, dict) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
            for op, arg in cond.items():
                if op not in _PARTIAL_OPS:
                    raise QueryError(
                        f"operator {op} is not allowed in a partial filter (field {key!r}): equality, $exists: "
                        "true, $gt, $gte, $lt, $lte, $type and $and are"
                    )
                if op == "$exists" and arg is not True:
                    raise QueryError(f"a partial filter takes $exists: true only (field {key!r})")
                if op in _RANGE or op == "$eq":
                    _scalar(arg, key, op)
                out.append((key, op, arg))
        else:
            _scalar(cond, key, "equality")
            out.append((key, "$eq", cond))


def _scalar(value: Any, field: str, op: str) -> None:
    ok = value is None or isinstance(value, (str, bool, int)) or (isinstance(value, float) and math.isfinite(value))
    if not ok:
        raise QueryError(f"{op} in a partial filter (field {field!r}) takes a scalar (string, number, boolean, null)")


# ------------------------------------------------------------------------ what it holds
@lru_cache(maxsize=256)
def _partial_predicate(raw: bytes) -> Callable[[dict], bool]:
    return compile_filter(orjson.loads(raw))


def _covered_test(spec: Mapping[str, Any]) -> Callable[[dict], bool] | None:
    """The test of a covered document (None: every document is)."""
    partial = spec.get("partial_filter")
    if partial is not None:
        return _partial_predicate(orjson.dumps(partial, option=orjson.OPT_SORT_KEYS))
    if spec.get("sparse"):
        return _exists_predicate(spec["field"])
    return None


@lru_cache(maxsize=256)
def _exists_predicate(field: str) -> Callable[[dict], bool]:
    return compile_filter({field: {"$exists": True}})


def is_plain(spec: Mapping[str, Any]) -> bool:
    """Whether the index covers every document (neither sparse nor partial)."""
    return not spec.get("sparse") and spec.get("partial_filter") is None


def covered(doc: dict, spec: Mapping[str, Any]) -> bool:
    """Whether ``doc`` has keys in the index (see the module)."""
    test = _covered_test(spec)
    return test is None or bool(test(doc))


def spec_keys(doc: dict, spec: Mapping[str, Any]) -> list[bytes]:
    """The index keys of ``doc`` in the index ``spec`` (none when it is not covered)."""
    test = _covered_test(spec)
    if test is not None and not test(doc):
        return []
    return keys_for(doc, spec["field"])


def spec_meets_array(doc: dict, spec: Mapping[str, Any]) -> bool:
    """Whether ``doc`` is covered and its path to the field meets an array (the multikey mark)."""
    return covered(doc, spec) and meets_array(doc, spec["field"])


def index_specs(meta: dict[str, Any]) -> list[dict[str, Any]]:
    """The definitions of a collection's indexes (docstore.collections.indexspec)."""
    return list(meta.get("indexes", []))


def changed_indexes(old: dict[str, Any], new: dict[str, Any]) -> tuple[list[str], list[dict[str, Any]]]:
    """(the fields whose index a definition change drops, the indexes it creates): an index
    whose definition changed (its options) is dropped and created again."""
    before = {i["field"]: i for i in old.get("indexes", [])}
    after = {i["field"]: i for i in new.get("indexes", [])}
    dropped = [f for f, i in before.items() if after.get(f) != i]
    created = [i for f, i in after.items() if before.get(f) != i]
    return dropped, created


def spec_of(definition: Mapping[str, Any], field: str) -> dict[str, Any]:
    """The index on ``field`` in a collection ``definition`` (KeyError if none)."""
    for i in definition.get("indexes", []):
        if i["field"] == field:
            return dict(i)
    raise KeyError(field)


def condition_fields(spec: Mapping[str, Any]) -> list[str]:
    """The fields whose values decide whether a document is covered."""
    partial = spec.get("partial_filter")
    if partial is not None:
        return sorted({f for f, _op, _v in partial_atoms(partial)})
    return [spec["field"]] if spec.get("sparse") else []


# ----------------------------------------------------------------------- the planner's test
def covers(spec: Mapping[str, Any], filter: Mapping | None) -> bool:  # noqa: A002
    """Whether every document ``filter`` matches is covered by the index (then the index may
    answer it). Conservative: False when it cannot tell."""
    if is_plain(spec):
        return True
    if not filter:
        return False
    pairs = conjuncts(filter)
    partial = spec.get("partial_filter")
    needs: list[Atom] = partial_atoms(partial) if partial is not None else [(spec["field"], "$exists", True)]
    return all(any(f == field and _implies(cond, op, arg) for f, cond in pairs) for field, op, arg in needs)


def _query_atoms(cond: Any) -> list[tuple[str, Any]]:
    """(operator, operand) of one field condition of a query: all of them hold for a match."""
    if isinstance(cond, Mapping) and cond and all(isinstance(k, str) and k.startswith("$") for k in cond):
        return list(cond.items())
    return [("$value", cond)]


def _implies(cond: Any, op: str, arg: Any) -> bool:
    """Whether a query's condition on a field implies ``{field: {op: arg}}``."""
    return any(_atom_implies(q_op, q_arg, op, arg) for q_op, q_arg in _query_atoms(cond))


def _bound_scalar(v: Any) -> bool:
    return v is None or isinstance(v, (str, bool, int)) or (isinstance(v, float) and math.isfinite(v))


def _atom_implies(q_op: str, w: Any, op: str, v: Any) -> bool:
    if op == "$exists":
        return _implies_exists(q_op, w)
    if op == "$type":  # only by the same condition
        return q_op == "$type" and _same(w, v)
    # op: $eq or a range, v a scalar
    if q_op in ("$value", "$eq"):
        return _value_meets(w, op, v)
    if q_op == "$in":
        return isinstance(w, list) and all(_value_meets(x, op, v) for x in w)
    if q_op in _RANGE and op in _RANGE and _bound_scalar(w) and w is not None and v is not None:
        if type_rank(w) != type_rank(v):
            return False
        c = compare_values(w, v)
        if op in ("$gt", "$gte") and q_op in ("$gt", "$gte"):  # x > w (or >=) implies x > v (or >=)
            return c > 0 or (c == 0 and (op == "$gte" or q_op == "$gt"))
        if op in ("$lt", "$lte") and q_op in ("$lt", "$lte"):
            return c < 0 or (c == 0 and (op == "$lte" or q_op == "$lt"))
    return False


def _value_meets(w: Any, op: str, v: Any) -> bool:
    """Whether a document equal to the scalar ``w`` at the field meets ``{op: v}`` (``w`` is
    a scalar: it can only equal a scalar value or element, which then meets the condition)."""
    if not _bound_scalar(w):
        return False
    if w is None:  # null also matches a missing field: only a condition of null itself follows
        return op == "$eq" and v is None
    return bool(compile_filter({"x": {op: v}})({"x": w}))


def _implies_exists(q_op: str, w: Any) -> bool:
    """Whether a query condition never matches a document missing the field."""
    if q_op == "$exists":
        return w is not None and w is not False and w != 0
    if q_op in ("$value", "$eq"):
        return w is not None  # equality to a value (or an object, an array) needs the field
    if q_op == "$in":
        return isinstance(w, list) and all(x is not None and _bound_scalar(x) for x in w)
    if q_op in _RANGE:
        return _bound_scalar(w) and w is not None
    return False


def _same(a: Any, b: Any) -> bool:
    return orjson.dumps(a, option=orjson.OPT_SORT_KEYS) == orjson.dumps(b, option=orjson.OPT_SORT_KEYS)
