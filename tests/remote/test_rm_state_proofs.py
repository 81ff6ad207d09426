"""Proofs of the current state (bundle version 3) over gRPC: the ProveState RPC, the remote
``prove_latest`` / ``prove_absent`` / ``prove_find`` / ``prove_count`` / ``prove_distinct``, and
the verifying remote reads of the current state that use them (``get``, ``find``, ``count``,
``distinct``), with a lying server caught at each read.

Three parts: the same calls on the embedded database, a remote one and a verifying remote one
(the shared ``db`` fixture); a real server process behind the lying proxy of test_rm_lying (one
server, the data built once, embedded, before it starts, with the embedded bundles to compare
with); and the server's bounds (an in-process server, its limits lowered).
"""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

import docstore
import kvcore
from docstore import (
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidPointerError,
    ProofUnavailableError,
    QueryError,
    VerificationError,
)
from docstore.documents.records import Header
from docstore.proofs.note import Signer
from docstore.proofs.statebundle import StateProof, load_any
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb
from remote_testlib import ServerProcess
from test_rm_lying import (
    NEWER_BUNDLE_LIES,
    LyingProxy,
    bundle_lie,
    check_trust_file,
    edit,
    flip_b64,
    refused,
)

DB_KINDS = ("embedded", "remote", "remote-verifying")

DOCS = [
    {"_id": f"p{i}", "site": "Oslo" if i % 2 else "Bergen", "n": i, "v": 1, "tags": ["a"] if i < 4 else ["b", "c"]}
    for i in range(1, 9)
]
OSLO = ["p1", "p3", "p5", "p7"]
BERGEN_LIVE = ["p2", "p4", "p6"]  # p8 is deleted


def _fill(c: Any) -> None:
    """The collection of every part: p1..p8 inserted, p1 updated twice, p8 deleted."""
    c.insert_many(copy.deepcopy(DOCS))
    c.update("p1", {"$set": {"v": 2}})
    c.update("p1", {"$set": {"v": 3}})
    c.delete("p8")


def doc(i: int) -> dict:
    d = copy.deepcopy(DOCS[i - 1])
    if i == 1:
        d["v"] = 3
    return d


# (case, call on a collection (embedded or remote), what docstore.verify returns)
CASES: list[tuple[str, Callable[[Any], Any], Any]] = [
    ("latest", lambda c: c.prove_latest("p3"), doc(3)),
    ("latest-updated", lambda c: c.prove_latest("p1"), doc(1)),
    ("latest-property", lambda c: c.prove_latest("p1", "/v"), 3),
    ("latest-array-element", lambda c: c.prove_latest("p5", "/tags/1"), "c"),
    ("absent-deleted", lambda c: c.prove_absent("p8"), None),
    ("absent-never-written", lambda c: c.prove_absent("zz"), None),
    ("find-all", lambda c: c.prove_find(), [doc(i) for i in range(1, 8)]),
    ("find-indexed", lambda c: c.prove_find({"site": "Oslo"}), [doc(i) for i in (1, 3, 5, 7)]),
    ("find-indexed-sorted-paged", lambda c: c.prove_find({"site": "Oslo"}, {"n": -1}, 1, 2), [doc(5), doc(3)]),
    ("find-indexed-limit", lambda c: c.prove_find({"site": {"$in": ["Bergen"]}}, limit=2), [doc(2), doc(4)]),
    ("find-listing", lambda c: c.prove_find({"n": {"$gt": 2, "$lte": 6}}, [("n", -1)]), [doc(i) for i in (6, 5, 4, 3)]),
    ("find-none", lambda c: c.prove_find({"site": "Atlantis"}), []),
    ("count", lambda c: c.prove_count({"site": "Bergen"}), 3),
    ("count-all", lambda c: c.prove_count(), 7),
    ("distinct", lambda c: c.prove_distinct("site"), ["Oslo", "Bergen"]),
    ("distinct-array", lambda c: c.prove_distinct("tags", {"site": "Bergen"}), ["a", "b", "c"]),
]


