"""Proofs of a document's erasure records (``collection.erasures()``, docs/proofs.md, "Erased
properties"): each record's entry proven in a trusted state, its who and why by the
transaction's proof (docstore.proofs.txproof). Pure verification; that no erasure record was
left out is not proven (a document proof shows every erased property of a revision)."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

import orjson

import kvcore

from docstore.documents import erasure
from docstore.errors import CorruptDataError, VerificationError

if TYPE_CHECKING:
    from docstore.engine.engine import Engine
    from docstore.proofs.bundle import ErasureEntry

VERSION = 1


def record_of(e: kvcore.Entry, header: kvcore.TxHeader, meta: dict[str, Any] | None) -> dict[str, Any]:
    """The erasure record a reader sees: when (the transaction), who and why, what."""
    rec = erasure.decode_record(e.value)
    meta = meta or {}
    return {
        "tx_id": header.tx_id, "timestamp_ns": header.timestamp_ns, "user": meta.get("user"),
        "reason": meta.get("reason"), "meta": meta.get("meta"), "pointers": rec["pointers"], "erased": rec["entries"],
    }


def prove_record(engine: Engine, e: kvcore.Entry, state: kvcore.State) -> dict[str, Any]:
    """The bundle of erasure record ``e`` (an entry of the ledger) relative to ``state``."""
    from docstore.proofs.txproof import prove_tx

    proof = engine.ledger.prove_entry_at(e.tx_id, e.index, state)
    return {
        "v": VERSION, "kind": "erasure", "tx": prove_tx(engine, e.tx_id, state),
        "value": base64.b64encode(e.value).decode(), "proof": proof.to_dict(),
    }


def verify_record(coll: str, doc_id: str, record: Any, bundle: Any, state: kvcore.State) -> dict[str, Any]:
    """``record`` (one of ``erasures(doc_id)``) as its bundle proves it in ``state``, or
    VerificationError naming the check that failed."""
    from docstore.proofs.txproof import verify_tx

    if not isinstance(bundle, dict) or bundle.get("v") != VERSION or bundle.get("kind") != "erasure":
        raise VerificationError("not an erasure record proof (version 1)")
    if not isinstance(record, dict) or type(record.get("tx_id")) is not int:
        raise VerificationError("an erasure record names its transaction")
    tx_id = record["tx_id"]
    header, meta = verify_tx(bundle.get("tx"), tx_id, state)
    try:
        value = base64.b64decode(bundle.get("value", ""), validate=True)
        proof = kvcore.EntryProof.from_dict(bundle.get("proof"))
    except (binascii.Error, TypeError, ValueError, kvcore.VerificationError) as e:
        raise VerificationError(f"the erasure record proof is malformed: {e}") from None
    if proof.header.tx_id != tx_id:
        raise VerificationError(f"the erasure record proof proves an entry of transaction {proof.header.tx_id}, not {tx_id}")
    try:
        kvcore.verify_entry(proof, erasure.record_key(coll, doc_id), value, state)
    except kvcore.VerificationError as e:
        raise VerificationError(f"erasure record check failed: {e}") from None
    try:
        proven = record_of(kvcore.Entry(erasure.record_key(coll, doc_id), value, tx_id, 0, False, proof.entry_index),
                           header, meta)
    except CorruptDataError as e:
        raise VerificationError(f"erasure record check failed: {e}") from None
    if orjson.dumps(record, option=orjson.OPT_SORT_KEYS) != orjson.dumps(proven, option=orjson.OPT_SORT_KEYS):
        raise VerificationError(f"transaction {tx_id}: the erasure record differs from what the ledger proves")
    return proven


def proven_erasures(entries: list[ErasureEntry] | None, state: kvcore.State) -> dict[tuple[int, int, bytes], int]:
    """The erased entries that the erasure records ``entries`` (a bundle's) list, each record
    proven in ``state``: (transaction, index, leaf) -> the erasing transaction. Empty for
    none; VerificationError if a record does not verify or decode."""
    from kvcore.erasure import ERASED_KEY, decode as decode_erasure

    out: dict[tuple[int, int, bytes], int] = {}
    seen: set[int] = set()
    for e in entries or ():
        if e.tx.tx_id in seen:
            raise VerificationError("erasure check failed: the proof carries an erasure record twice")
        seen.add(e.tx.tx_id)
        kv_proof = kvcore.EntryProof(e.tx, e.index, False, e.path, e.tx_path, state.tx_id)
        try:
            kvcore.verify_entry(kv_proof, ERASED_KEY, e.value, state)
            items = decode_erasure(e.value)
        except kvcore.VerificationError as err:
            raise VerificationError(f"erasure check failed: {err}") from None
        except ValueError:
            raise VerificationError("erasure check failed: an erasure record does not decode") from None
        for item in items:
            out[item] = e.tx.tx_id
    return out


def check_all_used(erasures: dict[tuple[int, int, bytes], int], used: set[int]) -> None:
    """Every erasure record a bundle carries must be of a property it proves."""
    if set(erasures.values()) - used:
        raise VerificationError("erasure check failed: the proof carries an erasure record of no property it proves")
