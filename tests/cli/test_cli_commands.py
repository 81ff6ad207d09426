"""Every command, in-process (typer's CliRunner): exit codes, JSON and table output, stdin."""

from __future__ import annotations

import base64
import json
import os

import pytest

import docstore
import kvcore
from docstore.proofs.trust import read_state_file


# ------------------------------------------------------------------------- help, init
def test_help_lists_every_command_and_the_exit_codes(cli):
    r = cli("--help", db=None)
    assert r.code == 0
    for command in ("init", "collection", "insert", "get", "find", "count", "update", "replace", "delete",
                    "history", "index", "prove", "verify", "state", "consistency", "audit", "export",
                    "import", "demo"):
        assert f"  {command} " in r.out, command
    assert "Exit codes:" in r.out
    for code, words in [(0, "ok"), (2, "usage"), (3, "not found"), (4, "invalid input"),
                        (5, "verification failed"), (6, "conflict"), (7, "database unavailable")]:
        assert f"{code}  {words}" in r.out, code
    assert "IMMUDOC_DB" in r.out


def test_no_arguments_prints_help(cli):
    r = cli(db=None)
    assert "Usage: immudoc" in r.out + r.err


def test_init_creates_once(cli, db_path):
    r = cli("init")
    assert r.code == 0
    assert r.json()["created"] is True and r.json()["state"]["tx_id"] == 0
    assert os.path.isdir(os.path.join(db_path, "ledger"))
    r = cli("init", "--format", "table")
    assert r.code == 0 and r.out.startswith("found existing immudoc database at")


def test_commands_refuse_a_missing_database_and_create_nothing(cli, db_path, check_error):
    for args in (["get", "c", "x"], ["collection", "list"], ["insert", "c", "-"], ["state"], ["audit"]):
        r = cli(*args, input="{}")
        check_error(r, 7, "no immudoc database", "immudoc init")
    assert not os.path.exists(db_path)


# ------------------------------------------------------------------------- collections
def test_collection_create_list_show(cli, tmp_path, patient_schema):
    cli("init")
    schema = tmp_path / "s.json"
    schema.write_text(json.dumps(patient_schema))
    r = cli("collection", "create", "patients", "--schema", str(schema), "--index", "site",
            "--unique-index", "screening")
    assert r.code == 0, r.err
    assert r.json() == {
        "name": "patients", "schema": patient_schema, "count": 0, "require_reason": False,
        "indexes": [{"field": "site", "unique": False}, {"field": "screening", "unique": True}],
    }
    assert cli("collection", "create", "inline", "--schema", '{"type": "object"}').json()["schema"] == {"type": "object"}
    assert cli("collection", "create", "piped", "--schema", "-", input='{"type": "object"}').code == 0
    assert cli("collection", "create", "plain").json()["schema"] is None

    listed = cli("collection", "list").json()
    assert [c["name"] for c in listed] == ["inline", "patients", "piped", "plain"]
    table = cli("collection", "list", "-f", "table").out
    assert "patients" in table and "site, screening!" in table and "documents" in table

    shown = cli("collection", "show", "patients").json()
    assert shown["schema"] == patient_schema
    table = cli("collection", "show", "patients", "--format", "table").out
    assert "collection  patients" in table and "screening (unique)" in table and '"enum"' in table


def test_collection_errors(cli, check_error):
    cli("init")
    assert cli("collection", "create", "a").code == 0
    check_error(cli("collection", "create", "a"), 4, "already exists")
    check_error(cli("collection", "create", "bad name!"), 4)
    check_error(cli("collection", "create", "b", "--schema", '{"type": 5}'), 4)
    check_error(cli("collection", "create", "b", "--schema", "{not json"), 4, "not valid JSON")
    check_error(cli("collection", "create", "b", "--index", "x", "--unique-index", "x"), 4, "twice")
    check_error(cli("collection", "show", "nope"), 3, "nope")
    assert cli("collection", "create", "b", "--schema", "missing.json").code == 2
    assert cli("collection", "list").json() == [{"name": "a", "schema": None, "indexes": [], "count": 0, "require_reason": False}]


