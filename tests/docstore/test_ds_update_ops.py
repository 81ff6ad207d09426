"""Update operators (docstore/collections/update.py): MongoDB's semantics, by examples taken from
MongoDB's documentation, and a differential test against mongomock on random documents that
covers every operator through the collection's ``update_one``.

Where mongomock 4.3 is known to differ from MongoDB, the test follows MongoDB: the random
generator keeps to the inputs on which mongomock behaves as MongoDB does, and the hand-written
tests below pin MongoDB's behaviour outside that domain. mongomock's deviations (each checked by
hand against MongoDB's documentation and its update code, src/mongo/db/update/*_node.cpp):

* ``$mul`` is not implemented at all (every use raises): the differential gives mongomock the
  ``$set`` of MongoDB's result instead (the value times the factor; a missing field becomes a
  zero of the factor's type);
* no conflicting-path check (``{"$set": {"a": 1}, "$inc": {"a": 1}}`` applies both): the
  generator names each path once; conflicts are tested by hand;
* ``$pull`` of ``{}`` removes every element (MongoDB: every object element);
* Python comparison: ``$min``/``$max`` across types or of nulls, and ``$push``'s ``$sort`` over mixed
  types, raise TypeError; ``True == 1`` in ``$addToSet``/``$pull``; the generator compares
  within one type bracket and keeps away from 0 and 1; numbers of equal value but different
  types (3 and 3.0) are kept out of one array (mongomock keeps both in ``$addToSet``, MongoDB
  one);
* ``$addToSet`` with ``$each`` does not remove duplicates within ``$each`` (MongoDB does):
  the generator's ``$each`` values are distinct;
* ``$inc`` on a boolean, ``$pull``/``$pullAll``/``$addToSet`` on a non-array, and
  ``$pop`` on a missing field behave differently (MongoDB: errors, errors, no-op);
* paths through scalars, dotted ``$rename`` and ``$rename`` of several fields onto each
  other are not handled as MongoDB does: the generator renames top-level fields, onto names
  no other part of the update uses;
* an upsert takes no equality from inside ``$and`` (MongoDB does): tested by hand;
* ``$currentDate`` stores a datetime; documents here are JSON, so it stores an ISO 8601 UTC text
  (or, with ``{"$type": "timestamp"}``, milliseconds since the epoch): compared by type.

One deviation of ours from MongoDB 5.0+: new fields are added in the order the update names
them, where MongoDB 5.0 adds them in the lexicographic order of their names (documents are
compared here with keys in any order).
"""

from __future__ import annotations

import copy
import datetime as dt
import math
import re
import tempfile
import time

import mongomock
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import docstore
from docstore import InvalidDocumentError, QueryError
from docstore.collections.update import OPERATORS, apply_update, current_date_value, identical, validate_update

pytestmark = pytest.mark.embedded


def up(doc, changes, **kw):
    return apply_update({"_id": "x", **doc}, changes, **kw)


