"""The embedded verifying reader (``docstore.open(..., verify=True)``): reads answered through
proofs of the engine's own ledger, checked by the pure verifier against the trusted state.

Each read proves relative to the trusted state when the revision is already in it, else
relative to the ledger's current state, which the engine's trust tracker accepts only if it is
signed by a pinned key and extends the trusted state (see :mod:`docstore.proofs.trust`).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, TypeVar

from docstore.engine.state import same_json
from docstore.errors import DocumentNotFoundError, VerificationError
from docstore.documents.records import Header
from docstore.proofs.bundle import Proof
from docstore.proofs.prove import prove_collection, prove_document
from docstore.proofs.provestate import prove_absent, prove_collections, prove_find, prove_latest
from docstore.proofs.statebundle import Query, StateProof
from docstore.proofs.trust import TrustTracker
from docstore.proofs.verify import verify
from docstore.proofs.verifystate import asks

if TYPE_CHECKING:
    import kvcore

    from docstore.engine.engine import Engine


P = TypeVar("P", Proof, StateProof)


def _trust(engine: Engine) -> TrustTracker:
    trust = engine.trust
    assert trust is not None, "a verified read on a database that does not verify"
    return trust


def _trusted_base(engine: Engine) -> kvcore.State:
    """The trusted state, after checking the ledger has not fallen behind it."""
    trust = _trust(engine)
    trust.link(engine.prove_consistency)
    trust.check_current(engine.ledger.state())
    return trust.state


def _authenticated(engine: Engine, proof: P) -> P:
    """Accept a proof's state into the trusted history (signed if newer); returns the proof
    relative to that state alone."""
    _trust(engine).accept(
        proof.state, proof.checkpoint, engine.prove_consistency, proof.consistency_state, proof.consistency
    )
    return proof._replace(consistency=None, consistency_state=None)


def current_state(engine: Engine, state: kvcore.State | None = None) -> kvcore.State:
    """The ledger's current state (or ``state``, one of its states), authenticated: not behind
    the trusted state, consistent with it, and signed by a pinned key if newer (the trusted
    state then advances to it)."""
    trust = _trust(engine)
    engine.check_open()
    with engine.verify_lock:
        base = _trusted_base(engine)
        own = engine.current_state() if state is None else state
        if state is None:
            trust.check_current(own, base)
        note = engine.checkpoint_or_none(own) if own.tx_id > base.tx_id else None
        trust.accept(own, note, engine.prove_consistency)
    return own


def revision(engine: Engine, coll: str, doc_id: str, at_tx: int | None) -> tuple[dict | None, int]:
    """(document or None for a deletion, revision) current as of ``at_tx``, proven."""
    trust = _trust(engine)
    engine.check_open()
    started = time.monotonic()
    with engine.verify_lock:
        proof = _authenticated(engine, prove_document(engine, coll, doc_id, None, at_tx, None, _trusted_base(engine)))
    doc = verify(proof, proof.state)
    if at_tx is None:
        trust.seen_revision(coll, doc_id, proof.revision, started)
    return doc, proof.revision


def document(engine: Engine, coll: str, doc_id: str, at_tx: int | None = None) -> dict:
    """The live document as of ``at_tx``, proven; DocumentNotFoundError if it is deleted."""
    doc, _rev = revision(engine, coll, doc_id, at_tx)
    if doc is None:
        raise DocumentNotFoundError(f"document {doc_id!r} in {coll!r} is deleted")
    return doc


def proof_at(engine: Engine, coll: str, doc_id: str, tx_id: int) -> Proof:
    """A verified proof of the revision of ``doc_id`` current at transaction ``tx_id``."""
    with engine.verify_lock:
        proof = _authenticated(engine, prove_document(engine, coll, doc_id, None, tx_id, None, _trusted_base(engine)))
    verify(proof, proof.state)
    return proof


def tx_meta(engine: Engine, tx_id: int, state: kvcore.State) -> dict[str, Any] | None:
    """The metadata committed with transaction ``tx_id`` (docstore.documents.txmeta), proven
    in ``state`` (an authenticated state): docstore.proofs.txproof."""
    from docstore.proofs.txproof import prove_tx, verify_tx

    return verify_tx(prove_tx(engine, tx_id, state), tx_id, state)[1]


def definition(engine: Engine, coll: str) -> dict[str, Any]:
    """A collection's current definition, proven (and compared with the one the engine serves)."""
    engine.check_open()
    with engine.verify_lock:
        proof = _authenticated(engine, prove_collection(engine, coll, None, None, _trusted_base(engine)))
    meta = verify(proof, proof.state)
    if not same_json(meta, engine.collection_state(coll).meta):
        raise VerificationError(
            f"collection {coll!r}: the definition the database serves differs from the one the ledger proves"
        )
    return meta


def latest(engine: Engine, coll: str, doc_id: str) -> dict:
    """The document's current revision, proven current (its freshness); DocumentNotFoundError
    only once its absence is proven too."""
    trust = _trust(engine)
    engine.check_open()
    started = time.monotonic()
    with engine.verify_lock:
        base = _trusted_base(engine)
        try:
            proof = _authenticated(engine, prove_latest(engine, coll, doc_id, None, None, base, not trust.pinned))
        except DocumentNotFoundError:
            absent = _authenticated(engine, prove_absent(engine, coll, doc_id, None, base, not trust.pinned))
            asks(absent, "absent", coll, id=doc_id)
            verify(absent, absent.state, trust.pinned)
            raise DocumentNotFoundError(f"no document {doc_id!r} in {coll!r} (its absence is proven)") from None
    asks(proof, "latest", coll, id=doc_id)
    doc = verify(proof, proof.state, trust.pinned)
    trust.seen_revision(coll, doc_id, Header.decode(proof.documents[0].header).revision, started)
    return doc


def query(engine: Engine, coll: str, q: Query) -> Any:
    """A find's documents, a count or distinct values, proven complete as of the current state."""
    trust = _trust(engine)
    engine.check_open()
    with engine.verify_lock:
        proof = _authenticated(engine, prove_find(engine, coll, q, None, _trusted_base(engine), not trust.pinned))
    asks(proof, "find", coll, query=q)
    return verify(proof, proof.state, trust.pinned)


def collections(engine: Engine) -> list[str]:
    """The names of every collection, proven complete as of the current state."""
    trust = _trust(engine)
    engine.check_open()
    with engine.verify_lock:
        proof = _authenticated(engine, prove_collections(engine, None, _trusted_base(engine), not trust.pinned))
    asks(proof, "collections", "")
    return sorted(verify(proof, proof.state, trust.pinned))
