"""Property-based: proofs of random documents verify; random damage only ever raises
VerificationError (or, when the damage changes nothing that matters, returns the same value)."""

from __future__ import annotations

import base64
import copy
import itertools
import json
import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docstore
import docstore.proofs
from docstore import VerificationError
from docstore.documents.flatten import OBJECT_HEADER, flatten

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

_key_chars = st.sampled_from(list("ab0/~1 é☃_") + ["\U0001d11e", "\x7f"])
KEYS = st.one_of(st.sampled_from(["0", "1", "", "~", "/", "~1", "_id2"]), st.text(_key_chars, max_size=4))
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-(2**63), max_value=2**64),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=8),
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(KEYS, inner, max_size=3)),
    max_leaves=12,
)
DOCS = st.dictionaries(KEYS.filter(lambda k: k != "_id"), JSON, max_size=5)

# values a corrupted bundle may hold: any JSON, plus things JSON text can carry but Python
# programs rarely make (lone surrogates, huge integers, deep nesting, odd floats)
ODD = st.one_of(
    st.sampled_from(["\ud800", "a\udcff", "\udfff/x", 2**64, 2**64 - 1, 2**32, -1, 10**30, -0.0, 1e308,
                     "", "AAAA", "=" * 4, [[[[[[[]]]]]]], {"": {}}, True, False, None, 0, 1.5]),
    st.text(st.characters(min_codepoint=0xD7F0, max_codepoint=0xE010), max_size=3),
)
RANDOM_JSON = st.one_of(ODD, ODD, JSON, st.lists(ODD, max_size=3), st.dictionaries(st.text(max_size=3), ODD, max_size=3))

_ids = itertools.count()


def _same(a, b) -> bool:
    if type(a) is not type(b):
        return False
    if type(a) is float:
        return a == b and math.copysign(1.0, a) == math.copysign(1.0, b)
    if type(a) is list:
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if type(a) is dict:
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    return a == b


@pytest.fixture(scope="module")
def store(module_place):
    database = module_place.open()
    database.create_collection("c")
    database["c"].insert({"_id": "neighbour", "x": [1, 2, 3]})
    yield database
    database.close()


def _insert(store, body: dict) -> tuple[str, dict]:
    doc_id = f"doc-{next(_ids)}"
    doc = {"_id": doc_id, **body}
    with store.transaction() as tx:  # with a neighbour in the same transaction: non-empty paths
        tx["c"].insert(copy.deepcopy(doc))
        tx["c"].insert({"_id": f"{doc_id}-n", "y": 1})
    return doc_id, doc


def _leaves(doc: dict) -> list[str]:
    return [p for p, enc in flatten(doc) if enc != OBJECT_HEADER]


