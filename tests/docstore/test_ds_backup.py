"""Database.backup and docstore.restore: a whole directory database copied and checked against
its manifest (same root, same checkpoint), consistent while a writer goes on; a tampered or
foreign backup is refused and leaves nothing behind."""

from __future__ import annotations

import json
import os
import threading

import pytest

import docstore
import kvcore
from docstore.cli.demo import rewrite_in_log
from docstore import QueryError, StorageError, VerificationError
from docstore.backup import MANIFEST, read_manifest


def _populate(db) -> None:
    visits = db.create_collection("visits", schema={"required": ["site"], "additionalProperties": False,
                                                    "properties": {"site": {"type": "string"}, "n": {"type": "integer"},
                                                                   "name": {"type": "string"}}},
                                  indexes=["site"], require_reason=True)
    visits.insert_many([{"_id": f"v{i}", "site": ["Oslo", "Rome"][i % 2], "n": i} for i in range(30)])
    visits.update("v1", {"$set": {"n": 100}}, reason="correction", user="dr.lee")
    visits.insert({"_id": "p", "site": "Oslo", "name": "Ada"})
    visits.erase("p", ["/name"], reason="consent withdrawn")
    people = db.create_collection("people", indexes=[{"field": "email", "unique": True}])
    people.insert({"_id": "a", "email": "a@example.com"})


def _snapshot(db) -> dict:
    return {
        "state": db.state(),
        "docs": {c: list(db[c].find()) for c in db.collections()},
        "defs": {c: (db[c].schema, db[c].indexes()) for c in db.collections()},
        "history": [r.to_dict() for r in db["visits"].history("v1")],
        "log": db.log(limit=100),
    }


