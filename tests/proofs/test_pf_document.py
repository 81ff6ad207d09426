"""Whole-document proofs (completeness), tombstones, time travel, and collection definitions."""

from __future__ import annotations

import base64
import copy
import json
import math

import orjson
import pytest

import docstore
import docstore.proofs
from docstore import VerificationError
from docstore.documents.flatten import OBJECT_HEADER, flatten, unflatten

DOCS = {
    "nested": {
        "_id": "nested",
        "name": "Ada",
        "dosage": {"mg": 5.0, "unit": "mg", "times": [8, 20]},
        "flags": [True, False, None],
        "empty_obj": {},
        "empty_arr": [],
        "mixed": [{}, [], [[]], {"k": {}}],
        "zero_first": {"0": "a", "1": "b"},
        "one": 1,
        "big": 2**70,
        "f": -0.0,
        "a/b~c": {"": "x"},
    },
    "flat": {"_id": "flat", "a": 1},
    "only-id": {"_id": "only-id"},
    "arrays": {"_id": "arrays", "xs": [1, 2, 3], "ys": [[1, 2], [3]], "objs": [{"a": 1}, {"a": 2}]},
}


def _same_json(a, b) -> bool:
    """Equal with exact JSON types and order: compare the flattened encodings."""
    return flatten(a) == flatten(b)


@pytest.fixture(scope="module")
def world(module_place):
    db = module_place.open()
    coll = db.create_collection("trials")
    coll.insert({"_id": "first", "x": 0})
    coll.insert_many([copy.deepcopy(doc) for doc in DOCS.values()])  # one transaction: paths are not empty
    coll.insert({"_id": "last", "x": 0})
    state = db.state()
    yield {"db": db, "coll": coll, "state": state}
    db.close()


@pytest.mark.parametrize("doc_id", list(DOCS))
def test_a_document_proof_returns_the_document(world, doc_id):
    proof = world["coll"].prove(doc_id)
    assert proof.kind == "document" and proof.pointer is None and proof.ordinal is None
    assert len(proof.properties) == len(flatten(DOCS[doc_id]))
    for p in (proof, proof.to_json(), docstore.proofs.load(proof.to_json(indent=True)), proof.to_dict()):
        doc = docstore.verify(p, world["state"])
        assert _same_json(doc, DOCS[doc_id])
        if doc_id == "nested":
            assert math.copysign(1.0, doc["f"]) == -1.0 and type(doc["big"]) is int


# ------------------------------------------------------------------------------- completeness