# ------------------------------------------------------------------------- insert
@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"_id": "a", "n": 1}', ["a"]),
        ('[{"_id": "a", "n": 1}, {"_id": "b", "n": 2}]', ["a", "b"]),
        ('{"_id": "a", "n": 1}\n{"_id": "b", "n": 2}\n\n{"_id": "c", "n": 3}\n', ["a", "b", "c"]),
        ('{"_id": "a",\n "n": 1} {"_id": "b", "n": 2}', ["a", "b"]),
    ],
    ids=["one", "array", "jsonl", "concatenated"],
)
def test_insert_forms_from_stdin_and_file(cli, tmp_path, text, expected):
    cli("init")
    cli("collection", "create", "c")
    r = cli("insert", "c", input=text)  # no FILE: standard input
    assert r.code == 0, r.err
    assert r.json() == expected
    f = tmp_path / "docs.json"
    f.write_text(text)
    cli("collection", "create", "d")
    assert cli("insert", "d", str(f)).json() == expected
    assert cli("count", "d").json() == len(expected)


def test_insert_generates_ids_and_is_one_atomic_transaction(trial):
    before = trial("state").json()["tx_id"]
    r = trial("insert", "patients", input='{"name": "Di", "site": "Oslo", "screening": "S-4"}\n{"name": "Ed", "site": "Bergen", "screening": "S-5"}')
    ids = r.json()
    assert len(ids) == 2 and all(len(i) == 26 for i in ids)
    assert trial("state").json()["tx_id"] == before + 1
    assert trial("insert", "patients", "-f", "table", input='{"name": "Fi", "site": "Oslo", "screening": "S-6"}').out.strip().count("\n") == 0


def test_insert_errors_write_nothing(trial, check_error):
    n = trial("count", "patients").json()
    check_error(trial("insert", "patients", input='[{"name": "Ok", "site": "Oslo"}, {"name": "Bad", "site": "Paris"}]'),
                4, "schema")
    check_error(trial("insert", "patients", input='{"_id": "p1", "name": "Dup", "site": "Oslo"}'), 4, "p1")
    check_error(trial("insert", "patients", input='{"name": "Dup", "site": "Oslo", "screening": "S-1"}'), 4, "unique")
    check_error(trial("insert", "patients", input='{"name": '), 4, "not valid JSON")
    check_error(trial("insert", "patients", input=""), 4, "no documents")
    check_error(trial("insert", "patients", input="[1, 2]"), 4)
    check_error(trial("insert", "patients", input='[{"a": 1}] {"b": 2}'), 4, "not both")
    check_error(trial("insert", "patients", input='{"x": NaN, "name": "n", "site": "Oslo"}'), 4)
    check_error(trial("insert", "nope", input='{"a": 1}'), 3, "nope")
    assert trial("insert", "patients", "no-such-file.json").code == 2
    assert trial("count", "patients").json() == n


# ------------------------------------------------------------------------- reads
def test_get_json_table_and_time_travel(trial, check_error, patients):
    assert trial("get", "patients", "p1").json() == patients[0]
    table = trial("get", "patients", "p1", "--format", "table").out
    assert "field" in table and "dosage.mg" in table and "Ada" in table
    tx = trial("state").json()["tx_id"]
    trial("update", "patients", "p1", '{"$set": {"dosage.mg": 25}}')
    assert trial("get", "patients", "p1").json()["dosage"] == {"mg": 25}
    assert trial("get", "patients", "p1", "--at-tx", str(tx)).json()["dosage"] == {"mg": 50}
    check_error(trial("get", "patients", "p1", "--at-tx", "1"), 3, "p1")
    check_error(trial("get", "patients", "zz"), 3, "zz")
    check_error(trial("get", "nope", "p1"), 3, "nope")
    check_error(trial("get", "patients", "p1", "--at-tx", "999"), 4)
    assert trial("get", "patients", "p1", "--at-tx", "x").code == 2


