"""Ledger storage format 2 (docs/storage.md): front-coded payloads, entries trees stored from
level 4 up. Its encoder and decoders round-trip; damaged bytes decode to an error, never
another exception; a v1 and a v2 ledger given the same writes have byte-identical hashes,
roots and proofs; a v1 ledger still opens, reads, proves, audits and appends in v1; the
published test vector is what the encoder writes."""

from __future__ import annotations

import json
import os
import random
import re
import types
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvcore.ledger
from kvcore import FileStorage, FormatError, Ledger, verify_entries, verify_entry
from kvcore import payload, payload_v2
from kvcore.codec import V1, V2
from kvcore.hashing import HEADER_SIZE
from kvcore.tree import build_levels, level_starts

from kvcore_testlib import ledger_format

DOC = Path(__file__).resolve().parents[2] / "docs" / "storage.md"
Writes = list[tuple[bytes, bytes | None]]

# keys that often share long prefixes (and sometimes nothing), values empty or not, tombstones
_PREFIXES = [b"", b"p\x00patients\x00p0000000", b"p\x00patients\x00p00000001\x00" + b"\x00" * 7, b"k" * 200]
_keys = st.builds(lambda p, s: p + s, st.sampled_from(_PREFIXES), st.binary(min_size=1, max_size=12))
_values = st.one_of(st.none(), st.just(b""), st.binary(max_size=40), st.binary(min_size=120, max_size=300))


def _writes(min_size: int = 1, max_size: int = 100) -> st.SearchStrategy[Writes]:
    return st.dictionaries(_keys, _values, min_size=min_size, max_size=max_size).map(lambda d: list(d.items()))


# ---------------------------------------------------------------- the codec alone
@settings(max_examples=300, deadline=None)
@given(writes=_writes(0, 100), tx_id=st.integers(1, 2**40), ts=st.integers(0, 2**63))
def test_v2_round_trips_and_hashes_as_v1(writes: Writes, tx_id: int, ts: int):
    body, extra, header, positions = payload_v2.encode(tx_id, ts, writes)
    body1, extra1, header1, _positions1 = payload.encode(tx_id, ts, writes)
    assert header == header1 and body[:HEADER_SIZE] == header  # the same hashed header
    n = len(writes)
    decoded = list(payload_v2.iter_entries(body))
    assert [p for p, *_ in decoded] == positions
    assert [(k, None if kind else v) for _p, kind, k, v in decoded] == writes
    assert [kind for _p, kind, _k, _v in decoded] == [int(v is None) for _k, v in writes]
    table = [int.from_bytes(extra[4 * i : 4 * i + 4], "big") for i in range(n + 1)]
    assert table == positions + [len(body)]
    # extra holds v1's entries-tree levels from 4 up, and is what the audit recomputes
    starts = level_starts(n)
    assert extra[4 * (n + 1) :] == extra1[4 * (n + 1) + starts[min(4, len(starts) - 1)] * 32 :]
    assert payload_v2.extra_for(body) == extra and payload_v2.entries_root(body) == header[-32:]
    assert len(extra) == V2.extra_size(n) and len(extra1) == V1.extra_size(n)
    # any run from a restart decodes alone
    for r in range(0, n, payload_v2.RESTART):
        end = random.randint(r + 1, n)
        run = payload_v2.decode_run(body[table[r] : table[end]], table[r : end + 1], r)
        assert run == [(kind, k, v) for _p, kind, k, v in decoded[r:end]]
    table1 = [int.from_bytes(extra1[4 * i : 4 * i + 4], "big") for i in range(n + 1)]
    assert payload.decode_run(body1[HEADER_SIZE:], table1, 0) == [(kind, k, v) for _p, kind, k, v in decoded]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(writes=_writes(1, 40), data=st.data())
def test_damaged_v2_bytes_decode_to_an_error_or_to_entries(writes: Writes, data):
    body, extra, _header, positions = payload_v2.encode(1, 1, writes)
    damaged = bytearray(body)
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(HEADER_SIZE, len(body) - 1))
        damaged[at] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.integers(HEADER_SIZE, len(body)))
    for candidate in (bytes(damaged), body[:cut], bytes(damaged[:cut])):
        try:
            list(payload_v2.iter_entries(candidate))
            payload_v2.extra_for(candidate)
        except payload_v2.Malformed:
            pass
        table = positions + [len(body)]
        try:
            payload_v2.decode_run(candidate[table[0] :], table, 0)
        except payload_v2.Malformed:
            pass
        at = data.draw(st.integers(0, len(positions) - 1))  # a run from an entry after a restart
        r = at - at % payload_v2.RESTART
        try:
            need = payload_v2.shared_at(candidate, table[at]) if at > r else 0
            prefix = payload_v2.key_prefix(candidate[table[r] :], table[r : at + 1], r, need) if need else b""
            payload_v2.decode_run(candidate[table[at] :], table[at:], at, prefix)
        except payload_v2.Malformed:
            pass


