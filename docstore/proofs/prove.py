"""Building proof bundles from a database (the verifier needs none of this)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import kvcore

from docstore import records
from docstore.errors import DocumentNotFoundError, NotFoundError, QueryError
from docstore.flatten import OBJECT_HEADER, decode_value, split_pointer, unflatten
from docstore.proofs.bundle import Property, Proof
from docstore.records import Header

if TYPE_CHECKING:
    from docstore.database import Database


def _state(ledger: kvcore.Ledger, state: kvcore.State | None, tx_id: int) -> kvcore.State:
    if state is None:
        return ledger.state()
    if not isinstance(state, kvcore.State):
        raise QueryError(f"state must be a kvcore.State, got {type(state).__name__}")
    if state.tx_id < tx_id:
        raise QueryError(f"state {state.tx_id} is older than transaction {tx_id}, which it would have to prove")
    return state


def _bundle_consistency(ledger: kvcore.Ledger, proof: Proof, known: kvcore.State | None) -> Proof:
    if known is None or known == proof.state:
        return proof
    if not isinstance(known, kvcore.State):
        raise QueryError(f"known_state must be a kvcore.State, got {type(known).__name__}")
    old, new = sorted((known.tx_id, proof.state.tx_id))
    try:
        cp = ledger.prove_consistency(old, new)
    except kvcore.TxNotFoundError as e:
        raise QueryError(f"cannot link the known state: {e}") from None
    return proof.with_consistency(known, cp)


def prove_document(
    db: Database,
    coll: str,
    doc_id: str,
    pointer: str | None = None,
    at_tx: int | None = None,
    state: kvcore.State | None = None,
    known_state: kvcore.State | None = None,
) -> Proof:
    ledger = db.ledger
    try:
        entry = ledger.get(records.header_key(coll, doc_id), at_tx=at_tx)
    except kvcore.KeyNotFoundError:
        where = "" if at_tx is None else f" as of transaction {at_tx}"
        raise DocumentNotFoundError(f"no document {doc_id!r} in {coll!r}{where}") from None
    except kvcore.TxNotFoundError as e:
        raise QueryError(str(e)) from None
    header = Header.decode(entry.value)
    o, tx_id = entry.index, entry.tx_id
    state = _state(ledger, state, tx_id)
    stored = ledger.entries(tx_id, o + 1, header.n) if header.n else []
    cut = len(records.property_prefix(coll, doc_id)) + 8
    props = [
        Property(e.key[cut:].decode(), e.value[records.SALT_BYTES :], e.value[: records.SALT_BYTES])
        for e in stored
    ]
    if pointer is None:
        indices = list(range(o, o + header.n + 1))
        claim = None if header.deleted else unflatten([(p.pointer, p.encoded) for p in props])
        kind, ordinal, shown = "document", None, props
    else:
        split_pointer(pointer)  # InvalidPointerError for a malformed pointer
        if header.deleted:
            raise DocumentNotFoundError(f"document {doc_id!r} in {coll!r} is deleted at that revision")
        ordinal = next((i for i, p in enumerate(props) if p.pointer == pointer), None)
        inside = [p for p in props if p.pointer.startswith(pointer + "/")] if pointer else props
        if ordinal is None or props[ordinal].encoded == OBJECT_HEADER:
            if inside:
                raise QueryError(
                    f"pointer {pointer!r} addresses a container of {len(inside)} properties; prove "
                    f"one of them (e.g. {inside[0].pointer!r}) or the whole document"
                )
            raise NotFoundError(f"document {doc_id!r} has no property at {pointer!r}")
        indices = [o, o + 1 + ordinal]
        claim = decode_value(props[ordinal].encoded)
        kind, shown = "property", [props[ordinal]]
    kv_proof = ledger.prove_entries(tx_id, indices, state)
    proof = Proof(
        kind=kind,
        collection=coll,
        id=doc_id,
        revision=header.revision,
        pointer=pointer,
        claim=claim,
        header_value=entry.value,
        header_index=o,
        properties=shown,
        ordinal=ordinal,
        tx=kv_proof.header,
        path=kv_proof.path,
        tx_path=kv_proof.tx_path,
        state=state,
    )
    return _bundle_consistency(ledger, proof, known_state)


def prove_collection(
    db: Database,
    coll: str,
    at_tx: int | None = None,
    state: kvcore.State | None = None,
    known_state: kvcore.State | None = None,
) -> Proof:
    import orjson

    ledger = db.ledger
    try:
        entry = ledger.get(records.collection_key(coll), at_tx=at_tx)
    except kvcore.KeyNotFoundError:
        raise NotFoundError(f"no collection {coll!r} as of transaction {at_tx}") from None
    except kvcore.TxNotFoundError as e:
        raise QueryError(str(e)) from None
    state = _state(ledger, state, entry.tx_id)
    kv_proof = ledger.prove_entries(entry.tx_id, [entry.index], state)
    proof = Proof(
        kind="collection",
        collection=coll,
        id=None,
        revision=entry.revision,
        pointer=None,
        claim=orjson.loads(entry.value),
        header_value=entry.value,
        header_index=entry.index,
        properties=[],
        ordinal=None,
        tx=kv_proof.header,
        path=kv_proof.path,
        tx_path=kv_proof.tx_path,
        state=state,
    )
    return _bundle_consistency(ledger, proof, known_state)
