"""The server process: startup, health, graceful shutdown, limits, deadlines, streaming."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time

import grpc
import pytest

import docstore
import kvcore
from docstore.remote import DeadlineExceededError, MessageTooLargeError, RemoteError, UnavailableError
from remote_testlib import ROOT, ServerProcess, make_certs


def _health(target: str, service: str = "") -> int:
    from docstore.rpc import health_pb2

    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        return check(health_pb2.HealthCheckRequest(service=service), timeout=5).status


def test_startup_time_and_health(tmp_path, record_property):
    times = []
    for i in range(3):
        with ServerProcess(tmp_path / f"db{i}") as s:
            times.append(s.startup)
            assert s.port > 0 and s.ready_line.startswith("immudoc server listening on 127.0.0.1:")
            assert _health(s.target) == 1  # SERVING
            assert _health(s.target, "immudoc.v1.Docstore") == 1
            with pytest.raises(grpc.RpcError) as e:
                _health(s.target, "something.Else")
            assert e.value.code() == grpc.StatusCode.NOT_FOUND
        assert s.proc.returncode == 0
    record_property("startup_seconds", times)
    print(f"\nserver startup (spawn to listening): {', '.join(f'{t:.3f}' for t in times)} s")


def test_sigterm_lets_calls_in_flight_finish(tmp_path):
    """SIGTERM during a long insert_many: the call completes, the process exits 0, the
    database reopens with every acknowledged document and passes its audit."""
    db_dir = tmp_path / "db"
    with ServerProcess(db_dir, "--grace", "30") as s:
        client = docstore.connect(s.target, verify=False, timeout=120)
        c = client.create_collection("big")
        result: dict = {}

        def slow_insert() -> None:
            try:
                result["ids"] = c.insert_many([{"_id": f"d{i}", "v": i, "pad": "x" * 200} for i in range(3000)])
            except Exception as e:  # noqa: BLE001
                result["error"] = e

        t = threading.Thread(target=slow_insert)
        t.start()
        time.sleep(0.4)  # the call is in flight (3,000 documents take well over a second)
        s.send(signal.SIGTERM)
        t.join(60)
        code = s.stop()
        client.close()
    assert code == 0, s.stderr
    assert "error" not in result, result
    assert len(result["ids"]) == 3000
    assert "stopped, database closed" in s.stderr
    with docstore.open(db_dir) as db:
        assert db["big"].count(verify=False) == 3000
        assert db.audit().ok


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_mid_load(tmp_path, sig):
    """Writers hammer the server; a signal stops it: exit 0, nothing acknowledged is lost, the
    database reopens cleanly and its audit passes."""
    db_dir = tmp_path / "db"
    acked: list[list[str]] = [[] for _ in range(6)]
    failures: list[BaseException] = []
    with ServerProcess(db_dir, "--grace", "10") as s:
        setup = docstore.connect(s.target, verify=False)
        setup.create_collection("load", indexes=["w"])
        setup.close()
        stop = threading.Event()

        def writer(w: int) -> None:
            db = docstore.connect(s.target, verify=False, timeout=30)
            c = db["load"]
            i = 0
            try:
                while not stop.is_set():
                    if i % 5 == 4:
                        ids = c.insert_many([{"_id": f"w{w}-{i}-{j}", "w": w} for j in range(10)])
                    else:
                        ids = [c.insert({"_id": f"w{w}-{i}", "w": w, "i": i})]
                    acked[w].extend(ids)
                    i += 1
            except (UnavailableError, RemoteError, docstore.DocstoreError) as e:
                failures.append(e)  # the server went away: expected after the signal
            finally:
                db.close()

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        s.send(sig)
        code = s.stop(sig)
        stop.set()
        for t in threads:
            t.join(30)
    assert code == 0, s.stderr
    all_acked = [i for a in acked for i in a]
    assert all_acked and len(all_acked) == len(set(all_acked))
    with docstore.open(db_dir) as db:
        stored = {d["_id"] for d in db["load"].find()}
        assert set(all_acked) <= stored  # nothing acknowledged was lost
        assert len(stored) - len(all_acked) <= 6 * 10  # at most the calls cut off in flight
        assert db.audit().ok


def test_warns_when_listening_beyond_loopback_without_tls(tmp_path):
    with ServerProcess(tmp_path / "db", host="0.0.0.0") as s:
        with docstore.connect(s.target, verify=False) as db:
            assert db.collections(verify=False) == []
    assert "WARNING" in s.stderr and "without TLS" in s.stderr
    certs = make_certs(tmp_path / "certs")
    with ServerProcess(tmp_path / "db2", "--tls-cert", certs.server_cert, "--tls-key", certs.server_key, host="0.0.0.0") as s:
        pass
    assert "WARNING" not in s.stderr
    with ServerProcess(tmp_path / "db3") as s:
        pass
    assert "WARNING" not in s.stderr


def _run(*args: str) -> subprocess.CompletedProcess:
    import os

    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "docstore.server", *args], capture_output=True, text=True, timeout=60, env=env, cwd=ROOT
    )


def test_configuration_errors(tmp_path):
    db = str(tmp_path / "db")
    r = _run("--db", db, "--port", "0", "--tls-cert", str(tmp_path / "c.pem"))
    assert r.returncode == 2 and "both a certificate and its key" in r.stderr
    r = _run("--db", db, "--port", "0", "--tls-cert", str(tmp_path / "c.pem"), "--tls-key", str(tmp_path / "k.pem"))
    assert r.returncode == 2 and "cannot read the TLS" in r.stderr
    r = _run("--db", db, "--port", "0", "--client-ca", str(tmp_path / "ca.pem"))
    assert r.returncode == 2 and "mutual TLS" in r.stderr
    r = _run("--db", db, "--port", "0", "--tokens-file", str(tmp_path / "none"))
    assert r.returncode == 2 and "tokens file" in r.stderr
    r = _run("--db", db, "--port", "0", "--max-message-mb", "0")
    assert r.returncode == 2
    r = _run("--port", "0")
    assert r.returncode == 2  # argparse: --db is required
    for port in ("99999", "-1", "65536", "http"):  # range-checked, never wrapped or taken as "any"
        r = _run("--db", db, "--port", port)
        assert r.returncode == 2 and "port" in r.stderr, (port, r.stderr)
    r = _run("--db", db, "--port", "0", "--max-call-seconds", "0")
    assert r.returncode == 2 and "--max-call-seconds" in r.stderr


def test_every_call_has_a_deadline_even_when_the_client_sets_none(tmp_path):
    """The server stops a call's queries at its own limit (--max-call-seconds) when the client
    gives no deadline (a find stream has none by default), and at the client's max_time_ms;
    the server answers others meanwhile and after."""
    from docstore.errors import QueryTimeoutError

    with ServerProcess(tmp_path / "db", "--max-call-seconds", "1.5") as s:
        db = docstore.connect(s.target, verify=False, timeout=None)
        db.stream_timeout = None
        c = db.create_collection("e")
        c.insert_many([{"s": "a" * 60 + "!"} for _ in range(20)])  # 20 s of backtracking at 1 s each
        started = time.monotonic()
        with pytest.raises(QueryTimeoutError):
            list(c.find({"s": {"$regex": "^(a|aa)+$"}}))
        with pytest.raises(QueryTimeoutError):
            c.count({"s": {"$regex": "^(a|aa)+$"}}, max_time_ms=500)
        assert time.monotonic() - started < 15  # stopped: not 2 x 20 s of regex
        assert c.count({}, verify=False) == 20 and _health(s.target) == 1
        db.close()


def test_locked_database_and_busy_port(tmp_path):
    with ServerProcess(tmp_path / "db") as s:
        r = _run("--db", str(tmp_path / "db"), "--port", "0")
        assert r.returncode == 7 and "cannot open the database" in r.stderr and "LockedError" in r.stderr
        r = _run("--db", str(tmp_path / "other"), "--port", str(s.port))
        assert r.returncode == 2 and "cannot listen" in r.stderr


def test_maximum_message_size(tmp_path):
    with ServerProcess(tmp_path / "db", "--max-message-mb", "1") as s:
        db = docstore.connect(s.target, verify=False, timeout=60)
        assert db.max_message_bytes == 1024 * 1024
        c = db.create_collection("m")
        # 3 MB in 3,000 documents: sent in several messages under the limit, one transaction
        ids = c.insert_many([{"i": i, "pad": "p" * 1000} for i in range(3000)])
        assert len(ids) == 3000 and c.count(verify=False) == 3000
        assert sum(1 for _ in c.find()) == 3000  # streamed in pages under the limit
        with db.transaction() as tx:  # a transaction's writes span several messages too
            t = tx["m"]
            t.update(ids[0], {"$set": {"first": True}})
            t.insert_many([{"tx": i, "pad": "q" * 1000} for i in range(2500)])
        assert c.count(verify=False) == 5500 and c.get(ids[0])["first"] is True
        assert len({r.tx_id for r in c.history(ids[0])[1:]} | {tx.tx_id}) == 1
        with pytest.raises(MessageTooLargeError) as e:
            c.insert({"huge": "h" * (2 * 1024 * 1024)})  # one document over the limit
        assert e.value.code == "RESOURCE_EXHAUSTED" and isinstance(e.value, RemoteError)
        assert c.count(verify=False) == 5500
        # a write whose reply (the whole document) is over the limit still reaches the client:
        # a write never commits on the server and then fails on its way back
        c.insert({"_id": "big", "a": "x" * 600_000})
        before = db.state().tx_id
        new = c.update("big", {"$set": {"b": "y" * 600_000}})
        assert len(new["a"]) == len(new["b"]) == 600_000 and db.state().tx_id == before + 1
        assert c.get("big") == new
        with pytest.raises(MessageTooLargeError):  # a request over the limit writes nothing
            c.replace("big", new)
        assert db.state().tx_id == before + 1
        db.close()


def test_deadlines(tmp_path):
    with ServerProcess(tmp_path / "db") as s:
        db = docstore.connect(s.target, verify=False, timeout=60)
        c = db.create_collection("d")
        c.insert_many([{"i": i, "pad": "x" * 100} for i in range(2000)])
        hasty = docstore.connect(s.target, verify=False)
        hc = hasty["d"]
        hasty.timeout = hasty.stream_timeout = 0.002  # per-call deadlines from now on
        with pytest.raises(DeadlineExceededError) as e:
            hc.insert_many([{"i": i} for i in range(3000)])
        assert isinstance(e.value, TimeoutError) and e.value.code == "DEADLINE_EXCEEDED"
        with pytest.raises(DeadlineExceededError):
            list(hc.find({}, sort="i"))
        hasty.timeout = hasty.stream_timeout = 30
        assert hc.count({"i": {"$gte": 0}}, verify=False) >= 2000  # the same connection works with time to spare
        hasty.close()
        assert _health(s.target) == 1  # the server is fine
        assert c.count(verify=False) >= 2000
        db.close()


def test_find_is_streamed_and_can_be_abandoned(tmp_path):
    with ServerProcess(tmp_path / "db") as s:
        db = docstore.connect(s.target, state_file=tmp_path / "st.json", trust_on_first_use=True)
        c = db.create_collection("s")
        c.insert_many([{"i": i} for i in range(2500)])
        it = c.find({}, sort="i", page_size=100)
        assert [next(it)["i"] for _ in range(5)] == [0, 1, 2, 3, 4]
        it.close()  # cancels the stream
        assert [d["i"] for d in c.find({"i": {"$gte": 2490}}, sort="i", page_size=3)] == list(range(2490, 2500))
        assert sum(1 for _ in c.find({}, page_size=7)) == 2500
        verified = list(c.find({"i": {"$lt": 300}}, sort=[("i", -1)], skip=10, limit=250, verify=True, page_size=64))
        assert [d["i"] for d in verified] == list(range(289, 39, -1))
        assert list(c.find({"i": 5}, projection={"_id": 0}, verify=True)) == [{"i": 5}]
        abandoned = c.find({}, verify=True, page_size=10)
        next(abandoned)
        del abandoned
        assert c.count(verify=False) == 2500 and db.audit().ok
        db.close()


def test_cli_hook_serve_in_process(tmp_path):
    """What `immudoc serve` calls: serve(...) returns 0 once stopped, the database closed."""
    import io

    from docstore.server.cli_hook import serve

    out, err = io.StringIO(), io.StringIO()
    stop = threading.Event()
    ports: list[int] = []
    result: list[int] = []
    t = threading.Thread(
        target=lambda: result.append(
            serve(str(tmp_path / "db"), "127.0.0.1", 0, out=out, err=err, stop=stop, on_ready=ports.append, grace=5)
        )
    )
    t.start()
    for _ in range(300):
        if ports:
            break
        time.sleep(0.05)
    assert ports and f"listening on 127.0.0.1:{ports[0]}" in out.getvalue()
    with docstore.connect(f"127.0.0.1:{ports[0]}", verify=False) as db:
        db.create_collection("c").insert({"_id": "x"})
    stop.set()
    t.join(30)
    assert result == [0] and "database closed" in err.getvalue()
    with docstore.open(tmp_path / "db") as db:  # not locked any more
        assert db["c"].get("x") == {"_id": "x"}
    assert serve(str(tmp_path / "db"), "127.0.0.1", 0, tls_cert="c.pem", out=out, err=err) == 2


def test_client_arguments_are_checked_before_any_call(tmp_path):
    with ServerProcess(tmp_path / "db") as s:
        with pytest.raises(docstore.QueryError, match="printable ASCII"):
            docstore.connect(s.target, verify=False, token="é")
        with pytest.raises(docstore.QueryError, match="names no transaction"):
            docstore.connect(s.target, trusted_state=kvcore.State(-1, bytes(32)))
        with pytest.raises(docstore.StorageError, match="cannot write the state file"):
            docstore.connect(s.target, state_file=tmp_path / "missing" / "s.json", trust_on_first_use=True)
