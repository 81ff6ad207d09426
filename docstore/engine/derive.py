"""What a committed transaction changes in the derived state, applied to the store.

Used in step with each commit (the engine knows the documents it wrote and the ones they
replace) and to bring the store up to date from the log (opening after a crash, a read-only
process's refresh, a rebuild): :func:`changes_of` reads a transaction back from the ledger.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, NamedTuple

import lmdb
import orjson

import kvcore

from kvcore.erasure import ERASED_KEY
from kvcore.hashing import entry_leaf_hash

from docstore.collections.indexspec import changed_indexes, index_specs, spec_keys, spec_meets_array
from docstore.documents.records import Header, property_prefix
from docstore.engine import mapchanges
from docstore.engine.state import doc_from_items
from docstore.engine.store import Location, Store
from docstore.errors import CorruptDataError
from docstore.statemap.hashing import run_root
from docstore.statemap.tree import Plan

ReadDoc = Callable[[str, str, Location], dict]
"""Reads a document's revision from the ledger (collection, id, location)."""


class DocChange(NamedTuple):
    """One document written by a transaction: its new revision (None: deleted) at ``location``,
    ``digest`` the run root of its entries (docs/proofs.md)."""

    collection: str
    id: str
    doc: dict | None
    location: Location
    digest: bytes = b""


class ErasedDoc(NamedTuple):
    """A document some of whose values a transaction erases. ``doc_after(tx_id)``: its current
    revision as the erasure leaves it, for the commit to plan the map before the values are
    gone (None: read it, the erasure done)."""

    collection: str
    id: str
    doc_after: Callable[[int], dict] | None = None
    old: dict | None = None
    """Its current revision before the erasure (None: unknown, its rows are found by a scan)."""


class StateRootMismatch(CorruptDataError):
    """The state map rebuilt from a transaction does not have the root its header commits to."""


def revisions(changes: list[DocChange]) -> list[mapchanges.Revision]:
    return [mapchanges.Revision(c.collection, c.id, c.doc, c.location.entry, c.digest) for c in changes]


def plan_map(
    store: Store,
    txn: lmdb.Transaction,
    read_doc: ReadDoc,
    tx_id: int,
    metas: dict[str, dict[str, Any]],
    definitions: dict[str, tuple[int, bytes]],
    changes: list[DocChange],
    old_docs: dict[tuple[str, str], dict | None] | None = None,
    erasures: Sequence[ErasedDoc] = (),
) -> Plan:
    """The state map's update for a transaction (before the derived state reflects it)."""
    diff = mapchanges.compute(store, txn, read_doc, tx_id, metas, definitions, revisions(changes), old_docs)
    for e in erasures:
        loc = store.location(txn, e.collection, e.id)
        definition = store.definition(txn, e.collection)
        if loc is not None and definition is not None:
            doc = e.doc_after(tx_id) if e.doc_after is not None else read_doc(e.collection, e.id, loc)
            diff.update(mapchanges.erased(store, txn, e.collection, e.id, doc, index_specs(definition), e.old))
    return store.smap.plan(txn, diff)


def apply(
    store: Store,
    txn: lmdb.Transaction,
    read_doc: ReadDoc,
    tx_id: int,
    root: bytes,
    metas: dict[str, dict[str, Any]],
    changes: list[DocChange],
    old_docs: dict[tuple[str, str], dict | None] | None = None,
    erasures: Sequence[ErasedDoc] = (),
) -> None:
    """Apply transaction ``tx_id`` (ledger root ``root`` after it): new collection definitions
    first (an index added is filled from the current documents, one removed is dropped), then
    the documents. ``old_docs`` gives the revisions they replace where the caller has them;
    the others are read from the store and the ledger. ``erasures``: documents whose values
    it erased, their index rows made anew from what is left (no row keeps an erased value)."""
    for name, meta in metas.items():
        _apply_definition(store, txn, read_doc, name, meta)
    for e in erasures:
        _reindex_erased(store, txn, read_doc, e)
    specs_of: dict[str, list[dict[str, Any]]] = {}
    for ch in changes:
        specs = specs_of.get(ch.collection)
        if specs is None:
            definition = store.definition(txn, ch.collection)
            if definition is None:
                raise CorruptDataError(f"transaction {tx_id} writes to unknown collection {ch.collection!r}")
            specs = specs_of[ch.collection] = index_specs(definition)
        key = (ch.collection, ch.id)
        if old_docs is not None and key in old_docs:
            old = old_docs[key]
        else:
            loc = store.location(txn, ch.collection, ch.id)
            old = None if loc is None else read_doc(ch.collection, ch.id, loc)
        for spec in specs:
            field = spec["field"]
            old_keys = spec_keys(old, spec) if old is not None else []
            new_keys = spec_keys(ch.doc, spec) if ch.doc is not None else []
            gone = [k for k in old_keys if k not in new_keys]
            added = [k for k in new_keys if k not in old_keys]
            if gone:
                store.index_delete(txn, ch.collection, field, gone, ch.id)
            if added:
                store.index_put(txn, ch.collection, field, added, ch.id)
            store.set_multi(txn, ch.collection, field, ch.id, ch.doc is not None and spec_meets_array(ch.doc, spec))
        if ch.doc is None:
            if store.delete_location(txn, ch.collection, ch.id):
                store.add_count(txn, ch.collection, -1)
        elif store.put_location(txn, ch.collection, ch.id, ch.location):
            store.add_count(txn, ch.collection, 1)
    store.set_reflected(txn, tx_id, root)


