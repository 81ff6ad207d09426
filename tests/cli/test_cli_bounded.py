"""`immudoc import` and `export` stream: import checks every line, then commits N documents a
transaction; export writes as it reads (more in test_cli_import_stream.py)."""

from __future__ import annotations

import json

import docstore


def test_import_streams_groups_and_checks_every_line_first(sub, tmp_path, check_error):
    path = tmp_path / "db"
    f = tmp_path / "in.jsonl"
    f.write_text("".join(json.dumps({"_id": f"d{i:03}", "n": i}) + "\n" for i in range(250)))
    args = ["--db", str(path)]
    assert sub([*args, "init"]).code == 0
    assert sub([*args, "collection", "create", "c"]).code == 0
    r = sub([*args, "import", "c", str(f), "--per-transaction", "100"])
    assert r.code == 0 and r.json()["imported"] == 250, r.err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "x1"}\n{"_id": "x2"}\n{"_id": \n')
    check_error(sub([*args, "import", "c", str(bad), "--per-transaction", "1"]), 4, "line 3")
    dup = tmp_path / "dup.jsonl"  # the second group repeats an id: the first stays, and it says so
    dup.write_text('{"_id": "y1"}\n{"_id": "y2"}\n{"_id": "d001"}\n')
    r = sub([*args, "import", "c", str(dup), "--per-transaction", "2"])
    check_error(r, 4, "d001")
    assert "lines 1-2 are committed (transaction 5); line 3: " in r.err and "--skip-existing" in r.err
    out = tmp_path / "out.jsonl"
    assert sub([*args, "export", "c", "-o", str(out)]).code == 0
    ids = [json.loads(line)["_id"] for line in out.read_text().splitlines()]
    assert ids == [f"d{i:03}" for i in range(250)] + ["y1", "y2"]
    with docstore.open(path) as d:
        assert d["c"].count() == 252
        assert d.tx_id == 5  # the collection, then groups of 100, 100 and 50, then y1 and y2
        assert not d["c"].find_one({"_id": "x1"})


def test_import_from_standard_input_in_groups(sub, tmp_path):
    path = tmp_path / "db"
    assert sub(["--db", str(path), "init"]).code == 0
    assert sub(["--db", str(path), "collection", "create", "c"]).code == 0
    lines = "".join(json.dumps({"n": i}) + "\n" for i in range(30))
    r = sub(["--db", str(path), "import", "c", "-", "--per-transaction", "7"], input=lines)
    assert r.code == 0 and r.json()["imported"] == 30
    with docstore.open(path) as d:
        assert sorted(x["n"] for x in d["c"].find()) == list(range(30)) and d.tx_id == 1 + 5


def test_a_query_has_a_time_budget_on_the_command_line(sub, tmp_path, check_error):
    """A $regex that backtracks catastrophically once held `immudoc find` for minutes: it stops
    with exit 8 naming the pattern; --max-time-ms bounds a whole query; a budget out of range
    is a usage error (2)."""
    path = tmp_path / "db"
    args = ["--db", str(path)]
    assert sub([*args, "init"]).code == 0
    assert sub([*args, "collection", "create", "c"]).code == 0
    docs = tmp_path / "in.jsonl"
    docs.write_text("".join(json.dumps({"s": "a" * 50 + "!", "n": i}) + "\n" for i in range(3)))
    assert sub([*args, "import", "c", str(docs)]).code == 0
    check_error(sub([*args, "find", "c", '{"s": {"$regex": "^(a|aa)+$"}}']), 8, "^(a|aa)+$")
    check_error(sub([*args, "count", "c", '{"s": {"$regex": "^(a|aa)+$"}}', "--max-time-ms", "200"]), 8, "budget")
    r = sub([*args, "count", "c", '{"n": {"$gte": 1}}', "--max-time-ms", "60000"])
    assert r.code == 0 and r.json() == 2
    assert sub([*args, "find", "c", "--max-time-ms", "0"]).code == 2