def test_v2_lengths_of_several_bytes_and_restarts():
    key = b"x" * 300
    writes: Writes = [(key + b"%03d" % i, b"v" * (i * 50)) for i in range(40)]
    body, _extra, _h, positions = payload_v2.encode(1, 1, writes)
    for i, pos in enumerate(positions):
        kind, shared, slen, vlen, _k0 = payload_v2.head_at(body, pos)
        assert (kind, shared + slen, vlen) == (0, 303, i * 50)
        common = len(os.path.commonprefix([writes[i - 1][0], writes[i][0]])) if i else 0
        assert shared == (0 if i % 16 == 0 else common) and (common >= 301 or not i)  # whole keys at each restart
    assert payload_v2.varint(300) == bytes([0xAC, 0x02]) and payload_v2.varint(127) == b"\x7f"
    with pytest.raises(payload_v2.Malformed):  # a length of more than 5 bytes
        payload_v2.head_at(b"\x00" + b"\xff" * 6 + b"\x00", 0)
    with pytest.raises(payload_v2.Malformed):  # a restart that shares bytes
        bad = bytearray(body)
        bad[positions[16] + 1] = 1
        list(payload_v2.iter_entries(bytes(bad)))


# ------------------------------------------------- v1 and v2 ledgers: the same hashes
FIXED_NS = 1_700_000_000_123_456_789


def _fixed_clock():
    """Both ledgers stamp their transactions alike (their headers, hence roots, are equal)."""
    return mock.patch.object(kvcore.ledger, "time", types.SimpleNamespace(time_ns=lambda: FIXED_NS))


def _compare(v1: Ledger, v2: Ledger, rng: random.Random) -> None:
    assert (v1.format_version, v2.format_version) == (1, 2)
    assert v1.state() == v2.state()
    state = v1.state()
    for tx_id in range(1, v1.tx_id + 1):
        h = v1.header(tx_id)
        assert v2.header(tx_id) == h
        assert v1.tx(tx_id) == v2.tx(tx_id)
        n = h.n_entries
        assert v1.entries(tx_id) == v2.entries(tx_id)
        for _ in range(3):
            a = rng.randrange(n)
            b = rng.randint(a, n)
            assert v1.entry_items(tx_id, a, b - a) == v2.entry_items(tx_id, a, b - a)
            assert v1.entries(tx_id, a, b - a) == v2.entries(tx_id, a, b - a)
        entries = v1.entries(tx_id)
        for i in range(n) if n <= 64 else rng.sample(range(n), 64):
            p = v1.prove_entry_at(tx_id, i, state)
            assert p == v2.prove_entry_at(tx_id, i, state)
            e = entries[i]
            verify_entry(p, e.key, None if e.deleted else e.value, state)
        idx = sorted(rng.sample(range(n), min(n, rng.randint(1, 20))))
        proof = v1.prove_entries(tx_id, idx, state)
        assert proof == v2.prove_entries(tx_id, idx, state)
        verify_entries(proof, [(entries[i].key, None if entries[i].deleted else entries[i].value) for i in idx], state)
        a = rng.randrange(n)
        b = rng.randint(a + 1, n)
        key = entries[b - 1].key
        cut = rng.randint(0, len(key))
        for led in (v1, v2):
            led.prover.clear_caches()  # the run searched, then the hint
        assert v1.find_and_prove(tx_id, a, b - a, len(key), key[len(key) - cut :], state) == v2.find_and_prove(
            tx_id, a, b - a, len(key), key[len(key) - cut :], state
        )
        assert v1.find_and_prove(tx_id, a, b - a, len(key), key[len(key) - cut :], state) == v2.find_and_prove(
            tx_id, a, b - a, len(key), key[len(key) - cut :], state
        )
    for key in {e.key for t in range(1, v1.tx_id + 1) for e in v1.tx(t).entries}:
        assert v1.lookup(key) == v2.lookup(key)
        assert v1.history(key) == v2.history(key)
        assert v1.prove_entry(key) == v2.prove_entry(key)
    for old in range(v1.tx_id + 1):
        assert v1.prove_consistency(old) == v2.prove_consistency(old)
    r1, r2 = v1.audit(), v2.audit()
    assert r1.ok and r2.ok and r1.root == r2.root, (str(r1), str(r2))


