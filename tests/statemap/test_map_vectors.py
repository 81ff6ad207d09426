"""The state map's test vectors in docs/proofs.md, recomputed from the text's definitions with
``hashlib`` alone (an independent implementation) and with docstore's."""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

from docstore.statemap import hashing as mh

DOC = Path(__file__).resolve().parents[2] / "docs" / "proofs.md"


def _H(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _level(key: bytes) -> int:
    digest = _H(b"\x03" + key).hex()
    return len(digest) - len(digest.lstrip("0"))


def _mth(hashes: list[bytes]) -> bytes:
    """RFC 9162, recursively: split at the largest power of two below n."""
    if len(hashes) == 1:
        return hashes[0]
    k = 1
    while k * 2 < len(hashes):
        k *= 2
    return _H(b"\x01" + _mth(hashes[:k]) + _mth(hashes[k:]))


def _node(level: int, hashes: list[bytes]) -> bytes:
    return _H(b"\x02" + bytes([level]) + struct.pack(">I", len(hashes)) + (_mth(hashes) if hashes else _H(b"")))


def _root(items: list[tuple[bytes, bytes]]) -> bytes:
    if not items:
        return _node(0, [])
    level = 0
    row = [(k, _H(b"\x00\x00" + struct.pack(">I", len(k)) + k + v)) for k, v in items]
    while True:
        nodes, chunk = [], []
        for i, (k, h) in enumerate(row):
            chunk.append(h)
            if _level(k) > level or len(chunk) == 32 or i == len(row) - 1:  # NODE_MAX = 32
                nodes.append((k, _node(level, chunk)))
                chunk = []
        if len(nodes) == 1:
            return nodes[0][1]
        row = [(k, _H(b"\x00\x01" + struct.pack(">I", len(k)) + k + h)) for k, h in nodes]
        level += 1


def _vectors() -> dict:
    text = DOC.read_text()
    block = re.search(r"\*\*Test vectors\*\*.*?```json\n(.*?)\n```", text, re.S)
    assert block, "the vectors block is missing from docs/proofs.md"
    return json.loads(block.group(1))


def test_every_vector_recomputes_two_ways():
    doc = _vectors()
    assert doc["map_version"] == mh.MAP_VERSION
    kinds = set()
    for v in doc["vectors"]:
        kinds.add(v["kind"])
        if v["kind"] == "key_level":
            key = bytes.fromhex(v["key_hex"])
            assert _level(key) == mh.key_level(key) == v["level"]
        elif v["kind"] == "leaf_item":
            key, value = bytes.fromhex(v["key_hex"]), bytes.fromhex(v["value_hex"])
            assert _H(b"\x00\x00" + struct.pack(">I", len(key)) + key + value).hex() == v["hash"]
            assert mh.leaf_item_hash(key, value).hex() == v["hash"]
        elif v["kind"] == "inner_item":
            sep, child = bytes.fromhex(v["sep_hex"]), bytes.fromhex(v["child"])
            assert _H(b"\x00\x01" + struct.pack(">I", len(sep)) + sep + child).hex() == v["hash"]
            assert mh.inner_item_hash(sep, child).hex() == v["hash"]
        else:
            assert v["kind"] == "map_root"
            if "items" in v:
                items = [(bytes.fromhex(k), bytes.fromhex(x)) for k, x in v["items"]]
            else:  # keys 'k0'..'k359', value 'vN'
                items = sorted((b"k%d" % j, b"v%d" % j) for j in range(360))
                levels = [_level(k) for k, _v in items]
                assert {str(n): sum(1 for lv in levels if lv >= n) for n in (1, 2)} == v["levels"]
            assert _root(items).hex() == mh.map_root(items).hex() == v["root"]
    assert kinds == {"key_level", "leaf_item", "inner_item", "map_root"}
    assert mh.EMPTY_ROOT == _node(0, [])
