"""Selective disclosure: a property proof reveals that property and nothing else of the document."""

from __future__ import annotations

import base64
import hashlib

import pytest

import docstore
from docstore.documents import records
from docstore.documents.flatten import flatten
from kvcore.hashing import entry_leaf_hash, node_hash

SECRETS = {
    "_id": "patient-17",
    "dosage": {"mg": 5.0, "unit": "milligram-XQZ"},
    "consent": True,
    "name": "Zebulon Quixotically-Brandywine",
    "ssn": "987-65-4321",
    "diagnosis": {"code": "ICD-ZZ99.9-distinctive", "notes": ["left-handed-marker", "allergic-to-Kumquats"]},
    "age": 73219,
    "empty": {},
}
DISTINCTIVE = ["milligram-XQZ", "Zebulon", "Quixotically", "987-65-4321", "ICD-ZZ99", "left-handed-marker",
               "Kumquats", "73219", "consent", "diagnosis", "ssn", "name", "unit", "empty"]


@pytest.fixture(scope="module")
def world(module_place):
    db = module_place.open()
    c = db.create_collection("trials")
    c.insert({"_id": "before", "x": 1})
    c.insert_many([dict(SECRETS), {"_id": "neighbour", "consent": False, "dosage": {"mg": 5.0}}])
    rev1_tx = db.tx_id
    c.replace("patient-17", dict(SECRETS))  # identical values, a new revision
    c.insert({"_id": "after", "x": 2})
    yield db, c, rev1_tx
    db.close()


def _all_texts_of(proof) -> list[str]:
    """The JSON text, plus every base64 field decoded (as latin-1 and hex) for a thorough search."""
    d = proof.to_dict()
    out = [proof.to_json(), proof.to_json(indent=True)]
    blobs = [base64.b64decode(h) for h in d["path"] + d["tx_path"]]
    if d.get("header") is not None:
        blobs.append(base64.b64decode(d["header"]))
    blobs += [base64.b64decode(p[2]) for p in d["properties"]]
    for b in blobs:
        out.append(b.decode("latin-1"))
        out.append(b.hex())
    return out


def test_a_property_proof_shows_nothing_of_the_other_properties(world):
    db, c, _ = world
    full = c.prove("patient-17")  # the whole document: the only place the other salts appear
    mine = c.prove("patient-17", "/dosage/mg")
    assert docstore.verify(mine, db.state()) == 5.0
    texts = _all_texts_of(mine)
    others = [p for p in full.properties if p.pointer != "/dosage/mg"]
    assert len(others) == len(flatten(SECRETS)) - 1
    for p in others:
        salt = p.salt
        for needle in (base64.b64encode(salt).decode(), salt.hex(), salt.decode("latin-1"), p.pointer):
            if p.pointer == "/_id" and needle == p.pointer:
                continue
            assert not any(needle in t for t in texts), (p.pointer, needle)
        # the value bytes as stored (salt || value) do not appear either
        stored = (salt + p.encoded).decode("latin-1")
        assert not any(stored in t for t in texts), p.pointer
    for word in DISTINCTIVE:
        # a short word can occur by chance in random bytes read as text: look for it as a
        # pointer step or a JSON string, as it would appear if disclosed
        needles = [word] if len(word) >= 6 else ["/" + word, '"' + word + '"']
        assert not any(n in t for n in needles for t in texts), word
    # a property proof carries no header: not even the number of properties is shown
    assert mine.header is None and mine.to_dict()["header"] is None


def test_a_proof_of_a_boolean_does_not_reveal_the_other_boolean(world):
    db, c, _ = world
    consent = c.prove("patient-17", "/consent")
    neighbour_full = c.prove("neighbour")
    texts = _all_texts_of(consent)
    for p in neighbour_full.properties:
        assert not any(base64.b64encode(p.salt).decode() in t for t in texts)
    mg = c.prove("patient-17", "/dosage/mg")
    assert not any('"true"' in t or "true" in t for t in _all_texts_of(mg)[:2])


def test_every_salt_is_fresh(world):
    db, c, rev1_tx = world
    rev1 = c.prove("patient-17", at_tx=rev1_tx)
    rev2 = c.prove("patient-17")
    assert (rev1.revision, rev2.revision) == (1, 2)
    assert docstore.verify(rev1, db.state()) == docstore.verify(rev2, db.state()) == SECRETS
    assert [p.encoded for p in rev1.properties] == [p.encoded for p in rev2.properties]
    salts1 = [p.salt for p in rev1.properties]
    salts2 = [p.salt for p in rev2.properties]
    assert all(len(s) == records.SALT_BYTES for s in salts1 + salts2)
    assert not set(salts1) & set(salts2)  # identical values, different salts
    assert len(set(salts1)) == len(salts1) and len(set(salts2)) == len(salts2)
    neighbour = c.prove("neighbour")
    assert not set(p.salt for p in neighbour.properties) & set(salts1 + salts2)
    # a property proof of revision 2 carries nothing of revision 1
    texts = _all_texts_of(c.prove("patient-17", "/dosage/mg"))
    for s in salts1:
        assert not any(base64.b64encode(s).decode() in t for t in texts)


def test_path_hashes_are_not_guessable_leaf_hashes(world):
    """Sanity: with a guessed salt (all zeros) no other property's leaf hash, nor a pair of
    neighbouring leaves, appears among the path hashes."""
    db, c, _ = world
    proof = c.prove("patient-17", "/dosage/mg")
    full = c.prove("patient-17")
    prefix = records.property_prefix("trials", "patient-17")
    hashes = set(proof.path) | set(proof.tx_path)
    guesses = []
    for i, p in enumerate(full.properties):
        key = records.property_key(prefix, full.revision, i, p.pointer)
        for salt in (bytes(16), b"\xff" * 16):
            guesses.append(entry_leaf_hash(0, key, salt + p.encoded))
    # unsalted (no salt at all) and raw-value hashes as well
    for i, p in enumerate(full.properties):
        key = records.property_key(prefix, full.revision, i, p.pointer)
        guesses += [entry_leaf_hash(0, key, p.encoded), hashlib.sha256(p.encoded).digest()]
    guesses += [node_hash(a, b) for a, b in zip(guesses, guesses[1:])]
    assert not hashes & set(guesses)
    # while the true leaf hash of a neighbour does fit (the guess, not the scheme, is wrong)
    true_leaves = {
        entry_leaf_hash(0, records.property_key(prefix, full.revision, i, p.pointer), p.salt + p.encoded)
        for i, p in enumerate(full.properties)
    }
    assert hashes & true_leaves
