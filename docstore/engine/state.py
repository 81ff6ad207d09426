"""Documents as the engine handles them: rebuilt from their ledger entries, compared exactly,
copied and encoded for its bounded cache. (The derived state itself is on disk:
:mod:`docstore.engine.store`.)"""

from __future__ import annotations

import marshal
from collections.abc import Mapping, Sequence
from operator import itemgetter
from typing import Any

import orjson

import kvcore

from docstore.documents import erasure, shapes
from docstore.documents.flatten import flatten_raw, unflatten
from docstore.documents.records import SALT_BYTES, Header, parse_property_key
from docstore.errors import CorruptDataError, DocstoreError


def encode_doc(doc: dict) -> bytes | tuple[bytes]:
    """Compact, exact encoding of a document for the cache (orjson; marshal if it cannot)."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # integers beyond 64 bits
        return (marshal.dumps(doc),)


def same_json(a: Any, b: Any) -> bool:
    """Exact equality of two JSON values, unlike ``==``: ``true``, ``1`` and ``1.0`` differ, and
    so do key orders and ``0.0``/``-0.0``."""
    if type(a) is dict and type(b) is dict:  # as they are: a document may be nested to the limit
        return flatten_raw(a) == flatten_raw(b)
    return type(a) is type(b) and flatten_raw({"": a}) == flatten_raw({"": b})


def copy_doc(doc: dict) -> dict:
    """A deep copy of a JSON document (fast: a marshal round trip)."""
    return marshal.loads(marshal.dumps(doc))


def decode_doc(raw: bytes | tuple[bytes]) -> dict:
    if isinstance(raw, bytes):
        return orjson.loads(raw)
    return marshal.loads(raw[0])


def erased_ordinals(ledger: kvcore.Ledger, tx_id: int, first: int, n: int) -> dict[int, int]:
    """Of the ``n`` properties from entry ``first`` of transaction ``tx_id``, the erased ones:
    ordinal -> erasing transaction (empty, and cheap, when none is)."""
    marks = ledger.erased_by(tx_id, first, n)
    return {i - first: by for i, by in marks.items()} if marks else marks


def doc_from_entries(header: Header, entries: list[kvcore.Entry], prefix: bytes) -> dict:
    """Rebuild a document from its header and property entries (checking they belong)."""
    return doc_from_items(header, [(e.key, e.value) for e in entries], prefix)


def doc_from_items(
    header: Header, entries: Sequence[tuple[bytes, bytes | None]], prefix: bytes, erased: Mapping[int, int] | None = None
) -> dict:
    """Rebuild a document from its header and its property entries as (key, value) pairs,
    checking they belong to it (CorruptDataError otherwise). ``erased``: the ordinals of
    erased properties (their values are zeros) -> the erasing transaction, each shown as
    its marker (docstore.documents.erasure)."""
    if erased:
        return _with_markers(header, entries, prefix, erased)
    if len(entries) != header.n:
        raise CorruptDataError(
            f"document {header.collection}/{header.id} revision {header.revision}: "
            f"{len(entries)} properties found, the header says {header.n}"
        )
    cut = len(prefix) + 8
    if entries:
        doc = _fast(header, entries, prefix, cut)
        if doc is not None:
            return doc
    pairs = []
    for i, (key, value) in enumerate(entries):
        if not key.startswith(prefix) or key[len(prefix) : cut] != _rev_ord(header.revision, i):
            parse_property_key(key)  # raises CorruptDataError for foreign keys
            raise CorruptDataError(
                f"document {header.collection}/{header.id}: entry {i} belongs to another revision"
            )
        if value is None or len(value) <= SALT_BYTES:
            raise CorruptDataError(f"document {header.collection}/{header.id}: property {i} is short")
        try:
            pointer = key[cut:].decode()
        except UnicodeDecodeError:
            raise CorruptDataError(
                f"document {header.collection}/{header.id}: property {i} has a damaged pointer"
            ) from None
        pairs.append((pointer, value[SALT_BYTES:]))
    try:
        return unflatten(pairs)
    except DocstoreError as e:  # a value or pointer that does not decode: damage on disk
        raise CorruptDataError(f"document {header.collection}/{header.id} revision {header.revision}: {e}") from None


def _with_markers(
    header: Header, entries: Sequence[tuple[bytes, bytes | None]], prefix: bytes, erased: Mapping[int, int]
) -> dict:
    cut = len(prefix) + 8
    placeholder = bytes(SALT_BYTES) + b"null"
    doc = doc_from_items(header, [(k, placeholder) if i in erased else (k, v) for i, (k, v) in enumerate(entries)], prefix)
    try:
        return erasure.set_markers(doc, {entries[i][0][cut:].decode(): by for i, by in erased.items() if i < len(entries)})
    except (UnicodeDecodeError, DocstoreError, LookupError, ValueError) as e:
        raise CorruptDataError(f"document {header.collection}/{header.id}: an erased property's pointer: {e}") from None


def _fast(header: Header, entries: Sequence[tuple[bytes, bytes | None]], prefix: bytes, cut: int) -> dict | None:
    """The document by its compiled shape (:mod:`docstore.documents.shapes`), if every entry
    is a property of this revision in order and the shape applies; else None (the caller
    checks entry by entry and says what is wrong). C-level maps: this is every read's path."""
    keys, values = zip(*entries)
    base = prefix + header.revision.to_bytes(4, "big")
    lb = len(base)
    if set(map(itemgetter(slice(None, lb)), keys)) != {base} or list(
        map(itemgetter(slice(lb, cut)), keys)
    ) != _ordinals(len(keys)):
        return None
    try:
        if min(map(len, values)) <= SALT_BYTES:
            return None
    except TypeError:  # a tombstone (None) among them
        return None
    return shapes.rebuild(
        tuple(map(itemgetter(slice(cut, None)), keys)), list(map(itemgetter(slice(SALT_BYTES, None)), values))
    )


_ORDINALS: list[bytes] = []


def _ordinals(n: int) -> list[bytes]:
    """The 4-byte ordinals 0..n-1 (the first ones kept: most documents are small)."""
    if n <= len(_ORDINALS):
        return _ORDINALS[:n]
    if n <= 4096:
        _ORDINALS.extend(i.to_bytes(4, "big") for i in range(len(_ORDINALS), n))
        return _ORDINALS[:n]
    return [i.to_bytes(4, "big") for i in range(n)]


def _rev_ord(rev: int, i: int) -> bytes:
    return rev.to_bytes(4, "big") + i.to_bytes(4, "big")


