"""A lying server: every read of the remote API, each lie caught or refused.

A proxy (an in-process gRPC server on 127.0.0.1, port 0) implements the Docstore service by
forwarding every call, through a stub, to a real immudoc server process on a real socket;
it can alter the answer of one chosen RPC with one chosen mutation (a unary response, or the
pages of a Find or History stream): an edited claim, a proof of something else, a forged,
unsigned or foreign-signed state, an altered consistency proof, revisions dropped, duplicated
or reordered, ... A verifying client connected to the proxy (pinning the real server's key,
which the test knows) must catch every lie with the VerificationError of the check it fails,
or refuse the read (ProofUnavailableError), and its trusted state, in memory and in its state
file, must never move to a lied state. Without a lie the proxy answers exactly what the
server does (the honest tests), so none of this passes vacuously.

One server and one proxy serve the whole module; the data is built once (embedded, before the
server starts). Tests that need a state newer than the client's trusted one write through a
direct connection ("bump") to the collection ``live`` only.

A verifying client reads the *current* state (get, find, count, distinct) through ProveState
(proofs of the current state, bundle version 3: their lies are in test_rm_state_proofs.py), and
reads as of a transaction (``at_tx=``, a transaction's snapshot) through Get and Find with
inclusion proofs (version 2): the Get and Find lies here are told to reads as of the current
transaction (``at_tx=now(w)``), which still take that path.
"""

from __future__ import annotations

import base64
import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

import docstore
import kvcore
from docstore import ProofUnavailableError, VerificationError
from docstore.documents.flatten import encode_value
from docstore.proofs import checkpoint as ckpt
from docstore.proofs.note import NoteError, Signer, Verifier
from docstore.proofs.trust import read_state_file, read_trust_file
from docstore.rpc import codec
from docstore.rpc import immudoc_pb2 as pb
from docstore.rpc import immudoc_pb2_grpc as pb_grpc
from remote_testlib import ServerProcess

# ====================================================================== the lying proxy
_UNARY = (
    "Info", "ListCollections", "CreateCollection", "DescribeCollection", "SetSchema", "CreateIndex",
    "Replace", "Update", "Delete", "Get", "Count", "Distinct", "Explain", "Prove", "ProveSchema",
    "ProveState", "State", "ProveConsistency", "Audit", "Log", "ProveTx", "TxAtTime", "Erase", "Erasures",
)
_CLIENT_STREAM = ("Insert", "Commit")
_SERVER_STREAM = ("Find", "History")
_OPTIONS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


class LyingProxy(pb_grpc.DocstoreServicer):
    """Forwards every Docstore call to ``upstream``; ``lie(rpc, fn)`` alters that RPC's answer.

    A unary lie is ``fn(request, response) -> response``; a stream lie (Find, History) is
    ``fn(request, pages) -> pages`` over the list of the server's pages; a lie installed with
    ``forward=False`` is not given the server's answer (None): it answers alone. Errors of the
    server are relayed as they are (status, message and the immudoc error trailer)."""

    def __init__(self, upstream: str) -> None:
        self._channel = grpc.insecure_channel(upstream, options=_OPTIONS)
        self.up = pb_grpc.DocstoreStub(self._channel)
        """A stub of the real server (lies fetch genuine material with it)."""
        self.lies: dict[str, Callable[[Any, Any], Any]] = {}
        self.alone: set[str] = set()  # lies that answer without asking the server
        self.calls: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=_OPTIONS)
        pb_grpc.add_DocstoreServicer_to_server(self, self._server)
        port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.target = f"127.0.0.1:{port}"

    def lie(self, rpc: str, fn: Callable[[Any, Any], Any], forward: bool = True) -> None:
        assert rpc in _UNARY + _SERVER_STREAM, rpc
        self.lies[rpc] = fn
        if not forward:
            self.alone.add(rpc)

    def reset(self) -> None:
        self.lies.clear()
        self.alone.clear()
        with self._lock:
            self.calls.clear()

    def close(self) -> None:
        self._server.stop(None)
        self._channel.close()

    def _count(self, name: str) -> None:
        with self._lock:
            self.calls[name] += 1

    @staticmethod
    def _relay(context: grpc.ServicerContext, call: Callable[[], Any]) -> Any:
        try:
            return call()
        except grpc.RpcError as e:
            context.set_trailing_metadata(tuple(e.trailing_metadata() or ()))
            context.abort(e.code(), e.details() or "")


def _unary(name: str) -> Callable[..., Any]:
    def handler(self: LyingProxy, request: Any, context: grpc.ServicerContext) -> Any:
        self._count(name)
        lie = self.lies.get(name)
        if lie is not None and name in self.alone:
            return lie(request, None)
        response = self._relay(context, lambda: getattr(self.up, name)(request, timeout=30))
        return response if lie is None else lie(request, response)

    handler.__name__ = name
    return handler


def _client_stream(name: str) -> Callable[..., Any]:
    def handler(self: LyingProxy, request_iterator: Any, context: grpc.ServicerContext) -> Any:
        self._count(name)
        return self._relay(context, lambda: getattr(self.up, name)(request_iterator, timeout=30))

    handler.__name__ = name
    return handler


def _server_stream(name: str) -> Callable[..., Any]:
    def handler(self: LyingProxy, request: Any, context: grpc.ServicerContext) -> Any:
        self._count(name)
        pages = self._relay(context, lambda: list(getattr(self.up, name)(request, timeout=30)))
        lie = self.lies.get(name)
        yield from (pages if lie is None else lie(request, pages))

    handler.__name__ = name
    return handler


for _name in _UNARY:
    setattr(LyingProxy, _name, _unary(_name))
for _name in _CLIENT_STREAM:
    setattr(LyingProxy, _name, _client_stream(_name))
for _name in _SERVER_STREAM:
    setattr(LyingProxy, _name, _server_stream(_name))


# ============================================================================ the world
@dataclass
class World:
    proxy: LyingProxy
    writer: Any  # unverified, straight to the real server: the test's view of the truth
    key: str  # the real server's verifier key (pinned by every client)
    origin: str
    stranger: Signer  # another Ed25519 key of the same name
    states: dict[int, kvcore.State]  # every state of the build, by transaction
    first_cp: str  # the genuine checkpoint of transaction 1
    early: kvcore.State  # transaction 2 (the trials inserted): each client's first trusted state
    early_cp: str
    p1_tx: dict[int, int]  # revision of trials/p1 -> its transaction

    @property
    def up(self) -> pb_grpc.DocstoreStub:
        return self.proxy.up


