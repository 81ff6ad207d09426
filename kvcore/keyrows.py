"""How the on-disk key index spells a key's revision as an LMDB row (docs/storage.md).

A revision of ``key`` at location ``loc`` (:mod:`kvcore.keyindex`: ``tx << 56 | ordinal << 32 |
position``) is the row ``prefix(key) || loc`` (``loc`` as 15 big-endian bytes: u64 transaction,
u24 ordinal, u32 position) whose value is the revision's number, 1 for the key's first.

``prefix(key)`` is the key with every ``0x00`` byte written ``0x00 0xFF``, then a ``0x00``
terminator. Written so, keys compare as the keys do, and every row of a key sorts before the
rows of any longer key that starts with it (those continue with ``0xFF`` where a location's
first byte is ``0x00``, for transactions below 2^56): a key's rows are one contiguous run, in
transaction order, and the runs are in key order. So:

- the newest revision of ``key`` below a location ``bound`` is the row just before
  ``prefix(key) || bound``; the row just before ``prefix(key) || 0xFF`` is its newest;
- a key's history is the run of rows that start with ``prefix(key)`` and are 15 bytes longer;
- the next key after ``key`` starts at ``prefix(key) || 0xFF``.

LMDB keys hold at most 511 bytes. A key whose prefix is longer than :data:`SHORT_MAX` bytes
(keys may hold 1,024) is *long*: its rows are ``prefix(key)[:SHORT_MAX] || 0xFF ||
sha256(key)`` then the location, exactly :data:`LONG_ROW` bytes, and their value is the
revision as u64 then the key itself. The long keys that share those first ``SHORT_MAX`` bytes
(their *group*) sort among themselves by hash, not by key; everything else is as above, and a
scan that meets a group reads it whole and sorts it.

The value's revision number is the minimal big-endian encoding of the number (one byte below
256) for a short key.
"""

from __future__ import annotations

import hashlib

SUFFIX = 15
"""Bytes of a location at the end of a row."""
MAX_ROW = 511
"""LMDB's limit on a key's length (its default MDB_MAXKEYSIZE)."""
HASH = 32
SHORT_MAX = MAX_ROW - SUFFIX - 1 - HASH
"""The longest prefix a short key's row holds (463 bytes)."""
LONG_ROW = MAX_ROW
"""The length of every long key's row (a short key's row is at most SHORT_MAX + SUFFIX)."""
AFTER = b"\xff"
"""Appended to a key's prefix: past every row of that key."""
_GROUP_END = b"\xff" * (1 + HASH + 1)


def escaped(key: bytes) -> bytes:
    """The key with ``0x00`` written ``0x00 0xFF`` and a ``0x00`` terminator."""
    return key.replace(b"\x00", b"\x00\xff") + b"\x00"


def prefix(key: bytes) -> bytes:
    """What every row of ``key`` starts with (and nothing else's rows do)."""
    e = key.replace(b"\x00", b"\x00\xff") + b"\x00"
    if len(e) <= SHORT_MAX:
        return e
    return e[:SHORT_MAX] + b"\xff" + hashlib.sha256(key).digest()


def is_long(pre: bytes) -> bool:
    """Whether ``pre`` (a key's prefix, or a row) is a long key's."""
    return len(pre) > SHORT_MAX


def row(pre: bytes, loc: int) -> bytes:
    """The row of the revision at ``loc`` of the key whose prefix is ``pre``."""
    return pre + loc.to_bytes(SUFFIX, "big")


def seek_below(pre: bytes, bound: int | None) -> bytes:
    """The row just after the key's revisions below ``bound`` (None: after all of them)."""
    return pre + (AFTER if bound is None else bound.to_bytes(SUFFIX, "big"))


def loc_of(r: bytes) -> int:
    """The location a row names."""
    return int.from_bytes(r[-SUFFIX:], "big")


def prefix_of(r: bytes) -> bytes:
    """The prefix of the key a row belongs to."""
    return r[:-SUFFIX]


def value(revision: int, key: bytes, long: bool) -> bytes:
    """A row's value: the revision number (and, for a long key, the key)."""
    if long:
        return revision.to_bytes(8, "big") + key
    return revision.to_bytes((revision.bit_length() + 7) // 8, "big")


def revision_of(v: bytes, long: bool) -> int:
    """The revision number a row's value holds (0 if it holds none: damage)."""
    return int.from_bytes(v[:8] if long else v, "big")


def key_of(r: bytes, v: bytes) -> bytes:
    """The key a row (with its value) belongs to."""
    if len(r) == LONG_ROW:
        return v[8:]
    return r[: -SUFFIX - 1].replace(b"\x00\xff", b"\x00")


def seek_from(start: bytes) -> bytes:
    """The first row a scan of keys ``>= start`` must look at (for a long ``start``, its group's
    first row: the group is read whole and sorted)."""
    e = escaped(start)
    return e if len(e) <= SHORT_MAX else e[:SHORT_MAX]


def group_of(r: bytes) -> bytes:
    """The group a long key's row belongs to (the first SHORT_MAX bytes of its prefix)."""
    return r[:SHORT_MAX]


def after_group(group: bytes) -> bytes:
    """The row just after every row of a group of long keys."""
    return group + _GROUP_END


def well_formed(r: bytes, v: bytes) -> bool:
    """Whether a row and its value are spelled as this module spells them (the audit's check of
    each stored row; the ledger's open checks a few)."""
    n = len(r)
    if n == LONG_ROW:
        if len(v) < 9 or r[SHORT_MAX] != 0xFF:
            return False
        key = v[8:]
        return prefix(key) == r[:-SUFFIX] and revision_of(v, True) > 0
    if n < SUFFIX + 1 or n - SUFFIX > SHORT_MAX or not v or v[0] == 0:
        return False
    pre = r[:-SUFFIX]
    return pre[-1] == 0 and escaped(key_of(r, v)) == pre