def _reindex_erased(store: Store, txn: lmdb.Transaction, read_doc: ReadDoc, e: ErasedDoc) -> None:
    """The index rows of a document some of whose values were erased: those of the revision
    before removed (named by its old values when the commit read them; else found by the
    document's id, a scan of each index: the erased values cannot be read), then those of what
    it holds now put."""
    coll, doc_id = e.collection, e.id
    loc = store.location(txn, coll, doc_id)
    definition = store.definition(txn, coll)
    if loc is None or definition is None:
        return
    doc = read_doc(coll, doc_id, loc)
    for spec in index_specs(definition):
        field = spec["field"]
        if e.old is None:
            store.index_delete_doc(txn, coll, field, doc_id)
        else:
            store.index_delete(txn, coll, field, spec_keys(e.old, spec), doc_id)
        store.index_put(txn, coll, field, spec_keys(doc, spec), doc_id)
        store.set_multi(txn, coll, field, doc_id, spec_meets_array(doc, spec))


def _apply_definition(store: Store, txn: lmdb.Transaction, read_doc: ReadDoc, name: str, meta: dict[str, Any]) -> None:
    dropped, created = changed_indexes(store.definition(txn, name) or {}, meta)
    store.set_definition(txn, name, meta)
    for field in dropped:
        store.drop_index(txn, name, field)
    if created:
        for doc_id, loc in list(store.locations(txn, name)):
            doc = read_doc(name, doc_id, loc)
            for spec in created:
                store.index_put(txn, name, spec["field"], spec_keys(doc, spec), doc_id)
                if spec_meets_array(doc, spec):
                    store.set_multi(txn, name, spec["field"], doc_id, True)


def replaced(
    store: Store, txn: lmdb.Transaction, read_doc: ReadDoc, changes: list[DocChange]
) -> dict[tuple[str, str], dict | None]:
    """The revisions ``changes`` replace (None: the document was not live), read from the
    store's locations and the log once."""
    out: dict[tuple[str, str], dict | None] = {}
    for ch in changes:
        key = (ch.collection, ch.id)
        if key not in out:
            loc = store.location(txn, ch.collection, ch.id)
            out[key] = None if loc is None else read_doc(ch.collection, ch.id, loc)
    return out


def changes_of(
    ledger: kvcore.Ledger, tx_id: int
) -> tuple[dict[str, dict[str, Any]], list[DocChange], dict[str, tuple[int, bytes]], list[ErasedDoc]]:
    """(collection definitions, document changes, each definition's (entry index, leaf hash),
    the documents it erases from) of committed transaction ``tx_id``, read back from the
    ledger (a transaction at a time: memory stays bounded by the largest one)."""
    metas: dict[str, dict[str, Any]] = {}
    definitions: dict[str, tuple[int, bytes]] = {}
    changes: list[DocChange] = []
    erasures: list[ErasedDoc] = []
    items = ledger.entry_items(tx_id)
    marks = ledger.erased_by(tx_id)
    i = 0
    while i < len(items):
        key, value = items[i]
        kind = key[:2]
        if kind == b"c\x00" and value is not None:
            name = key[2:].decode()
            metas[name] = orjson.loads(value)
            definitions[name] = (i, entry_leaf_hash(0, key, value))
            i += 1
        elif kind == b"d\x00" and value is not None:
            header = Header.decode(value)
            loc = Location(tx_id, i, header.revision, header.n)
            run = items[i : i + 1 + header.n]
            leaves = [entry_leaf_hash(0 if v is not None else 1, k, v or b"") for k, v in run]
            erased = {j - i - 1: by for j, by in marks.items() if i < j <= i + header.n} if marks else None
            for o in erased or ():  # an erased value's leaf is the one its erasure committed
                leaves[o + 1] = ledger.erased_leaf(tx_id, i + 1 + o) or leaves[o + 1]
            digest = run_root(leaves)
            if header.deleted:
                changes.append(DocChange(header.collection, header.id, None, loc, digest))
            else:
                props = items[i + 1 : i + 1 + header.n]
                doc = doc_from_items(header, props, property_prefix(header.collection, header.id), erased)
                changes.append(DocChange(header.collection, header.id, doc, loc, digest))
            i += 1 + header.n
        else:
            if kind == b"x\x00" and value is not None:
                coll, _, doc_id = key[2:].partition(b"\x00")
                erasures.append(ErasedDoc(coll.decode(), doc_id.decode()))
            i += 1
    return metas, changes, definitions, erasures


