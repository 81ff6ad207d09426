"""kvcore erasure (issue 18 part 2, work in progress): values destroyed in place, their leaf
hashes kept, so every tree, proof, consistency proof and audit still holds; an interrupted
erasure completed on reopen. Both backends."""

from __future__ import annotations

import os
import warnings

import pytest

import kvcore
from kvcore import erasure
from kvcore.hashing import KIND_SET, entry_leaf_hash


@pytest.fixture(params=["file", "postgres"])
def where(request, tmp_path):
    if request.param == "file":
        return str(tmp_path / "ledger")
    return request.getfixturevalue("pg_url")


def _stored_bytes(where: str) -> bytes:
    """Every byte the ledger keeps: its directory's files, or its PostgreSQL rows."""
    if not where.startswith("postgresql://"):
        out = b""
        for root, _dirs, files in os.walk(where):
            for f in files:
                out += open(os.path.join(root, f), "rb").read()
        return out
    import psycopg

    with psycopg.connect(where) as conn:
        return b"".join(bytes(r[0]) + bytes(r[1]) for r in conn.execute("SELECT payload, extra FROM kv_tx"))


def test_an_erased_value_is_gone_and_everything_else_verifies(where):
    led = kvcore.Ledger.open(where)
    try:
        led.set_all({b"k/%02d" % i: b"secret-value-%02d" % i for i in range(20)})
        led.set(b"other", b"x")
        before = led.state()
        assert led.entries(1, 7, 1)[0].value == b"secret-value-07"
        tx = led.erase([(1, 7)], {b"why": b"consent withdrawn"})
        assert tx == 3 and led.entries(1, 7, 1)[0].value == bytes(15)
        assert led.erase([(1, 7)]) is None  # erased before: nothing to do
        now = led.state()
        kvcore.verify_consistency(before, now, led.prove_consistency(before.tx_id, now.tx_id))
        for i in (0, 6, 8, 15, 19):  # its neighbours, in its block of 16 and the next
            e = led.entries(1, i, 1)[0]
            kvcore.verify_entry(led.prove_entry_at(1, i, now), e.key, e.value, now)
        assert led.erased_leaf(1, 7) == entry_leaf_hash(KIND_SET, b"k/07", b"secret-value-07")
        report = led.audit()
        assert report.ok, report.problems
        with pytest.raises(kvcore.InvalidInputError):
            led.erase([(1, 99)])
        with pytest.raises(kvcore.InvalidInputError):
            led.erase([(3, 1)])  # the erasure record itself
    finally:
        led.close()
    stored = _stored_bytes(where)
    assert b"secret-value-07" not in stored and b"secret-value-06" in stored
    with kvcore.Ledger.open(where) as again:
        assert again.erased_leaf(1, 7) is not None and again.audit().ok


def test_an_interrupted_erasure_is_completed_on_reopen(where):
    led = kvcore.Ledger.open(where)
    led.set_all({b"a": b"keep-me", b"b": b"erase-me"})
    e = led.entries(1, 1, 1)[0]
    # the record committed, the process gone before the zeroing
    led.set_all([(erasure.ERASED_KEY, erasure.encode([(1, 1, entry_leaf_hash(KIND_SET, e.key, e.value))]))])
    led.close()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with kvcore.Ledger.open(where) as again:
            assert again.entries(1, 1, 1)[0].value == bytes(8)
            assert again.audit().ok
    assert any("completed an interrupted erasure" in str(w.message) for w in caught)
    assert b"erase-me" not in _stored_bytes(where)


def test_the_audit_catches_an_erased_value_put_back_or_a_leaf_changed(tmp_path):
    where = str(tmp_path / "ledger")
    with kvcore.Ledger.open(where) as led:
        led.set_all({b"a": b"keep-me", b"b": b"erase-me"})
        led.erase([(1, 1)])
    txlog = os.path.join(where, "txlog")
    data = open(txlog, "rb").read()
    from docstore.cli.demo import rewrite_in_log  # (an attacker's edit: the record's CRC fixed)

    at = data.index(b"b" + bytes(8)) + 1  # the zeros where "erase-me" was
    rewrite_in_log(txlog, data[at - 1 : at + 8], 1, b"put-back")
    with kvcore.Ledger.open(where, readonly=True) as led:
        report = led.audit()
        assert not report.ok and any("erased but its value is still there" in p for p in report.problems)


def test_erasure_record_vector():
    """The byte layout docs/storage.md ("Erasure") specifies, with its test vector."""
    from kvcore.erasure import decode, encode

    raw = encode([(5, 2, bytes(range(32)))])
    assert raw.hex() == "0000000000000005" + "00000002" + bytes(range(32)).hex()
    assert decode(raw) == [(5, 2, bytes(range(32)))]


def test_zeros_without_their_checksum_are_completed_on_reopen(tmp_path):
    """A crash between an erasure's zeros and the record's new checksum (the file backend writes
    them one after the other): reopening rewrites the checksum; the audit passes."""
    import os
    import struct

    from kvcore import Ledger

    led = Ledger.open(tmp_path / "l")
    led.set(b"k", b"secret-value")
    led.set(b"other", b"x")
    e = led.get(b"k")
    led.erase([(e.tx_id, e.index)])
    led.close()
    log = tmp_path / "l" / "txlog"
    data = bytearray(log.read_bytes())
    # put the old checksum back on the erased record (its first record: transaction 1)
    plen, elen, _crc = struct.unpack_from(">III", data, 0)
    import zlib

    body = bytes(data[12 : 12 + plen + elen]).replace(bytes(len(b"secret-value")), b"secret-value", 1)
    struct.pack_into(">I", data, 8, zlib.crc32(body))
    log.write_bytes(bytes(data))
    os.sync()
    led = Ledger.open(tmp_path / "l")
    try:
        assert led.audit().ok
        assert b"secret-value" not in log.read_bytes()
    finally:
        led.close()
