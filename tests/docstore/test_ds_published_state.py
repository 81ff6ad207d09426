"""Stateless servers on PostgreSQL (issue 17): a writer publishes its derived state into the
ledger's PostgreSQL database; a server started without a state directory takes it, checks it
against the log as any state directory, and catches up; what an operator changes there is
refused at open or caught by the audit (docs/scale-out.md, "Stateless servers")."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import psycopg
import pytest

import docstore
import kvcore
from docstore import StorageError
from docstore.documents.records import Header, header_key
from docstore.engine import pgsnapshot
from docstore.engine.store import Location, Store

REPO = Path(__file__).resolve().parents[2]


def _fill(db, n: int = 300) -> None:
    c = db.create_collection("visits", indexes=["site", "age"])
    c.insert_many([{"_id": f"v{i:04d}", "site": f"s{i % 7}", "age": i % 90} for i in range(n)])
    c.update("v0001", {"$set": {"age": 200}})
    c.delete("v0002")


def _open_noting(url: str, state_dir: Path, key_file: Path, **kw):
    """Open, returning (database, the RecoveryWarning messages of the open)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        db = docstore.open(url, state_dir=state_dir, key_file=key_file, **kw)
    return db, [str(w.message) for w in caught if issubclass(w.category, kvcore.RecoveryWarning)]


def _same(a, b) -> None:
    """Two databases on one ledger serve the same documents, index answers and state."""
    assert a.state() == b.state() and a.checkpoint() == b.checkpoint()
    for q in ({}, {"site": "s3"}, {"age": {"$gte": 80}}):
        assert list(a["visits"].find(q)) == list(b["visits"].find(q))
    assert b["visits"].explain({"site": "s3"})["plan"] == "index"


def test_a_server_without_a_state_directory_takes_the_published_state(pg_url, tmp_path):
    first = tmp_path / "first"
    with docstore.open(pg_url, state_dir=first) as db:
        _fill(db)
        tx_id, size = db.publish_state()
        assert tx_id == db.tx_id and size > 0
        db["visits"].insert({"_id": "after", "site": "s1", "age": 1})  # the snapshot is behind the log
        assert db.publish_state() == (db.tx_id, db.publish_state()[1])  # newer: replaced; same: kept
        db["visits"].insert({"_id": "later", "site": "s1", "age": 2})
        key = first / "signing.key"
        fresh, notes = _open_noting(pg_url, tmp_path / "new-machine", key)
        with fresh:
            assert not [n for n in notes if "derived state" in n], notes  # taken, not rebuilt
            assert fresh["visits"].get("later") == {"_id": "later", "site": "s1", "age": 2}  # caught up
            _same(db, fresh)
            assert fresh.audit().ok
            fresh["visits"].insert({"_id": "from-new"})  # and it writes
            assert docstore.verify(fresh["visits"].prove_latest("from-new"), fresh.state(), fresh.verifier_key())


def test_without_a_published_state_the_log_is_replayed(pg_url, tmp_path):
    with docstore.open(pg_url, state_dir=tmp_path / "a") as db:
        _fill(db, 50)
        fresh, notes = _open_noting(pg_url, tmp_path / "b", tmp_path / "a" / "signing.key")
        with fresh:
            assert any("derived state was missing; rebuilt it from the log" in n for n in notes)
            _same(db, fresh)


def _snapshot_rows(url: str) -> tuple[tuple, list[bytes]]:
    with psycopg.connect(url) as conn:
        meta = conn.execute("SELECT tx_id, root, size, sha256, chunks FROM ds_snapshot").fetchone()
        chunks = [bytes(r[0]) for r in conn.execute("SELECT data FROM ds_snapshot_chunk ORDER BY seq")]
    return meta, chunks


def _put_snapshot(url: str, data: bytes, tx_id: int, root: bytes) -> None:
    """An operator's own snapshot, with a checksum that matches it."""
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM ds_snapshot_chunk")
        conn.execute("INSERT INTO ds_snapshot_chunk (name, seq, data) VALUES (%s, 0, %s)", (pgsnapshot.NAME, data))
        conn.execute("UPDATE ds_snapshot SET tx_id = %s, root = %s, size = %s, sha256 = %s, chunks = 1",
                     (tx_id, root, len(data), hashlib.sha256(data).digest()))


def _refused(db, url: str, state_dir: Path, key: Path, damage: str, words: str) -> None:
    """Publish anew, apply the operator's ``damage`` (SQL), open a new state directory: the
    published state is set aside with a warning saying ``words``, and the log replayed."""
    db.publish_state()  # (an equal one already there would be kept: first drop it)
    with psycopg.connect(url) as conn:
        conn.execute("DELETE FROM ds_snapshot")
    db.publish_state()
    with psycopg.connect(url) as conn:
        conn.execute(damage)
    fresh, notes = _open_noting(url, state_dir, key)
    with fresh:
        assert any(words in n for n in notes), notes
        _same(db, fresh)


