"""`immudoc erase` (issue 18): a consent withdrawal from the command line, the erasure in
history with who and why, proofs of the erased property, refusals with their exit codes."""

from __future__ import annotations


def test_erase_from_the_command_line(cli, db_path):
    assert cli("init").code == 0
    assert cli("collection", "create", "participants").code == 0
    r = cli("insert", "participants", "-", input='{"_id": "p-017", "name": "Kari Nordmann", "born": 1961, "arm": "A"}')
    assert r.code == 0, r.err
    r = cli("erase", "participants", "p-017", "--pointer", "/name", "--pointer", "/born",
            "--reason", "consent withdrawn", "--as", "dpo", "-f", "json")
    assert r.code == 0, r.err
    done = r.json()
    assert (done["erased"], done["revisions"]) == (2, 1)
    doc = cli("get", "participants", "p-017", "-f", "json").json()
    assert doc == {"_id": "p-017", "name": {"$erased": done["tx"]}, "born": {"$erased": done["tx"]}, "arm": "A"}
    hist = cli("history", "participants", "p-017", "-f", "json").json()
    assert hist[-1] == {**hist[-1], "erasure": True, "user": "dpo", "reason": "consent withdrawn",
                        "pointers": ["/born", "/name"], "erased": 2}
    assert "consent withdrawn" in cli("history", "participants", "p-017", "-f", "table").out
    r = cli("erase", "participants", "p-017", "--pointer", "/name", "-f", "json")
    assert r.code == 0 and r.json()["tx"] is None
    import pathlib

    assert b"Kari" not in (pathlib.Path(db_path) / "ledger" / "txlog").read_bytes()
    r = cli("prove", "participants", "p-017", "--pointer", "/name", "-f", "json")
    assert r.code == 0 and r.json()["claim"] == {"$erased": done["tx"]}
    assert cli("audit").code == 0


def test_erase_refusals(cli, check_error):
    assert cli("init").code == 0
    assert cli("collection", "create", "c").code == 0
    assert cli("insert", "c", "-", input='{"_id": "a", "x": 1}').code == 0
    check_error(cli("erase", "c", "a", "--pointer", "/_id"), 4, "_id")
    check_error(cli("erase", "c", "a", "--pointer", "/nope"), 3, "/nope")
    check_error(cli("erase", "c", "zz"), 3, "zz")
    check_error(cli("erase", "c", "a", "--pointer", "x"), 4, "pointer")