def _claim_variants():
    """(name, doc_id, function changing a deep copy of the claim) that must all be rejected."""

    def delete(d, *path):
        node = d
        for k in path[:-1]:
            node = node[k]
        del node[path[-1]]

    def setv(d, value, *path):
        node = d
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value

    def rename(d, old, new):
        items = [(new if k == old else k, v) for k, v in d.items()]
        d.clear()
        d.update(items)

    def reorder(d):
        items = list(d.items())
        d.clear()
        d.update([items[0]] + list(reversed(items[1:])))

    return [
        ("remove top", "nested", lambda d: delete(d, "name")),
        ("remove nested", "nested", lambda d: delete(d, "dosage", "unit")),
        ("remove array element", "nested", lambda d: d["dosage"]["times"].pop()),
        ("remove empty obj", "nested", lambda d: delete(d, "empty_obj")),
        ("remove empty arr", "nested", lambda d: delete(d, "empty_arr")),
        ("remove inner empty", "nested", lambda d: d["mixed"].pop(0)),
        ("remove the _id-only doc's id", "only-id", lambda d: delete(d, "_id")),
        ("add top", "nested", lambda d: setv(d, "x", "extra")),
        ("add nested", "nested", lambda d: setv(d, "g", "dosage", "per_day")),
        ("add array element", "nested", lambda d: d["dosage"]["times"].append(23)),
        ("add to empty obj", "nested", lambda d: setv(d, 1, "empty_obj", "k")),
        ("add to empty arr", "nested", lambda d: d["empty_arr"].append(None)),
        ("add to only-id", "only-id", lambda d: setv(d, None, "x")),
        ("rename top", "nested", lambda d: rename(d, "name", "Name")),
        ("rename nested", "nested", lambda d: rename(d["dosage"], "mg", "g")),
        ("rename escaped", "nested", lambda d: rename(d, "a/b~c", "a~b/c")),
        ("rename empty key", "nested", lambda d: rename(d["a/b~c"], "", " ")),
        ("change value", "nested", lambda d: setv(d, "Bob", "name")),
        ("float to int", "nested", lambda d: setv(d, 5, "dosage", "mg")),
        ("int to float", "nested", lambda d: setv(d, 1.0, "one")),
        ("int to bool", "nested", lambda d: setv(d, True, "one")),
        ("bool to int", "nested", lambda d: setv(d, 1, "flags", 0)),
        ("null to false", "nested", lambda d: setv(d, False, "flags", 2)),
        ("-0.0 to 0.0", "nested", lambda d: setv(d, 0.0, "f")),
        ("big int off by one", "nested", lambda d: setv(d, 2**70 + 1, "big")),
        ("big int to float", "nested", lambda d: setv(d, float(2**70), "big")),
        ("{} to []", "nested", lambda d: setv(d, [], "empty_obj")),
        ("[] to {}", "nested", lambda d: setv(d, {}, "empty_arr")),
        ("[] to null", "nested", lambda d: setv(d, None, "empty_arr")),
        ("{0} object to array", "nested", lambda d: setv(d, ["a", "b"], "zero_first")),
        ("array to {0} object", "arrays", lambda d: setv(d, {"0": 1, "1": 2, "2": 3}, "xs")),
        ("reorder array", "arrays", lambda d: d["xs"].reverse()),
        ("reorder nested arrays", "arrays", lambda d: d["ys"].reverse()),
        ("reorder array of objects", "arrays", lambda d: d["objs"].reverse()),
        ("reorder keys", "nested", reorder),
        ("reorder nested keys", "nested", lambda d: reorder(d["dosage"])),
        ("change id", "flat", lambda d: setv(d, "flat2", "_id")),
        ("string for number", "flat", lambda d: setv(d, "1", "a")),
        ("nest a value", "flat", lambda d: setv(d, {"a": 1}, "a")),
        ("wrap in array", "flat", lambda d: setv(d, [1], "a")),
    ]


def test_completeness_every_changed_claim_is_rejected(world):
    state = world["state"]
    bases = {doc_id: world["coll"].prove(doc_id).to_dict() for doc_id in DOCS}
    variants = _claim_variants()
    for name, doc_id, change in variants:
        d = copy.deepcopy(bases[doc_id])
        claim = copy.deepcopy(DOCS[doc_id])
        change(claim)
        assert flatten(claim) != flatten(DOCS[doc_id]), name
        d["claim"] = claim
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
        with pytest.raises(VerificationError):  # and through JSON text
            docstore.verify(json.dumps(d), state)
    assert len(variants) >= 40


def test_non_object_and_id_less_claims_are_rejected(world):
    state = world["state"]
    d = world["coll"].prove("flat").to_dict()
    for claim in (None, [], "flat", 1, {"a": 1}, {"_id": "flat", "a": 1, "_id2": None}, [["/_id", '"flat"']]):
        bad = copy.deepcopy(d)
        bad["claim"] = claim
        with pytest.raises(VerificationError):
            docstore.verify(bad, state)


