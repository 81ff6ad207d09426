"""Documents: immudoc beside stdlib SQLite with JSON1 (WAL, synchronous=FULL, expression index)."""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import tempfile

from benchmarks.common import Result, best_rate, rate
from benchmarks.workload import SCHEMA, make_docs

BATCH = 1000


def run(quick: bool) -> list[Result]:
    import docstore

    n = 20_000 if quick else 100_000
    docs = make_docs(n)
    rnd = random.Random(3)
    ids = [d["_id"] for d in rnd.sample(docs, min(20_000, n))]
    sites = [docs[rnd.randrange(n)]["site"] for _ in range(2000)]
    scans = 3 if quick else 5
    out: list[Result] = []
    root = tempfile.mkdtemp(prefix="immudoc-bench-docs-")
    try:
        # ------------------------------------------------------------ immudoc
        db = docstore.open(os.path.join(root, "immudoc"))
        coll = db.create_collection("patients", schema=SCHEMA, indexes=["site"])

        def ins() -> None:
            for i in range(0, n, BATCH):
                coll.insert_many(docs[i : i + BATCH])

        out.append(Result(f"insert_many ({BATCH}/tx, {n:,} docs)", "immudoc", rate(n, ins), "docs/s"))
        out.append(Result(f"get by id (at {n:,})", "immudoc", best_rate(len(ids), lambda: [coll.get(i) for i in ids])))
        out.append(
            Result(
                "indexed equality find (~10 docs)",
                "immudoc",
                best_rate(len(sites), lambda: [list(coll.find({"site": s})) for s in sites]),
                "q/s",
            )
        )
        out.append(
            Result(
                f"unindexed find (scan {n:,})",
                "immudoc",
                best_rate(scans, lambda: [list(coll.find({"patient.age": 33, "arm": "placebo"})) for _ in range(scans)], 2),
                "q/s",
            )
        )
        db.close()
        # ------------------------------------------------------------- SQLite
        con = sqlite3.connect(os.path.join(root, "sqlite.db"), isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE docs (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        con.execute("CREATE INDEX docs_site ON docs (json_extract(body, '$.site'))")

        def sq_ins() -> None:
            for i in range(0, n, BATCH):
                con.execute("BEGIN")
                con.executemany(
                    "INSERT INTO docs VALUES (?, ?)", [(d["_id"], json.dumps(d)) for d in docs[i : i + BATCH]]
                )
                con.execute("COMMIT")

        out.append(Result(f"insert_many ({BATCH}/tx, {n:,} docs)", "sqlite json1", rate(n, sq_ins), "docs/s"))

        def sq_get() -> None:
            for i in ids:
                json.loads(con.execute("SELECT body FROM docs WHERE id = ?", (i,)).fetchone()[0])

        out.append(Result(f"get by id (at {n:,})", "sqlite json1", best_rate(len(ids), sq_get)))

        def sq_find() -> None:
            for s in sites:
                [json.loads(r[0]) for r in con.execute("SELECT body FROM docs WHERE json_extract(body, '$.site') = ?", (s,))]

        out.append(Result("indexed equality find (~10 docs)", "sqlite json1", best_rate(len(sites), sq_find), "q/s"))

        def sq_scan() -> None:
            for _ in range(scans):
                [
                    json.loads(r[0])
                    for r in con.execute(
                        "SELECT body FROM docs WHERE json_extract(body, '$.patient.age') = 33 "
                        "AND json_extract(body, '$.arm') = 'placebo'"
                    )
                ]

        out.append(Result(f"unindexed find (scan {n:,})", "sqlite json1", best_rate(scans, sq_scan, 2), "q/s"))
        con.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out
