"""Bad input: every case of docs/errors.md gets its typed exception, and nothing is written.

Each row of CASES is one call that must fail with exactly the documented exception type; after
it the database is unchanged (same transaction id, same documents). Conflicts, proof files and
the kvcore layer have their own tests below, and the last test checks that docs/errors.md lists
every error class with the exit code the command line really gives it.
"""

from __future__ import annotations

import enum
import json
import re
import warnings

import pytest

import docstore
import docstore.proofs
import kvcore
from docstore import (
    CollectionExistsError,
    CollectionNotFoundError,
    ConflictError,
    DocstoreError,
    DocumentNotFoundError,
    DuplicateIdError,
    DuplicateKeyError,
    InvalidDocumentError,
    InvalidPointerError,
    NotFoundError,
    QueryError,
    SchemaError,
    TransactionTooLargeError,
    VerificationError,
)
from docstore.documents.flatten import MAX_DEPTH, MAX_DOCUMENT_BYTES
from rel_testlib import REPO_ROOT, contents


class Color(enum.IntEnum):
    RED = 1


def _nested(depth: int) -> dict:
    doc: dict = {"leaf": 1}
    for _ in range(depth):
        doc = {"n": doc}
    return doc


def _tx(store, fn):
    """Run fn(tx) inside a transaction that must fail (and so is rolled back)."""
    with store.transaction() as tx:
        fn(tx)


