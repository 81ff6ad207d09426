"""``immudoc update-many`` and ``immudoc delete-many`` (docstore/cli/bulk_cmds.py): thin shells
over Collection.update_many and delete_many (tested in tests/remote/test_rm_write_by_filter.py)."""

from __future__ import annotations

import json


def test_update_many_prints_the_counts_and_the_transaction(trial, check_error):
    r = trial("update-many", "patients", '{"site": "Oslo"}', '{"$inc": {"age": 1}, "$set": {"dosage.mg": 20}}',
              "--reason", "protocol v2", "--as", "dr.lee", "--meta", '{"ticket": 7}')
    assert r.code == 0, r.err
    out = r.json()
    assert {k: out[k] for k in ("matched_count", "modified_count", "upserted_id")} == {
        "matched_count": 2, "modified_count": 2, "upserted_id": None,
    }
    assert isinstance(out["tx"], int)
    hist = trial("history", "patients", "p3").json()
    assert hist[-1]["tx_id"] == out["tx"] and hist[-1]["reason"] == "protocol v2" and hist[-1]["user"] == "dr.lee"
    assert hist[-1]["meta"] == {"ticket": 7} and hist[-1]["document"]["age"] == 53
    # nothing to change: no transaction
    r = trial("update-many", "patients", '{"site": "Oslo"}', '{"$set": {"dosage.mg": 20}}')
    assert r.json() == {"matched_count": 2, "modified_count": 0, "upserted_id": None, "tx": None}
    r = trial("update-many", "patients", '{"_id": "p9", "site": "Bergen"}', '{"$set": {"name": "Di"}}', "--upsert")
    assert r.json()["upserted_id"] == "p9"
    assert trial("get", "patients", "p9").json() == {"_id": "p9", "site": "Bergen", "name": "Di"}
    r = trial("update-many", "patients", "-", '{"$set": {"name": "Ed"}}', input='{"_id": "p9"}')
    assert r.json()["modified_count"] == 1


def test_delete_many(trial):
    r = trial("delete-many", "patients", '{"site": "Oslo"}', "--reason", "withdrawn")
    assert r.code == 0, r.err
    out = r.json()
    assert out["deleted_count"] == 2 and isinstance(out["tx"], int)
    assert trial("count", "patients").json() == 1
    assert trial("history", "patients", "p1").json()[-1]["deleted"] is True
    assert trial("delete-many", "patients", '{"site": "Oslo"}').json() == {"deleted_count": 0, "tx": None}


def test_errors_are_one_line_and_write_nothing(trial, check_error):
    before = trial("state").json()["tx_id"]
    check_error(trial("update-many", "patients", "{}", '{"$inc": {"name": 1}}'), 4, "$inc", "not a number")
    check_error(trial("update-many", "patients", "{}", '{"name": "x"}'), 4, "unknown update operator")
    check_error(trial("update-many", "patients", "{}", '{"$set": {"age": -1}}'), 4, "schema")
    check_error(trial("update-many", "patients", "{}", '{"$set": {"screening": "S-1"}}'), 4, "unique")
    check_error(trial("delete-many", "patients", "[1]"), 4, "filter object")
    check_error(trial("delete-many", "nope", "{}"), 3, "nope")
    check_error(trial("update-many", "patients", "{}", '{"$set": {"age": 1}}', "--meta", "[1"), 4, "--meta")
    assert trial("state").json()["tx_id"] == before


def test_in_a_real_process(tmp_path, sub):
    db = str(tmp_path / "db")
    assert sub(["--db", db, "init"]).code == 0
    assert sub(["--db", db, "collection", "create", "c"]).code == 0
    assert sub(["--db", db, "insert", "c", "-"], input=json.dumps([{"n": i} for i in range(5)])).code == 0
    r = sub(["--db", db, "update-many", "c", '{"n": {"$gte": 2}}', '{"$mul": {"n": 10}}'])
    assert r.code == 0, r.err
    assert r.json()["modified_count"] == 3
    r = sub(["--db", db, "delete-many", "c", '{"n": {"$gte": 20}}', "-f", "jsonl"])
    assert json.loads(r.out) == {"deleted_count": 3, "tx": 4}
