"""Attacks on proofs of erased properties (bundle versions 5 and 6): an attacker holding the
trusted state and genuine proofs edits every field an erasure adds, passes a value off as
erased or an erased property off as another, reuses a genuine erasure record of another
document, or drops the records; every edit is refused."""

from __future__ import annotations

import base64
import copy
import json

import pytest

import docstore
from docstore import VerificationError


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    db = docstore.open(tmp_path_factory.mktemp("erased") / "db")
    c = db.create_collection("people", indexes=["city"])
    c.insert({"_id": "p1", "name": "Ada", "born": 1970, "city": "Oslo"})
    c.insert({"_id": "p2", "name": "Bob", "born": 1980, "city": "Oslo"})
    e1 = c.erase("p1", ["/name"], reason="consent withdrawn")
    e2 = c.erase("p2", ["/born"])
    state = db.state()
    out = {
        "state": state,
        "e1": e1.tx,
        "e2": e2.tx,
        "property": c.prove("p1", "/name").to_dict(),
        "document": c.prove("p1").to_dict(),
        "plain": c.prove("p1", "/born").to_dict(),
        "other_doc": c.prove("p2").to_dict(),
        "latest": c.prove_latest("p1", with_header=True).to_dict(),
        "latest_prop": c.prove_latest("p1", "/name", with_header=True).to_dict(),
        "find": c.prove_find({"city": "Oslo"}, with_header=True).to_dict(),
    }
    yield out
    db.close()


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def _flip(text: str) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[len(raw) // 2] ^= 1
    return _b64(bytes(raw))


def test_genuine_proofs_verify(world):
    s = world["state"]
    mark = {"$erased": world["e1"]}
    assert docstore.verify(world["property"], s) == mark
    assert docstore.verify(world["document"], s)["name"] == mark
    assert docstore.verify(world["plain"], s) == 1970
    assert docstore.verify(world["other_doc"], s)["born"] == {"$erased": world["e2"]}
    assert docstore.verify(world["latest"], s)["name"] == mark
    assert docstore.verify(world["latest_prop"], s) == mark
    assert [d["_id"] for d in docstore.verify(world["find"], s)] == ["p1", "p2"]


def _edits(d: dict) -> list[tuple[str, dict]]:
    """Every single-field edit of what an erasure adds to a bundle."""
    out = []

    def edit(name, fn):
        e = copy.deepcopy(d)
        fn(e)
        out.append((name, e))

    for i, _e in enumerate(d["erasures"]):
        edit(f"erasures[{i}].value", lambda e, i=i: e["erasures"][i].__setitem__("value", _flip(e["erasures"][i]["value"])))
        edit(f"erasures[{i}].index", lambda e, i=i: e["erasures"][i].__setitem__("index", e["erasures"][i]["index"] + 1))
        edit(f"erasures[{i}].path", lambda e, i=i: e["erasures"][i]["path"].reverse() if len(e["erasures"][i]["path"]) > 1
             else e["erasures"][i].__setitem__("path", [_flip(h) for h in e["erasures"][i]["path"]]))
        edit(f"erasures[{i}].tx_path", lambda e, i=i: e["erasures"][i].__setitem__(
            "tx_path", [_flip(h) for h in e["erasures"][i]["tx_path"]]))
        edit(f"erasures[{i}].tx.entries_root", lambda e, i=i: e["erasures"][i]["tx"].__setitem__(
            "entries_root", _hexflip(e["erasures"][i]["tx"]["entries_root"])))
        edit(f"erasures[{i}] dropped", lambda e, i=i: e["erasures"].pop(i))
        edit(f"erasures[{i}] twice", lambda e, i=i: e["erasures"].append(e["erasures"][i]))
    edit("erasures removed", lambda e: e.pop("erasures"))
    edit("version 4", lambda e: e.__setitem__("version", 4 if e["version"] == 5 else 3))
    return out


def _hexflip(h: str) -> str:
    return ("0" if h[0] != "0" else "1") + h[1:] if all(c in "0123456789abcdef" for c in h) else _flip(h)


def _erased_props(d: dict) -> list[list]:
    docs = d.get("documents")
    props = [p for doc in docs for p in doc["properties"]] if docs else d["properties"]
    return [p for p in props if len(p) == 4]


@pytest.mark.parametrize("kind", ["property", "document", "latest", "latest_prop", "find"])
def test_every_edit_is_refused(world, kind):
    d = world[kind]
    assert _erased_props(d), "the bundle gives an erased property by its leaf"
    for name, e in _edits(d):
        with pytest.raises(VerificationError):
            docstore.verify(json.dumps(e), world["state"])
            pytest.fail(f"edit {name} of a {kind} proof verified")
    for i, _p in enumerate(_erased_props(d)):  # the leaf itself, and value/salt put back
        e = copy.deepcopy(d)
        _erased_props(e)[i][3] = _flip(_erased_props(e)[i][3])
        with pytest.raises(VerificationError):
            docstore.verify(e, world["state"])
        e = copy.deepcopy(d)
        _erased_props(e)[i][1] = '"Ada"'
        with pytest.raises(VerificationError):
            docstore.verify(e, world["state"])


def test_claims_must_be_the_markers(world):
    s = world["state"]
    e = copy.deepcopy(world["property"])
    e["claim"] = {"$erased": world["e2"]}  # the wrong erasing transaction
    with pytest.raises(VerificationError):
        docstore.verify(e, s)
    e["claim"] = "Ada"
    with pytest.raises(VerificationError):
        docstore.verify(e, s)
    e = copy.deepcopy(world["document"])
    e["claim"]["name"] = "Ada"
    with pytest.raises(VerificationError):
        docstore.verify(e, s)
    e = copy.deepcopy(world["document"])
    e["claim"]["born"] = {"$erased": world["e1"]}  # a value passed off as erased
    with pytest.raises(VerificationError):
        docstore.verify(e, s)


def test_a_value_cannot_be_passed_off_as_erased(world):
    """The forger replaces a live property of a genuine proof by its leaf (computable from a
    genuine value proof) and adds a genuine erasure record (of another document's property)."""
    s = world["state"]
    plain = world["plain"]  # p1 /born: live
    other = world["other_doc"]  # carries the record erasing p2 /born
    from kvcore.hashing import entry_leaf_hash
    from docstore.documents import records

    p = plain["properties"][0]
    key = records.property_key(records.property_prefix("people", "p1"), plain["revision"], plain["ordinal"], "/born")
    leaf = entry_leaf_hash(0, key, base64.b64decode(p[2]) + p[1].encode())
    forged = copy.deepcopy(plain)
    forged["version"] = 5
    forged["properties"] = [["/born", None, None, _b64(leaf)]]
    forged["erasures"] = other["erasures"]
    forged["claim"] = {"$erased": world["e2"]}
    with pytest.raises(VerificationError, match="erasure"):
        docstore.verify(forged, s)


def test_an_erased_property_cannot_be_hidden_or_renamed(world):
    s = world["state"]
    e = copy.deepcopy(world["document"])
    props = e["properties"]
    i = next(k for k, p in enumerate(props) if len(p) == 4)
    props[i][0] = "/nickname"  # its pointer is in the hashed key
    with pytest.raises(VerificationError):
        docstore.verify(e, s)
    e = copy.deepcopy(world["document"])
    del e["properties"][i]
    with pytest.raises(VerificationError):
        docstore.verify(e, s)
