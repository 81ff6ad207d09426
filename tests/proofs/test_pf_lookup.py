"""How a property proof finds its entry: documents of one collection with different layouts
(the same pointer at different ordinals, pointers that are prefixes or suffixes of others),
proven in an interleaved order, from many transactions, with the transactions' entries trees
in memory or not. Every proof names the right ordinal, verifies, survives JSON, and equals
the proof the ledger gives for that entry."""

from __future__ import annotations

import random

import pytest

import docstore
import docstore.proofs
from docstore import NotFoundError, QueryError
from docstore.documents import records
from docstore.documents.flatten import OBJECT_HEADER, decode_value, flatten
from kvcore import proving as proving_mod


def _doc(i: int) -> dict:
    """Layouts vary with i: optional leading fields move /x/y; /y and /x/y share a suffix."""
    doc: dict = {"_id": f"d{i:04d}"}
    for j in range(i % 5):
        doc[f"pad{j}"] = j
    if i % 3:
        doc["y"] = f"top-{i}"
    doc["x"] = {"y": i, "yy": [i, str(i)]} if i % 4 else {"y": {"deep": i}}
    if i % 2:
        doc["zy"] = {"x": {"y": -i}}
    return doc


DOCS = [_doc(i) for i in range(60)]


@pytest.fixture(scope="module")
def world(module_place):
    db = module_place.open()
    coll = db.create_collection("c")
    for k in range(0, len(DOCS), 7):  # several transactions of several documents each
        coll.insert_many([dict(d) for d in DOCS[k : k + 7]])
    yield db, coll
    db.close()


def _leaves(doc: dict) -> list[tuple[int, str]]:
    return [(o, p) for o, (p, enc) in enumerate(flatten(doc)) if enc != OBJECT_HEADER]


@pytest.mark.parametrize("cached", [True, False], ids=["entries trees in memory", "entries trees read as needed"])
def test_interleaved_property_proofs_find_the_right_entry(world, monkeypatch, cached):
    db, coll = world
    led = db.ledger
    led.prover.extra_cache.clear()
    if not cached:
        monkeypatch.setattr(proving_mod, "_EXTRA_CACHE_BYTES", 0)
    state = db.state()
    work = [(doc, o, p) for doc in DOCS for o, p in _leaves(doc)]
    random.Random(3).shuffle(work)
    for doc, ordinal, pointer in work:
        proof = coll.prove(doc["_id"], pointer)
        assert proof.ordinal == ordinal, (doc["_id"], pointer)
        value = docstore.verify(proof, state)
        assert value == decode_value(dict(flatten(doc))[pointer])
        assert docstore.verify(docstore.proofs.load(proof.to_json()), state) == proof.claim
        header = led.get(records.header_key("c", doc["_id"]))
        kv = led.prove_entry_at(header.tx_id, header.index + 1 + ordinal, state)
        assert (proof.index, proof.tx, proof.path, proof.tx_path) == (
            header.index + 1 + ordinal, kv.header, kv.entry_path, kv.tx_path,
        )
    assert bool(led.prover.extra_cache) is cached


def test_values_are_the_documents_values(world):
    db, coll = world
    state = db.state()
    for doc in DOCS[:20]:
        for pointer in ("/x/y", "/_id"):
            node = doc
            for token in pointer.split("/")[1:]:
                node = node[token]
            if isinstance(node, dict):
                with pytest.raises(QueryError):
                    coll.prove(doc["_id"], pointer)
            else:
                assert docstore.verify(coll.prove(doc["_id"], pointer), state) == node


def test_missing_pointers_and_containers_are_refused_whatever_the_hint(world):
    db, coll = world
    coll.prove("d0001", "/x/y")  # leaves a hint for /x/y at that document's ordinal
    with pytest.raises(QueryError):
        coll.prove("d0000", "/x/y")  # a container there
    with pytest.raises(NotFoundError):
        coll.prove("d0000", "/y")  # absent there (i % 3 == 0)
    with pytest.raises(QueryError):
        coll.prove("d0001", "/zy/x")
    with pytest.raises(NotFoundError):
        coll.prove("d0001", "/x/yy/2")
