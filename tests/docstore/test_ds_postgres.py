"""docstore with its ledger in PostgreSQL (issue 17): what is particular to it. (The document
suite itself runs on it through the shared ``db`` fixture, kind ``postgres``.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

import docstore
import kvcore
from docstore import StorageError

REPO = Path(__file__).resolve().parents[2]


def _fill(db) -> None:
    c = db.create_collection("p", indexes=["site"])
    c.insert_many([{"_id": f"a{i}", "site": f"s{i % 3}", "n": i} for i in range(40)])
    c.update("a1", {"$set": {"n": 100}})
    c.delete("a2")


def test_proofs_and_audit_on_postgres(pg_url, tmp_path):
    with docstore.open(pg_url, state_dir=tmp_path / "state") as db:
        _fill(db)
        c, state, key = db["p"], db.state(), db.verifier_key()
        assert docstore.verify(c.prove("a1"), state) == {"_id": "a1", "site": "s1", "n": 100}
        assert docstore.verify(c.prove_latest("a1"), state, key)["n"] == 100
        assert docstore.verify(c.prove_absent("a2"), db.checkpoint()) is None
        found = docstore.verify(c.prove_find({"site": "s0"}), state, key)
        assert sorted(d["_id"] for d in found) == sorted(d["_id"] for d in c.find({"site": "s0"}))
        assert db.audit().ok
    with docstore.open(pg_url, state_dir=tmp_path / "state") as db:  # reopened: the same
        assert db.state() == state and db["p"].get("a1")["n"] == 100


def _eventually(probe, seconds: float = 10.0):
    """``probe()``'s first true value within ``seconds`` (another process's commit reaches this
    one by a notification), else its last."""
    deadline = time.monotonic() + seconds
    while True:
        got = probe()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.01)


def test_writers_readers_and_other_machines(pg_url, tmp_path):
    state_dir = tmp_path / "state"
    with docstore.open(pg_url, state_dir=state_dir) as db:
        _fill(db)
        state = db.state()
        with pytest.raises(kvcore.LockedError, match="in use by another writer"):  # one writer a directory
            docstore.open(pg_url, state_dir=state_dir)
        with pytest.raises(StorageError, match="no copy of its signing key"):
            docstore.open(pg_url, state_dir=tmp_path / "other")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kvcore.RecoveryWarning)  # its derived state: built from the log
            with docstore.open(pg_url, state_dir=tmp_path / "other", key_file=state_dir / "signing.key") as w2:
                w2["p"].insert({"_id": "by-w2"})  # a second writer, at the same time
                # seen by the first once notified (LISTEN/NOTIFY: well under a second)
                assert _eventually(lambda: db["p"].find_one({"_id": "by-w2"})) == {"_id": "by-w2"}
                db["p"].insert({"_id": "by-w1"})
                assert _eventually(lambda: w2["p"].find_one({"_id": "by-w1"})) == {"_id": "by-w1"}
                state = db.state()
                assert _eventually(lambda: w2.state() == state)
                assert w2.checkpoint() == db.checkpoint()
        with docstore.open(pg_url, readonly=True, state_dir=tmp_path / "reader") as r:  # no key needed
            assert r["p"].get("a1")["n"] == 100 and r.state() == state
            db["p"].insert({"_id": "late", "site": "s9"})
    # another machine: without the key it may not write (its checkpoints would not verify)
    with pytest.raises(StorageError, match="no copy of its signing key"):
        docstore.open(pg_url, state_dir=tmp_path / "m2")
    key_file = state_dir / "signing.key"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kvcore.RecoveryWarning)  # its derived state: built from the log
        with docstore.open(pg_url, state_dir=tmp_path / "m2", key_file=key_file) as db2:
            assert db2["p"].get("late") == {"_id": "late", "site": "s9"}
            assert db2.audit().ok
            db2["p"].insert({"_id": "from-m2"})
            note = db2.checkpoint()
    with docstore.open(pg_url, state_dir=state_dir) as db:  # the first machine catches up from the log
        assert db["p"].get("from-m2") == {"_id": "from-m2"}
        assert db.checkpoint() == note  # the same key signs the same state the same way


def test_a_changed_row_is_refused(pg_url, tmp_path):
    import psycopg

    with docstore.open(pg_url, state_dir=tmp_path / "state") as db:
        _fill(db)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE kv_tx SET payload = set_byte(payload, 69, get_byte(payload, 69) # 255) WHERE tx_id = 2")
    with pytest.raises((kvcore.CorruptionError, docstore.CorruptDataError)):
        with docstore.open(pg_url, state_dir=tmp_path / "state") as db:
            report = db.audit()
            raise kvcore.CorruptionError(str(report)) if not report.ok else AssertionError("not caught")


def test_the_command_line_takes_a_postgres_url(pg_url, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "IMMUDOC_STATE_DIR": str(tmp_path / "state")}
    env.pop("IMMUDOC_DB", None)

    def immudoc(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", "from docstore.cli import main; main()", "--db", pg_url, *args],
                              input=stdin, capture_output=True, text=True, env=env, timeout=120)

    assert immudoc("init").returncode == 0
    assert immudoc("collection", "create", "visits").returncode == 0
    assert immudoc("insert", "visits", "-", stdin=json.dumps({"_id": "V-1", "mg": 50})).returncode == 0
    got = immudoc("get", "visits", "V-1", "-f", "json")
    assert got.returncode == 0 and json.loads(got.stdout) == {"_id": "V-1", "mg": 50}
    saved = tmp_path / "trusted.checkpoint"
    assert immudoc("state", "--save", str(saved)).returncode == 0
    proof = tmp_path / "p.json"
    assert immudoc("prove", "visits", "V-1", "--latest", "-o", str(proof)).returncode == 0
    checked = immudoc("verify", str(proof), "--state", str(saved))
    assert checked.returncode == 0, checked.stderr
    assert json.loads(immudoc("audit").stdout)["ok"] is True  # JSON in a pipe


def test_a_local_state_of_another_history_is_rebuilt(pg_url, tmp_path):
    """The state directory is a cache of the ledger: pointed at a database that now holds
    another ledger (restored, or dropped and made again), its derived state and key index are
    found to be of another history and rebuilt from the log; nothing stale is read."""
    import psycopg

    state_dir = tmp_path / "state"
    with docstore.open(pg_url, state_dir=state_dir) as db:
        _fill(db)
        assert (state_dir / "index.lmdb").is_dir() and (state_dir / "state.lmdb").is_dir()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("DROP TABLE kv_meta, kv_head, kv_tx, kv_tree")
    key_file = state_dir / "signing.key"
    with pytest.warns(kvcore.RecoveryWarning):
        with docstore.open(pg_url, state_dir=state_dir, key_file=key_file) as db:
            c = db.create_collection("q")
            c.insert({"_id": "only"})
            c.insert({"_id": "two"})
            c.insert({"_id": "three"})
            c.insert({"_id": "four"})
    with warnings.catch_warnings():
        warnings.simplefilter("error", kvcore.RecoveryWarning)  # the rebuilt cache is now the new ledger's
        with docstore.open(pg_url, state_dir=state_dir) as db:
            assert db.collections() == ["q"] and db["q"].count() == 4
            assert db.audit().ok


def test_migrate_a_directory_to_postgres_and_back(pg_cluster, tmp_path):
    """immudoc migrate: directory -> PostgreSQL -> directory; each copy has the source's state
    and signed checkpoint, and holds the same documents; a destination in use is refused."""
    from docstore.migrate import migrate

    src = tmp_path / "src"
    with docstore.open(src) as db:
        _fill(db)
        state, note, docs = db.state(), db.checkpoint(), list(db["p"].find({}))
    url = pg_cluster.new_database()
    r = migrate(src, url, dst_state_dir=tmp_path / "pgstate")
    assert r["transactions"] == state.tx_id and r["checkpoint"] == note
    with docstore.open(url, state_dir=tmp_path / "pgstate") as db:
        assert db.state() == state and list(db["p"].find({})) == docs
        db["p"].insert({"_id": "after"})  # it writes on, signed by the same key
        with docstore.open(src, readonly=True) as old:
            assert db.verifier_key() == old.verifier_key()
        state2 = db.state()
    back = tmp_path / "back"
    r = migrate(url, back, src_state_dir=tmp_path / "pgstate")
    assert r["state"] == state2.to_dict()
    with docstore.open(back) as db:
        assert db["p"].get("after") == {"_id": "after"} and db.audit().ok
    with pytest.raises(docstore.QueryError, match="not a new or empty directory"):
        migrate(src, back)
    with pytest.raises(docstore.QueryError, match="already holds a ledger"):
        migrate(src, url, dst_state_dir=tmp_path / "other")


def test_immudoc_migrate(pg_url, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO), "IMMUDOC_STATE_DIR": str(tmp_path / "state")}
    env.pop("IMMUDOC_DB", None)
    src = tmp_path / "src"
    with docstore.open(src) as db:
        _fill(db)
        state = db.state()
    r = subprocess.run([sys.executable, "-c", "from docstore.cli import main; main()", "migrate", str(src), pg_url, "-f", "json"],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["state"] == state.to_dict() and out["to"] == pg_url and out["transactions"] == state.tx_id
    with docstore.open(pg_url, state_dir=tmp_path / "state") as db:
        assert db.state() == state and db["p"].get("a1")["n"] == 100


def test_a_server_on_a_postgres_database_and_a_verifying_client(pg_url, tmp_path):
    """`immudoc --db postgresql://... serve`, and a client that verifies every read (its first
    state and the server's key pinned on first use): writes, proven reads and counts."""
    import re

    env = {**os.environ, "PYTHONPATH": str(REPO), "IMMUDOC_STATE_DIR": str(tmp_path / "state")}
    env.pop("IMMUDOC_DB", None)
    cli = [sys.executable, "-c", "from docstore.cli import main; main()", "--db", pg_url]
    assert subprocess.run([*cli, "init"], env=env, capture_output=True, timeout=120).returncode == 0
    assert subprocess.run([*cli, "collection", "create", "t", "--index", "k"], env=env, capture_output=True, timeout=120).returncode == 0
    proc = subprocess.Popen([*cli, "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = re.search(r"listening on (127\.0\.0\.1:\d+)", line)
        assert match, line
        with docstore.connect(match.group(1), trust_on_first_use=True, state_file=tmp_path / "client.state") as db:
            db["t"].insert_many([{"_id": f"d{i}", "k": i % 3} for i in range(12)])
            db["t"].update("d4", {"$set": {"k": 9}})
            assert db["t"].get("d4") == {"_id": "d4", "k": 9}  # proven current
            assert db["t"].count({"k": 1}) == 3  # proven complete
            with pytest.raises(docstore.DocumentNotFoundError):
                db["t"].get("nope")  # its absence proven
            state = db.trusted_state
    finally:
        proc.terminate()
        proc.wait(30)
    with pytest.warns(kvcore.RecoveryWarning, match="private copy"):  # a new reader builds its own
        r = docstore.open(pg_url, readonly=True, state_dir=tmp_path / "reader")
    with r:
        assert r.state() == state


def test_a_verifying_reader_on_a_hot_standby_sees_an_older_checkpoint_never_a_wrong_answer(pg_cluster, tmp_path):
    """A verifying docstore reader on a streaming standby: every read is proven against its
    trusted state; while the standby lags, it serves an older (signed) state, never another;
    a trusted state newer than what the standby holds is refused (VerificationError), not
    silently traded for an older one; once it catches up, the same reads verify."""
    if not hasattr(pg_cluster, "standby"):
        pytest.skip("an external server: no standby of ours")
    url = pg_cluster.new_database()
    with docstore.open(url, state_dir=tmp_path / "primary") as primary:
        _fill(primary)
        early = primary.state()
        key = primary.verifier_key()
        standby = pg_cluster.standby()
        try:
            surl = standby.url_of(url)
            primary["p"].insert({"_id": "late", "site": "s9"})
            late = primary.state()
            deadline = time.monotonic() + 30
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", kvcore.RecoveryWarning)
                while True:  # the standby has replayed at least the early state
                    try:
                        with docstore.open(surl, readonly=True, state_dir=tmp_path / "s1") as plain:
                            if plain.state().tx_id >= early.tx_id:
                                break
                    except (kvcore.FormatError, docstore.DocstoreError):
                        pass
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                signer = tmp_path / "primary" / "signing.key"  # the reader's host signs what it serves
                with docstore.open(surl, readonly=True, verify=True, trusted_state=early, verifier_key=key,
                                   key_file=signer, state_dir=tmp_path / "s2") as reader:
                    seen = reader.state()
                    assert seen.tx_id >= early.tx_id and seen == primary.ledger.state(seen.tx_id)  # behind, never other
                    assert reader["p"].get("a1")["n"] == 100  # proven
                    while reader.refresh() < late.tx_id:  # lag: older, then caught up
                        assert time.monotonic() < deadline
                        time.sleep(0.05)
                    assert reader["p"].get("late") == {"_id": "late", "site": "s9"}
                import psycopg

                with psycopg.connect(surl, autocommit=True) as conn:  # the standby lags, for sure
                    conn.execute("SELECT pg_wal_replay_pause()")
                    try:
                        primary["p"].insert({"_id": "newest"})
                        newest = primary.state()
                        with pytest.raises(docstore.VerificationError, match="trusted state"):
                            with docstore.open(surl, readonly=True, verify=True, trusted_state=newest,
                                               verifier_key=key, key_file=signer, state_dir=tmp_path / "s4") as r:
                                r["p"].get("newest")
                    finally:
                        conn.execute("SELECT pg_wal_replay_resume()")
        finally:
            standby.destroy()


def test_a_cut_connection_costs_one_call(pg_url, tmp_path):
    """The writer's PostgreSQL connection terminated by the server (as a network cut or a
    PostgreSQL restart): the call that meets it fails with StorageError and writes nothing (or,
    for a commit whose answer was lost, what it wrote is taken in); the next call connects
    again; nothing acknowledged is lost and the audit passes, without reopening."""
    import psycopg

    with docstore.open(pg_url, state_dir=tmp_path / "state") as db:
        c = db.create_collection("c", indexes=["n"])
        acked = [c.insert({"n": i}) for i in range(5)]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        failures = 0
        for i in range(5, 10):
            try:
                acked.append(c.insert({"n": i}))
            except StorageError:
                failures += 1
        assert failures <= 1  # one call met the cut; the next connected again
        assert [c.get(i)["n"] for i in acked] == [d for d in range(10) if d < 5 or d >= 5 + failures]
        assert c.count({"n": {"$gte": 0}}) == len(acked) and db.audit().ok


def test_a_second_writers_concurrent_first_calls_all_see_what_the_first_wrote(pg_url, tmp_path):
    """Many threads of a second writer, behind the first, call at once: each waits until the
    derived state reflects what was taken in (a thread that found the ledger caught up by
    another's refresh once read the derived state before it was: 'collection does not exist')."""
    import threading

    with docstore.open(pg_url, state_dir=tmp_path / "a") as w1:
        w1.create_collection("c").insert_many([{"n": i} for i in range(200)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kvcore.RecoveryWarning)
            w2 = docstore.open(pg_url, state_dir=tmp_path / "b", key_file=tmp_path / "a" / "signing.key")
        try:
            w1["c"].insert_many([{"n": i} for i in range(200, 400)])  # w2 is behind again
            target = w1.state().tx_id
            assert _eventually(lambda: w2.ledger.durable_count() >= target)  # notified
            counts: list[object] = []
            start = threading.Barrier(8)

            def call() -> None:
                start.wait()
                try:
                    counts.append(w2["c"].count())
                except Exception as e:  # noqa: BLE001 - reported below
                    counts.append(e)

            threads = [threading.Thread(target=call) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert counts == [400] * 8
        finally:
            w2.close()
