"""How documents become ledger entries (format v1; specified in docs/documents.md).

Keys (bytes; ``\\0`` separates parts, which never contain NUL):

- collection definition: ``c\\0<collection>``
- document header:       ``d\\0<collection>\\0<id>``
- property:              ``p\\0<collection>\\0<id>\\0<revision u32><ordinal u32><pointer>``
- unique-index claim:    ``u\\0<collection>\\0<field>\\0<index key>``

A revision of a document is one header entry followed, in the same transaction, by its ``n``
properties in document order (entries ``o .. o+n`` of the transaction). A property's value is
``salt (16 random bytes) || encoded JSON scalar``. One kvcore multi-entry proof of that run
proves the whole document complete; a proof of the header and one property proves that
property alone.
"""

from __future__ import annotations

import os
import struct
import threading
from typing import NamedTuple

import orjson

from kvcore.ledger import MAX_KEY_BYTES

from docstore.documents.flatten import field_pointer
from docstore.errors import CorruptDataError, InvalidDocumentError

SALT_BYTES = 16
HEADER_VERSION = 1
PROPERTY_PREFIX = b"p\x00"
"""Every property key starts with this; kvcore keeps no key-index rows for it (docstore reads a
property through its document's header, by position in the transaction)."""
_U32x2 = struct.Struct(">II")


def collection_key(coll: str) -> bytes:
    return b"c\x00" + coll.encode()


def header_key(coll: str, doc_id: str) -> bytes:
    return b"d\x00" + coll.encode() + b"\x00" + doc_id.encode()


def header_prefix(coll: str) -> bytes:
    return b"d\x00" + coll.encode() + b"\x00"


def property_prefix(coll: str, doc_id: str) -> bytes:
    return PROPERTY_PREFIX + coll.encode() + b"\x00" + doc_id.encode() + b"\x00"


def property_key(prefix: bytes, revision: int, ordinal: int, pointer: str) -> bytes:
    return prefix + _U32x2.pack(revision, ordinal) + pointer.encode()


def parse_property_key(key: bytes) -> tuple[str, str, int, int, str]:
    """(collection, id, revision, ordinal, pointer) of a property key."""
    try:
        if not key.startswith(b"p\x00"):
            raise ValueError
        coll_end = key.index(b"\x00", 2)
        id_end = key.index(b"\x00", coll_end + 1)
        rev, ordinal = _U32x2.unpack_from(key, id_end + 1)
        return (
            key[2:coll_end].decode(),
            key[coll_end + 1 : id_end].decode(),
            rev,
            ordinal,
            key[id_end + 9 :].decode(),
        )
    except (ValueError, struct.error, UnicodeDecodeError):
        raise CorruptDataError(f"not a property key: {key[:80]!r}") from None


REQUEST_PREFIX = b"r\x00"


def request_key(idempotency_key: str) -> bytes:
    """The ledger key recording a write made with ``idempotency_key`` (docstore.transactions.requests)."""
    return REQUEST_PREFIX + idempotency_key.encode()


def unique_key(coll: str, field: str, index_key: bytes) -> bytes:
    key = b"u\x00" + coll.encode() + b"\x00" + field.encode() + b"\x00" + index_key
    if len(key) > MAX_KEY_BYTES:  # a claim is a ledger key: say which value is too long
        raise InvalidDocumentError(
            f"the value of unique field {field!r} is too long for its unique index ({len(key)} bytes "
            f"as a ledger key; at most {MAX_KEY_BYTES})",
            field_pointer(field),
        )
    return key


class Header(NamedTuple):
    """A document revision's header: what the ledger commits to for the whole document."""

    collection: str
    id: str
    revision: int
    n: int
    deleted: bool

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "v": HEADER_VERSION,
                "c": self.collection,
                "id": self.id,
                "rev": self.revision,
                "n": self.n,
                "del": self.deleted,
            }
        )

    @classmethod
    def decode(cls, raw: bytes) -> Header:  # noqa: D102
        try:
            d = orjson.loads(raw)
            if d["v"] != HEADER_VERSION:
                raise ValueError(f"header version {d['v']!r}")
            if set(d) != {"v", "c", "id", "rev", "n", "del"}:
                raise ValueError("fields")
            h = cls(d["c"], d["id"], d["rev"], d["n"], d["del"])
            ok = (
                isinstance(h.collection, str)
                and isinstance(h.id, str)
                and type(h.revision) is int
                and type(h.n) is int
                and type(h.deleted) is bool
                and h.revision >= 1
                and h.n >= 0
                and (h.n == 0 or not h.deleted)
            )
            if not ok:
                raise ValueError("field types")
            return h
        except (ValueError, KeyError, TypeError) as e:
            raise CorruptDataError(f"not a document header ({e}): {raw[:120]!r}") from None