# ============================================================================ by example
EXAMPLES = [
    # $mul (a missing field: zero of the factor's type)
    ({"p": 10}, {"$mul": {"p": 1.25}}, {"p": 12.5}),
    ({"p": 3}, {"$mul": {"p": 2}}, {"p": 6}),
    ({}, {"$mul": {"p": 2}}, {"p": 0}),
    ({}, {"$mul": {"p": 2.5}}, {"p": 0.0}),
    ({"a": [1, 2]}, {"$mul": {"a.1": 3}}, {"a": [1, 6]}),
    # $min / $max: MongoDB's order across types (null < numbers < strings < objects < arrays < booleans)
    ({"lo": 200}, {"$min": {"lo": 150}}, {"lo": 150}),
    ({"lo": 200}, {"$min": {"lo": 250}}, {"lo": 200}),
    ({"lo": 1}, {"$min": {"lo": 1.0}}, {"lo": 1}),  # equal: unchanged, the type too
    ({"v": "a"}, {"$min": {"v": 5}}, {"v": 5}),
    ({"v": "a"}, {"$max": {"v": 5}}, {"v": "a"}),
    ({"v": 5}, {"$max": {"v": True}}, {"v": True}),
    ({"v": None}, {"$min": {"v": 0}}, {"v": None}),
    ({}, {"$max": {"v.w": 3}}, {"v": {"w": 3}}),
    # $rename
    ({"nmae": "x", "k": 1}, {"$rename": {"nmae": "name"}}, {"k": 1, "name": "x"}),
    ({"a": {"b": 1, "c": 2}}, {"$rename": {"a.b": "d.e"}}, {"a": {"c": 2}, "d": {"e": 1}}),
    ({"a": 1, "b": 2}, {"$rename": {"a": "b"}}, {"b": 1}),
    ({"b": 2}, {"$rename": {"a": "c"}}, {"b": 2}),  # no source: no-op
    ({"a": 5}, {"$rename": {"a.b": "c"}}, {"a": 5}),  # through a scalar: no source
    # $currentDate: see test_current_date
    # $setOnInsert: only when an upsert inserts
    ({"a": 1}, {"$setOnInsert": {"b": 2}}, {"a": 1}),
    # $push modifiers (MongoDB's documentation's examples)
    ({"s": [44, 78, 38, 80]}, {"$push": {"s": {"$each": [50, 60, 70], "$position": 0}}}, {"s": [50, 60, 70, 44, 78, 38, 80]}),
    ({"s": [100]}, {"$push": {"s": {"$each": [20, 30], "$position": 2}}}, {"s": [100, 20, 30]}),
    ({"s": [1, 2, 3]}, {"$push": {"s": {"$each": [9], "$position": -1}}}, {"s": [1, 2, 9, 3]}),
    ({"s": [1, 2, 3]}, {"$push": {"s": {"$each": [9], "$position": -9}}}, {"s": [9, 1, 2, 3]}),
    ({"s": [40, 50, 60]}, {"$push": {"s": {"$each": [80, 78, 86], "$slice": -5}}}, {"s": [50, 60, 80, 78, 86]}),
    ({"s": [89, 90]}, {"$push": {"s": {"$each": [100, 20], "$slice": 3}}}, {"s": [89, 90, 100]}),
    ({"s": [89, 70, 100, 20]}, {"$push": {"s": {"$each": [], "$slice": 0}}}, {"s": []}),
    ({"s": [1, 2]}, {"$push": {"s": {"$each": [3], "$slice": -10}}}, {"s": [1, 2, 3]}),
    (
        {"q": [{"id": 3, "s": 6}, {"id": 4, "s": 7}]},
        {"$push": {"q": {"$each": [{"id": 5, "s": 6}, {"id": 6, "s": 8}], "$sort": {"s": 1}}}},
        {"q": [{"id": 3, "s": 6}, {"id": 5, "s": 6}, {"id": 4, "s": 7}, {"id": 6, "s": 8}]},
    ),
    ({"t": [40, 60]}, {"$push": {"t": {"$each": [40, 60, 50], "$sort": -1, "$slice": 3}}}, {"t": [60, 60, 50]}),
    ({"t": ["b", 2, None, True]}, {"$push": {"t": {"$each": [], "$sort": 1}}}, {"t": [None, 2, "b", True]}),
    ({"t": [{"s": 2}, 5, {"s": 1}]}, {"$push": {"t": {"$each": [], "$sort": {"s": 1}}}}, {"t": [5, {"s": 1}, {"s": 2}]}),
    ({}, {"$push": {"t": {"$each": [3, 1], "$sort": 1}}}, {"t": [1, 3]}),
    # $addToSet: MongoDB's equality (1 == 1.0; True != 1; objects in key order), $each deduplicated
    ({"t": ["a", "b"]}, {"$addToSet": {"t": "c"}}, {"t": ["a", "b", "c"]}),
    ({"t": ["a", "b"]}, {"$addToSet": {"t": "a"}}, {"t": ["a", "b"]}),
    ({"t": [1]}, {"$addToSet": {"t": 1.0}}, {"t": [1]}),
    ({"t": [1]}, {"$addToSet": {"t": True}}, {"t": [1, True]}),
    ({"t": [{"a": 1, "b": 2}]}, {"$addToSet": {"t": {"b": 2, "a": 1}}}, {"t": [{"a": 1, "b": 2}, {"b": 2, "a": 1}]}),
    ({"t": [["x"]]}, {"$addToSet": {"t": ["x"]}}, {"t": [["x"]]}),
    ({"t": [2]}, {"$addToSet": {"t": {"$each": [3, 3.0, 2, "x", "x"]}}}, {"t": [2, 3, "x"]}),
    ({}, {"$addToSet": {"t": {"$each": []}}}, {"t": []}),
    ({"t": []}, {"$addToSet": {"t": [1, 2]}}, {"t": [[1, 2]]}),
    # $pop
    ({"t": [1, 2, 3]}, {"$pop": {"t": 1}}, {"t": [1, 2]}),
    ({"t": [1, 2, 3]}, {"$pop": {"t": -1}}, {"t": [2, 3]}),
    ({"t": []}, {"$pop": {"t": 1}}, {"t": []}),
    ({}, {"$pop": {"t": 1}}, {}),
    # $pull: a value, a condition on the element, a query on object elements
    ({"f": ["apples", "pears", "grapes"]}, {"$pull": {"f": "pears"}}, {"f": ["apples", "grapes"]}),
    ({"v": [3, 5, 6, 7, 7, 8]}, {"$pull": {"v": {"$gte": 6}}}, {"v": [3, 5]}),
    ({"v": [1, 1.0, True, "1"]}, {"$pull": {"v": 1}}, {"v": [True, "1"]}),
    ({"v": [1, 2, 3]}, {"$pull": {"v": {"$in": [1, 3]}}}, {"v": [2]}),
    (
        {"r": [{"item": "A", "score": 5}, {"item": "B", "score": 8, "comment": "x"}]},
        {"$pull": {"r": {"score": 8, "item": "B"}}},  # a query: other fields may be there
        {"r": [{"item": "A", "score": 5}]},
    ),
    ({"r": [{"a": 1}, 5, {"b": 2}]}, {"$pull": {"r": {}}}, {"r": [5]}),  # {}: every object
    ({"r": [{"a": [1, 2]}, {"a": [3]}]}, {"$pull": {"r": {"a": 2}}}, {"r": [{"a": [3]}]}),
    ({"r": [{"n": 1}, {"n": 5}]}, {"$pull": {"r": {"$or": [{"n": 1}, {"n": 9}]}}}, {"r": [{"n": 5}]}),
    ({"r": [[1, 2], [3]]}, {"$pull": {"r": [1, 2]}}, {"r": [[3]]}),
    ({}, {"$pull": {"r": 1}}, {}),
    # $pullAll
    ({"s": [0, 2, 5, 5, 1, 0]}, {"$pullAll": {"s": [0, 5]}}, {"s": [2, 1]}),
    ({"s": [1, 2.0, "2"]}, {"$pullAll": {"s": [2]}}, {"s": [1, "2"]}),
    ({}, {"$pullAll": {"s": [1]}}, {}),
]


