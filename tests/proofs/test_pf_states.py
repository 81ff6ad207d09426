"""Proofs across states (consistency), and proof size O(log n)."""

from __future__ import annotations

import copy
import math

import pytest

import docstore
import docstore.proofs
import kvcore
from docstore import QueryError, VerificationError


@pytest.fixture(scope="module")
def world(module_place):
    db = module_place.open()
    c = db.create_collection("trials")
    c.insert({"_id": "p1", "dosage": {"mg": 5.0}, "consent": True})
    c.insert({"_id": "p2", "dosage": {"mg": 7.5}})
    states = {"old": db.state()}
    for i in range(5):
        c.insert({"_id": f"later-{i}", "i": i})
    c.update("p1", {"$set": {"dosage.mg": 6.0}})
    states["mid"] = db.state()
    for i in range(3):
        c.insert({"_id": f"latest-{i}", "i": i})
    states["new"] = db.state()
    yield db, c, states
    db.close()


def test_a_newer_proof_needs_a_signed_state_and_a_consistency_proof(world):
    db, c, st = world
    key = db.verifier_key()
    proof = c.prove("p2", "/dosage/mg")  # relative to the newest state
    assert proof.state == st["new"] and proof.checkpoint is not None
    with pytest.raises(VerificationError, match="newer than the trusted state"):
        docstore.verify(proof, st["old"])
    with pytest.raises(VerificationError, match="consistency proof"):
        docstore.verify(proof, st["old"], verifier_keys=[key])  # signed, but not linked
    # p2 has not changed since "old": a proof relative to the known state needs no signature
    known = c.prove("p2", "/dosage/mg", known_state=st["old"])
    assert known.state == st["old"] and known.consistency is None
    assert docstore.verify(known, st["old"]) == 7.5
    # p1 changed after "old": its proof is relative to a newer state, signed and linked
    bundled = c.prove("p1", "/dosage/mg", known_state=st["old"])
    assert bundled.state == st["new"] and bundled.consistency_state == st["old"]
    with pytest.raises(VerificationError, match="signed by a key you pin"):
        docstore.verify(bundled, st["old"])  # a consistency proof alone never authenticates it
    assert docstore.verify(bundled, st["old"], verifier_keys=[key]) == 6.0
    assert docstore.verify(docstore.proofs.load(bundled.to_json()), st["old"], verifier_keys=key) == 6.0
    # the bundled link is to "old" only: another trusted state is refused
    with pytest.raises(VerificationError):
        docstore.verify(bundled, st["mid"], verifier_keys=[key])
    # whole documents and collection definitions carry it the same way
    assert docstore.verify(c.prove("p1", known_state=st["old"]), st["old"], [key])["dosage"]["mg"] == 6.0
    assert docstore.verify(c.prove_schema(known_state=st["old"]), st["old"])["name"] == "trials"


def test_an_older_proof_verifies_against_a_newer_trusted_state(world):
    db, c, st = world
    proof = c.prove("p1", "/dosage/mg", at_tx=st["old"].tx_id, state=st["old"], known_state=st["new"])
    assert proof.state == st["old"] and proof.consistency_state == st["new"]
    assert docstore.verify(proof, st["new"]) == 5.0
    assert docstore.verify(proof.to_json(), st["new"]) == 5.0
    with pytest.raises(VerificationError, match="does not use"):
        docstore.verify(proof, st["old"])  # a consistency block that is not used is refused
    plain = c.prove("p1", "/dosage/mg", at_tx=st["old"].tx_id, state=st["old"])
    assert docstore.verify(plain, st["old"]) == 5.0
    with pytest.raises(VerificationError):
        docstore.verify(plain, st["new"])


def test_two_step_flow_with_a_separate_consistency_proof(world):
    db, c, st = world
    trusted = st["old"]
    proof = c.prove("p1", "/dosage/mg")  # relative to "now"
    cp = db.prove_consistency(trusted)
    assert (cp.old_tx_id, cp.new_tx_id) == (trusted.tx_id, st["new"].tx_id)
    docstore.verify_consistency(trusted, proof.state, cp)
    assert docstore.verify(proof, proof.state) == 6.0
    # the proof can be carried as JSON and parsed back
    cp2 = kvcore.ConsistencyProof.from_dict(cp.to_dict())
    docstore.verify_consistency(trusted, st["new"], cp2)
    # to an explicit newer state too
    cp_mid = db.prove_consistency(st["old"], st["mid"])
    docstore.verify_consistency(st["old"], st["mid"], cp_mid)
    docstore.verify_consistency(st["mid"], st["mid"], db.prove_consistency(st["mid"], st["mid"]))


