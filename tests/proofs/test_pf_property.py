"""Property proofs: every leaf proves with its exact value, and every field of the bundle is bound.

A property proof shows one property entry of one revision (its key names collection, id,
revision, ordinal and pointer; its value is salt and encoded value), with an inclusion path to
the transaction's entries root and one to the state.
The tests change each field of a real bundle and require VerificationError; they mix parts of
bundles of other documents, revisions and collections; and they check the prover's refusals.
"""

from __future__ import annotations

import base64
import copy
import json
import math

import pytest

import docstore
import docstore.proofs
from docstore import InvalidPointerError, NotFoundError, QueryError, VerificationError
from docstore.documents import records
from docstore.documents.flatten import OBJECT_HEADER, decode_value, flatten, split_pointer
from docstore.proofs import Property
from docstore.documents.records import Header

DOC = {
    "_id": "patient-17",
    "dosage": {"mg": 5.0, "unit": "mg", "schedule": [{"t": 8}, {"t": 20}]},
    "consent": True,
    "withdrawn": False,
    "notes": None,
    "big": 2**100,
    "neg_big": -(2**80),
    "u64max": 2**64 - 1,
    "i64min": -(2**63),
    "f": 0.1,
    "tiny": 5e-324,
    "negzero": -0.0,
    "huge": 1.7976931348623157e308,
    "exp": 1e16,
    "int_one": 1,
    "float_one": 1.0,
    "zero": 0,
    "empty_obj": {},
    "empty_arr": [],
    "nested_empty": [[], {}, [[]], {"e": {}}],
    "a/b": "slash",
    "t~x": "tilde",
    "~1": "tilde-one literal",
    "": "empty key",
    "sub": {"": {"": "two empty keys"}, "/": "just a slash", "~": "just a tilde"},
    "ünï": "çødé ☃ 𝄞 \u0000 nul inside",
    "zero_first": {"0": "zero", "1": "one"},
    "arr": [1, "two", [3, [4]], None, True, 2.5],
    "deep": {"a": {"b": {"c": {"d": [{"e": "bottom"}]}}}},
}

TWIN = {**DOC, "_id": "patient-18"}  # same content, another document


def _resolve(doc, pointer):
    node = doc
    for token in split_pointer(pointer):
        node = node[int(token)] if type(node) is list else node[token]
    return node


def _same(a, b) -> bool:
    """Equal and of the same JSON type, recursively (1 != 1.0 != True, -0.0 != 0.0)."""
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


LEAVES = [p for p, enc in flatten(DOC) if enc != OBJECT_HEADER]


@pytest.fixture(scope="module")
def world(module_place):
    db = module_place.open()
    trials = db.create_collection("trials")
    other = db.create_collection("other")
    trials.insert(copy.deepcopy(DOC))
    trials.insert(copy.deepcopy(TWIN))
    other.insert(copy.deepcopy(DOC))  # the same id and content in another collection
    tx_rev1 = db.tx_id
    trials.insert({"_id": "two-revs", "dosage": {"mg": 5.0}, "consent": True})
    rev1_tx = db.tx_id
    trials.replace("two-revs", {"_id": "two-revs", "dosage": {"mg": 5.0}, "consent": True})
    trials.insert({"_id": "doomed", "x": 1})
    trials.delete("doomed")
    state = db.state()
    yield {"db": db, "state": state, "tx_rev1": tx_rev1, "rev1_tx": rev1_tx}
    db.close()


def _prove(world, pointer, doc_id="patient-17", coll="trials", **kw):
    return world["db"][coll].prove(doc_id, pointer, **kw)


# ------------------------------------------------------------------------ every leaf verifies


@pytest.mark.parametrize("pointer", LEAVES)
def test_every_leaf_proves_its_exact_value(world, pointer):
    proof = _prove(world, pointer)
    assert proof.kind == "property" and proof.pointer == pointer
    expected = _resolve(DOC, pointer)
    value = docstore.verify(proof, world["state"])
    assert _same(value, expected), (pointer, value, expected)
    # and through JSON text, which is what an auditor receives
    text = proof.to_json()
    again = docstore.verify(docstore.proofs.load(text), world["state"])
    assert _same(again, expected), (pointer, again, expected)
    assert _same(docstore.verify(text, world["state"]), expected)
    assert proof.size == len(text.encode())


