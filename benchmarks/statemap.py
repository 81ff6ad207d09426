"""The state map (issue 16): what it costs writes, and the size and speed of its proofs.

- **write cost**: insert_many (1,000 documents a transaction, the benchmark schema and its two
  indexes) and a single-document update of a 16-property document, each with the map and
  without it (``docstore.engine.engine.MAINTAIN_STATE_MAP`` off: version-1 headers, no map; a
  switch for this benchmark only), into fresh databases, rounds interleaved, best kept;
- **proofs** at each size of the run, on the shared fixture database: a freshness proof
  (``prove_latest``) and an absence proof, their sizes and prove+verify rates (verified as an
  auditor does: against the state, with the ledger's key pinned); a complete-find
  proof of an equality on the indexed ``site`` (about 10 documents), its size, and the size
  without the documents it carries (what proves completeness: map paths, header, checkpoint).
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
from typing import Any

from benchmarks import docsys
from benchmarks.common import Result, compare
from benchmarks.workload import INDEXES, SCHEMA, iter_batches

WITH = "immudoc"
WITHOUT = "immudoc without the state map"
INSERT = "insert_many with the state map (1,000 docs/tx)"
UPDATE = "update 1 property of a 16-property doc"
LATEST = "freshness proof prove+verify (prove_latest)"
ABSENT = "absence proof prove+verify (prove_absent)"
FIND = "complete find of ~10 docs prove+verify"
LATEST_SIZE = "freshness proof size (JSON)"
LATEST_PROOF_SIZE = "freshness proof size without the document (JSON)"
LATEST_HEADED_SIZE = "freshness proof size without the document, with its header (JSON)"
ABSENT_SIZE = "absence proof size (JSON)"
FIND_SIZE = "complete-find proof size, ~10 docs (JSON)"
FIND_PROOF_SIZE = "complete-find proof size without the documents (JSON)"


def _switch(on: bool) -> None:
    from docstore.engine import engine

    engine.MAINTAIN_STATE_MAP = on


def write_cost(cfg: Any, n: int) -> list[Result]:
    """insert_many of ``n`` documents and single updates, with and without the map."""
    import docstore

    base = tempfile.mkdtemp(prefix="immudoc-bench-map-", dir=cfg.root)
    spent = {WITH: 0.0, WITHOUT: 0.0}
    upd: dict[str, float] = {}
    try:
        dbs = {}
        for name in (WITH, WITHOUT):
            _switch(name == WITH)
            db = docstore.open(os.path.join(base, "with" if name == WITH else "without"))
            db.create_collection("patients", schema=SCHEMA, indexes=INDEXES)
            dbs[name] = db
        for j, batch in enumerate(iter_batches(n, 1000, seed=5)):
            order = [WITH, WITHOUT] if j % 2 == 0 else [WITHOUT, WITH]
            for name in order:
                _switch(name == WITH)
                t = time.perf_counter()
                dbs[name]["patients"].insert_many(batch)
                spent[name] += time.perf_counter() - t
        rnd = random.Random(3)
        ids = [f"p{rnd.randrange(n):08d}" for _ in range(400)]
        for name in (WITH, WITHOUT):
            coll = dbs[name]["patients"]

            def update(chunk: list[str], coll: Any = coll, name: str = name) -> None:
                _switch(name == WITH)
                for i in chunk:
                    coll.update(i, {"$set": {"dosage.mg": rnd.choice((2.5, 5.0))}})

            upd[name] = update  # type: ignore[assignment]
        r = compare(cfg.settings, upd, ids)  # type: ignore[arg-type]
        for db in dbs.values():
            db.close()
    finally:
        _switch(True)
        shutil.rmtree(base, ignore_errors=True)
    out = []
    for name in (WITH, WITHOUT):
        out.append(Result(INSERT, name, n / spent[name], "docs/s", "same batches, interleaved", n, "statemap"))
    for name in (WITH, WITHOUT):
        out.append(Result(UPDATE, name, r[name], "ops/s", "one transaction each, fsync", n, "statemap"))
    return out


def proof_rows(cfg: Any, n: int) -> list[Result]:
    import docstore

    fx = cfg.fixtures.docs(n)
    system = fx.open()[docsys.IMMUDOC]
    coll = system.coll
    state = system.db.state()
    key = system.db.verifier_key()  # the auditor pins the key: the checkpoint names the map root
    rnd = random.Random(11)
    ids = [fx.ids[rnd.randrange(len(fx.ids))] for _ in range(500)]
    missing = [f"q{rnd.randrange(10**9):09d}" for _ in range(500)]
    sites = []
    for i in ids[:50]:
        sites.append(coll.get(i)["site"])

    def latest(chunk: list[str]) -> None:
        for i in chunk:
            docstore.verify(coll.prove_latest(i), state, key)

    def absent(chunk: list[str]) -> None:
        for i in chunk:
            docstore.verify(coll.prove_absent(i), state, key)

    def find(chunk: list[str]) -> None:
        for s in chunk:
            docstore.verify(coll.prove_find({"site": s}), state, key)

    r_latest = compare(cfg.settings, {WITH: latest}, ids)[WITH]
    r_absent = compare(cfg.settings, {WITH: absent}, missing)[WITH]
    r_find = compare(cfg.settings, {WITH: find}, sites)[WITH]
    lat = [coll.prove_latest(i) for i in ids[:100]]
    abs_ = [coll.prove_absent(i) for i in missing[:100]]
    fnd = [coll.prove_find({"site": s}) for s in sites[:30]]
    lat_sizes = [p.size for p in lat]
    lat_proof = [p._replace(documents=[]).size for p in lat]
    lat_headed = [coll.prove_latest(i, with_header=True)._replace(documents=[]).size for i in ids[:100]]
    abs_sizes = [p.size for p in abs_]
    ten = [p for p in fnd if 8 <= len(p.documents) <= 12] or fnd
    find_sizes = [p.size for p in ten]
    find_proof = [p._replace(documents=[]).size for p in ten]
    docs_found = sum(len(p.documents) for p in ten) / len(ten)
    return [
        Result(LATEST, WITH, r_latest, "ops/s", "whole document, 16 properties", n, "statemap"),
        Result(ABSENT, WITH, r_absent, "ops/s", "ids never written", n, "statemap"),
        Result(FIND, WITH, r_find, "ops/s", "{site: X}, indexed", n, "statemap"),
        Result(LATEST_SIZE, WITH, max(lat_sizes), "bytes", f"max of {len(lat_sizes)}; the ~1 KB document and its salts included", n, "statemap"),
        Result(LATEST_PROOF_SIZE, WITH, max(lat_proof), "bytes", f"max of {len(lat_proof)}: map path, signed checkpoint", n, "statemap"),
        Result(LATEST_HEADED_SIZE, WITH, max(lat_headed), "bytes", f"max of {len(lat_headed)}: with_header=True", n, "statemap"),
        Result(ABSENT_SIZE, WITH, max(abs_sizes), "bytes", f"max of {len(abs_sizes)}", n, "statemap"),
        Result(FIND_SIZE, WITH, max(find_sizes), "bytes", f"max of {len(ten)}, {docs_found:.1f} docs each, carried whole", n, "statemap"),
        Result(FIND_PROOF_SIZE, WITH, max(find_proof), "bytes", f"max of {len(ten)}: ranges, definition, checkpoint", n, "statemap"),
    ]


def run(cfg: Any) -> list[Result]:
    out: list[Result] = []
    at = 100_000 if 100_000 in cfg.sizes else cfg.headline
    out += write_cost(cfg, at)
    for n in cfg.sizes:
        out += proof_rows(cfg, n)
    return out
