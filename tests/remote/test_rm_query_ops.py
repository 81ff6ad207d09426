"""$mod, $expr and the projections $slice and $elemMatch: one contract embedded, remote and on a
verifying remote client (which proves the result complete and projects here), proofs of
complete query results with these filters, the embedded verifying reader, and a tampered server
caught by a verifying client however the query reads."""

from __future__ import annotations

import copy
import uuid

import pytest

import docstore
from docstore import QueryError, VerificationError
from docstore.collections.cursor import run_query
from remote_testlib import ServerProcess, flip_in_txlog
from test_rm_parity import same  # strict JSON identity: types, key order, floats bit for bit

DB_KINDS = ("embedded", "remote", "remote-verifying")

VISITS = [
    {"_id": f"v{i:02d}", "site": site, "week": week, "dose": dose, "target": target, "doses": doses,
     "labs": [{"test": "hb", "value": hb}, {"test": "crp", "value": crp}]}
    for i, (site, week, dose, target, doses, hb, crp) in enumerate([
        ("Oslo", 1, 5, 5, [5, 5, 6], 13.1, 2), ("Rome", 2, 10, 8, [8, 10], 12.0, 9), ("Oslo", 3, 5.5, 6, [], 14.2, 1),
        ("Oslo", 4, None, 5, [5], 11.9, 12), ("Lyon", 5, "n/a", 4, [4, 4, 4, 4], 13.3, 3), ("Rome", 6, 20, 20, [20], 10.2, 30),
        ("Bergen", 8, 2.5, 3, [3, 2.5], 15.0, 0),
    ])
]

CASES = [  # (filter, projection, sort)
    ({"week": {"$mod": [2, 0]}}, None, [("_id", 1)]),
    ({"dose": {"$mod": [5, 0]}, "site": "Oslo"}, {"doses": {"$slice": -1}, "labs": 0}, [("_id", -1)]),
    ({"$expr": {"$gt": ["$dose", "$target"]}}, {"labs": {"$elemMatch": {"value": {"$gt": 10}}}, "site": 1}, None),
    ({"$expr": {"$lt": [{"$size": "$doses"}, 2]}, "site": {"$in": ["Oslo", "Rome"]}}, {"doses": {"$slice": [0, 1]}, "_id": 1}, [("week", 1)]),
    ({"$or": [{"week": {"$mod": [4, 0]}}, {"$expr": {"$eq": ["$dose", "$target"]}}]}, {"labs": {"$elemMatch": {"test": "crp"}}}, [("week", -1)]),
    ({}, {"labs.value": 1, "doses": {"$slice": 2}}, [("_id", 1)]),
    ({"labs": {"$elemMatch": {"value": {"$mod": [3, 0]}}}}, {"labs": {"$elemMatch": {"value": {"$mod": [3, 0]}}}, "_id": 0}, [("site", 1), ("_id", 1)]),
]


@pytest.fixture
def visits(db):
    coll = db.create_collection("v" + uuid.uuid4().hex[:12], indexes=["site", "week"])
    coll.insert_many(copy.deepcopy(VISITS))
    return coll


@pytest.mark.parametrize("flt, projection, sort", CASES, ids=range(len(CASES)))
def test_the_same_result_everywhere(visits, flt, projection, sort):
    expected = list(run_query(copy.deepcopy(VISITS), flt, projection, sort))
    got = list(visits.find(flt, projection, sort))
    assert same(got, expected), (got, expected)
    assert visits.count(flt) == len(expected)
    one = visits.find_one(flt, projection, sort)
    assert (one is None and not expected) or same(one, expected[0])
    paged = list(visits.find(flt, projection, sort, skip=1, limit=2))
    if sort is not None:
        assert same(paged, expected[1:3])


def test_the_results_are_what_mongodb_gives(visits):
    got = list(visits.find({"$expr": {"$gt": ["$dose", "$target"]}}, {"labs": {"$elemMatch": {"value": {"$gt": 10}}}, "site": 1},
                           sort=[("_id", 1)]))
    assert got == [
        {"_id": "v01", "site": "Rome", "labs": [{"test": "hb", "value": 12.0}]},  # 10 > 8; the first lab over 10
        {"_id": "v04", "site": "Lyon", "labs": [{"test": "hb", "value": 13.3}]},  # "n/a" > 4: strings after numbers
    ]
    assert [list(d) for d in got] == [["_id", "site", "labs"]] * 2  # after the included fields, as MongoDB
    assert list(visits.find({"week": {"$mod": [4, 0]}}, {"doses": {"$slice": [1, 1]}, "labs": 0, "dose": 0, "target": 0})) == [
        {"_id": "v03", "site": "Oslo", "week": 4, "doses": []},
        {"_id": "v06", "site": "Bergen", "week": 8, "doses": [2.5]},
    ]