def test_find_filter_sort_paging_projection_formats(trial, check_error):
    assert [d["_id"] for d in trial("find", "patients").json()] == ["p1", "p2", "p3"]
    assert [d["_id"] for d in trial("find", "patients", '{"site": "Oslo"}').json()] == ["p1", "p3"]
    assert [d["_id"] for d in trial("find", "patients", '{"dosage.mg": {"$gte": 20}}', "--sort", "-age").json()] == ["p1", "p2"]
    assert [d["_id"] for d in trial("find", "patients", "--sort", "site", "--sort", "-age").json()] == ["p2", "p1", "p3"]
    assert [d["_id"] for d in trial("find", "patients", "--sort", "age", "--skip", "1", "--limit", "1").json()] == ["p3"]
    assert trial("find", "patients", '{"_id": "p2"}', "--projection", '{"name": 1}').json() == [{"_id": "p2", "name": "Bo"}]
    lines = trial("find", "patients", "--format", "jsonl").out.splitlines()
    assert [json.loads(x)["_id"] for x in lines] == ["p1", "p2", "p3"]
    table = trial("find", "patients", "-f", "table").out.splitlines()
    assert table[0].split() == ["_id", "name", "site", "age", "dosage", "screening"]
    assert table[-1] == "(3 documents)" and '{"mg":50}' in table[2]
    assert trial("find", "patients", '{"site": "Nowhere"}').json() == []
    assert trial("find", "patients", '{"site": "Nowhere"}', "-f", "table").out.strip() == "(no documents)"
    check_error(trial("find", "patients", "{bad"), 4, "filter")
    check_error(trial("find", "patients", '{"age": {"$bogus": 1}}'), 4)
    check_error(trial("find", "patients", "--limit", "-1"), 4)
    assert trial("find", "patients", "-f", "xml").code == 2


def test_find_and_count_as_of_a_past_transaction(trial):
    tx = trial("state").json()["tx_id"]
    trial("delete", "patients", "p3")
    trial("update", "patients", "p2", '{"$set": {"site": "Oslo"}}')
    assert [d["_id"] for d in trial("find", "patients", '{"site": "Oslo"}').json()] == ["p1", "p2"]
    assert [d["_id"] for d in trial("find", "patients", '{"site": "Oslo"}', "--at-tx", str(tx)).json()] == ["p1", "p3"]
    assert trial("count", "patients").json() == 2
    assert trial("count", "patients", "--at-tx", str(tx)).json() == 3
    assert trial("count", "patients", '{"site": "Oslo"}', "--at-tx", str(tx)).json() == 2
    assert trial("count", "patients", "-f", "table").out.strip() == "2"


