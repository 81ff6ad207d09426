"""Erasure of a document's values (docs/documents.md, "Erasure"): the one exception to "nothing
committed is rewritten".

One transaction (entry 0: who and why) holds docstore's erasure record for the document
(docstore.documents.erasure) and kvcore's list of the erased entries with their leaf hashes;
once it is durable kvcore overwrites those values (salt and JSON) with zeros in place, and the
derived state's index rows of the document are made anew without them. Every revision of the
document is erased: an erased value is not readable in any.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

import kvcore
from kvcore.erasure import decode as decode_erasure

from docstore.api import Erasure
from docstore.collections.indexspec import condition_fields, index_fields
from docstore.documents import erasure, records
from docstore.documents.flatten import OBJECT_HEADER, field_pointer
from docstore.documents.records import Header
from docstore.engine.derive import ErasedDoc
from docstore.engine.state import doc_from_items, erased_ordinals
from docstore.documents import txmeta
from docstore.errors import (
    CorruptDataError,
    DocumentNotFoundError,
    ErasureRefusedError,
    NotFoundError,
    ReasonRequiredError,
    TransactionTooLargeError,
)

from docstore.engine.engine import translate

if TYPE_CHECKING:
    from docstore.engine.engine import Engine

MAX_ERASURE_RECORDS = 10_000
"""Erasure records one call lists (a document is erased a few times at most)."""
MAX_ERASED_ENTRIES = 500_000
"""Stored properties one erasure may destroy (all revisions together): its record lists each
(44 bytes), and a kvcore value holds at most 32 MiB."""


def _unique_pointers(meta: dict) -> dict[str, str]:
    """The pointers of the fields whose values decide a unique index's claims: its field, and
    the fields of a partial filter (a document erased out of the filter would keep its claim)."""
    out: dict[str, str] = {}
    for i in meta.get("indexes", []):
        if i.get("unique"):
            for field in [*condition_fields(i), *index_fields(i)]:
                what = "has a unique index" if field in index_fields(i) else f"is in the partial filter of unique index {i['field']!r}"
                out[field_pointer(field)] = f"{field!r} {what}"
    return out


def _current(
    engine: Engine, coll: str, doc_id: str, erasing: set[tuple[int, int]]
) -> tuple[dict | None, Callable[[int], dict] | None]:
    """The document's current revision as it is (its values still there: its index rows are
    named by them) and, given the erasing transaction's id, as the erasure will leave it; both
    from one read of its entries. (None, None) when it is not live."""
    loc = engine.store_location(coll, doc_id)
    if loc is None:
        return None, None
    header = Header(coll, doc_id, loc.revision, loc.n, False)
    first = loc.entry + 1
    items = engine.ledger.entry_items(loc.tx_id, first, loc.n) if loc.n else []
    before = erased_ordinals(engine.ledger, loc.tx_id, first, loc.n)
    mine = [i - first for t, i in erasing if t == loc.tx_id and first <= i < first + loc.n]
    prefix = records.property_prefix(coll, doc_id)

    def doc_after(tx_id: int) -> dict:
        return doc_from_items(header, items, prefix, {**before, **dict.fromkeys(mine, tx_id)})

    return doc_from_items(header, items, prefix, before), doc_after


def _carried_marker(items: list[tuple[bytes, bytes | None]], o: int, cut: int) -> bool:
    """Whether stored property ``o`` is the marker of an earlier erasure that a later revision
    kept as data (``{"$erased": N}``: the lone member ``$erased`` of its object, an integer):
    there is no value in it to erase."""
    key, value = items[o]
    pointer = key[cut:]
    if not pointer.endswith(b"/" + erasure.MARKER.encode()) or value is None:
        return False
    parent = pointer[: -len(erasure.MARKER) - 1] + b"/"
    for k in (o - 1, o + 1):  # a lone member: its neighbours are not in its object
        if 0 <= k < len(items) and items[k][0][cut:].startswith(parent):
            return False
    return value[records.SALT_BYTES :].isdigit()


def _ever_indexed(engine: Engine, coll: str, pointers: list[str] | None) -> bool:
    """Whether an erased value may have been in an index row (a field of the erasure indexed by
    any definition the collection ever had): then the derived state's files may keep it in a
    freed page, and must be compacted."""
    fields: set[str] = set()
    with translate():
        for e in engine.ledger.history(records.collection_key(coll)):
            try:
                fields.update(f for i in orjson.loads(e.value).get("indexes", []) for f in index_fields(i))
            except (orjson.JSONDecodeError, AttributeError, TypeError, KeyError):
                return True  # (a definition that does not read: assume the worst)
    for field in fields:
        ptr = field_pointer(field)
        if pointers is None or any(ptr == p or ptr.startswith(p + "/") or p.startswith(ptr + "/") for p in pointers):
            return True
    return False


def erase(engine: Engine, coll: str, doc_id: str, pointers: list[str] | None, tx_meta: bytes | None) -> Erasure:
    """Erase ``pointers`` (None: every property but ``_id``) of ``doc_id`` in every revision."""
    from docstore.transactions.transaction import Staged

    engine.require_collection(coll)
    with engine.lock:  # under the commit lock: no revision can be added meanwhile in this process
        if engine.follows:
            engine.refresh()
        meta = engine.collection_state(coll).meta
        for ptr, field in _unique_pointers(meta).items():
            if pointers is None or any(erasure.covers([p], ptr) or p.startswith(ptr + "/") for p in pointers):
                raise ErasureRefusedError(
                    f"field {field}: its values are part of ledger keys, which erasure "
                    "cannot destroy (erase the other fields, and keep personal data out of unique fields)"
                )
        if meta.get("require_reason") and (tx_meta is None or "reason" not in txmeta.decode(tx_meta)):
            raise ReasonRequiredError(f"collection {coll!r} requires a reason for every change: give one to erase")
        headers = engine.history(coll, doc_id, 0, None)
        if not headers:
            raise DocumentNotFoundError(f"no document {doc_id!r} in {coll!r}")
        ledger = engine.ledger
        cut = len(records.property_prefix(coll, doc_id)) + 8
        locations: list[tuple[int, int]] = []
        found: set[str] = set()
        revisions = 0
        for h in headers:
            header = Header.decode(h.value)
            if header.deleted or not header.n:
                continue
            here = 0
            items = ledger.entry_items(h.tx_id, h.index + 1, header.n)
            for o, (key, value) in enumerate(items):
                if value is None:
                    raise CorruptDataError(f"document {doc_id!r} in {coll!r}: a stored property is a tombstone")
                pointer = key[cut:].decode()
                if not erasure.covers(pointers, pointer):
                    continue
                found.update(p for p in pointers or () if pointer == p or pointer.startswith(p + "/"))
                if value[records.SALT_BYTES :] != OBJECT_HEADER and not _carried_marker(items, o, cut):
                    locations.append((h.tx_id, h.index + 1 + o))
                    here += 1
            revisions += bool(here)
            if len(locations) > MAX_ERASED_ENTRIES:
                raise TransactionTooLargeError(
                    f"the erasure would destroy more than {MAX_ERASED_ENTRIES} stored values; erase fewer pointers at a time"
                )
        missing = [p for p in pointers or () if p not in found]
        if missing:
            raise NotFoundError(f"document {doc_id!r} has no property at {missing[0]!r} in any revision")
        staged = Staged(engine, None, tx_meta)
        kv = staged.kv
        kv.lookup(records.header_key(coll, doc_id))  # a concurrent revision (another process) conflicts
        entry = ledger.erasure_entry(locations)
        if entry is None:  # all erased before
            staged.rollback()
            return Erasure(None, 0, 0)
        n = len(decode_erasure(entry[1]))
        kv.set(erasure.record_key(coll, doc_id), erasure.encode_record(pointers, n))
        kv.set(*entry)
        staged.done = True
        old, after = _current(engine, coll, doc_id, set(locations))
        tx = engine.commit(kv, {}, [], None, [ErasedDoc(coll, doc_id, after, old)])
        engine.after_erasure(compact=_ever_indexed(engine, coll, pointers))
        return Erasure(tx, n, revisions)


def _record_entries(engine: Engine, coll: str, doc_id: str) -> list[kvcore.Entry]:
    engine.require_collection(coll)
    engine.check_open()
    with translate():
        return engine.ledger.history(erasure.record_key(coll, doc_id), 0, MAX_ERASURE_RECORDS)


def erasure_bundles(engine: Engine, coll: str, doc_id: str, state: kvcore.State | None) -> list[dict[str, Any]]:
    """Proofs of ``doc_id``'s erasure records relative to ``state`` (default: now)."""
    from docstore.proofs.erasureproof import prove_record

    if state is not None:
        engine.own_state(state, "state", trusted=False)
    at = state if state is not None else engine.current_state()
    return [prove_record(engine, e, at) for e in _record_entries(engine, coll, doc_id) if e.tx_id <= at.tx_id]


def erasure_records(engine: Engine, coll: str, doc_id: str) -> list[dict[str, Any]]:
    """The erasure records of ``doc_id``, oldest first (Collection.erasures); on a verifying
    database each proven (docstore.proofs.erasureproof)."""
    from docstore.proofs.erasureproof import prove_record, record_of, verify_record

    entries = _record_entries(engine, coll, doc_id)
    out = [record_of(e, engine.ledger.header(e.tx_id), engine.tx_meta(e.tx_id)) for e in entries]
    if engine.trust is not None and out:
        from docstore.proofs import reader

        state = reader.current_state(engine)
        out = [verify_record(coll, doc_id, r, prove_record(engine, e, state), state) for r, e in zip(out, entries)]
    return out