def test_backup_and_restore_with_the_key(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        _populate(db)
        manifest = db.backup(tmp_path / "bk", with_key=True)
        before = _snapshot(db)
        checkpoint = db.checkpoint()
    assert sorted(os.listdir(tmp_path / "bk")) == ["ledger", MANIFEST, "signing.key"]
    assert manifest == read_manifest(tmp_path / "bk")
    assert manifest["tx_id"] == before["state"].tx_id and manifest["root"] == before["state"].root.hex()
    assert manifest["checkpoint"] == checkpoint and manifest["with_key"] is True
    result = docstore.restore(tmp_path / "bk", tmp_path / "restored")
    assert result["signing_key"] == "the backup's" and result["checkpoint"] == checkpoint
    with docstore.open(tmp_path / "restored") as copy:
        assert _snapshot(copy) == before
        assert set(copy["visits"].get("p")["name"]) == {"$erased"}  # the erasure stays erased
        assert copy.verifier_keys() == manifest["verifier_keys"]
        assert copy.audit().ok
        with pytest.raises(docstore.DuplicateKeyError):  # the unique index came back
            copy["people"].insert({"email": "a@example.com"})


def test_without_the_key_a_new_key_of_the_same_origin_signs(tmp_path):
    with docstore.open(tmp_path / "db", origin="example.com/trials") as db:
        _populate(db)
        manifest = db.backup(tmp_path / "bk")
        state = db.state()
    assert not os.path.exists(tmp_path / "bk" / "signing.key") and manifest["with_key"] is False
    result = docstore.restore(tmp_path / "bk", tmp_path / "restored")
    assert result["signing_key"] == "new" and result["root"] == state.root.hex()
    with docstore.open(tmp_path / "restored") as copy:
        assert copy.state() == state
        assert copy.verifier_key().startswith("example.com/trials+") and copy.verifier_key() not in manifest["verifier_keys"]
    # a given key file: the original key again, so the very same checkpoint
    again = docstore.restore(tmp_path / "bk", tmp_path / "again", key_file=tmp_path / "db" / "signing.key")
    assert again["signing_key"] == "given" and again["checkpoint"] == manifest["checkpoint"]


def test_a_backup_is_consistent_while_a_writer_commits(tmp_path):
    db = docstore.open(tmp_path / "db")
    coll = db.create_collection("c")
    stop = threading.Event()

    def write() -> None:
        i = 0
        while not stop.is_set():
            coll.insert({"n": i})
            i += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        manifests = [db.backup(tmp_path / f"bk{i}") for i in range(3)]
    finally:
        stop.set()
        writer.join()
    for i, m in enumerate(manifests):
        r = docstore.restore(tmp_path / f"bk{i}", tmp_path / f"r{i}")
        assert r["tx_id"] == m["tx_id"] and r["root"] == m["root"]
        with docstore.open(tmp_path / f"r{i}") as copy:
            assert copy["c"].count() == m["tx_id"] - 1
    assert db.tx_id > manifests[0]["tx_id"]
    db.close()


def test_a_tampered_backup_is_refused_and_leaves_nothing(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        _populate(db)
        db.backup(tmp_path / "bk")
    manifest = json.loads((tmp_path / "bk" / MANIFEST).read_text())
    # a manifest claiming another root: its checkpoint does not sign it
    forged = dict(manifest, root="00" * 32)
    (tmp_path / "bk" / MANIFEST).write_text(json.dumps(forged))
    with pytest.raises(VerificationError, match="checkpoint"):
        docstore.restore(tmp_path / "bk", tmp_path / "r1")
    assert not os.path.exists(tmp_path / "r1")
    # a checkpoint checked against a key the caller pins (not the manifest's own)
    (tmp_path / "bk" / MANIFEST).write_text(json.dumps(manifest))
    with docstore.open(tmp_path / "other") as other:
        foreign = other.verifier_key()
    with pytest.raises(VerificationError, match="not signed"):
        docstore.restore(tmp_path / "bk", tmp_path / "r2", verifier_keys=[foreign])
    # a ledger changed after the backup (its checksums fixed, as a careful forger would): the
    # copy does not reproduce the manifest's root
    rewrite_in_log(str(tmp_path / "bk" / "ledger" / "txlog"), b'"a@example.com"', 0, b'"b@example.com"')
    os.makedirs(tmp_path / "r3")
    with pytest.raises((VerificationError, docstore.CorruptDataError)):  # the state map's root, or the tree's
        docstore.restore(tmp_path / "bk", tmp_path / "r3")
    assert os.listdir(tmp_path / "r3") == []  # an empty directory given stays, empty
    # damage without the checksums fixed: found while copying
    txlog = tmp_path / "bk" / "ledger" / "txlog"
    txlog.write_bytes(txlog.read_bytes().replace(b'"b@example.com"', b'"c@example.com"'))
    with pytest.raises(kvcore.CorruptionError):
        docstore.restore(tmp_path / "bk", tmp_path / "r4")
    assert not os.path.exists(tmp_path / "r4")
    assert os.listdir(tmp_path / "r3") == []  # an empty directory given stays, empty


def test_targets_must_be_new(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        db.create_collection("c")
        (tmp_path / "full").mkdir()
        (tmp_path / "full" / "x").write_text("x")
        with pytest.raises(QueryError, match="not a new or empty directory"):
            db.backup(tmp_path / "full")
        db.backup(tmp_path / "bk")
    with pytest.raises(QueryError, match="not a new or empty directory"):
        docstore.restore(tmp_path / "bk", tmp_path / "full")
    with pytest.raises(QueryError, match="not a new or empty directory"):
        docstore.restore(tmp_path / "bk", tmp_path / "db")
    with pytest.raises(StorageError, match="no immudoc backup"):
        docstore.restore(tmp_path / "nothing", tmp_path / "r")
    with pytest.raises(StorageError, match="migrate"):
        docstore.restore(tmp_path / "bk", "postgresql://localhost/x")


def test_a_postgres_database_says_to_use_pg_dump(pg_url, tmp_path):
    with docstore.open(pg_url, state_dir=tmp_path / "state") as db:
        with pytest.raises(StorageError, match="pg_dump"):
            db.backup(tmp_path / "bk")
    assert not os.path.exists(tmp_path / "bk")
