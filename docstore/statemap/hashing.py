"""The state map's keys, values and hashes, byte for byte (docs/proofs.md, "The state map").

Pure functions, shared by the writer and the verifier. ``H`` is SHA-256; integers are
big-endian.

- a key's **level**: the number of leading zero 4-bit digits of ``H(0x03 || key)`` (a key has
  level >= L with probability 16**-L);
- a **leaf item** ``(key, value)`` hashes to ``H(0x00 || 0x00 || u32 len(key) || key || value)``;
- an **inner item** ``(sep, child)`` (``sep`` the last key under the child, ``child`` the child
  node's hash) hashes to ``H(0x00 || 0x01 || u32 len(sep) || sep || child)``;
- a **node** of level ``L`` with ``m`` items hashes to ``H(0x02 || u8 L || u32 m || MTH)``,
  MTH being the RFC 9162 tree hash over its items' hashes (as leaf hashes; inner nodes
  ``H(0x01 || left || right)``); the empty map is the node of level 0 with no items.

The tree: the keys in byte order are cut into level-0 nodes after every key of level >= 1,
after the 32nd item since the last cut (``NODE_MAX``: no node holds more), and after the last
key; each node becomes an inner item of level 1 (its last key, its hash), cut after every item
whose key has level >= 2 or after 32 items likewise; and so on, until a level has a single
node: the root. Cutting is a left-to-right scan of the sorted keys, so the same keys and
values always give the same tree and root (history independence).
"""

from __future__ import annotations

import hashlib
import struct

from kvcore.hashing import sha256 as _sha
from kvcore.merkle import root_of

HASH_SIZE = 32
MAP_VERSION = 2
"""1: nodes cut at key levels only (session 6, never released); 2: also after NODE_MAX items."""
NODE_MAX = 32
"""No node holds more items: a run of keys without a boundary is cut every 32 items from its
start (node sizes are geometric, mean 16; the cap bounds a proof's path in a node at 5 hashes
and the cost of rewriting the node a changed key falls in)."""
_U32 = struct.Struct(">I")
_LOC = struct.Struct(">QI")

MAX_ID_IN_DOC_KEY = 300
MAX_ID_IN_INDEX_KEY = 100
MAX_FIELD_IN_KEY = 64
MAX_VALUE_IN_KEY = 200
"""An index key keeps the first 200 bytes of a value's index encoding (as the derived
state's index does): a range over longer values widens to the cut, and every candidate is
checked against the filter anyway."""


def key_level(key: bytes) -> int:
    """The key's level: leading zero 4-bit digits of H(0x03 || key)."""
    v = int.from_bytes(_sha(b"\x03" + key).digest()[:8], "big")
    return (64 - v.bit_length()) >> 2 if v else 16


def leaf_item_hash(key: bytes, value: bytes) -> bytes:
    return _sha(b"\x00\x00" + _U32.pack(len(key)) + key + value).digest()


def inner_item_hash(sep: bytes, child: bytes) -> bytes:
    return _sha(b"\x00\x01" + _U32.pack(len(sep)) + sep + child).digest()


def node_hash(level: int, m: int, mth: bytes) -> bytes:
    return _sha(b"\x02" + bytes((level,)) + _U32.pack(m) + mth).digest()


def node_hash_of(level: int, item_hashes: list[bytes]) -> bytes:
    return node_hash(level, len(item_hashes), root_of(item_hashes))


EMPTY_ROOT = node_hash(0, 0, _sha(b"").digest())
"""The root of a map with no keys."""


# ------------------------------------------------------------------- keys
def short(raw: bytes, limit: int) -> bytes:
    """``raw``, or when longer than ``limit`` its first ``limit - 16`` bytes and the first 16
    bytes of its SHA-256 (keys stay under LMDB's key size; distinct stays distinct)."""
    if len(raw) <= limit:
        return raw
    return raw[: limit - 16] + hashlib.sha256(raw).digest()[:16]


def definition_key(coll: str) -> bytes:
    return b"c\x00" + coll.encode()


def document_prefix(coll: str) -> bytes:
    return b"d\x00" + coll.encode() + b"\x00"


def document_key(coll: str, doc_id: str) -> bytes:
    return document_prefix(coll) + short(doc_id.encode(), MAX_ID_IN_DOC_KEY)