I = "items"
CASES = [
    # ------------------------------------------------------------ documents: not storable JSON
    ("set value", lambda store: store[I].insert({"x": {1, 2}}), InvalidDocumentError, "unsupported type set"),
    ("bytes value", lambda store: store[I].insert({"x": b"raw"}), InvalidDocumentError, "unsupported type bytes"),
    ("tuple value", lambda store: store[I].insert({"x": (1, 2)}), InvalidDocumentError, "tuple"),
    ("object value", lambda store: store[I].insert({"x": object()}), InvalidDocumentError, "unsupported type"),
    ("int subclass", lambda store: store[I].insert({"x": Color.RED}), InvalidDocumentError, "subclasses excluded"),
    ("non-string key", lambda store: store[I].insert({1: "a"}), InvalidDocumentError, "not a str"),
    ("NaN", lambda store: store[I].insert({"x": float("nan")}), InvalidDocumentError, "NaN"),
    ("Infinity", lambda store: store[I].insert({"x": [1, float("inf")]}), InvalidDocumentError, "/x/1"),
    ("-Infinity in a transaction", lambda store: _tx(store, lambda tx: tx[I].insert({"x": -float("inf")})),
     InvalidDocumentError, "NaN/Infinity"),
    ("NaN through $set", lambda store: store[I].update("a", {"$set": {"x": float("nan")}}), InvalidDocumentError, "/x"),
    ("$inc overflowing to infinity", lambda store: store[I].update("a", {"$inc": {"big": 1e308}}),
     InvalidDocumentError, "/big"),
    ("lone surrogate in a value", lambda store: store[I].insert({"x": "\ud800"}), InvalidDocumentError, "surrogate"),
    ("lone surrogate in a key", lambda store: store[I].insert({"\udcff": 1}), InvalidDocumentError, "surrogate"),
    ("integer of 5000 digits", lambda store: store[I].insert({"x": 10**5000}), InvalidDocumentError, "too many digits"),
    ("document over 4 MiB", lambda store: store[I].insert({"x": "a" * MAX_DOCUMENT_BYTES}), InvalidDocumentError,
     "MAX_DOCUMENT_BYTES"),
    ("nested too deep", lambda store: store[I].insert(_nested(MAX_DEPTH + 1)), InvalidDocumentError, "MAX_DEPTH"),
    ("property path too long for a key", lambda store: store[I].insert({"k" * 1000: 1}), InvalidDocumentError,
     "property path is too long"),
    ("_id not a string", lambda store: store[I].insert({"_id": 7}), InvalidDocumentError, "_id must be a string"),
    ("_id empty", lambda store: store[I].insert({"_id": ""}), InvalidDocumentError, "empty"),
    ("_id over 512 bytes", lambda store: store[I].insert({"_id": "é" * 300}), InvalidDocumentError, "exceeds 512"),
    ("_id with NUL", lambda store: store[I].insert({"_id": "a\x00b"}), InvalidDocumentError, "NUL"),
    ("document not an object", lambda store: store[I].insert([1, 2]), InvalidDocumentError, "JSON object"),
    ("insert_many of a number", lambda store: store[I].insert_many(5), InvalidDocumentError, "list of documents"),
    ("insert_many of one document", lambda store: store[I].insert_many({"x": 1}), InvalidDocumentError,
     "list of documents"),
    ("insert_many with one bad document", lambda store: store[I].insert_many([{"x": 1}, {"x": float("nan")}]),
     InvalidDocumentError, "NaN"),
    ("replace changing _id", lambda store: store[I].replace("a", {"_id": "other"}), InvalidDocumentError, "cannot change _id"),
    ("unique value too long for its index", lambda store: store[I].insert({"u": "z" * 1100}), InvalidDocumentError,
     "too long for its unique index"),
    # ------------------------------------------------------------ pointers
    ("pointer without a leading slash", lambda store: store[I].prove("a", "n"), InvalidPointerError, "start with '/'"),
    ("pointer with a bad escape", lambda store: store[I].prove("a", "/n~2"), InvalidPointerError, "'~'"),
    ("pointer not a string", lambda store: store[I].prove("a", 5), InvalidPointerError, "must be a str"),
    ("pointer to no property", lambda store: store[I].prove("a", "/nope"), NotFoundError, "no property"),
    ("pointer to a container", lambda store: store[I].prove("a", "/tags"), QueryError, "container"),
    # ------------------------------------------------------------ filters, projections, sorts, paging
    ("unknown field operator", lambda store: list(store[I].find({"n": {"$foo": 1}})), QueryError, "unknown operator"),
    ("unknown top-level operator", lambda store: list(store[I].find({"$foo": 1})), QueryError, "unknown top-level"),
    ("unsupported operator", lambda store: list(store[I].find({"$where": "1"})), QueryError, "unsupported"),
    ("$and not an array", lambda store: list(store[I].find({"$and": {"n": 1}})), QueryError, "nonempty array"),
    ("$in not an array", lambda store: list(store[I].find({"n": {"$in": 5}})), QueryError, "needs an array"),
    ("operator mixed with fields", lambda store: list(store[I].find({"n": {"$gt": 1, "x": 2}})), QueryError,
     "cannot mix"),
    ("invalid regular expression", lambda store: list(store[I].find({"s": {"$regex": "("}})), QueryError,
     "invalid regular expression"),
    ("negative $size", lambda store: list(store[I].find({"tags": {"$size": -1}})), QueryError, "negative"),
    ("unknown $type name", lambda store: list(store[I].find({"n": {"$type": "nope"}})), QueryError, "unknown type"),
    ("infinite $type code", lambda store: list(store[I].find({"n": {"$type": float("inf")}})), QueryError,
     "invalid numerical type code"),
    ("filter not an object", lambda store: list(store[I].find("n = 1")), QueryError, "must be an object"),
    ("non-JSON operand", lambda store: list(store[I].find({"n": {1, 2}})), QueryError, "not a JSON value"),
    ("count with a bad filter", lambda store: store[I].count({"n": {"$bad": 1}}), QueryError, "unknown operator"),
    ("projection mixing include and exclude", lambda store: list(store[I].find({}, projection={"n": 1, "s": 0})),
     QueryError, "cannot mix"),
    ("projection value not 0/1", lambda store: list(store[I].find({}, projection={"n": "yes"})), QueryError, "0/1"),
    ("sort direction 2", lambda store: list(store[I].find({}, sort=[("n", 2)])), QueryError, "1 or -1"),
    ("sort not a field", lambda store: list(store[I].find({}, sort=5)), QueryError, "sort specification"),
    ("negative skip", lambda store: list(store[I].find({}, skip=-1)), QueryError, "skip"),
    ("limit not an integer", lambda store: list(store[I].find({}, limit="10")), QueryError, "limit"),
    ("at_tx beyond the ledger", lambda store: list(store[I].find({}, at_tx=10**6)), QueryError, "does not exist"),
    ("get at_tx negative", lambda store: store[I].get("a", at_tx=-1), QueryError, "does not exist"),
    ("history paging negative", lambda store: store[I].history("a", offset=-1), QueryError, "negative"),
    ("distinct of a bad field", lambda store: store[I].distinct("$n"), QueryError, "invalid index field"),
    # ------------------------------------------------------------ updates
    ("unknown update operator", lambda store: store[I].update("a", {"$bit": {"n": {"and": 1}}}), QueryError,
     "unknown update operator"),
    ("update without operators", lambda store: store[I].update("a", {"n": 2}), QueryError, "use replace"),
    ("empty update", lambda store: store[I].update("a", {}), QueryError, "non-empty"),
    ("$inc by a string", lambda store: store[I].update("a", {"$inc": {"n": "1"}}), QueryError, "must be a number"),
    ("$inc by true", lambda store: store[I].update("a", {"$inc": {"n": True}}), QueryError, "must be a number"),
    ("$inc of a string field", lambda store: store[I].update("a", {"$inc": {"s": 1}}), QueryError,
     "holds a string"),
    ("$inc through a scalar", lambda store: store[I].update("a", {"$inc": {"s.x": 1}}), QueryError, "parent is a string"),
    ("$set of _id", lambda store: store[I].update("a", {"$set": {"_id": "b"}}), QueryError, "_id"),
    ("conflicting update paths", lambda store: store[I].update("a", {"$set": {"m": 1, "m.x": 2}}), QueryError,
     "conflict"),
    ("$push onto a number", lambda store: store[I].update("a", {"$push": {"n": 1}}), QueryError, "not an array"),
    # ------------------------------------------------------------ schemas
    ("schema of a wrong type", lambda store: store.create_collection("new", schema=[1]), SchemaError,
     "JSON object or a boolean"),
    ("invalid schema keyword value", lambda store: store.create_collection("new", schema={"type": 5}), SchemaError,
     "invalid schema"),
    ("schema with a bad pattern", lambda store: store.create_collection("new", schema={"pattern": "("}), SchemaError,
     "invalid schema"),
    ("schema with a dangling $ref", lambda store: store.create_collection("new", schema={"$ref": "#/nope"}),
     SchemaError, "invalid schema"),
    ("schema with NaN", lambda store: store.create_collection("new", schema={"maximum": float("nan")}), SchemaError,
     "plain JSON"),
    ("schema with a tuple", lambda store: store.create_collection("new", schema={"enum": (1, 2)}), SchemaError,
     "plain JSON"),
    ("schema with a 70-bit integer", lambda store: store[I].set_schema({"maximum": 2**70}), SchemaError, "plain JSON"),
    ("document violating the schema", lambda store: store[I].insert({"n": "one"}), SchemaError, "violates"),
    ("update violating the schema", lambda store: store[I].update("a", {"$set": {"n": "one"}}), SchemaError,
     "violates"),
    ("replace violating the schema", lambda store: store[I].replace("a", {"n": None}), SchemaError, "violates"),
    ("new schema violated by existing documents", lambda store: store[I].set_schema({"required": ["zzz"]}),
     SchemaError, "existing documents"),
    # ------------------------------------------------------------ duplicates
    ("duplicate _id", lambda store: store[I].insert({"_id": "a", "n": 1}), DuplicateIdError, "already exists"),
    ("duplicate _id in one insert_many", lambda store: store[I].insert_many([{"_id": "q"}, {"_id": "q"}]),
     DuplicateIdError, "'q'"),
    ("duplicate _id in a transaction", lambda store: _tx(store, lambda tx: tx[I].insert({"_id": "b"})),
     DuplicateIdError, "already exists"),
    ("duplicate unique value", lambda store: store[I].insert({"u": 1}), DuplicateKeyError, "unique index items.u"),
    ("unique index over duplicates", lambda store: store[I].create_index("grp", unique=True), DuplicateKeyError,
     "share a value"),
    ("existing collection", lambda store: store.create_collection(I), CollectionExistsError, "already exists"),
    ("existing index", lambda store: store[I].create_index("n"), QueryError, "already has an index"),
    # ------------------------------------------------------------ unknown names and ids
    ("unknown collection", lambda store: store["nope"], CollectionNotFoundError, "does not exist"),
    ("unknown collection in a transaction", lambda store: _tx(store, lambda tx: tx["nope"].insert({})),
     CollectionNotFoundError, "does not exist"),
    ("invalid collection name", lambda store: store.create_collection("no spaces"), QueryError,
     "invalid collection name"),
    ("unknown id: get", lambda store: store[I].get("zz"), DocumentNotFoundError, "no document"),
    ("unknown id: update", lambda store: store[I].update("zz", {"$set": {"n": 1}}), DocumentNotFoundError, "no document"),
    ("unknown id: replace", lambda store: store[I].replace("zz", {"n": 1}), DocumentNotFoundError, "no document"),
    ("unknown id: delete", lambda store: store[I].delete("zz"), DocumentNotFoundError, "no document"),
    ("unknown id: history", lambda store: store[I].history("zz"), DocumentNotFoundError, "no document"),
    ("unknown id: prove", lambda store: store[I].prove("zz"), DocumentNotFoundError, "no document"),
    ("deleted id: get", lambda store: store[I].get("gone"), DocumentNotFoundError, "no document"),
    ("deleted id: prove a property", lambda store: store[I].prove("gone", "/n"), DocumentNotFoundError, "deleted"),
    ("collection before it existed", lambda store: store[I].prove_schema(at_tx=0), NotFoundError, "no collection"),
    # ------------------------------------------------------------ index specifications
    ("index on an operator", lambda store: store[I].create_index("$n"), QueryError, "invalid index field"),
    ("index on an empty path part", lambda store: store[I].create_index("a..b"), QueryError, "invalid index field"),
    ("index field with a lone surrogate", lambda store: store[I].create_index("\ud800"), QueryError, "surrogate"),
    ("index field with NUL", lambda store: store[I].create_index("a\x00b"), QueryError, "NUL"),
    ("indexes given as a number", lambda store: store.create_collection("new", indexes=5), QueryError, "list of index"),
    ("unique flag not a boolean", lambda store: store[I].create_index("m", unique="yes"), QueryError, "true or false"),
    # ------------------------------------------------------------ proofs asked for wrongly
    ("prove with a foreign state", lambda store: store[I].prove("a", state={"tx_id": 1}), QueryError, "kvcore.State"),
    ("consistency with a foreign state", lambda store: store.prove_consistency(store.state()._replace(root=b"\0" * 32)),
     VerificationError, "not the one you trusted"),
]