def test_leaf_list_covers_the_interesting_cases():
    assert {"/a~1b", "/t~0x", "/~01", "/", "/sub//", "/sub/~1", "/sub/~0", "/empty_obj",
            "/empty_arr", "/nested_empty/0", "/nested_empty/1", "/nested_empty/2/0",
            "/nested_empty/3/e", "/zero_first/0", "/arr/2/1/0", "/big", "/negzero"} <= set(LEAVES)
    assert "/zero_first" not in LEAVES  # the OBJECT_HEADER pair is not a leaf


@pytest.mark.parametrize(
    "pointer, expected",
    [
        ("/big", 2**100),
        ("/neg_big", -(2**80)),
        ("/u64max", 2**64 - 1),
        ("/consent", True),
        ("/withdrawn", False),
        ("/notes", None),
        ("/int_one", 1),
        ("/float_one", 1.0),
        ("/empty_obj", {}),
        ("/empty_arr", []),
        ("/negzero", -0.0),
        ("/tiny", 5e-324),
        ("/", "empty key"),
        ("/ünï", "çødé ☃ 𝄞 \u0000 nul inside"),
    ],
)
def test_exact_types_survive_json_and_a_file(world, tmp_path, pointer, expected):
    proof = _prove(world, pointer)
    for indent in (False, True):
        f = tmp_path / f"proof-{indent}.json"
        f.write_text(proof.to_json(indent=indent), encoding="utf-8")
        loaded = docstore.proofs.load(f.read_bytes())
        assert loaded.to_dict() == proof.to_dict()
        assert _same(loaded.claim, expected)
        assert _same(docstore.verify(loaded, world["state"]), expected)
        assert _same(docstore.verify(f.read_text(encoding="utf-8"), world["state"]), expected)


def test_claim_of_the_bundle_is_the_stored_value(world):
    proof = _prove(world, "/dosage/mg")
    assert proof.properties[0].pointer == "/dosage/mg"
    assert proof.properties[0].encoded == b"5.0"
    assert len(proof.properties[0].salt) == records.SALT_BYTES
    assert _same(decode_value(proof.properties[0].encoded), proof.claim)
    assert proof.revision == 1 and proof.ordinal == [p for p, _ in flatten(DOC)].index("/dosage/mg")
    doc_proof = world["db"]["trials"].prove("patient-17")
    assert Header.decode(doc_proof.header) == Header("trials", "patient-17", 1, len(flatten(DOC)), False)
    assert proof.index == doc_proof.index + 1 + proof.ordinal  # the entry's position in its transaction


# ---------------------------------------------------------------- binding of every bundle field