def test_errors_are_the_same(db, visits):
    for call, match in [
        (lambda: visits.find({"week": {"$mod": [0, 1]}}), "the divisor cannot be 0"),
        (lambda: visits.count({"week": {"$mod": 2}}), r"needs an array \[divisor, remainder\]"),
        (lambda: visits.find({"$expr": {"$nope": 1}}), r"unknown expression operator '\$nope'"),
        (lambda: visits.find({"labs": {"$elemMatch": {"$expr": True}}}), "top-level document"),
        (lambda: list(visits.find({"$expr": {"$add": ["$dose", 1]}})), r"\$add takes numbers"),  # while it runs
        (lambda: visits.count({"$expr": {"$add": ["$dose", 1]}}), r"\$add takes numbers"),
        (lambda: visits.find({}, {"doses": {"$slice": [1, 0]}}), "the limit must be positive"),
        (lambda: visits.find({}, {"labs.value": {"$elemMatch": {"$gt": 1}}}), "top-level field only"),
        (lambda: visits.find_one({}, {"doses": {"$slice": 1}, "doses.x": 1}), "collision"),
    ]:
        with pytest.raises(QueryError, match=match):
            call()


def test_explain_scans_for_expr_and_mod(visits):
    explain = lambda flt: visits.explain(flt, verify=False)  # (a plan is not proven)
    assert explain({"$expr": {"$eq": ["$week", 2]}})["plan"] == "scan"
    assert explain({"week": {"$mod": [2, 0]}})["plan"] == "scan"
    assert explain({"week": {"$mod": [2, 0], "$gte": 4}})["index"] == "week"


@pytest.mark.parametrize("flt", [
    {"week": {"$mod": [2, 0]}},
    {"$expr": {"$gte": ["$dose", "$target"]}},
    {"site": "Oslo", "$expr": {"$gte": ["$dose", "$target"]}},  # ranges of the site index
    {"week": {"$gte": 3, "$mod": [3, 0]}},  # ranges of the week index
    {"$or": [{"$expr": {"$eq": ["$week", 1]}}, {"week": {"$mod": [7, 1]}}]},
])
def test_proofs_of_complete_results_with_these_filters(db, visits, flt):
    state, key = db.state(), db.verifier_key()
    expected = list(run_query(copy.deepcopy(VISITS), flt))
    found = docstore.verify(visits.prove_find(flt), state, key)
    assert sorted(found, key=lambda d: d["_id"]) == expected
    assert docstore.verify(visits.prove_count(flt), state, key) == len(expected)
    assert docstore.verify(visits.prove_distinct("site", flt), state, key) == list(dict.fromkeys(d["site"] for d in expected))
    limited = docstore.verify(visits.prove_find(flt, limit=1), state, key)
    assert len(limited) == min(1, len(expected))


@pytest.mark.embedded
def test_the_embedded_verifying_reader(tmp_path):
    path = tmp_path / "db"
    with docstore.open(path) as db:
        db.create_collection("v", indexes=["site"]).insert_many(copy.deepcopy(VISITS))
        trusted, key = db.state(), db.verifier_key()
    with docstore.open(path, readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as db:
        for flt, projection, sort in CASES:
            expected = list(run_query(copy.deepcopy(VISITS), flt, projection, sort))
            assert same(list(db["v"].find(flt, projection, sort)), expected), flt
            assert db["v"].count(flt) == len(expected)


def test_a_tampered_server_cannot_change_a_verifying_clients_find(tmp_path):
    st = tmp_path / "st.json"
    db_dir = tmp_path / "db"
    with ServerProcess(db_dir) as s:
        with docstore.connect(s.target, state_file=st, trust_on_first_use=True) as db:
            c = db.create_collection("v", indexes=["site"])
            c.insert({"_id": "a", "site": "Oslo", "dose": 5, "target": 6, "doses": [5, 6], "note": "dose-ok-approved"})
            c.insert({"_id": "b", "site": "Oslo", "dose": 7, "target": 6, "doses": [7]})
            assert [d["_id"] for d in c.find({"$expr": {"$gt": ["$dose", "$target"]}})] == ["b"]
    flip_in_txlog(db_dir, b"dose-ok-approved", b"dose-no-approved")
    queries = [
        ({"$expr": {"$lt": ["$dose", "$target"]}}, {"note": 1}),
        ({"dose": {"$mod": [5, 0]}}, {"doses": {"$slice": 1}}),
        ({"site": "Oslo"}, {"doses": {"$elemMatch": {"$gte": 5}}, "note": 1}),
    ]
    with ServerProcess(db_dir) as s:
        with docstore.connect(s.target, verify=False) as plain:  # what it serves
            assert plain["v"].find_one({"_id": "a"}, {"note": 1}) == {"_id": "a", "note": "dose-no-approved"}
        with docstore.connect(s.target, state_file=st) as db:
            for flt, projection in queries:
                with pytest.raises(VerificationError):
                    list(db["v"].find(flt, projection))
            assert db["v"].find_one({"$expr": {"$lt": ["$dose", "$target"]}}, {"note": 1}, verify=False) == \
                {"_id": "a", "note": "dose-no-approved"}
