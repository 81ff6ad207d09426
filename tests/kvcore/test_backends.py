"""The ledger on each storage backend: the directory of files and PostgreSQL (issue 17).

The same behaviours on both (commits, reads as of a transaction, history, proofs, consistency,
audit, reopening, one writer, readers that refresh), and what is particular to PostgreSQL:
tampering with its rows, a writer killed mid-commit, the server stopped under a writer.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kvcore
from kvcore import Ledger
from kvcore.errors import CorruptionError, LockedError, StorageError


@pytest.fixture(params=["file", "postgres"])
def where(request, tmp_path):
    """Where a new ledger goes: a directory, or a new PostgreSQL database's URL."""
    if request.param == "file":
        return str(tmp_path / "ledger")
    return request.getfixturevalue("pg_url")


def _fill(led: Ledger, n: int = 30) -> list[kvcore.State]:
    states = []
    for i in range(n):
        with led.transaction() as tx:
            tx.set(b"k%02d" % (i % 7), b"v%d" % i)
            tx.set(b"n%03d" % i, b"x" * (i % 5))
            if i % 9 == 8:
                tx.delete(b"k%02d" % ((i + 1) % 7))
        states.append(led.state())
    return states


def test_the_ledger_behaves_the_same(where):
    with Ledger.open(where) as led:
        states = _fill(led)
        assert led.tx_id == 30
        latest = {k: led.lookup(k) for k in (b"k%02d" % j for j in range(7))}
        hist = led.history(b"k03")
        assert [e.value for e in hist if not e.deleted][-1:] == [latest[b"k03"].value] if latest[b"k03"] else True
        assert led.get(b"n005").value == b"x" * 0 or led.get(b"n005").value == b""
        assert led.get(b"k00", at_tx=1).value == b"v0"
        assert [e.key for e in led.scan(b"n00")][:3] == [b"n000", b"n001", b"n002"]
        # proofs: an entry, consistency between two states, all verified against states
        p = led.prove_entry(b"n010")
        kvcore.verify_entry(p, b"n010", b"x" * 0, led.state())
        cp = led.prove_consistency(states[4].tx_id, states[-1].tx_id)
        kvcore.verify_consistency(states[4], states[-1], cp)
        assert led.audit().ok
    with Ledger.open(where) as again:  # reopened: the same state, the same answers
        assert again.state() == states[-1]
        assert again.get(b"k00", at_tx=1).value == b"v0"
        assert {k: again.lookup(k) for k in latest} == latest
        assert again.audit().ok


def test_writers_and_readers(where):
    """Files: one writer (a second gets LockedError). PostgreSQL: any number of writers, each
    taking in the others' transactions before its own; a conflict across processes is one."""
    with Ledger.open(where) as w:
        w.set(b"a", b"1")
        if not where.startswith("postgresql://"):
            with pytest.raises(LockedError):
                Ledger.open(where)
        else:
            with Ledger.open(where) as w2:
                tx = w.transaction()
                assert tx.get(b"a").value == b"1"
                w2.set(b"a", b"2")  # another writer changes what tx read
                tx.set(b"b", b"from w")
                with pytest.raises(kvcore.ConflictError):
                    tx.commit()
                w.set(b"c", b"3")  # w takes in w2's transaction first: one chain
                assert w.get(b"a").value == b"2" and w.tx_id == 3
                assert w2.refresh() == 3 and w2.state() == w.state()
                w2.delete(b"c")
            w.refresh()
            assert w.lookup(b"c") is None
            w.delete(b"a")
            w.set(b"a", b"1")
            assert w.audit().ok
        with Ledger.open(where, readonly=True) as r:
            assert r.get(b"a").value == b"1"
            w.set(b"b", b"2")
            assert r.refresh() == w.tx_id and r.get(b"b").value == b"2"
            assert r.state() == w.state()
    with Ledger.open(where, wait=5) as w2:  # the lock went with the writer
        assert w2.get(b"b").value == b"2"


def test_one_writer_on_postgres_when_asked(pg_url):
    from kvcore.storage.postgres import PostgresStorage

    first = Ledger(PostgresStorage(pg_url, one_writer=True))
    try:
        first.set(b"a", b"1")
        with pytest.raises(LockedError):
            PostgresStorage(pg_url, one_writer=True)
    finally:
        first.close()
    Ledger(PostgresStorage(pg_url, one_writer=True)).close()  # released with the session


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=st.lists(st.tuples(st.binary(min_size=1, max_size=4), st.one_of(st.none(), st.binary(max_size=40))),
                    min_size=1, max_size=25))
