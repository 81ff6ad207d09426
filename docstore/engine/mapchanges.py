"""What a transaction changes in the state map (docs/proofs.md, "The state map").

The keys it sets or removes, from the same inputs as :func:`docstore.engine.derive.apply`
(definitions, the documents written and the revisions they replace), computed before the
derived state is changed (it reads the revisions replaced and the documents of an index
being created from it):

- ``c\\0 collection`` -> ``u64 tx || u32 entry index || leaf hash of the definition entry``;
- ``d\\0 collection \\0 id`` -> ``u64 tx || u32 entry index of the header || run root``
  (removed when the document is deleted);
- ``i\\0 collection \\0 field \\0 index key || id`` -> the same value as the document's, for
  each index key of its current revision (null when the field is missing, each element of an
  array): a range of an index leads straight to its documents' revisions;
- ``m\\0 collection \\0 field \\0 id`` -> empty, for each document whose path to an indexed
  field meets an array (none under a field: every document has one value there).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import lmdb

from docstore.collections.indexspec import changed_indexes, index_specs, spec_keys, spec_meets_array
from docstore.engine.store import Store
from docstore.errors import CorruptDataError
from docstore.statemap import hashing as mh

MapChanges = dict[bytes, "bytes | None"]


class Revision(NamedTuple):
    """A document revision a transaction writes: None for ``doc`` when it deletes it."""

    collection: str
    id: str
    doc: dict | None
    entry: int  # the index of its header in the transaction
    digest: bytes  # the run root of its entries


def compute(
    store: Store,
    txn: lmdb.Transaction,
    read_doc: Any,
    tx_id: int,
    metas: dict[str, dict[str, Any]],
    definitions: dict[str, tuple[int, bytes]],
    revisions: list[Revision],
    old_docs: dict[tuple[str, str], dict | None] | None = None,
) -> MapChanges:
    """The map's changes for transaction ``tx_id``: ``definitions`` gives each new definition's
    (entry index, entry leaf hash); ``old_docs`` the revisions replaced where the caller has
    them (the others are read through ``read_doc``)."""
    out: MapChanges = {}
    smap = store.smap
    specs_of: dict[str, list[dict[str, Any]]] = {}
    for name, meta in metas.items():
        entry, leaf = definitions[name]
        out[mh.definition_key(name)] = mh.location_value(tx_id, entry, leaf)
        dropped, created = changed_indexes(store.definition(txn, name) or {}, meta)
        specs_of[name] = index_specs(meta)
        for field in dropped:  # an index dropped (or redefined): its entries and marks go
            for prefix in (mh.index_prefix(name, field), mh.multikey_prefix(name, field)):
                for k, _v in smap.items(txn, prefix, mh.successor(prefix)):
                    out[k] = None
        if created:  # an index created: an entry for each key of each current document
            for doc_id, loc in store.locations(txn, name):
                raw = smap.get(txn, mh.document_key(name, doc_id))
                if raw is None:
                    raise CorruptDataError(f"document {doc_id!r} of {name!r} is missing from the state map")
                doc = read_doc(name, doc_id, loc)
                for spec in created:
                    field = spec["field"]
                    for e in spec_keys(doc, spec):
                        out[mh.index_key(name, field, e, doc_id)] = raw
                    if spec_meets_array(doc, spec):
                        out[mh.multikey_key(name, field, doc_id)] = b""
    for rev in revisions:
        coll, doc_id = rev.collection, rev.id
        specs = specs_of.get(coll)
        if specs is None:
            definition = store.definition(txn, coll)
            if definition is None:
                raise CorruptDataError(f"transaction {tx_id} writes to unknown collection {coll!r}")
            specs = specs_of[coll] = index_specs(definition)
        key = (coll, doc_id)
        old: dict | None
        if old_docs is not None and key in old_docs:
            old = old_docs[key]
        else:
            where = store.location(txn, coll, doc_id)
            old = None if where is None else read_doc(coll, doc_id, where)
        value = None if rev.doc is None else mh.location_value(tx_id, rev.entry, rev.digest)
        for spec in specs:
            field = spec["field"]
            new_keys = spec_keys(rev.doc, spec) if rev.doc is not None else []
            if old is not None:
                for e in spec_keys(old, spec):
                    if e not in new_keys:
                        out[mh.index_key(coll, field, e, doc_id)] = None
            for e in new_keys:
                out[mh.index_key(coll, field, e, doc_id)] = value
            multi = rev.doc is not None and spec_meets_array(rev.doc, spec)
            if multi or (old is not None and spec_meets_array(old, spec)):
                out[mh.multikey_key(coll, field, doc_id)] = b"" if multi else None
        out[mh.document_key(coll, doc_id)] = value
    return out


def erased(
    store: Store, txn: lmdb.Transaction, coll: str, doc_id: str, doc: dict, specs: list[dict[str, Any]],
    old: dict | None = None,
) -> MapChanges:
    """The map's changes for a document whose values an erasure destroys: its index entries
    removed (those of ``old``, its revision before, when known; else found by its id and
    location, a scan of each index: the erased values cannot be read to name them), then those
    of ``doc`` (its current revision as the erasure leaves it) put back."""
    out: MapChanges = {}
    smap = store.smap
    raw = smap.get(txn, mh.document_key(coll, doc_id))
    if raw is None:
        raise CorruptDataError(f"document {doc_id!r} of {coll!r} is missing from the state map")
    for spec in specs:
        field = spec["field"]
        if old is not None:
            for e in spec_keys(old, spec):
                out[mh.index_key(coll, field, e, doc_id)] = None
        else:
            prefix = mh.index_prefix(coll, field)
            for k, v in smap.items(txn, prefix, mh.successor(prefix)):
                if v == raw and mh.index_key_id(k, doc_id):
                    out[k] = None
        for e in spec_keys(doc, spec):
            out[mh.index_key(coll, field, e, doc_id)] = raw
        mk = mh.multikey_key(coll, field, doc_id)
        if spec_meets_array(doc, spec):
            out[mk] = b""
        elif smap.get(txn, mk) is not None:
            out[mk] = None
    return out
