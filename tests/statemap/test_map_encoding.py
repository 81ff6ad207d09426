"""State-map proofs on the wire (docstore.statemap.encoding): round trips, strict decoding,
and every single-byte change of a real proof refused (by the decoder or the verifier)."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docstore import VerificationError
import lmdb

from docstore.statemap.tree import StateMap
from docstore.statemap import encoding
from docstore.statemap.encoding import EncodingError, decode, encode
from docstore.statemap.hashing import successor
from docstore.statemap.prove import prove_key, prove_range
from docstore.statemap.verify import verify_range

HASHES = st.binary(min_size=32, max_size=32)
KEYS = st.binary(min_size=0, max_size=40)


def nodes(depth: int = 0) -> st.SearchStrategy:
    level = st.integers(0, 3)

    def build(lv: int) -> st.SearchStrategy:
        if lv == 0 or depth >= 3:
            items = st.lists(st.tuples(KEYS, st.binary(max_size=60)).map(list), max_size=4)
            lv = 0
        else:
            child = st.one_of(HASHES, st.deferred(lambda: nodes(depth + 1)))
            items = st.lists(st.tuples(KEYS, child).map(list), max_size=3)
        return st.tuples(
            st.just(lv), st.integers(0, 2**32 - 1), st.integers(0, 2**20), st.lists(HASHES, max_size=5), items
        ).map(list)

    return level.flatmap(build)


@settings(max_examples=300, deadline=None)
@given(nodes())
def test_round_trip(node):
    assert decode(encode(node)) == node


@pytest.fixture(scope="module")
def small_map(tmp_path_factory):
    env = lmdb.open(str(tmp_path_factory.mktemp("enc")), max_dbs=4, map_size=1 << 28, sync=False)
    smap = StateMap(env.open_db(b"map"), env.open_db(b"meta"))
    keys = sorted(b"d\x00c\x00" + hashlib.sha256(b"k%d" % i).digest()[:8] for i in range(3000))
    with env.begin(write=True) as txn:
        plan = smap.plan(txn, {k: b"v" + k for k in keys})
        plan.apply(txn, smap)
    with env.begin() as txn:
        root = smap.root(txn)
        rng = prove_range(smap, txn, keys[700], keys[720])
        key = prove_key(smap, txn, keys[1234])
        absent = prove_range(smap, txn, keys[99] + b"\x00", successor(keys[99] + b"\x00"))
    yield {"root": root, "keys": keys, "range": rng, "key": key, "absent": absent}
    env.close()


def test_real_proofs_round_trip_and_verify(small_map):
    m = small_map
    for name in ("range", "key", "absent"):
        data = encode(m[name])
        assert decode(data) == m[name]
        assert len(data) < len(repr(m[name]))  # compact
    keys, root = m["keys"], m["root"]
    assert [k for k, _v in verify_range(decode(encode(m["range"])), root, keys[700], keys[720])] == keys[700:720]


def test_strict_decoding(small_map):
    data = encode(small_map["range"])
    for cut in range(len(data)):
        with pytest.raises(EncodingError):
            decode(data[:cut])
    with pytest.raises(EncodingError, match="follow"):
        decode(data + b"\x00")
    with pytest.raises(EncodingError, match="shortest"):
        decode(bytes([0]) + b"\x80\x00" + data[2:])  # m written as two bytes
    # a key sharing more than the previous key has (the first key: no previous key)
    with pytest.raises(EncodingError, match="shares more"):
        decode(bytes([0, 1, 0, 0, 1, 5, 0, 0]))
    with pytest.raises(EncodingError, match="tagged"):
        decode(bytes([1, 1, 0, 0, 1, 0, 1, 65, 2]))
    deep = bytes([1, 1, 0, 0, 1, 0, 1, 65, 1]) * (encoding.MAX_DEPTH + 1)
    with pytest.raises(EncodingError, match="deeper"):
        decode(deep)
    with pytest.raises(EncodingError):
        decode("not bytes")  # type: ignore[arg-type]
    with pytest.raises(EncodingError):
        encode([0, 1, 0, [b"short"], []])
    with pytest.raises(EncodingError):
        encode([1, 1, 0, [], [[b"k", b"not a 32-byte hash"]]])


@pytest.mark.parametrize("name", ["range", "key", "absent"])
def test_every_byte_change_is_refused(small_map, name):
    """Each byte of a real proof, changed three ways: the decoder refuses it, or it decodes to
    another proof, which the verifier refuses."""
    m = small_map
    keys, root = m["keys"], m["root"]
    lo, hi, complete = {
        "range": (keys[700], keys[720], True),
        "key": (keys[1234], keys[1234] + b"\x00", False),
        "absent": (keys[99] + b"\x00", successor(keys[99] + b"\x00"), True),
    }[name]
    data = encode(m[name])
    assert verify_range(decode(data), root, lo, hi, complete) is not None
    outcomes = {"decoder": 0, "verifier": 0}
    for i in range(len(data)):
        for delta in (1, 0x80, 0xFF):
            changed = data[:i] + bytes([data[i] ^ delta]) + data[i + 1 :]
            try:
                node = decode(changed)
            except EncodingError:
                outcomes["decoder"] += 1
                continue
            assert node != m[name]
            with pytest.raises(VerificationError):
                verify_range(node, root, lo, hi, complete)
            outcomes["verifier"] += 1
    assert outcomes["verifier"] > len(data)  # most changes reach the verifier (hashes, keys)


def test_the_documented_example():
    """docs/proofs.md, "Map proofs on the wire": the example's bytes."""
    h = bytes(range(32))
    proof = [0, 3, 1, [h], [[b"ab", b"x"], [b"ac", b""]]]
    want = bytes.fromhex("00030101") + h + bytes.fromhex("0200026162017801016300")
    assert encode(proof) == want and decode(want) == proof
    doc = open(__file__.rsplit("/tests/", 1)[0] + "/docs/proofs.md").read()
    assert "`00 03 01 01 h 02 00 02 61 62 01 78 01 01 63 00`" in doc