@pytest.fixture(scope="module")
def store(module_place):
    database = module_place.open()
    items = database.create_collection(
        I,
        schema={"type": "object", "properties": {"n": {"type": "integer"}}},
        indexes=["n", {"field": "u", "unique": True}],
    )
    items.insert_many(
        [
            {"_id": "a", "n": 1, "u": 1, "s": "text", "big": 1e308, "tags": ["x", "y"], "grp": "g"},
            {"_id": "b", "n": 1, "u": 2, "grp": "g"},
            {"_id": "gone", "n": 3, "u": 3},
        ]
    )
    items.delete("gone")
    yield database
    database.close()


@pytest.mark.parametrize("case,call,error,words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_its_typed_error_and_writes_nothing(store, case, call, error, words):
    before_tx, before = store.tx_id, contents(store)
    with pytest.raises(error) as err:
        call(store)
    assert type(err.value) is error, f"{case}: {type(err.value).__name__} is not exactly {error.__name__}"
    assert isinstance(err.value, DocstoreError)
    assert words in str(err.value), str(err.value)
    assert store.tx_id == before_tx, f"{case}: a failed call wrote a transaction"
    assert contents(store) == before


def test_what_is_accepted_is_stored_exactly(store):
    """The other side of the table: huge but finite numbers, odd keys and NaN in a *filter* are
    fine (NaN matches nothing: no stored document can hold one)."""
    doc = {"_id": "odd", "n": 1, "u": "odd", "big": 2**200, "neg": -(10**4000), "tiny": 5e-324, "neg0": -0.0,
           "~/": {"": [{}, []]}, "0": "zero-key", "é☃": "text"}
    try:
        store[I].insert(doc)
        got = store[I].get("odd")
        assert got == doc and json.dumps(got) == json.dumps(doc)
        assert list(store[I].find({"big": float("nan")})) == []
        assert [d["_id"] for d in store[I].find({"big": 2**200})] == ["odd"]
        assert docstore.verify(store[I].prove("odd", "/neg").to_json(), store.state()) == -(10**4000)
    finally:
        store[I].delete("odd")


def test_index_specifications_that_are_accepted(place):
    with place.open() as store:
        assert store.create_collection("none", indexes=None).indexes() == []
        assert store.create_collection("one", indexes="a.b").indexes() == [{"field": "a.b", "unique": False}]
        assert store.create_collection("gen", indexes=(f for f in ["x", "y"])).indexes()[1]["field"] == "y"


def test_transaction_over_the_ledger_limit_is_refused_whole(store, monkeypatch):
    import kvcore.ledger

    monkeypatch.setattr(kvcore.ledger, "MAX_TX_ENTRIES", 10)
    before_tx, before = store.tx_id, contents(store)
    with pytest.raises(TransactionTooLargeError, match="too large"):
        store[I].insert_many([{"_id": f"many-{i}", "n": i, "u": f"m{i}"} for i in range(5)])
    assert store.tx_id == before_tx and contents(store) == before
    assert docstore.TransactionTooLargeError is TransactionTooLargeError  # exported at top level


def test_a_finished_transaction_refuses_more_work(store):
    tx = store.transaction()
    tx[I].get("a")
    tx.commit()
    with pytest.raises(DocstoreError, match="already been committed"):
        tx[I].insert({"n": 5})


def test_closed_and_read_only_databases(place):
    with place.open() as store:
        store.create_collection("c").insert({"_id": "x"})
    with pytest.raises(kvcore.ClosedError):
        store["c"].insert({"_id": "y"})
    with pytest.raises(kvcore.ClosedError):
        store.transaction()
    with place.open(readonly=True) as ro:
        for write in (lambda: ro["c"].insert({"_id": "y"}), lambda: ro.create_collection("d"),
                      lambda: ro["c"].delete("x")):
            with pytest.raises(kvcore.ReadOnlyError):
                write()
        assert ro.tx_id == 2 and ro["c"].get("x") == {"_id": "x"}


# ================================================================================== conflicts
def test_conflicting_transactions(store):
    """Optimistic concurrency: the first commit wins; the other raises ConflictError and
    writes nothing, whether it read the document, wrote it, or queried the collection."""
    before = store[I].get("b")
    # read-modify-write of the same document
    t1, t2 = store.transaction(), store.transaction()
    n1 = t1[I].get("b")["n"]
    n2 = t2[I].get("b")["n"]
    t1[I].update("b", {"$set": {"n": n1 + 10}})
    t2[I].update("b", {"$set": {"n": n2 + 20}})
    t1.commit()
    tx_id = store.tx_id
    with pytest.raises(ConflictError) as err:
        t2.commit()
    assert isinstance(err.value, kvcore.ConflictError)  # one class for both layers' callers
    assert store.tx_id == tx_id and store[I].get("b")["n"] == before["n"] + 10
    # a query is a read of the whole collection: a concurrent insert is a phantom, a conflict
    t3 = store.transaction()
    assert [d["_id"] for d in t3[I].find({"n": {"$gte": 100}})] == []
    t3[I].insert({"_id": "from-t3", "n": 100, "u": "t3"})
    store[I].insert({"_id": "phantom", "n": 100, "u": "phantom"})
    tx_id = store.tx_id
    with pytest.raises(ConflictError):
        t3.commit()
    assert store.tx_id == tx_id and "from-t3" not in contents(store)[I]
    # a schema change under a writer conflicts with it
    t4 = store.transaction()
    t4[I].insert({"_id": "from-t4", "n": 4, "u": "t4"})
    store[I].set_schema({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]})
    with pytest.raises(ConflictError):
        t4.commit()
    assert "from-t4" not in contents(store)[I]
    # snapshot reads: a transaction keeps seeing the state it started from
    t5 = store.transaction()
    seen = t5[I].get("b")
    store[I].update("b", {"$inc": {"n": 1}})
    assert t5[I].get("b") == seen and t5[I].find_one({"_id": "b"}) == seen
    t5.rollback()
    for doc_id in ("phantom",):
        store[I].delete(doc_id)
    store[I].update("b", {"$set": {"n": before["n"]}})


