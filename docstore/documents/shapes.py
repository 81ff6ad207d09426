"""Rebuilding documents fast from their properties, by shape.

A document's *shape* is the sequence of its property pointers. Documents of a collection
mostly share a few shapes, so the first document of a shape is rebuilt by
:func:`docstore.documents.flatten.unflatten` (which checks everything), and its shape is then
compiled into a function that builds the nested dicts and lists straight from the list of
decoded values; the values of a document are decoded by one ``orjson.loads`` of
``[v1,v2,...]``.

:func:`rebuild` gives the same document as ``unflatten`` would, or None when it cannot vouch
for that (a value that is not exactly one JSON scalar, ``{}`` or ``[]``; an integer beyond 64
bits; an object header; a shape ``unflatten`` refuses): the caller then takes the slow path,
which decodes or raises as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import orjson

from docstore.documents.flatten import MAX_DEPTH, unflatten
from docstore.errors import DocstoreError

MAX_SHAPES = 1024
"""Compiled shapes kept (all are dropped when more are seen: the cache stays bounded)."""
MAX_SLOTS = 4096
"""Documents with more properties than this are rebuilt by ``unflatten`` (one function each
would be large; they are rare)."""
_MAX_NESTING = min(MAX_DEPTH, 64)  # Python's parser accepts about 200 nested brackets

Builder = Callable[[list[Any]], dict]
_builders: dict[tuple[bytes, ...], Builder | None] = {}
_lock = threading.Lock()
_PLAIN = frozenset((str, int, bool, type(None)))
_PLAIN_AND_FLOAT = _PLAIN | {float}
_INT_RANGE_LOW = -9.2e18  # orjson decodes integer literals in [-2**63, 2**64) as int
_INT_RANGE_HIGH = 9.2e18
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def rebuild(pointers: tuple[bytes, ...], values: list[bytes]) -> dict | None:
    """The document whose properties are ``pointers`` (UTF-8, in document order) with encoded
    ``values``; None if the caller must use ``unflatten`` instead."""
    try:
        builder = _builders[pointers]
    except KeyError:
        builder = _learn(pointers)
    if builder is None:
        return None
    try:
        decoded = _loads(b"[" + b",".join(values) + b"]")
    except _JSONDecodeError:
        return None
    if len(decoded) != len(values):  # a value that is not exactly one JSON value
        return None
    types = set(map(type, decoded))
    if not types <= _PLAIN and not _exact(decoded, values, types):
        return None
    return builder(decoded)


def _exact(decoded: list[Any], values: list[bytes], types: set[type]) -> bool:
    """Whether floats and containers decoded as ``decode_value`` would decode them: a float
    from a literal with a fraction or exponent (orjson reads an integer beyond 64 bits as a
    float), a container only from ``{}`` or ``[]``."""
    if types <= _PLAIN_AND_FLOAT:  # the common case: a float below 2**63 in magnitude cannot
        floats = [v for v in decoded if type(v) is float]  # come from an integer literal
        if _INT_RANGE_LOW < min(floats) and max(floats) < _INT_RANGE_HIGH:
            return True
    if not types <= _PLAIN | {float, dict, list}:
        return False
    for v, raw in zip(decoded, values):
        t = type(v)
        if t is float:
            if b"." not in raw and b"e" not in raw and b"E" not in raw:
                return False
        elif t is dict or t is list:
            if v or raw.strip() != (b"{}" if t is dict else b"[]"):
                return False
    return True


def _learn(pointers: tuple[bytes, ...]) -> Builder | None:
    builder = _compile(pointers)
    with _lock:
        if len(_builders) >= MAX_SHAPES:
            _builders.clear()
        _builders[pointers] = builder
    return builder


def _compile(pointers: tuple[bytes, ...]) -> Builder | None:
    """A function building the documents of this shape from their decoded values, or None."""
    if not pointers or len(pointers) > MAX_SLOTS:
        return None
    try:
        skeleton = unflatten([(p.decode(), b"0") for p in pointers])
    except (DocstoreError, UnicodeDecodeError):
        return None
    slots = [0]
    try:
        body = _source(skeleton, slots, 0)
    except _TooDeep:
        return None
    if slots[0] != len(pointers):  # every value is one leaf, in document order
        return None
    code = f"def build(v):\n    return {body}\n"
    scope: dict[str, Any] = {}
    exec(compile(code, "<docstore document shape>", "exec"), scope)  # noqa: S102 - literals are repr()s
    built: Builder = scope["build"]
    return built


class _TooDeep(Exception):
    pass


def _source(node: Any, slots: list[int], depth: int) -> str:
    """Python source of an expression building ``node`` with its leaves taken from ``v`` in
    document order (a dict keeps its members in insertion order, which is document order)."""
    if depth > _MAX_NESTING:
        raise _TooDeep
    if type(node) is dict:
        return "{" + ", ".join(f"{k!r}: {_source(c, slots, depth + 1)}" for k, c in node.items()) + "}"
    if type(node) is list:
        return "[" + ", ".join(_source(c, slots, depth + 1) for c in node) + "]"
    i = slots[0]
    slots[0] = i + 1
    return f"v[{i}]"
