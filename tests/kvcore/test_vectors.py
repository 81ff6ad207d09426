"""The byte-exact hashing test vectors published in docs/hashing.md, recomputed with kvcore.

The vectors are read from the first fenced ```json block of that page whose object has a
top-level "vectors" list, so the page stays the single source of truth.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest

from kvcore import merkle
from kvcore.hashing import (
    EMPTY_ROOT,
    HASH_VERSION,
    decode_header,
    encode_header,
    entry_leaf_data,
    entry_leaf_hash,
    leaf_hash,
    tx_leaf_hash,
)
from kvcore.models import TxHeader
from kvcore.tree import MerkleTree, build_levels

DOC = Path(__file__).resolve().parents[2] / "docs" / "hashing.md"
KINDS = ("entry_leaf", "tx_header", "tree_root")


def _load_vectors() -> list[dict]:
    if not DOC.exists():
        pytest.skip(f"{DOC} does not exist yet: no hashing test vectors to check")
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```json[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.S | re.M)
    for block in blocks:
        try:
            doc = json.loads(block)
        except ValueError:
            continue
        if isinstance(doc, dict) and "vectors" in doc:
            vectors = doc["vectors"]
            assert isinstance(vectors, list) and vectors, "the 'vectors' list is empty"
            if "version" in doc:
                assert doc["version"] == HASH_VERSION
            return vectors
    pytest.fail(f"{DOC} has no ```json block with a top-level \"vectors\" key")


def _ids(vectors):
    seen: dict[str, int] = {}
    out = []
    for v in vectors:
        kind = v.get("kind", "?")
        seen[kind] = seen.get(kind, 0) + 1
        out.append(f"{kind}-{seen[kind]}")
    return out


def pytest_generate_tests(metafunc):
    if "vector" in metafunc.fixturenames:
        try:
            vectors = _load_vectors()
        except BaseException as e:  # skip/fail at collection: report it on one test instead
            metafunc.parametrize("vector", [pytest.param(None, marks=pytest.mark.skip(reason=str(e)))])
            return
        metafunc.parametrize("vector", vectors, ids=_ids(vectors))


def test_vectors_are_present_and_cover_every_kind():
    vectors = _load_vectors()
    kinds = {v.get("kind") for v in vectors}
    assert kinds <= set(KINDS), f"unknown vector kinds: {kinds - set(KINDS)}"
    assert kinds == set(KINDS), f"missing vector kinds: {set(KINDS) - kinds}"
    # the empty tree is among them, and it is the RFC 9162 empty root
    empties = [v for v in vectors if v["kind"] == "tree_root" and not v["leaves_hex"]]
    assert empties and all(bytes.fromhex(v["root"]) == hashlib.sha256(b"").digest() for v in empties)


def test_vector(vector):
    kind = vector["kind"]
    if kind == "entry_leaf":
        key, value = bytes.fromhex(vector["key_hex"]), bytes.fromhex(vector["value_hex"])
        entry_kind = vector["entry_kind"]
        assert entry_kind in (0, 1)
        if "leaf_data_hex" in vector:
            assert entry_leaf_data(entry_kind, key, value).hex() == vector["leaf_data_hex"]
            assert leaf_hash(bytes.fromhex(vector["leaf_data_hex"])).hex() == vector["leaf_hash"]
        assert entry_leaf_hash(entry_kind, key, value).hex() == vector["leaf_hash"]
        # and independently of kvcore's helpers: H(0x00 || leaf data)
        data = entry_leaf_data(entry_kind, key, value)
        assert hashlib.sha256(b"\x00" + data).hexdigest() == vector["leaf_hash"]
        # a one-entry transaction's entries root is that leaf
        assert build_levels([entry_leaf_hash(entry_kind, key, value)])[1].hex() == vector["leaf_hash"]
    elif kind == "tx_header":
        root = bytes.fromhex(vector["entries_root"])
        sroot = bytes.fromhex(vector["state_root"]) if "state_root" in vector else None
        header = encode_header(vector["tx_id"], vector["timestamp_ns"], vector["n_entries"], root, sroot)
        assert header.hex() == vector["header_hex"]
        if sroot is None:
            assert len(header) == 53 and header[0] == HASH_VERSION
        else:
            assert len(header) == 85 and header[0] == 2 and header[-32:] == sroot
        assert decode_header(header) == (vector["tx_id"], vector["timestamp_ns"], vector["n_entries"], root, sroot)
        assert tx_leaf_hash(header).hex() == vector["leaf_hash"]
        assert hashlib.sha256(b"\x00" + header).hexdigest() == vector["leaf_hash"]
        model = TxHeader(vector["tx_id"], vector["timestamp_ns"], vector["n_entries"], root, sroot)
        assert model.encode() == header and model.leaf_hash().hex() == vector["leaf_hash"]
    elif kind == "tree_root":
        leaves = [leaf_hash(bytes.fromhex(d)) for d in vector["leaves_hex"]]
        expected = vector["root"]
        assert merkle.root_of(leaves).hex() == expected
        tree = MerkleTree()
        for leaf in leaves:
            tree.append(leaf)
        assert tree.root().hex() == expected
        assert build_levels(leaves)[1].hex() == expected
        if not leaves:
            assert EMPTY_ROOT.hex() == expected
    else:
        pytest.fail(f"unknown vector kind {kind!r}")
