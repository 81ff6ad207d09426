"""Erasure on PostgreSQL (issue 18): a backup made after an erasure (pg_dump) holds nothing
erased, and once `VACUUM FULL kv_tx` has run (docs/storage.md, "Erasure") neither do the
table's files."""

from __future__ import annotations

import os
import subprocess

import pytest

SECRET = "Plonkwater-5521-erased"


@pytest.fixture
def pg_place(place):
    if place.backend != "postgres":
        pytest.skip("PostgreSQL only")
    return place


def test_dump_and_table_files_after_erasure(pg_place, pg_cluster):
    import psycopg

    import pgcluster

    if not hasattr(pg_cluster, "data"):
        pytest.skip("an external PostgreSQL server (IMMUDOC_TEST_POSTGRES): its files are not here")
    db = pg_place.open()
    c = db.create_collection("people")
    c.insert({"_id": "p1", "name": SECRET, "n": 1})
    c.update("p1", {"$set": {"n": 2}})
    c.erase("p1", ["/name"], reason="erasure request")
    db.close()
    needles = [SECRET.encode(), SECRET.encode().hex().encode()]  # raw, and as pg_dump writes bytea
    dump = subprocess.run(
        pg_cluster.as_user + [pgcluster._bin("pg_dump"), pg_place.target], capture_output=True, timeout=120
    )
    assert dump.returncode == 0, dump.stderr
    assert b"kv_tx" in dump.stdout
    for n in needles:
        assert n not in dump.stdout
    with psycopg.connect(pg_place.target, autocommit=True) as conn:
        for table in ("kv_tx", "ds_snapshot_chunk"):
            if conn.execute("SELECT to_regclass(%s)", (table,)).fetchone()[0] is not None:
                conn.execute(f"VACUUM FULL {table}")
        conn.execute("CHECKPOINT")
        rel = conn.execute("SELECT pg_relation_filepath('kv_tx')").fetchone()[0]
        live = conn.execute("SELECT sum(length(payload)) FROM kv_tx").fetchone()[0]
    directory = os.path.join(pg_cluster.data, os.path.dirname(rel))  # the database's files
    seen = 0
    for name in os.listdir(directory):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        seen += len(data)
        assert SECRET.encode() not in data, name
    assert live and seen > live  # (the table's files were read)
