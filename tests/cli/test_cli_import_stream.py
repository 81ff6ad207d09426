"""`immudoc import` streams its input and commits in batches (issue 19): batches and their
transactions, a failure that names the committed lines, resuming with --skip-existing,
--upsert, --create, --with-definition round trips with export, bounded memory in a real
process, and the same over --server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docstore

REPO = Path(__file__).resolve().parents[2]

SCHEMA = {"type": "object", "properties": {"n": {"type": "integer"}}}


def write_lines(path, docs):
    path.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return str(path)


def numbered(n, start=0, **extra):
    return [{"_id": f"v{i:06}", "n": i, **extra} for i in range(start, start + n)]


def test_import_commits_batches_and_reports_each(cli, tmp_path):
    assert cli("init").code == 0
    f = write_lines(tmp_path / "in.jsonl", numbered(2500))
    r = cli("import", "visits", f, "--create", "--batch-size", "1000", "-v", "--reason", "first load")
    assert r.code == 0, r.err
    out = r.json()
    assert out["imported"] == 2500 and out["batches"] == 3 and out["created"] is True
    assert (out["first"], out["last"], out["first_tx"], out["last_tx"]) == (1, 2500, 2, 4)
    assert "committed lines 1-1000 (transaction 2)" in r.err and "committed lines 2001-2500 (transaction 4)" in r.err
    r = cli("import", "visits", f, "--skip-existing", "-f", "table")
    assert r.code == 0 and r.out.strip() == "imported 0 documents into visits (2500 skipped; 3 batches)", r.out
    with docstore.open(tmp_path / "db") as db:
        assert db["visits"].count() == 2500 and db.tx_id == 4
        assert db["visits"].history("v000001")[0].reason == "first load"


def test_a_failure_names_the_committed_lines_and_skip_existing_resumes(cli, tmp_path, check_error):
    assert cli("init").code == 0
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    assert cli("collection", "create", "visits", "--schema", str(schema)).code == 0
    docs = numbered(3000)
    docs[2216]["n"] = "not a number"  # line 2217
    f = write_lines(tmp_path / "in.jsonl", docs)
    r = cli("import", "visits", f, "--batch-size", "1000")
    check_error(r, 4, "lines 1-2000 are committed (transactions 2-3); line 2217: ", "v002216",
                "re-run with --skip-existing to resume")
    docs[2216]["n"] = 2216
    write_lines(tmp_path / "in.jsonl", docs)
    r = cli("import", "visits", f, "--batch-size", "1000", "--skip-existing")
    assert r.code == 0, r.err
    assert (r.json()["inserted"], r.json()["skipped"], r.json()["first_tx"], r.json()["last_tx"]) == (1000, 2000, 4, 4)
    with docstore.open(tmp_path / "db") as db:
        assert db["visits"].count() == 3000


def test_bad_json_and_options_write_nothing(cli, tmp_path, check_error):
    assert cli("init").code == 0
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"_id": "a"}\n\n{"_id": "b"}\n{"_id": \n')
    check_error(cli("import", "visits", str(bad), "--create"), 4, "line 4")
    check_error(cli("import", "visits", write_lines(tmp_path / "ok.jsonl", numbered(2))), 3, "--create")
    r = cli("import", "visits", str(tmp_path / "ok.jsonl"), "--upsert", "--skip-existing")
    assert r.code == 2 and "not both" in r.err
    assert cli("collection", "list", "-f", "json").json() == []


def test_upsert_replaces_existing_documents(cli, tmp_path):
    assert cli("init").code == 0
    assert cli("import", "visits", write_lines(tmp_path / "a.jsonl", numbered(5)), "--create").code == 0
    r = cli("import", "visits", write_lines(tmp_path / "b.jsonl", numbered(4, 3, site="S1")), "--upsert")
    assert r.code == 0 and (r.json()["inserted"], r.json()["replaced"]) == (2, 2), r.out
    with docstore.open(tmp_path / "db") as db:
        assert db["visits"].get("v000004") == {"_id": "v000004", "n": 4, "site": "S1"}
        assert [x.revision for x in db["visits"].history("v000004")] == [1, 2]
        assert db["visits"].count() == 7


def test_export_with_definition_round_trips(cli, tmp_path, check_error):
    assert cli("init").code == 0
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(SCHEMA))
    assert cli("collection", "create", "visits", "--schema", str(schema), "--index", "n", "--unique-index", "site").code == 0
    docs = numbered(1200, site=None)
    for d in docs:
        d["site"] = f"S{d['n']}"
    assert cli("import", "visits", write_lines(tmp_path / "in.jsonl", docs)).code == 0
    out = tmp_path / "out.jsonl"
    r = cli("export", "visits", "--with-definition", "-o", str(out))
    assert r.code == 0, r.err
    lines = out.read_text().splitlines()
    head = json.loads(lines[0])
    assert head == {"$immudoc": "collection-definition", "version": 1, "name": "visits", "schema": SCHEMA,
                    "indexes": [{"field": "n", "unique": False}, {"field": "site", "unique": True}], "require_reason": False}
    assert [json.loads(x) for x in lines[1:]] == docs
    copy = str(tmp_path / "copy")
    assert cli("init", db=copy).code == 0
    check_error(cli("import", "visits", str(out), "--with-definition", db=copy), 3, "--create")
    r = cli("import", "visits", str(out), "--with-definition", "--create", db=copy)
    assert r.code == 0 and r.json()["definition"] == "created" and r.json()["imported"] == 1200, r.err
    with docstore.open(copy) as db:
        assert db["visits"].schema == SCHEMA and db["visits"].indexes() == head["indexes"]
        assert list(db["visits"].find()) == docs
    # a plain import skips the definition line and says so; --with-definition needs one
    r = cli("import", "other", str(out), "--create", db=copy)
    assert r.code == 0 and r.json()["imported"] == 1200 and "line 1" in r.err and "not applied" in r.err
    plain = write_lines(tmp_path / "plain.jsonl", numbered(2))
    check_error(cli("import", "visits", plain, "--with-definition", db=copy), 4, "not a collection definition")
    # export to stdout carries it too; -o writes a whole file or leaves the old one
    r = cli("export", "visits", "--with-definition")
    assert r.code == 0 and json.loads(r.out.splitlines()[0]) == head
    out.write_text("old\n")
    check_error(cli("export", "nope", "-o", str(out)), 3)
    assert out.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []


def _max_rss_kb(args: list[str]) -> tuple[int, str]:
    """Run the CLI in a child of a fresh interpreter; the child's peak RSS (getrusage)."""
    code = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-c', 'from docstore.cli import main; main()', *sys.argv[1:]],"
        " capture_output=True, text=True)\n"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.returncode, p.stderr.strip())\n"
    )
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=REPO,
                       env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}, timeout=600)
    rss, rc, *err = p.stdout.split(" ", 2)
    assert rc == "0", (p.stdout, p.stderr)
    return int(rss), " ".join(err)


