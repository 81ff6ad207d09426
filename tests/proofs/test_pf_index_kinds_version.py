"""Find proofs over sparse, partial or compound indexes are version 7 (issue 19): a verifier
that predates those kinds refuses them rather than planning their ranges another way, and a
bundle cannot pass one off under another version."""

from __future__ import annotations

import copy

import pytest

import docstore
from docstore import VerificationError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    db = docstore.open(tmp_path_factory.mktemp("kinds") / "db")
    plain = db.create_collection("plain", indexes=["site"])
    kinds = db.create_collection("kinds", indexes=[["site", "n"]])
    kinds.create_index("email", unique=True, sparse=True)
    for c in (plain, kinds):
        c.insert_many([{"_id": f"d{i}", "site": "s1" if i % 2 else "s2", "n": i} for i in range(10)])
    state = db.state()
    yield plain.prove_find({"site": "s1"}, with_header=True).to_dict(), \
        kinds.prove_find({"site": "s1", "n": {"$gte": 3}}, with_header=True).to_dict(), state
    db.close()


def test_versions(world):
    plain, kinds, state = world
    assert plain["version"] == 3 and kinds["version"] == 7
    assert [d["_id"] for d in docstore.verify(kinds, state)] == ["d3", "d5", "d7", "d9"]
    assert len(docstore.verify(plain, state)) == 5


def test_version_cannot_be_changed(world):
    plain, kinds, state = world
    for d, v in ((kinds, 3), (kinds, 6), (plain, 7)):
        e = copy.deepcopy(d)
        e["version"] = v
        with pytest.raises(VerificationError):
            docstore.verify(e, state)
