"""An attacker against proofs of the current state (bundle version 3: latest, absent, find).

The attacker knows what a real one knows: the verifier's trusted state, genuine proofs (of
now and of earlier states), consistency proofs (public: any server hands them out), and the
network path (it can replace any bundle). As a *lying server* it also holds the database, so
it can build genuine state-map proofs of any key range it likes (``lying_find``). Every
attack must end in a VerificationError.

One thing ``docstore.verify`` cannot do by itself: know which question the caller asked. It
returns the proven answer to the question *the bundle states* (its collection, id, pointer,
query), as it does for version-1/2 bundles (a genuine proof of another document verifies
too). So a reader compares the bundle's question with its own; ``client_verify`` models that
reader, and the attacks that rewrite the question (an edited filter, limit or op) are caught
there, and only there: see test_question_rewrites_need_the_reader_to_compare_the_question.

Most attacks verify against a plain trusted state with no key, so their bundles carry the
state's transaction header (``with_header=True``, :class:`Headed`); the compact form, whose
signed checkpoint names the state map's root, is attacked in its own section (pinned key, or
the trusted checkpoint itself).

Sections: the world (a collection with a scalar and a multikey index, ~200 documents,
updates and deletes, a map of several levels); lying servers, read by read; field-by-field
edits of every proof kind (exhaustive on small bundles, hypothesis on a large one).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections import Counter
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import docstore
from docstore import VerificationError
from docstore.proofs.provestate import document_entries
from docstore.proofs.statebundle import parse
from docstore.statemap import encoding
from docstore.statemap import hashing as mh
from docstore.statemap.prove import prove_range

COLL = "pats"
SITES = [f"s{k}" for k in range(5)]


def _tags(i: int) -> Any:
    """The multikey field: an array in some documents, a scalar in others, missing in some."""
    if i % 4 == 0:
        return [f"t{i % 7}", f"t{(i * 3 + 4) % 7}"]  # e.g. ["t0", "t4"], ["t1", "t0"], ...
    if i % 4 == 1:
        return f"t{i % 7}"
    if i % 4 == 2:
        return []
    return None  # missing


def _doc(i: int) -> dict:
    d: dict[str, Any] = {"_id": f"p{i:03d}", "site": SITES[i % 5], "score": i, "info": {"age": 20 + i % 50}}
    t = _tags(i)
    if t is not None:
        d["tags"] = t
    return d


# ------------------------------------------------------------ map proofs, field by field
# On the wire a state-map proof is one base64 string (docstore.statemap.encoding). These
# attacks edit its fields one by one, so the bundles here hold each map proof *expanded*: its
# nested [level, m, first, path, items] lists, bytes as base64 strings; ``pack`` writes them
# back as the wire form before anything is verified (an edit the wire form cannot express,
# such as a 33-byte hash in a 32-byte slot, raises Unencodable and is not an attack).
class Unencodable(Exception):
    pass


def _node_json(n: list) -> list:
    return [n[0], n[1], n[2], [b64(h) for h in n[3]],
            [[b64(k), _node_json(v) if isinstance(v, list) else b64(v)] for k, v in n[4]]]


def _unb64(x: Any) -> bytes:
    if not isinstance(x, str):
        raise Unencodable("not a base64 string")
    try:
        return base64.b64decode(x, validate=True)
    except (binascii.Error, ValueError):
        raise Unencodable("not base64") from None


def _node_bytes(n: Any) -> list:
    if not isinstance(n, list) or len(n) != 5 or not isinstance(n[3], list) or not isinstance(n[4], list):
        raise Unencodable("not a node")
    items = []
    for it in n[4]:
        if not isinstance(it, list) or len(it) != 2:
            raise Unencodable("not an item")
        items.append([_unb64(it[0]), _node_bytes(it[1]) if isinstance(it[1], list) else _unb64(it[1])])
    return [n[0], n[1], n[2], [_unb64(h) for h in n[3]], items]


def _map_fields(d: dict, f) -> dict:
    """``d`` with ``f`` applied to each state-map proof it holds (where the shape allows)."""
    out = dict(d)
    for name in ("map", "single"):
        if name in out and out[name] is not None:
            out[name] = f(out[name])
    if isinstance(out.get("ranges"), list):
        out["ranges"] = [r[:2] + [f(r[2])] if isinstance(r, list) and len(r) == 3 else r for r in out["ranges"]]
    dfn = out.get("definition")
    if isinstance(dfn, list) and len(dfn) == 2:
        out["definition"] = [dfn[0], f(dfn[1])]
    return out


def expand(d: dict) -> dict:
    """A bundle dict with its map proofs expanded (idempotent)."""
    def one(v: Any) -> Any:
        return _node_json(encoding.decode(base64.b64decode(v))) if isinstance(v, str) else v
    return _map_fields(d, one)


def pack(d: Any) -> Any:
    """The wire form of a bundle dict (its expanded map proofs encoded; idempotent)."""
    if not isinstance(d, dict):
        return d

    def one(v: Any) -> Any:
        if not isinstance(v, list):
            return v
        try:
            return b64(encoding.encode(_node_bytes(v)))
        except encoding.EncodingError as e:
            raise Unencodable(str(e)) from None
    return _map_fields(d, one)


def verify(bundle: Any, *args: Any, **kwargs: Any) -> Any:
    """docstore.verify of a bundle (its wire form)."""
    return docstore.verify(pack(bundle), *args, **kwargs)


class Headed:
    """The collection, every proof of the current state asked with its header."""

    PROVERS = frozenset({"prove_latest", "prove_absent", "prove_find", "prove_count", "prove_distinct"})

    def __init__(self, coll: Any) -> None:
        self.raw = coll

    def __getattr__(self, name: str) -> Any:
        f = getattr(self.raw, name)
        if name not in self.PROVERS:
            return f

        def prove(*args: Any, **kwargs: Any) -> Any:
            return Expanding(f(*args, with_header=True, **kwargs))
        return prove


class Expanding:
    """A proof whose ``to_dict()`` holds its map proofs expanded."""

    def __init__(self, proof: Any) -> None:
        self.proof = proof

    def to_dict(self) -> dict:
        return expand(self.proof.to_dict())

    def __getattr__(self, name: str) -> Any:
        return getattr(self.proof, name)


@pytest.fixture(scope="module")
def world(module_place):
    """Two states: ``s0`` after 200 inserts (the genuine *old* proofs are made there), ``s1``
    after updates, deletes, a replace and new inserts (the current state)."""
    db = module_place.open()
    c = Headed(db.create_collection(COLL, indexes=["site", "score", "tags"]))
    db.create_collection("aux1")  # more collections: the list of them is proven too
    db.create_collection("aux2", indexes=["x"])
    for lo in range(0, 200, 50):
        c.insert_many([_doc(i) for i in range(lo, lo + 50)])
    s0 = db.state()
    old = {
        "latest_p007": c.prove_latest("p007").to_dict(),  # p007 is updated later
        "latest_p013": c.prove_latest("p013").to_dict(),  # p013 is deleted later
        "latest_p007_site": c.prove_latest("p007", "/site").to_dict(),
        "absent_new1": c.prove_absent("new-1").to_dict(),  # new-1 is inserted later
        "find_s3": c.prove_find({"site": "s3"}).to_dict(),  # holds p013 (deleted later)
        "count_s3": c.prove_count({"site": "s3"}).to_dict(),
        "distinct_s3": c.prove_distinct("tags", {"site": "s3"}).to_dict(),
    }
    old_compact = c.raw.prove_latest("p007").to_dict()
    c.update("p007", {"$set": {"site": "s4", "score": 1007, "tags": ["t9"]}})
    for i in (13, 23, 33, 58, 120):  # site s3: 13, 23, 33, 58, 83...; 120 is s0
        c.delete(f"p{i:03d}")
    c.replace("p040", {"_id": "p040", "site": "s3", "score": 40, "tags": ["t1", "t5"]})
    c.insert_many([{"_id": "new-1", "site": "s3", "score": 500}, {"_id": "new-3", "site": "s1", "score": 501}])
    s1 = db.state()
    yield {"db": db, "c": c, "s0": s0, "s1": s1, "old": old, "old_compact": old_compact, "key": db.verifier_key()}
    db.close()


# ----------------------------------------------------------------------------- helpers
def b64(b: bytes) -> str:
    return base64.b64encode(b).decode()


def question_of(bundle: Any) -> str:
    """The question a bundle answers (what a reader compares with what it asked)."""
    p = parse(pack(bundle) if isinstance(bundle, dict) else orjson.loads(bundle))
    q = None if p.query is None else p.query.to_dict()
    return json.dumps([p.kind, p.collection, p.id, p.pointer, q], sort_keys=True)


def client_verify(bundle: Any, trusted, asked: str, keys=None) -> Any:
    """A careful reader: verify, then check that the bundle answers the question it asked."""
    result = verify(bundle, trusted, verifier_keys=keys)
    if question_of(bundle) != asked:
        raise VerificationError("the bundle answers another question than the one asked")
    return result


def caught(bundle: Any, trusted, asked: str | None = None, keys=None) -> str:
    """Assert the attack is refused; returns the message (``asked``: by a careful reader)."""
    with pytest.raises(VerificationError) as e:
        if asked is None:
            verify(bundle, trusted, verifier_keys=keys)
        else:
            client_verify(bundle, trusted, asked, keys)
    return str(e.value)


def copy(d: dict) -> dict:
    return orjson.loads(orjson.dumps(d))


def with_consistency(bundle: dict, db, old, new) -> dict:
    """Splice a genuine consistency proof from ``old`` to ``new`` into ``bundle`` (public
    material: the server hands these out, and genuine newer bundles carry them)."""
    cp = db.prove_consistency(old, new)
    out = copy(bundle)
    out["consistency"] = {"state": new.to_dict(), "old_tx_id": cp.old_tx_id, "new_tx_id": cp.new_tx_id,
                          "path": [b64(h) for h in cp.path]}
    return out


def lying_find(db, base: dict, ranges: list[tuple[bytes, bytes | None]], index: str | None, single_prefix: bytes | None = None) -> dict:
    """A lying server's find bundle: ``base``'s query, state and definition, but the key
    ranges, index and single-valued claim of its choice, each with a genuine state-map proof of
    the current state and the documents its entries lead to (so every hash checks out)."""
    eng = db._engine
    out = expand(copy(base))
    docs: list[dict] = []
    seen: set[tuple[int, int]] = set()
    rs = []
    with eng.store.read() as txn:
        smap = eng.store.smap
        for lo, hi in ranges:
            rs.append([b64(lo), None if hi is None else b64(hi), _node_json(prove_range(smap, txn, lo, hi))])
            for _k, v in smap.items(txn, lo, hi):
                at = mh.parse_location(v)[:2]
                if at not in seen:
                    seen.add(at)
                    docs.append(document_entries(eng, *at)[1].to_dict())
        single = None
        if single_prefix is not None:
            single = _node_json(prove_range(smap, txn, single_prefix, mh.successor(single_prefix)))
    out.update(ranges=rs, documents=docs, index=index, single=single)
    return out


def ids(result: list[dict]) -> list[str]:
    return [d["_id"] for d in result]


def leaf_items(node: list) -> list[tuple[list, int]]:
    """(level-0 node, item position) of every revealed leaf item of a map proof."""
    level, _m, _first, _path, items = node
    if level == 0:
        return [(node, j) for j in range(len(items))]
    out = []
    for _sep, child in items:
        if isinstance(child, list):
            out += leaf_items(child)
    return out


def map_depth(node: list) -> int:
    return node[0]


# ============================================================== the world is realistic
def test_the_world_has_several_levels_and_genuine_proofs_verify(world):
    c, s1, key = world["c"], world["s1"], world["key"]
    p = c.prove_latest("p100")
    assert map_depth(p.to_dict()["map"]) >= 2  # the map has at least three levels
    assert verify(p.to_json(), s1) == c.get("p100")
    assert verify(c.prove_latest("p007", "/site").to_json(), s1) == "s4"
    assert verify(c.prove_absent("p013").to_json(), s1) is None
    assert verify(c.prove_absent("never").to_json(), s1) is None
    for f in ({"site": "s3"}, {"tags": "t1"}, {"tags": {"$in": ["t0", "t4"]}}, {"score": {"$gte": 150, "$lt": 170}},
              {"info.age": {"$gt": 60}}, {"tags": {"$gt": "t2", "$lt": "t4"}}):
        got = verify(c.prove_find(f).to_json(), s1)
        assert sorted(ids(got)) == sorted(ids(c.find(f)))
        assert verify(c.prove_count(f).to_json(), s1) == c.count(f)
    assert sorted(verify(c.prove_distinct("tags", {"site": "s3"}).to_json(), s1)) == sorted(c.distinct("tags", {"site": "s3"}))
    # with known_state: a newer state, signed and linked
    p = c.prove_find({"site": "s3"}, known_state=world["s0"])
    assert sorted(ids(verify(p.to_json(), world["s0"], verifier_keys=[key]))) == sorted(ids(c.find({"site": "s3"})))


# ====================================================== 1. lying servers, read by read
# --- find omits a match
def test_find_omits_a_carried_document(world):
    c, s1 = world["c"], world["s1"]
    d = c.prove_find({"site": "s3"}).to_dict()
    for j in (0, len(d["documents"]) // 2, len(d["documents"]) - 1):
        e = copy(d)
        del e["documents"][j]
        assert "no document the proof carries" in caught(e, s1)


def test_find_drops_a_leaf_item_from_a_range_proof(world):
    c, s1 = world["c"], world["s1"]
    d = c.prove_find({"site": "s3"}).to_dict()
    lo, hi = (base64.b64decode(x) for x in d["ranges"][0][:2])

    def inside(bundle: dict) -> list[tuple[list, int]]:
        return [(n, j) for n, j in leaf_items(bundle["ranges"][0][2]) if lo <= base64.b64decode(n[4][j][0]) < hi]

    n = len(inside(d))
    assert n > 10
    for k in range(n):
        e = copy(d)
        node, j = inside(e)[k]
        digest = base64.b64decode(node[4][j][1])[12:]
        del node[4][j]
        caught(e, s1)
        # the server also drops the document the item led to (a consistent lie): still caught
        e["documents"] = [x for x in e["documents"] if _run_root(x) != digest]
        assert len(e["documents"]) == len(d["documents"]) - 1
        caught(e, s1)


def _run_root(entries: dict) -> bytes:
    from docstore.proofs.statebundle import _doc
    from docstore.proofs.verifystate import _document

    return _document(_doc(entries), COLL)[1]


def test_find_shrinks_a_range_end_without_a_limit(world):
    db, c, s1 = world["db"], world["c"], world["s1"]
    d = c.prove_find({"site": "s3"}).to_dict()
    lo, hi = (base64.b64decode(x) for x in d["ranges"][0][:2])
    keys = [k for k, _v in docstore_items(db, lo, hi)]
    cut = keys[len(keys) // 2]  # a genuine, complete proof of a shorter range: half the matches
    e = lying_find(db, d, [(lo, cut)], "site", mh.multikey_prefix(COLL, "site"))
    assert "only a limit allows" in caught(e, s1)
    # with a limit, stopping is allowed only once skip + limit matches are carried
    g = c.prove_find({"site": "s3"}, skip=3, limit=10).to_dict()
    assert len(verify(g, s1)) == 10
    cut = keys[11]  # 11 entries: fewer than skip + limit matches
    e = lying_find(db, g, [(lo, cut)], "site", mh.multikey_prefix(COLL, "site"))
    assert "before the limit is reached" in caught(e, s1)
    # and a sorted query may never stop early
    g = c.prove_find({"site": "s3"}, sort=[("score", -1)], limit=2).to_dict()
    e = lying_find(db, g, [(lo, keys[5])], "site", mh.multikey_prefix(COLL, "site"))
    assert "only a limit allows" in caught(e, s1)


def docstore_items(db, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
    eng = db._engine
    with eng.store.read() as txn:
        return list(eng.store.smap.items(txn, lo, hi))


def test_find_drops_a_range_of_an_in(world):
    db, c, s1 = world["db"], world["c"], world["s1"]
    f = {"site": {"$in": ["s1", "s3", "s4"]}}
    d = c.prove_find(f).to_dict()
    assert len(d["ranges"]) == 3
    for j in range(3):
        e = copy(d)
        del e["ranges"][j]
        caught(e, s1)
    # the documents of the dropped range dropped too (a consistent lie): still caught
    planned = [(base64.b64decode(a), base64.b64decode(b)) for a, b, _ in d["ranges"]]
    for keep in ([planned[0], planned[1]], [planned[0], planned[2]], [planned[1], planned[2]]):
        caught(lying_find(db, d, keep, "site", mh.multikey_prefix(COLL, "site")), s1)


def test_find_claims_another_index(world):
    db, c, s1 = world["db"], world["c"], world["s1"]
    f = {"site": "s3", "score": {"$gte": 100}}  # planned on site (equality first)
    d = c.prove_find(f).to_dict()
    assert d["index"] == "site"
    # complete, genuine ranges of the score index, but only from 150: misses s3 documents
    lo, hi = mh.index_key_range(COLL, "score", *_score_bounds(150))
    e = lying_find(db, d, [(lo, hi)], "score", mh.multikey_prefix(COLL, "score"))
    assert "answered by 'site'" in caught(e, s1)
    # the index field swapped, the ranges kept
    for other in ("score", "tags", None, "info.age"):
        e = copy(d)
        e["index"] = other
        caught(e, s1)
    # a listing (no index) of a part of the collection
    p = mh.document_prefix(COLL)
    caught(lying_find(db, d, [(p, p + b"p1")], None), s1)
    # a listing claimed for an indexed filter, even a complete one
    caught(lying_find(db, d, [(p, mh.successor(p))], None), s1)


def _score_bounds(low: int) -> tuple[bytes, bytes | None]:
    from docstore.collections.keyenc import index_range
    from docstore.collections.query import extract_bounds

    (r,) = index_range(extract_bounds({"score": {"$gte": low}}, multikey=False)["score"])
    return r


def test_find_forges_single_on_a_multikey_field(world):
    """``{"tags": {"$gt": "t2", "$lt": "t4"}}`` matches ["t1", "t5"] (each bound met by another
    element): on a multikey field only one bound narrows the range. A server claiming the
    field is single-valued could prove the tight range [t2, t4) and omit that document."""
    from docstore.collections.keyenc import index_range
    from docstore.collections.query import extract_bounds

    db, c, s1 = world["db"], world["c"], world["s1"]
    f = {"tags": {"$gt": "t2", "$lt": "t4"}}
    d = c.prove_find(f).to_dict()
    truth = sorted(ids(c.find(f)))
    assert "p040" in truth and d["single"] is None  # ["t1", "t5"] matches
    tight = [mh.index_key_range(COLL, "tags", s, t) for s, t in index_range(extract_bounds(f, multikey=False)["tags"])]
    mprefix = mh.multikey_prefix(COLL, "tags")
    # the tight ranges with a genuine (non-empty) range proof of the tags marks
    assert "does not hold" in caught(lying_find(db, d, tight, "tags", mprefix), s1)
    # ... with the genuine, empty, mark range of another field (site), moved over
    e = lying_find(db, d, tight, "tags", mh.multikey_prefix(COLL, "site"))
    caught(e, s1)
    # ... with no single claim at all
    caught(lying_find(db, d, tight, "tags"), s1)
    # ... with the tags marks' proof edited to hide the marks (drop every revealed leaf)
    e = lying_find(db, d, tight, "tags", mprefix)
    for node, _j in leaf_items(e["single"]):
        node[4][:] = node[4][:1]
    caught(e, s1)


# --- find adds a deleted document / serves an old result
def test_find_adds_a_deleted_document(world):
    db, c, s0, s1, old = world["db"], world["c"], world["s0"], world["s1"], world["old"]
    d = c.prove_find({"site": "s3"}).to_dict()
    ghost = next(x for x in old["find_s3"]["documents"] if "p013" in base64.b64decode(x["header"]).decode())
    e = copy(d)
    e["documents"].append(ghost)  # the deleted revision's genuine entries, from an older bundle
    assert "no proven entry" in caught(e, s1)
    # ... with the old range proof too (it holds p013's index entry): not the state's root
    e["ranges"] = copy(old["find_s3"])["ranges"]
    caught(e, s1)
    # the whole genuine older bundle, against the newer trusted state
    assert "consistency proof" in caught(old["find_s3"], s1)
    assert "older than the trusted" in caught(with_consistency(old["find_s3"], db, s0, s1), s1)
    for k in ("count_s3", "distinct_s3"):
        caught(old[k], s1)
        assert "older than the trusted" in caught(with_consistency(old[k], db, s0, s1), s1)
    # ... even with the newer state's signed checkpoint pasted in (it names another state)
    e = with_consistency(old["find_s3"], db, s0, s1)
    e["checkpoint"] = db.checkpoint(s1)
    caught(e, s1, keys=[world["key"]])


# --- the bug this suite found (fixed in docstore/proofs/verifystate.py, _not_older)
def test_regression_an_older_state_proof_with_a_spliced_consistency_proof_is_refused(world):
    """A genuine proof of an OLDER state plus a genuine consistency proof from that state to the
    verifier's (newer) trusted state used to be accepted: ``_link`` accepts an older state
    when it is linked (right for inclusion proofs, which stay true), and verify_state_proof
    then checked the old state's map. So a lying server replayed "p007 is at revision 1",
    "new-1 does not exist" and "site s3 is [... p013 ...]" after p007 was updated, new-1
    inserted and p013 deleted. Now any state proof older than the trusted state is refused."""
    db, s0, s1, old, key = world["db"], world["s0"], world["s1"], world["old"], world["key"]
    for name, bundle in old.items():
        assert verify(bundle, s0) is not False  # each was genuine at s0
        spliced = with_consistency(bundle, db, s0, s1)
        for keys in (None, [key]):
            assert "older than the trusted" in caught(spliced, s1, keys=keys), name
    # honest use is unchanged: a proof of the trusted state, and of a newer (signed) one
    c = world["c"]
    assert verify(c.prove_latest("p007").to_dict(), s1)["score"] == 1007
    assert verify(c.prove_latest("p007", known_state=s0).to_dict(), s0, verifier_keys=[key])["score"] == 1007
    assert verify(c.prove_absent("p013", known_state=s0).to_dict(), s0, verifier_keys=[key]) is None


# --- stale revisions
def test_latest_serves_a_stale_revision(world):
    db, c, s0, s1, old, key = world["db"], world["c"], world["s0"], world["s1"], world["old"], world["key"]
    stale = old["latest_p007"]
    assert verify(stale, s0)["site"] == "s2"  # genuine then
    assert "consistency proof" in caught(stale, s1)  # presented after the update
    assert "older than the trusted" in caught(with_consistency(stale, db, s0, s1), s1)
    assert "older than the trusted" in caught(with_consistency(stale, db, s0, s1), s1, keys=[key])
    prop = old["latest_p007_site"]
    assert "older than the trusted" in caught(with_consistency(prop, db, s0, s1), s1)
    # a deleted document's last revision, proven latest then
    assert "older than the trusted" in caught(with_consistency(old["latest_p013"], db, s0, s1), s1)
    # the new state's header and path pasted over the old bundle: the map is not its root
    fresh = c.prove_latest("p007").to_dict()
    e = copy(stale)
    e.update(checkpoint=fresh["checkpoint"], head=fresh["head"], head_path=fresh["head_path"])
    caught(e, s1)
    # the old revision's entries spliced into the fresh bundle
    e = copy(fresh)
    e["documents"] = copy(stale)["documents"]
    assert "freshness check failed" in caught(e, s1)
    e = c.prove_latest("p007", "/site").to_dict()
    e["documents"] = copy(prop)["documents"]
    assert "freshness check failed" in caught(e, s1)
    # the fresh bundle with the old map proof (it leads to the old root)
    e = copy(fresh)
    e["map"] = copy(stale)["map"]
    caught(e, s1)


def test_compact_bundles_need_an_authenticated_map_root(world):
    """A compact bundle (no header: its checkpoint's state-map line names the map root) is
    accepted only when that checkpoint is authenticated: signed by a pinned key, or the very
    checkpoint the verifier trusts."""
    from docstore.proofs import checkpoint as ckpt
    from docstore.proofs.note import Signer

    db, c, s0, s1, key = world["db"], world["c"].raw, world["s0"], world["s1"], world["key"]
    g = c.prove_latest("p040").to_dict()
    assert "head" not in g and "state" not in g and "state-map " in g["checkpoint"]
    want = c.get("p040")
    assert verify(g, s1, verifier_keys=[key]) == want
    assert verify(g, db.checkpoint(s1)) == want  # the trusted checkpoint itself
    assert verify(g, db.checkpoint(s1), verifier_keys=[key]) == want
    assert "no pinned key authenticates it" in caught(g, s1)  # a bare state, no key
    assert "no pinned key authenticates it" in caught(c.prove_absent("nope").to_dict(), s1)
    # the checkpoint stripped: nothing says which state, or which map root
    e = copy(g)
    del e["checkpoint"]
    assert "neither a checkpoint nor" in caught(e, s1, keys=[key])
    # an attacker's key signs a checkpoint of the trusted state naming the root of a map of its
    # own making (here: the old one, whose proofs it holds genuinely): refused, whatever it holds
    stale = c.prove_latest("p007", known_state=s0).to_dict()
    old_root = ckpt.read_unverified(db.checkpoint(s0)).map_root
    mallory = Signer.generate(ckpt.read_unverified(g["checkpoint"]).origin)
    forged_note = ckpt.sign(mallory.name, s1, [mallory], old_root)
    for trusted, keys in ((s1, [key]), (s1, None), (s0, [key])):
        e = copy(stale)
        e["checkpoint"] = forged_note
        e.pop("consistency", None)
        caught(e, trusted, keys=keys)
    # a genuine checkpoint of another state over this state's map proof
    e = copy(g)
    e["checkpoint"] = db.checkpoint(s0)
    caught(e, s1, keys=[key])
    caught(e, s0, keys=[key])
    # the trusted checkpoint is of the older state: the newer one needs the pinned key
    n = c.prove_latest("p007", known_state=s0).to_dict()
    assert verify(n, db.checkpoint(s0), verifier_keys=[key])["site"] == "s4"
    assert "signed by a key you pin" in caught(n, db.checkpoint(s0))
    # a header carried, and a checkpoint (well-formed, of the same state) naming another map root
    h = world["c"].prove_latest("p040").to_dict()
    assert verify(h, s1) == want
    e = copy(h)
    e["checkpoint"] = forged_note
    assert "another state map root" in caught(e, s1)
    # an old compact bundle is still an old state's answer
    assert "older than the trusted" in caught(with_consistency(stale_compact(world), db, s0, s1), s1, keys=[key])


def stale_compact(world) -> dict:
    return world["old_compact"]


def test_a_newer_state_is_not_trusted_without_a_pinned_signature(world):
    db, c, s0, key = world["db"], world["c"], world["s0"], world["key"]
    p = c.prove_latest("p007", known_state=s0).to_dict()
    assert verify(p, s0, verifier_keys=[key])["site"] == "s4"
    caught(p, s0)  # no pinned key
    e = copy(p)
    del e["checkpoint"]
    caught(e, s0, keys=[key])
    e = copy(p)
    del e["consistency"]
    caught(e, s0, keys=[key])
    e = copy(p)
    e["checkpoint"] = db.checkpoint(s0)  # a genuine signed checkpoint, of another state
    caught(e, s0, keys=[key])


# --- "not found" for a live document
def test_absent_for_a_live_document(world):
    db, c, s0, s1 = world["db"], world["c"], world["s0"], world["s1"]
    before = world["old"]["absent_new1"]
    assert verify(before, s0) is None  # genuine before the insert
    assert "consistency proof" in caught(before, s1)
    assert "older than the trusted" in caught(with_consistency(before, db, s0, s1), s1)
    # an absence proof of a neighbouring id, renamed
    for neighbour in ("new-0", "new-2", "new-10", "new-1 ", "new-", "p0070", "new-1\u00e9"):
        e = c.prove_absent(neighbour).to_dict()
        assert verify(e, s1) is None
        e["id"] = "new-1"
        caught(e, s1)
    for live in ("new-1", "p007", "p040", "p199"):
        e = c.prove_absent("never-" + live).to_dict()
        e["id"] = live
        caught(e, s1)
        # a latest proof turned into an absence proof (a key proof, not a complete range)
        e = c.prove_latest(live).to_dict()
        del e["documents"], e["pointer"]
        e["kind"] = "absent"
        caught(e, s1)


def test_absent_range_edits(world):
    c, s1 = world["c"], world["s1"]
    g = c.prove_absent("new-2").to_dict()  # between new-1 and new-3: fences are live keys
    n_leaf = len(leaf_items(g["map"]))
    for k in range(n_leaf):
        e = copy(g)
        node, j = leaf_items(e["map"])[k]
        del node[4][j]  # drop a fence
        caught(e, s1)
    # narrowing what is revealed to nothing at level 0
    e = copy(g)
    for node, _j in leaf_items(e["map"]):
        node[4].clear()
    caught(e, s1)


# --- count and distinct
def test_count_and_distinct_drop_documents(world):
    c, s1 = world["c"], world["s1"]
    for p in (c.prove_count({"site": "s3"}), c.prove_distinct("tags", {"site": "s3"}),
              c.prove_count({"info.age": {"$lt": 30}}), c.prove_distinct("site", {"tags": {"$in": ["t0", "t6"]}})):
        d = p.to_dict()
        for j in (0, len(d["documents"]) - 1):
            e = copy(d)
            del e["documents"][j]
            caught(e, s1)
        e = copy(d)
        e["documents"] = []
        caught(e, s1)


def test_question_rewrites_need_the_reader_to_compare_the_question(world):
    """Editing the question (op, filter, skip, limit, field) either breaks the proof (the
    ranges no longer are the filter's) or yields the *correct answer to the edited question*:
    docstore.verify returns it, as it would for any genuine proof of another question. A
    reader that compares the bundle's question with its own refuses every one of them."""
    c, s1 = world["c"], world["s1"]
    d = c.prove_count({"site": "s3", "score": {"$lt": 150}}).to_dict()
    asked = question_of(d)
    n = client_verify(d, s1, asked)
    rewrites = []
    for change in (
        lambda q: q.update(op="find"),
        lambda q: q.update(op="distinct", field="site"),
        lambda q: q["filter"].update(score={"$lt": 60}),  # not the planned index: the ranges stay valid
        lambda q: q["filter"].update(site="s2"),  # the planned index: the ranges no longer fit
        lambda q: q.update(skip=5),
        lambda q: q.update(limit=1),
    ):
        e = copy(d)
        change(e["query"])
        rewrites.append(e)
    accepted_by_verify = 0
    for e in rewrites:
        caught(e, s1, asked)  # the careful reader
        try:
            r = verify(e, s1)
        except VerificationError:
            continue
        accepted_by_verify += 1
        # when verify accepts, it is the true answer to the question the bundle states
        q = e["query"]
        if q["op"] == "count":
            assert r == c.count(q["filter"])
        elif q["op"] == "find":
            assert sorted(ids(r)) == sorted(ids(c.find(q["filter"], skip=q["skip"], limit=q["limit"])))
    assert accepted_by_verify >= 3 and n == c.count({"site": "s3", "score": {"$lt": 150}})
    # the same for find: a lower limit, a skip, another op, another non-index condition
    d = c.prove_find({"site": "s1"}, limit=8).to_dict()
    asked = question_of(d)
    for change in (lambda q: q.update(limit=3), lambda q: q.update(skip=2), lambda q: q.update(op="count"),
                   lambda q: q["filter"].update(score={"$gt": 1000}), lambda q: q.update(limit=None)):
        e = copy(d)
        change(e["query"])
        caught(e, s1, asked)
    # a genuine proof of another document / property: the reader compares the id and pointer
    asked = question_of(c.prove_latest("p100").to_dict())
    caught(c.prove_latest("p101").to_dict(), s1, asked)
    asked = question_of(c.prove_latest("p100", "/site").to_dict())
    caught(c.prove_latest("p100", "/score").to_dict(), s1, asked)
    caught(c.prove_latest("p101", "/site").to_dict(), s1, asked)


# --- latest proof of one property
def test_latest_property_swaps(world):
    c, s1 = world["c"], world["s1"]
    g = c.prove_latest("p100", "/info/age").to_dict()
    assert verify(g, s1) == 20 + 100 % 50
    other = c.prove_latest("p100", "/score").to_dict()
    twin = c.prove_latest("p150", "/info/age").to_dict()  # same pointer, another document
    attacks = []
    e = copy(g)
    e["documents"][0]["properties"][0][1] = "21"  # another value, same salt
    attacks.append(e)
    e = copy(g)
    e["documents"][0]["properties"][0][1] = other["documents"][0]["properties"][0][1]
    attacks.append(e)
    for delta in (-1, 1, 2):  # another ordinal
        e = copy(g)
        e["documents"][0]["ordinal"] += delta
        attacks.append(e)
    e = copy(g)  # the path of another property of the same revision
    e["documents"][0]["path"] = other["documents"][0]["path"]
    attacks.append(e)
    e = copy(g)  # another property's entries, the asked pointer kept
    e["documents"] = other["documents"]
    attacks.append(e)
    e = copy(other)  # another property's proof, renamed to the asked pointer
    e["pointer"] = "/info/age"
    e["documents"][0]["properties"][0][0] = "/info/age"
    attacks.append(e)
    e = copy(g)  # the same pointer in another document, spliced
    e["documents"] = twin["documents"]
    attacks.append(e)
    e = copy(g)  # the pointer of the parent object (an object header, not a value)
    e["pointer"] = "/info"
    e["documents"][0]["properties"][0][0] = "/info"
    attacks.append(e)
    e = copy(g)  # a property proof dressed as a whole-document proof
    e["pointer"] = None
    attacks.append(e)
    asked = question_of(g)
    for e in attacks:
        caught(e, s1, asked)
        # all but the pure renames are caught by verify itself
    for e in attacks[:-1]:
        caught(e, s1)


# ===================================== 2. field-by-field edits of every proof kind
HEXISH = frozenset("0123456789abcdef")


def _is_b64(s: str) -> bool:
    try:
        raw = base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        return False
    return len(raw) > 0 and b64(raw) == s


def edits_of(value: Any) -> list[tuple[str, Any]]:
    """Edits of one JSON value: (name, new value); a name starting with ``del``/``add``/
    ``swap`` are structural and handled by the caller."""
    out: list[tuple[str, Any]] = []
    if isinstance(value, bool):
        out.append(("flip", not value))
    elif isinstance(value, int):
        out.append(("+1", value + 1))
        if value > 0:
            out.append(("-1", value - 1))
        out.append(("str", str(value)))
    elif isinstance(value, str):
        if len(value) == 64 and set(value) <= HEXISH:  # a hex hash (state root, header roots)
            out.append(("hexflip", value[:-1] + ("0" if value[-1] != "0" else "1")))
        elif _is_b64(value):  # base64 bytes: flip a bit of the first and of the last byte
            raw = bytearray(base64.b64decode(value))
            a, b = bytearray(raw), bytearray(raw)
            a[0] ^= 1
            b[-1] ^= 0x80
            out += [("b64first", b64(bytes(a))), ("b64last", b64(bytes(b)))]
            out.append(("b64longer", b64(bytes(raw) + b"\x00")))
        else:
            out.append(("append", value + "x"))
            if value:
                out.append(("bump", chr(ord(value[0]) + 1) + value[1:]))
    elif value is None:
        out += [("none->1", 1), ("none->str", "AAAA")]
    elif isinstance(value, float):
        out.append(("+1", value + 1))
    return out


def all_edits(d: Any, path: tuple = ()) -> list[tuple[tuple, str, Any]]:
    """Every (path, edit name, argument) of the bundle, recursively. Structural edits: remove a
    dict key, add an unknown key, drop a list element (first, middle, last), duplicate the
    last element (or add a hash to an empty list), swap the first two elements."""
    out: list[tuple[tuple, str, Any]] = []
    if isinstance(d, dict):
        for k, v in d.items():
            out.append((path + (k,), "del", None))
            out += all_edits(v, path + (k,))
        out.append((path + ("zz_unknown",), "add", 1))
    elif isinstance(d, list):
        n = len(d)
        for j in sorted({0, n // 2, n - 1} if n else set()):
            out.append((path + (j,), "del", None))
        out.append((path, "dup", None))
        if n >= 2 and d[0] != d[1]:
            out.append((path, "swap", None))
        for j, v in enumerate(d):
            out += all_edits(v, path + (j,))
    for name, new in edits_of(d):
        out.append((path, name, new))
    return out


def apply_edit(d: dict, path: tuple, name: str, arg: Any) -> dict:
    e = copy(d)
    if name in ("dup", "swap"):
        target = e
        for p in path:
            target = target[p]
        if name == "dup":
            target.append(copy({"x": target[-1]})["x"] if target else b64(b"\x00" * 32))
        else:
            target[0], target[1] = target[1], target[0]
        return e
    parent = e
    for p in path[:-1]:
        parent = parent[p]
    last = path[-1] if path else None
    if not path:  # the whole bundle replaced by a scalar edit: not applicable
        return e
    if name == "del":
        del parent[last]
    elif name == "add":
        parent[last] = arg
    else:
        parent[last] = arg
    return e


def _pattern(path: tuple) -> tuple:
    return tuple("*" if isinstance(p, int) else p for p in path)


def harmless_reason(kind: str, path: tuple, name: str, same_state: bool, checkpoint_used: bool = False) -> str | None:
    """Why an accepted edit does no harm (the caller also checks the result is identical)."""
    pat = _pattern(path)
    if pat and pat[0] == "checkpoint" and same_state and not checkpoint_used:
        # the proof is of the trusted state itself: the checkpoint is not needed; it is only
        # checked to name the proof's state, which any parseable edit of it still does
        return "unused checkpoint"
    if pat == ("pointer",) and name == "del" and kind == "latest-doc":
        return "pointer absent reads as null: the same whole-document proof"
    if pat == ("single",) and name in ("del",):
        # single only narrows the planned ranges; without it the loose ranges are planned, and
        # the proof passes only if its ranges are exactly those (then it is just as complete)
        return "single dropped: only loosens the plan"
    if pat[:1] == ("documents",) and name == "swap" and len(pat) == 1:
        # the carried documents are looked up by run root; the result's order is the proven
        # ranges' order, so the order they are carried in means nothing
        return "carried documents reordered"
    if pat == ("definitions",) and name == "swap":
        # definitions are looked up by their leaf hash; the names come in the proven range's order
        return "carried definitions reordered"
    if len(path) == 3 and path[0] == "ranges" and path[2] == 1 and kind == "find-limit":
        # the end of the last range of a query stopped early (at its limit) moved inside the
        # gap up to the next fence: the same map proof proves the edited range complete too,
        # it still lies inside the planned range, and the verifier still sees skip + limit
        # matches in it, so the result (the first matches in index order) is the same
        return "early-stop end moved inside the fenced gap"
    if name == "add" and pat in (("state", "zz_unknown"), ("consistency", "state", "zz_unknown")):
        # kvcore.State.from_dict ignores unknown keys: the parsed state is identical
        return "unknown key in a state object"
    return None


def run_edits(
    bundle: dict, trusted, keys, kind: str, same_state: bool, sample: int | None = None, checkpoint_used: bool = False
) -> Counter:
    """Apply every edit; each must be refused by verify, refused by the reader's question
    check, or be provably harmless (then the result must be the genuine one)."""
    genuine = verify(bundle, trusted, verifier_keys=keys)
    asked = question_of(bundle)
    edits = all_edits(bundle)
    if sample is not None and len(edits) > sample:
        step = len(edits) / sample
        edits = [edits[int(i * step)] for i in range(sample)]
    tally: Counter = Counter()
    for path, name, arg in edits:
        if not path and name not in ("dup", "swap"):
            continue
        e = apply_edit(bundle, path, name, arg)
        if e == bundle:
            continue  # the edit did not change anything (e.g. a string that stays the same)
        tally["edits"] += 1
        try:
            r = verify(e, trusted, verifier_keys=keys)
        except Unencodable:
            tally["edits"] -= 1
            tally["not expressible on the wire"] += 1
            continue
        except VerificationError:
            tally["refused by verify"] += 1
            continue
        except Exception as x:  # pragma: no cover - a crash is a bug too
            pytest.fail(f"{kind}: edit {name} at {path} raised {type(x).__name__}: {x}")
        try:
            same_question = question_of(e) == asked
        except VerificationError:  # pragma: no cover
            same_question = False
        if not same_question:
            tally["refused by the question check"] += 1
            continue
        reason = harmless_reason(kind, path, name, same_state, checkpoint_used)
        assert reason is not None, f"{kind}: edit {name} at {path} was ACCEPTED: {str(r)[:200]}"
        assert r == genuine and type(r) is type(genuine), f"{kind}: harmless edit {name} at {path} changed the result"
        tally[f"harmless: {reason}"] += 1
    return tally


TALLIES: dict[str, Counter] = {}


def _bundles(world) -> dict[str, tuple[dict, Any, Any, bool]]:
    c, s0, s1, key = world["c"], world["s0"], world["s1"], world["key"]
    small_find = {"score": {"$gte": 180, "$lt": 186}}  # a scalar index: the single claim is used
    bundles = {
        "latest-doc": (c.prove_latest("p040").to_dict(), s1, None, True),
        "latest-prop": (c.prove_latest("p040", "/tags/1").to_dict(), s1, None, True),
        "absent": (c.prove_absent("new-2").to_dict(), s1, None, True),
        "find": (c.prove_find(small_find, sort=[("score", -1)], skip=1, limit=3).to_dict(), s1, None, True),
        "find-limit": (c.prove_find({"tags": {"$in": ["t2", "t5"]}}, limit=4).to_dict(), s1, None, True),
        "count": (c.prove_count({"tags": "t5", "score": {"$lt": 120}}).to_dict(), s1, None, True),
        "distinct": (c.prove_distinct("tags", {"score": {"$gte": 190}}).to_dict(), s1, None, True),
        # relative to a newer state, signed and linked to the verifier's older one
        "latest-doc (newer state)": (c.prove_latest("p007", known_state=s0).to_dict(), s0, [key], False),
        "absent (newer state)": (c.prove_absent("p013", known_state=s0).to_dict(), s0, [key], False),
        "find (newer state)": (c.prove_find({"score": {"$gte": 195}}, known_state=s0).to_dict(), s0, [key], False),
        "collections": (expand(world["db"].prove_collections(with_header=True).to_dict()), s1, None, True),
        # compact: the signed checkpoint names the map root (no header), the key pinned
        "latest-doc (compact)": (c.raw.prove_latest("p040").to_dict(), s1, [key], True),
        "absent (compact)": (c.raw.prove_absent("new-2").to_dict(), s1, [key], True),
        "find (compact)": (c.raw.prove_find({"tags": {"$in": ["t2", "t5"]}}, limit=4).to_dict(), s1, [key], True),
        "latest-doc (compact, newer state)": (c.raw.prove_latest("p007", known_state=s0).to_dict(), s0, [key], False),
        # compact, checked against the trusted checkpoint itself (no key: the user vouches for it)
        "latest-prop (compact, trusted checkpoint)": (
            c.raw.prove_latest("p040", "/tags/1").to_dict(), world["db"].checkpoint(s1), None, True
        ),
    }
    return {name: (expand(b), *rest) for name, (b, *rest) in bundles.items()}


@pytest.mark.parametrize("name", ["latest-doc", "latest-prop", "absent", "find", "find-limit", "count", "distinct",
                                  "latest-doc (newer state)", "absent (newer state)", "find (newer state)", "collections",
                                  "latest-doc (compact)", "absent (compact)", "find (compact)",
                                  "latest-doc (compact, newer state)", "latest-prop (compact, trusted checkpoint)"])
def test_every_field_edit_is_refused(world, name):
    bundle, trusted, keys, same = _bundles(world)[name]
    kind = name.split(" ")[0]
    if name == "find (compact)":
        kind = "find-limit"
    tally = run_edits(bundle, trusted, keys, kind, same, checkpoint_used="compact" in name and keys is not None)
    TALLIES[name] = tally
    print(f"\n{name}: {dict(tally)}")
    assert tally["edits"] > 100


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_edits_of_a_large_find(world, data):
    """A large result (an index with ~40 documents): a random field, a random edit."""
    cache = world.setdefault("_large", {})
    if not cache:
        c = world["c"]
        b = c.prove_find({"site": "s3"}).to_dict()
        cache.update(bundle=b, edits=all_edits(b), genuine=verify(b, world["s1"]), asked=question_of(b))
    bundle, edits = cache["bundle"], cache["edits"]
    path, name, arg = data.draw(st.sampled_from(edits))
    if not path and name not in ("dup", "swap"):
        return
    e = apply_edit(bundle, path, name, arg)
    if e == bundle:
        return
    try:
        r = verify(e, world["s1"])
    except (VerificationError, Unencodable):
        return
    if question_of(e) != cache["asked"]:
        return
    assert harmless_reason("find", path, name, True) is not None, f"edit {name} at {path} was ACCEPTED"
    assert r == cache["genuine"]
