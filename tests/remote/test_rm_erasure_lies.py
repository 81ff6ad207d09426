"""A lying server about erasures: a verifying client catches every edit of the erasure records it
lists and of the proofs that show erased properties (the proxy of test_rm_lying.py)."""

from __future__ import annotations

import base64
import copy
import json
from collections.abc import Callable
from typing import Any

import pytest

import docstore
from docstore import VerificationError
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb
from remote_testlib import ServerProcess
from test_rm_lying import LyingProxy


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    path = tmp_path_factory.mktemp("erasure-lies") / "db"
    with docstore.open(path) as db:
        c = db.create_collection("people", indexes=["city"])
        c.insert_many([{"_id": "p1", "name": "Ada", "city": "Oslo"}, {"_id": "p2", "name": "Bob", "city": "Oslo"}])
        c.update("p1", {"$set": {"city": "Oslo"}}, reason="checked")
        c.erase("p1", ["/name"], reason="consent withdrawn", user="dpo")
        c.erase("p2", ["/name"], reason="consent withdrawn too", user="dpo")
        key, checkpoint = db.verifier_key(), db.checkpoint()
    with ServerProcess(path) as server:
        proxy = LyingProxy(server.target)
        try:
            yield proxy, key, checkpoint
        finally:
            proxy.close()


@pytest.fixture
def client(world, tmp_path):
    proxy, key, checkpoint = world
    proxy.reset()
    db = docstore.connect(proxy.target, state_file=tmp_path / "st.json", verifier_key=key, trusted_state=checkpoint)
    yield proxy, db
    db.close()
    proxy.reset()


def test_honest(client):
    _proxy, db = client
    c = db["people"]
    assert c.get("p1")["name"] == {"$erased": c.erasures("p1")[0]["tx_id"]}
    assert [r["user"] for r in c.erasures("p1")] == ["dpo"]
    assert [d["_id"] for d in c.find({"city": "Oslo"})] == ["p1", "p2"]


def _records(fn: Callable[[list, list], Any]) -> Callable[[Any, Any], Any]:
    def lie(req: Any, resp: Any) -> Any:
        records = [codec.loads(r) for r in resp.records]
        proofs = [codec.loads(p) for p in resp.proofs]
        fn(records, proofs)
        return pb.ErasuresResponse(records=[codec.dumps(r) for r in records], proofs=[codec.dumps(p) for p in proofs])

    return lie


def _other_record(proxy) -> tuple[dict, dict]:
    got = proxy.up.Erasures(pb.ErasuresRequest(collection="people", id="p2", prove=True), timeout=30)
    return codec.loads(got.records[0]), codec.loads(got.proofs[0])


@pytest.mark.parametrize("label,fn", [
    ("reason", lambda rs, ps: rs[0].update(reason="routine cleanup")),
    ("user", lambda rs, ps: rs[0].update(user="someone else")),
    ("pointers", lambda rs, ps: rs[0].update(pointers=None)),
    ("count", lambda rs, ps: rs[0].update(erased=1)),
    ("time", lambda rs, ps: rs[0].update(timestamp_ns=rs[0]["timestamp_ns"] - 1)),
    ("proof dropped", lambda rs, ps: ps.pop()),
    ("record value", lambda rs, ps: ps[0].update(value=_flip(ps[0]["value"]))),
    ("a field added", lambda rs, ps: rs[0].update(approved_by="the board")),
])
def test_erasure_record_lies(client, label, fn):
    proxy, db = client
    proxy.lie("Erasures", _records(fn))
    with pytest.raises(VerificationError):
        db["people"].erasures("p1")


def test_another_documents_record_is_refused(client):
    proxy, db = client
    rec, proof = _other_record(proxy)
    proxy.lie("Erasures", _records(lambda rs, ps: (rs.__setitem__(0, rec), ps.__setitem__(0, proof))))
    with pytest.raises(VerificationError, match="erasure record check failed"):
        db["people"].erasures("p1")


def _bundle(fn: Callable[[dict], Any]) -> Callable[[Any, Any], Any]:
    def lie(req: Any, resp: Any) -> Any:
        d = json.loads(resp.proof)
        fn(d)
        return pb.ProofResponse(proof=json.dumps(d).encode())

    return lie


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def _erased_prop(d: dict) -> list:
    return next(p for doc in d["documents"] for p in doc["properties"] if len(p) == 4)


def _unerase(d: dict) -> None:
    p = _erased_prop(d)
    p[1:] = ['"Ada"', "AAAAAAAAAAAAAAAAAAAAAA=="]


@pytest.mark.parametrize("label,fn", [
    ("records dropped", lambda d: d.pop("erasures")),
    ("back to version 3", lambda d: (d.pop("erasures"), d.__setitem__("version", 3))),
    ("a value put back", _unerase),
    ("the leaf changed", lambda d: _erased_prop(d).__setitem__(3, "A" * 43 + "=")),
    ("a record's value", lambda d: d["erasures"][0].update(value=_flip(d["erasures"][0]["value"]))),
    ("a record's index", lambda d: d["erasures"][0].update(index=d["erasures"][0]["index"] + 1)),
])
@pytest.mark.parametrize("read", ["get", "find"])
def test_state_proof_lies(client, label, fn, read):
    proxy, db = client
    proxy.lie("ProveState", _bundle(fn))
    with pytest.raises(VerificationError):
        if read == "get":
            db["people"].get("p1")
        else:
            list(db["people"].find({"city": "Oslo"}))


def test_history_of_an_erased_document_lies(client):
    """History proves each revision with a version-5 bundle; one whose erased property is
    replaced by a made-up value is refused."""
    proxy, db = client

    def lie(req: Any, pages: list) -> list:
        out = []
        for page in pages:
            page = copy.deepcopy(page)
            proofs = list(page.proofs)
            if proofs:
                d = json.loads(proofs[0])
                p = next(p for p in d["properties"] if len(p) == 4)
                p[1:] = ['"Ada"', "AAAAAAAAAAAAAAAAAAAAAA=="]
                d["claim"]["name"] = "Ada"
                proofs[0] = json.dumps(d).encode()
                del page.proofs[:]
                page.proofs.extend(proofs)
            out.append(page)
        return out

    proxy.lie("History", lie)
    with pytest.raises(VerificationError):
        db["people"].history("p1")