# ------------------------------------------------------------------------- writes
def test_update_replace_delete_history(trial, tmp_path, check_error, patients):
    r = trial("update", "patients", "p2", '{"$set": {"dosage.mg": 30}, "$inc": {"age": 1}}')
    assert r.json()["dosage"] == {"mg": 30} and r.json()["age"] == 46
    changes = tmp_path / "changes.json"
    changes.write_text('{"$push": {"tags": "late"}}')
    assert trial("update", "patients", "p2", str(changes)).json()["tags"] == ["late"]
    assert trial("update", "patients", "p2", "-", input='{"$unset": {"tags": ""}}').json().get("tags") is None
    check_error(trial("update", "patients", "p2", '{"$frobnicate": {}}'), 4)
    check_error(trial("update", "patients", "p2", '{"$set": {"site": "Paris"}}'), 4, "schema")
    check_error(trial("update", "patients", "zz", '{"$set": {"a": 1}}'), 3)

    assert trial("replace", "patients", "p2", '{"name": "Bo", "site": "Oslo"}').json() == {"_id": "p2", "name": "Bo", "site": "Oslo"}
    doc = tmp_path / "doc.json"
    doc.write_text('{"name": "Bo", "site": "Bergen"}')
    assert trial("replace", "patients", "p2", str(doc)).json()["site"] == "Bergen"
    assert trial("replace", "patients", "p2", "-", input='{"name": "Bo", "site": "Oslo", "age": 47}').json()["age"] == 47
    check_error(trial("replace", "patients", "p2", '{"_id": "other", "name": "x", "site": "Oslo"}'), 4, "_id")
    check_error(trial("replace", "patients", "p2", '{"name": 1, "site": "Oslo"}'), 4)
    assert trial("replace", "patients", "p2", "not-a-file").code == 2

    r = trial("delete", "patients", "p2")
    assert r.json() == {"collection": "patients", "_id": "p2", "deleted": True}
    check_error(trial("get", "patients", "p2"), 3)
    check_error(trial("delete", "patients", "p2"), 3)
    assert "deleted p3 from patients" in trial("delete", "patients", "p3", "-f", "table").out

    revs = trial("history", "patients", "p2").json()
    assert [r["revision"] for r in revs] == [1, 2, 3, 4, 5, 6, 7, 8]
    assert revs[0]["document"] == patients[1]
    assert revs[1]["document"]["dosage"] == {"mg": 30}
    assert revs[-1]["deleted"] is True and revs[-1]["document"] is None
    assert all(a["tx_id"] < b["tx_id"] for a, b in zip(revs, revs[1:]))
    table = trial("history", "patients", "p2", "-f", "table").out
    assert "rev" in table and "(deleted)" in table and "time (UTC)" in table
    jsonl = trial("history", "patients", "p2", "-f", "jsonl").lines()
    assert len(jsonl) == 8
    check_error(trial("history", "patients", "zz"), 3)


def test_index_create(trial, check_error):
    r = trial("index", "create", "patients", "age")
    assert r.json() == [{"field": "site", "unique": False}, {"field": "screening", "unique": True},
                        {"field": "age", "unique": False}]
    assert "name (unique)" in trial("index", "create", "patients", "name", "--unique", "-f", "table").out
    check_error(trial("index", "create", "patients", "age"), 4, "already")
    trial("insert", "patients", input='{"name": "Ada", "site": "Bergen"}')
    check_error(trial("index", "create", "patients", "site", "--unique"), 4)
    trial("insert", "patients", input='{"name": "Zed", "site": "Bergen", "dosage": {"mg": 50}, "screening": "S-9"}')
    check_error(trial("index", "create", "patients", "dosage.mg", "--unique"), 4, "share a value")
    check_error(trial("index", "create", "nope", "x"), 3)
    assert [d["_id"] for d in trial("find", "patients", '{"age": {"$gt": 50}}', "--sort", "age").json()] == ["p3", "p1"]


# ------------------------------------------------------------------------- state, proofs
def test_state_save_and_show(trial, tmp_path):
    s = trial("state").json()
    assert set(s) == {"tx_id", "root"} and len(s["root"]) == 64
    f = tmp_path / "state.json"
    assert trial("state", "--save", str(f)).json() == s
    # saved as its signed checkpoint (C2SP tlog-checkpoint): origin, tree size, base64 root, signature
    lines = f.read_text().split("\n")
    assert lines[1] == str(s["tx_id"]) and base64.b64decode(lines[2]).hex() == s["root"]
    # then the state-map extension line (the root the last header commits to), a blank line, the signature
    assert lines[3].startswith("state-map ") and len(base64.b64decode(lines[3].split(" ")[1])) == 32
    assert lines[4] == "" and lines[5].startswith("\u2014 " + lines[0] + " ")
    assert read_state_file(f) == kvcore.State.from_dict(s)
    key = trial("key").out.strip()
    assert key.startswith(lines[0] + "+") and docstore.verify  # the key is named after the origin
    from docstore.proofs.checkpoint import open_checkpoint
    from docstore.proofs.note import Verifier

    assert open_checkpoint(f.read_text(), [Verifier.parse(key)]).state == kvcore.State.from_dict(s)
    assert trial("checkpoint").out == f.read_text()
    table = trial("state", "-f", "table", "--save", str(tmp_path / "t.json")).out
    assert f"transaction {s['tx_id']}" in table and s["root"] in table and "saved to" in table


