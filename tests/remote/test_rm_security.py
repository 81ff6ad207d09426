"""TLS, mutual TLS and bearer tokens, against real server processes on loopback."""

from __future__ import annotations

import json

import grpc
import pytest

import docstore
from docstore.remote import (
    AuthenticationError,
    DeadlineExceededError,
    PermissionDeniedError,
    RemoteError,
    UnavailableError,
)
from remote_testlib import ServerProcess, make_certs

REFUSED = (UnavailableError, DeadlineExceededError)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    return make_certs(tmp_path_factory.mktemp("certs"))


def _roundtrip(db) -> None:
    c = db.create_collection("t") if "t" not in db.collections(verify=False) else db["t"]
    doc_id = c.insert({"secret": "over TLS"})
    assert c.get(doc_id)["secret"] == "over TLS"


def test_tls(tmp_path, certs):
    args = ("--tls-cert", certs.server_cert, "--tls-key", certs.server_key)
    with ServerProcess(tmp_path / "db", *args) as s:
        assert "tls on" in s.ready_line
        with docstore.connect(s.target, tls=certs.ca, state_file=tmp_path / "st.json", trust_on_first_use=True) as db:
            _roundtrip(db)
        with docstore.connect(f"localhost:{s.port}", tls={"ca": certs.ca}, verify=False) as db:
            assert db.collections(verify=False) == ["t"]
        with pytest.raises(REFUSED):  # plaintext to a TLS port
            docstore.connect(s.target, verify=False, timeout=5)
        with pytest.raises(REFUSED):  # a CA that did not sign the server's certificate
            docstore.connect(s.target, tls=certs.other_ca, verify=False, timeout=5)
        with pytest.raises(REFUSED):  # the name in the certificate is checked
            docstore.connect(s.target, tls={"ca": certs.ca, "server_name": "evil.example"}, verify=False, timeout=5)
    assert s.proc.returncode == 0
    assert "WARNING" not in s.stderr


def test_mutual_tls(tmp_path, certs):
    args = ("--tls-cert", certs.server_cert, "--tls-key", certs.server_key, "--client-ca", certs.ca)
    with ServerProcess(tmp_path / "db", *args) as s:
        assert "tls mutual" in s.ready_line
        mine = docstore.remote.TLS(ca=certs.ca, cert=certs.client_cert, key=certs.client_key)
        with docstore.connect(s.target, tls=mine, verify=False) as db:
            _roundtrip(db)
        with pytest.raises(REFUSED):  # no client certificate
            docstore.connect(s.target, tls=certs.ca, verify=False, timeout=5)
        with pytest.raises(REFUSED):  # a client certificate from another CA
            stranger = {"ca": certs.ca, "cert": certs.other_client_cert, "key": certs.other_client_key}
            docstore.connect(s.target, tls=stranger, verify=False, timeout=5)
        with pytest.raises(docstore.QueryError):
            docstore.connect(s.target, tls={"ca": certs.ca, "cert": certs.client_cert}, verify=False)


def _health(target: str, credentials=None) -> int:
    from docstore.rpc import health_pb2

    channel = grpc.secure_channel(target, credentials) if credentials else grpc.insecure_channel(target)
    with channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=health_pb2.HealthCheckRequest.SerializeToString,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        return check(health_pb2.HealthCheckRequest(), timeout=5).status


