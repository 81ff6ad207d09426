"""Flatten a JSON document into ``(RFC 6901 pointer, encoded value)`` pairs, and back.

A document is stored as one key per property. :func:`flatten` walks the document
depth-first in document order (dict insertion order, array index order) and yields
one pair for every scalar leaf and for every empty object/array; :func:`unflatten`
rebuilds the identical document (same key order, same types, bit-identical floats)
from those pairs in that order.

Value encoding (:func:`encode_value` / :func:`decode_value`): the JSON text of the
scalar as ``orjson.dumps`` writes it, except integers outside the 64-bit range
(stored as their decimal text, which is still JSON) and empty containers
(``b"{}"`` / ``b"[]"``).

Objects whose first key is ``"0"``: non-empty containers get no pair of their own,
so ``{"a": {"0": 1}}`` and ``{"a": [1]}`` would both flatten to ``[("/a/0", b"1")]``.
To keep them apart, a container whose first child is ``"0"`` is read as an array
unless an ``(pointer, OBJECT_HEADER)`` pair (``b"{0}"``, which is not JSON, so it can
never be mistaken for a value) comes just before its children. :func:`flatten` emits that
header for every non-root object whose first key is ``"0"``, and only for those; ``b"{}"``
always means an empty object. Headers count towards MAX_DOCUMENT_BYTES.

Accepted documents: only the exact types ``dict`` (with ``str`` keys), ``list``,
``str``, ``int``, ``float``, ``bool`` and ``None``, i.e. what ``json.loads`` /
``orjson.loads`` return. Subclasses (``IntEnum``, ``OrderedDict``, a ``str`` enum,
...) are rejected: they could not be rebuilt as the same type, and ``bool`` must
never be mistaken for ``int``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, cast

import orjson

from docstore.errors import CorruptDataError, InvalidDocumentError, InvalidPointerError

OBJECT_HEADER = b"{0}"
"""Marks an object whose first key is "0" (its children follow); never a value."""

__all__ = [
    "MAX_DEPTH",
    "OBJECT_HEADER",
    "MAX_DOCUMENT_BYTES",
    "decode_value",
    "encode_value",
    "escape",
    "flatten",
    "flatten_raw",
    "join_pointer",
    "split_pointer",
    "unescape",
    "unflatten",
]

#: Largest document accepted: sum over its pairs of UTF-8 pointer bytes + value bytes.
MAX_DOCUMENT_BYTES = 4 * 1024 * 1024
#: Deepest nesting accepted; the root object is level 1.
MAX_DEPTH = 100

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError
_BAD_TILDE = re.compile(r"~(?![01])")
_INTEGER = re.compile(rb"-?(?:0|[1-9][0-9]*)")


# --------------------------------------------------------------------------- pointers


def field_pointer(field: str) -> str:
    """The JSON pointer of a dotted field name (an index's field): ``a.b`` -> ``/a/b``."""
    return "/" + "/".join(escape(t) for t in field.split("."))


def escape(token: str) -> str:
    """Escape one reference token for a JSON pointer: ``~`` -> ``~0``, ``/`` -> ``~1``."""
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def unescape(token: str) -> str:
    """Undo :func:`escape` (``"~01"`` -> ``"~1"``); InvalidPointerError on a bad token."""
    if "/" in token:
        raise InvalidPointerError(f"reference token {token!r} contains an unescaped '/'")
    if "~" in token:
        if _BAD_TILDE.search(token):
            raise InvalidPointerError(f"reference token {token!r} has a '~' not followed by 0 or 1")
        return token.replace("~1", "/").replace("~0", "~")
    return token


def split_pointer(ptr: str) -> list[str]:
    """Split an RFC 6901 pointer into its unescaped tokens (``""`` -> ``[]``, ``"/"`` -> ``[""]``)."""
    if type(ptr) is not str:
        raise InvalidPointerError(f"a JSON pointer must be a str, not {type(ptr).__name__}")
    if not ptr:
        return []
    if ptr[0] != "/":
        raise InvalidPointerError(f"JSON pointer {ptr!r} must be empty or start with '/'")
    parts = ptr.split("/")
    del parts[0]
    if "~" in ptr:
        if _BAD_TILDE.search(ptr):
            raise InvalidPointerError(f"JSON pointer {ptr!r} has a '~' not followed by 0 or 1")
        parts = [p.replace("~1", "/").replace("~0", "~") if "~" in p else p for p in parts]
    return parts


def join_pointer(parts: Iterable[str]) -> str:
    """Build an RFC 6901 pointer from unescaped tokens (inverse of :func:`split_pointer`)."""
    return "".join(["/" + escape(p) for p in parts])


# --------------------------------------------------------------------------- values


def _encode(v: Any, path: str) -> bytes:
    """Encode a scalar or an empty container; InvalidDocumentError naming ``path`` otherwise."""
    t = type(v)
    if t is str:
        try:
            return _dumps(v)
        except TypeError:
            raise InvalidDocumentError("string is not encodable as UTF-8 (lone surrogate)", path) from None
    if t is bool:
        return b"true" if v else b"false"
    if v is None:
        return b"null"
    if t is int:
        try:
            return _dumps(v)
        except TypeError:  # beyond 64 bits: orjson refuses, decimal text is still JSON
            pass
        try:
            return str(v).encode()
        except ValueError:  # above sys.get_int_max_str_digits()
            raise InvalidDocumentError("integer has too many digits to store", path) from None
    if t is float:
        if v - v == 0.0:  # false for NaN and +-inf
            return _dumps(v)
        raise InvalidDocumentError(f"{v!r} is not a JSON number (NaN/Infinity are not allowed)", path)
    if t is dict or t is list:
        if not v:
            return b"{}" if t is dict else b"[]"
        raise InvalidDocumentError("only scalars and empty containers encode as one value", path)
    raise InvalidDocumentError(
        f"unsupported type {t.__name__} (only dict, list, str, int, float, bool and None"
        " are stored, subclasses excluded)",
        path,
    )


def encode_value(v: Any) -> bytes:
    """Encode one scalar (or an empty ``{}`` / ``[]``) as the bytes :func:`flatten` stores."""
    return _encode(v, "")


def decode_value(data: bytes) -> Any:
    """Decode bytes written by :func:`encode_value`; CorruptDataError if they are not such bytes.

    Any JSON scalar text is accepted (so insignificant whitespace, ``1E5`` and the like
    decode too); integer literals always come back as ``int``, whatever their size.
    """
    if type(data) is not bytes:
        data = bytes(data)  # bytearray / memoryview from a storage layer
    try:
        v = _loads(data)
    except _JSONDecodeError:
        # orjson refuses integers beyond double range; they are plain decimal text
        if _INTEGER.fullmatch(data):
            try:
                return int(data)
            except ValueError:  # too many digits for this interpreter
                pass
        raise CorruptDataError(f"not an encoded JSON value: {data[:60]!r}") from None
    t = type(v)
    if t is float:
        # orjson reads integers beyond 64 bits as float; the text has no '.' or exponent
        if b"." in data or b"e" in data or b"E" in data:
            return v
        return int(data)
    if t is dict or t is list:
        if v or data != (b"{}" if t is dict else b"[]"):
            raise CorruptDataError(f"an encoded value must be a scalar, '{{}}' or '[]': {data[:60]!r}")
    return v


# --------------------------------------------------------------------------- documents


def _key_token(k: Any, prefix: str) -> str:
    """Validate and escape an unusual object key (non-ASCII, containing '~' or '/', or not a str)."""
    if type(k) is not str:
        raise InvalidDocumentError(f"object key {k!r} is a {type(k).__name__}, not a str", prefix[:-1])
    try:
        k.encode()
    except UnicodeEncodeError:
        msg = "object key is not encodable as UTF-8 (lone surrogate)"
        raise InvalidDocumentError(msg, prefix + escape(k)) from None
    return escape(k)


_TOKENS: dict[str, bytes] = {}
"""Object keys already checked, mapped to their escaped UTF-8 token (keys repeat across documents)."""
_TOKENS_MAX = 65536
_INDEXES = [str(i).encode() for i in range(4096)]
_TRUE, _FALSE, _NULL, _EMPTY_OBJECT, _EMPTY_ARRAY = b"true", b"false", b"null", b"{}", b"[]"


def _token(k: Any, prefix: bytes) -> bytes:
    """The pointer token of object key ``k`` (validated, escaped, encoded, remembered)."""
    tok = _key_token(k, prefix.decode()).encode()
    if len(_TOKENS) >= _TOKENS_MAX:
        _TOKENS.clear()
    _TOKENS[k] = tok
    return tok


def _leaf(v: Any, p: bytes) -> bytes:
    """Encode a leaf the fast paths of :func:`_walk` did not take (or raise, naming ``p``)."""
    if v is True:
        return _TRUE
    if v is False:
        return _FALSE
    if v is None:
        return _NULL
    return _encode(v, p.decode())


def _walk(node: dict | list, prefix: bytes, depth: int, ptrs: list[bytes], vals: list[bytes]) -> None:
    """Append the pointers (UTF-8) and encoded values of ``node``'s leaves to ``ptrs``/``vals``.

    ``prefix`` is the pointer of ``node`` plus "/". The hot path of every write: one dict
    lookup per key (:data:`_TOKENS`), one ``orjson.dumps`` per scalar, no per-leaf calls.
    """
    add_ptr = ptrs.append
    add_val = vals.append
    dumps = _dumps
    tokens = _TOKENS
    is_dict = type(node) is dict
    if is_dict:
        items: Any = cast(dict, node).items()
    elif len(node) <= len(_INDEXES):
        items = zip(_INDEXES, node)
    else:
        items = ((str(i).encode(), v) for i, v in enumerate(node))
    for tok, v in items:
        if is_dict:
            k = tok
            if type(k) is not str or (tok := tokens.get(k)) is None:
                tok = _token(k, prefix)
        t = type(v)
        if t is str or t is int:
            try:
                e = dumps(v)
            except TypeError:  # a lone surrogate (raises, naming the path) or an int beyond 64 bits
                e = _encode(v, (prefix + tok).decode())
        elif t is float and v - v == 0.0:
            e = dumps(v)
        elif t is dict or t is list:
            p = prefix + tok
            if depth >= MAX_DEPTH:
                raise InvalidDocumentError(
                    f"document is nested deeper than MAX_DEPTH={MAX_DEPTH} levels", p.decode()
                )
            if v:
                if t is dict and "0" in v and next(iter(v)) == "0":
                    add_ptr(p)  # this object is not an array
                    add_val(OBJECT_HEADER)
                _walk(v, p + b"/", depth + 1, ptrs, vals)
                continue
            e = _EMPTY_OBJECT if t is dict else _EMPTY_ARRAY
        else:
            e = _leaf(v, prefix + tok)  # bool, None, or raises
        add_ptr(prefix + tok)
        add_val(e)


def _check_size(ptrs: list[bytes], vals: list[bytes]) -> None:
    """Raise InvalidDocumentError at the pair where the size passes MAX_DOCUMENT_BYTES."""
    size = 0
    for p, e in zip(ptrs, vals):
        size += len(p) + len(e)
        if size > MAX_DOCUMENT_BYTES:
            raise InvalidDocumentError(
                f"document is larger than MAX_DOCUMENT_BYTES={MAX_DOCUMENT_BYTES} (pointer + value bytes)",
                p.decode(),
            )


def flatten_raw(doc: dict) -> tuple[list[bytes], list[bytes]]:
    """:func:`flatten` as two parallel lists, pointers as UTF-8 bytes: what writes store.

    Same checks and errors as :func:`flatten`.
    """
    if type(doc) is not dict:
        raise InvalidDocumentError(f"a document must be a JSON object (dict), not {type(doc).__name__}", "")
    ptrs: list[bytes] = []
    vals: list[bytes] = []
    _walk(doc, b"/", 1, ptrs, vals)
    if sum(map(len, vals)) + sum(map(len, ptrs)) > MAX_DOCUMENT_BYTES:
        _check_size(ptrs, vals)
    return ptrs, vals


def flatten(doc: dict) -> list[tuple[str, bytes]]:
    """Flatten a JSON object into ``(pointer, encoded value)`` pairs in document order.

    Raises InvalidDocumentError (with ``path`` = pointer of the offending value) for a
    root that is not a dict, NaN/Infinity, a non-str key, an unsupported type, a string
    that is not valid UTF-8, or a document over MAX_DOCUMENT_BYTES / MAX_DEPTH.
    """
    ptrs, vals = flatten_raw(doc)
    return [(p.decode(), e) for p, e in zip(ptrs, vals)]


def _corrupt(ptr: Any, why: str) -> CorruptDataError:
    return CorruptDataError(f"pointer {ptr!r}: {why}")


def _attach(node: dict | list, token: str, value: Any, ptr: str) -> None:
    """Add ``value`` as the next child ``token`` of ``node``, checking document order."""
    if type(node) is list:
        if token != str(len(node)):
            raise _corrupt(ptr, f"array index {token!r} out of order (expected {len(node)})")
        node.append(value)
    elif token in node:
        raise _corrupt(ptr, f"member {token!r} already set (duplicate, or not in document order)")
    else:
        cast(dict, node)[token] = value


def _open(parts: list[str], path: list[str], stack: list[Any], ptr: str, pending: bool) -> tuple[Any, str]:
    """Move the open path of :func:`unflatten` to the parent of ``ptr``; return (parent, token).

    Containers the pointer leaves are closed for good; those it enters are created,
    as an array when their first token is "0" and as an object otherwise.
    """
    n = len(parts) - 1  # level of the parent container
    if n < 0:
        raise _corrupt(ptr, "the root must be an object, not a value")
    if n >= MAX_DEPTH:
        raise _corrupt(ptr, f"nested deeper than MAX_DEPTH={MAX_DEPTH}")
    c, m = 0, min(len(path), n)
    while c < m and path[c] == parts[c]:
        c += 1
    if pending and c == len(path) and parts[c] != "0":
        raise _corrupt(ptr, "adds a member to an empty object")
    del path[c:]
    del stack[c + 1 :]
    node = stack[c]
    for j in range(c, n):
        child: Any = [] if parts[j + 1] == "0" else {}
        _attach(node, parts[j], child, ptr)
        path.append(parts[j])
        stack.append(child)
        node = child
    return node, parts[n]


def unflatten(pairs: Iterable[tuple[str, bytes]]) -> dict:
    """Rebuild the document from the pairs :func:`flatten` produced, in that order.

    Raises CorruptDataError for a bad pointer or value, a pointer that is both a
    scalar and a container, a duplicate, a pointer back into a container already
    left, or array indices not arriving as 0, 1, 2... (a container whose first
    token is not "0" is an object, so ``/a/1`` alone is the member "1" of ``/a``).
    """
    root: dict = {}
    path: list[str] = []  # tokens of the containers currently open below the root
    stack: list[Any] = [root]  # stack[i] is the container at path[:i]
    prefix = "/"  # pointer of the innermost open container, plus "/"
    pending = False  # the innermost container is an OBJECT_HEADER object: next child is "0"
    for item in pairs:
        try:
            ptr, enc = item
            rest = ptr[len(prefix) :]
            if ptr.startswith(prefix) and "/" not in rest:  # next child of the innermost container
                token = unescape(rest) if "~" in rest else rest
                node = stack[-1]
                if pending and token != "0":
                    raise _corrupt(ptr, "adds a member to an empty object")
            else:
                node, token = _open(split_pointer(ptr), path, stack, ptr, pending)
                prefix = ptr[: ptr.rfind("/") + 1]
        except (TypeError, ValueError, AttributeError) as exc:  # InvalidPointerError is a ValueError
            raise CorruptDataError(f"bad pair {item!r}: {exc}") from None
        if enc == OBJECT_HEADER:  # an object whose children, starting with "0", follow
            value: Any = {}
            _attach(node, token, value, ptr)
            pending = True
            path.append(token)
            stack.append(value)
            prefix = ptr + "/"
            continue
        try:
            value = decode_value(enc)
        except (CorruptDataError, TypeError) as exc:  # TypeError: not bytes-like
            raise _corrupt(ptr, str(exc)) from None
        _attach(node, token, value, ptr)  # "{}" is a leaf: nothing may be added to it
        pending = False
    return root
