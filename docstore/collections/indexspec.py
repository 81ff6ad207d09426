"""What an index holds, from its definition: plain, sparse, partial and compound indexes.

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

A compound index (``"fields": [f1, f2, ...]``, named ``"f1,f2"``) has as keys its fields'
keys concatenated (keyenc's encodings are prefix-free: they sort by f1, then f2, ...);
:func:`compound_plan` gives the byte ranges a filter reads (equality on its first fields, then
a range on the next), for the query planner and the proof planner alike.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from functools import lru_cache
from typing import Any

import orjson

from docstore.collections.indexes import check_field, keys_for, meets_array
from docstore.collections.keyenc import encode_index_value, index_range, prefix_successor
from docstore.collections.query import compare_values, compile_filter, conjuncts, extract_bounds, type_rank
from docstore.errors import InvalidDocumentError, QueryError

_RANGE = ("$gt", "$gte", "$lt", "$lte")
_PARTIAL_OPS = frozenset(("$eq", "$exists", "$type", *_RANGE))
Atom = tuple[str, str, Any]
"""One condition of a partial filter: (field, operator, operand); equality is ``$eq``."""


# --------------------------------------------------------------------------- definitions
def check_spec(spec: Any) -> dict[str, Any]:
    """An index definition as stored: ``{"field", "unique"}`` plus ``"sparse": true`` and
    ``"partial_filter"`` only when given (a plain index's definition stays byte for byte as
    before), and for a compound index ``"fields"`` (its fields, in order; ``"field"`` is then
    their names joined by commas). Accepts a field name, a list of fields, or a dict with
    those members (``partialFilterExpression`` is accepted for ``partial_filter``, ``fields``
    for ``field``). QueryError on anything else."""
    if isinstance(spec, (str, list)):  # a field, or a compound index's fields
        spec = {"field": spec}
    if not isinstance(spec, dict):
        raise QueryError(f"an index is a field name or {{'field': f, 'unique': bool}}, got {spec!r}")
    spec = dict(spec)
    if "partialFilterExpression" in spec:
        if "partial_filter" in spec:
            raise QueryError("give partial_filter or partialFilterExpression, not both")
        spec["partial_filter"] = spec.pop("partialFilterExpression")
    if "fields" in spec:
        if "field" in spec:
            raise QueryError("give field or fields, not both")
        spec["field"] = spec.pop("fields")
    extra = set(spec) - {"field", "unique", "sparse", "partial_filter"}
    if extra:
        raise QueryError(
            f"unknown index option {sorted(extra)[0]!r}: an index takes field, unique, sparse and partial_filter"
        )
    fields = index_name_fields(spec.get("field"))
    field = ",".join(fields)
    unique = spec.get("unique", False)
    if type(unique) is not bool:
        raise QueryError(f"'unique' must be true or false, got {unique!r}")
    sparse = spec.get("sparse", False)
    if type(sparse) is not bool:
        raise QueryError(f"'sparse' must be true or false, got {sparse!r}")
    out: dict[str, Any] = {"field": field, "unique": unique}
    if len(fields) > 1:
        out["fields"] = fields
        if sparse:
            raise QueryError("a compound index cannot be sparse: give a partial_filter with {field: {$exists: true}}")
    if sparse:
        out["sparse"] = True
    partial = spec.get("partial_filter")
    if partial is not None:
        if sparse:
            raise QueryError("an index is sparse or partial, not both (a partial filter can say {field: {$exists: true}})")
        partial_atoms(partial)
        out["partial_filter"] = partial
    return out


MAX_COMPOUND = 16
"""Fields one compound index may have."""


def index_name_fields(field: Any) -> list[str]:
    """The fields of an index given as a (dotted) field, a list of fields (a compound index),
    or their names joined by commas ("a,b": an index's name; field names with commas cannot be
    indexed). QueryError for anything else."""
    if isinstance(field, str) and "," in field:
        field = field.split(",")
    if isinstance(field, (list, tuple)):
        if not field or len(field) > MAX_COMPOUND:
            raise QueryError(f"a compound index has 1 to {MAX_COMPOUND} fields, got {len(field)}")
        fields = [check_field(f) for f in field]
        if len(set(fields)) != len(fields):
            raise QueryError(f"a compound index names a field twice: {fields!r}")
        return fields
    return [check_field(field)]


def index_fields(spec: Mapping[str, Any]) -> list[str]:
    """The fields of an index (one; several for a compound index, in order)."""
    return list(spec.get("fields") or [spec["field"]])


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
    fields = spec.get("fields")
    if not fields:
        return keys_for(doc, spec["field"])
    # a compound index: each field's keys concatenated (encodings are prefix-free, so the
    # order is the fields' order, one after the other); a field without keys (an empty array)
    # counts as null, so that a document is found by conditions on the fields before it
    out = [b""]
    for f in fields:
        keys = keys_for(doc, f) or _NULL
        out = [p + k for p in out for k in keys]
    return out


_NULL = [encode_index_value(None)]


def parallel_arrays(doc: dict, spec: Mapping[str, Any]) -> list[str]:
    """The fields of a compound index where ``doc`` holds arrays (more than one is refused at
    write: the keys would be the product of their elements), or [] for another index."""
    fields = spec.get("fields")
    if not fields or not covered(doc, spec):
        return []
    return [f for f in fields if meets_array(doc, f)]


def check_parallel_arrays(doc: dict, spec: Mapping[str, Any], coll: str) -> None:
    """InvalidDocumentError when ``doc`` holds arrays in two fields of the compound index."""
    found = parallel_arrays(doc, spec)
    if len(found) > 1:
        raise InvalidDocumentError(
            f"compound index {coll}.{spec['field']}: the document holds arrays in fields {found[0]!r} and "
            f"{found[1]!r} (at most one field of a compound index may hold an array, as in MongoDB)",
            "/" + "/".join(found[1].split(".")),
        )


def spec_meets_array(doc: dict, spec: Mapping[str, Any]) -> bool:
    """Whether ``doc`` is covered and its path to a field of the index meets an array (the
    multikey mark)."""
    return covered(doc, spec) and any(meets_array(doc, f) for f in index_fields(spec))


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


# ------------------------------------------------------------------ compound index ranges
MAX_PREFIXES = 256
"""Equality values a compound plan multiplies at most (``$in`` on its first fields)."""
ByteRanges = list[tuple["bytes | None", "bytes | None"]]


def compound_plan(
    spec: Mapping[str, Any], filter: Mapping | None, single: bool  # noqa: A002
) -> tuple[tuple[int, int, int], ByteRanges] | None:
    """(rank, byte ranges of index keys) answering ``filter`` with the compound index, or None
    when the filter has no condition on its first field. The ranges hold every document that
    may match: equality (``$in``) on the first fields fixes their keys, then a range (or
    equality) on the next one. ``single``: no document holds an array on any of the fields
    (then every condition on a field narrows it; else the most selective one, as any element
    may meet each). ``rank`` (smaller: better) is computed from the conditions alone (not
    ``single``), so that a prover and a verifier choose alike: (0 if the first field is
    matched by equality else 1, minus the number of fields used, number of ranges)."""
    fields = spec["fields"]
    loose = extract_bounds(filter, multikey=True) if filter else {}
    if fields[0] not in loose:
        return None
    rank = _compound_walk(fields, loose, loose)[0]
    exact = extract_bounds(filter, multikey=False) if single and filter else loose
    return rank, _compound_walk(fields, loose, exact)[1]


def _compound_walk(fields: list[str], loose: dict, bounds: dict) -> tuple[tuple[int, int, int], ByteRanges]:
    prefixes = [b""]
    used = 0
    ranges: ByteRanges | None = None
    first_range = 0
    for f in fields:
        if f not in loose:
            break
        b = bounds.get(f, loose[f])
        if b.values is not None and len(prefixes) * max(len(b.values), 1) <= MAX_PREFIXES:
            prefixes = sorted({p + encode_index_value(v) for p in prefixes for v in b.values})
            used += 1
            continue
        first_range = int(used == 0)
        ranges = [(s, t) if not p else _within(p, s, t) for p in prefixes for s, t in index_range(b)]
        used += 1
        break
    if ranges is None:
        ranges = [(p, prefix_successor(p)) for p in prefixes] if used else [(None, None)]
    return (first_range, -used, len(ranges)), sorted(set(ranges), key=lambda r: r[0] or b"")


def _within(p: bytes, s: bytes | None, t: bytes | None) -> tuple[bytes | None, bytes | None]:
    return p + (s or b""), p + t if t is not None else prefix_successor(p)
