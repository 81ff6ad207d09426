"""Forged newer states: the attack that a consistency proof alone cannot stop.

Whoever knows a trusted state ``T = (n, root)`` and the right edge of its tree (from any genuine
proof of something in transaction ``n``; nothing at all if ``n`` is a power of two) can append
transactions of their choosing, compute the new state ``S`` and a perfectly valid consistency
proof ``T -> S``, and hand out a proof bundle of a document that never existed, relative to
``S``. Only a signature on ``S``'s checkpoint by a key the verifier pins authenticates ``S``.

The forger below is written from RFC 9162 and docs/hashing.md / docs/documents.md alone: it
does not import kvcore.merkle, kvcore.hashing or kvcore.proving, it knows only what a real
attacker knows, and the first tests show its forgeries are real (kvcore accepts its
consistency proofs; the library accepts its bundles against its own claimed state). Then
every verifier must refuse them: ``docstore.verify``, ``immudoc verify``, the remote client
behind a man in the middle, and the embedded verifying reader on a disk the attacker wrote.
"""

from __future__ import annotations

import ast
import base64
import copy
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from collections import Counter
from concurrent import futures
from pathlib import Path
from typing import Any, NamedTuple

import grpc
import pytest

import docstore
import kvcore
from docstore import DocumentNotFoundError, VerificationError
from docstore.proofs import bundle as bundle_mod
from docstore.proofs.note import Signer
from docstore.proofs.trust import UnsignedStateWarning, read_state_file, write_checkpoint_file, write_state_file
from docstore.rpc import immudoc_pb2 as pb

_REMOTE_TESTS = str(Path(__file__).resolve().parents[1] / "remote")
if _REMOTE_TESTS not in sys.path:
    sys.path.append(_REMOTE_TESTS)
from remote_testlib import ServerProcess  # noqa: E402  (a real server process)

ROOT = Path(__file__).resolve().parents[2]
ORIGIN = "immudoc.example/trials"
COLL = "trials"
GHOST_ID = "ghost-1"
GHOST = {"_id": GHOST_ID, "status": "approved", "dosage": {"mg": 500, "unit": "mg"}, "consent": True, "tags": []}
GHOST_POINTER = "/dosage/mg"
GHOST_VALUE = 500
VARIANTS = ("stranger", "none", "trusted", "relabelled")
"""The forged bundle's checkpoint: signed by the forger's own key under the real origin name;
absent; the genuine checkpoint of T as it is; the genuine checkpoint of T relabelled to S."""


# =====================================================================================
# The forger: RFC 9162 and the documented byte formats, nothing of kvcore's hashing.
# =====================================================================================
def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


EMPTY_ROOT = _sha(b"")


def rfc_leaf(data: bytes) -> bytes:
    """RFC 9162 2.1.1: the hash of a leaf, SHA-256(0x00 || data)."""
    return _sha(b"\x00" + data)


def rfc_node(left: bytes, right: bytes) -> bytes:
    """RFC 9162 2.1.1: the hash of an inner node, SHA-256(0x01 || left || right)."""
    return _sha(b"\x01" + left + right)


def _split(size: int) -> int:
    """The largest power of two smaller than ``size`` (size >= 2)."""
    k = 1
    while k << 1 < size:
        k <<= 1
    return k


def mth(hashes: list[bytes]) -> bytes:
    """MTH over leaf *hashes* (RFC 9162 2.1.1)."""
    if not hashes:
        return EMPTY_ROOT
    if len(hashes) == 1:
        return hashes[0]
    k = _split(len(hashes))
    return rfc_node(mth(hashes[:k]), mth(hashes[k:]))