def test_import_memory_stays_bounded(tmp_path, sub):
    """30,000 documents of about 1 KB: loaded whole (one transaction) the process peaked near
    500 MB when measured; in batches of 1,000 it stays near 70 MB (bounded by a batch)."""
    note = "x" * 800
    f = write_lines(tmp_path / "in.jsonl", [{"_id": f"v{i:06}", "n": i, "note": note, "vitals": {"bp": [120, 80], "t": 36.6}}
                                          for i in range(30_000)])
    db = str(tmp_path / "db")
    assert sub(["--db", db, "init"]).code == 0
    rss, _ = _max_rss_kb(["--db", db, "import", "visits", f, "--create", "-q"])
    assert rss < 150_000, f"peak RSS {rss} KB"
    with docstore.open(db) as d:
        assert d["visits"].count() == 30_000


def test_import_over_a_server(server, tmp_path, sub, check_error):
    _proc, addr, _db = server
    remote = ["--server", addr, "--no-verify"]
    f = write_lines(tmp_path / "in.jsonl", numbered(2500))
    r = sub([*remote, "import", "visits", f, "--create", "--batch-size", "1000", "-v"])
    assert r.code == 0, r.err
    assert (r.json()["imported"], r.json()["batches"], r.json()["first_tx"], r.json()["last_tx"]) == (2500, 3, 2, 4)
    assert "committed lines 2001-2500 (transaction 4)" in r.err
    more = write_lines(tmp_path / "more.jsonl", numbered(1500, 2000))
    r = sub([*remote, "import", "visits", more, "--batch-size", "1000"])
    check_error(r, 4, "nothing was committed", "lines 1-1000 (one transaction, not written)")
    r = sub([*remote, "import", "visits", more, "--batch-size", "1000", "--skip-existing"])
    assert r.code == 0 and (r.json()["inserted"], r.json()["skipped"]) == (1000, 500), r.err
    r = sub([*remote, "import", "visits", write_lines(tmp_path / "up.jsonl", numbered(2, 0, v=1)), "--upsert"])
    assert r.code == 0 and r.json()["replaced"] == 2, r.err
    r = sub([*remote, "export", "visits", "--with-definition", "-o", str(tmp_path / "out.jsonl")])
    assert r.code == 0, r.err
    lines = (tmp_path / "out.jsonl").read_text().splitlines()
    assert len(lines) == 3501 and json.loads(lines[0])["name"] == "visits"
    r = sub([*remote, "import", "copy", str(tmp_path / "out.jsonl"), "--with-definition", "--create"])
    assert r.code == 0 and r.json()["imported"] == 3500 and r.json()["definition"] == "created", r.err


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), max_size=8),
    lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(min_size=1, max_size=4).filter(lambda k: k != "_id"), kids, max_size=3),
    max_leaves=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.dictionaries(st.text(min_size=1, max_size=4).filter(lambda k: k != "_id"), JSON_VALUES, max_size=4),
                min_size=1, max_size=12),
       st.integers(min_value=1, max_value=5))
def test_export_lines_import_round_trip(tmp_path_factory, docs, batch_size):
    """What export writes (output.dumps: U+2028 and the like unescaped, integers past 64 bits as
    decimal text) reads back through the import's line reader and import_documents to the same
    documents, in any batch size."""
    from docstore.cli import output
    from docstore.cli.inputs import JsonLines
    from docstore.transfer import import_documents

    docs = [{"_id": f"d{i}", **d} for i, d in enumerate(docs)]
    where = tmp_path_factory.mktemp("rt")
    f = where / "in.jsonl"
    f.write_text("".join(output.dumps(d) + "\n" for d in docs), encoding="utf-8")
    lines = JsonLines(str(f))
    with docstore.open(where / "db") as db:
        db.create_collection("c")
        out = list(import_documents(db, "c", lines.numbered(), batch_size=batch_size, numbered=True))
        assert sum(b.inserted for b in out) == len(docs) and out[-1].last == len(docs)
        assert list(db["c"].find(sort=[("_id", 1)])) == sorted(docs, key=lambda d: d["_id"])
