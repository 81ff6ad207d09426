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
from typing import TYPE_CHECKING, Any

import orjson

import kvcore

from docstore.documents import txmeta
from docstore.errors import CorruptDataError, VerificationError

if TYPE_CHECKING:
    from docstore.engine.engine import Engine
    from docstore.proofs.bundle import Proof

VERSION = 1


def prove_tx(engine: Engine, tx_id: int, state: kvcore.State) -> dict[str, Any]:
    """The bundle for transaction ``tx_id`` relative to ``state`` (which must hold it)."""
    from docstore.engine.engine import translate

    with translate():
        first = engine.ledger.entries(tx_id, 0, 1)
        if not first:
            raise CorruptDataError(f"transaction {tx_id} has no entries")
        proof = engine.ledger.prove_entry_at(tx_id, 0, state)
    e = first[0]
    return {
        "v": VERSION, "kind": "tx", "tx_id": tx_id,
        "entry": {"key": base64.b64encode(e.key).decode(), "value": base64.b64encode(e.value).decode(), "deleted": e.deleted},
        "proof": proof.to_dict(),
    }


def prove_header(engine: Engine, tx_id: int, state: kvcore.State) -> dict[str, Any]:
    """A bundle proving only transaction ``tx_id``'s header (its time), not its entries."""
    from docstore.engine.engine import translate

    with translate():
        proof = engine.ledger.prove_entry_at(tx_id, 0, state)
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
    if proof.header.tx_id != tx_id or proof.entry_index != 0:
        raise VerificationError("the transaction proof proves another entry than entry 0 of the transaction")
    try:
        kvcore.verify_entry(proof, key, None if entry["deleted"] else value, state)
    except kvcore.VerificationError as e:
        raise VerificationError(f"transaction {tx_id} does not verify: {e}") from None
    if entry["deleted"] or key != txmeta.META_KEY:
        return proof.header, None
    try:
        return proof.header, txmeta.decode(value)
    except CorruptDataError:
        raise VerificationError(f"transaction {tx_id}'s metadata entry is not metadata") from None


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
    from docstore.engine.engine import translate
    from docstore.proofs.bundle import TxMetaEntry

    with translate():
        first = engine.ledger.entries(proof.tx_id, 0, 1)
        if not first:
            raise CorruptDataError(f"transaction {proof.tx_id} has no entries")
        entry = engine.ledger.prove_entry_at(proof.tx_id, 0, proof.state)
    e = first[0]
    return proof._replace(tx_meta=TxMetaEntry(e.key, e.value, e.deleted, list(entry.entry_path)))