# ============================================================== part 1: the same contract
@pytest.mark.parametrize("case, call, expected", CASES, ids=[c[0] for c in CASES])
def test_state_proofs_verify_everywhere(db, case, call, expected):
    c = db.create_collection("t", indexes=["site"])
    _fill(c)
    state, key = db.state(), db.verifier_key()
    bundle = call(c)
    assert isinstance(bundle, StateProof) and bundle.state == state
    assert bundle.checkpoint is not None and bundle.consistency is None
    result = docstore.verify(bundle, state, key)
    assert result == expected
    assert docstore.verify(load_any(bundle.to_json()), state, key) == expected  # the text round trip


def test_state_proofs_link_an_older_known_state(db):
    c = db.create_collection("t", indexes=["site"])
    c.insert({"_id": "a", "site": "Oslo"})
    old = db.state()
    _fill(c)
    now, key = db.state(), db.verifier_key()
    for bundle in (c.prove_latest("p3", known_state=old), c.prove_absent("p8", known_state=old),
                   c.prove_count({"site": "Oslo"}, known_state=old)):
        assert bundle.consistency is not None and bundle.consistency_state == old and bundle.state == now
        plain = bundle._replace(consistency=None, consistency_state=None)  # relative to ``now`` alone
        assert docstore.verify(bundle, old, key) == docstore.verify(plain, now, key)
    with pytest.raises(VerificationError, match="signed by a key you pin"):
        docstore.verify(c.prove_latest("p3", known_state=old), old)  # newer: a signature is needed
    found = docstore.verify(c.prove_find({"site": "Oslo"}, state=now), now, key)
    assert sorted(found, key=lambda d: d["_id"]) == [{"_id": "a", "site": "Oslo"}] + [doc(i) for i in (1, 3, 5, 7)]
    with pytest.raises(QueryError, match="proofs of the current state are made as of it"):
        c.prove_latest("p3", state=old)  # the map holds the current state only
    # a proof of an older state is not fresh: refused against a newer trusted state
    stale = c.prove_latest("p3")
    c.update("p3", {"$set": {"v": 9}})
    with pytest.raises(VerificationError, match="freshness check failed"):
        docstore.verify(stale._replace(consistency=db.prove_consistency(stale.state), consistency_state=db.state()), db.state(), key)


def test_state_proof_errors_are_the_embedded_ones(db):
    c = db.create_collection("t", indexes=["site"])
    _fill(c)
    for call, error, match in [
        (lambda: c.prove_latest("p8"), DocumentNotFoundError, "prove that with prove_absent"),
        (lambda: c.prove_latest("zz"), DocumentNotFoundError, "prove that with prove_absent"),
        (lambda: c.prove_absent("p3"), QueryError, "prove it with prove_latest"),
        (lambda: c.prove_latest("p3", "no-slash"), InvalidPointerError, None),
        (lambda: c.prove_latest("p3", "/missing"), docstore.NotFoundError, "no property"),
        (lambda: c.prove_latest("p5", "/tags"), QueryError, "container"),
        (lambda: c.prove_find({"$where": "1"}), QueryError, None),
        (lambda: c.prove_find(skip=-1), QueryError, None),
        (lambda: c.prove_find(sort={"n": 2}), QueryError, None),
        (lambda: c.prove_count({"n": {"$bogus": 1}}), QueryError, None),
        (lambda: c.prove_distinct("$x"), QueryError, None),
        (lambda: db["missing"].prove_latest("p1"), CollectionNotFoundError, None),
        (lambda: db["missing"].prove_find(), CollectionNotFoundError, None),
    ]:
        with pytest.raises(error, match=match):
            call()


def test_verifying_reads_of_the_current_state_are_proven(db):
    """On a verifying remote connection get, find, count and distinct of the current state are
    proven (each the embedded result); as of a transaction, count and distinct are refused."""
    c = db.create_collection("t", indexes=["site"])
    _fill(c)
    at = db.state().tx_id
    assert c.get("p1") == doc(1)
    with pytest.raises(DocumentNotFoundError):
        c.get("p8")
    with pytest.raises(DocumentNotFoundError):
        c.get("never")
    assert list(c.find({"site": "Oslo"}, {"n": 1}, {"n": -1}, 1, 2)) == [{"_id": "p5", "n": 5}, {"_id": "p3", "n": 3}]
    assert list(c.find({"n": {"$gte": 6}}, {"site": 0, "tags": 0, "v": 0})) == [{"_id": "p6", "n": 6}, {"_id": "p7", "n": 7}]
    assert c.find_one({"site": "Bergen"}, sort={"n": -1}) == doc(6)
    assert c.count() == 7 and c.count({"site": "Bergen"}) == 3
    assert c.distinct("site") == ["Oslo", "Bergen"] and c.distinct("tags", {"n": {"$lt": 3}}) == ["a"]
    assert c.count(verify=False) == 7 and c.distinct("site", verify=False) == ["Oslo", "Bergen"]
    if db.verifying:
        for read in (lambda: c.count(at_tx=at), lambda: c.distinct("site", at_tx=at)):
            with pytest.raises(ProofUnavailableError, match="verify=False"):
                read()
        assert c.count(at_tx=at, verify=False) == 7
    c.update("p3", {"$set": {"v": 5}})  # a newer state: proven, and (verifying) trusted from now on
    assert c.get("p3")["v"] == 5 and c.count({"v": 5}) == 1
    if db.verifying:
        assert db.trusted_state == db.state()