_ORDINALS: list[bytes] = [i.to_bytes(4, "big") for i in range(1024)]


def _ordinals(n: int) -> list[bytes]:
    """At least ``n`` ordinals as 4 big-endian bytes (a new list when it grows: thread-safe)."""
    global _ORDINALS
    if n > len(_ORDINALS):
        _ORDINALS = [i.to_bytes(4, "big") for i in range(max(n, 2 * len(_ORDINALS)))]
    return _ORDINALS


def property_entries(
    coll: str, doc_id: str, revision: int, pointers: list[bytes], values: list[bytes]
) -> list[tuple[bytes, bytes]]:
    """The salted property entries of one revision, in document order, from the UTF-8
    pointers and encoded values of :func:`docstore.documents.flatten.flatten_raw`."""
    base = property_prefix(coll, doc_id) + revision.to_bytes(4, "big")
    n = len(pointers)
    salts, start = _random_bytes(SALT_BYTES * n)
    keys = [base + o + p for o, p in zip(_ordinals(n), pointers)]
    ends = range(start + SALT_BYTES, start + SALT_BYTES * (n + 1), SALT_BYTES)
    salted = [salts[end - SALT_BYTES : end] + v for end, v in zip(ends, values)]
    return list(zip(keys, salted))


class _RandomPool(threading.local):
    """Bytes from ``os.urandom`` drawn 64 KiB at a time, each byte handed out once: one system
    call per few hundred documents instead of one per document. Per thread; emptied in a forked
    child, so that parent and child never hand out the same salt."""

    buf = b""
    used = 0


_POOL = _RandomPool()
_POOL_BYTES = 64 * 1024


def _random_bytes(n: int) -> tuple[bytes, int]:
    """``(buffer, start)``: ``buffer[start:start + n]`` are ``n`` fresh random bytes."""
    pool = _POOL
    start = pool.used
    if start + n > len(pool.buf):
        pool.buf = os.urandom(max(_POOL_BYTES, n))
        start = 0
    pool.used = start + n
    return pool.buf, start


def _forget_pool() -> None:
    global _POOL
    _POOL = _RandomPool()


os.register_at_fork(after_in_child=_forget_pool)


def split_property_value(value: bytes) -> bytes:
    """The encoded JSON scalar of a stored property value (its salt removed)."""
    if len(value) <= SALT_BYTES:
        raise CorruptDataError("property value is shorter than its salt")
    return value[SALT_BYTES:]


def describe_key(key: bytes) -> str:
    """A readable name for a ledger key of docstore's layout (for error messages)."""
    try:
        parts = key.split(b"\x00")
        kind = parts[0]
        if kind == b"d" and len(parts) == 3 and not parts[2]:
            return f"the documents of collection {parts[1].decode()!r} (a query read them)"
        if kind == b"d" and len(parts) == 3:
            return f"document {parts[2].decode()!r} of collection {parts[1].decode()!r}"
        if kind == b"c":
            return f"the definition of collection {parts[1].decode()!r}"
        if kind == b"u" and len(parts) >= 3:
            return f"a value of unique index {parts[1].decode()}.{parts[2].decode()}"
        if kind == b"r" and len(parts) >= 2:
            return f"idempotency key {key[len(REQUEST_PREFIX):].decode()!r} (another attempt of this write committed first)"
        if kind == b"p" and len(parts) >= 3:
            return f"document {parts[2].decode()!r} of collection {parts[1].decode()!r}"
    except UnicodeDecodeError:
        pass
    return f"ledger key {key[:64]!r}"