def test_a_damaged_or_foreign_published_state_is_refused_and_the_log_replayed(pg_cluster, pg_url, tmp_path):
    with docstore.open(pg_url, state_dir=tmp_path / "a") as db:
        _fill(db)
        key = tmp_path / "a" / "signing.key"
        # a byte changed in a chunk: its checksum refuses it before it is put in place
        _refused(db, pg_url, tmp_path / "b", key,
                 "UPDATE ds_snapshot_chunk SET data = set_byte(data, 5000, get_byte(data, 5000) # 1) WHERE seq = 0",
                 "could not be taken (the published derived state does not match its checksum)")
        _refused(db, pg_url, tmp_path / "c", key, "UPDATE ds_snapshot SET chunks = chunks + 1", "lacks its part")
        # another ledger's derived state, with a matching checksum: refused by the log's roots
        other_url = pg_cluster.new_database()
        try:
            with docstore.open(other_url, state_dir=tmp_path / "other") as other:
                _fill(other)  # the same documents, another history (other salts, times, roots)
                other.publish_state()
            (tx, root, _size, _sha, _n), chunks = _snapshot_rows(other_url)
        finally:
            pg_cluster.drop(other_url)
        _put_snapshot(pg_url, b"".join(chunks), tx, root)
        fresh, notes = _open_noting(pg_url, tmp_path / "d", key)
        with fresh:
            assert any("published in PostgreSQL (transaction" in n and "did not match the log" in n for n in notes), notes
            _same(db, fresh)
            assert fresh.audit().ok


def test_a_published_state_changed_inside_is_caught_by_the_audit(pg_url, tmp_path):
    """An operator who rewrites a document's location inside the snapshot (and its checksum)
    gets it past the open, which checks the reflected transaction, the root and the state-map
    root; the audit, which rebuilds the derived state from the log, catches it, as it catches a
    local state directory edited on disk, and a verifying reader refuses what it serves."""
    with docstore.open(pg_url, state_dir=tmp_path / "a") as db:
        _fill(db)
        trusted, vkey = db.state(), db.verifier_key()
        first = db.ledger.history(header_key("visits", "v0001"))[0]  # v0001's first revision (age 1)
        db.publish_state()
    (tx, root, _size, _sha, _n), chunks = _snapshot_rows(pg_url)
    work = tmp_path / "work"
    (work / "state.lmdb").mkdir(parents=True)
    (work / "state.lmdb" / "data.mdb").write_bytes(b"".join(chunks))
    store = Store(str(work), readonly=False)
    with store.write() as txn:
        store.put_location(txn, "visits", "v0001", Location(first.tx_id, first.index, 1, Header.decode(first.value).n))
    store.close()
    _put_snapshot(pg_url, (work / "state.lmdb" / "data.mdb").read_bytes(), tx, root)
    fresh, notes = _open_noting(pg_url, tmp_path / "b", tmp_path / "a" / "signing.key")
    with fresh:
        assert fresh["visits"].find_one({"_id": "v0001"})["age"] == 1  # served from the edited state
        report = fresh.audit()
        assert not report.ok and any("derived state" in p for p in report.problems), report.problems
    with pytest.warns(kvcore.RecoveryWarning, match="did not match the log; rebuilt it"), \
            docstore.open(pg_url, state_dir=tmp_path / "b", key_file=tmp_path / "a" / "signing.key") as again:
        assert again["visits"].get("v0001")["age"] == 200  # the failed audit marked it: rebuilt on reopen
    with docstore.open(pg_url, readonly=True, verify=True, trusted_state=trusted, verifier_key=vkey,
                       state_dir=tmp_path / "a") as reader:
        assert reader["visits"].get("v0001")["age"] == 200


def test_publishing_needs_a_postgresql_writer(pg_url, tmp_path):
    with docstore.open(tmp_path / "dir") as db:
        with pytest.raises(StorageError, match="only a database on PostgreSQL"):
            db.publish_state()
        assert db.on_postgres is False
    with docstore.open(pg_url, state_dir=tmp_path / "s") as db:
        assert db.on_postgres is True
        db.create_collection("c")
    with docstore.open(pg_url, readonly=True, state_dir=tmp_path / "s") as ro:
        with pytest.raises(kvcore.ReadOnlyError):
            ro.publish_state()


def test_the_server_publishes_and_the_command_line_too(pg_url, tmp_path):
    sys.path.append(str(REPO / "tests" / "remote"))
    from remote_testlib import ServerProcess

    env = {"IMMUDOC_STATE_DIR": str(tmp_path / "srv")}
    with ServerProcess(pg_url, "--publish-state-seconds", "0.3", env=env) as srv:
        with docstore.connect(srv.target, verify=False) as client:
            client.create_collection("c").insert_many([{"_id": str(i)} for i in range(20)])
            deadline = time.monotonic() + 30
            while "published the derived state at transaction 2" not in srv.stderr and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "published the derived state at transaction 2" in srv.stderr, srv.stderr
            client["c"].insert({"_id": "x"})
    meta, _chunks = _snapshot_rows(pg_url)
    assert meta[0] in (2, 3)
    cli_env = {**os.environ, "PYTHONPATH": str(REPO), "IMMUDOC_STATE_DIR": str(tmp_path / "srv")}
    cli_env.pop("IMMUDOC_DB", None)
    run = subprocess.run([sys.executable, "-c", "from docstore.cli import main; main()", "--db", pg_url, "publish-state", "-f", "json"],
                         capture_output=True, text=True, env=cli_env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["tx"] == 3 and _snapshot_rows(pg_url)[0][0] == 3
    (tmp_path / "d").mkdir()
    docstore.open(tmp_path / "d" / "db").close()
    run = subprocess.run([sys.executable, "-c", "from docstore.cli import main; main()", "--db", str(tmp_path / "d" / "db"), "publish-state"],
                         capture_output=True, text=True, env=cli_env, timeout=120)
    assert run.returncode != 0 and "only a database on PostgreSQL" in run.stderr and "Traceback" not in run.stderr