def test_a_consistency_proof_linking_the_wrong_states_fails(world):
    db, c, st = world
    cp = db.prove_consistency(st["old"], st["mid"])
    with pytest.raises(VerificationError):
        docstore.verify_consistency(st["old"], st["new"], cp)  # other new state
    with pytest.raises(VerificationError):
        docstore.verify_consistency(st["mid"], st["new"], cp)
    # the right tx ids but a wrong root on either side
    for old, new in (
        (kvcore.State(st["old"].tx_id, bytes(32)), st["mid"]),
        (st["old"], kvcore.State(st["mid"].tx_id, st["new"].root)),
        (db.ledger.state(st["old"].tx_id - 1), st["mid"]),
    ):
        proof = kvcore.ConsistencyProof(old.tx_id, new.tx_id, cp.path) if old.tx_id == cp.old_tx_id else cp
        with pytest.raises(VerificationError):
            docstore.verify_consistency(old, new, proof)
    # every hash of the path matters
    for i in range(len(cp.path)):
        path = list(cp.path)
        path[i] = bytes([path[i][0] ^ 1]) + path[i][1:]
        with pytest.raises(VerificationError):
            docstore.verify_consistency(st["old"], st["mid"], kvcore.ConsistencyProof(cp.old_tx_id, cp.new_tx_id, path))
    with pytest.raises(VerificationError):
        docstore.verify_consistency(st["old"], st["mid"], kvcore.ConsistencyProof(cp.old_tx_id, cp.new_tx_id, cp.path[:-1]))
    # a state this ledger never had is refused by the prover at once
    with pytest.raises(VerificationError):
        db.prove_consistency(kvcore.State(st["old"].tx_id, bytes(32)))
    with pytest.raises(QueryError):
        db.prove_consistency(st["new"], st["old"])


def test_a_bundled_consistency_proof_is_bound(world):
    db, c, st = world
    key = [db.verifier_key()]
    base = c.prove("p1", "/dosage/mg", known_state=st["old"]).to_dict()
    assert docstore.verify(base, st["old"], key) == 6.0
    mutations = {
        "state-root": lambda d: d["consistency"]["state"].__setitem__("root", "00" * 32),
        "state-other": lambda d: d["consistency"].__setitem__("state", st["mid"].to_dict()),
        "old_tx_id": lambda d: d["consistency"].__setitem__("old_tx_id", d["consistency"]["old_tx_id"] + 1),
        "new_tx_id": lambda d: d["consistency"].__setitem__("new_tx_id", d["consistency"]["new_tx_id"] - 1),
        "path-dropped": lambda d: d["consistency"]["path"].pop(),
        "path-extra": lambda d: d["consistency"]["path"].append(d["consistency"]["path"][0]),
        "proof-state": lambda d: d.__setitem__("state", st["mid"].to_dict()),
        "removed": lambda d: d.pop("consistency"),
    }
    for i in range(len(base["consistency"]["path"])):
        mutations[f"path[{i}]"] = lambda d, i=i: d["consistency"]["path"].__setitem__(
            i, ("B" if d["consistency"]["path"][i][0] != "B" else "C") + d["consistency"]["path"][i][1:]
        )
    for name, mutate in mutations.items():
        d = copy.deepcopy(base)
        mutate(d)
        with pytest.raises(VerificationError):
            docstore.verify(d, st["old"], key)
            pytest.fail(f"the edit {name!r} was accepted")
    # a consistency proof from a forged ledger of the same length does not link either
    bad_state = kvcore.State(st["old"].tx_id, bytes(32))
    with pytest.raises(VerificationError):
        docstore.verify(base, bad_state, key)


def test_known_state_that_is_not_of_this_ledger(world, tmp_path):
    db, c, st = world
    with docstore.open(tmp_path / "elsewhere") as other:
        other.create_collection("trials")
        foreign = other.state()
    with pytest.raises(VerificationError, match="differs from the known_state"):
        c.prove("p2", "/dosage/mg", known_state=foreign)  # refused at once, not left to the verifier
    proof = c.prove("p2", "/dosage/mg", known_state=db.ledger.state(foreign.tx_id))
    with pytest.raises(VerificationError):  # and a proof linked to this ledger's state fails there
        docstore.verify(proof, foreign)
    with pytest.raises(QueryError):  # a state beyond this ledger cannot be linked
        c.prove("p2", "/dosage/mg", known_state=kvcore.State(st["new"].tx_id + 100, bytes(32)))
    with pytest.raises(QueryError):
        c.prove("p2", "/dosage/mg", state="now")
    with pytest.raises(QueryError):
        c.prove("p2", "/dosage/mg", known_state={"tx_id": 1})


