"""Reading a run of a stored transaction's entries, in any storage format.

An entry of format v2 decodes only from the restart at or before it (its key is front-coded),
so a run is read from there: its positions from ``extra`` (one read), then the payload bytes
they span (one read), decoded with the ledger's :class:`kvcore.codec.Codec`. The ledger's
reads of entries and the prover's recomputed entries-tree blocks both read this way.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Callable

from kvcore.codec import Codec
from kvcore.errors import corrupt_entry
from kvcore.hashing import sha256 as _sha
from kvcore.tree import block_levels

Reader = Callable[[int, int, int], bytes]
"""(tx_id, start, length) -> up to ``length`` stored bytes (a payload's, or an ``extra``'s)."""

_TABLES: dict[int, struct.Struct] = {}
_LEAF_HEAD = struct.Struct(">BII")  # an entry's leaf data head (kvcore.hashing.entry_leaf_data)


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

    The positions, from the restart at or before ``first`` on, come from ``blob`` (the
    transaction's whole ``extra``) when given, else are read. The run's bytes are read; when
    the first entry's key shares bytes with the key before it, so are the entries' from the
    restart, whose heads give those bytes (:func:`kvcore.payload_v2.key_prefix`). Damage (a
    short read, positions out of order, bytes that do not decode) is a CorruptionError naming
    ``what``."""
    skip = first % codec.restart
    r = first - skip
    table = positions_table(first + count + 1 - r)
    if blob is not None:
        if len(blob) < 4 * (first + count + 1):
            raise corrupt_entry(tx_id, what)
        positions = table.unpack_from(blob, 4 * r)
    else:
        raw = read_extra(tx_id, 4 * r, table.size)
        if len(raw) != table.size:
            raise corrupt_entry(tx_id, what)
        positions = table.unpack(raw)
    start = positions[skip]
    size = positions[-1] - start
    buf = read(tx_id, start, size) if size > 0 else b""
    if len(buf) != size:
        raise corrupt_entry(tx_id, what)
    run = positions[skip:] if skip else positions
    try:
        prefix = b""
        if skip and (need := codec.shared_at(buf, 0)):
            size = start - positions[0]
            lead = read(tx_id, positions[0], size) if size > 0 else b""
            if len(lead) != size:
                raise corrupt_entry(tx_id, what)
            prefix = codec.key_prefix(lead, positions[: skip + 1], r, need)
        return run, codec.decode_run(buf, run, first, prefix)
    except ValueError:
        raise corrupt_entry(tx_id, what) from None


def block_of(
    codec: Codec, read: Reader, read_extra: Reader, tx_id: int, n: int, block: int,
    blob: bytes | None = None, erased: Mapping[tuple[int, int], bytes] | None = None,
) -> tuple[list[tuple[int, bytes, bytes]], bytes]:
    """The entries (kind, key, value) of block ``block`` of transaction ``tx_id`` (``n``
    entries), and its entries-tree levels ``0 .. codec.stored_from-1`` in level order
    (:func:`kvcore.tree.block_levels`): the nodes ``extra`` does not store, recomputed from the
    block's ``2^stored_from`` entries (fewer in the last block)."""
    low = codec.stored_from
    first = block << low
    _positions, entries = read_run(
        codec, read, read_extra, tx_id, first, min(1 << low, n - first), blob, b"<entries tree>"
    )
    sha, pack = _sha, _LEAF_HEAD.pack  # kvcore.hashing.entry_leaf_hash, inlined
    leaves = [sha(b"\x00" + pack(kind, len(key), len(value)) + key + value).digest() for kind, key, value in entries]
    if erased:  # an erased entry's bytes are zeros: its leaf is the one its erasure committed
        for i in range(len(leaves)):
            leaf = erased.get((tx_id, first + i))
            if leaf is not None:
                leaves[i] = leaf
    return entries, block_levels(leaves, low)
