"""Document ids and collection names: validation and generation."""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Any

from docstore.errors import InvalidDocumentError, QueryError

MAX_ID_BYTES = 512
_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}\Z")
_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def check_collection_name(name: object) -> str:
    """Collection names: 1-64 of letters, digits, ``_ . -``, not starting with ``.`` or ``-``."""
    if not isinstance(name, str) or not _NAME.match(name):
        raise QueryError(
            f"invalid collection name {name!r}: use 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter, digit or '_'"
        )
    return name


def check_id(doc_id: object) -> str:
    """Ids are non-empty strings of at most 512 UTF-8 bytes without NUL characters."""
    if type(doc_id) is str and doc_id.isascii() and 0 < len(doc_id) <= MAX_ID_BYTES and "\x00" not in doc_id:
        return doc_id  # the common case: ASCII, so one byte a character
    if not isinstance(doc_id, str):
        raise InvalidDocumentError(f"_id must be a string, got {type(doc_id).__name__}", "/_id")
    if not doc_id:
        raise InvalidDocumentError("_id must not be empty", "/_id")
    if "\x00" in doc_id:
        raise InvalidDocumentError("_id must not contain NUL characters", "/_id")
    try:
        n = len(doc_id.encode())
    except UnicodeEncodeError:
        raise InvalidDocumentError("_id is not encodable as UTF-8", "/_id") from None
    if n > MAX_ID_BYTES:
        raise InvalidDocumentError(f"_id of {n} bytes exceeds {MAX_ID_BYTES} bytes", "/_id")
    return doc_id


class IdGenerator:
    """26-character ids (ULID layout, Crockford base32): 48-bit milliseconds, 80 random bits.

    Ids sort by creation time; within one millisecond the random part is incremented, so ids
    from one process are strictly increasing. URL-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_rand = 0

    def __call__(self) -> str:
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms <= self._last_ms:
                ms = self._last_ms
                rand = self._last_rand + 1
            else:
                rand = int.from_bytes(os.urandom(10), "big")
            self._last_ms, self._last_rand = ms, rand
        value = (ms << 80) | (rand & ((1 << 80) - 1))
        out = []
        for _ in range(26):
            out.append(_CROCKFORD[value & 31])
            value >>= 5
        return "".join(reversed(out))


new_id = IdGenerator()


def in_groups(items: Iterable[Any], size: Any) -> Iterator[list[Any]]:
    """``items`` in lists of ``size`` (the last may be shorter), read lazily; ``size`` must be
    a positive integer (QueryError)."""
    if type(size) is not int or size < 1:
        raise QueryError(f"per_transaction must be a positive integer, got {size!r}")
    group: list[Any] = []
    for item in items:
        group.append(item)
        if len(group) >= size:
            yield group
            group = []
    if group:
        yield group
