"""The insert floor times what the product really does: its block count and records match what
kvcore.payload.encode hashes, and its entries are those insert_many commits."""

from __future__ import annotations

import hashlib

from benchmarks import floor
from benchmarks.workload import iter_batches
from kvcore import payload
from kvcore.hashing import HEADER_SIZE


def _blocks(message_len: int) -> int:
    """SHA-256 pads a message with 0x80, zeros and an 8-byte length to a multiple of 64."""
    return -(-(message_len + 9) // 64)


def test_block_count_matches_the_encoded_payload():
    docs = next(iter_batches(50, 50))
    counter = floor._Blocks()
    counter(docs)
    entries = floor._entries(docs)
    body, extra, header, positions = payload.encode(1, 1, entries)
    ends = positions[1:] + [len(body)]
    leaf_messages = [b"\x00" + body[a:b] for a, b in zip(positions, ends)]
    assert positions[0] == HEADER_SIZE and len(leaf_messages) == len(entries)
    # the entries tree of n leaves hashes n - 1 nodes, each 0x01 || left || right
    expected = sum(_blocks(len(m)) for m in leaf_messages) + (len(entries) - 1) * _blocks(65)
    assert counter.blocks == expected
    # the same records (kind, lengths, key; the salts in the values are fresh each time)
    heads = [9 + len(k) for k, _ in entries]
    assert [r[:h] for r, h in zip(counter.records, heads)] == [m[1 : 1 + h] for m, h in zip(leaf_messages, heads)]
    assert [len(r) for r in counter.records] == [len(m) - 1 for m in leaf_messages]
    assert (hashlib.sha256(leaf_messages[0]).digest() == extra[4 * (len(entries) + 1) : 4 * (len(entries) + 1) + 32])


def test_floor_writes_what_insert_many_writes(tmp_path):
    """The floor times the same entries docstore commits: same keys, same values but the salts."""
    import docstore

    docs = next(iter_batches(20, 20))
    with docstore.open(tmp_path / "db") as db:
        tx_id = db.create_collection(floor.COLL).insert_many(docs) and db.state().tx_id
        committed = db.ledger.entries(tx_id)
    mine = floor._entries(docs)
    assert [e.key for e in committed] == [k for k, _ in mine]
    for e, (key, value) in zip(committed, mine):
        if key.startswith(b"p\x00"):  # a property: 16 random salt bytes, then the value
            assert e.value[16:] == value[16:] and e.value[:16] != value[:16]
        else:
            assert e.value == value