def test_prove_and_verify_offline(trial, tmp_path, monkeypatch, check_error):
    state_file = tmp_path / "state.json"
    trial("state", "--save", str(state_file))
    proof = trial("prove", "patients", "p1", "--pointer", "/dosage/mg")
    assert proof.code == 0
    bundle = proof.json()
    assert bundle["format"] == "immudoc-proof" and bundle["kind"] == "property" and bundle["claim"] == 50
    assert "Ada" not in proof.out and "Oslo" not in proof.out  # nothing else of the document
    pf = tmp_path / "proof.json"
    pf.write_text(proof.out)

    # verify opens no database: point --db nowhere and make opening one an error
    import docstore

    def no_open(*a, **k):
        raise AssertionError("verify opened a database")

    monkeypatch.setattr(docstore, "open", no_open)
    missing = str(tmp_path / "nowhere")
    r = trial("--db", missing, "verify", str(pf), "--state", str(state_file), db=None)
    assert r.code == 0, r.err
    v = r.json()
    assert v["verified"] is True and v["value"] == 50 and v["pointer"] == "/dosage/mg" and v["id"] == "p1"
    assert not os.path.exists(missing)
    r = trial("verify", "-", "--state", str(state_file), "-f", "table", input=pf.read_text(), db=None)
    assert r.code == 0 and r.out.startswith("verified: patients/p1 /dosage/mg = 50")

    forged = dict(bundle, claim=51)
    ff = tmp_path / "forged.json"
    ff.write_text(json.dumps(forged))
    check_error(trial("verify", str(ff), "--state", str(state_file), db=None), 5, "value check failed")
    ff.write_text('{"format": "something else"}')
    check_error(trial("verify", str(ff), "--state", str(state_file), db=None), 5, "not an immudoc proof")
    ff.write_text("not json")
    check_error(trial("verify", str(ff), "--state", str(state_file), db=None), 5)
    other = tmp_path / "other-state.json"
    other.write_text(json.dumps({"tx_id": read_state_file(state_file).tx_id, "root": "00" * 32}))
    check_error(trial("verify", str(pf), "--state", str(other), db=None), 5, "root")
    assert trial("verify", str(pf), "--state", str(tmp_path / "missing.json"), db=None).code == 2
    assert trial("verify", str(pf), db=None).code == 2  # --state is required


