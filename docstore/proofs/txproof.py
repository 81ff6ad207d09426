"""A proof of one transaction's head: its header (its time) and its entry 0 (its metadata, or
that it has none), relative to a state. What a verifying client needs to trust ``history()``'s
who and why, ``log()``, and which transaction a time means (``at_time``).

The bundle (JSON, specified in docs/proofs.md, "Transaction proofs")::

    {"v": 1, "kind": "tx", "tx_id": N,
     "entry": {"key": <base64>, "value": <base64>, "deleted": false},
     "proof": <kvcore EntryProof of entry 0 of N, relative to the state>}

:func:`verify_tx` is pure: (bundle, the transaction expected, a trusted state) -> (the
transaction's header, its metadata or None), or VerificationError.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

import kvcore

from docstore.documents import txmeta
from docstore.errors import CorruptDataError, VerificationError

if TYPE_CHECKING:
    from docstore.engine.engine import Engine
    from docstore.proofs.bundle import Proof

VERSION = 1


def _entry0(engine: Engine, tx_id: int, state: kvcore.State) -> tuple[kvcore.Entry, kvcore.EntryProof]:
    """Transaction ``tx_id``'s entry 0 and its proof relative to ``state``."""
    from docstore.engine.engine import translate

    with translate():
        first = engine.ledger.entries(tx_id, 0, 1)
        if not first:
            raise CorruptDataError(f"transaction {tx_id} has no entries")
        return first[0], engine.ledger.prove_entry_at(tx_id, 0, state)


def proven_meta(proof: kvcore.EntryProof, key: bytes, value: bytes, deleted: bool, state: kvcore.State) -> dict[str, Any] | None:
    """The metadata an entry 0 (``key``, ``value``, ``deleted``) carries, once ``proof`` shows
    it is entry 0 of its transaction in ``state`` (None: another key there, so none); else
    VerificationError."""
    tx_id = proof.header.tx_id
    if proof.entry_index != 0:
        raise VerificationError("the transaction proof proves another entry than entry 0 of the transaction")
    try:
        kvcore.verify_entry(proof, key, None if deleted else value, state)
    except kvcore.VerificationError as e:
        raise VerificationError(f"transaction {tx_id}'s metadata does not verify: {e}") from None
    if deleted or key != txmeta.META_KEY:
        return None
    try:
        return txmeta.decode(value)
    except CorruptDataError:
        raise VerificationError(f"transaction {tx_id}'s entry 0 is under the metadata key but is not metadata") from None


def prove_tx(engine: Engine, tx_id: int, state: kvcore.State) -> dict[str, Any]:
    """The bundle for transaction ``tx_id`` relative to ``state`` (which must hold it)."""
    e, proof = _entry0(engine, tx_id, state)
    return {
        "v": VERSION, "kind": "tx", "tx_id": tx_id,
        "entry": {"key": base64.b64encode(e.key).decode(), "value": base64.b64encode(e.value).decode(), "deleted": e.deleted},
        "proof": proof.to_dict(),
    }


def prove_header(engine: Engine, tx_id: int, state: kvcore.State) -> dict[str, Any]:
    """A bundle proving only transaction ``tx_id``'s header (its time), not its entries."""
    _e, proof = _entry0(engine, tx_id, state)
    return {"v": VERSION, "kind": "tx-header", "tx_id": tx_id, "header": proof.header.to_dict(),
            "tx_path": [base64.b64encode(h).decode() for h in proof.tx_path]}


def verify_header(bundle: Any, tx_id: int, state: kvcore.State) -> kvcore.TxHeader:
    """Transaction ``tx_id``'s header, proven in ``state`` by a header bundle; else
    VerificationError."""
    if not isinstance(bundle, dict) or bundle.get("v") != VERSION or bundle.get("kind") != "tx-header":
        raise VerificationError("not a transaction header proof (version 1)")
    if bundle.get("tx_id") != tx_id or type(tx_id) is not int:
        raise VerificationError(f"the proof is of transaction {bundle.get('tx_id')!r}, not {tx_id}")
    try:
        header = kvcore.TxHeader.from_dict(bundle.get("header"))
        path = bundle.get("tx_path")
        if not isinstance(path, list):
            raise TypeError
        tx_path = [base64.b64decode(h, validate=True) for h in path]
    except (binascii.Error, TypeError, ValueError, kvcore.VerificationError) as e:
        raise VerificationError(f"the transaction header proof is malformed: {e}") from None
    if header.tx_id != tx_id:
        raise VerificationError("the header proof proves another transaction")
    try:
        kvcore.verify_tx(header, tx_path, state)
    except kvcore.VerificationError as e:
        raise VerificationError(f"transaction {tx_id}'s header does not verify: {e}") from None
    return header


