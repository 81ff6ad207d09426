"""The container of a derived snapshot file: ``magic (8 bytes) || crc32(body) (u32 BE) || body``.

Snapshots (kvcore's ``index.snap``, docstore's ``docs.snap``) are derived data, rebuilt from the
ledger when missing or damaged; the checksum only detects damage (tampering is found by audits
and proofs, which never use snapshots). The first container, ``old magic || sha256(body) ||
body``, is still read.
"""

from __future__ import annotations

import hashlib
import struct
import zlib

_CRC = struct.Struct(">I")


def wrap(magic: bytes, body: bytes) -> bytes:
    """The snapshot file's bytes for ``body``."""
    return magic + _CRC.pack(zlib.crc32(body)) + body


def unwrap(blob: bytes, magic: bytes, old_magic: bytes | None = None) -> memoryview | None:
    """The body of a snapshot written by :func:`wrap` (or in the first container, under
    ``old_magic``), or None if it is foreign or damaged. No copy of the body is made."""
    view = memoryview(blob)
    if blob[:8] == magic and len(blob) >= 12:
        body = view[12:]
        return body if _CRC.unpack_from(blob, 8)[0] == zlib.crc32(body) else None
    if old_magic is not None and blob[:8] == old_magic and len(blob) >= 40:
        body = view[40:]
        return body if hashlib.sha256(body).digest() == blob[8:40] else None
    return None