BATCH_ENTRIES = 200_000
"""Ledger entries applied per LMDB write transaction while catching up (one commit, one sync
each: a rebuild of a long log is not one fsync per transaction)."""


def catch_up(
    store: Store,
    ledger: kvcore.Ledger,
    read_doc: ReadDoc,
    progress: Callable[[int, int], None] | None = None,
    upto: int | None = None,
) -> int:
    """Apply every transaction the store does not reflect yet (up to ``upto``, default the
    ledger's last), many to an LMDB transaction; returns how many. ``progress(done, total)``
    counts ledger entries. The caller made sure the store is not ahead of the ledger."""
    with store.read() as txn:
        reflected = store.reflected(txn)
    start = 0 if reflected is None else reflected[0]
    last = ledger.tx_id if upto is None else upto
    if reflected is None and last == 0:  # a new store of a new ledger: it reflects transaction 0
        with store.write() as txn:
            store.set_reflected(txn, 0, ledger.state(0).root)
    total = sum(ledger.header(t).n_entries for t in range(start + 1, last + 1)) if progress else 0
    done = 0
    tx_id = start
    while tx_id < last:
        with store.write() as txn:
            batch = 0
            while tx_id < last and batch < BATCH_ENTRIES:
                tx_id += 1
                n = apply_logged(store, txn, ledger, read_doc, tx_id)
                batch += n
                done += n
                if progress is not None:
                    progress(done, total)
    return last - start


def apply_logged(store: Store, txn: lmdb.Transaction, ledger: kvcore.Ledger, read_doc: ReadDoc, tx_id: int) -> int:
    """Apply committed transaction ``tx_id``, read back from the log, to the derived state and
    the map in ``txn`` (the store reflects ``tx_id - 1`` in it), checking the map's root
    against its header; returns its number of entries."""
    metas, changes, definitions, erasures = changes_of(ledger, tx_id)
    old = replaced(store, txn, read_doc, changes)  # read once, for the map and the rows
    plan = plan_map(store, txn, read_doc, tx_id, metas, definitions, changes, old, erasures)
    header = ledger.header(tx_id)
    if header.state_root is not None and header.state_root != plan.root and not _erased_later(ledger, tx_id):
        raise StateRootMismatch(
            f"transaction {tx_id}: the state map rebuilt from the log has root "
            f"{plan.root.hex()[:16]}..., its header commits to {header.state_root.hex()[:16]}... "
            "(the derived state is damaged, or the ledger was written by a faulty writer: run an audit)"
        )
    apply(store, txn, read_doc, tx_id, ledger.state(tx_id).root, metas, changes, old, erasures)
    plan.apply(txn, store.smap)
    return header.n_entries


def _erased_later(ledger: kvcore.Ledger, tx_id: int) -> bool:
    """Whether values were erased by a transaction after ``tx_id``: the map that transaction
    committed to indexed values that are gone, so its root cannot be derived again (the
    erasing transaction's map, and every later one, are checked as always)."""
    newest = ledger.lookup(ERASED_KEY)
    return newest is not None and newest.tx_id > tx_id


def documents(store: Store, txn: lmdb.Transaction, read_doc: ReadDoc, coll: str) -> Iterator[tuple[str, dict]]:
    """(id, document) of every live document of ``coll`` in the read transaction's snapshot."""
    for doc_id, loc in store.locations(txn, coll):
        yield doc_id, read_doc(coll, doc_id, loc)