def _flip_b64(text: str, bit: int = 0) -> str:
    raw = bytearray(base64.b64decode(text))
    raw[bit // 8 % len(raw)] ^= 1 << (bit % 8)
    return base64.b64encode(bytes(raw)).decode()


def _flip_hex(text: str) -> str:
    raw = bytearray(bytes.fromhex(text))
    raw[-1] ^= 1
    return raw.hex()


def _header_b64(**changes) -> str:
    h = {"v": 1, "c": "trials", "id": "patient-17", "rev": 1, "n": len(flatten(DOC)), "del": False}
    h.update(changes)
    import orjson

    return base64.b64encode(orjson.dumps(h)).decode()


def _mutations(d: dict) -> dict:
    """name -> function changing a copy of a property bundle dict."""
    prop_index = d["properties"][0]
    muts = {
        "collection": lambda b: b.__setitem__("collection", "other"),
        "collection-unknown": lambda b: b.__setitem__("collection", "nope"),
        "id": lambda b: b.__setitem__("id", "patient-18"),
        "revision+1": lambda b: b.__setitem__("revision", b["revision"] + 1),
        "revision-0": lambda b: b.__setitem__("revision", 0),
        "pointer": lambda b: b.__setitem__("pointer", "/dosage/unit"),
        "pointer-both": lambda b: (b.__setitem__("pointer", "/dosage/unit"), b["properties"][0].__setitem__(0, "/dosage/unit")),
        "stored-pointer": lambda b: b["properties"][0].__setitem__(0, "/dosage/mG"),
        "ordinal+1": lambda b: b.__setitem__("ordinal", b["ordinal"] + 1),
        "ordinal-1": lambda b: b.__setitem__("ordinal", b["ordinal"] - 1),
        "ordinal-missing": lambda b: b.pop("ordinal"),
        "salt": lambda b: b["properties"][0].__setitem__(2, _flip_b64(prop_index[2], 77)),
        "salt-zero": lambda b: b["properties"][0].__setitem__(2, base64.b64encode(bytes(16)).decode()),
        "salt-short": lambda b: b["properties"][0].__setitem__(2, base64.b64encode(base64.b64decode(prop_index[2])[:15]).decode()),
        "claim-int": lambda b: b.__setitem__("claim", 5),
        "claim-other": lambda b: b.__setitem__("claim", 6.0),
        "claim-true": lambda b: b.__setitem__("claim", True),
        "claim-str": lambda b: b.__setitem__("claim", "5.0"),
        "claim-null": lambda b: b.__setitem__("claim", None),
        "claim-container": lambda b: b.__setitem__("claim", {"mg": 5.0}),
        "claim-and-stored-value": lambda b: (b.__setitem__("claim", 6.0), b["properties"][0].__setitem__(1, "6.0")),
        "stored-value-spacing": lambda b: b["properties"][0].__setitem__(1, "5.0 "),
        "header-added": lambda b: b.__setitem__("header", _header_b64()),
        "header-added-n": lambda b: b.__setitem__("header", _header_b64(n=3)),
        "header-added-del": lambda b: b.__setitem__("header", _header_b64(n=0, **{"del": True})),
        "header-malformed": lambda b: b.__setitem__("header", "not base64!"),
        "header-object": lambda b: b.__setitem__("header", {"index": 0, "value": _header_b64()}),
        "index+1": lambda b: b.__setitem__("index", b["index"] + 1),
        "index-1": lambda b: b.__setitem__("index", b["index"] - 1),
        "index-big": lambda b: b.__setitem__("index", 10**6),
        "index-missing": lambda b: b.pop("index"),
        "tx-id": lambda b: b["tx"].__setitem__("tx_id", b["tx"]["tx_id"] - 1),
        "tx-timestamp": lambda b: b["tx"].__setitem__("timestamp_ns", b["tx"]["timestamp_ns"] + 1),
        "tx-n-entries": lambda b: b["tx"].__setitem__("n_entries", b["tx"]["n_entries"] + 1),
        "tx-entries-root": lambda b: b["tx"].__setitem__("entries_root", _flip_hex(b["tx"]["entries_root"])),
        "state-root": lambda b: b["state"].__setitem__("root", _flip_hex(b["state"]["root"])),
        "state-tx-id": lambda b: b["state"].__setitem__("tx_id", b["state"]["tx_id"] - 1),
        "path-dropped": lambda b: b["path"].pop(),
        "path-extra": lambda b: b["path"].append(b["path"][0]),
        "path-reversed": lambda b: b["path"].reverse(),
        "tx-path-extra": lambda b: b["tx_path"].append(b["path"][0]),
        "kind-document": lambda b: b.__setitem__("kind", "document"),
        "kind-collection": lambda b: b.__setitem__("kind", "collection"),
        "version": lambda b: b.__setitem__("version", 3),
        "version-v1": lambda b: b.__setitem__("version", 1),
        "version-str": lambda b: b.__setitem__("version", "2"),
        "version-float": lambda b: b.__setitem__("version", 2.0),
        "unknown-field": lambda b: b.__setitem__("extra", 1),
        "format": lambda b: b.__setitem__("format", "other"),
    }
    for i in range(len(d["path"])):
        muts[f"path[{i}]"] = lambda b, i=i: b["path"].__setitem__(i, _flip_b64(b["path"][i], 3 * i + 1))
    for i in range(len(d["tx_path"])):
        muts[f"tx_path[{i}]"] = lambda b, i=i: b["tx_path"].__setitem__(i, _flip_b64(b["tx_path"][i], 5 * i + 2))
    return muts


def test_every_field_of_a_property_bundle_is_bound(world):
    state = world["state"]
    proof = _prove(world, "/dosage/mg")
    base = proof.to_dict()
    assert docstore.verify(base, state) == 5.0
    assert base["path"] and base["tx_path"], "the ledger is big enough for non-empty paths"
    muts = _mutations(base)
    assert len(muts) > 45
    for name, mutate in muts.items():
        d = copy.deepcopy(base)
        mutate(d)
        assert json.dumps(d) != json.dumps(base), name
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
        with pytest.raises(VerificationError):  # the same through JSON text
            docstore.verify(json.dumps(d), state)


def test_every_path_bit_is_bound(world):
    state = world["state"]
    base = _prove(world, "/arr/2/1/0").to_dict()
    for field in ("path", "tx_path"):
        for i in range(len(base[field])):
            for bit in range(0, 256, 37):
                d = copy.deepcopy(base)
                d[field][i] = _flip_b64(d[field][i], bit)
                with pytest.raises(VerificationError):
                    docstore.verify(d, state)


def test_state_tx_id_and_root_are_bound(world):
    db, state = world["db"], world["state"]
    proof = _prove(world, "/consent")
    older = db.ledger.state(state.tx_id - 1)
    with pytest.raises(VerificationError):
        docstore.verify(proof, older)
    with pytest.raises(VerificationError):
        docstore.verify(proof, type(state)(state.tx_id, bytes(32)))
    assert docstore.verify(proof, state) is True


# ------------------------------------------------- parts of other documents, revisions, collections


def _swap_properties(into: dict, source: dict, *extra: str) -> dict:
    d = copy.deepcopy(into)
    d["properties"] = copy.deepcopy(source["properties"])
    for name in extra:
        d[name] = copy.deepcopy(source[name])
    return d


def test_a_property_of_another_document_does_not_verify(world):
    state = world["state"]
    mine = _prove(world, "/dosage/mg").to_dict()
    twin = _prove(world, "/dosage/mg", doc_id="patient-18").to_dict()
    assert docstore.verify(twin, state) == 5.0 and mine["claim"] == twin["claim"]
    for extra in ((), ("ordinal",), ("ordinal", "claim")):
        with pytest.raises(VerificationError):
            docstore.verify(_swap_properties(mine, twin, *extra), state)
    # presenting the twin's proof as one about patient-17
    d = copy.deepcopy(twin)
    d["id"] = "patient-17"
    with pytest.raises(VerificationError):
        docstore.verify(d, state)
    d["header"] = copy.deepcopy(mine["header"])
    with pytest.raises(VerificationError):
        docstore.verify(d, state)


def test_a_property_of_another_collection_does_not_verify(world):
    state = world["state"]
    mine = _prove(world, "/consent").to_dict()
    theirs = _prove(world, "/consent", coll="other").to_dict()
    assert docstore.verify(theirs, state) is True
    assert theirs["id"] == mine["id"] and theirs["ordinal"] == mine["ordinal"]
    with pytest.raises(VerificationError):
        docstore.verify(_swap_properties(mine, theirs), state)
    for name in ("collection",):
        d = copy.deepcopy(theirs)
        d[name] = mine[name]
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
    d = copy.deepcopy(theirs)
    d["header"] = mine["header"]
    d["collection"] = "trials"
    with pytest.raises(VerificationError):
        docstore.verify(d, state)


def test_a_property_of_another_revision_does_not_verify(world):
    db, state = world["db"], world["state"]
    rev2 = _prove(world, "/dosage/mg", doc_id="two-revs").to_dict()
    rev1 = _prove(world, "/dosage/mg", doc_id="two-revs", at_tx=world["rev1_tx"]).to_dict()
    assert (rev1["revision"], rev2["revision"]) == (1, 2)
    assert docstore.verify(rev1, state) == docstore.verify(rev2, state) == 5.0
    assert rev1["properties"][0][2] != rev2["properties"][0][2]  # fresh salt
    for a, b in ((rev1, rev2), (rev2, rev1)):
        with pytest.raises(VerificationError):
            docstore.verify(_swap_properties(a, b), state)
        d = copy.deepcopy(a)
        d["revision"] = b["revision"]
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
        d["header"] = copy.deepcopy(b["header"])
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
    assert db["trials"].get("two-revs", at_tx=world["rev1_tx"]) == db["trials"].get("two-revs")


def test_a_forged_property_entry_with_a_recomputed_path_fails_the_tx_check(world):
    """Even a forger who rebuilds the entries tree must match the transaction header."""
    from kvcore import merkle
    from kvcore.hashing import entry_leaf_hash

    db, state = world["db"], world["state"]
    proof = _prove(world, "/dosage/mg")
    entries = db.ledger.entries(proof.tx_id)
    leaves = [entry_leaf_hash(1 if e.deleted else 0, e.key, e.value) for e in entries]
    i = proof.index
    forged_prop = Property("/dosage/mg", b"50.0", proof.properties[0].salt)
    key = records.property_key(records.property_prefix("trials", "patient-17"), 1, proof.ordinal, "/dosage/mg")
    leaves[i] = entry_leaf_hash(0, key, forged_prop.salt + forged_prop.encoded)
    path = merkle.inclusion_path(i, len(leaves), lambda a, b: merkle.root_of(leaves[a:b]))
    assert len(path) == len(proof.path)
    forged_tx = proof.tx._replace(entries_root=merkle.root_of(leaves))
    forged = proof._replace(claim=50.0, properties=[forged_prop], path=path, tx=forged_tx)
    with pytest.raises(VerificationError, match="transaction check"):
        docstore.verify(forged, state)
    honest_tx_root = forged._replace(tx=proof.tx)
    with pytest.raises(VerificationError, match="entry check"):
        docstore.verify(honest_tx_root, state)


# ------------------------------------------------------------------------ refusals of the prover


@pytest.mark.parametrize("pointer", ["", "/dosage", "/dosage/schedule", "/dosage/schedule/0",
                                     "/zero_first", "/arr", "/arr/2", "/deep/a/b", "/sub", "/sub/"])
def test_a_pointer_to_a_non_empty_container_is_refused(world, pointer):
    with pytest.raises(QueryError):
        _prove(world, pointer)


@pytest.mark.parametrize("pointer", ["/nope", "/dosage/g", "/dosage/mg/x", "/arr/6", "/arr/01",
                                     "/zero_first/2", "/a", "/t~1x", "/sub/~1/x", "/empty_obj/x",
                                     "/empty_arr/0", "/dosage/m"])
def test_a_pointer_that_does_not_exist_is_not_found(world, pointer):
    with pytest.raises(NotFoundError):
        _prove(world, pointer)


@pytest.mark.parametrize("pointer", ["dosage", "dosage/mg", "/a~2b", "/~", "/dosage~", 5, b"/dosage/mg", "/\ud800"])
def test_a_malformed_pointer_is_refused(world, pointer):
    with pytest.raises(InvalidPointerError):
        _prove(world, pointer)


def test_missing_and_deleted_documents_are_not_found(world):
    with pytest.raises(NotFoundError):
        _prove(world, "/x", doc_id="nobody")
    with pytest.raises(NotFoundError):
        _prove(world, "/x", doc_id="doomed")
    assert docstore.verify(_prove(world, None, doc_id="doomed"), world["state"]) is None


def test_the_object_marker_is_never_a_provable_value(world):
    """A bundle presenting the "{0}" marker of /zero_first as a leaf fails, whatever its claim.

    The bundle is forged from genuine parts: the real entry (salt included) and a genuine
    kvcore inclusion proof of exactly that entry, so only the marker check can refuse it.
    """
    db, state = world["db"], world["state"]
    pairs = flatten(DOC)
    ordinal = pairs.index(("/zero_first", OBJECT_HEADER))
    good = _prove(world, "/zero_first/0")
    assert good.ordinal == ordinal + 1
    index, tx_id = good.index - 1, good.tx_id
    stored = db.ledger.entries(tx_id, index, 1)[0]
    assert stored.value[records.SALT_BYTES:] == OBJECT_HEADER
    kv = db.ledger.prove_entry_at(tx_id, index, state)
    marker = Property("/zero_first", OBJECT_HEADER, stored.value[: records.SALT_BYTES])
    for claim in ({}, {"0": "zero", "1": "one"}, ["zero", "one"], None, "{0}"):
        forged = good._replace(pointer="/zero_first", claim=claim, index=index, properties=[marker],
                               ordinal=ordinal, path=kv.entry_path, tx_path=kv.tx_path)
        with pytest.raises(VerificationError, match="object"):
            docstore.verify(forged, state)
        with pytest.raises(VerificationError):
            docstore.verify(docstore.proofs.load(forged.to_json()), state)
    # the same forged entry with an honest leaf's bytes ("{}") swapped in fails the entry check
    d = forged.to_dict()
    d["properties"][0][1] = "{}"
    d["claim"] = {}
    with pytest.raises(VerificationError, match="entry check"):
        docstore.verify(d, state)
    # and the genuine proof next to it still verifies
    assert docstore.verify(good, state) == "zero"
