"""`immudoc aggregate`: the pipeline inline, from a file or stdin; output as `find` prints it;
errors; verification with a trusted state (the global --state-file), as `find` has it."""

from __future__ import annotations

import json
import os

import docstore
from docstore.cli.demo import _rewrite_value

ENROLMENTS_PER_SITE = '[{"$group": {"_id": "$site", "n": {"$sum": 1}}}, {"$sort": {"n": -1}}]'
VISITS = [
    {"_id": "v1", "site": "Oslo", "dose": 5}, {"_id": "v2", "site": "Rome", "dose": 10},
    {"_id": "v3", "site": "Oslo", "dose": 7}, {"_id": "v4", "site": "Oslo", "dose": 2},
    {"_id": "v5", "site": "Lyon", "dose": 1},
]


def _visits(cli):
    assert cli("init").code == 0
    assert cli("collection", "create", "visits", "--index", "site").code == 0
    assert cli("insert", "visits", "-", input=json.dumps(VISITS)).code == 0


def test_enrolments_per_site(cli):
    _visits(cli)
    r = cli("aggregate", "visits", ENROLMENTS_PER_SITE)
    assert r.code == 0, r.err
    assert r.json() == [{"_id": "Oslo", "n": 3}, {"_id": "Rome", "n": 1}, {"_id": "Lyon", "n": 1}]
    r = cli("aggregate", "visits", ENROLMENTS_PER_SITE, "--format", "jsonl")
    assert r.lines() == [{"_id": "Oslo", "n": 3}, {"_id": "Rome", "n": 1}, {"_id": "Lyon", "n": 1}]
    table = cli("aggregate", "visits", ENROLMENTS_PER_SITE, "--format", "table").out
    assert table.splitlines()[0].split() == ["_id", "n"] and "Oslo  3" in table and "(3 documents)" in table


def test_pipeline_from_a_file_or_stdin_and_options(cli, tmp_path):
    _visits(cli)
    path = tmp_path / "pipeline.json"
    pipeline = [{"$match": {"site": "Oslo"}}, {"$group": {"_id": None, "total": {"$sum": "$dose"}}},
                {"$project": {"_id": 0}}]
    path.write_text(json.dumps(pipeline))
    assert cli("aggregate", "visits", str(path)).json() == [{"total": 14}]
    assert cli("aggregate", "visits", "-", input=json.dumps(pipeline)).json() == [{"total": 14}]
    first = cli("state").json()["tx_id"]
    assert cli("insert", "visits", "-", input='{"_id": "v6", "site": "Oslo", "dose": 100}').code == 0
    assert cli("aggregate", "visits", str(path)).json() == [{"total": 114}]
    assert cli("aggregate", "visits", str(path), "--at-tx", str(first)).json() == [{"total": 14}]
    assert cli("aggregate", "visits", '[{"$match": {"site": "Nowhere"}}, {"$count": "n"}]').json() == []


def test_errors(cli, check_error):
    _visits(cli)
    check_error(cli("aggregate", "visits", '[{"$lookup": {"from": "x"}}]'), 4, "unknown aggregation stage '$lookup'")
    check_error(cli("aggregate", "visits", '[{"$project": {"x": {"$nope": 1}}}]'), 4,
                "unknown expression operator '$nope'")
    check_error(cli("aggregate", "visits", '{"$match": {}}'), 4, "a list of stages")
    check_error(cli("aggregate", "visits", "[{"), 4, "the pipeline", "not valid json")
    check_error(cli("aggregate", "nope", "[]"), 3, "nope")
    r = cli("aggregate", "visits", "no-such-file")
    assert r.code == 2 and "neither inline JSON nor an existing file" in r.err


def test_help_has_examples(cli):
    r = cli("aggregate", "--help", db=None)
    assert r.code == 0 and "Examples:" in r.out and "$group" in r.out
    assert "aggregate" in cli("--help", db=None).out


def test_a_trusted_state_verifies_the_documents_aggregated(sub, tmp_path, check_error):
    """As `find`: with --state-file the input documents are proven (a value edited on disk is
    refused); --no-verify reads them unverified."""
    db = str(tmp_path / "db")
    assert sub(["--db", db, "init"]).code == 0
    assert sub(["--db", db, "collection", "create", "visits", "--index", "site"]).code == 0
    assert sub(["--db", db, "insert", "visits", "-"], input=json.dumps(VISITS)).code == 0
    state = tmp_path / "trusted.checkpoint"
    assert sub(["--db", db, "state", "--save", str(state)]).code == 0
    key = sub(["--db", db, "key"]).out.strip()
    verified = ["--db", db, "--state-file", str(state), "--key", key]
    total = '[{"$match": {"site": "Oslo"}}, {"$group": {"_id": "$site", "total": {"$sum": "$dose"}}}]'
    r = sub([*verified, "aggregate", "visits", total])
    assert r.code == 0, r.err
    assert r.json() == [{"_id": "Oslo", "total": 14}]
    with docstore.open(db, readonly=True) as d:
        stored = d["visits"].prove("v1", "/dose").properties[0]
    _rewrite_value(os.path.join(db, "ledger", "txlog"), stored.salt + stored.encoded, b"9")
    assert sub(["--db", db, "aggregate", "visits", total]).json() == [{"_id": "Oslo", "total": 18}]  # claims nothing
    r = sub([*verified, "aggregate", "visits", total])
    check_error(r, 5, "verification failed")
    assert "18" not in r.out
    r = sub([*verified, "--no-verify", "aggregate", "visits", total])
    assert r.code == 0 and r.json() == [{"_id": "Oslo", "total": 18}]