# ================================================================================ proof files
@pytest.fixture(scope="module")
def proof_text(store):
    return store[I].prove("a", "/n").to_json(indent=True), store.state()


@pytest.mark.parametrize(
    "label,text",
    [
        ("empty", ""),
        ("not JSON", "{this is not json"),
        ("JSON but not an object", "[1, 2, 3]"),
        ("NaN literal", '{"format": "immudoc-proof", "version": NaN}'),
        ("another format", '{"format": "zip", "version": 1}'),
        ("a newer version", '{"format": "immudoc-proof", "version": 2}'),
        ("deeply nested", "[" * 100_000 + "]" * 100_000),
        ("bytes that are not UTF-8", b"\xff\xfe{}"),
    ],
)
def test_unreadable_proof_files(proof_text, label, text):
    _text, state = proof_text
    with pytest.raises(VerificationError):
        docstore.verify(docstore.proofs.load(text), state)


def test_truncated_and_altered_proof_files(proof_text):
    text, state = proof_text
    assert docstore.verify(docstore.proofs.load(text), state) == 1
    for cut in range(0, len(text), 7):  # truncated anywhere: never a wrong answer, always this error
        with pytest.raises(VerificationError):
            docstore.verify(docstore.proofs.load(text[:cut]), state)
    d = json.loads(text)
    altered = {
        "claim": 2,
        "revision": d["revision"] + 1,
        "pointer": "/u",
        "collection": "other",
        "index": d["index"] + 1,
        "ordinal": d["ordinal"] + 1,
        "version": 3,
        "kind": "document",
    }
    for field, value in altered.items():
        with pytest.raises(VerificationError):
            docstore.verify(json.dumps({**d, field: value}), state)
    for field in ("tx", "path", "tx_path", "state", "properties"):
        with pytest.raises(VerificationError):
            docstore.verify(json.dumps({k: v for k, v in d.items() if k != field}), state)
    wrong_root = state._replace(root=bytes(32))
    with pytest.raises(VerificationError, match="state check failed"):
        docstore.verify(text, wrong_root)


