"""The world of the index differential tests (test_ds_index_kinds, _or, _compound): the same
documents in a collection without indexes, one with the indexes under test, and mongomock."""

from __future__ import annotations

from typing import Any

import mongomock


def ids(docs: Any) -> list[str]:
    return sorted(d["_id"] for d in docs)


def differential(db: Any, indexes: list, docs: list[dict]) -> tuple[Any, Any, Any]:
    """(plain, indexed, mongomock collection) holding ``docs`` (ids ``d00``, ``d01``, ...)."""
    plain = db.create_collection("plain")
    indexed = db.create_collection("indexed", indexes=indexes)
    rows = [{"_id": f"d{i:02}", **d} for i, d in enumerate(docs)]
    plain.insert_many(rows)
    indexed.insert_many(rows)
    mongo = mongomock.MongoClient().db.c
    mongo.insert_many([dict(r) for r in rows])
    return plain, indexed, mongo


def check_same(plain: Any, indexed: Any, flt: dict, mongo: Any = None) -> list[str]:
    """The indexed collection finds and counts what a scan does, each document once (and so
    does mongomock when given); returns the ids."""
    want = ids(plain.find(flt))
    got = [d["_id"] for d in indexed.find(flt)]
    assert len(got) == len(set(got)) and sorted(got) == want, (flt, indexed.explain(flt))
    assert indexed.count(flt) == len(want), flt
    if mongo is not None:
        assert ids(mongo.find(flt)) == want, flt
    return want
