"""Erasure over gRPC (issue 18): the same contract as embedded (Erase needs the admin role), the
principal recorded as who erased, verifying clients reading erased documents and proving the
erasure records, on both backends."""

from __future__ import annotations

import json

import pytest

import docstore
from docstore import ErasureRefusedError, NotFoundError
from docstore.remote.errors import PermissionDeniedError
from remote_testlib import ServerProcess


def test_erase_over_the_wire(place, tmp_path):
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([
        {"token": "t-dpo", "name": "DPO", "role": "admin"},
        {"token": "t-site", "name": "Site 7", "roles": {"*": "write"}},
    ]))
    with ServerProcess(place.target, "--tokens-file", str(tokens), env=place.server_env()) as s:
        with docstore.connect(s.target, token="t-dpo", verify=False) as dpo, \
                docstore.connect(s.target, token="t-site", verify=False) as site:
            c = dpo.create_collection("people", indexes=["name"])
            site["people"].insert({"_id": "p1", "name": "Ada Lovelace", "born": 1815})
            site["people"].update("p1", {"$set": {"born": 1816}}, reason="typo")
            with pytest.raises(PermissionDeniedError):
                site["people"].erase("p1", ["/name"])
            with pytest.raises(ErasureRefusedError):
                c.erase("p1", ["/_id"])
            with pytest.raises(NotFoundError):
                c.erase("p1", ["/nope"])
            done = c.erase("p1", ["/name"], reason="consent withdrawn")
            assert (done.erased, done.revisions) == (2, 2)
            mark = {"$erased": done.tx}
            assert c.get("p1") == {"_id": "p1", "name": mark, "born": 1816}
            assert [r.document["name"] for r in c.history("p1")] == [mark, mark]
            assert c.find_one({"name": "Ada Lovelace"}) is None
            (rec,) = c.erasures("p1")
            assert (rec["tx_id"], rec["user"], rec["reason"], rec["pointers"], rec["erased"]) == (
                done.tx, "DPO", "consent withdrawn", ["/name"], 2)
            assert c.erase("p1", ["/name"]).tx is None
            state = dpo.state()
            assert docstore.verify(c.prove("p1", "/name"), state) == mark
            assert docstore.verify(c.prove("p1"), state)["born"] == 1816
            bundles = c.prove_erasures("p1", state)
            from docstore.proofs.erasureproof import verify_record

            assert verify_record("people", "p1", rec, bundles[0], state) == rec
        with docstore.connect(s.target, token="t-site", state_file=tmp_path / "trust.json",
                              trust_on_first_use=True) as v:
            p = v["people"]
            assert p.get("p1")["name"] == mark
            assert [r.document["name"] for r in p.history("p1")] == [mark, mark]
            assert p.erasures("p1")[0]["user"] == "DPO"
            assert [d["_id"] for d in p.find({})] == ["p1"]
