"""No read that looks verified but is not: a command given a trusted state (--state-file)
verifies what it prints or refuses with exit 5, embedded (--db) and over --server alike. Also
the key and checkpoint commands. Real processes (the server a real one on a real socket)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import docstore
from docstore.cli.demo import _rewrite_value
from docstore.proofs.checkpoint import open_checkpoint
from docstore.proofs.note import Signer, Verifier
from docstore.proofs.trust import read_trust_file, write_state_file

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tampered(tmp_path, sub):
    """A database whose p1 dose was edited on disk (checksum fixed) after the trusted state."""
    db = str(tmp_path / "db")
    assert sub(["--db", db, "init", "--origin", "example.com/t"]).code == 0
    assert sub(["--db", db, "collection", "create", "c", "--index", "site"]).code == 0
    docs = [{"_id": "p1", "site": "Oslo", "dose": 5}, {"_id": "p2", "site": "Oslo", "dose": 7}]
    assert sub(["--db", db, "insert", "c", "-"], input=json.dumps(docs)).code == 0
    state = tmp_path / "trusted.checkpoint"
    assert sub(["--db", db, "state", "--save", str(state)]).code == 0
    key = sub(["--db", db, "key"]).out.strip()
    with docstore.open(db, readonly=True) as d:
        stored = d["c"].prove("p1", "/dose").properties[0]  # salt || value, as in the log
    _rewrite_value(os.path.join(db, "ledger", "txlog"), stored.salt + stored.encoded, b"9")
    return db, state, key


def test_embedded_reads_with_a_state_file_verify_or_refuse(tampered, sub, check_error, tmp_path):
    db, state, key = tampered
    # without a trusted state: the plain read serves the edited value (it claims nothing)
    assert sub(["--db", db, "get", "c", "p1"]).json()["dose"] == 9
    verified = ["--db", db, "--state-file", str(state), "--key", key]
    for cmd in (["get", "c", "p1"], ["find", "c"], ["find", "c", '{"site": "Oslo"}'], ["export", "c"],
                ["history", "c", "p1"]):
        r = sub([*verified, *cmd])
        check_error(r, 5, "verification failed")
        assert '"dose": 9' not in r.out and '"dose":9' not in r.out
    # p2 is untouched, but its entries share a 16-entry block with p1's, whose tree nodes the
    # ledger (format 2) recomputes from the edited log: it is served verified, or refused
    r = sub([*verified, "get", "c", "p2"])
    if r.code == 0:
        assert r.json() == {"_id": "p2", "site": "Oslo", "dose": 7}
    else:
        check_error(r, 5, "verification failed")
    # a count is proven from the state map: the edited p1 no longer has the run root it commits to
    check_error(sub([*verified, "count", "c"]), 5, "verification failed")
    for cmd in (["collection", "list"], ["collection", "show", "c"]):  # they show document counts
        check_error(sub([*verified, *cmd]), 5, "not verified", "cannot be proven yet", "--no-verify")
    assert sub(["--db", db, "--state-file", str(state), "--no-verify", "count", "c"]).out.strip() == "2"


def test_a_server_with_a_state_file_verifies_every_read_or_refuses(server, tmp_path, sub, check_error):
    _proc, addr, db = server
    state = str(tmp_path / "client.json")
    remote = ["--server", addr, "--state-file", state]
    r = sub([*remote, "--trust-on-first-use", "collection", "create", "c"])
    assert r.code == 0, r.err
    pinned = read_trust_file(state).verifier_keys  # the server's key, pinned on first use
    assert pinned and pinned[0] == sub(["--db", db, "key"]).out.strip()
    docs = [{"_id": f"d{i}", "n": i} for i in range(5)]
    assert sub([*remote, "insert", "c", "-"], input=json.dumps(docs)).code == 0
    assert [d["_id"] for d in sub([*remote, "find", "c", '{"n": {"$gte": 3}}', "--sort", "n"]).json()] == ["d3", "d4"]
    assert len(sub([*remote, "export", "c"]).out.splitlines()) == 5
    assert sub([*remote, "update", "c", "d1", '{"$set": {"n": 10}}']).json()["n"] == 10
    assert [r["document"]["n"] for r in sub([*remote, "history", "c", "d1"]).json()] == [1, 10]
    assert sub([*remote, "count", "c"]).out.strip() == "5"  # proven: a find proof of the current state
    check_error(sub([*remote, "collection", "list"]), 5, "not verified")
    assert sub(["--server", addr, "--no-verify", "count", "c"]).out.strip() == "5"
    assert read_trust_file(state).state.tx_id == 3  # advanced to signed states only
    # a pinned key that is not the server's: newer states are refused, the file stays
    stranger = str(Signer.generate("stranger.example").verifier)
    other = str(tmp_path / "other.json")
    with docstore.connect(addr, verify=False) as plain:
        mid = plain.state()
    write_state_file(other, mid)
    assert sub(["--server", addr, "--no-verify", "insert", "c", "-"], input='{"_id": "late"}').code == 0
    r = sub(["--server", addr, "--state-file", other, "--key", stranger, "get", "c", "late"])
    check_error(r, 5, "not signed by a pinned key")
    assert read_trust_file(other).state == mid


def test_key_checkpoint_and_rotation_commands(tmp_path, sub, check_error):
    db = str(tmp_path / "db")
    r = sub(["--db", db, "init", "--origin", "example.com/trials"])
    assert r.code == 0 and r.json()["origin"] == "example.com/trials"
    key = sub(["--db", db, "key"]).out.strip()
    assert key == r.json()["verifier_key"] and key.startswith("example.com/trials+")
    assert sub(["--db", db, "key", "-f", "json"]).json() == [key]
    note = sub(["--db", db, "checkpoint"]).out
    assert open_checkpoint(note, [Verifier.parse(key)]).state.tx_id == 0
    out = tmp_path / "c.txt"
    assert sub(["--db", db, "checkpoint", "-o", str(out)]).code == 0 and out.read_text() == note
    r = sub(["--db", db, "key", "rotate", "-f", "table"])
    assert r.code == 0 and "still co-signing" in r.out
    keys = sub(["--db", db, "key"]).out.split()
    assert len(keys) == 2 and keys[1] == key
    note = sub(["--db", db, "checkpoint"]).out
    for k in keys:  # both keys sign until the old one is retired
        assert open_checkpoint(note, [Verifier.parse(k)]).state.tx_id == 0
    assert sub(["--db", db, "key", "retire"]).code == 0
    assert sub(["--db", db, "key"]).out.split() == keys[:1]
    check_error(sub(["--db", db, "init", "--origin", "example.com/other"]), 7, "keeps its name")
    check_error(sub(["--db", str(tmp_path / "none"), "key"]), 7, "immudoc init")


def test_a_write_with_a_state_file_and_no_pinned_key_is_refused_up_front(tmp_path, sub):
    """Committed, it would leave the state file behind the ledger for good (a newer state needs
    a pinned key's signature), and every later verified read would refuse: so nothing is
    written, and the message says what to pin."""
    db = str(tmp_path / "db")
    assert sub(["--db", db, "init"]).code == 0
    assert sub(["--db", db, "collection", "create", "c"]).code == 0
    state = str(tmp_path / "s.checkpoint")
    assert sub(["--db", db, "state", "--save", state]).code == 0
    before = sub(["--db", db, "state", "--format", "json"]).json()
    refused = sub(["--db", db, "--state-file", state, "insert", "c", "-"], input='{"_id": "a"}')
    assert refused.code == 2 and "--key" in refused.err, refused.err
    assert sub(["--db", db, "state", "--format", "json"]).json() == before  # nothing written
    key = sub(["--db", db, "key"]).out.strip()
    pinned = sub(["--db", db, "--state-file", state, "--key", key, "insert", "c", "-"], input='{"_id": "a"}')
    assert pinned.code == 0, pinned.err
    got = sub(["--db", db, "--state-file", state, "--key", key, "get", "c", "a"])
    assert got.code == 0 and got.json() == {"_id": "a"}
    unverified = sub(["--db", db, "--state-file", state, "--no-verify", "insert", "c", "-"], input='{"_id": "b"}')
    assert unverified.code == 0, unverified.err