# ============================================================= part 2: a real server, a liar
class Abort(Exception):
    """Raised by a lie: the proxy answers with this library error (status and trailer)."""

    def __init__(self, exc: Exception) -> None:
        super().__init__(str(exc))
        self.exc = exc


class StateLyingProxy(LyingProxy):
    """The lying proxy of test_rm_lying, whose ProveState lies may also answer an error."""

    def ProveState(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        try:
            return LyingProxy.ProveState(self, request, context)  # type: ignore[attr-defined]
        except Abort as a:
            code, message, trailer = codec.encode_error(a.exc)
            context.set_trailing_metadata(trailer)
            context.abort(code, message)


@dataclass
class World:
    proxy: StateLyingProxy
    writer: Any  # unverified, straight to the real server: the test's view of the truth
    key: str
    origin: str
    stranger: Signer
    state: kvcore.State  # the state the data was built to (every client's first trusted state)
    checkpoint: str
    embedded: dict[str, dict]  # case -> the embedded bundle (as a dict)
    stale: dict[str, dict]  # genuine bundles of an older state: before p1's updates and p8's deletion
    early_cp: str  # the signed checkpoint of that state

    @property
    def up(self) -> Any:
        return self.proxy.up


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    db_dir = tmp_path_factory.mktemp("state-proofs") / "db"
    with docstore.open(db_dir) as db:
        key = db.verifier_key()
        trials = db.create_collection("trials", indexes=["site"])
        trials.insert_many(copy.deepcopy(DOCS))
        db.create_collection("other").insert_many([{"_id": f"p{i}", "site": "Oslo", "n": i} for i in (1, 2, 3)])
        db.create_collection("live").insert({"_id": "hot", "v": 0})
        stale = {
            "p1": trials.prove_latest("p1").to_dict(),  # revision 1, then the latest
            "p8": trials.prove_latest("p8").to_dict(),  # live, then
            "bergen": trials.prove_find({"site": "Bergen"}).to_dict(),  # p8 among them
            "count": trials.prove_count({"site": "Bergen"}).to_dict(),  # 4, then
        }
        early_cp = db.checkpoint(db.state())
        trials.update("p1", {"$set": {"v": 2}})
        trials.update("p1", {"$set": {"v": 3}})
        trials.delete("p8")
        state = db.state()
        embedded = {case: json.loads(call(trials).to_json()) for case, call, _ in CASES}
        checkpoint = db.checkpoint(state)
    origin = key.split("+")[0]
    with ServerProcess(db_dir) as server:
        proxy = StateLyingProxy(server.target)
        writer = docstore.connect(server.target, verify=False)
        try:
            assert writer.state() == state
            yield World(proxy, writer, key, origin, Signer.generate(origin), state, checkpoint, embedded, stale, early_cp)
        finally:
            writer.close()
            proxy.close()


@pytest.fixture(autouse=True)
def _honest_proxy(w):
    w.proxy.reset()
    yield
    w.proxy.reset()


@pytest.fixture
def client(w, tmp_path):
    """``connect(**kw) -> (db, state_file)``: a verifying client of the proxy, pinning the real
    key, trusting the built state's checkpoint."""
    opened = []

    def connect(name: str = "st.json", **kw: Any) -> tuple[Any, Any]:
        st = tmp_path / name
        kw.setdefault("trusted_state", w.checkpoint)
        db = docstore.connect(w.proxy.target, state_file=st, verifier_key=w.key, **kw)
        opened.append(db)
        return db, st

    yield connect
    for db in opened:
        db.close()


def bump(w: World) -> None:
    w.writer["live"].update("hot", {"$inc": {"v": 1}})


def doc_id(entries: dict) -> str:
    return Header.decode(base64.b64decode(entries["header"])).id


def up_state(w: World, coll: str, kind: str, doc_id: str = "", query: dict | None = None, **kw: Any) -> bytes:
    """A genuine ProveState answer of the real server."""
    req = pb.ProveStateRequest(collection=coll, kind=kind, id=doc_id, **kw)
    if query is not None:
        full = {"op": "find", "filter": {}, "sort": None, "skip": 0, "limit": None, "field": None, **query}
        req.query = codec.dumps(full)
    return w.up.ProveState(req, timeout=30).proof


def answer(raw: bytes | dict) -> pb.ProofResponse:
    return pb.ProofResponse(proof=raw if isinstance(raw, bytes) else json.dumps(raw).encode())


def tell(w: World, told: Callable[[World, Any, Any], Any]) -> None:
    """Install a ProveState lie (told alone, or to the server's answer)."""
    w.proxy.lie("ProveState", lambda req, r: told(w, req, r), forward=not getattr(told, "alone", False))


def test_remote_bundles_are_the_embedded_ones(w, client):
    """Each remote prove_* bundle is the embedded one, byte for byte (the same entries, salts,
    map proofs and signed checkpoint), and verifies to the same result."""
    db, _ = client()
    c = db["trials"]
    for case, call, expected in CASES:
        bundle = call(c)
        assert json.loads(bundle.to_json()) == w.embedded[case], case
        assert docstore.verify(bundle, w.state, w.key) == expected, case
    assert w.proxy.calls["ProveState"] == len(CASES)


def test_remote_bundles_link_the_callers_known_state(w, client):
    db, _ = client()
    bump(w)
    now = w.writer.state()
    b = db["trials"].prove_count({"site": "Oslo"}, known_state=w.state)
    assert b.state == now and b.consistency_state == w.state
    assert docstore.verify(b, w.state, w.key) == 4
    assert docstore.verify(db["trials"].prove_latest("p1", state=now), now, w.key) == doc(1)
    assert docstore.verify(db["trials"].prove_latest("p1", state=now, with_header=True), now) == doc(1)
    with pytest.raises(QueryError, match="proofs of the current state are made as of it"):
        db["trials"].prove_latest("p1", state=w.state)
    with pytest.raises(QueryError, match="kvcore.State"):
        db["trials"].prove_absent("p8", known_state="not a state")  # type: ignore[arg-type]


def test_verifying_reads_use_proofs_of_the_current_state(w, client):
    """A verifying connection's get, find, count and distinct of the current state ask ProveState
    only; reads as of a transaction still ask Get and Find (inclusion proofs)."""
    db, st = client()
    c = db["trials"]
    w.proxy.reset()
    assert c.get("p1") == doc(1)
    assert w.proxy.calls["ProveState"] == 1
    with pytest.raises(DocumentNotFoundError, match="its absence is proven"):
        c.get("p8")
    assert w.proxy.calls["ProveState"] == 3  # latest (not found), then absent
    assert [d["_id"] for d in c.find({"site": "Oslo"}, sort={"n": 1})] == OSLO
    assert list(c.find({"site": "Bergen"}, {"n": 1}, {"n": -1}, 1)) == [{"_id": "p4", "n": 4}, {"_id": "p2", "n": 2}]
    assert c.find_one({"site": "Oslo"}, sort={"n": -1}) == doc(7)
    assert c.count({"site": "Bergen"}) == 3 and c.distinct("site") == ["Oslo", "Bergen"]
    assert sum(w.proxy.calls[r] for r in ("Get", "Find", "Count", "Distinct")) == 0
    assert c.get("p1", at_tx=w.state.tx_id) == doc(1) and list(c.find({"site": "Oslo"}, at_tx=w.state.tx_id))
    assert w.proxy.calls["Get"] == w.proxy.calls["Find"] == 1
    bump(w)
    assert db["live"].get("hot") == w.writer["live"].get("hot")  # a newer state, signed: accepted and saved
    assert db.trusted_state == w.writer.state() == check_trust_file(w, st)


# ------------------------------------------------------------------------------ the lies
def _without(ids: set[str]) -> Callable[[dict], None]:
    def fn(d: dict) -> None:
        d["documents"] = [e for e in d["documents"] if doc_id(e) not in ids]

    return fn


def _edit_answer(fn: Callable[[dict], Any]) -> Callable[[World, Any, Any], Any]:
    return lambda w, req, r: answer(edit(r.proof, fn))


def _with_p8(w, req, r):  # the deleted document, its last live revision genuine
    p8 = next(e for e in w.stale["bergen"]["documents"] if doc_id(e) == "p8")
    return answer(edit(r.proof, lambda d: d["documents"].append(p8)))


def _claim_edited(d):
    for e in d["documents"]:
        for p in e["properties"]:
            if p[0] == "/n":
                p[1] = "99"


def _no_ranges(d):
    d["ranges"] = []


def _range_cut(d):
    lo, hi, node = d["ranges"][-1]
    d["ranges"][-1] = [lo, base64.b64encode(base64.b64decode(lo) + b"\x00").decode(), node]


def _narrower_query(w, req, r):  # a genuine proof of the matches but one
    q = json.loads(req.query)
    return answer(up_state(w, req.collection, "find", query={**q, "filter": {**q["filter"], "n": {"$ne": 3}}}))


def _narrower_relabelled(w, req, r):  # the same, labelled with the query asked: the verifier recomputes it
    raw = _narrower_query(w, req, r).proof
    return answer(edit(raw, lambda d: d.__setitem__("query", json.loads(req.query))))


def _other_collection(w, req, r):
    return answer(up_state(w, "other", "find", query=json.loads(req.query)))


def alone(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A lie told without asking the server first (its own answer to any request, even one the
    server would refuse)."""
    fn.alone = True  # type: ignore[attr-defined]
    return fn


def _stale(name: str) -> Callable[..., Any]:
    return alone(lambda w, req, r: answer(w.stale[name]))


def _latest_instead(w, req, r):
    return answer(up_state(w, "trials", "latest", "p3"))


def _v2_instead(w, req, r):
    return answer(w.up.Prove(pb.ProveRequest(collection="trials", id="p3"), timeout=30).proof)


def _not_json(w, req, r):
    return answer(r.proof[:-3])


FIND = {"filter": {"site": "Oslo"}, "sort": {"n": 1}}
READS: dict[str, Callable[[Any], Any]] = {
    "find": lambda db: list(db["trials"].find(**FIND)),
    "find-bergen": lambda db: list(db["trials"].find({"site": "Bergen"})),
    "find-one": lambda db: db["trials"].find_one(**FIND),
    "count": lambda db: db["trials"].count({"site": "Bergen"}),
    "distinct": lambda db: db["trials"].distinct("n", {"site": "Bergen"}),
}

QUERY_LIES = [
    pytest.param("find", _edit_answer(_without({"p3"})), "completeness check failed", id="find-omits-a-match"),
    pytest.param("find", _narrower_query, "another query than the one asked", id="find-answers-a-narrower-query"),
    pytest.param("find-bergen", _with_p8, "carries documents that no proven entry leads to", id="find-adds-a-deleted-document"),
    pytest.param("find-bergen", _stale("bergen"), r"before the trusted state \d+: it lost transactions", id="find-stale-result-with-a-deleted-document"),
    pytest.param("find", _edit_answer(_claim_edited), "completeness check failed", id="find-a-document-edited"),
    pytest.param("find", _edit_answer(_no_ranges), "holds no range of the query", id="find-no-range"),
    pytest.param("find", _edit_answer(_range_cut), "carries documents that no proven entry leads to", id="find-range-cut-short"),
    pytest.param("find", _other_collection, "not a query of trials", id="find-of-another-collection"),
    pytest.param("find", _latest_instead, "proved latest trials, not a query of trials", id="find-answered-with-a-latest-proof"),
    pytest.param("find", _v2_instead, "version 1 or 2", id="find-answered-with-an-inclusion-proof"),
    pytest.param("find", _not_json, "not JSON", id="find-bundle-cut-short"),
    pytest.param("find-one", _edit_answer(_without({"p1"})), "completeness check failed", id="find-one-omits-the-first"),
    pytest.param("count", _edit_answer(_without({"p4"})), "completeness check failed", id="count-one-left-out"),
    pytest.param("count", _with_p8, "carries documents that no proven entry leads to", id="count-adds-a-deleted-document"),
    pytest.param("count", _stale("count"), r"before the trusted state \d+: it lost transactions", id="count-stale"),
    pytest.param("count", _narrower_query, "another query than the one asked", id="count-of-another-filter"),
    pytest.param("count", _edit_answer(lambda d: d["query"].__setitem__("op", "find")), "another query", id="count-answered-as-a-find"),
    pytest.param("distinct", _edit_answer(lambda d: d["query"].__setitem__("field", "site")), "another query", id="distinct-of-another-field"),
    pytest.param("distinct", _edit_answer(_without({"p6"})), "completeness check failed", id="distinct-one-left-out"),
]


@pytest.mark.parametrize("read, told, match", QUERY_LIES)
def test_query_lies(w, client, read, told, match):
    db, st = client()
    honest = READS[read](db)
    tell(w, told)
    refused(w, db, st, lambda: READS[read](db), match)
    w.proxy.reset()
    assert READS[read](db) == honest


def test_a_narrower_proof_labelled_with_the_query_asked_yields_the_whole_result(w, client):
    """The verifier computes the result itself from every document in the proven ranges: a
    proof made for a narrower filter, relabelled, still gives the complete result."""
    db, _ = client()
    tell(w, _narrower_relabelled)
    assert [d["_id"] for d in db["trials"].find(**FIND)] == OSLO


def _p5_for_p3(w, req, r):
    return answer(up_state(w, req.collection, "latest", "p5"))


def _p5_renamed(w, req, r):
    return answer(edit(up_state(w, req.collection, "latest", "p5"), lambda d: d.__setitem__("id", req.id)))


def _property_instead(w, req, r):
    return answer(up_state(w, req.collection, "latest", req.id, pointer="/n"))


def _stale_relabelled(name: str) -> Callable[..., Any]:
    """A genuine older revision, moved into the current state (its state, head and checkpoint)."""

    @alone
    def told(w, req, r):
        current = json.loads(up_state(w, "trials", "latest", "p3"))
        stale = copy.deepcopy(w.stale[name])
        for k in ("checkpoint", "head", "head_path"):
            stale.pop(k, None)
            if k in current:
                stale[k] = current[k]
        return answer(stale)

    return told


def _not_found(w, req, r):
    if req.kind == "latest":
        raise Abort(DocumentNotFoundError(f"no live document {req.id!r} in {req.collection!r}"))
    return r


def _not_found_absent_of(other: str) -> Callable[..., Any]:
    @alone
    def told(w, req, r):
        if req.kind == "latest":
            raise Abort(DocumentNotFoundError(f"no live document {req.id!r}"))
        return answer(up_state(w, req.collection, "absent", other))

    return told


@alone
def _not_found_absent_renamed(w, req, r):
    if req.kind == "latest":
        raise Abort(DocumentNotFoundError(f"no live document {req.id!r}"))
    return answer(edit(up_state(w, req.collection, "absent", "p8"), lambda d: d.__setitem__("id", req.id)))


@alone
def _not_found_twice(w, req, r):
    raise Abort(DocumentNotFoundError(f"no live document {req.id!r}"))


GET_LIES = [
    pytest.param("p1", _stale("p1"), r"before the trusted state \d+: it lost transactions", id="stale-revision"),
    pytest.param("p1", _stale_relabelled("p1"), "state map proof", id="stale-revision-relabelled-current"),
    pytest.param("p8", _stale("p8"), r"before the trusted state \d+: it lost transactions", id="deleted-document-served-stale"),
    pytest.param("p8", _stale_relabelled("p8"), "state map proof", id="deleted-document-relabelled-current"),
    pytest.param("p3", _p5_for_p3, "proved latest trials/p5, not the latest document trials/p3", id="another-document"),
    pytest.param("p3", _p5_renamed, "state map proof", id="another-document-renamed"),
    pytest.param("p3", _property_instead, "not the latest document", id="a-property-instead"),
    pytest.param("p3", _edit_answer(_claim_edited), "freshness check failed", id="value-edited"),
    pytest.param("p3", _v2_instead, "version 1 or 2", id="an-inclusion-proof-instead"),
    pytest.param("p3", _not_found, "does not prove its absence .*QueryError: document 'p3' exists", id="not-found-for-a-live-document"),
    pytest.param("p3", _not_found_twice, "does not prove its absence .*DocumentNotFoundError", id="not-found-twice"),
    pytest.param("p3", _not_found_absent_of("p8"), "proved absent trials/p8, not the absence of trials/p3", id="not-found-with-the-absence-of-another"),
    pytest.param("p3", _not_found_absent_renamed, "state map proof", id="not-found-with-an-absence-relabelled"),
]


@pytest.mark.parametrize("doc_id_, told, match", GET_LIES)
def test_get_lies(w, client, doc_id_, told, match):
    db, st = client()
    c = db["trials"]
    expected = doc(int(doc_id_[1:])) if doc_id_ != "p8" else None
    if expected is None:
        with pytest.raises(DocumentNotFoundError):
            c.get(doc_id_)
    else:
        assert c.get(doc_id_) == expected
    tell(w, told)
    refused(w, db, st, lambda: c.get(doc_id_), match)


V3_NEWER = {
    "_no_checkpoint": ("neither a checkpoint nor its state's header", VerificationError),
    "_early_checkpoint": (r"before the trusted state \d+: it lost transactions", VerificationError),
    "_state_forged_keep_rest": (r"unknown fields \['state'\]", VerificationError),
}


@pytest.mark.parametrize("lie_, match, error", NEWER_BUNDLE_LIES)
@pytest.mark.parametrize("read", ["get", "find", "count"])
def test_newer_state_lies(w, client, lie_, match, error, read):
    """The state moved on since the client's trusted one: the proof of the current state is
    accepted only if signed by the pinned key and shown to extend the trusted state."""
    db, st = client()
    bump(w)
    do = {
        "get": lambda: db["live"].get("hot"),
        "find": lambda: list(db["live"].find({"v": {"$gte": 0}})),
        "count": lambda: db["live"].count(),
    }[read]
    # a version-3 bundle has no state field: its state is its checkpoint's
    match, error = V3_NEWER.get(lie_.__name__, (match, error))
    tell(w, bundle_lie(lie_))
    refused(w, db, st, do, match, error)
    w.proxy.reset()
    assert do() in (w.writer["live"].get("hot"), [w.writer["live"].get("hot")], 1)
    assert check_trust_file(w, st) == w.writer.state() == db.trusted_state


def test_raw_state_proofs_are_checked_by_verify(w, client):
    """The remote prove_* return the server's bundles unchecked (as prove does): docstore.verify
    against a trusted state catches a lie in them."""
    db, st = client()
    c = db["trials"]
    tell(w, lambda w, req, r: answer(edit(r.proof, _without({"p3"}))))
    bundle = c.prove_find({"site": "Oslo"}, known_state=w.state)
    assert isinstance(bundle, StateProof)
    with pytest.raises(VerificationError, match="completeness check failed"):
        docstore.verify(bundle, w.state, w.key)
    tell(w, lambda w, req, r: answer(edit(r.proof, lambda d: d.__setitem__("checkpoint", None) or d.pop("checkpoint"))))
    bump(w)
    with pytest.raises(VerificationError, match="neither a checkpoint nor"):
        docstore.verify(c.prove_latest("p3", known_state=w.state), w.state, w.key)
    with pytest.raises(VerificationError, match="carries no signed checkpoint"):
        docstore.verify(c.prove_latest("p3", known_state=w.state, with_header=True), w.state, w.key)
    tell(w, lambda w, req, r: answer(edit(r.proof, lambda d: d.__setitem__("head_path", [flip_b64(h) for h in d["head_path"]]))))
    with pytest.raises(VerificationError):
        docstore.verify(c.prove_absent("p8", with_header=True), w.writer.state(), w.key)
    with pytest.raises(VerificationError):
        docstore.verify(c.prove_absent("p8", with_header=True), w.writer.state())


# ===================================================================== part 3: the bounds
@pytest.fixture
def small_server(tmp_path):
    """An in-process server (its module-level limits can be lowered) with 40 documents."""
    from docstore.server.app import Server, ServerConfig

    served = docstore.open(tmp_path / "db")
    served.create_collection("t", indexes=["k"]).insert_many([{"_id": f"d{i:02d}", "k": i % 4, "pad": "x" * 50} for i in range(40)])
    server = Server(served, ServerConfig(port=0), err=io.StringIO())
    port = server.start()
    try:
        yield f"127.0.0.1:{port}", served
    finally:
        server.stop(0)
        served.close()


def test_a_proof_larger_than_a_reply_is_refused(small_server, monkeypatch):
    from docstore.server import service

    target, served = small_server
    monkeypatch.setattr(service, "MAX_BUNDLE_BYTES", 8000)
    with docstore.connect(target, trusted_state=served.state(), verifier_key=served.verifier_key()) as db:
        c = db["t"]
        with pytest.raises(QueryError, match="more than a reply may carry"):
            c.prove_find()
        with pytest.raises(QueryError, match="more than a reply may carry"):
            list(c.find())  # a verifying find: the same refusal, nothing unproven returned
        assert docstore.verify(c.prove_find({"k": 1}, limit=2), served.state(), served.verifier_key()) == [
            {"_id": "d01", "k": 1, "pad": "x" * 50}, {"_id": "d05", "k": 1, "pad": "x" * 50},
        ]
        assert c.count({"k": 1}) == 10


def test_a_proof_reading_too_many_documents_is_refused(small_server, monkeypatch):
    from docstore.proofs import provestate

    target, served = small_server
    monkeypatch.setattr(provestate, "MAX_PROVEN_DOCUMENTS", 10)
    with docstore.connect(target, trusted_state=served.state(), verifier_key=served.verifier_key()) as db:
        with pytest.raises(QueryError, match="would read more than 10 documents"):
            db["t"].count()
        assert db["t"].count({"k": 2}) == 10  # an indexed filter reads its 10 only
        assert db["t"].count(verify=False) == 40


def test_malformed_prove_state_requests_are_refused(small_server):
    target, _ = small_server
    channel = grpc.insecure_channel(target)
    stub = __import__("docstore.rpc.immudoc_pb2_grpc", fromlist=["DocstoreStub"]).DocstoreStub(channel)
    try:
        for req, match in [
            (pb.ProveStateRequest(collection="t", kind="everything"), "unknown proof kind"),
            (pb.ProveStateRequest(collection="t", kind="find", query=b'{"op": "sum"}'), "unknown query op"),
            (pb.ProveStateRequest(collection="t", kind="find", query=b'{"op": "find", "where": 1}'), "a JSON object of"),
            (pb.ProveStateRequest(collection="t", kind="find", query=b'[1]'), "a JSON object of"),
            (pb.ProveStateRequest(collection="t", kind="find", id="d01", query=b'{"op": "find"}'), "not an id"),
            (pb.ProveStateRequest(collection="t", kind="latest", id="d01", query=b'{"op": "find"}'), "not a query"),
            (pb.ProveStateRequest(collection="t", kind="absent", id="zz", pointer="/k"), "no pointer"),
            (pb.ProveStateRequest(collection="t", kind="find", query=b'{"op": "count", "limit": 3}'), "takes a filter only"),
            (pb.ProveStateRequest(collection="t", kind="find", query=b'{"op": "find", "field": "k"}'), "takes no field"),
        ]:
            with pytest.raises(grpc.RpcError) as info:
                stub.ProveState(req, timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert isinstance(codec.decode_error(info.value), QueryError)
            assert match in (info.value.details() or ""), (match, info.value.details())
    finally:
        channel.close()


def test_a_proof_waits_for_the_state_map_to_catch_up(small_server, monkeypatch):
    """While a commit is applied to the state map the ledger already holds it: a proof made then
    would be of the state before it, stale to a client that knows the newer state (from another
    read). The server makes it again once the map has caught up."""
    from docstore.collections.collection import Collection

    target, served = small_server
    real = Collection.prove_latest
    made: list[kvcore.State] = []

    def lagging(self: Any, *args: Any, **kw: Any) -> Any:
        proof = real(self, *args, **kw)
        made.append(proof.state)
        if len(made) == 1:  # as if made before the map reflected the last transaction
            return proof._replace(state=kvcore.State(proof.state.tx_id - 1, proof.state.root))
        return proof

    monkeypatch.setattr(Collection, "prove_latest", lagging)
    with docstore.connect(target, trusted_state=served.state(), verifier_key=served.verifier_key()) as db:
        assert db["t"].get("d01") == {"_id": "d01", "k": 1, "pad": "x" * 50}
    assert made == [served.state(), served.state()]
