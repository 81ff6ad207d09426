"""immudoc distinct, explain, transaction FILE, collection set-schema / show --at-tx / create
--schema-formats, backup and restore: each a thin library call."""

from __future__ import annotations

import json
import os

import kvcore


def test_distinct_and_explain(trial, check_error):
    assert sorted(trial("distinct", "patients", "site").json()) == ["Bergen", "Oslo"]
    assert sorted(trial("distinct", "patients", "name", '{"site": "Oslo"}', "-f", "jsonl").lines()) == ["Ada", "Cy"]
    assert trial("distinct", "patients", "dosage.mg", '{"site": "Nowhere"}').json() == []
    table = trial("distinct", "patients", "site", "-f", "table").out.split()
    assert sorted(table) == ["Bergen", "Oslo"]
    plan = trial("explain", "patients", '{"site": "Oslo"}').json()
    assert plan["plan"] == "index" and plan["index"] == "site"
    assert trial("explain", "patients", '{"age": 3}').json()["plan"] == "scan"
    assert "plan" in trial("explain", "patients", "-f", "table").out
    check_error(trial("distinct", "patiens", "site"), 3, "did you mean 'patients'?")
    check_error(trial("explain", "patients", '{"age": {"$bogus": 1}}'), 4)


def _ops(path, *ops):
    path.write_text("".join(json.dumps(op) + "\n" for op in ops))
    return str(path)


def test_transaction_from_a_file(trial, tmp_path, check_error):
    tx = trial("state").json()["tx_id"]
    f = _ops(tmp_path / "ops.jsonl",
             {"op": "insert", "collection": "patients", "doc": {"name": "Di", "site": "Oslo", "screening": "S-9"}, "id": "p9"},
             {"op": "update", "collection": "patients", "id": "p9", "update": {"$set": {"age": 40}}},
             {"op": "replace", "collection": "patients", "id": "p2", "doc": {"name": "Bo", "site": "Bergen", "screening": "S-2"}},
             {"op": "delete", "collection": "patients", "id": "p3"})
    r = trial("transaction", f, "--reason", "monthly sync", "--as", "coordinator", "--meta", '{"batch": 7}')
    assert r.code == 0, r.err
    assert r.json() == {"tx": tx + 1, "operations": 4, "inserted": 1, "updated": 1, "replaced": 1, "deleted": 1, "ids": ["p9"]}
    assert trial("get", "patients", "p9").json()["age"] == 40
    log = trial("log", "--limit", "1").json()[0]
    assert (log["tx_id"], log["user"], log["reason"], log["meta"]) == (tx + 1, "coordinator", "monthly sync", {"batch": 7})
    # from stdin, with a table summary
    r = trial("transaction", "-", "-f", "table",
              input=json.dumps({"op": "delete", "collection": "patients", "id": "p9"}) + "\n\n")
    assert r.out.startswith(f"committed 1 operations in transaction {tx + 2}"), r.out


def test_a_bad_transaction_file_writes_nothing(trial, tmp_path, check_error):
    tx = trial("state").json()["tx_id"]
    good = {"op": "insert", "collection": "patients", "doc": {"name": "Ok", "site": "Oslo", "screening": "S-7"}}
    check_error(trial("transaction", _ops(tmp_path / "a", good, {"op": "insert", "collection": "patients",
                                                                 "doc": {"name": 5, "site": "Oslo"}})),
                4, "operation 2 (insert in patients)", "violates the collection schema", "nothing was written")
    check_error(trial("transaction", _ops(tmp_path / "b", good, {"op": "merge", "collection": "patients"})),
                4, "operation 2", "insert, update, replace, delete")
    check_error(trial("transaction", _ops(tmp_path / "c", good, {"op": "delete", "collection": "patiens", "id": "p1"})),
                3, "did you mean 'patients'?")
    (tmp_path / "d").write_text(json.dumps(good) + "\n{not json\n")
    check_error(trial("transaction", str(tmp_path / "d")), 4, "line 2")
    check_error(trial("transaction", _ops(tmp_path / "e")), 4, "no operations")
    # a file larger than one transaction holds: refused before anything is read (a sparse file)
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.truncate(kvcore.MAX_TX_BYTES + 1)
    check_error(trial("transaction", str(big)), 4, "one transaction holds at most", "nothing was written")
    assert trial("transaction", str(tmp_path / "missing")).code == 2
    assert trial("state").json()["tx_id"] == tx
    assert trial("count", "patients").json() == 3


