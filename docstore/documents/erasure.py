"""Erased properties as documents show them, and docstore's erasure record (docs/documents.md,
"Erasure").

An erasure destroys the stored values (and salts) of some properties of a document, in every
revision, keeping their leaf hashes (kvcore.erasure): a read shows each erased property as the
marker ``{"$erased": N}``, ``N`` the transaction that erased it. Field names starting with ``$``
cannot be stored, so a marker is never a document's own value.

The erasing transaction also holds docstore's record, key ``x\\0<collection>\\0<id>``, value
canonical JSON ``{"v": 1, "pointers": [...] | null, "entries": n}``: which pointers were asked
for (null: the whole document) and how many stored properties were erased. Who erased and why
are the transaction's metadata (entry 0, docstore.documents.txmeta).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from docstore.documents.flatten import split_pointer, unflatten
from docstore.errors import CorruptDataError, ErasureRefusedError, InvalidPointerError

MARKER = "$erased"
RECORD_VERSION = 1


def marker(tx_id: int) -> dict[str, int]:
    """What a read shows in place of a property erased by transaction ``tx_id``."""
    return {MARKER: tx_id}


def is_marker(value: Any) -> bool:
    return type(value) is dict and len(value) == 1 and type(value.get(MARKER)) is int


def record_key(coll: str, doc_id: str) -> bytes:
    return b"x\x00" + coll.encode() + b"\x00" + doc_id.encode()


def record_prefix(coll: str) -> bytes:
    return b"x\x00" + coll.encode() + b"\x00"


def encode_record(pointers: list[str] | None, entries: int) -> bytes:
    return orjson.dumps({"v": RECORD_VERSION, "pointers": pointers, "entries": entries})


def decode_record(raw: bytes) -> dict[str, Any]:
    try:
        d = orjson.loads(raw)
        if not isinstance(d, dict) or d.get("v") != RECORD_VERSION or set(d) != {"v", "pointers", "entries"}:
            raise ValueError
        if d["pointers"] is not None and not (
            isinstance(d["pointers"], list) and all(isinstance(p, str) for p in d["pointers"])
        ):
            raise ValueError
        if type(d["entries"]) is not int or d["entries"] < 0:
            raise ValueError
        return d
    except ValueError:
        raise CorruptDataError(f"not an erasure record: {raw[:120]!r}") from None


def check_pointers(pointers: object) -> list[str] | None:
    """The pointers of an erasure request (None: the whole document), checked."""
    if pointers is None:
        return None
    if isinstance(pointers, str) or not isinstance(pointers, (list, tuple)) or not pointers:
        raise InvalidPointerError("pointers: a non-empty list of JSON pointers (or none: the whole document)")
    out: list[str] = []
    for p in pointers:
        if not isinstance(p, str) or not split_pointer(p):
            raise InvalidPointerError(f"cannot erase {p!r}: give the JSON pointer of a property (e.g. '/name')")
        if p == "/_id" or p.startswith("/_id/"):
            raise ErasureRefusedError("the _id cannot be erased: it is the document's key in the ledger")
        out.append(p)
    return sorted(set(out))


def covers(pointers: list[str] | None, pointer: str) -> bool:
    """Whether an erasure of ``pointers`` (None: the whole document but its ``_id``) erases the
    stored property at ``pointer``."""
    if pointers is None:
        return pointer != "/_id"
    return any(pointer == p or pointer.startswith(p + "/") for p in pointers)


def set_markers(doc: dict, erased: Mapping[str, int]) -> dict:
    """``doc`` (changed in place) with the marker of its erasing transaction at each pointer of
    ``erased`` (pointers of scalar properties the document holds)."""
    for pointer, tx_id in erased.items():
        tokens = split_pointer(pointer)
        node: Any = doc
        for t in tokens[:-1]:
            node = node[int(t)] if type(node) is list else node[t]
        last = tokens[-1]
        if type(node) is list:
            node[int(last)] = marker(tx_id)
        else:
            node[last] = marker(tx_id)
    return doc


def rebuild(pairs: list[tuple[str, bytes]], marks: Mapping[str, int]) -> dict:
    """The document of stored ``(pointer, encoded value)`` pairs, those at the pointers of
    ``marks`` erased (their values unknown): each shown as its erasing transaction's marker."""
    doc = unflatten([(p, b"null" if p in marks else e) for p, e in pairs])
    return set_markers(doc, marks) if marks else doc
