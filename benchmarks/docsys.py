"""The document stores measured, behind one small interface (immudoc and its peers).

Every read returns decoded Python documents, so each system pays for its own decoding.

- ``immudoc``: ``docstore`` with the benchmark schema and indexes on ``site`` and ``score``.
- ``sqlite json1``: stdlib sqlite3, one ``(id TEXT PRIMARY KEY, body TEXT)`` table, WAL,
  ``synchronous=FULL``, expression indexes on ``json_extract(body, '$.site')`` and ``'$.score'``;
  documents encoded and decoded with orjson (the same library immudoc uses); history is a
  revisions table written in the same transaction as the update.
- ``tinydb memory`` / ``tinydb json``: TinyDB 4 with ``MemoryStorage`` or its default
  ``JSONStorage`` (stdlib json, the whole file rewritten and fsynced on every write and re-read
  on every read); no indexes (every find scans), query cache off; get by id uses TinyDB's own
  ``doc_id``.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

import orjson

from benchmarks.workload import INDEXES, SCHEMA

IMMUDOC = "immudoc"
SQLITE = "sqlite json1"
TINY_MEM = "tinydb memory"
TINY_JSON = "tinydb json"


class ImmudocDocs:
    name = IMMUDOC

    def __init__(self, path: str, schema: Any = SCHEMA, indexes: list[str] = INDEXES, create: bool = True) -> None:
        import docstore

        self.path = path
        self.db = docstore.open(path)
        self.coll = (
            self.db.create_collection("patients", schema=schema, indexes=indexes) if create else self.db["patients"]
        )

    def insert_many(self, docs: list[dict]) -> None:
        self.coll.insert_many(docs)

    def insert(self, doc: dict) -> None:
        self.coll.insert(doc)

    def get(self, doc_id: str) -> dict:
        return self.coll.get(doc_id)

    def find_eq(self, site: str) -> list[dict]:
        return list(self.coll.find({"site": site}))

    def find_range(self, lo: float, hi: float) -> list[dict]:
        return list(self.coll.find({"score": {"$gte": lo, "$lt": hi}}))

    def find_scan(self, age: int, arm: str) -> list[dict]:
        return list(self.coll.find({"patient.age": age, "arm": arm}))

    def set_prop(self, doc_id: str, field: str, value: Any) -> None:
        self.coll.update(doc_id, {"$set": {field: value}})

    def history(self, doc_id: str) -> list[dict]:
        return [r.document for r in self.coll.history(doc_id)]

    def close(self) -> None:
        self.db.close()


class SqliteDocs:
    name = SQLITE

    def __init__(self, path: str, indexes: list[str] = INDEXES, history: bool = False) -> None:
        self.path = path
        self.con = con = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE IF NOT EXISTS docs (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        for f in indexes:
            con.execute(f"CREATE INDEX IF NOT EXISTS docs_{f} ON docs (json_extract(body, '$.{f}'))")
        self.keep_history = history
        if history:
            con.execute(
                "CREATE TABLE IF NOT EXISTS revs (id TEXT, rev INTEGER, ts INTEGER, body TEXT NOT NULL, "
                "PRIMARY KEY (id, rev)) WITHOUT ROWID"
            )

    def insert_many(self, docs: list[dict]) -> None:
        con = self.con
        con.execute("BEGIN")
        con.executemany("INSERT INTO docs VALUES (?, ?)", [(d["_id"], orjson.dumps(d).decode()) for d in docs])
        if self.keep_history:
            ts = time.time_ns()
            con.executemany(
                "INSERT INTO revs VALUES (?, 1, ?, ?)", [(d["_id"], ts, orjson.dumps(d).decode()) for d in docs]
            )
        con.execute("COMMIT")

    def insert(self, doc: dict) -> None:
        self.con.execute("INSERT INTO docs VALUES (?, ?)", (doc["_id"], orjson.dumps(doc).decode()))

    def get(self, doc_id: str) -> dict:
        return orjson.loads(self.con.execute("SELECT body FROM docs WHERE id = ?", (doc_id,)).fetchone()[0])

    def find_eq(self, site: str) -> list[dict]:
        q = "SELECT body FROM docs WHERE json_extract(body, '$.site') = ?"
        return [orjson.loads(r[0]) for r in self.con.execute(q, (site,))]

    def find_range(self, lo: float, hi: float) -> list[dict]:
        q = "SELECT body FROM docs WHERE json_extract(body, '$.score') >= ? AND json_extract(body, '$.score') < ?"
        return [orjson.loads(r[0]) for r in self.con.execute(q, (lo, hi))]

    def find_scan(self, age: int, arm: str) -> list[dict]:
        q = "SELECT body FROM docs WHERE json_extract(body, '$.patient.age') = ? AND json_extract(body, '$.arm') = ?"
        return [orjson.loads(r[0]) for r in self.con.execute(q, (age, arm))]

    def set_prop(self, doc_id: str, field: str, value: Any) -> None:
        con = self.con
        con.execute("BEGIN")
        con.execute("UPDATE docs SET body = json_set(body, ?, ?) WHERE id = ?", ("$." + field, value, doc_id))
        if self.keep_history:
            con.execute(
                "INSERT INTO revs SELECT id, (SELECT max(rev) + 1 FROM revs WHERE id = ?1), ?2, body "
                "FROM docs WHERE id = ?1",
                (doc_id, time.time_ns()),
            )
        con.execute("COMMIT")

    def history(self, doc_id: str) -> list[dict]:
        q = "SELECT rev, ts, body FROM revs WHERE id = ? ORDER BY rev"
        return [orjson.loads(r[2]) for r in self.con.execute(q, (doc_id,))]

    def close(self) -> None:
        self.con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.con.close()


class TinyDocs:
    def __init__(self, path: str | None, history: bool = False) -> None:
        from tinydb import Query, TinyDB
        from tinydb.storages import MemoryStorage

        self.path = path
        self.name = TINY_MEM if path is None else TINY_JSON
        self.db = TinyDB(storage=MemoryStorage) if path is None else TinyDB(path)
        self.t = self.db.table("docs", cache_size=0)
        self.revs = self.db.table("revs", cache_size=0)
        self.keep_history = history
        self.ids: dict[str, int] = {}
        self.q = Query()

    def insert_many(self, docs: list[dict]) -> None:
        for d, i in zip(docs, self.t.insert_multiple(docs)):
            self.ids[d["_id"]] = i
        if self.keep_history:
            self.revs.insert_multiple([{"id": d["_id"], "rev": 1, "ts": time.time_ns(), "doc": d} for d in docs])

    def insert(self, doc: dict) -> None:
        self.ids[doc["_id"]] = self.t.insert(doc)

    def get(self, doc_id: str) -> dict:
        return self.t.get(doc_id=self.ids[doc_id])

    def find_eq(self, site: str) -> list[dict]:
        return self.t.search(self.q.site == site)

    def find_range(self, lo: float, hi: float) -> list[dict]:
        return self.t.search((self.q.score >= lo) & (self.q.score < hi))

    def find_scan(self, age: int, arm: str) -> list[dict]:
        return self.t.search((self.q.patient.age == age) & (self.q.arm == arm))

    def set_prop(self, doc_id: str, field: str, value: Any) -> None:
        i = self.ids[doc_id]
        self.t.update({field: value}, doc_ids=[i])
        if self.keep_history:
            doc = self.t.get(doc_id=i)
            rev = 1 + max(r["rev"] for r in self.revs.search(self.q.id == doc_id))
            self.revs.insert({"id": doc_id, "rev": rev, "ts": time.time_ns(), "doc": dict(doc)})

    def history(self, doc_id: str) -> list[dict]:
        return [r["doc"] for r in sorted(self.revs.search(self.q.id == doc_id), key=lambda r: r["rev"])]

    def close(self) -> None:
        self.db.close()
