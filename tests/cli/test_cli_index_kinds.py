"""``immudoc index create --sparse/--partial`` and ``immudoc index drop`` (docstore/cli/index_cmds.py):
thin shells over Collection.create_index and drop_index (tested in tests/docstore/test_ds_index_kinds.py)."""

from __future__ import annotations


def test_index_kinds_and_drop_on_the_command_line(trial, check_error):
    r = trial("index", "create", "patients", "email", "--unique", "--sparse")
    assert r.code == 0, r.err
    assert {"field": "email", "unique": True, "sparse": True} in r.json()
    r = trial("index", "create", "patients", "name", "--partial", '{"site": "Oslo"}')
    assert r.code == 0, r.err
    assert {"field": "name", "unique": False, "partial_filter": {"site": "Oslo"}} in r.json()
    r = trial("find", "patients", '{"name": {"$gte": ""}, "site": "Oslo"}')
    assert r.code == 0 and len(r.json()) == 2, r.out
    r = trial("index", "drop", "patients", "name")
    assert r.code == 0, r.err
    assert all(i["field"] != "name" for i in r.json())
    check_error(trial("index", "drop", "patients", "name"), 3, "no index on 'name'")
    check_error(trial("index", "create", "patients", "x", "--partial", '{"a": {"$ne": 1}}'), 4, "$ne")
    check_error(trial("index", "create", "patients", "x", "--partial", "{nope"), 4)
    r = trial("collection", "show", "patients", "--format", "table")
    assert "email (unique, sparse)" in r.out, r.out
    r = trial("index", "create", "patients", "site,name")
    assert r.code == 0, r.err
    assert {"field": "site,name", "unique": False, "fields": ["site", "name"]} in r.json()
    assert trial("index", "drop", "patients", "site,name").code == 0
