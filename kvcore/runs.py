"""Reading a run of a stored transaction's entries, in any storage format.

An entry of format v2 decodes only from the restart at or before it (its key is front-coded),
so a run is read from there: its positions from ``extra`` (one read), then the payload bytes
they span (one read), decoded with the ledger's :class:`kvcore.codec.Codec`. The ledger's
reads of entries and the prover's recomputed entries-tree blocks both read this way.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from kvcore.codec import Codec
from kvcore.errors import corrupt_entry
from kvcore.hashing import entry_leaf_hash
from kvcore.tree import block_levels

Reader = Callable[[int, int, int], bytes]
"""(tx_id, start, length) -> up to ``length`` stored bytes (a payload's, or an ``extra``'s)."""

_TABLES: dict[int, struct.Struct] = {}


def positions_table(count: int) -> struct.Struct:
    """The layout of ``count`` stored entry positions (u32 BE), cached per count."""
    table = _TABLES.get(count)
    if table is None:
        if len(_TABLES) >= 1024:
            _TABLES.clear()
        table = _TABLES[count] = struct.Struct(f">{count}I")
    return table


def read_run(
    codec: Codec, read: Reader, read_extra: Reader, tx_id: int, first: int, count: int,
    blob: bytes | None = None, what: bytes = b"<entry run>",
) -> tuple[tuple[int, ...], list[tuple[int, bytes, bytes]]]:
    """(positions of entries ``first .. first+count-1`` then where the last ends, their
    (kind, key, value)) of transaction ``tx_id`` (``count`` >= 1, within the transaction).

    The positions come from ``blob`` (the transaction's whole ``extra``) when given, else are
    read. Damage (a short read, positions out of order, bytes that do not decode) is a
    CorruptionError naming ``what``."""
    r = first - first % codec.restart
    k = first + count - r
    table = positions_table(k + 1)
    if blob is not None:
        if len(blob) < 4 * (first + count + 1):
            raise corrupt_entry(tx_id, what)
        positions = table.unpack_from(blob, 4 * r)
    else:
        raw = read_extra(tx_id, 4 * r, table.size)
        if len(raw) != table.size:
            raise corrupt_entry(tx_id, what)
        positions = table.unpack(raw)
    start = positions[0]
    size = positions[-1] - start
    buf = read(tx_id, start, size) if size > 0 else b""
    if len(buf) != size:
        raise corrupt_entry(tx_id, what)
    try:
        entries = codec.decode_run(buf, positions, r)
    except ValueError:
        raise corrupt_entry(tx_id, what) from None
    if r != first:
        return positions[first - r :], entries[first - r :]
    return positions, entries


def block_of(
    codec: Codec, read: Reader, read_extra: Reader, tx_id: int, n: int, block: int,
    blob: bytes | None = None,
) -> list[list[bytes]]:
    """Levels ``0 .. codec.stored_from-1`` of block ``block`` of the entries tree of
    transaction ``tx_id`` (``n`` entries): the nodes ``extra`` does not store, recomputed from
    the block's ``2^stored_from`` entries (fewer in the last block)."""
    low = codec.stored_from
    first = block << low
    count = min(1 << low, n - first)
    _positions, entries = read_run(codec, read, read_extra, tx_id, first, count, blob, b"<entries tree>")
    leaves = [entry_leaf_hash(kind, key, value) for kind, key, value in entries]
    return block_levels(leaves, low)
