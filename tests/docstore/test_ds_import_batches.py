"""docstore.transfer (issue 19): import_documents commits a stream in batches and says what is
committed when it stops; insert_many too large for one transaction says so before any work;
collection definitions round-trip. On every backend (the ``db`` fixture: embedded, remote,
PostgreSQL) unless marked."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from docstore import (
    CollectionNotFoundError,
    DuplicateIdError,
    QueryError,
    SchemaError,
    TransactionTooLargeError,
)
from docstore.documents.flatten import flatten_raw
from docstore.transfer import (
    ImportProgress,
    apply_definition,
    cost_bound,
    definition,
    doc_cost,
    import_documents,
)

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}


def docs(n, start=0, **extra):
    return ({"_id": f"d{i:05}", "n": i, **extra} for i in range(start, start + n))


def test_insert_many_too_large_says_so_before_any_work(db):
    """110,000 documents of 11 entries each need 1.21M entries, over the 1,048,576 a transaction
    holds: refused up front (nothing written, nothing sent), naming per_transaction."""
    db.create_collection("c")
    before = db.tx_id
    big = [{"_id": f"d{i}", "v": list(range(9))} for i in range(110_000)]
    with pytest.raises(TransactionTooLargeError) as e:
        db["c"].insert_many(big)
    text = str(e.value)
    assert "110,000 documents need 1,210,000 ledger entries" in text and "per_transaction=" in text
    assert "nothing was written" in text and "b'" not in text and "()" not in text
    assert db.tx_id == before and db["c"].count() == 0
    # per_transaction commits it: the figure the message suggests works
    per = int(text.split("per_transaction=")[1].split()[0].replace(",", ""))
    assert db["c"].insert_many(big[:20_000], per_transaction=per) and db["c"].count() == 20_000


def test_import_commits_batches_and_reports_their_transactions(db):
    db.create_collection("c", schema=SCHEMA)
    start = db.tx_id
    batches = list(import_documents(db, "c", docs(2500), batch_size=1000, reason="load"))
    assert [(b.first, b.last, b.inserted) for b in batches] == [(1, 1000, 1000), (1001, 2000, 1000), (2001, 2500, 500)]
    assert [b.tx_id for b in batches] == [start + 1, start + 2, start + 3] == [db.tx_id - 2, db.tx_id - 1, db.tx_id]
    assert db["c"].count() == 2500
    assert db["c"].history("d00001")[0].reason == "load"
    # numbered input: the batches name the numbers given (line numbers, say)
    out = list(import_documents(db, "c", ((10 + 2 * i, d) for i, d in enumerate(docs(3, 5000))), numbered=True))
    assert [(b.first, b.last, b.documents) for b in out] == [(10, 14, 3)]


def test_import_stops_saying_what_is_committed_then_resumes(db):
    db.create_collection("c", schema=SCHEMA)
    start = db.tx_id
    bad = [*docs(1500), {"_id": "bad", "n": "x"}, *docs(500, 1500)]
    with pytest.raises(SchemaError) as e:  # the error keeps its type
        for _ in import_documents(db, "c", bad, batch_size=500):
            pass
    p = e.value.import_progress
    assert isinstance(p, ImportProgress)
    assert (p.first, p.last, p.first_tx, p.last_tx, p.inserted) == (1, 1500, start + 1, start + 3, 1500)
    assert p.failed_batch == (1501, 2000)
    text = str(e.value)
    assert text.startswith(f"documents 1-1500 are committed (transactions {start + 1}-{start + 3}); ")
    if p.failed_at is not None:  # embedded: the document at fault; remote: its batch (the server refuses it)
        assert p.failed_at == 1501 and "document 1501: " in text
    else:
        assert "documents 1501-2000 (one transaction, not written)" in text
    assert db["c"].count() == 1500
    fixed = [*docs(1500), {"_id": "bad", "n": 0}, *docs(500, 1500)]
    out = list(import_documents(db, "c", fixed, batch_size=500, existing="skip"))
    assert [(b.skipped, b.inserted) for b in out] == [(500, 0), (500, 0), (500, 0), (0, 500), (0, 1)]
    assert out[0].tx_id is None and db["c"].count() == 2001


def test_import_upsert_and_duplicates(db):
    db.create_collection("c")
    list(import_documents(db, "c", docs(10)))
    with pytest.raises(DuplicateIdError) as e:
        list(import_documents(db, "c", docs(3, 9)))
    assert "nothing was committed" in str(e.value)
    assert db["c"].count() == 10
    out = list(import_documents(db, "c", docs(3, 9, v=2), existing="replace"))
    assert [(b.inserted, b.replaced) for b in out] == [(2, 1)]
    assert db["c"].get("d00009") == {"_id": "d00009", "n": 9, "v": 2}
    assert [r.revision for r in db["c"].history("d00009")] == [1, 2]
    # documents without _id get one; duplicates within the input follow the same rule
    out = list(import_documents(db, "c", [{"x": 1}, {"_id": "z", "k": 1}, {"_id": "z", "k": 2}], existing="replace"))
    assert out[0].inserted == 2 and out[0].replaced == 1 and db["c"].get("z")["k"] == 2


def test_import_arguments_are_checked_first(db):
    db.create_collection("c")
    for kw in ({"batch_size": 0}, {"batch_size": True}, {"existing": "merge"}):
        with pytest.raises(QueryError):
            import_documents(db, "c", docs(1), **kw)
    with pytest.raises(QueryError):
        import_documents(db, "c", {"_id": "x"})
    with pytest.raises(CollectionNotFoundError):
        import_documents(db, "nope", docs(1))
    with pytest.raises(QueryError):
        import_documents(db, "c", docs(1), reason=" ")
    with pytest.raises(QueryError):
        list(import_documents(db, "c", docs(1), numbered=True))
    assert db["c"].count() == 0


@pytest.mark.embedded
def test_a_batch_is_cut_before_the_transaction_limit(db):
    """Four documents of 300,001 entries: three fit in 90% of a transaction, the fourth starts
    the next batch, whatever batch_size says."""
    db.create_collection("c")
    big = ({"_id": f"b{i}", "a": [0] * 300_000} for i in range(4))
    out = list(import_documents(db, "c", big, batch_size=1000))
    assert [(b.first, b.last) for b in out] == [(1, 3), (4, 4)]
    assert db["c"].count() == 4


@settings(max_examples=200, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.sampled_from(["0", "a", "b/c", "~"]), kids, max_size=4),
    max_leaves=20,
).flatmap(lambda v: st.dictionaries(st.sampled_from(["_id", "x", "0", "y"]), st.just(v), min_size=1)))
def test_doc_cost_counts_the_entries_flatten_makes(doc):
    if "_id" in doc:
        doc["_id"] = "id1"
    pointers, _values = flatten_raw({"_id": "id1", **doc})
    entries, _ = doc_cost(doc)
    assert entries == 1 + len(pointers)
    assert cost_bound(doc)[0] >= entries


def test_definition_round_trip(db):
    db.create_collection("c", schema=SCHEMA, indexes=["n", {"field": "k", "unique": True}], require_reason=True)
    spec = definition(db, "c")
    assert spec == {"$immudoc": "collection-definition", "version": 1, "name": "c", "schema": SCHEMA,
                    "indexes": [{"field": "n", "unique": False}, {"field": "k", "unique": True}], "require_reason": True}
    with pytest.raises(CollectionNotFoundError):
        apply_definition(db, "copy", spec)
    assert apply_definition(db, "copy", spec, create=True) == "created"
    assert definition(db, "copy") == {**spec, "name": "copy"}
    assert apply_definition(db, "copy", spec) == "unchanged"
    db.create_collection("plain")
    assert apply_definition(db, "plain", spec) == "updated"
    assert definition(db, "plain") == {**spec, "name": "plain"}
    for bad in ({"x": 1}, {**spec, "version": 9}, {**spec, "indexes": "n"}, {**spec, "require_reason": "yes"}):
        with pytest.raises(QueryError):
            apply_definition(db, "copy", bad)