def test_prove_options(trial, tmp_path, check_error):
    old = tmp_path / "old.json"
    trial("state", "--save", str(old))
    tx_before = read_state_file(old).tx_id
    key = trial("key").out.strip()
    trial("update", "patients", "p1", '{"$set": {"dosage.mg": 25}}')
    new = tmp_path / "new.json"
    trial("state", "--save", str(new))

    whole = trial("prove", "patients", "p1").json()
    assert whole["kind"] == "document" and whole["claim"]["dosage"] == {"mg": 25}
    past = trial("prove", "patients", "p1", "--pointer", "/dosage/mg", "--at-tx", str(tx_before)).json()
    assert past["claim"] == 50 and past["revision"] == 1

    # a proof relative to today's state verifies against the old state only with --known-state
    # (a consistency proof) and the pinned key (the newer state's signature)
    plain = tmp_path / "plain.json"
    assert trial("prove", "patients", "p1", "--pointer", "/dosage/mg", "-o", str(plain)).code == 0
    check_error(trial("verify", str(plain), "--state", str(old), db=None), 5, "signed by a key you pin")
    check_error(trial("verify", str(plain), "--state", str(old), "--key", key, db=None), 5, "consistency")
    linked = tmp_path / "linked.json"
    r = trial("prove", "patients", "p1", "--pointer", "/dosage/mg", "--known-state", str(old), "-o", str(linked))
    assert r.code == 0
    summary = r.json()
    assert summary["output"] == str(linked) and summary["claim"] == 25 and summary["bytes"] == len(linked.read_bytes())
    check_error(trial("verify", str(linked), "--state", str(old), db=None), 5, "signed by a key you pin")
    v = trial("verify", str(linked), "--state", str(old), "--key", key, db=None).json()
    assert v["value"] == 25 and v["signed_state"] is True
    assert trial("--key", key, "verify", str(linked), "--state", str(old), db=None).json()["value"] == 25
    check_error(trial("verify", str(linked), "--state", str(new), "--key", key, db=None), 5, "does not use")
    assert trial("verify", str(plain), "--state", str(new), db=None).json()["value"] == 25
    # an unchanged property is proven relative to the known state itself: no key needed
    unchanged = tmp_path / "unchanged.json"
    trial("prove", "patients", "p2", "--known-state", str(old), "-o", str(unchanged))
    assert trial("verify", str(unchanged), "--state", str(old), db=None).json()["state"]["tx_id"] == tx_before
    r = trial("prove", "patients", "p2", "-o", str(tmp_path / "p2.json"), "-f", "table")
    assert r.out.startswith("wrote a document proof of patients/p2")

    check_error(trial("prove", "patients", "zz"), 3)
    check_error(trial("prove", "patients", "p1", "--pointer", "/nothing"), 3)
    check_error(trial("prove", "patients", "p1", "--pointer", "/dosage"), 4, "container")
    check_error(trial("prove", "patients", "p1", "--pointer", "no-slash"), 4)
    check_error(trial("prove", "nope", "p1"), 3)


def test_consistency(trial, tmp_path, check_error):
    old = tmp_path / "old.json"
    trial("state", "--save", str(old))
    r = trial("consistency", str(old))
    assert r.code == 0 and r.json()["consistent"] is True
    trial("insert", "patients", input='{"name": "Di", "site": "Oslo"}')
    trial("delete", "patients", "p1")
    r = trial("consistency", str(old))
    assert r.json()["new"]["tx_id"] == r.json()["old"]["tx_id"] + 2
    assert r.json()["proof_hashes"] > 0
    assert trial("consistency", str(old), "-f", "table").out.startswith("consistent: state")

    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps({"tx_id": read_state_file(old).tx_id, "root": "ab" * 32}))
    check_error(trial("consistency", str(forged)), 5, "differs")
    forged.write_text("{}")
    check_error(trial("consistency", str(forged)), 5, "malformed")
    assert trial("consistency", str(tmp_path / "missing.json")).code == 2


def test_audit_passes(trial, tmp_path):
    r = trial("audit")
    assert r.code == 0
    report = r.json()
    assert report["ok"] is True and report["problems"] == [] and report["tx_count"] == 2
    assert trial("audit", "-f", "table").out.startswith("audit passed")
    s = tmp_path / "s.json"
    trial("state", "--save", str(s))
    assert trial("audit", "--state", str(s)).json()["ok"] is True


def test_audit_fails_against_a_foreign_state(trial, tmp_path, check_error):
    s = tmp_path / "s.json"
    s.write_text(json.dumps({"tx_id": 1, "root": "cd" * 32}))
    r = trial("audit", "--state", str(s))
    check_error(r, 5, "audit FAILED")
    assert r.json()["ok"] is False and r.json()["problems"]
    assert trial("audit", "--state", str(s), "-f", "table").out == ""  # the one error line says it