@pytest.mark.parametrize("fmt", ["lines", "json-object", "json-list"])
def test_tokens(tmp_path, fmt):
    tokens = {"a-0123456789": "admin", "w-0123456789": "write", "r-0123456789": "read"}
    path = tmp_path / "tokens"
    if fmt == "lines":
        path.write_text("# who may do what\n\na-0123456789 admin\nw-0123456789 write\nr-0123456789   read\n")
    elif fmt == "json-object":
        path.write_text(json.dumps(tokens))
    else:
        path.write_text(json.dumps([{"token": t, "role": r} for t, r in tokens.items()]))
    with ServerProcess(tmp_path / "db", "--tokens-file", str(path)) as s:
        assert "auth 3 tokens" in s.ready_line
        with pytest.raises(AuthenticationError):
            docstore.connect(s.target, verify=False)
        with pytest.raises(AuthenticationError):
            docstore.connect(s.target, verify=False, token="w-wrong")
        assert _health(s.target) == 1  # SERVING: the health check needs no token

        admin = docstore.connect(s.target, token="a-0123456789", verify=False)
        writer = docstore.connect(s.target, token="w-0123456789", state_file=tmp_path / "w.json", trust_on_first_use=True)
        reader = docstore.connect(s.target, token="r-0123456789", state_file=tmp_path / "r.json", trust_on_first_use=True)
        with admin, writer, reader:
            assert admin.role == "admin" and writer.role == "write" and reader.role == "read" and reader.readonly
            with pytest.raises(PermissionDeniedError, match="change collection definitions"):
                writer.create_collection("t")
            admin.create_collection("t", indexes=["k"])
            c = writer["t"]
            doc_id = c.insert({"k": 1})
            before = writer.state()
            rc = reader["t"]
            assert rc.get(doc_id) == {"_id": doc_id, "k": 1}  # verified read with a read token
            assert [d["k"] for d in rc.find({"k": 1}, verify=True)] == [1]
            assert rc.count(verify=False) == 1 and admin.audit().ok
            for token_holder in (reader, writer):  # the full audit: admin, or a token allowed it
                with pytest.raises(PermissionDeniedError, match="full audit"):
                    token_holder.audit()
            attempts = [
                lambda: rc.insert({"k": 2}),
                lambda: rc.insert_many([{"k": 3}] * 5),
                lambda: rc.update(doc_id, {"$set": {"k": 9}}),
                lambda: rc.replace(doc_id, {"k": 9}),
                lambda: rc.delete(doc_id),
                lambda: rc.create_index("x"),
                lambda: rc.set_schema({"type": "object"}),
                lambda: reader.create_collection("u"),
            ]
            for attempt in attempts:
                with pytest.raises(PermissionDeniedError):
                    attempt()
            with pytest.raises(PermissionDeniedError):
                with reader.transaction() as tx:
                    tx["t"].update(doc_id, {"$set": {"k": 10}})
            assert writer.state() == before  # nothing was written
            assert c.get(doc_id) == {"_id": doc_id, "k": 1}
            assert writer.collections(verify=False) == ["t"]
            e = pytest.raises(RemoteError, rc.insert, {"k": 2}).value
            assert e.code == "PERMISSION_DENIED" and isinstance(e, PermissionError)


def test_tokens_with_mutual_tls(tmp_path, certs):
    path = tmp_path / "tokens"
    path.write_text("secret-w admin\n")
    args = ("--tls-cert", certs.server_cert, "--tls-key", certs.server_key, "--client-ca", certs.ca, "--tokens-file", str(path))
    mine = {"ca": certs.ca, "cert": certs.client_cert, "key": certs.client_key}
    with ServerProcess(tmp_path / "db", *args) as s:
        with pytest.raises(AuthenticationError):
            docstore.connect(s.target, tls=mine, verify=False)
        with docstore.connect(s.target, tls=mine, token="secret-w", verify=False) as db:
            _roundtrip(db)
            # the token has no name: the transactions record the client certificate's subject
            doc_id = db["t"].insert({"by": "certificate"}, reason="over mutual TLS")
            rev = db["t"].history(doc_id)[0]
            assert rev.reason == "over mutual TLS" and rev.user and "CN=" in rev.user
        creds = grpc.ssl_channel_credentials(
            open(certs.ca, "rb").read(), open(certs.client_key, "rb").read(), open(certs.client_cert, "rb").read()
        )
        assert _health(s.target, creds) == 1


@pytest.mark.parametrize(
    "content",
    ["tok root\n", "only-a-token\n", "{\"t\": \"root\"}", "[{\"token\": \"t\"}]", "", "{not json", "a read\na write\n"],
)
def test_bad_tokens_file_refuses_to_start(tmp_path, content):
    path = tmp_path / "tokens"
    path.write_text(content)
    s = ServerProcess(tmp_path / "db", "--tokens-file", str(path), wait=False)
    with s:
        assert s.proc.wait(30) == 2
    assert "tokens file" in s.stderr