def _both(tmp: Path, txs: list[Writes], seed: int = 0) -> None:
    with _fixed_clock():
        v1 = Ledger(FileStorage(tmp / "v1", format_version=1))
        v2 = Ledger.open(tmp / "v2")
        with v1, v2:
            for writes in txs:
                assert v1.commit(writes) == v2.commit(writes)
            _compare(v1, v2, random.Random(seed))
    assert (ledger_format(tmp / "v1"), ledger_format(tmp / "v2")) == (1, 2)
    with Ledger.open(tmp / "v1", readonly=True) as r1, Ledger.open(tmp / "v2", readonly=True) as r2:
        assert r1.state() == r2.state() and r1.format_version == 1 and r2.format_version == 2


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(txs=st.lists(_writes(1, 100), min_size=1, max_size=4), seed=st.integers(0, 1000))
def test_v1_and_v2_ledgers_have_the_same_hashes_and_proofs(tmp_path_factory, txs: list[Writes], seed: int):
    _both(tmp_path_factory.mktemp("same"), txs, seed)


@pytest.mark.parametrize("sizes", [(15, 16, 17), (31, 32, 33), (1, 2999, 4096)])
def test_v1_and_v2_agree_around_restarts_and_stored_levels(tmp_path, sizes):
    rng = random.Random(sum(sizes))
    txs = []
    for t, size in enumerate(sizes):
        writes: Writes = []
        for i in range(size):
            key = b"p\x00c\x00%08d\x00" % (i // 16) + b"/%d/x" % (i % 16) if rng.random() < 0.8 else rng.randbytes(6)
            value = None if rng.random() < 0.05 else rng.randbytes(rng.choice([0, 3, 16, 200]))
            writes.append((key + b"#%d" % t, value))
        txs.append(list(dict(writes).items()))
    _both(tmp_path, txs)


# ----------------------------------------------------------------- a v1 ledger lives on
def test_a_v1_ledger_is_read_proven_audited_and_appended_to_in_v1(tmp_path):
    path = tmp_path / "old"
    with Ledger(FileStorage(path, format_version=1)) as led:
        led.set_all({b"a/%02d" % i: b"v%d" % i for i in range(40)})
        led.delete(b"a/03")
    assert ledger_format(path) == 1
    with Ledger.open(path) as led:  # opening never converts: appends stay in v1
        assert led.format_version == 1
        tx = led.set_all({b"a/%02d" % i: b"w%d" % i for i in range(20)})
        verify_entry(led.prove_entry(b"a/05"), b"a/05", b"w5", led.state())
        verify_entry(led.prove_entry(b"a/30", 1), b"a/30", b"v30", led.state())
        verify_entry(led.prove_entry(b"a/03", 2), b"a/03", None, led.state())
        assert led.entry_items(tx, 18) == [(b"a/18", b"w18"), (b"a/19", b"w19")]
        assert led.audit().ok
    assert ledger_format(path) == 1
    body = (path / "txlog").read_bytes()
    # a v1 entry head: kind, u32 key_len, u32 value_len
    assert body[12 + HEADER_SIZE : 12 + HEADER_SIZE + 9] == b"\x00" + (4).to_bytes(4, "big") + (2).to_bytes(4, "big")


def test_a_newer_format_is_refused(tmp_path):
    with Ledger.open(tmp_path / "l") as led:
        led.set(b"k", b"v")
    (tmp_path / "l" / "FORMAT").write_text(json.dumps({"format": "immudoc-kvcore", "version": 3}))
    with pytest.raises(FormatError, match="upgrade immudoc"):
        Ledger.open(tmp_path / "l")


# ---------------------------------------------------------------- the published vector
def _vector() -> dict:
    text = DOC.read_text(encoding="utf-8")
    for block in re.findall(r"^```json[ \t]*\n(.*?)^```[ \t]*$", text, flags=re.S | re.M):
        doc = json.loads(block)
        if isinstance(doc, dict) and "storage_vector" in doc:
            return doc["storage_vector"]
    pytest.fail(f"{DOC} has no ```json block with a \"storage_vector\"")


def test_the_published_v2_vector():
    v = _vector()
    assert v["version"] == 2
    writes = [(bytes.fromhex(k), None if val is None else bytes.fromhex(val)) for k, val in v["writes"]]
    body, extra, _header, _positions = payload_v2.encode(v["tx_id"], v["timestamp_ns"], writes)
    assert body.hex() == "".join(v["payload"])
    assert extra.hex() == "".join(v["extra"])
    # the same transaction's v1 header: every hash alike
    assert body[:HEADER_SIZE] == payload.encode(v["tx_id"], v["timestamp_ns"], writes)[0][:HEADER_SIZE]
    assert build_levels([], 4) == (b"", build_levels([])[1])