@pytest.mark.parametrize("doc,changes,expected", EXAMPLES)
def test_update_operators_as_mongodb(doc, changes, expected):
    got = up(doc, changes)
    assert identical(got, {"_id": "x", **expected}), got


BAD = [
    # wrong operand types
    ({"$mul": {"n": "2"}}, "number"),
    ({"$mul": {"n": True}}, "number"),
    ({"$pop": {"t": 2}}, "1 (the last element) or -1"),
    ({"$pop": {"t": "1"}}, "1 (the last element) or -1"),
    ({"$pullAll": {"t": 1}}, "array of values"),
    ({"$pull": {"t": {"$bogus": 1}}}, "$bogus"),
    ({"$rename": {"a": 5}}, "must be a string"),
    ({"$rename": {"a": "a"}}, "must differ"),
    ({"$rename": {"a": "a.b"}}, "same path"),
    ({"$rename": {"a.b": "a"}}, "same path"),
    ({"$rename": {"a": "_id"}}, "_id"),
    ({"$rename": {"a": "$b"}}, "cannot start with '$'"),
    ({"$currentDate": {"d": 1}}, "$currentDate"),
    ({"$currentDate": {"d": {"$type": "datetime"}}}, "$currentDate"),
    ({"$push": {"t": {"$slice": 2}}}, "need $each"),
    ({"$push": {"t": {"$each": [1], "$bogus": 1}}}, "unknown modifier '$bogus'"),
    ({"$push": {"t": {"$each": 1}}}, "takes an array"),
    ({"$push": {"t": {"$each": [1], "$slice": 1.5}}}, "$slice"),
    ({"$push": {"t": {"$each": [1], "$position": "0"}}}, "$position"),
    ({"$push": {"t": {"$each": [1], "$sort": 2}}}, "$sort"),
    ({"$push": {"t": {"$each": [1], "$sort": {}}}}, "$sort"),
    ({"$push": {"t": {"$each": [1], "$sort": {"a": 0}}}}, "1 or -1"),
    ({"$push": {"t": {"$each": [1], "$sort": {"$a": 1}}}}, "invalid field"),
    ({"$addToSet": {"t": {"$each": [1], "$slice": 1}}}, "no other modifier"),
    ({"$addToSet": {"t": {"$each": 1}}}, "takes an array"),
    # conflicts (both paths of a $rename count)
    ({"$rename": {"a": "b"}, "$set": {"b": 1}}, "conflict"),
    ({"$rename": {"a": "b"}, "$unset": {"a": 1}}, "conflict"),
    ({"$pull": {"t": 1}, "$push": {"t": 2}}, "conflict"),
    ({"$addToSet": {"t.x": 1}, "$pop": {"t": 1}}, "conflict"),
    ({"$min": {"n": 1}, "$max": {"n": 5}}, "conflict"),
    ({"$setOnInsert": {"n": 1}, "$inc": {"n": 5}}, "conflict"),
    # _id
    ({"$mul": {"_id": 2}}, "_id"),
    ({"$pull": {"_id": 2}}, "_id"),
]