def test_states_that_are_not_this_ledgers_get_docstore_errors(world):
    db, c, st = world
    now = st["new"]
    bad = [
        (dict(state=kvcore.State(now.tx_id + 90, bytes(32))), QueryError, "does not exist"),
        (dict(state=kvcore.State(now.tx_id, bytes(32))), VerificationError, "differs from the state given"),
        (dict(state=kvcore.State(-1, now.root)), QueryError, "names no transaction"),
        (dict(known_state=kvcore.State(st["old"].tx_id, bytes(32))), VerificationError, "differs from the known_state"),
    ]
    for kwargs, error, pattern in bad:
        for pointer in ("/dosage/mg", None):
            with pytest.raises(error, match=pattern):
                c.prove("p2", pointer, **kwargs)
        with pytest.raises(error, match=pattern):
            c.prove_schema(**kwargs)
    for old, error, pattern in [
        (kvcore.State(-1, bytes(32)), QueryError, "names no transaction"),
        (kvcore.State(st["old"].tx_id, bytes(32)), VerificationError, "not the one you trusted"),
        (kvcore.State(now.tx_id + 5, now.root), VerificationError, "rolled back"),
    ]:
        with pytest.raises(error, match=pattern):
            db.prove_consistency(old)
    with pytest.raises(QueryError, match="does not exist"):
        db.prove_consistency(st["old"], kvcore.State(now.tx_id + 5, now.root))
    with pytest.raises(VerificationError, match="differs from the new_state"):
        db.prove_consistency(st["old"], kvcore.State(st["mid"].tx_id, bytes(32)))
    assert all(issubclass(e, docstore.DocstoreError) for e in (QueryError, VerificationError))


# ------------------------------------------------------------------------------ proof size


def _bound(proof) -> int:
    return 2 * math.ceil(math.log2(proof.tx.n_entries)) + math.ceil(math.log2(proof.state.tx_id)) + 2


def _check_size(c, doc_id, state):
    for pointer in ("/a", None):
        proof = c.prove(doc_id, pointer, state=state)
        assert docstore.verify(proof, state) is not None
        assert len(proof.path) + len(proof.tx_path) <= _bound(proof), (
            doc_id, pointer, proof.tx.n_entries, state.tx_id, len(proof.path), len(proof.tx_path))


def test_proof_size_grows_logarithmically_with_transactions(tmp_path):
    """Small transactions: the tx path dominates; checked at 1, 10, 100 and 1000 transactions."""
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("c")
        states = {}
        for i in range(1, 1001):
            c.insert({"_id": f"d{i}", "a": i, "b": {"c": [i, str(i)]}, "e": None})
            if i in (1, 10, 100, 1000):
                states[i] = db.state()
        for n, state in states.items():
            for k in sorted({1, (n + 1) // 2, n}):
                _check_size(c, f"d{k}", state)
        first = c.prove_schema(state=db.ledger.state(1))  # a ledger of one transaction of one entry
        assert first.path == [] and first.tx_path == [] and docstore.verify(first, db.ledger.state(1))
        big = c.prove("d1", "/b/c/1", state=states[1000])
        assert len(big.tx_path) == math.ceil(math.log2(1001))
        assert len(big.path) <= 2 * math.ceil(math.log2(big.tx.n_entries))


def test_proof_size_in_one_large_transaction(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("c")
        c.insert_many([{"_id": f"d{i}", "a": i, "b": [i]} for i in range(5000)])
        state = db.state()
        n_entries = db.ledger.header(state.tx_id).n_entries
        assert n_entries == 5000 * 4  # header, _id, a, b/0
        for k in (0, 1, 2047, 2048, 2500, 4095, 4999):
            _check_size(c, f"d{k}", state)
            assert len(c.prove(f"d{k}", "/b/0", state=state).path) <= 2 * math.ceil(math.log2(n_entries))


def test_a_property_proof_among_20000_documents_is_under_2_kib(tmp_path):
    with docstore.open(tmp_path / "db") as db:
        c = db.create_collection("trials")
        for t in range(20):
            c.insert_many(
                [{"_id": f"patient-{t:02d}-{i:04d}", "dosage": {"mg": 5.0 + i}, "consent": True, "site": "Oslo"}
                 for i in range(1000)]
            )
        state = db.state()
        assert c.count() >= 20_000
        for doc_id in ("patient-00-0000", "patient-09-0500", "patient-19-0999"):
            proof = c.prove(doc_id, "/dosage/mg")
            assert proof.size < 2048, proof.size
            assert docstore.verify(proof.to_json(), state) == 5.0 + int(doc_id[-4:])
            assert len(proof.path) + len(proof.tx_path) <= _bound(proof)