def test_both_backends_give_byte_identical_ledgers(tmp_path_factory, pg_cluster, ops):
    """The same transactions (same bytes, same timestamps: the file ledger's payloads are
    appended as they are) give the same roots, proofs and audit on both."""
    d = str(tmp_path_factory.mktemp("same") / "led")
    url = pg_cluster.new_database()
    with Ledger.open(d) as f:
        model: dict[bytes, bytes] = {}
        for k, v in ops:
            if v is None:
                if k in model:
                    f.delete(k)
                    del model[k]
            else:
                f.set(k, v)
                model[k] = v
        if not f.tx_id:
            return
        payloads = [(tx_id, body, extra) for tx_id, body, extra in f._storage.scan(1)]
        fstates = [f.state(i) for i in range(1, f.tx_id + 1)]
        fnodes = f._storage.tree_nodes()
    from kvcore.storage.postgres import PostgresStorage

    pg = PostgresStorage(url)
    tree = kvcore.tree.MerkleTree()
    for _tx_id, body, extra in payloads:
        before = len(tree.nodes())
        tree.append(kvcore.hashing.tx_leaf_hash(body[: kvcore.hashing.header_size(body)]))
        pg.append(body, extra, tree.nodes()[before:])
    pg.close()
    with Ledger.open(url) as p:
        assert [p.state(i) for i in range(1, p.tx_id + 1)] == fstates
        assert p._storage.tree_nodes() == fnodes
        for k, v in model.items():
            assert p.get(k).value == v
            kvcore.verify_entry(p.prove_entry(k), k, v, fstates[-1])
        assert p.audit().ok


# ----------------------------------------------------------------- PostgreSQL in particular
def _psql(url: str, sql: str, *args) -> list:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql, args or None)
        return cur.fetchall() if cur.description else []


def _refused(url: str) -> str:
    """Opening the ledger, or its audit, refuses it; returns what was said."""
    try:
        with Ledger.open(url) as led:
            report = led.audit()
    except (CorruptionError, StorageError) as e:
        return str(e)
    assert not report.ok, "a changed ledger passed its audit"
    return str(report)


def test_changed_rows_are_caught(pg_cluster):
    """What someone with write access to the database could do to the rows, each caught."""
    import zlib

    def fresh() -> str:
        url = pg_cluster.new_database()
        with Ledger.open(url) as led:
            _fill(led, 10)
        return url

    url = fresh()  # a byte of a payload changed
    _psql(url, "UPDATE kv_tx SET payload = set_byte(payload, 59, get_byte(payload, 59) # 255) WHERE tx_id = 4")
    assert "checksum" in _refused(url)
    url = fresh()  # ... and its checksum recomputed: the tree does not lead to it
    (payload, extra), = _psql(url, "SELECT payload, extra FROM kv_tx WHERE tx_id = 4")
    changed = bytes(payload[:59]) + bytes([payload[59] ^ 1]) + bytes(payload[60:])
    crc = zlib.crc32(bytes(extra), zlib.crc32(changed))
    _psql(url, "UPDATE kv_tx SET payload = %s, crc = %s WHERE tx_id = 4", changed, crc)
    _refused(url)
    url = fresh()  # a transaction taken out of the middle
    _psql(url, "DELETE FROM kv_tx WHERE tx_id = 5")
    assert "missing" in _refused(url)
    url = fresh()  # the head moved back (the last transactions hidden): the tree says more
    _psql(url, "UPDATE kv_head SET tx_count = 7")
    with Ledger.open(url) as led:
        assert led.tx_id == 7  # what the head says; a verifier holding state 10 refuses it
    url = fresh()  # the tree's rows changed: derived, so rebuilt from the transactions
    _psql(url, "UPDATE kv_tree SET nodes = overlay(nodes placing '\\x00'::bytea from 1 for 1)")
    with pytest.warns(kvcore.RecoveryWarning):
        with Ledger.open(url) as led:
            assert led.audit().ok


WRITER = textwrap.dedent(
    """
    import sys
    from kvcore import Ledger
    led = Ledger.open(sys.argv[1])
    i = 0
    while True:
        led.set(b"w%06d" % i, b"v" * 100)
        print(i, flush=True)
        i += 1
    """
)