@pytest.mark.parametrize("changes,message", BAD)
def test_malformed_updates_are_refused_whatever_the_document(changes, message):
    """Every operand is checked before any document is touched (as MongoDB parses an update)."""
    with pytest.raises(QueryError) as e:
        validate_update(changes)
    assert message in str(e.value)
    assert "QueryError" not in str(e.value) and not re.search(r"(^|[\s(\[{:,])b'", str(e.value))


DOC_ERRORS = [
    # MongoDB's errors on the document's values (mongomock does not raise for most)
    ({"n": "x"}, {"$mul": {"n": 2}}, "not a number"),
    ({"n": True}, {"$inc": {"n": 2}}, "not a number"),
    ({"t": 5}, {"$push": {"t": 1}}, "not an array"),
    ({"t": {"a": 1}}, {"$addToSet": {"t": 1}}, "not an array"),
    ({"t": "s"}, {"$pop": {"t": 1}}, "not an array"),
    ({"t": 5}, {"$pull": {"t": 5}}, "not an array"),
    ({"t": {"a": 1}}, {"$pullAll": {"t": [1]}}, "not an array"),
    ({"a": [{"b": 1}]}, {"$rename": {"a.0.b": "c"}}, "inside an array"),
    ({"a": [{"b": 1}]}, {"$rename": {"a.b": "c"}}, "inside an array"),
    ({"a": 1, "c": [1]}, {"$rename": {"a": "c.0"}}, "inside an array"),
    ({"a": 1, "c": 5}, {"$rename": {"a": "c.d"}}, "holds a number"),
    ({"a": 5}, {"$min": {"a.b": 1}}, "its parent is a number"),
]


