"""Two immudoc server processes on one PostgreSQL ledger, eight client threads each, for a minute
(issue 17): every acknowledged write is there, exactly once; every state and signed checkpoint a
client saw is on one chain (a consistency proof from its first to its last verifies); a unique
value claimed through both servers has one owner; the audit passes. Halfway, one server is
killed (SIGKILL, mid-commit under this load) and started again: its clients' writes go on
(sent again with their idempotency keys), nothing half-written, nothing twice.

``IMMUDOC_SCALE_SECONDS`` shortens the run (default 60)."""

from __future__ import annotations

import os
import threading
import time


import docstore
import kvcore
from docstore.errors import DuplicateKeyError
from docstore.proofs.checkpoint import open_checkpoint
from docstore.proofs.note import Verifier
from docstore.remote import RemoteError
from remote_testlib import ServerProcess

SECONDS = float(os.environ.get("IMMUDOC_SCALE_SECONDS", "60"))
THREADS = 8


def _server(url: str, state_dir, key_file=None, port: int | None = None) -> ServerProcess:
    env = {"IMMUDOC_STATE_DIR": str(state_dir)}
    if key_file is not None:
        env["IMMUDOC_KEY_FILE"] = str(key_file)
    return ServerProcess(url, *(["--port", str(port)] if port else []), env=env)


def test_two_servers_on_one_postgres_ledger(pg_url, tmp_path):
    a = _server(pg_url, tmp_path / "a")
    key = tmp_path / "a" / "signing.key"
    b = _server(pg_url, tmp_path / "b", key_file=key)
    servers = {"a": a, "b": b}
    try:
        admin = docstore.connect(a.target, verify=False)
        admin.create_collection("orders", indexes=[{"field": "email", "unique": True}, "t"])
        pinned = [Verifier.parse(k) for k in admin.verifier_keys()]
        admin.close()

        acks: dict[str, dict] = {}
        owners: dict[str, str] = {}
        seen: dict[str, list[kvcore.State]] = {}
        notes: dict[str, list[str]] = {}
        errors: list[str] = []
        lock = threading.Lock()
        stop = time.monotonic() + SECONDS

        def client(name: str, server: str) -> None:
            db = docstore.connect(servers[server].target, verify=False, timeout=30)
            coll = db["orders"]
            states, cps = [db.state()], [db.checkpoint()]
            i = 0
            while time.monotonic() < stop:
                doc = {"t": name, "i": i, "email": f"{name}-{i}", "paid": 0}
                try:
                    doc_id = coll.insert(doc)
                    with lock:
                        acks[doc_id] = doc
                    if i % 5 == 0:
                        coll.update(doc_id, {"$inc": {"paid": 1}})
                        with lock:
                            acks[doc_id] = {**doc, "paid": 1}
                    if i % 7 == 0:  # a value every client races for, through both servers
                        shared = f"shared-{i % 40}"
                        try:
                            won = coll.insert({"t": name, "email": shared})
                            with lock:
                                assert shared not in owners, f"{shared} claimed twice"
                                owners[shared] = won
                        except DuplicateKeyError:
                            pass
                    if i % 20 == 0:
                        states.append(db.state())
                except RemoteError as e:  # the killed server: its retries ran out
                    with lock:
                        errors.append(f"{name}: {type(e).__name__}")
                    time.sleep(0.5)
                i += 1
            states.append(db.state())
            cps.append(db.checkpoint())
            with lock:
                seen[name], notes[name] = states, cps
            db.close()

        threads = [
            threading.Thread(target=client, args=(f"{s}{t}", s)) for s in ("a", "b") for t in range(THREADS)
        ]
        for th in threads:
            th.start()
        time.sleep(SECONDS / 2)
        port = b.port
        b.kill()  # SIGKILL under load: mid-commit, or between a commit and its answer
        b = servers["b"] = _server(pg_url, tmp_path / "b", key_file=key, port=port)
        for th in threads:
            th.join(SECONDS + 120)
        assert not any(th.is_alive() for th in threads)
    finally:
        for s in servers.values():
            s.__exit__(None, None, None)

    with docstore.open(pg_url, readonly=True, state_dir=tmp_path / "check") as db:
        ledger = db.ledger
        coll = db["orders"]
        docs = {d["_id"]: d for d in coll.find({"i": {"$exists": True}})}
        for doc_id, doc in acks.items():  # every acknowledged write, as acknowledged
            assert {k: docs[doc_id][k] for k in doc} == doc, doc_id
        emails = [d["email"] for d in docs.values()]
        assert len(emails) == len(set(emails))  # nothing committed twice (a resent insert)
        for shared, owner in owners.items():
            assert [d["_id"] for d in coll.find({"email": shared})] == [owner]
        for name, states in seen.items():  # one chain: each client's states are the ledger's
            for s in states:
                assert ledger.state(s.tx_id) == s
            first, last = states[0], states[-1]
            kvcore.verify_consistency(first, last, ledger.prove_consistency(first.tx_id, last.tx_id))
            opened = [open_checkpoint(n, pinned) for n in notes[name]]  # signed by the one key
            for c in opened:
                assert ledger.state(c.state.tx_id) == c.state
        assert len(acks) > 16 * 10
        assert db.audit().ok
    print(f"{len(acks)} documents acknowledged, {len(owners)} shared values, "
          f"{ledger.tx_id} transactions, client errors after the kill: {len(errors)}")


