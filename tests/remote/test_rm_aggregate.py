"""collection.aggregate: one contract embedded, remote and on a verifying remote client (the
``db`` fixture of tests/conftest.py with the kinds below), and a server that serves a tampered
document cannot change a verifying client's aggregate."""

from __future__ import annotations

import copy
import uuid

import pytest

import docstore
from docstore import QueryError, VerificationError
from docstore.collections.aggregate import run
from remote_testlib import ServerProcess, flip_in_txlog
from test_rm_parity import same  # strict JSON identity: types, key order, floats bit for bit

DB_KINDS = ("embedded", "remote", "remote-verifying")

VISITS = [
    {"_id": f"v{i:02d}", "participant": f"P-{i % 7:03d}", "site": site, "week": i % 4, "dose": dose, "tags": tags}
    for i, (site, dose, tags) in enumerate([
        ("Oslo", 5, ["baseline", "blood"]), ("Rome", 10, ["baseline"]), ("Oslo", 5.5, []), ("Oslo", None, ["ecg"]),
        ("Lyon", "n/a", "blood"), ("Rome", 20, ["blood", "ecg"]), ("Lyon", 2.5, ["ecg"]), ("Oslo", 7, ["blood"]),
        ("Rome", 12, []), ("Bergen", 3, ["baseline"]),
    ])
]

PIPELINES = [
    [{"$group": {"_id": "$site", "n": {"$sum": 1}}}, {"$sort": {"n": -1, "_id": 1}}],
    [{"$match": {"site": "Oslo"}}, {"$sort": {"week": 1, "_id": -1}}, {"$project": {"week": 1, "dose": 1}}],
    [{"$match": {"site": {"$in": ["Oslo", "Rome"]}}}, {"$unwind": {"path": "$tags", "includeArrayIndex": "i"}},
     {"$group": {"_id": {"site": "$site", "tag": "$tags"}, "visits": {"$push": "$_id"}, "first": {"$min": "$i"}}},
     {"$sort": {"_id.site": 1, "_id.tag": 1}}],
    [{"$group": {"_id": None, "avg": {"$avg": "$dose"}, "sum": {"$sum": "$dose"}, "max": {"$max": "$dose"},
                 "sites": {"$addToSet": "$site"}}}, {"$project": {"_id": 0, "avg": 1, "sum": 1, "max": 1,
                                                                   "sites": {"$size": "$sites"}}}],
    [{"$addFields": {"label": {"$concat": ["$participant", "@", {"$toLower": "$site"}]},
                     "high": {"$cond": [{"$gte": ["$dose", 10]}, True, False]}}},
     {"$match": {"high": True}}, {"$sort": {"_id": 1}}, {"$skip": 1}, {"$limit": 2}],
    [{"$match": {"week": {"$gte": 2}}}, {"$count": "late"}],
    [{"$match": {"site": "Nowhere"}}, {"$count": "none"}],
]


@pytest.fixture
def visits(db):
    coll = db.create_collection("v" + uuid.uuid4().hex[:12], indexes=["site"])
    coll.insert_many(copy.deepcopy(VISITS))
    return coll


@pytest.mark.parametrize("pipeline", PIPELINES, ids=range(len(PIPELINES)))
def test_the_same_result_everywhere(visits, pipeline):
    got = list(visits.aggregate(pipeline))
    expected = list(run(pipeline, copy.deepcopy(VISITS)))
    assert same(got, expected), (got, expected)


def test_enrolments_per_site(visits):
    got = list(visits.aggregate([{"$group": {"_id": "$site", "n": {"$sum": 1}}}, {"$sort": {"n": -1}}]))
    assert got[0] == {"_id": "Oslo", "n": 4}
    assert sorted((r["_id"], r["n"]) for r in got[1:]) == [("Bergen", 1), ("Lyon", 2), ("Rome", 3)]


def test_errors_are_the_same(db, visits):
    for pipeline, error, match in [
        ([{"$lookup": {}}], QueryError, r"unknown aggregation stage '\$lookup'"),
        ({"$match": {}}, QueryError, "a list of stages"),
        ([{"$project": {"x": {"$nope": 1}}}], QueryError, r"unknown expression operator '\$nope'"),
        ([{"$match": {"a": {"$bad": 1}}}], QueryError, r"\$bad"),
        ([{"$project": {"x": {"$add": ["$site", 1]}}}], QueryError, r"\$add takes numbers"),  # while it runs
    ]:
        with pytest.raises(error, match=match):
            list(visits.aggregate(pipeline))
    with pytest.raises(QueryError, match="max_time_ms"):
        visits.aggregate([], max_time_ms=-1)
    if not db.verifying:
        with pytest.raises(VerificationError):
            visits.aggregate([], verify=True)


def test_at_tx(db, visits):
    before = db.state().tx_id
    visits.insert({"_id": "late", "site": "Oslo"})
    pipeline = [{"$match": {"site": "Oslo"}}, {"$count": "n"}]
    assert list(visits.aggregate(pipeline)) == [{"n": 5}]
    assert list(visits.aggregate(pipeline, at_tx=before)) == [{"n": 4}]


def test_a_tampered_server_cannot_change_a_verifying_clients_aggregate(tmp_path):
    st = tmp_path / "st.json"
    db_dir = tmp_path / "db"
    pipeline = [{"$group": {"_id": "$site", "doses": {"$sum": "$dosage.mg"}}}, {"$sort": {"_id": 1}}]
    with ServerProcess(db_dir) as s:
        with docstore.connect(s.target, state_file=st, trust_on_first_use=True) as db:
            c = db.create_collection("trials", indexes=["site"])
            c.insert({"_id": "p17", "site": "Oslo", "dosage": {"mg": 5}, "note": "dose-5mg-approved"})
            c.insert({"_id": "p18", "site": "Oslo", "dosage": {"mg": 7}})
            assert list(c.aggregate(pipeline)) == [{"_id": "Oslo", "doses": 12}]  # proven; the state advances
    flip_in_txlog(db_dir, b"dose-5mg-approved", b"dose-9mg-approved")
    with ServerProcess(db_dir) as s:
        with docstore.connect(s.target, verify=False) as plain:  # what it serves
            notes = [{"$match": {"site": "Oslo"}}, {"$group": {"_id": None, "notes": {"$push": "$note"}}}]
            assert list(plain["trials"].aggregate(notes)) == [{"_id": None, "notes": ["dose-9mg-approved"]}]
        with docstore.connect(s.target, state_file=st) as db:
            with pytest.raises(VerificationError):
                list(db["trials"].aggregate(notes))
            with pytest.raises(VerificationError):
                list(db["trials"].aggregate(pipeline))
            # unverified on request only
            assert list(db["trials"].aggregate(notes, verify=False)) == [{"_id": None, "notes": ["dose-9mg-approved"]}]