def index_prefix(coll: str, field: str) -> bytes:
    return b"i\x00" + coll.encode() + b"\x00" + short(field.encode(), MAX_FIELD_IN_KEY) + b"\x00"


def index_key(coll: str, field: str, encoded: bytes, doc_id: str) -> bytes:
    """The entry of document ``doc_id`` under index key ``encoded`` (keyenc) of ``field``."""
    return index_prefix(coll, field) + encoded[:MAX_VALUE_IN_KEY] + short(doc_id.encode(), MAX_ID_IN_INDEX_KEY)


def multikey_prefix(coll: str, field: str) -> bytes:
    return b"m\x00" + coll.encode() + b"\x00" + short(field.encode(), MAX_FIELD_IN_KEY) + b"\x00"


def multikey_key(coll: str, field: str, doc_id: str) -> bytes:
    """The mark of a document whose path to ``field`` meets an array (value: empty). A proof
    that no key has the prefix shows the field is single-valued in every document, so a range
    with both bounds answers a filter with both bounds."""
    return multikey_prefix(coll, field) + short(doc_id.encode(), MAX_ID_IN_DOC_KEY)


def index_key_id(key: bytes, doc_id: str) -> bool:
    """Whether index entry ``key`` names document ``doc_id`` (its key ends with the id's part)."""
    return key.endswith(short(doc_id.encode(), MAX_ID_IN_INDEX_KEY))


def successor(prefix: bytes) -> bytes:
    """The first byte string after every string starting with ``prefix`` (not all 0xFF)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes((p[-1] + 1,))


def index_key_range(coll: str, field: str, start: bytes | None, stop: bytes | None) -> tuple[bytes, bytes]:
    """The map keys ``[lo, hi)`` of the entries whose value encoding lies in ``[start, stop)``
    (None: unbounded; :func:`docstore.collections.keyenc.index_range`), widened like the derived
    state's index where a bound is longer than the part of a value a key keeps."""
    prefix = index_prefix(coll, field)
    lo = prefix + (start[:MAX_VALUE_IN_KEY] if start else b"")
    if stop is None:
        hi = successor(prefix)
    elif len(stop) <= MAX_VALUE_IN_KEY:
        hi = prefix + stop
    else:
        hi = prefix + stop[:MAX_VALUE_IN_KEY] + b"\xff"
    return lo, hi


# ----------------------------------------------------------------- values
def location_value(tx_id: int, index: int, digest: bytes) -> bytes:
    """A document's (or definition's) value: ``u64 tx_id || u32 entry index || digest``: the
    run root of the revision's entries (a document) or the definition entry's leaf hash."""
    return _LOC.pack(tx_id, index) + digest


def parse_location(value: bytes) -> tuple[int, int, bytes]:
    """(tx_id, entry index, digest) of a location value; ValueError if it is not one."""
    if len(value) != _LOC.size + HASH_SIZE:
        raise ValueError("a location value is 44 bytes")
    tx_id, index = _LOC.unpack_from(value)
    return tx_id, index, value[_LOC.size :]


def run_root(entry_leaf_hashes: list[bytes]) -> bytes:
    """The run root of a document revision: the RFC 9162 MTH over the entry leaf hashes of its
    header and properties (entries ``o .. o+n`` of its transaction, in order)."""
    return root_of(entry_leaf_hashes)


def map_root(items: list[tuple[bytes, bytes]]) -> bytes:
    """The root of the map holding ``items`` ((key, value), keys strictly increasing), built
    from scratch by the definition above (the reference the incremental update must equal)."""
    if not items:
        return EMPTY_ROOT
    level = 0
    entries = [(k, leaf_item_hash(k, v)) for k, v in items]
    while True:
        nodes: list[tuple[bytes, bytes]] = []
        start = 0
        for i, (k, _h) in enumerate(entries):
            if key_level(k) > level or i - start + 1 == NODE_MAX or i == len(entries) - 1:
                nodes.append((k, node_hash_of(level, [h for _k, h in entries[start : i + 1]])))
                start = i + 1
        if len(nodes) == 1:
            return nodes[0][1]
        entries = [(k, inner_item_hash(k, h)) for k, h in nodes]
        level += 1