@pytest.mark.parametrize("doc,changes,message", DOC_ERRORS)
def test_updates_mongodb_refuses_on_a_document(doc, changes, message):
    with pytest.raises(QueryError) as e:
        up(doc, changes)
    assert message in str(e.value), str(e.value)


def test_every_operator_is_listed_and_documented():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "docs" / "updates.md").read_text()
    for op in OPERATORS:
        assert f"`{op}`" in text, op
    for mod in ("$each", "$slice", "$sort", "$position"):
        assert f"`{mod}`" in text, mod


def test_current_date():
    t0 = time.time_ns()
    got = up({"d": 1}, {"$currentDate": {"d": True, "e": False, "t": {"$type": "timestamp"}, "u": {"$type": "date"}}})
    t1 = time.time_ns()
    for f in ("d", "e", "u"):
        assert isinstance(got[f], str) and got[f].endswith("Z") and len(got[f]) == 24, got[f]
        when = dt.datetime.fromisoformat(got[f].replace("Z", "+00:00"))
        assert t0 // 10**6 <= int(when.timestamp() * 1000 + 0.5) <= t1 // 10**6
    assert type(got["t"]) is int and t0 // 10**6 <= got["t"] <= t1 // 10**6
    assert got["d"] == got["e"] == got["u"]  # one time for the whole update
    assert current_date_value("date", 0) == "1970-01-01T00:00:00.000Z"
    assert current_date_value("date", 1_234_567_891_999_999_999) == "2009-02-13T23:31:31.999Z"
    assert current_date_value("timestamp", 1_234_567_891_999_999_999) == 1_234_567_891_999
    assert up({}, {"$currentDate": {"a.b": True}}, now_ns=0) == {"_id": "x", "a": {"b": "1970-01-01T00:00:00.000Z"}}


def test_set_on_insert_applies_only_when_inserting():
    assert up({}, {"$setOnInsert": {"a": 1}, "$set": {"b": 2}}, inserting=True) == {"_id": "x", "a": 1, "b": 2}
    assert up({}, {"$setOnInsert": {"a": 1}, "$set": {"b": 2}}) == {"_id": "x", "b": 2}


def test_a_failing_update_changes_nothing_of_the_input():
    doc = {"_id": "x", "t": [3, 1, 2], "n": 1}
    before = copy.deepcopy(doc)
    with pytest.raises(QueryError):
        apply_update(doc, {"$push": {"t": {"$each": [0], "$sort": 1}}, "$inc": {"n": "x"}})
    apply_update(doc, {"$push": {"t": {"$each": [0], "$sort": 1}}, "$rename": {"n": "m"}})
    assert identical(doc, before)


def test_values_taken_from_the_update_are_copies():
    each = [{"a": 1}]
    got = up({}, {"$push": {"t": {"$each": each}}, "$addToSet": {"u": {"$each": each}}})
    got["t"][0]["a"] = 2
    assert each == [{"a": 1}] and got["u"] == [{"a": 1}]