def inclusion_path(m: int, hashes: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n]) over leaf hashes, from the leaf up."""
    if len(hashes) <= 1:
        return []
    k = _split(len(hashes))
    if m < k:
        return inclusion_path(m, hashes[:k]) + [mth(hashes[k:])]
    return inclusion_path(m - k, hashes[k:]) + [mth(hashes[:k])]


def multi_path(indices: list[int], hashes: list[bytes]) -> list[bytes]:
    """docs/hashing.md multi-entry proof: walking with the RFC split, left first, the hash of
    every maximal subtree that holds none of ``indices``."""
    wanted = set(indices)

    def walk(lo: int, hi: int) -> list[bytes]:
        if not any(lo <= i < hi for i in wanted):
            return [mth(hashes[lo:hi])]
        if hi - lo == 1:
            return []
        mid = lo + _split(hi - lo)
        return walk(lo, mid) + walk(mid, hi)

    return walk(0, len(hashes))


def entry_leaf_data(kind: int, key: bytes, value: bytes) -> bytes:
    """docs/hashing.md: u8 kind || u32 len(key) || u32 len(value) || key || value."""
    return struct.pack(">BII", kind, len(key), len(value)) + key + value


def tx_header_bytes(
    tx_id: int, timestamp_ns: int, n_entries: int, entries_root: bytes, state_root: bytes | None = None
) -> bytes:
    """docs/hashing.md: the 53-byte header, u8 1 || u64 tx_id || u64 ts || u32 n || root; or
    with a state root the 85-byte header of version 2 (u8 2, ..., || state root)."""
    if state_root is None:
        return struct.pack(">BQQI", 1, tx_id, timestamp_ns, n_entries) + entries_root
    return struct.pack(">BQQI", 2, tx_id, timestamp_ns, n_entries) + entries_root + state_root


def flatten_simple(doc: dict, prefix: str = "") -> list[tuple[str, str]]:
    """docs/documents.md flattening for objects of strings, integers, booleans, nested objects
    and empty containers (what the forger writes): (RFC 6901 pointer, JSON text) depth-first."""
    out: list[tuple[str, str]] = []
    for key, value in doc.items():
        pointer = prefix + "/" + key.replace("~", "~0").replace("/", "~1")
        if isinstance(value, dict) and value:
            out += flatten_simple(value, pointer)
        elif isinstance(value, (dict, list)):
            assert not value, "the forger writes empty containers only"
            out.append((pointer, "{}" if isinstance(value, dict) else "[]"))
        else:
            out.append((pointer, json.dumps(value, ensure_ascii=False, separators=(",", ":"))))
    return out


def document_entries(coll: str, doc: dict, salts: list[bytes]) -> list[tuple[int, bytes, bytes]]:
    """A document's revision 1 as ledger entries (docs/documents.md): its header
    ``d\\0coll\\0id`` then its properties ``p\\0coll\\0id\\0 u32 rev u32 ordinal pointer``."""
    doc_id = doc["_id"]
    props = flatten_simple(doc)
    header = json.dumps(
        {"v": 1, "c": coll, "id": doc_id, "rev": 1, "n": len(props), "del": False}, separators=(",", ":")
    ).encode()
    entries = [(0, b"d\x00" + coll.encode() + b"\x00" + doc_id.encode(), header)]
    prefix = b"p\x00" + coll.encode() + b"\x00" + doc_id.encode() + b"\x00"
    for ordinal, ((pointer, encoded), salt) in enumerate(zip(props, salts)):
        key = prefix + struct.pack(">II", 1, ordinal) + pointer.encode()
        entries.append((0, key, salt + encoded.encode()))
    return entries


class GrownTree:
    """The trusted ledger tree, known only by its frontier (the roots of its maximal perfect
    subtrees), extended with transaction leaves the forger picks."""

    def __init__(self, size: int, frontier: dict[tuple[int, int], bytes]) -> None:
        self.old = size
        self.known = dict(frontier)
        self.new: list[bytes] = []

    @property
    def size(self) -> int:
        return self.old + len(self.new)

    def node(self, lo: int, hi: int) -> bytes:
        if (lo, hi) in self.known:
            return self.known[(lo, hi)]
        if hi == lo:
            return EMPTY_ROOT
        if hi - lo == 1:
            if lo < self.old:
                raise AssertionError(f"the forger does not know leaf {lo} of the trusted tree")
            return self.new[lo - self.old]
        k = _split(hi - lo)
        return rfc_node(self.node(lo, lo + k), self.node(lo + k, hi))

    def root(self) -> bytes:
        return self.node(0, self.size)

    def path(self, m: int, lo: int = 0, hi: int | None = None) -> list[bytes]:
        """RFC 9162 PATH(m, D[lo:hi])."""
        hi = self.size if hi is None else hi
        if hi - lo <= 1:
            return []
        k = _split(hi - lo)
        if m < k:
            return self.path(m, lo, lo + k) + [self.node(lo + k, hi)]
        return self.path(m - k, lo + k, hi) + [self.node(lo, lo + k)]

    def consistency(self) -> list[bytes]:
        """RFC 9162 2.1.4.1 PROOF(old, D[size]) (empty from the empty tree)."""

        def sub(m: int, lo: int, hi: int, complete: bool) -> list[bytes]:
            if m == hi - lo:
                return [] if complete else [self.node(lo, hi)]
            k = _split(hi - lo)
            if m <= k:
                return sub(m, lo, lo + k, complete) + [self.node(lo + k, hi)]
            return sub(m - k, lo + k, hi, False) + [self.node(lo, lo + k)]

        return [] if self.old == 0 else sub(self.old, 0, self.size, True)


def right_edge(n: int, root: bytes, genuine: dict | None) -> dict[tuple[int, int], bytes]:
    """The frontier of the trusted tree of size ``n``: its root alone if ``n`` is a power of
    two (or nothing if 0), else derived from a genuine bundle proving something of
    transaction ``n`` relative to state ``n`` (the last leaf's path holds the frontier)."""
    if n == 0:
        return {}
    if n & (n - 1) == 0:
        return {(0, n): root}
    assert genuine is not None, "the forger needs one genuine proof of transaction n"
    tx = genuine["tx"]
    assert tx["tx_id"] == n and genuine["state"]["tx_id"] == n
    sroot = bytes.fromhex(tx["state_root"]) if "state_root" in tx else None
    cur = rfc_leaf(tx_header_bytes(n, tx["timestamp_ns"], tx["n_entries"], bytes.fromhex(tx["entries_root"]), sroot))
    path = [base64.b64decode(h) for h in genuine["tx_path"]]
    low = (n & -n).bit_length() - 1  # the smallest perfect subtree holds the last leaf: 2**low leaves
    for sibling in path[:low]:
        cur = rfc_node(sibling, cur)
    sizes = [1 << b for b in reversed(range(n.bit_length())) if n >> b & 1]  # left to right
    roots = list(reversed(path[low:])) + [cur]
    assert len(roots) == len(sizes)
    frontier, lo = {}, 0
    for size, r in zip(sizes, roots):
        frontier[(lo, lo + size)] = r
        lo += size
    return frontier


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def checkpoint_body(origin: str, size: int, root: bytes) -> str:
    """C2SP tlog-checkpoint: origin, tree size, base64 root, each line ending in a newline."""
    return f"{origin}\n{size}\n{_b64(root)}\n"


class Forgery(NamedTuple):
    bundle: dict  # claims S, carries a consistency proof from T (and maybe a checkpoint)
    trusted: dict  # T as {"tx_id", "root"}
    state: dict  # S
    consistency_path: list[bytes]
    signer: Signer | None  # the forger's own key (variant "stranger")
    ghost: Any  # what a verifier that accepted it would return

    def bundle_for(self, known: dict) -> dict:
        """The bundle an attacker answers to a reader who says it trusts ``known``."""
        if known == self.state:
            return self.without_consistency()
        return self.bundle

    def without_consistency(self, drop_checkpoint: bool = False) -> dict:
        b = dict(self.bundle)
        b.pop("consistency", None)
        if drop_checkpoint:
            b.pop("checkpoint", None)
        return b


class Forger:
    """An attacker holding a trusted state (and, if needed, one genuine proof of its last
    transaction and its public checkpoint), nothing else."""

    def __init__(self, trusted: dict, genuine: dict | None, origin: str, trusted_note: str | None = None) -> None:
        self.trusted = dict(trusted)
        self.n = trusted["tx_id"]
        self.root = bytes.fromhex(trusted["root"])
        self.frontier = right_edge(self.n, self.root, genuine)
        assert GrownTree(self.n, self.frontier).root() == self.root, "the forger misread the right edge"
        self.origin = origin
        self.trusted_note = trusted_note
        self.base_ts = genuine["tx"]["timestamp_ns"] if genuine else time.time_ns()

    def forge(
        self,
        doc: dict = GHOST,
        k: int = 1,
        kind: str = "document",
        pointer: str = GHOST_POINTER,
        checkpoint: str = "stranger",
        coll: str = COLL,
    ) -> Forgery:
        tree = GrownTree(self.n, self.frontier)
        target = k // 2  # the ghost's transaction: the middle one of the forged run
        ghost_tx = ghost_o = ghost_hashes = None
        ghost_entries: list[tuple[int, bytes, bytes]] = []
        for j in range(k):
            tx_id = self.n + 1 + j
            filler = {"_id": f"filler-{tx_id}", "x": tx_id}
            entries = document_entries(coll, filler, [os.urandom(16)])
            if j == target:
                ghost_o = len(entries)
                n_props = len(flatten_simple(doc))
                ghost_entries = document_entries(coll, doc, [os.urandom(16) for _ in range(n_props)])
                entries += ghost_entries
            hashes = [rfc_leaf(entry_leaf_data(*e)) for e in entries]
            header = {
                "tx_id": tx_id, "timestamp_ns": self.base_ts + 1000 * (j + 1),
                "n_entries": len(entries), "entries_root": mth(hashes).hex(),
            }
            tree.new.append(rfc_leaf(tx_header_bytes(tx_id, header["timestamp_ns"], len(entries), mth(hashes))))
            if j == target:
                ghost_tx, ghost_hashes = header, hashes
        assert ghost_tx is not None and ghost_o is not None and ghost_hashes is not None
        new_root = tree.root()
        state = {"tx_id": tree.size, "root": new_root.hex()}
        cpath = tree.consistency()
        tx_path = tree.path(ghost_tx["tx_id"] - 1)
        props = [[p, enc, _b64(v[:16])] for (p, enc), (_kind, _key, v) in zip(flatten_simple(doc), ghost_entries[1:])]
        d: dict[str, Any] = {
            "format": "immudoc-proof", "version": 2, "kind": kind, "collection": coll, "id": doc["_id"], "revision": 1,
        }
        if kind == "document":
            indices = list(range(ghost_o, ghost_o + len(ghost_entries)))
            d.update(pointer=None, claim=doc, index=ghost_o, header=_b64(ghost_entries[0][2]), properties=props)
            path = multi_path(indices, ghost_hashes)
            ghost: Any = doc
        else:
            ordinal = next(i for i, p in enumerate(props) if p[0] == pointer)
            value = json.loads(props[ordinal][1])
            index = ghost_o + 1 + ordinal
            d.update(
                pointer=pointer, claim=value, index=index, header=None, properties=[props[ordinal]], ordinal=ordinal
            )
            path = inclusion_path(index, ghost_hashes)
            ghost = value
        d.update(tx=ghost_tx, path=[_b64(h) for h in path], tx_path=[_b64(h) for h in tx_path], state=state)
        signer = None
        body = checkpoint_body(self.origin, tree.size, new_root)
        if checkpoint == "stranger":
            signer = Signer.generate(self.origin)  # its own key, under the ledger's real name
            d["checkpoint"] = body + "\n" + signer.signature_line(body)
        elif checkpoint == "trusted":
            d["checkpoint"] = self.trusted_note
        elif checkpoint == "relabelled":
            assert self.trusted_note is not None
            d["checkpoint"] = body + self.trusted_note[self.trusted_note.index("\n\n") + 1 :]
        else:
            assert checkpoint == "none"
        d["consistency"] = {
            "state": self.trusted, "old_tx_id": self.n, "new_tx_id": tree.size, "path": [_b64(h) for h in cpath],
        }
        return Forgery(d, self.trusted, state, cpath, signer, ghost)


def as_state(d: dict) -> kvcore.State:
    return kvcore.State(d["tx_id"], bytes.fromhex(d["root"]))


# =====================================================================================
# A real ledger: trusted states 0..6 with their checkpoints and one genuine proof each.
# =====================================================================================
DOCS = [{"_id": f"p{i}", "site": "Oslo", "dosage": {"mg": i}} for i in range(1, 6)]


@pytest.fixture(scope="module")
def chain(module_place):
    with module_place.open(origin=ORIGIN) as db:
        c = db.create_collection(COLL)  # transaction 1
        for d in DOCS:  # transactions 2..6
            c.insert(copy.deepcopy(d))
        states = {i: db.ledger.state(i) for i in range(0, 7)}
        notes = {i: db.checkpoint(s) for i, s in states.items()}
        genuine = {1: c.prove_schema(state=states[1]).to_dict()}
        for i in range(2, 7):
            genuine[i] = c.prove(f"p{i - 1}", state=states[i]).to_dict()
        newer = c.prove("p5", known_state=states[3])  # genuine, signed, relative to 6, linked to 3
        assert newer.state == states[6] and newer.checkpoint is not None and newer.consistency is not None
        key = db.verifier_key()
    return {"place": module_place, "states": states, "notes": notes, "genuine": genuine, "newer": newer.to_dict(), "key": key}


def _forger(chain, n: int) -> Forger:
    genuine = chain["genuine"].get(n) if n & (n - 1) else None  # a power of two needs no proof
    return Forger(chain["states"][n].to_dict(), genuine, ORIGIN, chain["notes"][n])


# ------------------------------------------------------------------ the forger is real
def test_forger_primitives_match_the_documented_vectors():
    """The forger's encodings reproduce docs/hashing.md's test vectors (written from the page)."""
    leaf = rfc_leaf(entry_leaf_data(0, b"a", b"1"))
    assert leaf.hex() == "8d1a4eeb3bf6fe6085c6ec9887483de739a6949f1f5a575622b073a9a30d4e00"
    tomb = rfc_leaf(entry_leaf_data(1, b"gone", b""))
    assert tomb.hex() == "e07baab120ff4716cad1493ddb824ff3d3e813858e1e277e84e9a68152d384b7"
    root = bytes.fromhex("b18bcc656d6452a187b8c7dd6a277bf64c9c891d7476f7479ec79bf6afa8e08b")
    h = tx_header_bytes(42, 1763700000123456789, 3, root)
    assert len(h) == 53 and rfc_leaf(h).hex() == "53457528d3410caac5d42a8753f0d2e59fd3d84fe11cb7aa0db81ae3f77c9e01"
    assert mth([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    five = [rfc_leaf(bytes([c])) for c in b"abcde"]
    assert mth(five).hex() == "fe14a5426fbd70c0fa73f52342afed0da0bd23c4838662ccf6b88a3070ead97b"
    # and its trees agree with themselves: a tree grown from a frontier has the full tree's root
    leaves = [rfc_leaf(bytes([i])) for i in range(11)]
    for n in range(0, 8):
        frontier, lo = {}, 0
        for b in reversed(range(n.bit_length())):
            if n >> b & 1:
                frontier[(lo, lo + (1 << b))] = mth(leaves[lo : lo + (1 << b)])
                lo += 1 << b
        t = GrownTree(n, frontier)
        t.new = leaves[n:11]
        assert t.root() == mth(leaves) and t.path(10) == inclusion_path(10, leaves)


def test_the_forger_imports_no_kvcore_hashing():
    tree = ast.parse(Path(__file__).read_text())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    assert not imported & {"kvcore.merkle", "kvcore.hashing", "kvcore.proving"}


@pytest.mark.parametrize("kind", ["document", "property"])
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("n", [0, 1, 2, 3, 4, 5, 6])  # 0, 1, 2, 4: powers of two (no genuine proof needed)
def test_forged_newer_state_is_refused(chain, n, k, kind):
    T = chain["states"][n]
    T_note = chain["notes"][n]
    real_key = chain["key"]
    forger = _forger(chain, n)
    if n & (n - 1):  # not a power of two: the right edge comes only from a genuine proof
        with pytest.raises(AssertionError, match="needs one genuine proof"):
            right_edge(n, T.root, None)
    for variant in VARIANTS:
        f = forger.forge(k=k, kind=kind, checkpoint=variant)
        S = as_state(f.state)
        assert S.tx_id == n + k
        # The forgery is real: kvcore accepts its consistency proof from T to S, and the bundle
        # verifies against the state it claims (so every refusal below is the signature check).
        kvcore.verify_consistency(T, S, kvcore.ConsistencyProof(n, n + k, f.consistency_path))
        assert docstore.verify(f.without_consistency(drop_checkpoint=True), S) == f.ghost
        assert docstore.verify(json.dumps(f.without_consistency(drop_checkpoint=True)), S) == f.ghost

        # No key pinned: a newer state is never accepted on a consistency proof alone.
        if variant == "trusted":
            no_key = "names another state"  # T's checkpoint does not name S
        elif n == 0:
            no_key = r"transaction 0, trusts nothing by itself"
        else:
            no_key = "a newer state is accepted only if signed by a key you pin"
        for bundle in (f.bundle, json.dumps(f.bundle)):
            with pytest.raises(VerificationError, match=no_key):
                docstore.verify(bundle, T)
        with pytest.raises(VerificationError, match=no_key if variant == "trusted" else "newer than the trusted state"):
            docstore.verify(f.bundle, T_note)  # the trusted state given as its checkpoint, no key

        # The real key pinned: refused, and the message says why.
        why = {
            "stranger": "the note is not signed by a pinned key",
            "none": "carries no signed checkpoint",
            "trusted": "names another state",
            "relabelled": r"does not verify: the note was altered",
        }[variant]
        for trusted in (T, T_note):
            with pytest.raises(VerificationError, match=why):
                docstore.verify(f.bundle, trusted, verifier_keys=[real_key])
        with pytest.raises(VerificationError, match=why):
            docstore.verify(json.dumps(f.bundle), T, verifier_keys=real_key)

        if variant == "stranger":
            # Only a verifier that pins the forger's own key accepts it: a signature by a key you
            # pin is exactly what authenticates a newer state (and all that does).
            assert f.signer is not None
            assert docstore.verify(f.bundle, T, verifier_keys=[str(f.signer.verifier)]) == f.ghost


def test_the_same_pipeline_accepts_the_genuine_signed_newer_state(chain):
    """The control: the honest ledger's proof relative to a newer state, signed by its key."""
    newer, T = chain["newer"], chain["states"][3]
    assert docstore.verify(newer, T, verifier_keys=[chain["key"]]) == DOCS[4]
    assert docstore.verify(newer, chain["notes"][3], verifier_keys=chain["key"]) == DOCS[4]
    with pytest.raises(VerificationError, match="signed by a key you pin"):
        docstore.verify(newer, T)  # even a genuine newer state needs the pinned key


# ------------------------------------------------------------------------ the CLI
def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMMUDOC_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-c", "from docstore.cli import main; main()", *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


def test_cli_verify_refuses_forgeries(chain, tmp_path):
    n = 3  # not a power of two: the forger used the genuine proof's tx_path
    forger = _forger(chain, n)
    signed = forger.forge(k=2, checkpoint="stranger")
    bare = forger.forge(k=2, kind="property", checkpoint="none")
    trusted = tmp_path / "trusted.checkpoint"
    write_checkpoint_file(trusted, chain["notes"][n])
    for name, b in (("forged.json", signed.bundle), ("bare.json", bare.bundle), ("genuine.json", chain["newer"])):
        (tmp_path / name).write_text(json.dumps(b))
    key = chain["key"]

    ok = _cli("verify", "genuine.json", "--state", str(trusted), "--key", key, cwd=tmp_path)
    assert ok.returncode == 0, ok.stderr  # the control: the real command accepts the genuine signed state
    out = json.loads(ok.stdout)  # JSON when stdout is not a terminal
    assert out["verified"] is True and out["signed_state"] is True and out["state"]["tx_id"] == 6

    r = _cli("verify", "forged.json", "--state", str(trusted), cwd=tmp_path)
    assert r.returncode == 5, (r.stdout, r.stderr)
    assert "newer than the trusted state 3" in r.stderr and "signed by a key you pin" in r.stderr
    r = _cli("verify", "forged.json", "--state", str(trusted), "--key", key, cwd=tmp_path)
    assert r.returncode == 5 and "not signed by a pinned key" in r.stderr, r.stderr
    r = _cli("verify", "bare.json", "--state", str(trusted), "--key", key, cwd=tmp_path)
    assert r.returncode == 5 and "carries no signed checkpoint" in r.stderr, r.stderr
    assert r.stdout == ""
    # a plain JSON state file (no checkpoint) with the real key: refused the same way
    plain = tmp_path / "trusted.json"
    write_state_file(plain, chain["states"][n])
    r = _cli("verify", "forged.json", "--state", str(plain), "--key", key, cwd=tmp_path)
    assert r.returncode == 5 and "not signed by a pinned key" in r.stderr, r.stderr
    # Pinning the forger's key is the only way to make the CLI accept it (with the trusted
    # checkpoint file it is refused even then: that file is not signed by the forger's key).
    assert signed.signer is not None
    r = _cli("verify", "forged.json", "--state", str(trusted), "--key", str(signed.signer.verifier), cwd=tmp_path)
    assert r.returncode == 5 and "not signed by a pinned key" in r.stderr, r.stderr
    r = _cli("verify", "forged.json", "--state", str(plain), "--key", str(signed.signer.verifier), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["value"] == GHOST


# ------------------------------------------------------------------ man in the middle
_SERVICE = pb.DESCRIPTOR.services_by_name["Docstore"]
_OPTS = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]


class MitmProxy(grpc.GenericRpcHandler):
    """A plaintext gRPC proxy between a client and a real server: forwards every call's bytes,
    except that, once armed with a forgery, it answers a proving Get of the forged document
    with the forged bundle and (``forge_state``) a State call with the forged state."""

    def __init__(self, upstream: str) -> None:
        self._up = grpc.insecure_channel(upstream, options=_OPTS)
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), handlers=[self], options=_OPTS)
        self.port = self._server.add_insecure_port("127.0.0.1:0")
        self._server.start()
        self.forgery: Forgery | None = None
        self.forge_state = False
        self.forged: Counter[str] = Counter()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def close(self) -> None:
        self._server.stop(None)
        self._up.close()

    def __enter__(self) -> MitmProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def service(self, details: Any) -> Any:
        prefix = f"/{_SERVICE.full_name}/"
        if not details.method.startswith(prefix):
            return None
        m = _SERVICE.methods_by_name.get(details.method[len(prefix) :])
        if m is None:
            return None
        method, up = details.method, self._up
        if m.client_streaming and m.server_streaming:
            return grpc.stream_stream_rpc_method_handler(
                lambda it, ctx: self._relay_stream(up.stream_stream(method)(it, timeout=ctx.time_remaining()), ctx)
            )
        if m.client_streaming:
            return grpc.stream_unary_rpc_method_handler(
                lambda it, ctx: self._relay(lambda: up.stream_unary(method)(it, timeout=ctx.time_remaining()), ctx)
            )
        if m.server_streaming:
            return grpc.unary_stream_rpc_method_handler(lambda req, ctx: self._pages(m.name, method, req, ctx))
        return grpc.unary_unary_rpc_method_handler(lambda req, ctx: self._unary(m.name, method, req, ctx))

    def _relay(self, call: Any, ctx: Any) -> Any:
        try:
            return call()
        except grpc.RpcError as e:
            ctx.set_trailing_metadata(e.trailing_metadata() or ())
            ctx.abort(e.code(), e.details() or "")

    def _relay_stream(self, responses: Any, ctx: Any) -> Any:
        try:
            yield from responses
        except grpc.RpcError as e:
            ctx.set_trailing_metadata(e.trailing_metadata() or ())
            ctx.abort(e.code(), e.details() or "")

    def _pages(self, name: str, method: str, raw: bytes, ctx: Any) -> Any:
        """A proving Find or History: one forged page (the ghost's proof, relative to S, with
        S's checkpoint and a consistency proof from the reader's state) when armed."""
        f = self.forgery
        kinds = {"Find": (pb.FindRequest, pb.FindPage), "History": (pb.HistoryRequest, pb.HistoryPage)}
        req = kinds[name][0].FromString(raw) if name in kinds else None
        wanted = req is not None and req.prove and req.collection == COLL and getattr(req, "id", GHOST_ID) == GHOST_ID
        if f is None or not wanted:
            yield from self._relay_stream(self._up.unary_stream(method)(raw, timeout=ctx.time_remaining()), ctx)
            return
        assert req is not None
        known = {"tx_id": req.known_state.tx_id, "root": bytes(req.known_state.root).hex()}
        page = kinds[name][1](
            proofs=[json.dumps(f.without_consistency()).encode()],
            state=pb.LedgerState(tx_id=f.state["tx_id"], root=bytes.fromhex(f.state["root"])),
            checkpoint=f.bundle.get("checkpoint") or "",
        )
        if known == f.trusted:
            page.consistency.CopyFrom(
                pb.ConsistencyProof(old_tx_id=f.trusted["tx_id"], new_tx_id=f.state["tx_id"], path=f.consistency_path)
            )
        self.forged[name] += 1
        yield page.SerializeToString()

    def _unary(self, name: str, method: str, raw: bytes, ctx: Any) -> bytes:
        f = self.forgery
        if f is not None and name == "Get":
            req = pb.GetRequest.FromString(raw)
            if req.prove and (req.collection, req.id) == (COLL, GHOST_ID):
                known = {"tx_id": req.known_state.tx_id, "root": bytes(req.known_state.root).hex()}
                self.forged["Get"] += 1
                return pb.GetResponse(proof=json.dumps(f.bundle_for(known)).encode()).SerializeToString()
        if f is not None and name == "State" and self.forge_state:
            req = pb.StateRequest.FromString(raw)
            S = as_state(f.state)
            out = pb.StateResponse(
                state=pb.LedgerState(tx_id=S.tx_id, root=S.root), checkpoint=f.bundle.get("checkpoint") or ""
            )
            known = {"tx_id": req.known_state.tx_id, "root": bytes(req.known_state.root).hex()}
            if known == f.trusted:
                out.consistency.CopyFrom(
                    pb.ConsistencyProof(old_tx_id=f.trusted["tx_id"], new_tx_id=S.tx_id, path=f.consistency_path)
                )
            elif known == f.state:
                out.consistency.CopyFrom(pb.ConsistencyProof(old_tx_id=S.tx_id, new_tx_id=S.tx_id))
            self.forged["State"] += 1
            return out.SerializeToString()
        return self._relay(lambda: self._up.unary_unary(method)(raw, timeout=ctx.time_remaining()), ctx)


def test_remote_client_behind_a_man_in_the_middle(place, tmp_path):
    with place.open(origin=ORIGIN) as db:
        c = db.create_collection(COLL)
        c.insert(copy.deepcopy(DOCS[0]))
        c.insert(copy.deepcopy(DOCS[1]))  # n = 3
        T = db.state()
        T_note = db.checkpoint(T)
        real_key = db.verifier_key()
        genuine = c.prove("p2", state=T).to_dict()  # any proof of transaction 3: the right edge
    forger = Forger(T.to_dict(), genuine, ORIGIN, T_note)
    state_file = tmp_path / "client.json"
    write_state_file(state_file, T, T_note, [real_key])
    with ServerProcess(place.target, env=place.server_env()) as srv, MitmProxy(srv.target) as proxy:
        # --- a verifying client pinning the real key, through the proxy
        with docstore.connect(proxy.target, state_file=state_file, verifier_key=real_key) as client:
            assert client[COLL].get("p1") == DOCS[0]  # honest traffic passes the proxy and verifies
            for variant, why in (
                ("stranger", "not signed by a pinned key"),
                ("none", "carries no signed checkpoint"),
                ("relabelled", "does not verify: the note was altered"),
                ("trusted", "the signed checkpoint is of state 3, not of the proof's state 5"),
            ):
                proxy.forgery = forger.forge(k=2, checkpoint=variant)
                before = proxy.forged["Get"]
                # a read as of a transaction goes through Get (an inclusion proof), which the
                # proxy forges; a current read asks for a freshness proof (ProveState), which
                # it passes on: the ghost is not there
                with pytest.raises(VerificationError, match=why):
                    client[COLL].get(GHOST_ID, at_tx=5)
                with pytest.raises(DocumentNotFoundError, match="absence is proven"):
                    client[COLL].get(GHOST_ID)
                assert proxy.forged["Get"] == before + 1  # the forged answer was served, and refused
                assert client.trusted_state == T and read_state_file(state_file) == T
            # verified queries on the same network path: a forged Find page, a forged History
            proxy.forgery = forger.forge(k=2, checkpoint="stranger")
            with pytest.raises(VerificationError, match="not signed by a pinned key"):
                list(client[COLL].find({"status": "approved"}, at_tx=5))
            with pytest.raises(VerificationError, match="not signed by a pinned key"):
                client[COLL].history(GHOST_ID)
            assert proxy.forged["Find"] == proxy.forged["History"] == 1
            assert client.trusted_state == T and read_state_file(state_file) == T
            # the State call forged too: state(), checkpoint() and a new connection are refused
            proxy.forgery, proxy.forge_state = forger.forge(k=3, checkpoint="stranger"), True
            with pytest.raises(VerificationError, match="not signed by a pinned key"):
                client.state()
            with pytest.raises(VerificationError, match="not signed by a pinned key"):
                client.checkpoint()
            assert client.trusted_state == T
        with pytest.raises(VerificationError, match="not signed by a pinned key"):
            docstore.connect(proxy.target, state_file=state_file, verifier_key=real_key)
        with pytest.raises(VerificationError, match="not signed by a pinned key"):
            docstore.connect(proxy.target, state_file=state_file)  # the key saved with the state file
        assert proxy.forged["State"] >= 4
        assert read_state_file(state_file) == T  # never advanced to the forged state

        # --- the old hole, now an explicit opt-in: trust_unsigned=True accepts a consistency
        # proof alone, so the MITM succeeds (with a warning) and poisons the state file.
        proxy.forgery, proxy.forge_state = forger.forge(k=2, checkpoint="none"), True
        S = as_state(proxy.forgery.state)
        unsigned_file = tmp_path / "unsigned.json"
        with pytest.warns(UnsignedStateWarning, match="without a signature"):
            with docstore.connect(proxy.target, state_file=unsigned_file, trusted_state=T, trust_unsigned=True) as weak:
                assert weak.trusted_state == S
                assert weak[COLL].get(GHOST_ID, at_tx=5) == GHOST  # the never-existing document, "verified"
                assert list(weak[COLL].find({"status": "approved"}, at_tx=5)) == [GHOST]
        assert read_state_file(unsigned_file) == S
        # With a key pinned, trust_unsigned=True is no downgrade: a MITM that strips the
        # checkpoint (or signs with another key) is refused all the same.
        proxy.forge_state = False
        with docstore.connect(proxy.target, trusted_state=T, verifier_key=real_key, trust_unsigned=True) as weak:
            proxy.forgery = forger.forge(k=2, checkpoint="stranger")
            with pytest.raises(VerificationError, match="not signed by a pinned key"):
                weak[COLL].get(GHOST_ID, at_tx=5)
            proxy.forgery = forger.forge(k=2, checkpoint="none")
            with pytest.raises(VerificationError, match="carries no signed checkpoint"):
                weak[COLL].get(GHOST_ID, at_tx=5)
        proxy.forgery = None

        # --- the honest server, directly, with the same state file: still works
        with docstore.connect(srv.target, state_file=state_file, verifier_key=real_key) as honest:
            assert honest.trusted_state == T
            assert honest[COLL].get("p2") == DOCS[1]
            with pytest.raises(DocumentNotFoundError):
                honest[COLL].get(GHOST_ID)
            honest[COLL].insert(copy.deepcopy(DOCS[2]))
            assert honest[COLL].get("p3") == DOCS[2]  # a genuine newer state, signed: accepted
            assert honest.trusted_state.tx_id == 4 and read_state_file(state_file) == honest.trusted_state
        # the file the opt-in client poisoned now refuses the honest server
        with pytest.raises(VerificationError, match="lost transactions|rewritten|differs"):
            docstore.connect(srv.target, state_file=unsigned_file)

        # --- the empty ledger's state is no trusted state for a client by itself
        empty = kvcore.State(0, EMPTY_ROOT)
        with pytest.raises(VerificationError, match="transaction 0"):
            docstore.connect(srv.target, trusted_state=empty)
        with docstore.connect(srv.target, trusted_state=empty, verifier_key=real_key) as keyed:
            assert keyed[COLL].get("p3") == DOCS[2] and keyed.trusted_state.tx_id == 4
        with pytest.raises(VerificationError, match="transaction 0, trusts nothing by itself"):
            docstore.connect(srv.target, trusted_state=empty, trust_on_first_use=True)  # no key: nothing newer
        with docstore.connect(srv.target, state_file=tmp_path / "tofu.json", trust_on_first_use=True) as tofu:
            assert tofu.trusted_state.tx_id == 4  # the server's signed state, and its key pinned with it
            assert json.loads((tmp_path / "tofu.json").read_text())["verifier_keys"] == [real_key]


# ------------------------------------------------------------------ the disk attacker
def test_embedded_verifying_reader_refuses_a_disk_forgery(tmp_path):
    real = tmp_path / "real"
    with docstore.open(real, origin=ORIGIN) as db:
        c = db.create_collection(COLL)
        c.insert(copy.deepcopy(DOCS[0]))
        c.insert(copy.deepcopy(DOCS[1]))
        T = db.state()
        T_note = db.checkpoint(T)
        real_key = db.verifier_key()

    # An attacker with write access to a copy, but not the key: it appends forged transactions
    # with the library itself (a fresh key under the ledger's real name signs them).
    forged = tmp_path / "forged"
    shutil.copytree(real, forged)
    os.remove(forged / "signing.key")
    with docstore.open(forged, origin=ORIGIN) as db:
        assert db.verifier_key() != real_key and db.origin == ORIGIN
        db[COLL].insert(copy.deepcopy(GHOST))
        db[COLL].insert({"_id": "filler", "x": 1})
        assert db.state().tx_id == 5
    state_file = tmp_path / "reader.json"
    with docstore.open(forged, verify=True, trusted_state=T, verifier_key=real_key, state_file=state_file) as reader:
        # a get proves the current revision, as of the current state: the forged one, which no
        # pinned key signed, so even a document unchanged since T is refused (a past revision,
        # as of T, is still proven relative to T itself)
        for doc_id in ("p1", GHOST_ID):
            with pytest.raises(VerificationError, match="not signed by a pinned key"):
                reader[COLL].get(doc_id)
        assert reader[COLL].get("p1", at_tx=T.tx_id) == DOCS[0]
        with pytest.raises(VerificationError, match="not signed by a pinned key"):
            list(reader[COLL].find({"status": "approved"}))
        with pytest.raises(VerificationError, match="not signed by a pinned key"):
            reader[COLL].history(GHOST_ID)
        assert reader.trusted_state == T
    assert read_state_file(state_file) == T
    with docstore.open(forged, verify=True, trusted_state=T_note, verifier_key=real_key) as reader:
        with pytest.raises(VerificationError, match="not signed by a pinned key"):
            reader[COLL].get(GHOST_ID)
    with docstore.open(forged, verify=True, trusted_state=T) as reader:  # no key pinned
        with pytest.raises(VerificationError, match="signed by a key you pin"):
            reader[COLL].get(GHOST_ID)

    # The limit: an attacker who also holds the signing key IS the operator. Its forged
    # transactions are signed by the real key and accepted; signatures bind the operator to
    # one history, and only witnesses comparing checkpoints catch an operator who forks it.
    insider = tmp_path / "insider"
    shutil.copytree(real, insider)
    with docstore.open(insider) as db:
        db[COLL].insert(copy.deepcopy(GHOST))
    with docstore.open(insider, verify=True, trusted_state=T, verifier_key=real_key) as reader:
        assert reader[COLL].get(GHOST_ID) == GHOST
        assert reader.trusted_state.tx_id == 4


def test_empty_ledger_state_is_no_trusted_state(chain, tmp_path):
    empty = kvcore.State(0, EMPTY_ROOT)
    assert chain["states"][0] == empty
    place = chain["place"]
    if place.backend == "files":  # a copy: the module's database is left as it was
        shutil.copytree(place.target, tmp_path / "db")
        place = type(place)("files", tmp_path / "db", None)
    with pytest.raises(VerificationError, match="transaction 0"):
        place.open(verify=True, trusted_state=empty)
    with pytest.raises(VerificationError, match="transaction 0"):
        place.open(verify=True, trusted_state=chain["notes"][0])
    with place.open(verify=True, trusted_state=empty, trust_on_first_use=True) as db:
        assert db.trusted_state == empty  # allowed as a starting point, yet it authenticates nothing:
        with pytest.raises(VerificationError, match="transaction 0, trusts nothing by itself"):
            db[COLL].get("p5")  # every later state still needs a pinned key's signature
    with place.open(verify=True, trusted_state=empty, verifier_key=chain["key"]) as db:
        assert db[COLL].get("p5") == DOCS[4]  # every later state signed by the pinned key
        assert db.trusted_state == chain["states"][6]

    # equal sizes: the roots must be equal (and 0 -> 0 is the empty tree's root only)
    kvcore.verify_consistency(empty, empty, kvcore.ConsistencyProof(0, 0, []))
    other = kvcore.State(0, _sha(b"x"))
    with pytest.raises(kvcore.VerificationError):
        kvcore.verify_consistency(empty, other, kvcore.ConsistencyProof(0, 0, []))
    with pytest.raises(kvcore.VerificationError):
        kvcore.verify_consistency(other, other, kvcore.ConsistencyProof(0, 0, []))
    s3 = chain["states"][3]
    kvcore.verify_consistency(s3, s3, kvcore.ConsistencyProof(3, 3, []))
    with pytest.raises(kvcore.VerificationError, match="roots differ"):
        kvcore.verify_consistency(s3, kvcore.State(3, _sha(b"y")), kvcore.ConsistencyProof(3, 3, []))
    with pytest.raises(kvcore.VerificationError):
        kvcore.verify_consistency(s3, kvcore.State(3, _sha(b"y")), kvcore.ConsistencyProof(3, 3, [s3.root]))


# ------------------------------------------------------------------ strict bundles
def test_strict_bundle_parsing(chain, monkeypatch):
    T = chain["states"][3]
    plain = chain["genuine"][3]  # relative to T itself, version 2, with T's checkpoint
    assert docstore.verify(plain, T) == DOCS[1]
    newer = chain["newer"]
    key = chain["key"]

    def refused(d: Any, match: str, trusted: Any = T) -> None:
        with pytest.raises(VerificationError, match=match):
            docstore.verify(d, trusted, verifier_keys=key)
        with pytest.raises(VerificationError, match=match):
            docstore.verify(json.dumps(d), trusted, verifier_keys=key)

    refused({**plain, "witness": "trust me"}, "unknown fields")
    refused({**newer, "consistency": {**newer["consistency"], "note": 1}}, "holds exactly state, old_tx_id")
    cons = dict(newer["consistency"])
    del cons["path"]
    refused({**newer, "consistency": cons}, "holds exactly state, old_tx_id")
    refused({**plain, "version": 4}, "tx_meta.* holds exactly")  # version 4 carries tx_meta (issue 18)
    refused({**plain, "version": 5}, "non-empty list of erasures")  # version 5 carries erasures (issue 18)
    for version in (True, "2", 2.0, 8, 0, None, -1):
        refused({**plain, "version": version}, "version .* is not supported")
    # version 3 holds proofs of the current state only: a document proof claiming it is refused
    refused({**plain, "version": 3}, "unknown proof kind 'document' for version 3")
    # a consistency block a proof relative to the trusted state itself does not use
    unused = {**plain, "consistency": {"state": T.to_dict(), "old_tx_id": 3, "new_tx_id": 3, "path": []}}
    refused(unused, "carries a consistency proof it does not use")
    # version 1 (no checkpoint field) relative to the trusted state still verifies; with one, not
    v1 = {k: v for k, v in plain.items() if k != "checkpoint"} | {"version": 1}
    assert docstore.verify(v1, T) == DOCS[1] and docstore.verify(json.dumps(v1), T, verifier_keys=key) == DOCS[1]
    refused({**v1, "checkpoint": plain["checkpoint"]}, "unknown fields .*checkpoint.* for version 1")
    refused({**plain, "checkpoint": 7}, "'checkpoint' is the text of a signed note")
    # a version-1 bundle cannot carry a checkpoint, so it never proves a newer state (even a genuine one)
    newer_v1 = {k: v for k, v in newer.items() if k != "checkpoint"} | {"version": 1}
    refused(newer_v1, "carries no signed checkpoint")
    own = {k: v for k, v in newer_v1.items() if k != "consistency"}
    assert docstore.verify(own, chain["states"][6]) == DOCS[4]  # relative to its own state: fine

    # a bundle larger than MAX_BUNDLE_BYTES is refused before any parsing
    class Parsed(Exception):
        pass

    def no_parse(*a: Any, **kw: Any) -> Any:
        raise Parsed

    monkeypatch.setattr(json, "loads", no_parse)
    with pytest.raises(Parsed):  # the patch is live: a small bundle does reach the parser
        bundle_mod.load(json.dumps(plain))
    limit = bundle_mod.MAX_BUNDLE_BYTES
    for big in (b" " * (limit + 1), " " * (limit + 1), "é" * (limit // 2 + 1)):
        with pytest.raises(VerificationError, match=f"at most {limit} bytes"):
            bundle_mod.load(big)
        with pytest.raises(VerificationError, match=f"at most {limit} bytes"):
            docstore.verify(big, T)
    monkeypatch.undo()
    assert docstore.verify(json.dumps(plain), T) == DOCS[1]


def test_edited_checkpoints_are_refused(chain):
    T, newer, key = chain["states"][3], chain["newer"], chain["key"]
    note = newer["checkpoint"]
    assert docstore.verify(newer, T, verifier_keys=key) == DOCS[4]
    body, sigs = note.split("\n\n")
    text = body + "\n"  # the signed text: three lines and the state-map line, each ending in a newline
    origin, size, root, map_line, end = text.split("\n")
    assert (origin, size, end) == (ORIGIN, "6", "") and sigs.count("\n") == 1
    assert map_line.startswith("state-map ")
    dash, name, blob = sigs[:-1].split(" ")
    raw = base64.b64decode(blob)
    key_id, sig = raw[:4], raw[4:]

    def sig_line(nm: str = name, kid: bytes = key_id, s: bytes = sig) -> str:
        return f"{dash} {nm} {_b64(kid + s)}\n"

    other_root = _b64(_sha(base64.b64decode(root)))
    flipped = bytes([sig[0] ^ 1]) + sig[1:]
    stranger = Signer.generate(ORIGIN)
    edits = {
        "origin line": (f"{ORIGIN}x\n{size}\n{root}\n{map_line}\n\n" + sig_line(), "does not verify"),
        "state-map line removed": (f"{origin}\n{size}\n{root}\n\n" + sig_line(), "does not verify"),
        "state-map line edited": (
            f"{origin}\n{size}\n{root}\nstate-map {other_root}\n\n" + sig_line(), "does not verify"
        ),
        "state-map line doubled": (f"{origin}\n{size}\n{root}\n{map_line}\n{map_line}\n\n" + sig_line(), "once"),
        "state-map line not a root": (f"{origin}\n{size}\n{root}\nstate-map AAAA\n\n" + sig_line(), "not 32 bytes"),
        "origin line, key name too": (
            f"{ORIGIN}x\n{size}\n{root}\n{map_line}\n\n" + sig_line(nm=ORIGIN + "x"), "not signed by a pinned key"
        ),
        "size line": (f"{origin}\n7\n{root}\n{map_line}\n\n" + sig_line(), "names another state"),
        "size line, leading zero": (f"{origin}\n06\n{root}\n{map_line}\n\n" + sig_line(), "without leading zeros"),
        "root line": (f"{origin}\n{size}\n{other_root}\n{map_line}\n\n" + sig_line(), "names another state"),
        "extension line": (f"{origin}\n{size}\n{root}\n{map_line}\nextra\n\n" + sig_line(), "does not verify"),
        "signature bytes": (text + "\n" + sig_line(s=flipped), "does not verify"),
        "signature truncated": (text + "\n" + sig_line(s=sig[:-1]), "does not verify"),
        "key id": (text + "\n" + sig_line(kid=bytes([key_id[0] ^ 1]) + key_id[1:]), "not signed by a pinned key"),
        # another key that happens to share the name and 32-bit id (2**32 work to find): caught
        "stranger's signature under the real key id": (
            text + "\n" + sig_line(s=base64.b64decode(stranger.signature_line(text).split(" ")[2])[4:]),
            "does not verify",
        ),
        "key name": (text + "\n" + sig_line(nm="immudoc.example/other"), "not signed by a pinned key"),
        "blank line removed": (text + sig_line(), "no blank line before its signatures"),
        "blank line doubled": (text + "\n\n" + sig_line(), "at least three non-empty lines"),
        "no signature": (text + "\n", "no signature lines"),
        "extra garbage line": (note + "garbage\n", "starts with an em dash"),
        "extra bad signature by the pinned key": (note + sig_line(s=flipped), "does not verify"),
        "extra line without newline": (note + sig_line()[:-1], "ends with a newline"),
        "too many signature lines": (note + sig_line() * 64, "at most 64 signatures"),
        "CRLF": (note.replace("\n", "\r\n"), "no control characters but newlines"),
        "text after the signatures": (note + "\nmore\n", "starts with an em dash"),
    }
    for what, (edited, why) in edits.items():
        assert edited != note, what
        for trusted in (T, chain["notes"][3]):
            with pytest.raises(VerificationError, match=why):
                docstore.verify({**newer, "checkpoint": edited}, trusted, verifier_keys=key)
        with pytest.raises(VerificationError):
            docstore.verify({**newer, "checkpoint": edited}, T)  # no key: refused all the more
    # An added cosignature by a key nobody pins (a witness, in C2SP terms) is ignored, as the
    # signed-note spec requires: it alters nothing the pinned key signed.
    witness = Signer.generate("witness.example/w1")
    cosigned = note + witness.signature_line(text)
    assert docstore.verify({**newer, "checkpoint": cosigned}, T, verifier_keys=key) == DOCS[4]
    # ... but pinned, its signature must verify too
    bad_witness = note + f"{dash} {witness.name} {_b64(witness.id.to_bytes(4, 'big') + flipped)}\n"
    with pytest.raises(VerificationError, match="does not verify"):
        docstore.verify({**newer, "checkpoint": bad_witness}, T, verifier_keys=[key, str(witness.verifier)])
    # a "trusted" checkpoint the forger signed itself is refused when the real key is pinned
    forged_t = Forger(T.to_dict(), chain["genuine"][3], ORIGIN).forge(k=1).bundle["checkpoint"]
    with pytest.raises(VerificationError, match="not signed by a pinned key"):
        docstore.verify(newer, forged_t, verifier_keys=key)
    # the trusted checkpoint itself, edited, is refused when keys are pinned
    t_note = chain["notes"][3]
    edited_t = t_note.replace("\n3\n", "\n2\n", 1)
    with pytest.raises(VerificationError, match="does not verify"):
        docstore.verify(newer, edited_t, verifier_keys=key)