def test_a_writer_killed_mid_commit_loses_nothing_acknowledged(pg_url, tmp_path):
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    proc = subprocess.Popen([sys.executable, str(script), pg_url], stdout=subprocess.PIPE, text=True)
    acked = -1
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line:
            acked = int(line.split()[0])
        if acked >= 150:
            break
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    with Ledger.open(pg_url, wait=10) as led:  # the killed session's lock is gone with it
        for i in range(acked + 1):
            assert led.get(b"w%06d" % i).value == b"v" * 100
        assert led.audit().ok
        led.set(b"after", b"1")  # and it writes on


def test_the_server_stopped_under_a_writer(pg_cluster):
    """PostgreSQL stopped (immediate: as a crash) under an open writer: commits fail with a typed
    error and nothing half-written; after a restart every acknowledged commit is there."""
    if not hasattr(pg_cluster, "stop"):
        pytest.skip("an external server is not ours to stop")
    url = pg_cluster.new_database()
    led = Ledger.open(url)
    for i in range(20):
        led.set(b"s%02d" % i, b"v")
    state = led.state()
    pg_cluster.stop("immediate")
    try:
        with pytest.raises(StorageError):
            led.set(b"lost", b"v")
        assert led.state() == state  # the failed commit changed nothing
    finally:
        pg_cluster.start()
        led.close()
    with Ledger.open(url, wait=10) as again:
        assert again.state() == state and again.lookup(b"lost") is None
        assert again.audit().ok


MANY = textwrap.dedent(
    """
    import json, sys, threading, time
    from kvcore import Ledger
    url, name, seconds, threads = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])
    led = Ledger.open(url)
    acks, states, errors = [], [led.state()], []
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def work(t):
        i = 0
        while time.monotonic() < stop:
            key = f"{name}-{t}-{i}".encode()
            try:
                tx_id = led.set(key, b"v" + key)
            except Exception as e:
                errors.append(repr(e))
                return
            with lock:
                acks.append([key.decode(), tx_id])
                if i % 10 == 0:
                    states.append(led.state())
            i += 1

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    states.append(led.state())
    print(json.dumps({"acks": acks, "errors": errors,
                      "states": [[s.tx_id, s.root.hex()] for s in states if s.tx_id]}))
    led.close()
    """
)


def test_many_writers_one_chain(pg_url, tmp_path):
    """Two processes, four threads each, writing to one PostgreSQL ledger at once: every
    acknowledged write is there, at its transaction; every state either saw is on the one chain
    (a consistency proof from its first to its last verifies); the audit passes."""
    script = tmp_path / "many.py"
    script.write_text(MANY)
    Ledger.open(pg_url).close()  # created once, before the writers race
    procs = [subprocess.Popen([sys.executable, str(script), pg_url, f"p{j}", "6", "4"], stdout=subprocess.PIPE, text=True)
             for j in range(2)]
    import json

    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    warnings.simplefilter("error", kvcore.RecoveryWarning)  # the stored tree is intact: nothing to repair
    with Ledger.open(pg_url) as led:
        total = 0
        for r in results:
            assert r["errors"] == []
            assert len(r["acks"]) > 20
            total += len(r["acks"])
            for key, tx_id in r["acks"]:
                e = led.get(key.encode())
                assert (e.value, e.tx_id) == (b"v" + key.encode(), tx_id)
            seen = [kvcore.State(t, bytes.fromhex(h)) for t, h in r["states"]]
            for s in seen:
                assert led.state(s.tx_id) == s  # every state either process saw is the ledger's
            kvcore.verify_consistency(seen[0], seen[-1], led.prove_consistency(seen[0].tx_id, seen[-1].tx_id))
        assert led.tx_id == total  # one transaction an acknowledgement, none lost, none twice
        assert led.audit().ok


def test_a_ledger_copies_between_backends_byte_for_byte(tmp_path, pg_cluster):
    """Files -> PostgreSQL -> files: every state, entry and proof the same; a copy into a ledger
    that is not empty is refused."""
    src = str(tmp_path / "src")
    with Ledger.open(src) as led:
        states = _fill(led, 25)
        entries = {k: led.lookup(k) for k in (b"k%02d" % j for j in range(7))}
    url = pg_cluster.new_database()
    seen = []
    assert kvcore.copy_ledger(src, url, progress=lambda done, total: seen.append((done, total))) == states[-1]
    assert seen[-1] == (25, 25)
    back = str(tmp_path / "back")
    assert kvcore.copy_ledger(url, back) == states[-1]
    for where in (url, back):
        with Ledger.open(where) as led:
            assert [led.state(s.tx_id) for s in states] == states
            assert {k: led.lookup(k) for k in entries} == entries
            kvcore.verify_entry(led.prove_entry(b"n010"), b"n010", b"", states[-1])
            assert led.audit().ok
    with pytest.raises(kvcore.InvalidInputError, match="already holds a ledger"):
        kvcore.copy_ledger(src, url)
    with Ledger.open(url) as led:
        assert led.state() == states[-1]  # untouched