def _flip_bit(b64: str, bit: int) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[(bit // 8) % len(raw)] ^= 1 << (bit % 8)
    return base64.b64encode(bytes(raw)).decode()


@SETTINGS
@given(body=DOCS, data=st.data())
def test_every_proof_of_a_random_document_verifies(store, body, data):
    doc_id, doc = _insert(store, body)
    state = store.state()
    c = store["c"]
    proof = c.prove(doc_id)
    got = docstore.verify(docstore.proofs.load(proof.to_json()), state)
    assert flatten(got) == flatten(doc) and _same(got, doc)
    assert _same(c.get(doc_id), doc)
    pairs = dict((p, enc) for p, enc in flatten(doc))
    leaves = _leaves(doc)
    for pointer in data.draw(st.lists(st.sampled_from(leaves), min_size=1, max_size=4, unique=True)):
        pp = c.prove(doc_id, pointer)
        value = docstore.verify(docstore.proofs.load(pp.to_json()), state)
        assert _same(value, pp.claim)
        assert docstore.documents.flatten.encode_value(value) == pairs[pointer]


@SETTINGS
@given(body=DOCS, data=st.data())
def test_a_flipped_bit_or_another_claim_fails(store, body, data):
    doc_id, doc = _insert(store, body)
    state = store.state()
    c = store["c"]
    pointer = data.draw(st.sampled_from(_leaves(doc)))
    for proof in (c.prove(doc_id, pointer), c.prove(doc_id)):
        base = proof.to_dict()
        # one bit of one hash of path / tx_path
        fields = [f for f in ("path", "tx_path") if base[f]]
        assert fields, "a transaction of two documents and a ledger of several transactions"
        # (draws never depend on the ledger's size, which differs when hypothesis replays)
        field = fields[data.draw(st.integers(0, 1)) % len(fields)]
        i = data.draw(st.integers(0, 63)) % len(base[field])
        bit = data.draw(st.integers(0, 255))
        d = copy.deepcopy(base)
        d[field][i] = _flip_bit(d[field][i], bit)
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
        # one bit of the state root (in the bundle, or of the trusted state)
        bit = data.draw(st.integers(0, 255))
        root = bytearray(state.root)
        root[bit // 8] ^= 1 << (bit % 8)
        d = copy.deepcopy(base)
        d["state"]["root"] = bytes(root).hex()
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
        with pytest.raises(VerificationError):
            docstore.verify(base, type(state)(state.tx_id, bytes(root)))
        # another claim
        other = data.draw(JSON if proof.kind == "property" else DOCS.map(lambda b: {"_id": doc_id, **b}))
        try:
            changed = flatten({"v": other}) != flatten({"v": proof.claim})
        except docstore.InvalidDocumentError:
            changed = True
        if changed:
            d = copy.deepcopy(base)
            d["claim"] = other
            with pytest.raises(VerificationError):
                docstore.verify(d, state)
            with pytest.raises(VerificationError):
                docstore.verify(json.dumps(d), state)


def _locations(node, path=()):
    """Every (path to a node) of a JSON tree, the root excluded."""
    if isinstance(node, dict):
        for k, v in node.items():
            yield path + (k,)
            yield from _locations(v, path + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield path + (i,)
            yield from _locations(v, path + (i,))


def _apply(d, where, value, delete=False):
    node = d
    for k in where[:-1]:
        node = node[k]
    if delete:
        if isinstance(node, dict):
            del node[where[-1]]
        else:
            node.pop(where[-1])
    else:
        node[where[-1]] = value


@SETTINGS
@given(body=DOCS, data=st.data())
def test_random_corruption_of_a_bundle_raises_only_verification_error(store, body, data):
    doc_id, doc = _insert(store, body)
    c = store["c"]
    old_state = store.state()
    c.insert({"_id": f"{doc_id}-later"})
    state = store.state()
    choice = data.draw(st.sampled_from(["property", "document", "collection", "consistency"]))
    if choice == "property":
        proof = c.prove(doc_id, data.draw(st.sampled_from(_leaves(doc))))
    elif choice == "document":
        proof = c.prove(doc_id)
    elif choice == "collection":
        proof = c.prove_schema()
    else:
        proof = c.prove(doc_id, known_state=old_state)
    trusted = old_state if choice == "consistency" else state
    expected = docstore.verify(proof, trusted)
    base = proof.to_dict()
    for _ in range(6):
        d = copy.deepcopy(base)
        places = list(_locations(d))
        where = places[data.draw(st.integers(0, 10**6)) % len(places)]
        action = data.draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "add":
            d[data.draw(st.text(max_size=6))] = data.draw(RANDOM_JSON)
        else:
            _apply(d, where, data.draw(RANDOM_JSON), delete=action == "delete")
        for candidate in (d, "json"):
            try:
                bundle = d if candidate is d else json.dumps(d)
                got = docstore.verify(bundle, trusted)
            except VerificationError:
                continue
            except Exception as e:  # noqa: BLE001 - the point of the test
                raise AssertionError(f"{type(e).__name__} escaped verify for {where} ({action}): {e!r}") from e
            # it verified: then it proves exactly what the honest bundle proves
            assert _same(got, expected), (where, action)
            again = docstore.proofs.from_dict(d)
            assert (again.kind, again.collection, again.id, again.pointer) == (
                proof.kind, proof.collection, proof.id, proof.pointer), (where, action)
            if proof.kind != "collection":  # a collection proof's revision is unbound (see test_pf_document)
                assert again.revision == proof.revision, (where, action)


ODD_VALUES = ["\ud800", "a\udcff", "\udfff/x", 2**64, 2**64 - 1, 2**32, 2**32 - 1, -1, 10**30, -0.0, 1e308, 0.5,
              "", "AAAA", "====", "eyJ2IjoxfQ==", [[[[[[[]]]]]]], {"": {}}, [], {}, True, False, None, 0, "0" * 64]


def test_every_location_times_odd_values(store):
    """Deterministic sweep: every node of every kind of bundle, replaced by each odd value or deleted."""
    c = store["c"]
    doc_id, _doc = _insert(store, {"a": {"0": [1.5, None]}, "b": 2**70, "s": "x"})
    old_state = store.state()
    c.insert({"_id": f"{doc_id}-later"})
    state = store.state()
    cases = [
        (c.prove(doc_id, "/a/0/0"), state),
        (c.prove(doc_id), state),
        (c.prove_schema(), state),
        (c.prove(doc_id, "/b", known_state=old_state), old_state),
    ]
    checked = 0
    for proof, trusted in cases:
        expected = docstore.verify(proof, trusted)
        base = proof.to_dict()
        for where in list(_locations(base)):
            for value in ODD_VALUES + [_DELETE]:
                d = copy.deepcopy(base)
                _apply(d, where, value, delete=value is _DELETE)
                try:
                    got = docstore.verify(d, trusted)
                except VerificationError:
                    checked += 1
                    continue
                except Exception as e:  # noqa: BLE001
                    raise AssertionError(f"{type(e).__name__} escaped verify: {where} = {value!r}: {e!r}") from e
                assert _same(got, expected), (where, value)
                checked += 1
    assert checked > 1000


_DELETE = object()


def test_forged_header_with_out_of_range_numbers(store):
    """A header may be forged freely (its hash then fails); numbers beyond the key's 32-bit fields
    must fail the same way, not with struct.error."""
    c = store["c"]
    doc_id, _doc = _insert(store, {"a": 1})
    state = store.state()
    base = c.prove(doc_id).to_dict()
    for rev, n in ((2**32, 2), (2**40, 2), (1, 2**32), (2**64, 2)):
        header = {"v": 1, "c": "c", "id": doc_id, "rev": rev, "n": n, "del": False}
        d = copy.deepcopy(base)
        d["header"] = base64.b64encode(json.dumps(header).encode()).decode()
        d["revision"] = rev
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
    prop = c.prove(doc_id, "/a").to_dict()
    for field, value in (("revision", 2**32), ("ordinal", 2**32), ("revision", 2**64), ("ordinal", 2**70)):
        with pytest.raises(VerificationError):
            docstore.verify({**prop, field: value}, state)
    for field, value in (("timestamp_ns", 2**64), ("tx_id", 2**64), ("n_entries", 2**32), ("n_entries", 2**200)):
        d = copy.deepcopy(prop)
        d["tx"][field] = value
        with pytest.raises(VerificationError):
            docstore.verify(d, state)