def test_operators_on_the_collection_write_a_revision(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("c")
        c.insert({"_id": "a", "t": [1, 2, 3], "n": 2})
        c.update("a", {"$pull": {"t": {"$lt": 2}}, "$mul": {"n": 1.5}, "$rename": {"x": "y"}})
        assert c.get("a") == {"_id": "a", "t": [2, 3], "n": 3.0}
        assert [r.revision for r in c.history("a")] == [1, 2]
        with pytest.raises(InvalidDocumentError):  # NaN cannot be stored, whatever the operator
            c.update("a", {"$mul": {"n": math.nan}})
        assert c.get("a")["n"] == 3.0


# ============================================================================ differential
SCALARS = [None, True, False, -3, -2, 2, 3, 7, 2**40, -2.5, 2.5, 1e20, "", "a", "b", "ab", "B"]
"""No 0 or 1 (Python's True == 1) and no whole floats (3 and 3.0 in one array: see above)."""
NUMBERS = [-3, -2, 2, 3, 7, -2.5, 2.5]
KEYS = ["a", "b", "c"]
FIELDS = ["a", "b", "c", "d"]

scalars = st.sampled_from(SCALARS)


def _values(max_leaves=6):
    def extend(children):
        objects = st.lists(st.tuples(st.sampled_from(KEYS), children), max_size=3, unique_by=lambda kv: kv[0]).map(
            lambda kvs: dict(sorted(kvs))
        )
        return st.lists(children, max_size=3) | objects

    return st.recursive(scalars, extend, max_leaves=max_leaves)


values = _values()
documents = st.lists(st.tuples(st.sampled_from(FIELDS), values), max_size=4, unique_by=lambda kv: kv[0]).map(dict)


def _bracket(v):
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def _distinct(items):
    """``items`` without repeats by MongoDB's equality (and so by Python's, on this pool)."""
    from docstore.collections.query import values_equal

    out = []
    for x in items:
        if not any(values_equal(x, y) for y in out):
            out.append(x)
    return out


def _no_mixed_numbers(items):
    """True unless an int and a float of equal value both occur (mongomock tells them apart)."""
    nums = [x for x in items if type(x) in (int, float)]
    return all(not (type(x) is not type(y) and x == y) for x in nums for y in nums)


@st.composite
def _operation(draw, doc, path, op):
    """An operand for ``op`` on ``path`` of ``doc`` within mongomock's MongoDB-like domain, and
    the operand mongomock gets (None: the operation is not possible here)."""
    cur = doc.get(path, "<missing>")
    missing = path not in doc
    is_array = isinstance(cur, list)
    if op in ("$set", "$setOnInsert"):
        v = draw(values)
        return v, v
    if op == "$unset":
        return "", ""
    if op == "$inc":
        if not (missing or _bracket(cur) == "number"):
            return None
        v = draw(st.sampled_from(NUMBERS))
        return v, v
    if op == "$mul":
        if not (missing or _bracket(cur) == "number"):
            return None
        v = draw(st.sampled_from(NUMBERS))
        return v, None  # mongomock gets a $set of MongoDB's result
    if op in ("$min", "$max"):
        pool = [x for x in SCALARS if _bracket(x) in ("number", "str") and (missing or _bracket(x) == _bracket(cur))]
        if not missing and _bracket(cur) not in ("number", "str"):
            return None
        v = draw(st.sampled_from(pool))
        return v, v
    if op == "$rename":
        return None  # drawn by _update, which knows the other paths
    if not (missing or is_array):
        return None
    elements = [] if missing else cur
    if op == "$push":
        kind = draw(st.sampled_from(["value", "each", "each", "each"]))
        if kind == "value":
            v = draw(values)
            return v, v
        each = draw(st.lists(values, max_size=3))
        spec = {"$each": each}
        if draw(st.booleans()):
            spec["$position"] = draw(st.integers(-5, 5))
        if draw(st.booleans()):
            spec["$slice"] = draw(st.integers(-4, 4))
        if draw(st.booleans()):
            items = elements + each
            brackets = {_bracket(x) for x in items}
            if brackets <= {"number"} or brackets <= {"str"}:
                spec["$sort"] = draw(st.sampled_from([1, -1]))
            elif items and all(isinstance(x, dict) and _bracket(x.get("a")) == "number" for x in items):
                spec["$sort"] = {"a": draw(st.sampled_from([1, -1]))}
        return spec, copy.deepcopy(spec)
    if op == "$addToSet":
        if draw(st.booleans()):
            v = draw(values)
            if not _no_mixed_numbers(elements + [v]):
                return None
            return v, v
        each = _distinct(draw(st.lists(values, max_size=4)))
        if not _no_mixed_numbers(elements + each):
            return None
        return {"$each": each}, {"$each": copy.deepcopy(each)}
    if op == "$pop":
        if missing:
            return None
        v = draw(st.sampled_from([1, -1]))
        return v, v
    if op == "$pull":
        kind = draw(st.sampled_from(["value", "value", "compare", "in", "object"]))
        if kind == "value":
            v = draw(st.sampled_from(elements) if elements and draw(st.booleans()) else values)
            if v == {}:  # mongomock removes every element, MongoDB every object element
                return None
        elif kind == "compare":
            num = draw(st.sampled_from(NUMBERS))
            v = {draw(st.sampled_from(["$gt", "$gte", "$lt", "$lte", "$ne"])): num}
        elif kind == "in":
            v = {"$in": draw(st.lists(scalars, max_size=3))}
        else:
            v = {draw(st.sampled_from(KEYS)): draw(scalars)}
        if not _no_mixed_numbers(elements + [v]):
            return None
        return v, copy.deepcopy(v)
    if op == "$pullAll":
        v = draw(st.lists(st.sampled_from(elements) if elements else values, max_size=3))
        if not _no_mixed_numbers(elements + v):
            return None
        return v, copy.deepcopy(v)
    raise AssertionError(op)


DIFF_OPS = [op for op in OPERATORS if op not in ("$currentDate", "$setOnInsert")]


@st.composite
def _update(draw, doc):
    """(our update, mongomock's) on distinct top-level paths of ``doc``."""
    ours: dict = {}
    theirs: dict = {}
    free = list(FIELDS)
    for _ in range(draw(st.integers(1, 3))):
        if not free:
            break
        op = draw(st.sampled_from(DIFF_OPS))
        path = draw(st.sampled_from(free))
        if op == "$rename":
            targets = [f for f in free if f != path]
            if not targets:
                continue
            to = draw(st.sampled_from(targets))
            free.remove(to)
            free.remove(path)
            ours.setdefault(op, {})[path] = to
            theirs.setdefault(op, {})[path] = to
            continue
        got = draw(_operation(doc, path, op))
        if got is None:
            continue
        free.remove(path)
        mine, mock = got
        ours.setdefault(op, {})[path] = mine
        if op == "$mul":  # not in mongomock: the $set of MongoDB's result
            cur = doc.get(path)
            theirs.setdefault("$set", {})[path] = 0 * mine if path not in doc else cur * mine
        else:
            theirs.setdefault(op, {})[path] = mock
    return ours, theirs


def _canon(v):
    """A comparable form: object keys in any order, numbers by value and type."""
    if isinstance(v, dict):
        return ("object", tuple(sorted((k, _canon(x)) for k, x in v.items())))
    if isinstance(v, list):
        return ("array", tuple(_canon(x) for x in v))
    return (type(v).__name__, v)


@st.composite
def _case(draw):
    docs = draw(st.lists(documents, min_size=1, max_size=4))
    updates = [draw(_update(d)) for d in docs]
    return [(d, u) for d, u in zip(docs, updates) if u[0]]


DIFF = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], phases=[Phase.explicit, Phase.reuse, Phase.generate])


