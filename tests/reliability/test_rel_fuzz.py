"""Property-based: arbitrary JSON values (and some non-JSON Python values) fed as documents,
filters, updates, projections, sorts, ids, pointers and proof bundles.

Only documented exceptions may escape: DocstoreError subclasses (and kvcore.KvError subclasses
where docs/errors.md says so). Anything else -- TypeError, KeyError, AttributeError,
RecursionError, OverflowError, struct.error, UnicodeError ... -- is a defect. And a call that
raises writes nothing (store.tx_id does not move).
"""

from __future__ import annotations

import json
import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docstore
import docstore.proofs
from docstore import DocstoreError
from docstore.documents.flatten import flatten

SETTINGS = settings(
    max_examples=int(os.environ.get("REL_FUZZ_EXAMPLES", "150")), deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture]
)

OPERATORS = [
    "$eq", "$ne", "$gt", "$gte", "$lt", "$lte", "$in", "$nin", "$exists", "$regex", "$options", "$not",
    "$all", "$size", "$type", "$elemMatch", "$and", "$or", "$nor", "$comment", "$where", "$expr",
    "$mod", "$set", "$unset", "$inc", "$push", "$each", "$foo", "$", "$slice",
]
FIELDS = ["a", "b", "a.b", "a.0", "a.0.b", "_id", "n", "", ".", "a..b", "a.", "$x", "0", "~1", "é", "\ud800"]
KEYS = st.one_of(st.sampled_from(OPERATORS + FIELDS), st.text(max_size=4))
ODD_SCALARS = st.sampled_from(
    [
        float("nan"), float("inf"), -float("inf"), -0.0, 1e308, 5e-324, 2**63, 2**64, -(2**63) - 1,
        10**30, 10**400, -(10**400), 2**53 + 1, "\ud800", "a\udcff", "\x00", "", "~", "/", "(", "[",
        ".*", "a" * 300, True, False, None, 0, 1, -1, 1.5, 3, 16, 18, 127, -1, 2, 4, 10,
    ]
)
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(),
    st.text(max_size=6),
    ODD_SCALARS,
)
JSON = st.recursive(
    SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(KEYS, inner, max_size=4)),
    max_leaves=16,
)
# a few Python values that are not JSON at all
NON_JSON = st.sampled_from([b"x", (1, 2), {1, 2}, object(), 1j, {1: "a"}, {("a",): 1}, bytearray(b"a"), range(3)])
ANY = st.one_of(JSON, JSON, JSON, NON_JSON, st.lists(st.one_of(JSON, NON_JSON), max_size=3),
                st.dictionaries(KEYS, st.one_of(JSON, NON_JSON), max_size=3))
DEEP = st.integers(1, 1200).map(lambda n: _nest(n))


def _nest(n: int):
    v: object = 1
    for i in range(n):
        v = [v] if i % 2 else {"a": v}
    return v


ALLOWED = (DocstoreError,)


@pytest.fixture(scope="module")
def store(module_place):
    database = module_place.open()
    c = database.create_collection(
        "c",
        schema={"type": "object", "properties": {"n": {"type": ["integer", "null"]}}},
        indexes=["a", "a.b", {"field": "u", "unique": True}],
    )
    c.insert_many(
        [
            {"_id": "d1", "a": {"b": [1, 2, {"c": "x"}]}, "n": 1, "u": 1, "s": "text", "l": [1, "a", None]},
            {"_id": "d2", "a": [{"b": 1}, {"b": "y"}], "n": 2, "u": "two", "f": 1.5, "big": 2**70},
            {"_id": "d3", "a": "plain", "n": None, "e": {}, "z": []},
        ]
    )
    database.create_collection("plain")
    yield database
    database.close()


def _expect_only_documented(store, fn):
    """Run fn; it may succeed or raise a documented error, and a failure writes nothing."""
    before = store.tx_id
    try:
        return fn()
    except ALLOWED:
        assert store.tx_id == before, "a failed call wrote a transaction"
        return None


@SETTINGS
@given(doc=ANY)
def test_arbitrary_documents(store, doc):
    coll = store["c"]
    for fn in (
        lambda: coll.insert(doc),
        lambda: coll.insert_many([doc]),
        lambda: coll.insert_many(doc),
        lambda: coll.replace("d3", doc),
    ):
        _expect_only_documented(store, fn)
    # whatever is accepted reads back exactly: same types, same key order, same bits
    plain = store["plain"]
    body = {k: v for k, v in doc.items() if k != "_id"} if isinstance(doc, dict) else doc
    if _expect_only_documented(store, lambda: plain.insert({"_id": "x", **body} if isinstance(body, dict) else body)):
        stored = plain.get("x")
        assert flatten(stored) == flatten({"_id": "x", **body})
        plain.delete("x")


@SETTINGS
@given(doc=DEEP)
def test_deeply_nested_values(store, doc):
    coll = store["c"]
    for fn in (
        lambda: coll.insert({"deep": doc}),
        lambda: list(coll.find({"deep": doc})),
        lambda: list(coll.find({"a": {"$elemMatch": doc}})),
        lambda: list(coll.find({"a": {"$in": [doc]}})),
        lambda: coll.update("d3", {"$set": {"deep": doc}}),
        lambda: docstore.proofs.from_dict(doc),
        lambda: docstore.proofs.load(json.dumps(doc)),
    ):
        _expect_only_documented(store, fn)


