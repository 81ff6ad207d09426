"""Proofs: immudoc's property, document and consistency proofs beside pymerkle; tree building;
the full audit beside SQLite's ``PRAGMA integrity_check``.

pymerkle (an RFC 6962 in-memory tree) holds as many leaves as the immudoc ledger has entries
(capped: proof cost grows with log2 of it, so the cap changes little), and the whole-document
peer is one pymerkle inclusion proof, as a store keeping each document as one blob would need.
Consistency proofs are timed on a kvcore ledger of many single-entry transactions (a tmpfs
directory when there is one: fsync is not what is measured) beside a pymerkle tree of as many
leaves.
"""

from __future__ import annotations

import os
import random
import tempfile
import time
import warnings
from typing import Any

from benchmarks import docsys
from benchmarks.common import Result, compare, once

PROP = "property prove+verify"
DOC = "document prove+verify"
CONS = "consistency prove+verify"
BUILD = "Merkle tree build (append leaves)"
AUDIT = "full audit (every hash, every doc)"
PROP_SIZE = "property proof size (JSON)"
DOC_SIZE = "document proof size (JSON)"
PYMERKLE = "pymerkle inclusion"
PYMERKLE_TREE = "pymerkle"
POINTER = "/dosage/mg"


def _pymerkle() -> Any:
    try:
        import pymerkle
    except ImportError:
        return None
    warnings.filterwarnings("ignore", category=DeprecationWarning, module="pymerkle")
    return pymerkle


def proof_rows(cfg: Any, n: int, peer: tuple[Any, list[int], str] | None = None) -> list[Result]:
    """immudoc property and document prove+verify and proof sizes at n documents, beside
    ``peer`` = (pymerkle prove+verify of a list of leaf indices, indices) when given.
    Memoized per size: the scaling suite reuses what the proofs suite measured."""
    import docstore

    fx = cfg.fixtures.docs(n)
    if "proofs" in fx.memo:
        out = fx.memo["proofs"]
        if peer and not any(r.system == PYMERKLE for r in out):  # measured without the peer
            r = compare(cfg.settings, {PYMERKLE: peer[0]}, peer[1])[PYMERKLE]
            out += [Result(w, PYMERKLE, r, "ops/s", peer[2], n, "proofs") for w in (PROP, DOC)]
        return out
    system = fx.open()[docsys.IMMUDOC]
    coll = system.coll
    state = system.db.state()
    items = list(zip(fx.ids, peer[1])) if peer else [(i, 0) for i in fx.ids]

    def prop(c: list[tuple[str, int]]) -> None:
        for i, _ in c:
            docstore.verify(coll.prove(i, POINTER), state)

    def whole(c: list[tuple[str, int]]) -> None:
        for i, _ in c:
            docstore.verify(coll.prove(i), state)

    fns: dict[str, Any] = {docsys.IMMUDOC: prop}
    if peer:
        fns[PYMERKLE] = lambda c: peer[0]([j for _, j in c])
    r_prop = compare(cfg.settings, fns, items)
    fns[docsys.IMMUDOC] = whole
    r_doc = compare(cfg.settings, fns, items)
    sizes = [coll.prove(i, POINTER).size for i in fx.ids[:200]]
    doc_sizes = [coll.prove(i).size for i in fx.ids[:200]]
    out = [
        Result(PROP, docsys.IMMUDOC, r_prop[docsys.IMMUDOC], "ops/s", POINTER, n, "proofs"),
        Result(DOC, docsys.IMMUDOC, r_doc[docsys.IMMUDOC], "ops/s", "all 16 properties", n, "proofs"),
        Result(PROP_SIZE, docsys.IMMUDOC, max(sizes), "bytes", f"max of {len(sizes)}; mean {sum(sizes) / len(sizes):,.0f}", n, "proofs"),
        Result(DOC_SIZE, docsys.IMMUDOC, max(doc_sizes), "bytes", f"max of {len(doc_sizes)}", n, "proofs"),
    ]
    if peer:
        out.insert(1, Result(PROP, PYMERKLE, r_prop[PYMERKLE], "ops/s", peer[2], n, "proofs"))
        out.insert(3, Result(DOC, PYMERKLE, r_doc[PYMERKLE], "ops/s", "one leaf per doc, as a blob store", n, "proofs"))
    fx.memo["proofs"] = out
    return out