def test_roles_per_collection_names_audit_and_reload(tmp_path):
    """A token's role in each collection ("*": the others), its name as the principal, the
    audit allowed to a reader, and the file read again when it changes (no restart)."""
    import time

    path = tmp_path / "tokens.json"
    grants = [
        {"token": "t-admin", "name": "Data manager", "role": "admin"},
        {"token": "t-site7", "name": "Site 7", "roles": {"visits": "write", "*": "read"}},
        {"token": "t-only", "roles": {"visits": "read"}},
        {"token": "t-qa", "name": "QA", "role": "read", "audit": True},
    ]
    path.write_text(json.dumps(grants))
    with ServerProcess(tmp_path / "db", "--tokens-file", str(path)) as s:
        admin = docstore.connect(s.target, token="t-admin", verify=False)
        site7 = docstore.connect(s.target, token="t-site7", verify=False)
        only = docstore.connect(s.target, token="t-only", verify=False)
        qa = docstore.connect(s.target, token="t-qa", verify=False)
        with admin, site7, only, qa:
            admin.create_collection("visits")
            admin.create_collection("labs").insert({"_id": "L1"})
            site7["visits"].insert({"_id": "V1"}, reason="first visit")
            assert site7["labs"].get("L1") == {"_id": "L1"}  # "*": read
            for denied in (lambda: site7["labs"].insert({"_id": "L2"}), lambda: site7.create_collection("x"),
                           lambda: site7["visits"].create_index("mg"), lambda: site7.audit(),
                           lambda: only["labs"].get("L1"), lambda: only.log(),
                           lambda: only["visits"].insert({"_id": "V2"})):
                with pytest.raises(PermissionDeniedError):
                    denied()
            with pytest.raises(PermissionDeniedError, match="'labs'"):
                with site7.transaction() as tx:  # a transaction writing where the token may not
                    tx["visits"].insert({"_id": "V3"})
                    tx["labs"].insert({"_id": "L3"})
            assert only["visits"].get("V1") == {"_id": "V1"}
            assert only.collections(verify=False) == ["visits"]  # not the names it may not read
            assert site7["visits"].history("V1")[0].user == "Site 7"
            # a verifying client of a scoped token proves who and why of its own collection's
            # revisions, and times; not the who and why of transactions elsewhere
            with docstore.connect(s.target, token="t-only", state_file=tmp_path / "only.json",
                                  trust_on_first_use=True) as vonly:
                hist = vonly["visits"].history("V1")
                assert (hist[0].user, hist[0].reason) == ("Site 7", "first visit")
                assert vonly["visits"].get("V1", at_time=hist[0].timestamp_ns) == {"_id": "V1"}
                labs_tx = admin["labs"].history("L1")[0].tx_id
                with pytest.raises(PermissionDeniedError, match="wrote nothing in 'visits'"):
                    vonly._conn.proven_tx(labs_tx, vonly.state(), "visits")
            assert qa.audit().ok and [r["user"] for r in qa.log(limit=1)] == ["Site 7"]
            # revoke site 7's writes, and add a token, without a restart
            grants[1]["roles"] = {"*": "read"}
            grants.append({"token": "t-new", "name": "Site 9", "roles": {"visits": "write"}})
            path.write_text(json.dumps(grants))
            deadline, n = time.monotonic() + 15, 0
            while time.monotonic() < deadline:
                n += 1
                try:
                    site7["visits"].insert({"_id": f"V4-{n}"})
                except PermissionDeniedError:
                    break
                time.sleep(0.2)
            else:
                raise AssertionError("the revoked role still writes")
            with docstore.connect(s.target, token="t-new", verify=False) as new:
                new["visits"].insert({"_id": "V5"})
                assert new["visits"].history("V5")[0].user == "Site 9"
            path.write_text("{broken")  # a file that no longer parses: the tokens in force stay
            time.sleep(1.5)
            assert admin["visits"].get("V1") == {"_id": "V1"}
    assert "tokens file reloaded" in s.stderr and "kept the tokens in force" in s.stderr