def test_removing_property_entries_is_rejected(world):
    state = world["state"]
    base = world["coll"].prove("nested").to_dict()
    n = len(base["properties"])
    for i in (0, 1, n // 2, n - 1):
        # without touching the claim
        d = copy.deepcopy(base)
        del d["properties"][i]
        with pytest.raises(VerificationError, match="completeness"):
            docstore.verify(d, state)
        # with the claim rebuilt from the remaining entries (when that is a valid document)
        pairs = [(p[0], p[1].encode()) for p in d["properties"]]
        try:
            d["claim"] = unflatten(pairs)
        except docstore.CorruptDataError:
            pass
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
        # with the header's count lowered too: the header no longer hashes to the stored one
        header = orjson.loads(base64.b64decode(d["header"]))
        header["n"] = n - 1
        d["header"] = base64.b64encode(orjson.dumps(header)).decode()
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
    # a forger with a genuine kvcore proof of all entries but one (the dropped entry's hash
    # becomes a path hash): the hashes check out, the header's count does not
    db = world["db"]
    for drop in (0, n // 2, n - 1):
        indices = [base["index"] + 1 + i for i in range(n) if i != drop]
        kv = db.ledger.prove_entries(base["tx"]["tx_id"], [base["index"]] + indices, state)
        d = copy.deepcopy(base)
        del d["properties"][drop]
        d["path"] = [base64.b64encode(h).decode() for h in kv.path]
        try:
            d["claim"] = unflatten([(p[0], p[1].encode()) for p in d["properties"]])
        except docstore.CorruptDataError:
            pass
        with pytest.raises(VerificationError, match="completeness"):
            docstore.verify(d, state)


def test_reordering_or_duplicating_property_entries_is_rejected(world):
    state = world["state"]
    base = world["coll"].prove("arrays").to_dict()
    for change in (
        lambda ps: ps.reverse(),
        lambda ps: ps.insert(1, ps.pop(2)),
        lambda ps: ps.__setitem__(2, ps[1]),
    ):
        d = copy.deepcopy(base)
        change(d["properties"])
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
        try:  # and with the claim rebuilt to match the reordered entries
            d["claim"] = unflatten([(p[0], p[1].encode()) for p in d["properties"]])
        except docstore.CorruptDataError:
            continue
        with pytest.raises(VerificationError):
            docstore.verify(d, state)


def test_a_property_proof_cannot_pass_as_a_document_proof_nor_vice_versa(world):
    state = world["state"]
    prop = world["coll"].prove("only-id", "/_id").to_dict()
    doc = world["coll"].prove("only-id").to_dict()
    assert docstore.verify(prop, state) == "only-id"
    assert docstore.verify(doc, state) == {"_id": "only-id"}
    for extra in ({}, {"claim": {"_id": "only-id"}}, {"claim": {"_id": "only-id"}, "pointer": None},
                  {"claim": {"_id": "only-id"}, "pointer": None, "ordinal": None},
                  {"claim": {"_id": "only-id"}, "pointer": None, "ordinal": None, "header": doc["header"]}):
        bad = {**copy.deepcopy(prop), "kind": "document", **extra}
        with pytest.raises(VerificationError):
            docstore.verify(bad, state)
    for extra in ({}, {"claim": "only-id"}, {"claim": "only-id", "pointer": "/_id"},
                  {"claim": "only-id", "pointer": "/_id", "ordinal": 0},
                  {"claim": "only-id", "pointer": "/_id", "ordinal": 0, "header": None}):
        bad = {**copy.deepcopy(doc), "kind": "property", **extra}
        with pytest.raises(VerificationError):
            docstore.verify(bad, state)
    for base in (prop, doc):
        with pytest.raises(VerificationError):
            docstore.verify({**base, "kind": "collection", "id": None, "pointer": None, "properties": []}, state)


# --------------------------------------------------------------------- tombstones and history


def test_tombstone_and_older_revisions(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("c")
        c.insert({"_id": "d", "v": 1, "w": [1]})
        t1 = db.tx_id
        c.replace("d", {"_id": "d", "v": 2.0})
        t2 = db.tx_id
        c.update("d", {"$set": {"w": {"0": True}}})
        t3 = db.tx_id
        c.delete("d")
        t4 = db.tx_id
        c.insert({"_id": "d", "v": "back"})
        t5 = db.tx_id
        state = db.state()
        expected = {
            t1: (1, {"_id": "d", "v": 1, "w": [1]}),
            t2: (2, {"_id": "d", "v": 2.0}),
            t3: (3, {"_id": "d", "v": 2.0, "w": {"0": True}}),
            t4: (4, None),
            t5: (5, {"_id": "d", "v": "back"}),
        }
        for at_tx, (rev, doc) in expected.items():
            proof = c.prove("d", at_tx=at_tx)
            assert proof.revision == rev and proof.tx_id == at_tx
            got = docstore.verify(proof.to_json(), state)
            if doc is None:
                assert got is None and proof.claim is None and proof.properties == []
            else:
                assert _same_json(got, doc)
            # a proof relative to the state of its own time verifies too
            own = c.prove("d", at_tx=at_tx, state=db.ledger.state(at_tx))
            assert (docstore.verify(own, db.ledger.state(at_tx)) is None) == (doc is None)
        # the tombstone cannot be made to claim the old document, nor a revision to claim nothing
        tomb = c.prove("d", at_tx=t4).to_dict()
        for claim in ({"_id": "d", "v": 2.0, "w": {"0": True}}, {"_id": "d"}, {}):
            with pytest.raises(VerificationError):
                docstore.verify({**tomb, "claim": claim}, state)
        live = c.prove("d", at_tx=t3).to_dict()
        with pytest.raises(VerificationError):
            docstore.verify({**live, "claim": None}, state)
        # a property proof of the deleted revision does not exist, and cannot be forged from it
        with pytest.raises(docstore.NotFoundError):
            c.prove("d", "/v", at_tx=t4)
        forged = {**tomb, "kind": "property", "pointer": "/v", "claim": 2.0, "ordinal": 0,
                  "properties": live["properties"][1:2]}
        with pytest.raises(VerificationError):
            docstore.verify(forged, state)
        # between t1 and t2 the document did not exist yet at t0
        with pytest.raises(docstore.NotFoundError):
            c.prove("d", at_tx=t1 - 1)
        # a property proof as of an older transaction
        assert docstore.verify(c.prove("d", "/w/0", at_tx=t1), state) == 1
        assert docstore.verify(c.prove("d", "/w/0", at_tx=t3), state) is True
        with pytest.raises(docstore.QueryError):
            c.prove("d", at_tx=t5 + 1)
        with pytest.raises(docstore.QueryError):
            c.prove("d", at_tx=t3, state=db.ledger.state(t2))  # a state before the revision


def test_latest_proof_of_a_deleted_document_is_its_tombstone(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("c")
        c.insert({"_id": "gone", "secret": "s3cr3t-value"})
        c.delete("gone")
        proof = c.prove("gone")
        assert docstore.verify(proof, db.state()) is None
        assert "s3cr3t-value" not in proof.to_json()
        header = orjson.loads(proof.header)
        assert header["del"] is True and header["n"] == 0 and header["rev"] == 2


# ---------------------------------------------------------------- collection definitions


def test_schema_proofs_for_every_revision_of_the_definition(tmp_path):
    s1 = {"type": "object", "properties": {"mg": {"type": "number", "maximum": 10.5}}}
    s2 = {"type": "object", "required": ["mg"]}
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("trials", schema=s1)
        history = [(db.tx_id, s1, [])]
        c.insert({"_id": "a", "mg": 5})
        c.set_schema(s2)
        history.append((db.tx_id, s2, []))
        c.create_index("mg")
        history.append((db.tx_id, s2, [{"field": "mg", "unique": False}]))
        c.set_schema(None)
        history.append((db.tx_id, None, [{"field": "mg", "unique": False}]))
        c.insert({"_id": "b"})
        db.create_collection("other", schema={"type": "object"})
        state = db.state()
        seen = []
        for t in range(1, state.tx_id + 1):
            at_tx, schema, indexes = [h for h in history if h[0] <= t][-1]
            proof = c.prove_schema(at_tx=t)
            assert proof.kind == "collection" and proof.tx_id == at_tx
            definition = docstore.verify(docstore.proofs.load(proof.to_json()), state)
            assert definition == {"v": 1, "name": "trials", "schema": schema, "indexes": indexes}
            # relative to the state of that time as well
            assert docstore.verify(c.prove_schema(at_tx=t, state=db.ledger.state(t)), db.ledger.state(t)) == definition
            if t == at_tx:
                seen.append(proof.to_dict())
        assert len(seen) == len(history)
        assert docstore.verify(c.prove_schema(), state)["schema"] is None
        # a definition of one time cannot be claimed for another, nor for another collection
        for a in seen:
            for b in seen:
                if a["claim"] != b["claim"]:
                    with pytest.raises(VerificationError):
                        docstore.verify({**a, "claim": b["claim"]}, state)
        other = db["other"].prove_schema().to_dict()
        for bad in (
            {**seen[0], "collection": "other"},
            {**other, "collection": "trials"},
            {**other, "claim": {**other["claim"], "name": "trials"}, "collection": "trials"},
        ):
            with pytest.raises(VerificationError):
                docstore.verify(bad, state)
        # the collection proof binds its header entry and hashes like any other proof
        d = copy.deepcopy(seen[0])
        d["index"] += 1
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
        with pytest.raises(docstore.NotFoundError):
            c.prove_schema(at_tx=0)


def test_collection_proof_claims_no_revision(tmp_path):
    # a definition's entry holds no revision number, so a collection proof claims none (0):
    # a bundle claiming one would assert something nothing binds, and is refused
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("c")
        c.set_schema({"type": "object"})
        d = c.prove_schema().to_dict()
        assert d["revision"] == 0
        assert docstore.verify(d, db.state())["schema"] == {"type": "object"}
        d["revision"] = 1
        with pytest.raises(VerificationError):
            docstore.verify(d, db.state())


def test_unused_fields_of_document_and_collection_proofs_must_be_empty(world):
    state = world["state"]
    doc = world["coll"].prove("flat").to_dict()
    for extra in ({"pointer": "/a"}, {"ordinal": 0}, {"pointer": ""}):
        with pytest.raises(VerificationError):
            docstore.verify({**doc, **extra}, state)
    coll = world["coll"].prove_schema().to_dict()
    assert docstore.verify(coll, state)["name"] == "trials"
    for extra in ({"id": "flat"}, {"pointer": "/a"}, {"ordinal": 0}, {"properties": doc["properties"][:1]}):
        with pytest.raises(VerificationError):
            docstore.verify({**coll, **extra}, state)


def test_object_marker_pairs_are_part_of_a_document_proof(world):
    proof = world["coll"].prove("nested")
    pointers = [p.pointer for p in proof.properties if p.encoded == OBJECT_HEADER]
    assert pointers == ["/zero_first"]
    d = proof.to_dict()
    d["properties"] = [p for p in d["properties"] if p[1] != OBJECT_HEADER.decode()]
    with pytest.raises(VerificationError):
        docstore.verify(d, world["state"])


def _flip_b64(text: str, bit: int) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    return base64.b64encode(bytes(raw)).decode()


def test_every_field_of_a_document_bundle_is_bound(world):
    state = world["state"]
    base = world["coll"].prove("arrays").to_dict()
    assert base["path"] and base["tx_path"]
    muts = {
        "collection": lambda d: d.__setitem__("collection", "other"),
        "id": lambda d: d.__setitem__("id", "flat"),
        "id+claim": lambda d: (d.__setitem__("id", "arrays2"), d["claim"].__setitem__("_id", "arrays2")),
        "revision": lambda d: d.__setitem__("revision", 2),
        "index+1": lambda d: d.__setitem__("index", d["index"] + 1),
        "index-1": lambda d: d.__setitem__("index", d["index"] - 1),
        "header-missing": lambda d: d.__setitem__("header", None),
        "tx_id": lambda d: d["tx"].__setitem__("tx_id", d["tx"]["tx_id"] + 1),
        "timestamp": lambda d: d["tx"].__setitem__("timestamp_ns", d["tx"]["timestamp_ns"] - 1),
        "n_entries": lambda d: d["tx"].__setitem__("n_entries", d["tx"]["n_entries"] - 1),
        "state.tx_id": lambda d: d["state"].__setitem__("tx_id", d["state"]["tx_id"] - 1),
        # (a root may begin with ff: then 00, so the edit is never a no-op)
        "state.root": lambda d: d["state"].__setitem__("root", ("00" if d["state"]["root"][:2] == "ff" else "ff") + d["state"]["root"][2:]),
    }
    for bit in (0, 9, 100, 400):
        muts[f"header-bit{bit}"] = lambda d, bit=bit: d.__setitem__("header", _flip_b64(d["header"], bit))
    for i in range(len(base["properties"])):
        muts[f"salt{i}"] = lambda d, i=i: d["properties"][i].__setitem__(2, _flip_b64(d["properties"][i][2], 3 * i))
        muts[f"pointer{i}"] = lambda d, i=i: d["properties"][i].__setitem__(0, d["properties"][i][0] + "x")
        muts[f"value{i}"] = lambda d, i=i: d["properties"][i].__setitem__(1, d["properties"][i][1] + " ")
    for field in ("path", "tx_path"):
        for i in range(len(base[field])):
            muts[f"{field}[{i}]"] = lambda d, f=field, i=i: d[f].__setitem__(i, _flip_b64(d[f][i], 7 * i + 1))
    for name, mutate in muts.items():
        d = copy.deepcopy(base)
        mutate(d)
        assert json.dumps(d) != json.dumps(base), name
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
    # pointer and value changed in both the entry and the claim together: still the stored hash
    d = copy.deepcopy(base)
    d["properties"][1][1] = "100"
    d["claim"]["xs"][0] = 100
    with pytest.raises(VerificationError):
        docstore.verify(d, state)
    assert docstore.verify(base, state) == DOCS["arrays"]
