"""Who, why, and anything else, committed with a transaction (issue 18: an audit trail).

A transaction given ``user=``, ``reason=`` or ``meta=`` commits, as its **entry 0**, an entry
under the key ``m\\0`` whose value is the canonical JSON (sorted keys, no spaces) of
``{"meta": {...}, "reason": "...", "user": "..."}`` (members that were not given left out).
The time is the transaction's own: its header's timestamp, set by the ledger at commit (on a
server, the server's clock). The entry is an entry like any other: in the transaction's hash,
provable by an inclusion proof of entry 0; and since only entry 0 may be a metadata entry, a
proof of entry 0 under another key proves that a transaction carries none.
docs/documents.md specifies the encoding.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import orjson

from docstore.errors import CorruptDataError, QueryError

if TYPE_CHECKING:
    import kvcore

META_KEY = b"m\x00"
MAX_USER = 256
MAX_REASON = 4096
MAX_BYTES = 16384
"""The largest encoded metadata entry."""


def encode(user: Any = None, reason: Any = None, meta: Any = None) -> bytes | None:
    """The entry's value for these arguments, None if none is given; QueryError (nothing
    written) if one is not what it must be."""
    if user is None and reason is None and meta is None:
        return None
    out: dict[str, Any] = {}
    if user is not None:
        if not isinstance(user, str) or not 1 <= len(user) <= MAX_USER or not user.isprintable():
            raise QueryError(f"user is a name of 1 to {MAX_USER} printable characters, got {user!r}")
        out["user"] = user
    if reason is not None:
        if not isinstance(reason, str) or not 1 <= len(reason) <= MAX_REASON or not reason.strip():
            raise QueryError(f"reason is a text of 1 to {MAX_REASON} characters, not blank, got {reason!r}")
        out["reason"] = reason
    if meta is not None:
        if not isinstance(meta, dict) or not all(isinstance(k, str) for k in meta):
            raise QueryError(f"meta is a JSON object (a dict with string keys), got {type(meta).__name__}")
        out["meta"] = meta
    try:
        raw = orjson.dumps(out, option=orjson.OPT_SORT_KEYS)
    except TypeError as e:
        raise QueryError(f"meta must hold JSON values only: {e}") from None
    if len(raw) > MAX_BYTES:
        raise QueryError(f"a transaction's metadata is at most {MAX_BYTES} bytes of JSON, got {len(raw)}")
    return raw


def decode(value: bytes) -> dict[str, Any]:
    """The metadata of an entry's value (CorruptDataError if it is not metadata)."""
    try:
        got = orjson.loads(value)
    except orjson.JSONDecodeError:
        got = None
    if not isinstance(got, dict) or not set(got) <= {"user", "reason", "meta"}:
        raise CorruptDataError("a transaction's metadata entry does not decode")
    return got


def of_entry(entry: kvcore.Entry | None) -> dict[str, Any] | None:
    """The metadata a transaction's entry 0 carries (None: it is not a metadata entry)."""
    if entry is None or entry.key != META_KEY:
        return None
    return decode(entry.value)


def of_tx(ledger: kvcore.Ledger, tx_id: int) -> dict[str, Any] | None:
    """The metadata committed with transaction ``tx_id`` (None if it carries none)."""
    first = ledger.entries(tx_id, 0, 1)
    return of_entry(first[0] if first else None)