def test_readers_on_a_hot_standby_see_an_older_state_never_a_wrong_one(pg_cluster):
    """A reader on a streaming standby: it cannot write; what it reads is a state the primary
    had (its root at every transaction is the primary's), at most behind, and it catches up."""
    if not hasattr(pg_cluster, "standby"):
        pytest.skip("an external server: no standby of ours")
    url = pg_cluster.new_database()
    with Ledger.open(url) as primary:
        _fill(primary, 5)
        standby = pg_cluster.standby()
        try:
            surl = standby.url_of(url)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:  # the standby has replayed the ledger's creation
                try:
                    Ledger.open(surl, readonly=True).close()
                    break
                except kvcore.FormatError:
                    time.sleep(0.05)
            w = Ledger.open(surl)
            try:
                with pytest.raises(StorageError, match="read-only"):
                    w.set(b"x", b"y")  # a standby takes no writes
            finally:
                w.close()
            states = _fill(primary, 20)
            with Ledger.open(surl, readonly=True) as reader:
                deadline = time.monotonic() + 30
                while reader.refresh() < primary.tx_id and time.monotonic() < deadline:
                    assert reader.state() == primary.state(reader.tx_id)  # behind, never other
                    time.sleep(0.05)
                assert reader.state() == states[-1]
                kvcore.verify_entry(reader.prove_entry(b"n010"), b"n010", b"", states[-1])
                cp = reader.prove_consistency(5, reader.tx_id)
                kvcore.verify_consistency(primary.state(5), states[-1], cp)
        finally:
            standby.destroy()


def test_the_connection_cut_under_a_writer(pg_url):
    """The writer's connection terminated by the server (as a network cut does): the next commit
    fails with a typed error and writes nothing; reopened, everything acknowledged is there."""
    led = Ledger.open(pg_url)
    try:
        for i in range(10):
            led.set(b"c%02d" % i, b"v")
        state = led.state()
        _psql(pg_url, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                      "WHERE datname = current_database() AND pid <> pg_backend_pid()")
        with pytest.raises(StorageError):
            led.set(b"lost", b"v")
        assert led.state() == state
    finally:
        led.close()
    with Ledger.open(pg_url) as again:
        assert again.state() == state and again.lookup(b"lost") is None
        again.set(b"after", b"v")
        assert again.audit().ok


def test_an_audit_while_another_thread_commits(where):
    """A long scan (the audit) and commits from another thread at once: both go through (on
    PostgreSQL the scan reads on a connection of its own, so a commit never ends it)."""
    import threading

    with Ledger.open(where) as led:
        _fill(led, 60)
        errors: list[BaseException] = []

        def commit() -> None:
            try:
                for i in range(40):
                    led.set(b"t%03d" % i, b"v")
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        t = threading.Thread(target=commit)
        t.start()
        reports = [led.audit() for _ in range(3)]
        t.join()
        assert errors == [] and all(r.ok for r in reports)
        assert led.tx_id == 100 and led.audit().ok


def test_large_transactions_read_back_by_chunks(where):
    """A transaction of several MiB (cached by 256 KiB chunks on PostgreSQL, never whole): every
    entry reads back exact, from the writer (chunks cached as it appended) and from a fresh
    reader (chunks fetched, values straddling chunk boundaries), with proofs."""
    import random

    rnd = random.Random(3)
    items = [(b"big%04d" % i, rnd.randbytes(rnd.randrange(1, 40_000))) for i in range(300)]
    with Ledger.open(where) as led:
        led.set_all(items)
        state = led.state()
        for k, v in items[::7]:
            assert led.get(k).value == v
    with Ledger.open(where, readonly=True) as reader:
        for k, v in reversed(items):
            assert reader.get(k).value == v
        kvcore.verify_entry(reader.prove_entry(items[150][0]), items[150][0], items[150][1], state)
        assert reader.audit().ok