def verify_tx(bundle: Any, tx_id: int, state: kvcore.State) -> tuple[kvcore.TxHeader, dict[str, Any] | None]:
    """(header, metadata or None) of transaction ``tx_id``, proven in ``state``; else
    VerificationError naming the check that failed."""
    if not isinstance(bundle, dict) or bundle.get("v") != VERSION or bundle.get("kind") != "tx":
        raise VerificationError("not a transaction proof (version 1)")
    if bundle.get("tx_id") != tx_id or type(tx_id) is not int:
        raise VerificationError(f"the proof is of transaction {bundle.get('tx_id')!r}, not {tx_id}")
    entry = bundle.get("entry")
    if not isinstance(entry, dict) or type(entry.get("deleted")) is not bool:
        raise VerificationError("the transaction proof's entry is malformed")
    try:
        key = base64.b64decode(entry.get("key", ""), validate=True)
        value = base64.b64decode(entry.get("value", ""), validate=True)
        proof = kvcore.EntryProof.from_dict(bundle.get("proof"))
    except (binascii.Error, TypeError, ValueError) as e:
        raise VerificationError(f"the transaction proof is malformed: {e}") from None
    except kvcore.VerificationError as e:
        raise VerificationError(f"the transaction proof is malformed: {e}") from None
    if proof.header.tx_id != tx_id:
        raise VerificationError("the transaction proof proves another entry than entry 0 of the transaction")
    return proof.header, proven_meta(proof, key, value, entry["deleted"], state)


def check_time_boundary(
    n: int, t_ns: int, state: kvcore.State, header_of: Callable[[int], kvcore.TxHeader], when: Any
) -> None:
    """VerificationError unless ``n`` is the last transaction of ``state`` committed at or
    before ``t_ns``, by the proven headers ``header_of`` gives: n's at or before it, n + 1's
    (when ``state`` holds it) after it. Timestamps never decrease along the ledger, so n is
    the only such transaction. ``when``: the time as the caller gave it (for messages)."""
    if n > state.tx_id:
        raise VerificationError(f"transaction {n} was named, beyond the trusted state {state.tx_id} (the proven headers contradict it)")
    if n >= 1 and header_of(n).timestamp_ns > t_ns:
        raise VerificationError(f"transaction {n} was named, proven committed after {when!r}: the proven headers contradict it")
    if n < state.tx_id and header_of(n + 1).timestamp_ns <= t_ns:
        raise VerificationError(f"transaction {n + 1} is proven committed at or before {when!r}: {n} was named, "
                                "which the proven headers contradict")


def check_record(record: dict[str, Any], header: kvcore.TxHeader, meta: dict[str, Any] | None) -> dict[str, Any]:
    """The log record (Database.log) as the transaction's proven header and metadata make it,
    or VerificationError if ``record`` says anything else (compared as canonical JSON: a
    ``1`` is not a ``true``) or holds other fields."""
    meta = meta or {}
    proven = {
        "tx_id": header.tx_id, "timestamp_ns": header.timestamp_ns, "user": meta.get("user"),
        "reason": meta.get("reason"), "meta": meta.get("meta"), "entries": header.n_entries,
    }
    try:
        same = orjson.dumps(record, option=orjson.OPT_SORT_KEYS) == orjson.dumps(proven, option=orjson.OPT_SORT_KEYS)
    except TypeError:
        same = False
    if not same:
        raise VerificationError(f"transaction {record.get('tx_id')}: the log differs from what the ledger proves")
    return proven


def with_tx_meta(engine: Engine, proof: Proof) -> Proof:
    """``proof`` (of a document, a property or a definition) carrying its transaction's
    entry 0 and that entry's path (bundle version 4: docs/proofs.md)."""
    from docstore.proofs.bundle import TxMetaEntry

    e, entry = _entry0(engine, proof.tx_id, proof.state)
    return proof._replace(tx_meta=TxMetaEntry(e.key, e.value, e.deleted, list(entry.entry_path)))