def _leaves(count: int) -> list[bytes]:
    rnd = random.Random(17)
    return [rnd.randbytes(64) for _ in range(count)]


def tree_and_inclusion(cfg: Any, n: int) -> list[Result]:
    """Tree building, then property/document prove+verify beside pymerkle inclusion."""
    from kvcore.hashing import leaf_hash
    from kvcore.tree import MerkleTree

    pymerkle = _pymerkle()
    fx = cfg.fixtures.docs(n)
    led = fx.open()[docsys.IMMUDOC].db.ledger
    entries = sum(led.header(t).n_entries for t in range(1, led.tx_id + 1))
    count = min(entries, cfg.merkle_leaves_cap)
    leaves = _leaves(count)
    note = f"{count:,} leaves" + (f" (ledger: {entries:,} entries)" if count < entries else "")
    if pymerkle is None:
        return proof_rows(cfg, n) + [Result(PROP, PYMERKLE, 0.0, "ops/s", "pymerkle not installed", n, "proofs")]
    kt, pt = MerkleTree(), pymerkle.InmemoryTree()
    spent = {"immudoc kvcore": 0.0, PYMERKLE_TREE: 0.0}
    step = 16_384
    for j, start in enumerate(range(0, count, step)):
        chunk = leaves[start : start + step]

        def k_add(chunk: list[bytes] = chunk) -> None:
            for d in chunk:
                kt.append(leaf_hash(d))

        def p_add(chunk: list[bytes] = chunk) -> None:
            for d in chunk:
                pt.append_entry(d)

        order = [("immudoc kvcore", k_add), (PYMERKLE_TREE, p_add)]
        for name, fn in order if j % 2 == 0 else order[::-1]:
            spent[name] += once(fn)
    built = [Result(BUILD, name, count / s, "leaves/s", note, n, "proofs") for name, s in spent.items()]
    assert kt.root() == pt.get_root(), "kvcore and pymerkle disagree on the RFC 9162/6962 root"
    del leaves
    size, root = pt.get_size(), pt.get_root()
    rnd = random.Random(6)
    idx = [rnd.randrange(1, size + 1) for _ in fx.ids]

    def pm(c: list[int]) -> None:
        for i in c:
            pymerkle.verify_inclusion(pt.get_leaf(i), root, pt.prove_inclusion(i, size))

    return proof_rows(cfg, n, (pm, idx, note)) + built


def consistency(cfg: Any) -> list[Result]:
    import kvcore

    pymerkle = _pymerkle()
    t = cfg.consistency_txs
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else cfg.root
    d = tempfile.mkdtemp(prefix="immudoc-bench-cons-", dir=base)
    try:
        led = kvcore.Ledger.open(os.path.join(d, "ledger"))
        leaves = _leaves(t)
        for i, v in enumerate(leaves):
            led.set(b"k%d" % (i % 64), v)
        new = led.state()
        rnd = random.Random(8)
        olds = [rnd.randrange(1, t) for _ in range(2000)]
        states = {o: led.state(o) for o in set(olds)}

        def imm(c: list[int]) -> None:
            for o in c:
                kvcore.verify_consistency(states[o], new, led.prove_consistency(o))

        fns: dict[str, Any] = {"immudoc kvcore": imm}
        if pymerkle is not None:
            pt = pymerkle.InmemoryTree()
            for v in leaves:
                pt.append_entry(v)
            proots = {o: pt.get_root(o) for o in states}
            proot = pt.get_root()

            def pm(c: list[int]) -> None:
                for o in c:
                    pymerkle.verify_consistency(proots[o], proot, pt.prove_consistency(o, t))

            fns["pymerkle"] = pm
        rates = compare(cfg.settings, fns, olds)
        size = max(len(led.prove_consistency(o).path) for o in olds[:200]) * 32
        led.close()
    finally:
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    note = f"ledger of {t:,} transactions"
    out = [Result(CONS, k, v, "ops/s", note if k != "pymerkle" else f"{t:,} leaves; not RFC 9162 form", None, "proofs") for k, v in rates.items()]
    out.append(Result("consistency proof size (hashes)", "immudoc kvcore", size, "bytes", note, None, "proofs"))
    return out


