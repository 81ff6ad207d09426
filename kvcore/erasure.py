"""Erasure: destroying committed values while every hash, tree, proof and audit still holds
(issue 18; the layout is in docs/storage.md, "Erasure").

An erasure is committed as a transaction whose entry under :data:`ERASED_KEY` lists, for each
erased entry, ``(tx_id, index, leaf hash)``: the leaf hashes are in the ledger before anything
is destroyed (write-ahead). Then each listed entry's value bytes are overwritten with zeros in
place (same length; the record's checksum recomputed; made durable). From then on, wherever
kvcore would hash an erased entry's bytes (a block of the entries tree, the audit's rebuild),
it takes the committed leaf instead. Opening a ledger completes an erasure that a crash
interrupted (an entry listed but not zeroed yet is zeroed then).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

ERASED_KEY = b"\x00kvcore\x00erased"
"""The key of erasure records (one revision per erasure; kvcore's own: keys from 0x00 are
reserved)."""
_ITEM = struct.Struct(">QI32s")


def encode(items: Iterable[tuple[int, int, bytes]]) -> bytes:
    """An erasure record's value: ``(tx_id, index, leaf)`` each, in order."""
    return b"".join(_ITEM.pack(tx, index, leaf) for tx, index, leaf in items)


def decode(value: bytes) -> list[tuple[int, int, bytes]]:
    """The ``(tx_id, index, leaf)`` items of an erasure record (ValueError if malformed)."""
    if len(value) % _ITEM.size:
        raise ValueError("an erasure record's length is not a whole number of items")
    return [_ITEM.unpack_from(value, i) for i in range(0, len(value), _ITEM.size)]
