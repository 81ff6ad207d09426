"""Building proof bundles from an engine's ledger (the verifier needs none of this)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn

import kvcore

from kvcore.erasure import ERASED_KEY

from docstore.documents import erasure, records
from docstore.errors import (
    CorruptDataError,
    DocumentNotFoundError,
    InvalidPointerError,
    NotFoundError,
    QueryError,
)
from docstore.documents.flatten import OBJECT_HEADER, decode_value, split_pointer, unflatten
from docstore.proofs.bundle import ErasureEntry, Property, Proof
from docstore.documents.records import Header
from docstore.engine.state import doc_from_items

if TYPE_CHECKING:
    from docstore.engine.engine import Engine


def _state(
    engine: Engine, state: kvcore.State | None, known: kvcore.State | None, tx_id: int
) -> kvcore.State:
    """The state to prove against: ``state`` if given; else the verifier's ``known`` state when
    it already holds transaction ``tx_id`` (nothing newer to authenticate); else the current one."""
    if known is not None:
        engine.own_state(known, "known_state", trusted=False)
    if state is None:
        if known is not None and known.tx_id >= tx_id:
            return known
        return engine.ledger.state()
    engine.own_state(state, "state", trusted=False)
    if state.tx_id < tx_id:
        raise QueryError(f"state {state.tx_id} is older than transaction {tx_id}, which it would have to prove")
    return state


def _bundle(engine: Engine, proof: Proof, known: kvcore.State | None) -> Proof:
    """Add the signed checkpoint of the proof's state and, for a verifier that knows another
    state, the consistency proof between the two."""
    proof = proof.with_checkpoint(engine.checkpoint_or_none(proof.state))
    if known is None or known == proof.state:
        return proof
    old, new = sorted((known, proof.state), key=lambda s: s.tx_id)
    return proof.with_consistency(known, engine.prove_consistency(old, new))


def prove_document(
    engine: Engine,
    coll: str,
    doc_id: str,
    pointer: str | None = None,
    at_tx: int | None = None,
    state: kvcore.State | None = None,
    known_state: kvcore.State | None = None,
) -> Proof:
    ledger = engine.ledger
    entry = engine.header_entry(coll, doc_id, at_tx)
    if entry is None:
        where = "" if at_tx is None else f" as of transaction {at_tx}"
        raise DocumentNotFoundError(f"no document {doc_id!r} in {coll!r}{where}")
    header = Header.decode(entry.value)
    o, tx_id = entry.index, entry.tx_id
    erased = ledger.erased_by(tx_id, o + 1, header.n) if header.n else {}
    state = _state(engine, state, known_state, max([tx_id, *erased.values()]))
    prefix = records.property_prefix(coll, doc_id)
    cut = len(prefix) + 8
    salt = records.SALT_BYTES
    if pointer is None:
        stored = ledger.entry_items(tx_id, o + 1, header.n) if header.n else []
        try:
            props = [
                Property(k[cut:].decode(), b"", b"", ledger.erased_leaf(tx_id, o + 1 + i)) if o + 1 + i in erased
                else Property(k[cut:].decode(), v[salt:], v[:salt])
                for i, (k, v) in enumerate(stored) if v is not None
            ]
        except UnicodeDecodeError:
            raise CorruptDataError(f"document {doc_id!r} in {coll!r}: a stored property pointer is damaged") from None
        if len(props) != header.n:
            raise CorruptDataError(f"document {doc_id!r} in {coll!r}: a stored property is a tombstone")
        if header.deleted:
            claim = None
        elif erased:
            claim = doc_from_items(header, stored, prefix, {i - o - 1: by for i, by in erased.items()})
        else:
            claim = unflatten([(p.pointer, p.encoded) for p in props])
        run = ledger.prove_entries(tx_id, range(o, o + header.n + 1), state)
        proof = Proof(
            "document", coll, doc_id, header.revision, None, claim, entry.value, o, props, None,
            run.header, run.path, run.tx_path, state, erasures=erasure_entries(ledger, set(erased.values()), state),
        )
        return _bundle(engine, proof, known_state)
    split_pointer(pointer)  # InvalidPointerError for a malformed pointer
    if header.deleted:
        raise DocumentNotFoundError(f"document {doc_id!r} in {coll!r} is deleted at that revision")
    try:
        want = pointer.encode()
    except UnicodeEncodeError:
        raise InvalidPointerError(f"JSON pointer {pointer!r} is not encodable as UTF-8") from None
    # The property's entry is the one of the document's run whose key ends with the pointer
    # and is that long: the ledger reads the entry at the ordinal where this pointer was last
    # found, else the run's entries at once comparing their keys only (no value is decoded),
    # and proves the entry it found.
    found = ledger.find_and_prove(tx_id, o + 1, header.n, cut + len(want), want, state)
    if found is None or found[1][salt:] == OBJECT_HEADER:
        _no_property(ledger, coll, doc_id, pointer, tx_id, o, header.n, cut, want)
    index, value, kv_proof = found
    if index in erased:
        proof = Proof(
            "property", coll, doc_id, header.revision, pointer, erasure.marker(erased[index]), None,
            index, [Property(pointer, b"", b"", ledger.erased_leaf(tx_id, index))], index - o - 1, kv_proof.header,
            kv_proof.entry_path, kv_proof.tx_path, state, erasures=erasure_entries(ledger, {erased[index]}, state),
        )
        return _bundle(engine, proof, known_state)
    encoded = value[salt:]
    proof = Proof(
        "property", coll, doc_id, header.revision, pointer, decode_value(encoded), None,
        index, [Property(pointer, encoded, value[:salt])], index - o - 1, kv_proof.header,
        kv_proof.entry_path, kv_proof.tx_path, state,
    )
    return _bundle(engine, proof, known_state)


def erasure_entries(ledger: kvcore.Ledger, by: set[int], state: kvcore.State) -> list[ErasureEntry] | None:
    """The proofs of the erasure records of transactions ``by`` (None if there are none)."""
    out = []
    for e in sorted(by):
        for i, (k, v) in enumerate(ledger.entry_items(e)):
            if k == ERASED_KEY and v is not None:
                kv_proof = ledger.prove_entry_at(e, i, state)
                out.append(ErasureEntry(kv_proof.header, i, v, kv_proof.entry_path, kv_proof.tx_path))
                break
        else:
            raise CorruptDataError(f"transaction {e} holds no erasure record")
    return out or None


def _no_property(
    ledger: kvcore.Ledger, coll: str, doc_id: str, pointer: str, tx_id: int, o: int, n: int, cut: int, want: bytes
) -> NoReturn:
    """Why ``pointer`` cannot be proven: it addresses a container, or nothing (or the stored
    entry is a tombstone, which docstore never writes for a property)."""
    stored = ledger.entry_items(tx_id, o + 1, n) if n else []
    size = cut + len(want)
    for k, v in stored:
        if len(k) == size and k.endswith(want) and v is None:
            raise CorruptDataError(f"document {doc_id!r} in {coll!r}: property {pointer!r} is stored as a tombstone")
    inside = [k[cut:].decode("utf-8", "replace") for k, _v in stored if k[cut:].startswith(want + b"/")]
    if inside:
        raise QueryError(
            f"pointer {pointer!r} addresses a container of {len(inside)} properties; prove "
            f"one of them (e.g. {inside[0]!r}) or the whole document"
        )
    raise NotFoundError(f"document {doc_id!r} has no property at {pointer!r}")


def prove_collection(
    engine: Engine,
    coll: str,
    at_tx: int | None = None,
    state: kvcore.State | None = None,
    known_state: kvcore.State | None = None,
) -> Proof:
    import orjson

    from docstore.engine.engine import translate

    ledger = engine.ledger
    engine.check_open()
    with translate():
        entry = ledger.lookup(records.collection_key(coll), at_tx=at_tx)
    if entry is None:
        raise NotFoundError(f"no collection {coll!r} as of transaction {at_tx}")
    state = _state(engine, state, known_state, entry.tx_id)
    kv_proof = ledger.prove_entry_at(entry.tx_id, entry.index, state)
    proof = Proof(
        "collection", coll, None, 0, None, orjson.loads(entry.value), entry.value,
        entry.index, [], None, kv_proof.header, kv_proof.entry_path, kv_proof.tx_path, state,
    )
    return _bundle(engine, proof, known_state)