def test_update_operators_match_mongomock():
    """Every operator (``$currentDate`` and ``$setOnInsert``: below), through the collection's
    update_one, on random documents: the same documents and the same counts, 0 mismatches."""
    seen: set[str] = set()
    with tempfile.TemporaryDirectory() as tmp, docstore.open(tmp) as db:
        coll = db.create_collection("c")
        mock = mongomock.MongoClient().db.c
        n = [0]

        @DIFF
        @given(_case())
        def run(case):
            for doc, (ours, theirs) in case:
                n[0] += 1
                doc_id = f"d{n[0]}"
                coll.insert({"_id": doc_id, **copy.deepcopy(doc)})
                mock.insert_one({"_id": doc_id, **copy.deepcopy(doc)})
                r = coll.update_one({"_id": doc_id}, ours)
                m = mock.update_one({"_id": doc_id}, theirs)
                got, expected = coll.get(doc_id), mock.find_one({"_id": doc_id})
                assert _canon(got) == _canon(expected), (doc, ours, got, expected)
                assert r.matched_count == m.matched_count == 1
                assert r.modified_count == (0 if _canon(got) == _canon({"_id": doc_id, **doc}) else 1)
                seen.update(ours)

        run()
        assert db.audit().ok
    assert seen == set(DIFF_OPS), set(DIFF_OPS) - seen


