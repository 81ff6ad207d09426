"""Proofs: property and whole-document prove+verify beside pymerkle inclusion prove+verify."""

from __future__ import annotations

import os
import random
import shutil
import tempfile

from benchmarks.common import Result, best_rate
from benchmarks.workload import make_docs

BATCH = 1000


def run(quick: bool) -> list[Result]:
    import docstore

    n = 20_000 if quick else 100_000
    k = 2_000 if quick else 5_000
    docs = make_docs(n)
    ids = [d["_id"] for d in random.Random(5).sample(docs, k)]
    out: list[Result] = []
    root = tempfile.mkdtemp(prefix="immudoc-bench-proofs-")
    try:
        db = docstore.open(os.path.join(root, "db"))
        coll = db.create_collection("patients")
        for i in range(0, n, BATCH):
            coll.insert_many(docs[i : i + BATCH])
        state = db.state()

        def prop() -> None:
            for i in ids:
                docstore.verify(coll.prove(i, "/dosage/mg"), state)

        def whole() -> None:
            for i in ids:
                docstore.verify(coll.prove(i), state)

        out.append(Result(f"property prove+verify (at {n:,} docs)", "immudoc", best_rate(k, prop)))
        out.append(Result(f"document prove+verify (at {n:,} docs)", "immudoc", best_rate(k, whole)))
        sizes = [coll.prove(i, "/dosage/mg").size for i in ids[:200]]
        doc_sizes = [coll.prove(i).size for i in ids[:200]]
        out.append(Result("property proof size (JSON)", "immudoc", max(sizes), "bytes", "max of 200"))
        out.append(Result("document proof size (JSON)", "immudoc", max(doc_sizes), "bytes", "max of 200"))
        db.close()
        try:
            import pymerkle
        except ImportError:
            out.append(Result(f"property prove+verify (at {n:,} docs)", "pymerkle", 0, note="not installed"))
            return out
        tree = pymerkle.InmemoryTree()
        for d in docs:
            tree.append_entry(d["_id"].encode())
        size = tree.get_size()
        proot = tree.get_state(size) if not hasattr(tree, "get_root") else tree.get_root(size)
        idx = [random.Random(6).randrange(1, size + 1) for _ in range(k)]

        def pm() -> None:
            for i in idx:
                proof = tree.prove_inclusion(i, size)
                pymerkle.verify_inclusion(tree.get_leaf(i), proot, proof)

        rate_pm = best_rate(k, pm)
        out.append(Result(f"property prove+verify (at {n:,} docs)", "pymerkle inclusion", rate_pm))
        out.append(Result(f"document prove+verify (at {n:,} docs)", "pymerkle inclusion", rate_pm))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return out
