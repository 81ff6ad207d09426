"""The ledger storage formats: how each lays out a transaction's payload and ``extra``.

A ledger is of one format, named by its storage (``FORMAT``'s version, docs/storage.md); every
reader of stored bytes takes the :class:`Codec` of that format (:func:`codec_for`). Both
formats hash alike (kvcore.hashing), so a ledger's hashes, roots and proofs do not depend on
its format.

- version 1 (:mod:`kvcore.payload`): fixed 9-byte entry heads, whole keys, every
  entries-tree level stored;
- version 2 (:mod:`kvcore.payload_v2`): front-coded keys with varint heads, restarting every
  16 entries; the entries-tree levels from 4 up stored, the lower ones recomputed from the
  payload (:mod:`kvcore.runs`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from kvcore import payload, payload_v2
from kvcore.hashing import HASH_SIZE

Encoder = Callable[
    [int, int, Sequence[tuple[bytes, bytes | None]], "payload.StateRoot | None"], tuple[bytes, bytes, bytes, list[int]]
]
RunDecoder = Callable[[bytes, Sequence[int], int, bytes], list[tuple[int, bytes, bytes]]]
PrefixResolver = Callable[[bytes, Sequence[int], int, int], bytes]


@dataclass(frozen=True)
class Codec:
    """One storage format's encoder and decoders (each raises ValueError for bytes that do
    not decode)."""

    version: int
    restart: int
    """An entry decodes from the entry at the multiple of this at or before it."""
    stored_from: int
    """The lowest entries-tree level stored in ``extra`` (0: all of them)."""
    encode: Encoder
    """(tx_id, timestamp_ns, writes, state_root) -> (payload, extra, header, positions)."""
    decode_run: RunDecoder
    """(bytes, positions, index of the first, the bytes its key shares with the key before it)
    -> (kind, key, value) of a run."""
    shared_at: Callable[[bytes, int], int]
    """(bytes, offset) -> how many bytes the key of the entry there shares with the one before."""
    key_prefix: PrefixResolver
    """(bytes, positions, index of the first (a restart), n) -> the first n bytes of the key of
    the last of those entries."""
    iter_entries: Callable[[bytes], Iterator[tuple[int, int, bytes, bytes]]]
    """(position, kind, key, value) of each entry of a whole payload."""
    rebuild: Callable[..., tuple[list[tuple[int, int, bytes, bytes]], bytes, bytes]]
    """A whole payload -> (its entries as ``iter_entries``, its ``extra``, its entries root)."""

    def stored_nodes(self, n: int) -> int:
        """Entries-tree nodes ``extra`` holds for ``n`` entries."""
        return sum(n >> lv for lv in range(self.stored_from, n.bit_length()))

    def extra_size(self, n: int) -> int:
        """Bytes of ``extra`` for ``n`` entries: positions, then nodes."""
        return 4 * (n + 1) + self.stored_nodes(n) * HASH_SIZE


def _whole(_buf: bytes, _p: int) -> int:
    return 0  # format 1 stores every key whole


def _no_prefix(_buf: bytes, _positions: Sequence[int], _index: int, _need: int) -> bytes:
    return b""


V1 = Codec(
    1, 1, 0, payload.encode, payload.decode_run, _whole, _no_prefix, payload.iter_entries,
    payload.rebuild,
)
V2 = Codec(
    2, payload_v2.RESTART, payload_v2.STORED_FROM, payload_v2.encode, payload_v2.decode_run,
    payload_v2.shared_at, payload_v2.key_prefix, payload_v2.iter_entries, payload_v2.rebuild,
)
CODECS = {1: V1, 2: V2}
LATEST = V2
"""The format every new ledger is written in."""


def codec_for(version: int) -> Codec:
    """The codec of format ``version`` (a storage names its ledger's)."""
    return CODECS[version]