@SETTINGS
@given(filt=ANY, projection=ANY, sort=ANY, skip=ANY, limit=ANY)
def test_arbitrary_queries(store, filt, projection, sort, skip, limit):
    coll = store["c"]
    for fn in (
        lambda: list(coll.find(filt)),
        lambda: coll.count(filt),
        lambda: coll.find_one(filt),
        lambda: coll.explain(filt),
        lambda: list(coll.find({}, projection=projection)),
        lambda: list(coll.find({}, sort=sort)),
        lambda: list(coll.find({}, skip=skip, limit=limit)),
        lambda: list(coll.find(filt, projection, sort)),
        lambda: coll.distinct(filt if isinstance(filt, str) else "a", filt if isinstance(filt, dict) else None),
        lambda: list(coll.find(filt, at_tx=limit)),
    ):
        _expect_only_documented(store, fn)


@SETTINGS
@given(changes=ANY, doc_id=st.sampled_from(["d1", "d2", "d3"]))
def test_arbitrary_updates(store, changes, doc_id):
    coll = store["c"]
    before = coll.get(doc_id)
    with store.transaction() as tx:  # inside a transaction: validated, then rolled back
        try:
            tx["c"].update(doc_id, changes)
        except ALLOWED:
            pass
        tx.rollback()
    assert coll.get(doc_id) == before
    tx_before = store.tx_id
    try:
        coll.update(doc_id, changes)
    except ALLOWED:
        assert store.tx_id == tx_before
        assert coll.get(doc_id) == before
    else:  # applied: put the document back as it was
        coll.replace(doc_id, {k: v for k, v in before.items() if k != "_id"})


@SETTINGS
@given(value=ANY, other=ANY)
def test_arbitrary_ids_names_pointers_and_indexes(store, value, other):
    coll = store["c"]
    if value in ("d1", "d2", "d3"):  # the documents the other tests rely on stay
        return
    for fn in (
        lambda: coll.get(value),
        lambda: coll.get("d1", at_tx=value),
        lambda: coll.history(value),
        lambda: coll.history("d1", value, other),
        lambda: coll.delete(value),
        lambda: coll.update(value, {"$set": {"x": 1}}),
        lambda: coll.prove(value),
        lambda: coll.prove("d1", value),
        lambda: coll.prove("d1", at_tx=value),
        lambda: coll.prove("d1", state=value),
        lambda: coll.prove("d1", known_state=value),
        lambda: coll.prove_schema(at_tx=value),
        lambda: store.collection(value),
        lambda: store.create_collection(value),
        lambda: store.create_collection("z", schema=value),
        lambda: store.create_collection("z", indexes=value),
        lambda: coll.create_index(value),
        lambda: coll.create_index("w", unique=value),
        lambda: coll.set_schema(value),
        lambda: store.prove_consistency(value),
        lambda: value in store,
    ):
        _expect_only_documented(store, fn)


BUNDLE_FIELDS = [
    "format", "version", "kind", "collection", "id", "revision", "pointer", "claim", "index", "header",
    "properties", "ordinal", "tx", "path", "tx_path", "state", "consistency",
]


@pytest.fixture(scope="module")
def bundles(store):
    c = store.create_collection("proofs", schema={"type": "object"}, indexes=["x.y"])
    old = store.state()
    c.insert({"_id": "p1", "x": {"y": [1, 2]}})
    return old, store.state(), [
        c.prove("p1").to_dict(),
        c.prove("p1", "/x/y/1").to_dict(),
        c.prove_schema().to_dict(),
        c.prove("p1", known_state=old).to_dict(),
    ]


@SETTINGS
@given(data=st.data(), value=ANY)
def test_arbitrary_proof_bundles(bundles, data, value):
    old, state, proofs = bundles
    base = dict(data.draw(st.sampled_from(proofs)))
    field = data.draw(st.sampled_from(BUNDLE_FIELDS + ["tx.tx_id", "tx.n_entries", "tx.entries_root",
                                                        "state.tx_id", "state.root", "consistency.path"]))
    if "." in field:
        outer, inner = field.split(".")
        if isinstance(base.get(outer), dict):
            base[outer] = {**base[outer], inner: value}
    elif data.draw(st.booleans()):
        base[field] = value
    else:
        base.pop(field, None)
    for trusted in (state, old):
        for fn in (
            lambda: docstore.verify(base, trusted),
            lambda: docstore.proofs.from_dict(base),
            lambda: docstore.verify(value, trusted),
            lambda: docstore.proofs.from_dict(value),
        ):
            try:
                fn()
            except docstore.VerificationError:
                pass
    try:
        text = json.dumps(base)
    except (TypeError, ValueError):
        return
    cut = data.draw(st.integers(0, len(text)))
    for t in (text, text[:cut], text.encode()[:cut], text[:cut] + "\ud800"):
        try:
            docstore.verify(docstore.proofs.load(t), state)
        except docstore.VerificationError:
            pass


@SETTINGS
@given(text=st.one_of(st.text(max_size=50), st.binary(max_size=50), st.sampled_from(
    ["[" * 100_000, "{\"a\":" * 50_000, "1" * 5000, "NaN", "Infinity", "-Infinity", "\"\\ud800\"", "{}", "[]"])))
def test_arbitrary_text_as_a_proof(bundles, text):
    _old, state, _ = bundles
    try:
        docstore.verify(docstore.proofs.load(text), state)
    except docstore.VerificationError:
        pass
    try:
        docstore.verify(text, state)
    except docstore.VerificationError:
        pass


def test_after_all_that_the_database_audits_clean(store):
    """Runs last in this module: nothing the fuzzing accepted or refused left the derived state
    (documents, indexes) out of step with the ledger."""
    report = store.audit()
    assert report.ok, report.problems