CLI = "from docstore.cli import main; main()"


def _cpu_ticks(pid: int) -> int:
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_serve_processes_shares_one_port_among_processes(pg_url, tmp_path):
    """`immudoc serve --processes 3`: three server processes on one port, each writing to the
    one PostgreSQL ledger; connections are spread among them (each one's CPU time grows under
    load); SIGTERM stops them all; a directory database is refused (one writer process)."""
    import re
    import signal
    import subprocess
    import sys

    from remote_testlib import ROOT

    env = {**os.environ, "PYTHONPATH": str(ROOT), "IMMUDOC_STATE_DIR": str(tmp_path / "state")}
    r = subprocess.run([sys.executable, "-c", CLI, "--db", str(tmp_path / "dir"), "init"],
                       env=env, capture_output=True, text=True)
    r = subprocess.run([sys.executable, "-m", "docstore.server", "--db", str(tmp_path / "dir"), "--port", "0",
                        "--processes", "2"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "PostgreSQL" in r.stderr
    proc = subprocess.Popen([sys.executable, "-c", CLI, "--db", pg_url, "serve", "--port", "0",
                             "--processes", "3"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        m = re.search(r"3 processes listening on \S+:(\d+) \(pids ([\d, ]+)\)", line)
        assert m, (line, proc.stderr.read() if proc.poll() is not None else "")
        port, pids = int(m.group(1)), [int(p) for p in m.group(2).split(", ")]
        before = {p: _cpu_ticks(p) for p in pids}
        clients = [docstore.connect(f"127.0.0.1:{port}", verify=False) for _ in range(12)]
        clients[0].create_collection("c")
        ids = []
        for round_ in range(40):
            for k, db in enumerate(clients):
                ids.append(db["c"].insert({"k": k, "r": round_}))
        deadline = time.monotonic() + 10
        for db in clients:  # every process sees every other's commits (once notified)
            while db["c"].count(verify=False) != len(ids):
                assert time.monotonic() < deadline
                time.sleep(0.01)
            assert db["c"].get(ids[-1])["r"] == 39
        grew = [p for p in pids if _cpu_ticks(p) > before[p] + 5]
        assert len(grew) >= 2, "the connections were not spread among the processes"
        for db in clients:
            db.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    with docstore.open(pg_url, readonly=True, state_dir=tmp_path / "check") as db:
        assert db["c"].count() == len(ids) and db.audit().ok