OSLO = ["p1", "p3", "p5", "p7"]  # trials matching {"site": "Oslo"}, in the order of {"n": 1}
QUERY = {"filter": {"site": "Oslo"}, "sort": {"n": 1}}


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    db_dir = tmp_path_factory.mktemp("lying") / "db"
    states: dict[int, kvcore.State] = {}
    p1_tx: dict[int, int] = {}
    with docstore.open(db_dir) as db:

        def mark() -> kvcore.State:
            s = db.state()
            states[s.tx_id] = s
            return s

        key = db.verifier_key()
        trials = db.create_collection("trials", indexes=["site"])
        first_cp = db.checkpoint(mark())
        trials.insert_many(
            [{"_id": f"p{i}", "site": "Oslo" if i % 2 else "Bergen", "n": i, "v": 1} for i in range(1, 9)]
        )
        early = mark()
        early_cp = db.checkpoint(early)
        p1_tx[1] = early.tx_id
        for v in (2, 3, 4):
            trials.update("p1", {"$set": {"v": v}}, reason=f"to v{v}", meta={"meaning": "correction"})
            p1_tx[v] = mark().tx_id
        other = db.create_collection("other")
        other.insert_many([{"_id": f"p{i}", "site": "Oslo", "n": i, "v": 1} for i in (1, 2, 3)])
        db.create_collection("defs", schema={"type": "object", "properties": {"a": {"type": "integer"}}}, indexes=["a"])
        db.create_collection("live").insert({"_id": "hot", "v": 0})
        mark()
    origin = key.split("+")[0]
    with ServerProcess(db_dir) as server:
        proxy = LyingProxy(server.target)
        writer = docstore.connect(server.target, verify=False)
        try:
            assert writer.verifier_key() == key and writer.state() == states[max(states)]
            yield World(proxy, writer, key, origin, Signer.generate(origin), states, first_cp, early, early_cp, p1_tx)
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
    key, trusting the early checkpoint (it advances to the server's state on connecting)."""
    opened = []

    def connect(name: str = "st.json", **kw: Any) -> tuple[Any, Any]:
        st = tmp_path / name
        kw.setdefault("trusted_state", w.early_cp)
        db = docstore.connect(w.proxy.target, state_file=st, verifier_key=w.key, **kw)
        opened.append(db)
        return db, st

    yield connect
    for db in opened:
        db.close()


# ============================================================================== helpers
def on_true_history(w: World, state: kvcore.State) -> None:
    """``state`` is one the real server had (asked straight from it: the test knows the truth)."""
    now = w.writer.state()
    kvcore.verify_consistency(state, now, w.writer.prove_consistency(state, now))


def check_trust_file(w: World, st: Any, expected: kvcore.State | None = None) -> kvcore.State:
    """The state file holds a genuine state (and a genuine checkpoint of it, and the pinned key)."""
    rec = read_trust_file(st)
    on_true_history(w, rec.state)
    if rec.checkpoint is not None:
        assert ckpt.open_checkpoint(rec.checkpoint, [Verifier.parse(w.key)]).state == rec.state
    assert rec.verifier_keys == (w.key,)
    if expected is not None:
        assert rec.state == expected
    return rec.state


def refused(
    w: World, db: Any, st: Any, call: Callable[[], Any], match: str | None, error: type = VerificationError,
    strict: bool = True,
) -> Any:
    """``call`` raises ``error`` (its message matching ``match``); the trusted state stays where
    it was, in memory and in the state file (``strict=False``: or moved to a genuine state, when
    the lie came after a genuinely signed state had been accepted)."""
    before = read_state_file(st)
    assert db.trusted_state == before
    with pytest.raises(error, match=match) as info:
        call()
    after = check_trust_file(w, st, before if strict else None)
    assert db.trusted_state == after and after.tx_id >= before.tx_id
    return info.value


def now(w: World) -> int:
    """The server's current transaction: a read as of it is proven by inclusion proofs (Get,
    Find), not by a proof of the current state (ProveState)."""
    return w.writer.state().tx_id


def bump(w: World) -> None:
    """One more transaction on the server: its state is now newer than any client's."""
    w.writer["live"].update("hot", {"$inc": {"v": 1}})


def flip(h: bytes) -> bytes:
    return bytes([h[0] ^ 0x01]) + h[1:]


def flip_b64(text: str) -> str:
    return base64.b64encode(flip(base64.b64decode(text))).decode()


def forged(tx_id: int) -> kvcore.State:
    return kvcore.State(tx_id, os.urandom(32))


def sdict(state: kvcore.State) -> dict[str, Any]:
    return state.to_dict()


def of_pb(msg: pb.LedgerState) -> kvcore.State:
    return kvcore.State(msg.tx_id, bytes(msg.root))


def bstate(d: dict) -> kvcore.State:
    """A bundle's state: its field (versions 1, 2), else its checkpoint's or its header's (3)."""
    if "state" in d:
        return kvcore.State.from_dict(d["state"])
    from docstore.proofs.statebundle import parse

    return parse(d).state


def altered_note(note: str) -> str:
    """The genuine note, its signature kept, its root line replaced."""
    lines = note.split("\n")
    lines[2] = base64.b64encode(os.urandom(32)).decode()
    return "\n".join(lines)


def stranger_cp(w: World, state: kvcore.State) -> str:
    return ckpt.sign(w.origin, state, [w.stranger])


def edit(raw: bytes, fn: Callable[[dict], Any]) -> bytes:
    d = json.loads(raw)
    fn(d)
    return json.dumps(d).encode()


def up_get(w: World, req: pb.GetRequest, clear: tuple[str, ...] = (), **changes: Any) -> pb.GetResponse:
    """The real server's answer to ``req`` with some fields changed."""
    r = pb.GetRequest()
    r.CopyFrom(req)
    for f in clear:
        r.ClearField(f)
    for k, v in changes.items():
        setattr(r, k, v)
    return w.up.Get(r, timeout=30)


def up_prove(w: World, coll: str, doc_id: str, state: Any = None, at_tx: int | None = None, pointer: str | None = None) -> bytes:
    """A genuine proof of ``coll/doc_id`` (as of ``at_tx``) relative to ``state``."""
    req = pb.ProveRequest(collection=coll, id=doc_id)
    if state is not None:
        req.state.CopyFrom(state if isinstance(state, pb.LedgerState) else codec.state_to_pb(state))
    if at_tx is not None:
        req.at_tx = at_tx
    if pointer is not None:
        req.pointer = pointer
    return w.up.Prove(req, timeout=30).proof


def all_proofs(pages: list) -> list[bytes]:
    return [p for page in pages for p in page.proofs]


def one_page(pages: list, proofs: list[bytes]) -> list:
    head = pages[0]
    del head.proofs[:]
    head.proofs.extend(proofs)
    return [head]


def two_pages(pages: list, proofs: list[bytes], cut: int, cls: type) -> list:
    head = pages[0]
    del head.proofs[:]
    head.proofs.extend(proofs[:cut])
    return [head, cls(proofs=proofs[cut:])]


def proofs_lie(fn: Callable[[World, Any, list[bytes], kvcore.State], list[bytes]]) -> Callable[..., list]:
    """A stream lie that rewrites the list of proofs (kept in one page)."""

    def lie(w: World, req: Any, pages: list) -> list:
        return one_page(pages, fn(w, req, all_proofs(pages), of_pb(pages[0].state)))

    return lie


def bundle_lie(fn: Callable[[World, dict], Any]) -> Callable[[World, Any, Any], Any]:
    """A Get/ProveSchema lie that edits the proof bundle."""

    def lie(w: World, req: Any, r: Any) -> Any:
        r.proof = edit(r.proof, lambda d: fn(w, d))
        return r

    return lie


def install(w: World, rpc: str, lie: Callable[..., Any]) -> None:
    w.proxy.lie(rpc, lambda req, r: lie(w, req, r))


# ============================================================================ honest proxy
def test_honest_proxy_answers_what_the_server_does(w, client):
    """Through the proxy, with no lie, every verified read returns exactly the server's data
    and the trusted state advances to the server's, signed (the suite is not vacuous)."""
    db, st = client()
    truth = w.writer
    assert db.trusted_state == truth.state() == check_trust_file(w, st)
    assert read_trust_file(st).checkpoint is not None
    c, t = db["trials"], truth["trials"]
    for i in range(1, 9):
        assert c.get(f"p{i}") == t.get(f"p{i}")
    assert c.get("p1", at_tx=w.p1_tx[2]) == t.get("p1", at_tx=w.p1_tx[2]) == {"_id": "p1", "site": "Oslo", "n": 1, "v": 2}
    assert list(c.find(**QUERY)) == list(t.find(**QUERY))
    assert [d["_id"] for d in c.find(**QUERY)] == OSLO
    assert list(c.find({"site": "Oslo"}, {"n": 1}, {"n": -1}, 1, 2, page_size=1)) == [{"_id": "p5", "n": 5}, {"_id": "p3", "n": 3}]
    assert list(c.find(at_tx=w.p1_tx[2], sort={"n": 1}, limit=1)) == [t.get("p1", at_tx=w.p1_tx[2])]
    assert c.find_one({"site": "Bergen"}, sort={"n": -1}) == t.get("p8")
    assert c.history("p1") == t.history("p1") and [r.document["v"] for r in c.history("p1")] == [1, 2, 3, 4]
    assert c.history("p1", 1, 2) == t.history("p1", 1, 2)
    d, td = db["defs"], truth["defs"]
    assert d.schema == td.schema and d.schema["properties"] == {"a": {"type": "integer"}}
    assert d.indexes() == td.indexes()
    assert db.audit().ok
    assert db.checkpoint() == truth.checkpoint()
    assert docstore.verify(c.prove("p3", "/n"), db.trusted_state) == 3
    # writes through the proxy (Insert, Update, Commit are forwarded), then verified reads of them
    new_id = db["live"].insert({"x": 1})
    db["live"].update(new_id, {"$set": {"x": 2}})
    assert db["live"].get(new_id) == {"_id": new_id, "x": 2}
    assert db.trusted_state == truth.state() == check_trust_file(w, st)
    with db.transaction() as tx:
        assert tx["trials"].get("p3") == t.get("p3")
        assert [x["_id"] for x in tx["trials"].find(**QUERY)] == OSLO
        tx["live"].replace(new_id, {"x": 3})
    assert tx.tx_id == truth.state().tx_id and truth["live"].get(new_id) == {"_id": new_id, "x": 3}
    assert w.proxy.calls["Commit"] == 1 and w.proxy.calls["Insert"] == 1
    assert db.state() == truth.state() == check_trust_file(w, st)


# ================================================================================= Get
def _claim_edited(w, d):
    d["claim"]["n"] = 99


def _claim_and_property_edited(w, d):
    d["claim"]["n"] = 99
    for p in d["properties"]:
        if p[0] == "/n":
            p[1] = encode_value(99).decode()


def _salt_edited(w, d):
    d["properties"][0][2] = flip_b64(d["properties"][0][2])


def _property_dropped(w, d):
    d["properties"] = [p for p in d["properties"] if p[0] != "/v"]
    del d["claim"]["v"]


def _revision_renumbered(w, d):
    d["revision"] += 1


def _tx_path_flipped(w, d):
    d["tx_path"][0] = flip_b64(d["tx_path"][0])


def _tx_header_edited(w, d):
    d["tx"]["timestamp_ns"] += 1


def _state_same_tx_other_root(w, d):
    d["state"] = sdict(forged(d["state"]["tx_id"]))


def _state_forged_older(w, d):
    d["state"] = sdict(forged(d["state"]["tx_id"] - 1))


def _state_forged_newer_genuine_checkpoint(w, d):
    d["state"] = sdict(forged(d["state"]["tx_id"] + 1))


def _state_forged_newer_stranger_signed(w, d):
    s = forged(d["state"]["tx_id"] + 1)
    d["state"], d["checkpoint"] = sdict(s), stranger_cp(w, s)


def _checkpoint_of_another_state(w, d):
    d["checkpoint"] = w.first_cp


def _unknown_field(w, d):
    d["signed_by"] = "trust me"


def _kind_changed(w, d):
    d["kind"] = "collection"


GET_BUNDLE_LIES = [
    pytest.param(_claim_edited, "value check failed: the claimed document differs", id="claim-edited"),
    pytest.param(_claim_and_property_edited, "entries check failed", id="claim-and-stored-property-edited"),
    pytest.param(_salt_edited, "entries check failed", id="salt-edited"),
    pytest.param(_property_dropped, "completeness check failed", id="property-left-out"),
    pytest.param(_revision_renumbered, "header check failed", id="revision-renumbered"),
    pytest.param(_tx_path_flipped, "transaction check failed", id="merkle-path-hash-flipped"),
    pytest.param(_tx_header_edited, "transaction check failed", id="tx-header-edited"),
    pytest.param(_state_same_tx_other_root, r"root at transaction \d+ differs from the trusted one", id="state-same-tx-other-root"),
    pytest.param(_state_forged_older, "differs", id="state-forged-older"),
    pytest.param(_state_forged_newer_genuine_checkpoint, r"signed checkpoint is of state \d+, not of the proof's state", id="state-forged-newer-genuine-checkpoint"),
    pytest.param(_state_forged_newer_stranger_signed, "not signed by a pinned key", id="state-forged-newer-stranger-signed"),
    pytest.param(_checkpoint_of_another_state, "checkpoint names another state", id="checkpoint-of-another-state"),
    pytest.param(_unknown_field, "malformed proof bundle: unknown fields", id="unknown-field"),
    pytest.param(_kind_changed, "proved collection trials/p3, not document trials/p3", id="kind-changed"),
]


@pytest.mark.parametrize("lie, match", GET_BUNDLE_LIES)
def test_get_bundle_lies(w, client, lie, match):
    db, st = client()
    at = now(w)
    assert db["trials"].get("p3", at_tx=at)["n"] == 3
    install(w, "Get", bundle_lie(lie))
    refused(w, db, st, lambda: db["trials"].get("p3", at_tx=at), match)


def _another_id(w, req, r):
    return up_get(w, req, id="p4")


def _another_id_renamed(w, req, r):
    r = up_get(w, req, id="p4")

    def rename(d):
        d["id"] = req.id
        d["claim"]["_id"] = req.id
        d["properties"][0][1] = encode_value(req.id).decode()

    r.proof = edit(r.proof, rename)
    return r


def _another_collection(w, req, r):
    return up_get(w, req, collection="other")


def _another_collection_renamed(w, req, r):
    r = up_get(w, req, collection="other")
    r.proof = edit(r.proof, lambda d: d.__setitem__("collection", req.collection))
    return r


def _property_proof(w, req, r):
    return pb.GetResponse(proof=up_prove(w, req.collection, req.id, req.known_state, pointer="/n"))


def _document_unproven(w, req, r):
    return pb.GetResponse(document=json.dumps({"_id": req.id, "n": 99}).encode())


def _not_json(w, req, r):
    return pb.GetResponse(proof=r.proof[:-5])


GET_LIES = [
    pytest.param(_another_id, "the server proved document trials/p4, not document trials/p3", id="proof-of-another-id"),
    pytest.param(_another_id_renamed, "header check failed", id="proof-of-another-id-renamed"),
    pytest.param(_another_collection, "the server proved document other/p3, not document trials/p3", id="proof-from-another-collection"),
    pytest.param(_another_collection_renamed, "header check failed", id="proof-from-another-collection-renamed"),
    pytest.param(_property_proof, "proved property trials/p3", id="property-proof-instead"),
    pytest.param(_document_unproven, "not JSON", id="unproven-document-instead"),
    pytest.param(_not_json, "not JSON", id="bundle-cut-short"),
]


@pytest.mark.parametrize("lie, match", GET_LIES)
def test_get_lies(w, client, lie, match):
    db, st = client()
    install(w, "Get", lie)
    refused(w, db, st, lambda: db["trials"].get("p3", at_tx=now(w)), match)


def _no_checkpoint(w, d):
    d.pop("checkpoint")


def _stranger_checkpoint(w, d):
    d["checkpoint"] = stranger_cp(w, bstate(d))


def _altered_checkpoint(w, d):
    d["checkpoint"] = altered_note(d["checkpoint"])


def _early_checkpoint(w, d):
    d["checkpoint"] = w.early_cp


def _consistency_flipped(w, d):
    d["consistency"]["path"][0] = flip_b64(d["consistency"]["path"][0])


def _consistency_cut(w, d):
    d["consistency"]["path"].pop()


def _consistency_other_txs(w, d):
    d["consistency"]["old_tx_id"] -= 1


def _state_forged_keep_rest(w, d):
    # newer than trusted: its checkpoint is genuine (a version-3 bundle has no state field: added, it is refused)
    d["state"] = sdict(forged(bstate(d).tx_id))


def _state_forged_stranger_signed(w, d):
    s = forged(bstate(d).tx_id)
    if "state" in d:
        d["state"] = sdict(s)
    d["checkpoint"] = stranger_cp(w, s)


NEWER_BUNDLE_LIES = [
    pytest.param(_no_checkpoint, "carries no signed checkpoint", VerificationError, id="not-signed"),
    pytest.param(_stranger_checkpoint, "not signed by a pinned key", NoteError, id="signed-by-another-key"),
    pytest.param(_altered_checkpoint, "does not verify: the note was altered", NoteError, id="checkpoint-text-altered"),
    pytest.param(_early_checkpoint, r"signed checkpoint is of state \d+, not of the proof's state", VerificationError, id="checkpoint-of-another-state"),
    pytest.param(_consistency_flipped, "consistency check failed", VerificationError, id="consistency-hash-flipped"),
    pytest.param(_consistency_cut, "consistency check failed", VerificationError, id="consistency-cut-short"),
    pytest.param(_consistency_other_txs, "consistency check failed", VerificationError, id="consistency-of-other-transactions"),
    pytest.param(_state_forged_keep_rest, r"signed checkpoint is of state \d+, not of the proof's state", VerificationError, id="state-forged-genuine-checkpoint"),
    pytest.param(_state_forged_stranger_signed, "not signed by a pinned key", NoteError, id="state-forged-stranger-signed"),
]


@pytest.mark.parametrize("lie, match, error", NEWER_BUNDLE_LIES)
def test_get_newer_state_lies(w, client, lie, match, error):
    """The document changed after the client's trusted state: its proof is relative to a newer
    state, accepted only if signed by the pinned key and shown to extend the trusted one."""
    db, st = client()
    bump(w)
    at = now(w)
    install(w, "Get", bundle_lie(lie))
    refused(w, db, st, lambda: db["live"].get("hot", at_tx=at), match, error)
    w.proxy.reset()  # the same read, honest: the newer state is accepted and saved
    assert db["live"].get("hot", at_tx=at) == w.writer["live"].get("hot")
    assert check_trust_file(w, st) == w.writer.state() == db.trusted_state


def replay(w: World, rpc: str) -> list:
    """Record the server's genuine answers to ``rpc`` (to serve one again later, stale)."""
    answers: list = []
    w.proxy.lie(rpc, lambda req, r: (answers.append(r), r)[1])
    return answers


def test_get_stale_revision_after_a_newer_one(w, client):
    """The current revision read, then a genuine proof that an older one was the latest (of a
    state before the trusted one, recorded then): refused as rolled back. (As of a transaction,
    a revision is proven included, not the latest: a stale one there is documented below.)"""
    db, st = client()
    c = db["live"]
    old = replay(w, "ProveState")
    assert c.get("hot") == w.writer["live"].get("hot")
    bump(w)
    w.proxy.reset()
    assert c.get("hot") == w.writer["live"].get("hot")  # the newer revision: the trusted state advances
    w.proxy.lie("ProveState", lambda req, r: old[0])
    refused(w, db, st, lambda: c.get("hot"), r"before the trusted state \d+: it lost transactions")


def test_get_at_tx_answered_with_a_later_revision(w, client):
    db, st = client()
    c = db["trials"]
    assert c.get("p1", at_tx=w.p1_tx[2])["v"] == 2
    w.proxy.lie("Get", lambda req, r: up_get(w, req, clear=("at_tx",)))
    refused(
        w, db, st, lambda: c.get("p1", at_tx=w.p1_tx[2]),
        f"proved a revision of transaction {w.p1_tx[4]}, after {w.p1_tx[2]}",
    )


# ================================================================================ Find
def _f_nonmatching_edited_to_match(w, req, proofs, state):
    bergen = edit(up_prove(w, "trials", "p2", state), lambda d: d["claim"].__setitem__("site", "Oslo"))
    return proofs[:1] + [bergen] + proofs[1:]


def _f_claim_edited(w, req, proofs, state):
    return proofs[:1] + [edit(proofs[1], lambda d: d["claim"].__setitem__("v", 7))] + proofs[2:]


def _f_duplicated(w, req, proofs, state):
    return proofs[:2] + proofs[1:]


def _f_reversed(w, req, proofs, state):
    return proofs[::-1]


def _f_another_collection(w, req, proofs, state):
    return proofs[:1] + [up_prove(w, "other", "p3", state)] + proofs[2:]


def _f_renamed_from_another_collection(w, req, proofs, state):
    return proofs[:1] + [edit(up_prove(w, "other", "p3", state), lambda d: d.__setitem__("collection", "trials"))] + proofs[2:]


def _f_property_proof(w, req, proofs, state):
    return proofs[:1] + [up_prove(w, "trials", "p3", state, pointer="/site")] + proofs[2:]


def _f_other_state(w, req, proofs, state):
    return proofs[:1] + [up_prove(w, "trials", "p3", w.states[w.p1_tx[4]])] + proofs[2:]


def _f_more_than_limit(w, req, proofs, state):
    return proofs + [up_prove(w, "trials", "p5", state)]


def _f_after_at_tx(w, req, proofs, state):
    return [up_prove(w, "trials", "p1", state)] + proofs[1:]  # p1's latest revision, after at_tx


def _f_unproven_documents(w, req, pages):
    head = pages[0]
    docs = [json.dumps(json.loads(p)["claim"]).encode() for p in all_proofs(pages)]
    del head.proofs[:]
    head.documents.extend(docs)
    return [head]


def _f_no_state(w, req, pages):
    pages[0].ClearField("state")
    return pages


def _f_no_page(w, req, pages):
    return []


def _f_page_state(make: Callable[[World, kvcore.State], tuple[kvcore.State, str | None]]) -> Callable[..., list]:
    def lie(w, req, pages):
        head = pages[0]
        state, note = make(w, of_pb(head.state))
        head.state.CopyFrom(codec.state_to_pb(state))
        head.checkpoint = note or ""
        head.ClearField("consistency")
        return pages

    return lie


_same_tx_other_root = _f_page_state(lambda w, s: (forged(s.tx_id), None))
_forged_older = _f_page_state(lambda w, s: (forged(s.tx_id - 1), None))
_rolled_back_genuine = _f_page_state(lambda w, s: (w.early, w.early_cp))


def _f_second_page_other_state(w, req, pages):
    proofs = all_proofs(pages)
    proofs[3] = up_prove(w, "trials", "p7", w.states[w.p1_tx[4]])
    return two_pages(pages, proofs, 2, pb.FindPage)


def _f_second_page_repeats_first(w, req, pages):
    proofs = all_proofs(pages)
    return two_pages(pages, proofs[:2] + proofs[1:], 2, pb.FindPage)


FIND_LIES = [
    pytest.param(proofs_lie(_f_nonmatching_edited_to_match), {}, "value check failed", id="nonmatching-claim-edited-to-match"),
    pytest.param(proofs_lie(_f_claim_edited), {}, "value check failed", id="claim-edited"),
    pytest.param(proofs_lie(_f_duplicated), {}, "the server sent document 'p3' twice in one result", id="proof-duplicated"),
    pytest.param(proofs_lie(_f_duplicated), {"sort": None}, "twice in one result", id="proof-duplicated-unsorted"),
    pytest.param(proofs_lie(_f_reversed), {}, "out of the requested sort order", id="out-of-sort-order"),
    pytest.param(proofs_lie(_f_reversed), {"sort": [("site", 1), ("n", 1)]}, "out of the requested sort order", id="out-of-compound-sort-order"),
    pytest.param(proofs_lie(_f_more_than_limit), {"limit": 2}, "more than the 2 documents asked for", id="more-than-limit"),
    pytest.param(proofs_lie(_f_another_collection), {}, "a proof of something else", id="proof-from-another-collection"),
    pytest.param(proofs_lie(_f_renamed_from_another_collection), {}, "header check failed", id="proof-from-another-collection-renamed"),
    pytest.param(proofs_lie(_f_property_proof), {}, "a proof of something else", id="property-proof"),
    pytest.param(proofs_lie(_f_other_state), {}, "relative to another state", id="proof-relative-to-another-state"),
    pytest.param(proofs_lie(_f_after_at_tx), {"at_tx": None}, "after", id="at_tx-answered-with-a-later-revision"),
    pytest.param(_f_unproven_documents, {}, "unproven documents", id="unproven-documents-instead"),
    pytest.param(_f_no_state, {}, "sent no state", id="no-state"),
    pytest.param(_f_no_page, {}, "ended a verified find without its state", id="no-page-at-all"),
    pytest.param(_same_tx_other_root, {}, r"root at transaction \d+ differs", id="state-same-tx-other-root"),
    pytest.param(_forged_older, {}, "differs", id="state-rolled-back-forged"),
    pytest.param(_rolled_back_genuine, {}, "relative to another state", id="state-rolled-back-genuine"),
    pytest.param(_f_second_page_other_state, {}, "relative to another state", id="second-page-relative-to-another-state"),
    pytest.param(_f_second_page_repeats_first, {}, "twice in one result", id="second-page-repeats-the-first"),
]


@pytest.mark.parametrize("lie, kwargs, match", FIND_LIES)
@pytest.mark.parametrize("reader", ["find", "transaction"])
def test_find_lies(w, client, lie, kwargs, match, reader):
    db, st = client()
    kw = {**QUERY, **kwargs}
    if "at_tx" in kw:
        kw["at_tx"] = w.p1_tx[2]
    elif reader == "find":
        kw["at_tx"] = now(w)  # proven by inclusion proofs (Find), not by one of the current state
    if reader == "find":
        honest = list(db["trials"].find(**kw))
        assert honest and all(d["site"] == "Oslo" for d in honest)
    install(w, "Find", lie)

    def read():
        if reader == "find":
            return list(db["trials"].find(**kw))
        with db.transaction(at_tx=kw.get("at_tx")) as tx:  # its finds read as of its snapshot
            found = list(tx["trials"].find(kw["filter"], sort=kw["sort"], limit=kw.get("limit")))
            tx["live"].insert({"never": "written"})
            return found

    refused(w, db, st, read, match)
    assert w.proxy.calls["Commit"] == 0


def test_find_skips_a_nonmatching_document_presented_as_matching(w, client):
    """A genuine proof of a document that does not match the filter, slipped into the result:
    the client re-checks the filter on the proven document and never returns it."""
    db, st = client()
    at = now(w)
    honest = list(db["trials"].find(**QUERY, at_tx=at))

    def slip(w, req, proofs, state):  # a Bergen document before and after each Oslo one
        bergen = [up_prove(w, "trials", f"p{i}", state) for i in (2, 4, 6, 8)]
        return [p for pair in zip(bergen, proofs, strict=False) for p in pair] + bergen[len(proofs):]

    install(w, "Find", proofs_lie(slip))
    before = db.trusted_state
    assert list(db["trials"].find(**QUERY, at_tx=at)) == honest
    assert db["trials"].find_one(**QUERY, at_tx=at) == honest[0]
    assert db["trials"].find_one({"site": "Oslo"}, at_tx=at) == honest[0]
    with db.transaction() as tx:
        assert [d["_id"] for d in tx["trials"].find({"site": "Oslo"})] == OSLO
        assert tx["trials"].count({"site": "Oslo"}, verify=False) == 4
        with pytest.raises(docstore.ProofUnavailableError):
            tx["trials"].count({"site": "Oslo"})
    assert check_trust_file(w, st, before) == db.trusted_state


def test_find_one_lies(w, client):
    db, st = client()
    at = now(w)
    install(w, "Find", proofs_lie(lambda w, req, proofs, s: [edit(proofs[0], lambda d: d["claim"].__setitem__("v", 7))]))
    refused(w, db, st, lambda: db["trials"].find_one(**QUERY, at_tx=at), "value check failed")
    install(w, "Find", proofs_lie(lambda w, req, proofs, s: [up_prove(w, "other", "p1", s)]))
    refused(w, db, st, lambda: db["trials"].find_one(**QUERY, at_tx=at), "a proof of something else")
    install(w, "Find", _f_no_state)
    refused(w, db, st, lambda: db["trials"].find_one(**QUERY, at_tx=at), "sent no state")


def test_find_stale_revision_after_a_newer_one(w, client):
    """A find of the current state answered with a genuine proof of its result in an older
    state (recorded before the document changed), or a get with a proof relabelled to a
    genuine, signed older state: refused, the state is behind the trusted one."""
    db, st = client()
    old = replay(w, "ProveState")
    assert [d["v"] for d in db["live"].find({"_id": "hot"})] == [w.writer["live"].get("hot")["v"]]
    bump(w)
    w.proxy.reset()
    assert db["live"].get("hot") == w.writer["live"].get("hot")  # the newer revision: the trusted state advances
    w.proxy.lie("ProveState", lambda req, r: old[0])
    refused(w, db, st, lambda: list(db["live"].find({"_id": "hot"})), r"before the trusted state \d+: it lost transactions")
    w.proxy.reset()
    assert db["trials"].get("p1")["v"] == 4

    def rolled_back(req, r):
        stale = json.loads(r.proof)
        stale["checkpoint"] = w.early_cp  # a version-3 bundle's state is its checkpoint's (or its header's)
        for field in ("consistency", "head", "head_path"):
            stale.pop(field, None)
        return pb.ProofResponse(proof=json.dumps(stale).encode())

    w.proxy.lie("ProveState", rolled_back)
    refused(w, db, st, lambda: db["trials"].get("p1"), r"before the trusted state \d+: it lost transactions")


def _page_newer(fn: Callable[[World, Any], None]) -> Callable[..., list]:
    def lie(w, req, pages):
        assert pages[0].HasField("consistency") and pages[0].checkpoint  # a newer state, genuinely signed
        fn(w, pages[0])
        return pages

    return lie


def _pn_no_checkpoint(w, head):
    head.checkpoint = ""


def _pn_stranger(w, head):
    head.checkpoint = stranger_cp(w, of_pb(head.state))


def _pn_altered(w, head):
    head.checkpoint = altered_note(head.checkpoint)


def _pn_other_state_checkpoint(w, head):
    head.checkpoint = w.early_cp


def _pn_consistency_flipped(w, head):
    head.consistency.path[0] = flip(head.consistency.path[0])


def _pn_consistency_cut(w, head):
    del head.consistency.path[-1]


def _pn_state_forged(w, head):
    head.state.root = os.urandom(32)


def _pn_state_forged_stranger(w, head):
    head.state.root = os.urandom(32)
    head.checkpoint = stranger_cp(w, of_pb(head.state))


NEWER_PAGE_LIES = [
    pytest.param(_pn_no_checkpoint, "carries no signed checkpoint", VerificationError, id="not-signed"),
    pytest.param(_pn_stranger, "not signed by a pinned key", NoteError, id="signed-by-another-key"),
    pytest.param(_pn_altered, "does not verify", NoteError, id="checkpoint-text-altered"),
    pytest.param(_pn_other_state_checkpoint, r"signed checkpoint is of state \d+", VerificationError, id="checkpoint-of-another-state"),
    pytest.param(_pn_consistency_flipped, "consistency check failed", VerificationError, id="consistency-hash-flipped"),
    pytest.param(_pn_consistency_cut, "consistency check failed", VerificationError, id="consistency-cut-short"),
    pytest.param(_pn_state_forged, r"signed checkpoint is of state \d+", VerificationError, id="state-forged-genuine-checkpoint"),
    pytest.param(_pn_state_forged_stranger, "not signed by a pinned key", NoteError, id="state-forged-stranger-signed"),
]


@pytest.mark.parametrize("lie, match, error", NEWER_PAGE_LIES)
def test_find_newer_state_lies(w, client, lie, match, error):
    db, st = client()
    bump(w)
    at = now(w)
    install(w, "Find", _page_newer(lie))
    refused(w, db, st, lambda: list(db["trials"].find(**QUERY, at_tx=at)), match, error)
    w.proxy.reset()
    assert [d["_id"] for d in db["trials"].find(**QUERY)] == OSLO
    assert check_trust_file(w, st) == w.writer.state() == db.trusted_state


# ============================================================================= History
def _h_dropped(w, req, proofs, state):
    return proofs[:1] + proofs[2:]


def _h_swapped(w, req, proofs, state):
    return [proofs[1], proofs[0]] + proofs[2:]


def _h_duplicated(w, req, proofs, state):
    return proofs[:2] + proofs[1:]


def _h_edited(w, req, proofs, state):
    return proofs[:1] + [edit(proofs[1], lambda d: d["claim"].__setitem__("v", 9))] + proofs[2:]


def _h_revision_renumbered(w, req, proofs, state):
    # revision 3's proof claiming to be revision 2, with 2 left out
    return proofs[:1] + [edit(proofs[2], lambda d: d.__setitem__("revision", 2))] + proofs[3:]


def _h_other_document(w, req, proofs, state):
    return proofs[:1] + [up_prove(w, "trials", "p2", state)] + proofs[2:]


def _h_other_document_renamed(w, req, proofs, state):
    def rename(d):
        d["id"], d["revision"] = "p1", 2
        d["claim"]["_id"] = "p1"
        d["properties"][0][1] = encode_value("p1").decode()

    return proofs[:1] + [edit(up_prove(w, "trials", "p2", state), rename)] + proofs[2:]


def _h_other_collection(w, req, proofs, state):
    return [up_prove(w, "other", "p1", state)] + proofs[1:]


def _h_other_state(w, req, proofs, state):
    return proofs[:1] + [up_prove(w, "trials", "p1", w.states[w.p1_tx[4]], at_tx=w.p1_tx[2])] + proofs[2:]


def _h_more_than_limit(w, req, proofs, state):
    return proofs + [up_prove(w, "trials", "p1", state, at_tx=w.p1_tx[3])]


def _h_offset_ignored(w, req, proofs, state):
    return [up_prove(w, "trials", "p1", state, at_tx=w.p1_tx[1])] + proofs


def _h_unproven(w, req, pages):
    head = pages[0]
    proofs = all_proofs(pages)
    del head.proofs[:]
    for i, p in enumerate(proofs, 1):
        d = json.loads(p)
        head.revisions.append(json.dumps({"revision": i, "tx_id": d["tx"]["tx_id"], "timestamp_ns": 0, "deleted": False, "document": d["claim"]}).encode())
    return [head]


def _h_unproven_alongside(w, req, pages):
    pages[0].revisions.append(json.dumps({"revision": 5, "tx_id": 99, "timestamp_ns": 0, "deleted": False, "document": {"_id": "p1"}}).encode())
    return pages


def _h_no_state(w, req, pages):
    pages[0].ClearField("state")
    return pages


def _h_second_page_skips(w, req, pages):
    proofs = all_proofs(pages)
    return two_pages(pages, proofs[:2] + proofs[3:], 2, pb.HistoryPage)


def _h_second_page_other_state(w, req, pages):
    proofs = all_proofs(pages)
    proofs[2] = up_prove(w, "trials", "p1", w.states[w.p1_tx[4]], at_tx=w.p1_tx[3])
    return two_pages(pages, proofs, 2, pb.HistoryPage)


HISTORY_LIES = [
    pytest.param(proofs_lie(_h_dropped), {}, "sent revision 3 where revision 2 comes", id="revision-dropped-in-the-middle"),
    pytest.param(proofs_lie(_h_swapped), {}, "sent revision 2 where revision 1 comes", id="revisions-reordered"),
    pytest.param(proofs_lie(_h_duplicated), {}, "sent revision 2 where revision 3 comes", id="revision-duplicated"),
    pytest.param(proofs_lie(_h_edited), {}, "value check failed", id="revision-edited"),
    pytest.param(proofs_lie(_h_revision_renumbered), {}, "header check failed", id="revision-renumbered"),
    pytest.param(proofs_lie(_h_other_document), {}, "a proof of something else", id="revision-of-another-document"),
    pytest.param(proofs_lie(_h_other_document_renamed), {}, "header check failed", id="revision-of-another-document-renamed"),
    pytest.param(proofs_lie(_h_other_collection), {}, "a proof of something else", id="revision-from-another-collection"),
    pytest.param(proofs_lie(_h_other_state), {}, "relative to another state", id="revision-relative-to-another-state"),
    pytest.param(proofs_lie(_h_more_than_limit), {"limit": 2}, "more than the 2 revisions asked for", id="more-than-limit"),
    pytest.param(proofs_lie(_h_offset_ignored), {"offset": 1}, "sent revision 1 where revision 2 comes", id="offset-ignored"),
    pytest.param(_h_unproven, {}, "unproven revisions", id="unproven-revisions-instead"),
    pytest.param(_h_unproven_alongside, {}, "unproven revisions", id="unproven-revision-alongside"),
    pytest.param(_h_no_state, {}, "sent no state", id="missing-state-page"),
    pytest.param(_f_no_page, {}, "ended a verified history without its state", id="no-page-at-all"),
    pytest.param(_h_second_page_skips, {}, "sent revision 4 where revision 3 comes", id="second-page-skips-a-revision"),
    pytest.param(_h_second_page_other_state, {}, "relative to another state", id="second-page-relative-to-another-state"),
    pytest.param(_same_tx_other_root, {}, r"root at transaction \d+ differs", id="state-same-tx-other-root"),
    pytest.param(_forged_older, {}, "differs", id="state-rolled-back-forged"),
    pytest.param(_rolled_back_genuine, {}, "relative to another state", id="state-rolled-back-genuine"),
]


@pytest.mark.parametrize("lie, kwargs, match", HISTORY_LIES)
def test_history_lies(w, client, lie, kwargs, match):
    db, st = client()
    honest = db["trials"].history("p1", **kwargs)
    assert [r.revision for r in honest] == {(): [1, 2, 3, 4], ("limit",): [1, 2], ("offset",): [2, 3, 4]}[tuple(kwargs)]
    install(w, "History", lie)
    refused(w, db, st, lambda: db["trials"].history("p1", **kwargs), match)


@pytest.mark.parametrize("lie, match, error", NEWER_PAGE_LIES)
def test_history_newer_state_lies(w, client, lie, match, error):
    db, st = client()
    bump(w)
    install(w, "History", _page_newer(lie))
    refused(w, db, st, lambda: db["trials"].history("p1"), match, error)


# ========================================================================= ProveSchema
def _s_claim_edited(w, d):
    d["claim"]["indexes"] = []


def _s_claim_and_definition_edited(w, d):
    d["claim"]["schema"] = None
    d["header"] = base64.b64encode(json.dumps(d["claim"], separators=(",", ":")).encode()).decode()


def _s_revision(w, d):
    d["revision"] = 1


def _s_other_collection(w, req, r):
    return w.up.ProveSchema(pb.ProveSchemaRequest(collection="trials", known_state=req.known_state), timeout=30)


def _s_other_collection_renamed(w, req, r):
    r = _s_other_collection(w, req, r)
    r.proof = edit(r.proof, lambda d: (d.__setitem__("collection", "defs"), d["claim"].__setitem__("name", "defs")))
    return r


def _s_document_proof(w, req, r):
    return pb.ProofResponse(proof=up_prove(w, "trials", "p3", req.known_state))


SCHEMA_LIES = [
    pytest.param(bundle_lie(_s_claim_edited), "the claimed definition differs from the stored one", id="definition-claim-edited"),
    pytest.param(bundle_lie(_s_claim_and_definition_edited), "entry check failed", id="stored-definition-edited"),
    pytest.param(bundle_lie(_s_revision), "claims no revision", id="revision-claimed"),
    pytest.param(bundle_lie(_state_same_tx_other_root), r"root at transaction \d+ differs", id="state-same-tx-other-root"),
    pytest.param(bundle_lie(_state_forged_newer_stranger_signed), "not signed by a pinned key", id="state-forged-newer-stranger-signed"),
    pytest.param(bundle_lie(_unknown_field), "malformed proof bundle", id="unknown-field"),
    pytest.param(_s_other_collection, "the server proved collection trials, not collection defs", id="another-collections-definition"),
    pytest.param(_s_other_collection_renamed, "entry check failed", id="another-collections-definition-renamed"),
    pytest.param(_s_document_proof, "proved document trials, not collection defs", id="document-proof-instead"),
]


@pytest.mark.parametrize("lie, match", SCHEMA_LIES)
@pytest.mark.parametrize("reader", ["schema", "indexes"])
def test_schema_lies(w, client, lie, match, reader):
    db, st = client()
    d = db["defs"]

    def read():
        return d.schema if reader == "schema" else d.indexes()

    assert read() == (w.writer["defs"].schema if reader == "schema" else w.writer["defs"].indexes())
    install(w, "ProveSchema", lie)
    refused(w, db, st, read, match)


@pytest.mark.parametrize("lie, match, error", NEWER_BUNDLE_LIES[:7])
def test_schema_newer_state_lies(w, client, lie, match, error):
    """The definition changed after the trusted state (a new index): its proof is relative to a
    newer state."""
    db, st = client()
    w.writer["defs"].create_index(f"f{uuid.uuid4().hex[:8]}")
    install(w, "ProveSchema", bundle_lie(lie))
    refused(w, db, st, lambda: db["defs"].indexes(), match, error)
    w.proxy.reset()
    assert db["defs"].indexes() == w.writer["defs"].indexes()
    assert check_trust_file(w, st) == w.writer.state() == db.trusted_state


# =============================================================================== State
def _state_lie(make: Callable[[World, pb.StateResponse], None]) -> Callable[..., Any]:
    def lie(w, req, r):
        make(w, r)
        return r

    return lie


def _st_rolled_back(w, r):
    r.state.CopyFrom(codec.state_to_pb(w.early))
    r.checkpoint = w.early_cp
    r.ClearField("consistency")


def _st_rolled_back_to_first(w, r):
    r.state.CopyFrom(codec.state_to_pb(w.states[1]))
    r.checkpoint = w.first_cp
    r.ClearField("consistency")


def _st_same_tx_other_root(w, r):
    r.state.root = os.urandom(32)


def _st_short_root(w, r):
    r.state.root = bytes(r.state.root)[:31]


def _st_forged_newer_genuine_rest(w, r):
    r.state.CopyFrom(codec.state_to_pb(forged(r.state.tx_id + 1)))


def _st_forged_newer_unsigned(w, r):
    r.state.CopyFrom(codec.state_to_pb(forged(r.state.tx_id + 1)))
    r.checkpoint = ""
    r.ClearField("consistency")


def _st_forged_newer_stranger(w, r):
    s = forged(r.state.tx_id + 1)
    r.state.CopyFrom(codec.state_to_pb(s))
    r.checkpoint = stranger_cp(w, s)
    r.ClearField("consistency")


STATE_LIES = [
    pytest.param(_st_rolled_back, "before the trusted state .* rolled back", id="rolled-back-genuine-signed"),
    pytest.param(_st_same_tx_other_root, r"root at transaction \d+ differs", id="same-tx-other-root"),
    pytest.param(_st_short_root, "must be 32 bytes", id="root-not-32-bytes"),
    pytest.param(_st_forged_newer_genuine_rest, r"signed checkpoint is of state \d+", id="forged-newer-genuine-checkpoint"),
    pytest.param(_st_forged_newer_unsigned, "carries no signed checkpoint", id="forged-newer-unsigned"),
    pytest.param(_st_forged_newer_stranger, "not signed by a pinned key", id="forged-newer-signed-by-another-key"),
]


def _read_state(db: Any, reader: str) -> Any:
    if reader == "state":
        return db.state()
    if reader == "tx_id":
        return db.tx_id
    if reader == "checkpoint":
        return db.checkpoint()
    with db.transaction() as tx:
        tx["live"].insert({"never": "written"})


@pytest.mark.parametrize("lie, match", STATE_LIES)
@pytest.mark.parametrize("reader", ["state", "tx_id", "checkpoint", "transaction"])
def test_state_lies(w, client, lie, match, reader):
    db, st = client()
    assert db.state() == w.writer.state()
    install(w, "State", _state_lie(lie))
    refused(w, db, st, lambda: _read_state(db, reader), match)
    assert w.proxy.calls["Commit"] == 0


def _stn(fn):
    def make(w, r):
        assert r.checkpoint and r.HasField("consistency")
        fn(w, r)

    return make


NEWER_STATE_LIES = [
    pytest.param(_stn(lambda w, r: setattr(r, "checkpoint", "")), "carries no signed checkpoint", VerificationError, id="not-signed"),
    pytest.param(_stn(lambda w, r: setattr(r, "checkpoint", stranger_cp(w, of_pb(r.state)))), "not signed by a pinned key", NoteError, id="signed-by-another-key"),
    pytest.param(_stn(lambda w, r: setattr(r, "checkpoint", altered_note(r.checkpoint))), "does not verify", NoteError, id="checkpoint-text-altered"),
    pytest.param(_stn(lambda w, r: setattr(r, "checkpoint", w.early_cp)), r"signed checkpoint is of state \d+", VerificationError, id="checkpoint-of-another-state"),
    pytest.param(_stn(lambda w, r: r.consistency.path.__setitem__(0, flip(r.consistency.path[0]))), "consistency check failed", VerificationError, id="consistency-hash-flipped"),
    pytest.param(_stn(lambda w, r: r.consistency.path.__delitem__(-1)), "consistency check failed", VerificationError, id="consistency-cut-short"),
    pytest.param(_stn(lambda w, r: setattr(r.consistency, "old_tx_id", r.consistency.old_tx_id - 1)), "consistency check failed", VerificationError, id="consistency-of-other-transactions"),
    pytest.param(_stn(lambda w, r: setattr(r.state, "root", os.urandom(32))), r"signed checkpoint is of state \d+", VerificationError, id="state-forged-genuine-checkpoint"),
]


@pytest.mark.parametrize("lie, match, error", NEWER_STATE_LIES)
@pytest.mark.parametrize("reader", ["state", "checkpoint"])
def test_state_newer_lies(w, client, lie, match, error, reader):
    db, st = client()
    bump(w)
    install(w, "State", _state_lie(lie))
    refused(w, db, st, lambda: _read_state(db, reader), match, error)
    w.proxy.reset()
    assert _read_state(db, reader) == (w.writer.state() if reader == "state" else w.writer.checkpoint())
    assert check_trust_file(w, st) == w.writer.state() == db.trusted_state


CONNECT_LIES = [
    pytest.param(_st_rolled_back_to_first, "before the trusted state .* rolled back", VerificationError, id="rolled-back-genuine-signed"),
    pytest.param(_st_short_root, "must be 32 bytes", VerificationError, id="root-not-32-bytes"),
    pytest.param(_st_forged_newer_unsigned, "carries no signed checkpoint", VerificationError, id="forged-newer-unsigned"),
    pytest.param(_st_forged_newer_stranger, "not signed by a pinned key", NoteError, id="forged-newer-signed-by-another-key"),
    *NEWER_STATE_LIES,
]


@pytest.mark.parametrize("lie, match, error", CONNECT_LIES)
@pytest.mark.parametrize("mode", ["trusted_state", "state_file"])
def test_connect_lies(w, client, tmp_path, lie, match, error, mode):
    """At connect time the server must prove that its state extends the trusted one: the
    explicit trusted state (the early checkpoint), or the one a state file saved."""
    st = tmp_path / "st.json"
    if mode == "state_file":
        db, _ = client()
        db.close()
        bump(w)
    before = read_state_file(st) if st.exists() else w.early
    install(w, "State", _state_lie(lie))
    kw = {"trusted_state": w.early_cp} if mode == "trusted_state" else {}
    with pytest.raises(error, match=match):
        docstore.connect(w.proxy.target, state_file=st, verifier_key=w.key, **kw)
    check_trust_file(w, st, before)
    w.proxy.reset()
    db, _ = client(**kw)
    assert db.trusted_state == w.writer.state() == check_trust_file(w, st)


def test_info_lies_do_not_move_a_pinned_client(w, client, tmp_path):
    """Info names a stranger's key and a forged, stranger-signed state: a client that pins the
    real key and brings its trusted state (or a state file) never uses them."""
    s = forged(w.writer.state().tx_id + 5)

    def lie(req, r):
        r.verifier_keys[:] = [str(w.stranger.verifier)]
        r.state.CopyFrom(codec.state_to_pb(s))
        r.checkpoint = stranger_cp(w, s)
        return r

    w.proxy.lie("Info", lie)
    db, st = client()
    assert db.server_verifier_keys == [str(w.stranger.verifier)]  # the server's word, shown, never pinned
    assert db.trusted_state == w.writer.state() == check_trust_file(w, st)
    db.close()
    db, _ = client(trusted_state=None, trust_on_first_use=True)  # the state file exists: not a first use
    assert db.trusted_state == w.writer.state() == check_trust_file(w, st)
    w.proxy.lie("Info", lambda req, r: (setattr(r, "api_version", "immudoc.v0"), r)[1])
    with pytest.raises(docstore.QueryError, match="speaks"):
        client()


@pytest.mark.parametrize(
    "lie, match, error",
    [
        pytest.param(lambda w, r: setattr(r, "checkpoint", stranger_cp(w, of_pb(r.state))), "not signed by a pinned key", NoteError, id="current-state-signed-by-another-key"),
        pytest.param(lambda w, r: setattr(r, "checkpoint", altered_note(r.checkpoint)), "does not verify", NoteError, id="current-state-checkpoint-text-altered"),
        pytest.param(lambda w, r: setattr(r, "checkpoint", w.early_cp), "names state", VerificationError, id="checkpoint-of-another-state"),
        pytest.param(lambda w, r: setattr(r, "checkpoint", ""), "a signed note", NoteError, id="no-checkpoint"),
    ],
)
def test_checkpoint_lies_about_the_trusted_state(w, client, lie, match, error):
    """The server's state is the trusted one (nothing to accept): the checkpoint text that
    checkpoint() returns must still be a genuine, signed checkpoint of that state."""
    db, st = client()
    assert db.checkpoint() == w.writer.checkpoint()
    install(w, "State", _state_lie(lie))
    refused(w, db, st, db.checkpoint, match, error)


# ==================================================================== ProveConsistency
def _pc_flipped(req, r):
    r.proof.path[0] = flip(r.proof.path[0])
    return r


def _pc_cut(req, r):
    del r.proof.path[-1]
    return r


def _pc_empty(req, r):
    del r.proof.path[:]
    return r


def _pc_other_txs(req, r):
    r.proof.old_tx_id += 1
    return r


CONSISTENCY_LIES = [
    pytest.param(_pc_flipped, id="hash-flipped"),
    pytest.param(_pc_cut, id="cut-short"),
    pytest.param(_pc_empty, id="empty"),
    pytest.param(_pc_other_txs, id="of-other-transactions"),
]


def _strip_consistency(req, r):
    r.ClearField("consistency")
    return r


@pytest.mark.parametrize("lie", CONSISTENCY_LIES)
def test_prove_consistency_lies_when_linking_a_newer_state(w, client, tmp_path, lie):
    """State comes without its consistency proof, so the tracker asks ProveConsistency."""
    st = tmp_path / "st.json"
    w.proxy.lie("State", _strip_consistency)
    w.proxy.lie("ProveConsistency", lie)
    with pytest.raises(VerificationError, match="consistency check failed"):
        docstore.connect(w.proxy.target, state_file=st, trusted_state=w.early_cp, verifier_key=w.key)
    assert w.proxy.calls["ProveConsistency"] == 1
    check_trust_file(w, st, w.early)
    del w.proxy.lies["ProveConsistency"]  # the same, with an honest ProveConsistency: accepted
    db, _ = client()
    assert db.trusted_state == w.writer.state() == check_trust_file(w, st)


@pytest.mark.parametrize("lie", CONSISTENCY_LIES)
def test_prove_consistency_lies_when_linking_an_older_state(w, client, lie):
    """A proof relative to a genuine state older than the trusted one is fine with a consistency
    proof between the two, which the tracker asks for: a lie there is caught."""
    db, st = client()
    older = w.states[w.p1_tx[3]]  # not yet known to the client (the early state is: it came from it)
    w.proxy.lie("Get", lambda req, r: pb.GetResponse(proof=up_prove(w, req.collection, req.id, older)))
    w.proxy.lie("ProveConsistency", lie)
    at = now(w)
    refused(w, db, st, lambda: db["trials"].get("p3", at_tx=at), "consistency check failed from state")
    del w.proxy.lies["ProveConsistency"]
    assert db["trials"].get("p3", at_tx=at) == w.writer["trials"].get("p3")  # honest: accepted, trusted state unmoved
    assert check_trust_file(w, st) == w.writer.state() == db.trusted_state


def test_forged_older_state_with_a_genuine_consistency_proof_of_the_real_one(w, client):
    """A proof relative to a forged state older than the trusted one: the honest server refuses
    to link it, so the proxy answers ProveConsistency for the genuine state at that transaction
    instead. The client's own check (not the server's refusal) catches it."""
    db, st = client()
    older = w.states[w.p1_tx[3]]

    def get(req, r):
        return pb.GetResponse(proof=edit(up_prove(w, req.collection, req.id, older), lambda d: _state_same_tx_other_root(w, d)))

    def consistency(req, r):
        genuine = pb.ProveConsistencyRequest(old_state=codec.state_to_pb(older), new_state=req.new_state)
        return w.up.ProveConsistency(genuine, timeout=30)

    w.proxy.lie("Get", get)
    w.proxy.lie("ProveConsistency", consistency, forward=False)
    refused(w, db, st, lambda: db["trials"].get("p3", at_tx=now(w)), f"consistency check failed from state {older.tx_id}")
    assert w.proxy.calls["ProveConsistency"] == 1


@pytest.mark.parametrize("lie", CONSISTENCY_LIES)
def test_prove_consistency_lies_when_linking_the_state_file(w, client, tmp_path, lie):
    """A state file and an older explicit trusted state: they are linked by a consistency proof."""
    db, st = client()
    db.close()
    saved = read_state_file(st)
    w.proxy.lie("ProveConsistency", lie)
    with pytest.raises(VerificationError, match="not consistent with the given trusted state"):
        docstore.connect(w.proxy.target, state_file=st, trusted_state=w.early_cp, verifier_key=w.key)
    check_trust_file(w, st, saved)


# =============================================================================== Audit
def _audit_lie(tx: Callable[[int], int]) -> Callable[..., Any]:
    def lie(w, req, r):
        r.ok, r.tx_count, r.root = True, tx(r.tx_count), os.urandom(32)
        del r.problems[:]
        r.ClearField("first_bad_tx")
        return r

    return lie


AUDIT_LIES = [
    pytest.param(_audit_lie(lambda n: n), r"root at transaction \d+ differs", id="ok-current-tx-other-root"),
    pytest.param(_audit_lie(lambda n: n - 2), "differs", id="ok-older-tx-other-root"),
    pytest.param(_audit_lie(lambda n: n + 3), "carries no signed checkpoint", id="ok-newer-tx-unsigned"),
]


@pytest.mark.parametrize("lie, match", AUDIT_LIES)
def test_audit_lies(w, client, lie, match):
    db, st = client()
    report = db.audit()
    assert report.ok and (report.tx_count, report.root) == (w.writer.state().tx_id, w.writer.state().root)
    install(w, "Audit", lie)
    refused(w, db, st, db.audit, match)


# ============================================================================ refusals
@pytest.mark.parametrize(
    "rpc, read",
    [
        pytest.param("Count", lambda db, **kw: db["trials"].count({"site": "Oslo"}, at_tx=2, **kw), id="count-at-tx"),
        pytest.param("Distinct", lambda db, **kw: db["trials"].distinct("site", at_tx=2, **kw), id="distinct-at-tx"),
        pytest.param("Explain", lambda db, **kw: db["trials"].explain({"site": "Oslo"}, **kw), id="explain"),
        pytest.param("DescribeCollection", lambda db, **kw: db["trials"].info(**kw), id="info"),
    ],
)
def test_unprovable_reads_are_refused(w, client, rpc, read):
    """A verifying connection refuses what it cannot prove, without asking (a server would
    answer); verify=False returns the server's answer, unverified (here: the truth, then a lie)."""
    db, st = client()
    before = db.trusted_state
    db["trials"]  # the collection is known (DescribeCollection) before calls are counted
    w.proxy.reset()
    for kw in ({}, {"verify": True}, {"verify": None}):
        with pytest.raises(ProofUnavailableError, match="verify=False"):
            read(db, **kw)
    assert w.proxy.calls[rpc] == 0
    truth = read(w.writer)
    assert read(db, verify=False) == truth
    assert w.proxy.calls[rpc] == 1
    lie = {
        "Count": lambda req, r: pb.CountResponse(count=999),
        "Distinct": lambda req, r: pb.DistinctResponse(values=b'["Atlantis"]'),
        "Explain": lambda req, r: pb.ExplainResponse(plan=b'{"plan": "magic"}'),
        "DescribeCollection": lambda req, r: pb.DescribeCollectionResponse(info=b'{"name": "trials", "count": 999}'),
    }[rpc]
    w.proxy.lie(rpc, lie)
    with pytest.raises(ProofUnavailableError):
        read(db)
    assert read(db, verify=False) != truth  # unverified: whatever the server says
    assert check_trust_file(w, st, before) == db.trusted_state


@pytest.mark.parametrize(
    "rpc, read, lie",
    [
        pytest.param("Count", lambda db, **kw: db["trials"].count({"site": "Oslo"}, **kw), pb.CountResponse(count=999), id="count"),
        pytest.param("Distinct", lambda db, **kw: db["trials"].distinct("site", **kw), pb.DistinctResponse(values=b'["Atlantis"]'), id="distinct"),
    ],
)
def test_count_and_distinct_of_the_current_state_are_proven(w, client, rpc, read, lie):
    """A verifying connection proves a count and distinct values of the current state (a find
    proof, through ProveState): it never asks Count or Distinct, so their lies do not matter;
    verify=False still returns the server's word."""
    db, st = client()
    truth = read(w.writer)
    w.proxy.lie(rpc, lambda req, r: lie)
    for kw in ({}, {"verify": True}, {"verify": None}):
        assert read(db, **kw) == truth
    assert w.proxy.calls[rpc] == 0 and w.proxy.calls["ProveState"] == 3
    assert read(db, verify=False) != truth  # unverified: whatever the server says
    assert w.proxy.calls[rpc] == 1
    assert check_trust_file(w, st) == db.trusted_state


# ======================================================================== transactions
def test_transaction_get_lies(w, client):
    db, st = client()
    for lie, match in [
        (bundle_lie(_claim_edited), "value check failed"),
        (_another_id, "not document trials/p3"),
        (bundle_lie(_state_same_tx_other_root), "differs"),
    ]:
        install(w, "Get", lie)

        def run():
            with db.transaction() as tx:
                tx["trials"].get("p3")
                tx["live"].insert({"never": "written"})

        refused(w, db, st, run, match)
    assert w.proxy.calls["Commit"] == 0


def test_transaction_reads_its_snapshot_only(w, client):
    """Inside a transaction reads are as of its snapshot: a revision committed after it, passed
    off as the snapshot's (by Get or by Find), is caught."""
    db, st = client()
    tx = db.transaction()
    snap = tx.snapshot
    bump(w)
    w.proxy.lie("Get", lambda req, r: up_get(w, req, clear=("at_tx",)))
    refused(w, db, st, lambda: tx["live"].get("hot"), f"after {snap}")
    w.proxy.reset()
    install(w, "Find", proofs_lie(lambda w, req, proofs, s: [up_prove(w, "live", "hot", s)]))
    # (the page's state is the server's current one, genuinely signed: the client may advance to it)
    refused(w, db, st, lambda: tx["live"].find({"_id": "hot"}), f"after {snap}", strict=False)
    tx.rollback()
    w.proxy.reset()
    with db.transaction(at_tx=snap) as tx2:  # honest: the snapshot's revision
        assert tx2["live"].get("hot") == w.writer["live"].get("hot", at_tx=snap)
    assert w.proxy.calls["Commit"] == 0


# ================================================================ raw proofs (unchecked)
def test_raw_proofs_are_checked_by_verify(w, client):
    """prove / prove_schema / prove_consistency return the server's proofs unchecked (as
    documented); docstore.verify against the trusted state catches a lie in them."""
    db, st = client()
    trusted = db.trusted_state
    c = db["trials"]
    assert docstore.verify(c.prove("p3"), trusted)["n"] == 3
    w.proxy.lie("Prove", lambda req, r: pb.ProofResponse(proof=edit(r.proof, lambda d: _claim_edited(w, d))))
    with pytest.raises(VerificationError, match="value check failed"):
        docstore.verify(c.prove("p3"), trusted)
    w.proxy.lie("Prove", lambda req, r: pb.ProofResponse(proof=edit(r.proof, lambda d: _state_forged_newer_stranger_signed(w, d))))
    with pytest.raises(NoteError, match="not signed by a pinned key"):
        docstore.verify(c.prove("p3"), trusted, w.key)
    w.proxy.lie("ProveSchema", lambda req, r: pb.ProofResponse(proof=edit(r.proof, lambda d: _s_claim_edited(w, d))))
    with pytest.raises(VerificationError, match="claimed definition differs"):
        docstore.verify(db["defs"].prove_schema(), trusted)
    w.proxy.lie("ProveConsistency", _pc_flipped)
    with pytest.raises(VerificationError):
        docstore.verify_consistency(w.early, trusted, db.prove_consistency(w.early, trusted))
    assert check_trust_file(w, st, trusted) == db.trusted_state


# ===================================================================== documented limits
def test_what_is_not_proven_yet(w, client):
    """The README's "not proven yet" column, shown: as of a transaction (``at_tx=``, here the
    current one), a revision that is not the latest then, a matching document left out of a
    find; a history cut short before its latest revisions. These lies pass; nothing unproven
    is ever returned as proven data (each document returned is a genuine revision). The same
    lies told to reads of the current state are not even heard: those are proven by ProveState."""
    db, st = client()
    c = db["trials"]
    at = now(w)
    w.proxy.lie("Get", lambda req, r: up_get(w, req, at_tx=w.p1_tx[2]))
    assert c.get("p1", at_tx=at) == w.writer["trials"].get("p1", at_tx=w.p1_tx[2])  # genuine, but not the latest
    assert c.get("p1") == w.writer["trials"].get("p1")  # the current revision: proven the latest
    install(w, "Find", proofs_lie(lambda w, req, proofs, s: proofs[:1] + proofs[2:]))
    assert [d["_id"] for d in c.find(**QUERY, at_tx=at)] == ["p1", "p5", "p7"]  # p3 left out
    assert [d["_id"] for d in c.find(**QUERY)] == OSLO  # the current state's result: proven complete
    install(w, "History", proofs_lie(lambda w, req, proofs, s: proofs[:2]))
    assert [r.revision for r in c.history("p1")] == [1, 2]  # revisions 3 and 4 left out
    assert check_trust_file(w, st) == db.trusted_state == w.writer.state()


def test_the_list_of_collections_is_proven(w, client):
    """A verifying connection proves the list of collections complete (a range of the state
    map); a server that lies about it through ListCollections is not asked, and one that leaves
    a collection out of the proof cannot make it verify."""
    db, _st = client()
    truth = w.writer.collections()
    w.proxy.reset()
    w.proxy.lie("ListCollections", lambda req, r: pb.ListCollectionsResponse(names=["atlantis"]))
    assert db.collections() == truth and w.proxy.calls["ListCollections"] == 0
    assert db.collections(verify=False) == ["atlantis"]  # unverified: whatever the server says
    proof = db.prove_collections()
    assert docstore.verify(proof, proof.state, w.key) == truth
    short = proof._replace(definitions=proof.definitions[1:])
    with pytest.raises(VerificationError):
        docstore.verify(short, proof.state, w.key)


# ======================================================== the audit trail: who, when, why
def _tx_lie(fn: Callable[[dict], Any]) -> Callable[[World, Any, Any], Any]:
    """A lie told to ProveTx: ``fn`` edits the bundle (JSON) the server sent."""

    def lie(w: World, req: Any, resp: Any) -> Any:
        return pb.ProofResponse(proof=edit(resp.proof, fn))

    return lie


def _set_entry_value(b: dict, value: bytes) -> None:
    b["entry"]["value"] = base64.b64encode(value).decode()


def test_honest_audit_trail(w, client):
    db, _st = client()
    c, t = db["trials"], w.writer["trials"]
    assert [r.reason for r in c.history("p1")] == [None, "to v2", "to v3", "to v4"]
    assert c.history("p1") == t.history("p1")
    early = db.log(limit=6, before_tx=w.p1_tx[4] + 1)
    assert early == w.writer.log(limit=6, before_tx=w.p1_tx[4] + 1)
    assert [r["reason"] for r in early] == ["to v4", "to v3", "to v2", None, None]
    ts = t.history("p1")[2].timestamp_ns
    assert db.tx_at_time(ts) == w.writer.tx_at_time(ts) == w.p1_tx[3]
    assert c.get("p1", at_time=ts) == t.get("p1", at_tx=w.p1_tx[3])


@pytest.mark.parametrize(
    "label,fn,match",
    [
        ("reason changed", lambda b: _set_entry_value(b, base64.b64decode(b["entry"]["value"]).replace(b"v3", b"v9")),
         "does not verify"),
        ("metadata dropped", lambda b: b.update(entry={"key": base64.b64encode(b"c\x00trials").decode(),
                                                      "value": b["entry"]["value"], "deleted": False}),
         "does not verify"),
        ("another entry", lambda b: b["proof"].update(entry_index=1), "another entry than entry 0"),
        ("another transaction", lambda b: b.update(tx_id=b["tx_id"] + 1), "the proof is of transaction"),
        ("not a bundle", lambda b: b.update(v=9), "not a transaction proof"),
    ],
)
def test_history_metadata_lies(w, client, label, fn, match):
    db, st = client()
    install(w, "ProveTx", _tx_lie(fn))
    refused(w, db, st, lambda: db["trials"].history("p1"), match)


def _log_lie(fn: Callable[[list], Any]) -> Callable[[World, Any, Any], Any]:
    def lie(w: World, req: Any, resp: Any) -> Any:
        records = [codec.loads(r) for r in resp.records]
        fn(records)
        return pb.LogResponse(records=[codec.dumps(r) for r in records])

    return lie


@pytest.mark.parametrize(
    "label,fn,match",
    [
        ("reason changed", lambda rs: next(r for r in rs if r["reason"]).update(reason="no reason"), "differs from what"),
        ("user added", lambda rs: rs[0].update(user="mallory"), "differs from what"),
        ("time moved", lambda rs: rs[0].update(timestamp_ns=rs[0]["timestamp_ns"] - 10**9), "differs from what"),
        ("beyond the state", lambda rs: rs.insert(0, dict(rs[0], tx_id=rs[0]["tx_id"] + 10**6)), "not in the trusted state"),
        ("more than asked", lambda rs: rs.extend(rs), "more than the"),
        ("one left out", lambda rs: rs.pop(1), "left out transaction"),
        ("reordered", lambda rs: rs.reverse(), "left out|newest first"),
        ("swapped", lambda rs: rs.__setitem__(slice(0, 2), [rs[1], rs[0]]), "left out|newest first"),
        ("a number's type", lambda rs: rs[0].update(entries=float(rs[0]["entries"])), "differs from what"),
        ("a field added", lambda rs: rs[0].update(signed_by="the dean"), "differs from what"),
        ("ended early", lambda rs: rs.pop(), "ended before"),
    ],
)
def test_log_lies(w, client, label, fn, match):
    db, st = client()
    install(w, "Log", _log_lie(fn))
    refused(w, db, st, lambda: db.log(limit=6, before_tx=w.p1_tx[4] + 1), match)


def test_time_filtered_log_lies(w, client):
    """A log asked for a time range is proven complete within it: its ends are mapped to
    transactions by proven headers, and no transaction between may be left out."""
    db, st = client()
    t = w.writer["trials"].history("p1")
    since, until = t[1].timestamp_ns, t[3].timestamp_ns  # p1's revisions 2..4
    honest = db.log(since=since, until=until)
    assert [r["tx_id"] for r in honest] == [w.p1_tx[4], w.p1_tx[3], w.p1_tx[2]]
    install(w, "Log", _log_lie(lambda rs: rs.pop(0)))
    refused(w, db, st, lambda: db.log(since=since, until=until), "left out|ended before")
    install(w, "Log", _log_lie(lambda rs: rs.pop()))
    refused(w, db, st, lambda: db.log(since=since, until=until), "ended before")
    install(w, "Log", lambda w_, req, resp: resp)
    install(w, "TxAtTime", lambda w_, req, resp: pb.TxAtTimeResponse(tx_id=max(0, resp.tx_id - 1)))
    refused(w, db, st, lambda: db.log(since=since, until=until), "contradict")


@pytest.mark.parametrize("shift,match", [(-1, "at or before"), (1, "committed after"), (10**6, "beyond the trusted state")])
def test_tx_at_time_lies(w, client, shift, match):
    db, st = client()
    ts = w.writer["trials"].history("p1")[2].timestamp_ns
    install(w, "TxAtTime", lambda w_, req, resp: pb.TxAtTimeResponse(tx_id=resp.tx_id + shift))
    refused(w, db, st, lambda: db.tx_at_time(ts), match)
    refused(w, db, st, lambda: db["trials"].get("p1", at_time=ts), match)