def test_state_files(tmp_path):
    from docstore.proofs.trust import read_state_file

    bad = tmp_path / "state.json"
    for content in ("", "{", '{"tx_id": "x", "root": "00"}', '{"tx_id": 1}', "[]"):
        bad.write_text(content)
        with pytest.raises(VerificationError):
            read_state_file(bad)
    with pytest.raises(VerificationError, match="cannot read"):
        read_state_file(tmp_path / "missing.json")


# ================================================================================== kvcore
def test_kvcore_input_errors(tmp_path):
    with kvcore.Ledger.open(tmp_path / "ledger") as led:
        tx = led.set(b"k", b"v")
        cases = [
            (lambda: led.set("text key", b"v"), kvcore.InvalidInputError),
            (lambda: led.set(b"k", "text value"), kvcore.InvalidInputError),
            (lambda: led.set(b"", b"v"), kvcore.LimitError),
            (lambda: led.set(b"k" * 1025, b"v"), kvcore.LimitError),
            (lambda: led.get(b"missing"), kvcore.KeyNotFoundError),
            (lambda: led.delete(b"missing"), kvcore.KeyNotFoundError),
            (lambda: led.tx(99), kvcore.TxNotFoundError),
            (lambda: led.get(b"k", at_tx=99), kvcore.TxNotFoundError),
            (lambda: led.prove_consistency(5), kvcore.TxNotFoundError),
            (lambda: led.set_all([]), kvcore.LimitError),
        ]
        for call, error in cases:
            with pytest.raises(error):
                call()
            assert led.tx_id == tx
        proof = led.prove_entry(b"k")
        with pytest.raises(kvcore.VerificationError):
            kvcore.verify_entry(proof, b"k", b"forged", led.state())
        t1, t2 = led.transaction(), led.transaction()
        t1.set(b"k", t1.get(b"k").value + b"1")
        t2.set(b"k", t2.get(b"k").value + b"2")
        t1.commit()
        with pytest.raises(kvcore.ConflictError):
            t2.commit()
        assert led.get(b"k").value == b"v1"


