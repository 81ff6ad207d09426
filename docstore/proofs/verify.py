"""Pure verification of proof bundles: a function of (proof, trusted state, pinned keys), no I/O.

Checks, in order: the proof's state is authenticated (it is the trusted state; or older, and a
bundled consistency proof shows the trusted state extends it; or newer, signed by a pinned key
in a checkpoint, and a bundled consistency proof shows it extends the trusted state); the
claimed entries (rebuilt byte for byte from the bundle) are entries of a transaction that is in
the ledger at that state; and what those entries say (collection, id, revision, property
count, pointer, value) is exactly what the bundle claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

import kvcore

from kvcore.hashing import entry_leaf_hash
from kvcore.errors import printable

from docstore.documents import erasure, records
from docstore.errors import CorruptDataError, DocstoreError, VerificationError
from docstore.documents.flatten import OBJECT_HEADER, decode_value, encode_value, flatten
from docstore.documents.ids import check_collection_name, check_id
from docstore.proofs import checkpoint as ckpt
from docstore.proofs.bundle import Property, Proof
from docstore.proofs.erasureproof import check_all_used, proven_erasures
from docstore.proofs.statebundle import StateProof, load_any, parse
from docstore.proofs.verifystate import map_root_of, verify_state_proof
from docstore.proofs.note import Verifier, verifiers
from docstore.documents.records import Header

KeysArg = str | Verifier | Sequence[str] | Sequence[Verifier] | Sequence[str | Verifier] | None


def verify(
    proof: Proof | StateProof | str | bytes | dict,
    trusted: kvcore.State | str | bytes | None = None,
    verifier_keys: KeysArg = None,
    *,
    trusted_state: kvcore.State | str | bytes | None = None,
    with_meta: bool = False,
) -> Any:
    """Verify a proof against a state you trust; return the proven document or value.

    ``trusted`` is a :class:`kvcore.State` or the text of a checkpoint (whose signature is
    checked when ``verifier_keys`` are given). ``verifier_keys``: the ledger's verifier key
    strings (``immudoc key``) you pin; needed only for a proof relative to a state newer than
    the trusted one, which is accepted only if a pinned key signed that state's checkpoint and
    the bundle shows it extends the trusted state. (``trusted_state=`` is the same argument
    under its earlier name.)

    A document proof returns the document (None for a deletion's tombstone), a property
    proof the property's value, a collection proof the collection's definition. Raises
    :class:`VerificationError` saying which check failed. With ``with_meta=True`` (a proof
    made with ``with_meta=True``, bundle version 4) it returns ``(that, metadata)``: the
    transaction's proven ``{"user", "reason", "meta"}`` (those it has), or None if it has none.
    """
    if (trusted is None) == (trusted_state is None):
        raise VerificationError("verify needs one trusted state: pass trusted (or trusted_state), not both")
    proof = as_proof(proof)
    pinned = verifiers(verifier_keys)
    given = trusted if trusted is not None else trusted_state
    state = trusted_state_of(given, pinned)
    if isinstance(proof, StateProof):
        _link(proof, state, pinned)
        note = given if isinstance(given, (str, bytes)) else None
        return verify_state_proof(proof, state, map_root_of(proof, note, pinned))
    _check_names(proof)
    _link(proof, state, pinned)
    if proof.kind == "property":
        claim = _verify_property(proof)
    elif proof.kind == "collection":
        claim = _verify_collection(proof)
    else:
        claim = _verify_document(proof)
    if not with_meta:
        return claim
    return claim, _verify_tx_meta(proof)


def _verify_tx_meta(proof: Proof) -> dict[str, Any] | None:
    """The metadata of the proof's transaction: its entry 0, proven in the (verified) header."""
    from docstore.proofs.txproof import proven_meta

    m = proof.tx_meta
    if m is None:
        raise VerificationError("the proof carries no transaction metadata (make it with with_meta=True)")
    entry = kvcore.EntryProof(proof.tx, 0, m.deleted, m.path, proof.tx_path, proof.state.tx_id)
    return proven_meta(entry, m.key, m.value, m.deleted, proof.state)


def _check_names(proof: Proof) -> None:
    """The collection and id must be ones docstore can write: a NUL in either would let the
    parts of a property key (collection, id, revision, ordinal, pointer) be read another way."""
    try:
        check_collection_name(proof.collection)
        if proof.id is not None:
            check_id(proof.id)
    except DocstoreError as e:
        raise VerificationError(f"the proof names no document docstore could write: {e}") from None


def verify_consistency(old_state: kvcore.State, new_state: kvcore.State, proof: kvcore.ConsistencyProof) -> None:
    """Check that ``new_state`` extends ``old_state``; raises VerificationError.

    This links two states; it does not authenticate ``new_state`` (anyone who knows
    ``old_state`` can extend it): a newer state is the ledger's only if a pinned key signed it."""
    try:
        kvcore.verify_consistency(old_state, new_state, proof)
    except kvcore.VerificationError as e:
        raise VerificationError(str(e)) from None


def check_extends(old: kvcore.State, new: kvcore.State, proof: kvcore.ConsistencyProof | None, why: str = "") -> None:
    """``new`` extends ``old`` by ``proof``, or VerificationError naming both (and ``why``)."""
    if proof is None:
        raise VerificationError(f"no consistency proof from state {old.tx_id} to {new.tx_id}{why}")
    try:
        kvcore.verify_consistency(old, new, proof)
    except kvcore.VerificationError as e:
        raise VerificationError(f"consistency check failed from state {old.tx_id} to {new.tx_id}: {e}{why}") from None


def as_proof(proof: object) -> Proof | StateProof:
    """A :class:`Proof` (or a :class:`StateProof`) from a bundle, its JSON text or its dict
    (parsed strictly)."""
    if isinstance(proof, (str, bytes)):
        proof = load_any(proof)
    elif isinstance(proof, dict):
        proof = parse(proof)
    if not isinstance(proof, (Proof, StateProof)):
        raise VerificationError(f"expected a proof bundle, got {type(proof).__name__}")
    return proof


def trusted_state_of(trusted: object, pinned: list[Verifier]) -> kvcore.State:
    """The state a verifier trusts: a State as given, or a checkpoint's state (its signature
    checked against ``pinned`` keys when there are any)."""
    if isinstance(trusted, kvcore.State):
        if type(trusted.tx_id) is not int or trusted.tx_id < 0 or type(trusted.root) is not bytes or len(trusted.root) != 32:
            raise VerificationError("the trusted state is malformed (a transaction id and a 32-byte root)")
        return trusted
    if isinstance(trusted, (str, bytes)):
        if pinned:
            return ckpt.open_checkpoint(trusted, pinned).state
        return ckpt.read_unverified(trusted).state
    raise VerificationError(f"expected a trusted kvcore.State or a checkpoint's text, got {type(trusted).__name__}")


def authenticate_newer(
    trusted: kvcore.State,
    state: kvcore.State,
    note: str | None,
    consistency: kvcore.ConsistencyProof | None,
    pinned: list[Verifier],
) -> None:
    """Accept ``state``, newer than ``trusted``, only if a pinned key signed its checkpoint
    ``note`` and ``consistency`` shows that it extends ``trusted``; else VerificationError.

    A consistency proof alone never authenticates a newer state: anyone who knows the trusted
    tree's right edge can extend it with leaves of their choosing."""
    authenticate_signature(trusted, state, note, pinned)
    if consistency is None:
        raise VerificationError(
            f"the proof is relative to state {state.tx_id}, newer than the trusted state "
            f"{trusted.tx_id}: it needs a consistency proof from the trusted state (known_state=...)"
        )
    check_extends(trusted, state, consistency, " (the signer forked the ledger, or the proof was altered)")


def authenticate_signature(trusted: kvcore.State, state: kvcore.State, note: str | None, pinned: list[Verifier]) -> None:
    """The signature half of :func:`authenticate_newer`: a pinned key signed ``note``, the
    checkpoint of ``state`` (newer than ``trusted``); else VerificationError. Checked first, so
    that nothing is asked of an untrusted source for a state no pinned key signed."""
    if not pinned:
        hint = (
            " (the empty ledger's state, transaction 0, trusts nothing by itself)" if trusted.tx_id == 0 else ""
        )
        raise VerificationError(
            f"the proof is relative to state {state.tx_id}, newer than the trusted state "
            f"{trusted.tx_id}{hint}: a newer state is accepted only if signed by a key you pin "
            "(verifier_keys=[...], immudoc verify --key KEY; the key is `immudoc key`), or ask "
            "for a proof relative to your state (known_state=..., immudoc prove --known-state FILE)"
        )
    if note is None:
        raise VerificationError(
            f"the proof is relative to state {state.tx_id}, newer than the trusted state "
            f"{trusted.tx_id}, and carries no signed checkpoint of it"
        )
    signed = ckpt.open_checkpoint(note, pinned)
    if signed.state != state:
        raise VerificationError(
            f"the signed checkpoint is of state {signed.state.tx_id}, not of the proof's state {state.tx_id} "
            "(or its root differs)"
        )


def _link(proof: Proof | StateProof, trusted: kvcore.State, pinned: list[Verifier]) -> None:
    state = proof.state
    if proof.checkpoint is not None:  # whatever it is needed for, it must name the proof's state
        if ckpt.read_unverified(proof.checkpoint).state != state:
            raise VerificationError("the bundle's checkpoint names another state than the proof's")
    cp, other = proof.consistency, proof.consistency_state
    if (cp is None) != (other is None):
        raise VerificationError("malformed proof bundle: a consistency proof names its state")
    if state.tx_id == trusted.tx_id:
        if state.root != trusted.root:
            raise VerificationError(
                f"state check failed: the proof's root at transaction {state.tx_id} differs from "
                "the trusted root (the ledger was rewritten, or the proof is forged)"
            )
        if cp is not None:
            raise VerificationError(
                "the proof is relative to the trusted state itself, yet carries a consistency proof it does not use"
            )
        return
    if cp is not None and other != trusted:
        raise VerificationError(
            f"the bundled consistency proof links state {other.tx_id if other else None}, not the "
            f"trusted state {trusted.tx_id}: it cannot be used"
        )
    if state.tx_id > trusted.tx_id:
        authenticate_newer(trusted, state, proof.checkpoint, cp, pinned)
        return
    if cp is None:
        raise VerificationError(
            f"the proof is relative to state {state.tx_id} but the trusted state is "
            f"{trusted.tx_id}: it needs a consistency proof between the two "
            "(prove with known_state=..., or verify one as a second step)"
        )
    check_extends(state, trusted, cp)


def _check_entries(proof: Proof, entries: list[tuple[bytes, bytes | Property]]) -> None:
    """The entries are entries ``index ..`` of the proof's transaction (a run), in its state
    (an erased property given by its leaf: :func:`_leaf`)."""
    kv_proof = kvcore.EntriesProof(
        proof.tx, list(range(proof.index, proof.index + len(entries))), proof.path, proof.tx_path, proof.state.tx_id
    )
    try:
        kvcore.verify_leaves(kv_proof, [_leaf(k, v) for k, v in entries], proof.state)
    except kvcore.VerificationError as e:
        raise VerificationError(str(e)) from None


def _leaf(key: bytes, value: bytes | Property) -> bytes:
    if isinstance(value, Property):
        if value.leaf is None:
            raise VerificationError(f"property {value.pointer!r} is erased but carries no leaf")
        return value.leaf
    return entry_leaf_hash(0, key, value)


def _check_entry(proof: Proof, key: bytes, value: bytes | Property) -> None:
    """The entry is entry ``index`` of the proof's transaction, in its state."""
    kv_proof = kvcore.EntryProof(proof.tx, proof.index, False, proof.path, proof.tx_path, proof.state.tx_id)
    try:
        kvcore.verify_entry_leaf(kv_proof, _leaf(key, value), proof.state)
    except kvcore.VerificationError as e:
        raise VerificationError(str(e)) from None


def _erasures(proof: Proof) -> dict[tuple[int, int, bytes], int]:
    """The erased entries the bundle's erasure records list, each proven in the proof's state."""
    return proven_erasures(proof.erasures, proof.state)


def _erased_by(proof: Proof, erasures: dict[tuple[int, int, bytes], int], index: int, p: Property) -> int:
    """The transaction that erased property ``p``, entry ``index`` of the proof's transaction."""
    if p.encoded or p.salt or p.leaf is None:
        raise VerificationError(f"property {p.pointer!r}: an erased property carries its leaf alone")
    by = erasures.get((proof.tx.tx_id, index, p.leaf))
    if by is None:
        raise VerificationError(
            f"erasure check failed: property {p.pointer!r} is given by its hash, but no erasure record in the "
            "proof lists it"
        )
    return by


def _verify_property(proof: Proof) -> Any:
    if not isinstance(proof.id, str) or not isinstance(proof.pointer, str):
        raise VerificationError("a property proof names a document id and a pointer")
    if proof.header is not None:
        raise VerificationError("a property proof carries no header")
    if proof.ordinal is None or len(proof.properties) != 1:
        raise VerificationError("property check failed: the proof must hold exactly one property")
    p = proof.properties[0]
    if p.pointer != proof.pointer:
        raise VerificationError(
            f"pointer check failed: the stored property is {p.pointer!r}, the proof claims {proof.pointer!r}"
        )
    if type(proof.revision) is not int or not 1 <= proof.revision < 2**32 or proof.ordinal >= 2**32:
        raise VerificationError("revision and ordinal must fit 32 bits")
    key = records.property_key(
        records.property_prefix(proof.collection, proof.id), proof.revision, proof.ordinal, proof.pointer
    )
    erasures = _erasures(proof)
    if p.leaf is not None:  # erased: its leaf, listed by a proven erasure record
        _check_entry(proof, key, p)
        by = _erased_by(proof, erasures, proof.index, p)
        check_all_used(erasures, {by})
        if not (erasure.is_marker(proof.claim) and proof.claim[erasure.MARKER] == by):
            raise VerificationError(f"value check failed: {proof.pointer!r} was erased by transaction {by}; the proof claims otherwise")
        return erasure.marker(by)
    if erasures:
        raise VerificationError("erasure check failed: the proof carries erasure records but no erased property")
    if len(p.salt) != records.SALT_BYTES:
        raise VerificationError(f"property {p.pointer!r} has a salt of {len(p.salt)} bytes")
    _check_entry(proof, key, p.salt + p.encoded)
    if p.encoded == OBJECT_HEADER:
        raise VerificationError("property check failed: that pointer addresses an object, not a value")
    try:
        value = decode_value(p.encoded)
        claimed = encode_value(proof.claim)
    except DocstoreError as e:
        raise VerificationError(f"value check failed: {e}") from None
    if claimed != p.encoded:
        raise VerificationError(
            f"value check failed: '{proof.pointer}' is stored as {printable(p.encoded, 60)}, the proof "
            f"claims {printable(claimed, 60)}"
        )
    return value


def _verify_document(proof: Proof) -> Any:
    if not isinstance(proof.id, str) or proof.header is None:
        raise VerificationError("a document proof names a document id and carries its header")
    if proof.pointer is not None or proof.ordinal is not None:
        raise VerificationError("a document proof names no pointer and no ordinal")
    try:
        h = Header.decode(proof.header)
    except CorruptDataError as e:
        raise VerificationError(f"header check failed: {e}") from None
    if (h.collection, h.id, h.revision) != (proof.collection, proof.id, proof.revision):
        raise VerificationError(
            f"header check failed: the stored header is of {h.collection}/{h.id} revision "
            f"{h.revision}, the proof claims {proof.collection}/{proof.id} revision {proof.revision}"
        )
    if not 1 <= h.revision < 2**32:
        raise VerificationError("header check failed: the revision does not fit 32 bits")
    if h.n != len(proof.properties):
        raise VerificationError(
            f"completeness check failed: the header says {h.n} properties, the proof has "
            f"{len(proof.properties)}"
        )
    prefix = records.property_prefix(proof.collection, proof.id)
    entries: list[tuple[bytes, bytes | Property]] = [(records.header_key(proof.collection, proof.id), proof.header)]
    erasures = _erasures(proof)
    marks: dict[str, int] = {}
    for i, p in enumerate(proof.properties):
        key = records.property_key(prefix, h.revision, i, p.pointer)
        if p.leaf is not None:  # erased: its leaf, listed by a proven erasure record
            marks[p.pointer] = _erased_by(proof, erasures, proof.index + 1 + i, p)
            entries.append((key, p))
            continue
        if len(p.salt) != records.SALT_BYTES:
            raise VerificationError(f"property {p.pointer!r} has a salt of {len(p.salt)} bytes")
        entries.append((key, p.salt + p.encoded))
    check_all_used(erasures, set(marks.values()))
    _check_entries(proof, entries)
    if h.deleted:
        if proof.claim is not None:
            raise VerificationError("value check failed: the revision is a deletion, the claim is a document")
        return None
    claim = proof.claim
    if not isinstance(claim, dict) or claim.get("_id") != proof.id:
        raise VerificationError("value check failed: the claimed document does not carry the proven _id")
    try:
        claimed_pairs = flatten(claim)
    except DocstoreError as e:
        raise VerificationError(f"value check failed: the claimed document is not storable: {e}") from None
    if marks:  # the stored document with its erased properties' markers
        try:
            stored = erasure.rebuild([(p.pointer, p.encoded) for p in proof.properties], marks)
        except (DocstoreError, LookupError, ValueError) as e:
            raise VerificationError(f"value check failed: the stored properties do not make a document: {e}") from None
        pairs = flatten(stored)
    else:
        pairs = [(p.pointer, p.encoded) for p in proof.properties]
    if claimed_pairs != pairs:
        diff = next(
            (f"{a[0]!r}" for a, b in zip(claimed_pairs, pairs) if a != b),
            f"{abs(len(claimed_pairs) - len(pairs))} properties more or less",
        )
        raise VerificationError(
            f"value check failed: the claimed document differs from the stored one (at {diff})"
        )
    return claim


def _verify_collection(proof: Proof) -> Any:
    if proof.erasures:
        raise VerificationError("erasure check failed: a collection proof carries no erasure record")
    if proof.header is None:
        raise VerificationError("a collection proof carries the stored definition")
    if proof.id is not None or proof.pointer is not None or proof.ordinal is not None or proof.properties:
        raise VerificationError("a collection proof names no id, pointer, ordinal or properties")
    if proof.revision != 0:  # a definition's entry holds no revision number: nothing could bind one
        raise VerificationError("a collection proof claims no revision (it must be 0)")
    _check_entry(proof, records.collection_key(proof.collection), proof.header)
    try:
        meta = orjson.loads(proof.header)
    except orjson.JSONDecodeError:
        raise VerificationError("the stored collection definition is not JSON") from None
    if not isinstance(meta, dict) or meta.get("name") != proof.collection:
        raise VerificationError("collection check failed: the definition names another collection")
    try:
        claimed = orjson.dumps(proof.claim)
    except TypeError:
        claimed = b""
    if claimed != proof.header:
        raise VerificationError("value check failed: the claimed definition differs from the stored one")
    return meta