def test_set_schema_show_at_tx_and_formats(trial, check_error):
    tx = trial("state").json()["tx_id"]
    closed = {"type": "object", "required": ["name"], "additionalProperties": False,
              "properties": {"name": {"type": "string"}, "site": {}, "age": {}, "dosage": {}, "screening": {}}}
    r = trial("collection", "set-schema", "patients", json.dumps(closed))
    assert r.code == 0, r.err  # existing documents pass without listing _id
    assert r.json()["schema"] == closed
    check_error(trial("insert", "patients", "-", input='{"name": "X", "extra": 1}'), 4, "extra")
    before = trial("collection", "show", "patients", "--at-tx", str(tx)).json()
    assert before["schema"]["required"] == ["name", "site"] and before["at_tx"] == tx and before["count"] == 3
    assert [i["field"] for i in before["indexes"]] == ["site", "screening"]
    assert trial("collection", "show", "patients", "--at-tx", str(tx + 1)).json()["schema"] == closed
    table = trial("collection", "show", "patients", "--at-tx", str(tx), "-f", "table").out
    assert table.startswith(f"as of       transaction {tx}")
    check_error(trial("collection", "set-schema", "patients", '{"required": ["nope"]}'), 4, "existing documents")
    assert trial("collection", "set-schema", "patients", "--remove").json()["schema"] is None
    assert trial("collection", "set-schema", "patients").code == 2
    # formats asserted on request
    schema = '{"properties": {"born": {"type": "string", "format": "date"}}}'
    assert trial("collection", "create", "strict", "--schema", schema, "--schema-formats").json()["schema_formats"] is True
    check_error(trial("insert", "strict", "-", input='{"born": "last year"}'), 4, "/born")
    assert trial("insert", "strict", "-", input='{"born": "1960-02-29"}').code == 0
    assert "formats     asserted" in trial("collection", "show", "strict", "-f", "table").out
    assert trial("collection", "create", "loose", "--schema", schema).code == 0
    assert trial("insert", "loose", "-", input='{"born": "last year"}').code == 0


def test_backup_and_restore(trial, tmp_path, check_error, db_path):
    state = trial("state").json()
    r = trial("backup", str(tmp_path / "bk"))
    assert r.code == 0, r.err
    assert r.json()["tx_id"] == state["tx_id"] and r.json()["root"] == state["root"]
    assert not os.path.exists(tmp_path / "bk" / "signing.key")
    restored = str(tmp_path / "restored")
    r = trial("restore", str(tmp_path / "bk"), db=restored)
    assert r.code == 0, r.err
    assert r.json()["root"] == state["root"] and r.json()["signing_key"] == "new"
    assert trial("find", "patients", db=restored).json() == trial("find", "patients").json()
    assert trial("audit", db=restored).json()["ok"] is True
    # with the key: the very same checkpoint; a table line each
    r = trial("backup", str(tmp_path / "bk2"), "--with-key", "-f", "table")
    assert "with the signing key" in r.out and os.path.exists(tmp_path / "bk2" / "signing.key")
    r = trial("restore", str(tmp_path / "bk2"), "-f", "table", db=str(tmp_path / "r2"))
    assert "same root and checkpoint as the backup (signing key: the backup's)" in r.out
    assert trial("checkpoint", db=str(tmp_path / "r2")).out == trial("checkpoint").out
    # refused: a used directory, no backup, a key pinned that did not sign it, --server
    check_error(trial("backup", str(tmp_path / "bk")), 4, "not a new or empty directory")
    check_error(trial("restore", str(tmp_path / "bk"), db=restored), 4, "not a new or empty directory")
    check_error(trial("restore", str(tmp_path / "nothing"), db=str(tmp_path / "r3")), 7, "no immudoc backup")
    other = str(tmp_path / "other")
    trial("init", db=other)
    key = trial("key", db=other).out.strip()
    r = trial("--key", key, "restore", str(tmp_path / "bk"), db=str(tmp_path / "r4"))
    check_error(r, 5, "not signed")
    assert not os.path.exists(tmp_path / "r4")
    r = trial("--server", "127.0.0.1:1", "backup", str(tmp_path / "bk5"), db=None)
    assert r.code == 2 and "--db" in r.err