# ============================================================================ docs/errors.md
def _documented() -> dict[str, str]:
    """{qualified class name: the exit-code cell} from the tables of docs/errors.md."""
    text = (REPO_ROOT / "docs" / "errors.md").read_text()
    rows = {}
    for line in text.splitlines():
        m = re.match(r"\|\s*`([\w.]+)`\s*\|([^|]*)\|", line)
        if m:
            rows[m.group(1)] = m.group(2).strip()
    return rows


def test_errors_md_lists_every_error_with_its_exit_code():
    import inspect

    import docstore.errors
    import docstore.remote.errors
    import kvcore.errors

    rows = _documented()
    classes = {}
    for module in (kvcore.errors, docstore.errors, docstore.remote.errors):
        prefix = {"kvcore.errors": "kvcore", "docstore.errors": "docstore"}.get(module.__name__, module.__name__)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Exception) and cls.__module__ == module.__name__:
                classes[f"{prefix}.{name}"] = cls
    missing = sorted(set(classes) - set(rows))
    assert not missing, f"docs/errors.md does not list {missing}"
    try:
        from docstore.cli.errors import exit_code_for
    except ImportError:  # the command line is optional here
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, cls in classes.items():
            try:
                exc = cls("example")
            except TypeError:
                exc = cls.__new__(cls)
            code = re.match(r"\d+", rows[name])
            assert code, f"docs/errors.md: no exit code for {name}"
            assert int(code.group()) == exit_code_for(exc), (
                f"docs/errors.md says {name} exits {code.group()}, the command line gives {exit_code_for(exc)}"
            )