def audit(cfg: Any, n: int) -> list[Result]:
    fx = cfg.fixtures.docs(n)
    systems = fx.open()
    db = systems[docsys.IMMUDOC].db
    reports: list[Any] = []
    t_imm = once(lambda: reports.append(db.audit()))
    assert reports[0].ok, reports[0].problems
    con = systems[docsys.SQLITE].con
    t0 = time.perf_counter()
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    t_sql = time.perf_counter() - t0
    return [
        Result(AUDIT, docsys.IMMUDOC, n / t_imm, "docs/s", f"{reports[0].entries:,} entries rehashed", n, "proofs"),
        Result(AUDIT, docsys.SQLITE, n / t_sql, "docs/s", "PRAGMA integrity_check (no hashes)", n, "proofs"),
    ]


SIGNED = "verify cost of a signed state"


def signed_states(cfg: Any, n: int) -> list[Result]:
    """What a signed checkpoint costs a verifier: one Ed25519 checkpoint check alone, beside a
    property proof verified against its own (trusted) state and one relative to a newer state
    (its signed checkpoint and a consistency proof from the trusted state checked too). The
    verifier's memos (of checked transactions and notes) are cleared before every call, so each
    row is the full cost of one verification."""
    import docstore
    from docstore.proofs import checkpoint as ckpt
    from docstore.proofs import note
    from docstore.proofs.note import Verifier
    from kvcore import verify as kv_verify

    fx = cfg.fixtures.docs(n)
    system = fx.open()[docsys.IMMUDOC]
    coll, db = system.coll, system.db
    now = db.state()
    older = db.ledger.state(max(1, now.tx_id // 2))
    keys = [Verifier.parse(db.verifier_key())]
    ids = fx.ids[: min(len(fx.ids), 2000)]
    same = [coll.prove(i, POINTER, state=now).to_json() for i in ids]
    newer = [coll.prove(i, POINTER, state=now, known_state=older).to_json() for i in ids]
    notes = [db.checkpoint(db.ledger.state(t)) for t in range(max(1, now.tx_id - 99), now.tx_id + 1)]

    def fresh() -> None:
        note._OPENED.clear()
        kv_verify._TX_CHECKED.clear()

    def v_same(c: list[int]) -> None:
        for j in c:
            fresh()
            docstore.verify(same[j], now)

    def v_newer(c: list[int]) -> None:
        for j in c:
            fresh()
            docstore.verify(newer[j], older, keys)

    def v_note(c: list[int]) -> None:
        for j in c:
            fresh()
            ckpt.open_checkpoint(notes[j % len(notes)], keys)

    names = {
        "property proof, trusted state": v_same,
        "property proof, newer signed state": v_newer,
        "signed checkpoint alone (Ed25519)": v_note,
    }
    rates = compare(cfg.settings, names, list(range(len(ids))))
    size_same = max(len(t) for t in same[:200])
    size_newer = max(len(t) for t in newer[:200])
    notes_txt = {
        "property proof, trusted state": f"from JSON; max {size_same:,} bytes",
        "property proof, newer signed state": f"+ checkpoint and consistency from tx {older.tx_id}; max {size_newer:,} bytes",
        "signed checkpoint alone (Ed25519)": "C2SP note, one signature",
    }
    return [Result(SIGNED, k, v, "verifications/s", notes_txt[k], n, "proofs") for k, v in rates.items()]


def run(cfg: Any) -> list[Result]:
    n = cfg.headline
    return tree_and_inclusion(cfg, n) + signed_states(cfg, n) + consistency(cfg) + audit(cfg, cfg.audit_size)