@st.composite
def _upsert_case(draw):
    """A filter of equalities (plain, ``$eq``) on some fields and an update with
    ``$setOnInsert`` and ``$set``/``$inc`` on others."""
    fields = draw(st.permutations(FIELDS))
    k = draw(st.integers(0, 2))
    flt: dict = {}
    for f in fields[:k]:
        v = draw(scalars | st.lists(scalars, max_size=2))
        flt[f] = draw(st.sampled_from([v, {"$eq": v}]))  # ($and: mongomock seeds nothing; see below)
    update: dict = {"$setOnInsert": {fields[k]: draw(values)}}
    for f in fields[k + 1:]:
        if draw(st.booleans()):
            update.setdefault("$set", {})[f] = draw(values)
        elif draw(st.booleans()):
            update.setdefault("$inc", {})[f] = draw(st.sampled_from(NUMBERS))
    return flt, update


def test_upserts_match_mongomock():
    with tempfile.TemporaryDirectory() as tmp, docstore.open(tmp) as db:
        n = [0]

        @settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
        @given(_upsert_case())
        def run(case):
            flt, update = case
            n[0] += 1
            coll = db.create_collection(f"u{n[0]}")
            mock = mongomock.MongoClient().db[f"u{n[0]}"]
            r = coll.update_one(flt, update, upsert=True)
            m = mock.update_one(copy.deepcopy(flt), copy.deepcopy(update), upsert=True)
            assert (r.matched_count, r.modified_count) == (m.matched_count, m.modified_count) == (0, 0)
            got = coll.get(r.upserted_id)
            expected = mock.find_one({"_id": m.upserted_id})
            got.pop("_id")
            expected.pop("_id")
            assert _canon(got) == _canon(expected), (flt, update, got, expected)
            # again: now it matches, and $setOnInsert does nothing
            r2 = coll.update_one(flt, update, upsert=True)
            m2 = mock.update_one(copy.deepcopy(flt), copy.deepcopy(update), upsert=True)
            assert (r2.matched_count, r2.upserted_id) == (m2.matched_count, m2.upserted_id) == (1, None)
            again = coll.get(r.upserted_id)
            again.pop("_id")
            expected = mock.find_one({"_id": m.upserted_id})
            expected.pop("_id")
            assert _canon(again) == _canon(expected), (flt, update, again, expected)

        run()


def test_current_date_matches_mongomock_by_type():
    """mongomock stores a datetime; a JSON document, an ISO 8601 text (``{"$type": "timestamp"}``,
    integer ms, is not in mongomock without pymongo: test_current_date)."""
    with tempfile.TemporaryDirectory() as tmp, docstore.open(tmp) as db:
        coll = db.create_collection("c")
        mock = mongomock.MongoClient().db.c
        for spec in (True, {"$type": "date"}):
            coll.insert({"_id": "a"})
            mock.insert_one({"_id": "a"})
            coll.update_one({"_id": "a"}, {"$currentDate": {"d.e": spec}})
            mock.update_one({"_id": "a"}, {"$currentDate": {"d.e": spec}})
            got, expected = coll.get("a")["d"]["e"], mock.find_one({"_id": "a"})["d"]["e"]
            assert isinstance(expected, dt.datetime) and isinstance(got, str)
            mine = dt.datetime.fromisoformat(got.replace("Z", "+00:00")).replace(tzinfo=None)
            assert abs((mine - expected).total_seconds()) < 5
            coll.delete("a")
            mock.delete_one({"_id": "a"})
