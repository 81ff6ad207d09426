"""Tests for docstore.documents.flatten: JSON document <-> (RFC 6901 pointer, encoded value) pairs."""

from __future__ import annotations

import collections
import datetime
import decimal
import enum
import math
import struct
from typing import Any

import jsonpointer
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docstore.errors import CorruptDataError, InvalidDocumentError, InvalidPointerError
from docstore.documents.flatten import (
    MAX_DEPTH,
    MAX_DOCUMENT_BYTES,
    OBJECT_HEADER,
    decode_value,
    encode_value,
    escape,
    flatten,
    join_pointer,
    split_pointer,
    unescape,
    unflatten,
)

# --------------------------------------------------------------------------- helpers


def assert_identical(a: Any, b: Any, where: str = "") -> None:
    """Equal values, equal key order, equal exact types, bit-identical floats."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}"
    if type(a) is dict:
        assert list(a) == list(b), f"{where}: key order {list(a)} != {list(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{where}/{k}")
    elif type(a) is list:
        assert len(a) == len(b), f"{where}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_identical(x, y, f"{where}/{i}")
    elif type(a) is float:
        assert struct.pack(">d", a) == struct.pack(">d", b), f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def round_trip(doc: dict) -> dict:
    result = unflatten(flatten(doc))
    assert_identical(result, doc)
    return result


def reference_pointers(doc: dict) -> list[str]:
    """Pointers flatten must emit, in order, computed the slow obvious way."""
    out: list[str] = []

    def walk(v: Any, ptr: str) -> None:
        if type(v) is dict and v:
            if ptr and next(iter(v)) == "0":
                out.append(ptr)  # object header
            for k, x in v.items():
                walk(x, ptr + "/" + k.replace("~", "~0").replace("/", "~1"))
        elif type(v) is list and v:
            for i, x in enumerate(v):
                walk(x, f"{ptr}/{i}")
        else:
            out.append(ptr)

    walk(doc, "")
    return out if doc else []


def nested(levels: int, kind: type = dict, leaf: Any = None) -> dict:
    """A root object with ``levels`` containers in total (root included) on one path."""
    node: Any = {} if leaf is None else leaf
    if leaf is not None:
        node = {"a": leaf} if kind is dict else [leaf]
    for _ in range(levels - 2):
        node = {"a": node} if kind is dict else [node]
    return {"a": node} if levels > 1 else node


# --------------------------------------------------------------------------- strategies

special_keys = st.sampled_from(
    ["", "/", "~", ".", "a/b", "m~n", "a.b", "~0", "~1", "~01", "0", "1", "00", "-", "é", "日本", "🎉"]
)
keys = st.one_of(special_keys, st.text(max_size=8))
big_ints = st.one_of(
    st.integers(min_value=2**63 - 2, max_value=2**64 + 2),
    st.integers(min_value=-(2**63) - 2, max_value=-(2**63) + 2),
    st.integers(min_value=2**64, max_value=2**400),
    st.integers(min_value=-(2**400), max_value=-(2**64)),
)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    big_ints,
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.0, -0.0, 1.0, 5e-324, -5e-324, 1.7976931348623157e308, 2.2250738585072014e-308, 1e16, 0.1]),
    st.text(),
    st.sampled_from(["", "/", "~", "~1", "\u2028", "\x00", '"\\', "🎉"]),
)
json_values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=5),
        st.dictionaries(keys, children, max_size=5),
        # objects whose first key is "0" or whose keys look like array indices
        st.lists(children, min_size=1, max_size=4).map(lambda xs: {str(i): x for i, x in enumerate(xs)}),
    ),
    max_leaves=40,
)
documents = st.dictionaries(keys, json_values, max_size=8)


# --------------------------------------------------------------------------- round trips


@settings(max_examples=400, deadline=None)
@given(documents)
def test_round_trip_arbitrary_documents(doc: dict) -> None:
    pairs = flatten(doc)
    assert all(type(p) is str and type(e) is bytes for p, e in pairs)
    result = unflatten(pairs)
    assert_identical(result, doc)
    # same pairs again, and unflatten accepts any iterable and bytes-like values
    assert flatten(result) == pairs
    assert_identical(unflatten((p, memoryview(e)) for p, e in pairs), doc)


@settings(max_examples=300, deadline=None)
@given(documents)
def test_pairs_are_document_order_and_resolve_with_jsonpointer(doc: dict) -> None:
    pairs = flatten(doc)
    pointers = [p for p, _ in pairs]
    assert pointers == reference_pointers(doc)
    assert len(set(pointers)) == len(pointers)
    for ptr, enc in pairs:
        target = jsonpointer.resolve_pointer(doc, ptr)  # independent RFC 6901 implementation
        if type(target) is dict and target:
            assert enc == OBJECT_HEADER and next(iter(target)) == "0"  # object header
        else:
            assert_identical(decode_value(enc), target, ptr)


@settings(max_examples=500, deadline=None)
@given(scalars)
def test_encode_decode_scalar_round_trip(v: Any) -> None:
    enc = encode_value(v)
    assert type(enc) is bytes
    assert_identical(decode_value(enc), v)
    if type(v) is int and -(2**63) <= v < 2**64:
        assert enc == orjson.dumps(v)
    if type(v) is not int:
        assert_identical(orjson.loads(enc), v)  # plain JSON text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_bit_exact(x: float) -> None:
    assert struct.pack(">d", decode_value(encode_value(x))) == struct.pack(">d", x)


def test_orjson_parsed_document_round_trips_byte_for_byte() -> None:
    text = (
        b'{"_id":"x1","n":1,"f":1.5,"t":true,"z":null,"e":{},"l":[],"nested":{"a":[{"b":[[],{}]},3,"s"]},'
        b'"zero":{"0":"a","1":"b"},"arr":["a","b"],"u":"\xc3\xa9\xf0\x9f\x8e\x89","neg":-0.0,"big":1e+300}'
    )
    doc = orjson.loads(text)
    assert orjson.dumps(round_trip(doc)) == text


# --------------------------------------------------------------------------- explicit cases


@pytest.mark.parametrize(
    "doc",
    [
        {},
        {"a": {}},
        {"a": []},
        {"a": [[]]},
        {"a": [{}]},
        {"a": [[], {}, [[]], [{}], {"b": {}}]},
        {"a": {"b": {"c": {"d": []}}}},
        {"a": [1, [2, [3, []]]], "b": {}},
        {"": {}, "x": []},
    ],
)
def test_empty_containers_survive(doc: dict) -> None:
    round_trip(doc)


def test_empty_containers_encoding() -> None:
    assert flatten({}) == []
    assert unflatten([]) == {}
    assert flatten({"a": {}, "b": []}) == [("/a", b"{}"), ("/b", b"[]")]
    assert flatten({"a": [[], {}]}) == [("/a/0", b"[]"), ("/a/1", b"{}")]
    # decoded empty containers are fresh objects, never shared
    d = unflatten(flatten({"a": {}, "b": {}, "c": [], "d": []}))
    assert d["a"] is not d["b"] and d["c"] is not d["d"]


def test_true_one_and_one_point_zero_stay_distinct() -> None:
    doc = {"t": True, "i": 1, "f": 1.0, "F": False, "z": 0, "zf": 0.0, "nz": -0.0, "n": None}
    pairs = dict(flatten(doc))
    assert pairs == {
        "/t": b"true", "/i": b"1", "/f": b"1.0", "/F": b"false",
        "/z": b"0", "/zf": b"0.0", "/nz": b"-0.0", "/n": b"null",
    }  # fmt: skip
    back = round_trip(doc)
    assert back["t"] is True and back["F"] is False
    assert type(back["i"]) is int and type(back["f"]) is float
    assert math.copysign(1.0, back["nz"]) == -1.0


def test_special_keys() -> None:
    doc = {"": 1, "a/b": 2, "m~n": 3, "a.b": 4, "~01": 5, "/": {"~": [6]}, "é🎉": 7}
    assert [p for p, _ in flatten(doc)] == ["/", "/a~1b", "/m~0n", "/a.b", "/~001", "/~1/~0/0", "/é🎉"]
    round_trip(doc)


@pytest.mark.parametrize("n", [2**200, -(2**200), 2**64, -(2**63) - 1, 2**63, 2**64 - 1, -(2**63), 10**1000])
def test_big_integers(n: int) -> None:
    assert encode_value(n) == str(n).encode()
    assert decode_value(str(n).encode()) == n and type(decode_value(str(n).encode())) is int
    back = round_trip({"n": n, "l": [n, -n]})
    assert type(back["n"]) is int


def test_extreme_floats() -> None:
    extremes = [5e-324, -5e-324, 1.7976931348623157e308, -1.7976931348623157e308, -0.0, 2.0**-1074, 1e-7, 1e22]
    for x in extremes:
        round_trip({"x": x, "l": [x]})


def test_objects_that_look_like_arrays() -> None:
    cases = [
        {"a": {"0": 1}},
        {"a": [1]},
        {"a": {"0": 1, "1": 2}},
        {"a": [1, 2]},
        {"a": {"1": 1, "0": 2}},
        {"a": {"0": {"0": []}}},
        {"a": [{"0": 1}, {"0": {}}]},
        {"a": {"0": {}}},
        {"0": [1], "1": {"0": 2}},
    ]
    for doc in cases:
        round_trip(doc)
    assert flatten({"a": {"0": 1}}) == [("/a", OBJECT_HEADER), ("/a/0", b"1")]
    assert flatten({"a": [1]}) == [("/a/0", b"1")]
    assert flatten({"a": {"1": 1, "0": 2}}) == [("/a/1", b"1"), ("/a/0", b"2")]  # no header needed
    assert flatten({"0": 1}) == [("/0", b"1")]  # the root is always an object


def test_pointer_of_array_elements_are_decimal() -> None:
    doc = {"l": list(range(12))}
    assert [p for p, _ in flatten(doc)] == [f"/l/{i}" for i in range(12)]
    round_trip(doc)


# --------------------------------------------------------------------------- rejections


def rejected(doc: Any) -> InvalidDocumentError:
    with pytest.raises(InvalidDocumentError) as info:
        flatten(doc)
    return info.value


class Color(enum.IntEnum):
    RED = 1


class MyStr(str):
    pass


class MyFloat(float):
    pass


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        ({"a": [1, float("nan")]}, "/a/1"),
        ({"x": float("inf")}, "/x"),
        ({"x": {"y": [float("-inf")]}}, "/x/y/0"),
        ({"x": (1, 2)}, "/x"),
        ({"x": {1, 2}}, "/x"),
        ({"x": b"bytes"}, "/x"),
        ({"x": bytearray(b"b")}, "/x"),
        ({"x": decimal.Decimal("1.5")}, "/x"),
        ({"x": datetime.datetime(2024, 1, 1)}, "/x"),
        ({"x": object()}, "/x"),
        ({"x": 1j}, "/x"),
        ({"x": Color.RED}, "/x"),
        ({"x": MyStr("s")}, "/x"),
        ({"x": MyFloat(1.0)}, "/x"),
        ({"x": collections.OrderedDict(a=1)}, "/x"),
        ({"a/b": {"c~d": [0, {"e": frozenset()}]}}, "/a~1b/c~0d/1/e"),
        ({"s": "ok \ud800"}, "/s"),
        ({"l": ["a", "b", "\udfff"]}, "/l/2"),
        ({"a": {"\ud800": 1}}, "/a/\ud800"),
        ({1: "x"}, ""),
        ({"a": {None: 1}}, "/a"),
        ({"a": {("t",): 1}}, "/a"),
        ({"a": [{MyStr("k"): 1}]}, "/a/0"),
    ],
)
def test_rejections_name_the_path(doc: dict, path: str) -> None:
    assert rejected(doc).path == path


@pytest.mark.parametrize("root", [[], [1], "x", 1, None, (), collections.OrderedDict()])
def test_root_must_be_a_dict(root: Any) -> None:
    assert rejected(root).path == ""


def test_bool_is_not_int_and_int_subclasses_are_rejected() -> None:
    assert encode_value(True) == b"true" and encode_value(1) == b"1" and encode_value(1.0) == b"1.0"
    with pytest.raises(InvalidDocumentError):
        encode_value(Color.RED)


@pytest.mark.parametrize("v", [float("nan"), float("inf"), -float("inf"), (), set(), b"", {"a": 1}, [1], "\ud800"])
def test_encode_value_rejects(v: Any) -> None:
    with pytest.raises(InvalidDocumentError):
        encode_value(v)


def test_size_limit_exact_boundary() -> None:
    # pointer "/k" (2 bytes) + '"' + n + '"'
    ok = {"k": "x" * (MAX_DOCUMENT_BYTES - 4)}
    assert sum(len(p.encode()) + len(e) for p, e in flatten(ok)) == MAX_DOCUMENT_BYTES
    round_trip(ok)
    err = rejected({"k": "x" * (MAX_DOCUMENT_BYTES - 3)})
    assert err.path == "/k" and str(MAX_DOCUMENT_BYTES) in str(err)


def test_size_limit_counts_utf8_bytes_of_pointers() -> None:
    key = "é" * 1000  # 1000 characters, 2000 UTF-8 bytes
    n = MAX_DOCUMENT_BYTES - 2001 - 2
    flatten({key: "x" * n})
    assert rejected({key: "x" * (n + 1)}).path == "/" + key
    # multi-byte values count in bytes too
    m = (MAX_DOCUMENT_BYTES - 4) // 3
    flatten({"k": "€" * m})
    assert rejected({"k": "€" * (m + 1)}).path == "/k"


def test_size_limit_names_the_property_that_crosses_it() -> None:
    doc = {"a": ["x" * 1000 for _ in range(5000)]}
    size, crossing = 0, None
    for i in range(5000):
        size += len(f"/a/{i}") + 1002
        if size > MAX_DOCUMENT_BYTES:
            crossing = f"/a/{i}"
            break
    assert rejected(doc).path == crossing


def test_depth_limit() -> None:
    for kind in (dict, list):
        round_trip(nested(MAX_DEPTH, kind))
        round_trip(nested(MAX_DEPTH, kind, leaf=1))
        err = rejected(nested(MAX_DEPTH + 1, kind))
        assert str(MAX_DEPTH) in str(err)
        expected = "/a" * MAX_DEPTH if kind is dict else "/a" + "/0" * (MAX_DEPTH - 1)
        assert err.path == expected
    # a scalar at the deepest level is fine; one more (empty) container is not
    assert rejected(nested(MAX_DEPTH, dict, leaf=[])).path == "/a" * MAX_DEPTH
    assert rejected(nested(MAX_DEPTH + 50, list, leaf=1)).path.count("/") == MAX_DEPTH


# --------------------------------------------------------------------------- decode / unflatten corruption


@pytest.mark.parametrize(
    "data",
    [b"", b" ", b"{", b"[1]", b'{"a":1}', b"{ }", b"nan", b"NaN", b"Infinity", b"1e400", b"-1e400", b"01", b"--1",
     b"\xff", b'"\xff"', b"tru", b"1 2", b'"abc', b'"\\ud800"', b"+1", b"1_000", b"9" * 5000],
)  # fmt: skip
def test_decode_value_rejects_corrupt_bytes(data: bytes) -> None:
    with pytest.raises(CorruptDataError):
        decode_value(data)


def test_decode_value_accepts_bytes_like() -> None:
    assert decode_value(bytearray(b'"a"')) == "a"
    assert decode_value(memoryview(b"123456789012345678901234567890")) == 123456789012345678901234567890


@pytest.mark.parametrize(
    "pairs",
    [
        [("a", b"1")],  # no leading slash
        [("/~2", b"1")],  # bad escape
        [("/a~", b"1")],
        [(1, b"1")],  # pointer not a str
        [("/a",)],  # not a pair
        [None],
        [("", b"1")],  # the root is a value
        [("", b"{}")],
        [("/a", b"1"), ("/a/b", b"2")],  # scalar then container
        [("/a/b", b"1"), ("/a", b"2")],  # container then scalar
        [("/a", b"1"), ("/a", b"1")],  # duplicate
        [("/a/x", b"1"), ("/a/x", b"1")],
        [("/a/0", b"1"), ("/a/2", b"1")],  # array index gap
        [("/a/0", b"1"), ("/a/0", b"2")],  # repeated index
        [("/a/0", b"1"), ("/a/01", b"2")],  # non-canonical index
        [("/a/0", b"1"), ("/a/x", b"2")],  # member name in an array
        [("/a/0/x", b"1"), ("/a/2/x", b"1")],
        [("/a", b"[]"), ("/a/0", b"1")],  # child of an empty array
        [("/a", b"{}"), ("/a/b", b"1")],  # child of an empty object
        [("/a", b"{}"), ("/a/b/c", b"1")],
        [("/a/x", b"1"), ("/b", b"2"), ("/a/y", b"3")],  # back into a closed object
        [("/a", b"nan")],  # bad values
        [("/a", b"[1]")],
        [("/a", b"")],
        [("/a", "1")],  # value not bytes
        [("/a" * (MAX_DEPTH + 1), b"1")],  # too deep
    ],
)
def test_unflatten_rejects_corrupt_input(pairs: list) -> None:
    with pytest.raises(CorruptDataError):
        unflatten(pairs)


def test_unflatten_error_names_the_pointer() -> None:
    with pytest.raises(CorruptDataError, match="/a/2"):
        unflatten([("/a/0", b"1"), ("/a/2", b"1")])
    with pytest.raises(CorruptDataError, match="/b"):
        unflatten([("/a", b"1"), ("/b", b"oops")])


def test_unflatten_accepts_object_header() -> None:
    assert unflatten([("/a", OBJECT_HEADER), ("/a/0", b"1"), ("/a/1", b"2")]) == {"a": {"0": 1, "1": 2}}
    with pytest.raises(CorruptDataError):  # an empty object takes no children
        unflatten([("/a", b"{}"), ("/a/0", b"1")])
    with pytest.raises(CorruptDataError):
        decode_value(OBJECT_HEADER)
    assert unflatten([("/a", b"{}"), ("/b", b"1")]) == {"a": {}, "b": 1}


# --------------------------------------------------------------------------- pointers


@given(st.lists(keys, max_size=6))
def test_pointer_join_split_round_trip(parts: list[str]) -> None:
    ptr = join_pointer(parts)
    assert split_pointer(ptr) == parts
    assert ptr == jsonpointer.JsonPointer.from_parts(parts).path
    assert jsonpointer.JsonPointer(ptr).parts == parts


@given(keys)
def test_escape_round_trip(token: str) -> None:
    escaped = escape(token)
    assert "/" not in escaped
    assert unescape(escaped) == token


def test_pointer_examples() -> None:
    assert split_pointer("") == []
    assert split_pointer("/") == [""]
    assert split_pointer("//") == ["", ""]
    assert split_pointer("/a~1b/m~0n/0") == ["a/b", "m~n", "0"]
    assert unescape("~01") == "~1"
    assert unescape("~10") == "/0"
    assert escape("~1") == "~01"
    assert join_pointer([]) == ""
    assert join_pointer(["a/b", "~", ""]) == "/a~1b/~0/"


@pytest.mark.parametrize("ptr", ["a", "a/b", "~0", "/~", "/~2", "/a~", "/~~01", "/a/~x", " /a", 1, None, b"/a"])
def test_invalid_pointers(ptr: Any) -> None:
    with pytest.raises(InvalidPointerError):
        split_pointer(ptr)


@pytest.mark.parametrize("token", ["~", "~2", "a~", "a/b"])
def test_invalid_tokens(token: str) -> None:
    with pytest.raises(InvalidPointerError):
        unescape(token)


# --------------------------------------------------------------------------- compiled shapes
from docstore.documents import shapes  # noqa: E402
from docstore.documents.flatten import flatten_raw  # noqa: E402


@settings(max_examples=400, deadline=None)
@given(documents)
def test_a_compiled_shape_rebuilds_exactly_what_unflatten_does(doc: dict) -> None:
    """The fast path of every read: the same document (types, key order, float bits, big
    integers), or None where it cannot vouch for that; twice (compiled, then cached)."""
    ptrs, vals = flatten_raw(doc)
    for _ in range(2):
        fast = shapes.rebuild(tuple(ptrs), list(vals))
        if fast is not None:
            assert_identical(fast, doc)
    if ptrs and not any(v == b"{0}" for v in vals) and not any(type(x) is int and abs(x) >= 2**63 for x in _leaves(doc)):
        assert shapes.rebuild(tuple(ptrs), list(vals)) is not None  # the common case takes the fast path


def _leaves(v: Any) -> list:
    if type(v) is dict:
        return [x for c in v.values() for x in _leaves(c)]
    if type(v) is list:
        return [x for c in v for x in _leaves(c)]
    return [v]


@pytest.mark.parametrize(
    "bad", [b"1,2", b"[1]", b'{"a":1}', b'"open', b"", b"tru", b"1 2", b"12345678901234567890123", b"{0}", b"[]]"]
)
def test_a_value_that_is_not_one_scalar_leaves_the_fast_path(bad: bytes) -> None:
    """A damaged value must not be read as something else (an injected member, a list, a big
    integer read as a float): the fast path declines and the checked path decides."""
    ptrs = (b"/a", b"/b", b"/c")
    vals = [b"1", bad, b'"x"']
    assert shapes.rebuild(ptrs, vals) is None
    try:
        slow = unflatten([(p.decode(), v) for p, v in zip(ptrs, vals)])
    except CorruptDataError:
        return
    assert bad in (b"12345678901234567890123", b"{0}")  # decoded by the checked path: a big int; an object header
    assert slow["a"] == 1


def test_shapes_stay_bounded() -> None:
    for i in range(shapes.MAX_SHAPES + 10):
        assert shapes.rebuild((b"/k%d" % i,), [b"1"]) == {f"k{i}": 1}
    assert len(shapes._builders) <= shapes.MAX_SHAPES