# ------------------------------------------------------------------------- export / import
def test_export_import_round_trip(trial, tmp_path, check_error, patients):
    exported = trial("export", "patients")
    assert exported.code == 0
    assert exported.lines() == patients
    trial("collection", "create", "copy")
    r = trial("import", "copy", input=exported.out)
    assert (r.json()["collection"], r.json()["imported"], r.json()["batches"]) == ("copy", 3, 1)
    assert trial("export", "copy").out == exported.out

    f = tmp_path / "out.jsonl"
    assert trial("export", "patients", "-o", str(f)).code == 0
    assert f.read_text() == exported.out
    trial("collection", "create", "copy2")
    assert "imported 3 documents into copy2" in trial("import", "copy2", str(f), "-f", "table").out
    tx = trial("state").json()["tx_id"]
    trial("update", "copy2", "p1", '{"$set": {"name": "Changed"}}')
    assert trial("export", "copy2", "--at-tx", str(tx)).out == exported.out

    trial("collection", "create", "empty")
    assert trial("export", "empty").out == ""
    assert trial("import", "empty", input="").json()["imported"] == 0
    check_error(trial("import", "empty", input='{"a": 1}\n{"b": \n'), 4, "line 2")
    check_error(trial("import", "copy", input=exported.out), 4)  # same ids again
    check_error(trial("export", "nope"), 3)
    assert trial("count", "empty").json() == 0


def test_export_import_round_trip_of_line_separators_inside_strings(trial, tmp_path):
    """JSON lines end at "\\n" only: U+2028, U+2029, U+0085 and \\x1c-\\x1e may stand unescaped in
    a JSON string (export writes them so) and must not cut a line on import."""
    text = "a\u2028b\u2029c\u0085d\x1ce\x1df\x1eg\rh"
    doc = {"_id": "sep", "s": text, text: 1}
    trial("collection", "create", "seps")
    assert trial("insert", "seps", input=json.dumps(doc)).code == 0
    f = tmp_path / "seps.jsonl"
    assert trial("export", "seps", "-o", str(f)).code == 0
    assert "\u2028" in f.read_text(encoding="utf-8")  # written raw
    trial("collection", "create", "seps2")
    r = trial("import", "seps2", str(f))
    assert r.code == 0 and r.json()["imported"] == 1, r.err
    assert trial("get", "seps2", "sep").json() == doc
    crlf = trial("import", "seps2", input='{"_id": "c1"}\r\n{"_id": "c2"}\r\n')
    assert crlf.json()["imported"] == 2


# ------------------------------------------------------------------------- environment
def test_immudoc_db_environment_variable_and_default(cli, tmp_path, monkeypatch):
    env_db = str(tmp_path / "from-env")
    r = cli("init", db=None, env={"IMMUDOC_DB": env_db})
    assert r.code == 0 and r.json()["path"] == env_db
    assert cli("collection", "create", "x", db=None, env={"IMMUDOC_DB": env_db}).code == 0
    assert [c["name"] for c in cli("collection", "list", db=None, env={"IMMUDOC_DB": env_db}).json()] == ["x"]
    # --db wins over the environment
    other = str(tmp_path / "other")
    cli("--db", other, "init", db=None, env={"IMMUDOC_DB": env_db})
    assert cli("--db", other, "collection", "list", db=None, env={"IMMUDOC_DB": env_db}).json() == []
    # neither: ./immudoc-data
    monkeypatch.chdir(tmp_path)
    assert cli("init", db=None).json()["path"] == str(tmp_path / "immudoc-data")


def test_demo_runs(cli):
    r = cli("demo", db=None)
    assert r.code == 0, r.err
    for words in ("1. Two collections", "atomic transaction", "schema refuses", "saves the signed checkpoint",
                  "History of P-003", "Time travel", "disclosing only ['/dosage/mg = 25']", "none",
                  "verifies it offline", "= 25", "rejected", "audit FAILED", "a verifying reader refuses it"):
        assert words in r.out, words
