"""The audit trail from the command line (issue 18): --reason, --as and --meta on every write,
who and why in history, `immudoc log`, time travel with --at-time."""

from __future__ import annotations

import datetime as dt
import json


def test_writes_carry_who_and_why_into_history_and_log(cli):
    assert cli("init").code == 0
    assert cli("collection", "create", "visits").code == 0
    r = cli("insert", "visits", "-", "--reason", "enrolment", "--as", "dr ann", input='{"_id": "V1", "mg": 5}')
    assert r.code == 0, r.err
    r = cli("update", "visits", "V1", '{"$set": {"mg": 6}}', "--reason", "dose corrected", "--meta", '{"meaning": "correction"}')
    assert r.code == 0, r.err
    assert cli("replace", "visits", "V1", '{"mg": 7}', "--as", "dr bob").code == 0
    assert cli("delete", "visits", "V1", "--reason", "withdrawn", "--as", "dr ann").code == 0
    assert cli("import", "visits", "-", "--reason", "bulk", input='{"_id": "V2"}\n{"_id": "V3"}\n').code == 0
    hist = cli("history", "visits", "V1", "-f", "json").json()
    assert [(h["user"], h["reason"], h["meta"]) for h in hist] == [
        ("dr ann", "enrolment", None), (None, "dose corrected", {"meaning": "correction"}),
        ("dr bob", None, None), ("dr ann", "withdrawn", None),
    ]
    table = cli("history", "visits", "V1", "-f", "table").out
    assert "user" in table and "reason" in table and "dose corrected" in table and "dr bob" in table
    log = cli("log", "-f", "json").json()
    assert [r["reason"] for r in log[:5]] == ["bulk", "withdrawn", None, "dose corrected", "enrolment"]
    assert [r["tx_id"] for r in cli("log", "--user", "dr ann", "-f", "json").json()] == [log[1]["tx_id"], log[4]["tx_id"]]
    assert len(cli("log", "--limit", "2", "-f", "json").json()) == 2
    assert cli("log", "--before-tx", str(log[0]["tx_id"]), "--limit", "1", "-f", "json").json() == [log[1]]
    assert "dose corrected" in cli("log", "-f", "table").out


def test_bad_metadata_is_refused_and_writes_nothing(cli):
    assert cli("init").code == 0
    assert cli("collection", "create", "c").code == 0
    before = cli("state", "-f", "json").json()
    for args in (("--reason", ""), ("--meta", "[1]"), ("--meta", "{not json"), ("--as", "")):
        r = cli("insert", "c", "-", *args, input='{"_id": "a"}')
        assert r.code == 4 and "Traceback" not in r.err, (args, r.err)
    assert cli("state", "-f", "json").json() == before


def test_at_time(cli):
    assert cli("init").code == 0
    assert cli("collection", "create", "c").code == 0
    assert cli("insert", "c", "-", input='{"_id": "a", "v": 1}').code == 0
    t1 = cli("history", "c", "a", "-f", "json").json()[0]["timestamp_ns"]
    assert cli("update", "c", "a", '{"$set": {"v": 2}}').code == 0
    t2 = cli("history", "c", "a", "-f", "json").json()[1]["timestamp_ns"]
    between = t1 + (t2 - t1) // 2
    when = dt.datetime.fromtimestamp(between // 10**9, dt.timezone.utc) + dt.timedelta(microseconds=(between % 10**9) // 1000)
    if when.timestamp() * 1e9 >= t1:  # (microseconds are as fine as ISO 8601 text goes here)
        r = cli("get", "c", "a", "--at-time", when.isoformat(), "-f", "json")
        assert r.code == 0 and r.json() == {"_id": "a", "v": 1}, r.err
    assert cli("get", "c", "a", "--at-time", "2200-01-01T00:00:00Z", "-f", "json").json() == {"_id": "a", "v": 2}
    assert json.loads(cli("find", "c", "--at-time", "2200-01-01T00:00:00+02:00", "-f", "json").out) == [{"_id": "a", "v": 2}]
    r = cli("get", "c", "a", "--at-time", "2020-01-01T00:00:00Z")
    assert r.code == 3
    r = cli("get", "c", "a", "--at-time", "2020-01-01T00:00:00")
    assert r.code == 4 and "timezone" in r.err
    r = cli("get", "c", "a", "--at-time", "2026-12-06T00:00:00Z", "--at-tx", "1")
    assert r.code == 4 and "not both" in r.err


def test_collection_create_require_reason(cli):
    assert cli("init").code == 0
    r = cli("collection", "create", "visits", "--require-reason", "-f", "table")
    assert r.code == 0 and "need a reason" in r.out
    assert cli("insert", "visits", "-", input='{"_id": "a"}').code == 0
    r = cli("delete", "visits", "a")
    assert r.code == 4 and "requires a reason" in r.err and "Traceback" not in r.err
    assert cli("delete", "visits", "a", "--reason", "entered twice").code == 0


def test_prove_with_meta_and_verify(cli, tmp_path):
    assert cli("init").code == 0
    assert cli("collection", "create", "v").code == 0
    assert cli("insert", "v", "-", "--as", "ann", "--reason", "enrolment", input='{"_id": "a", "mg": 5}').code == 0
    assert cli("state", "--save", str(tmp_path / "st.json")).code == 0
    r = cli("prove", "v", "a", "--pointer", "/mg", "--with-meta", "-o", str(tmp_path / "p.json"))
    assert r.code == 0, r.err
    r = cli("verify", str(tmp_path / "p.json"), "--state", str(tmp_path / "st.json"), "-f", "json", db=None)
    assert r.code == 0 and r.json()["tx_meta"] == {"user": "ann", "reason": "enrolment"}, r.err
    r = cli("verify", str(tmp_path / "p.json"), "--state", str(tmp_path / "st.json"), "-f", "table", db=None)
    assert "written by ann: enrolment" in r.out
    forged = json.loads((tmp_path / "p.json").read_text())
    forged["tx_meta"]["deleted"] = True
    (tmp_path / "f.json").write_text(json.dumps(forged))
    r = cli("verify", str(tmp_path / "f.json"), "--state", str(tmp_path / "st.json"), db=None)
    assert r.code == 5 and "metadata does not verify" in r.err
    assert cli("prove", "v", "a", "--latest", "--with-meta").code == 2
