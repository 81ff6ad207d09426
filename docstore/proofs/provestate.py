"""Building proofs of the current state from the state map (the verifier needs none of this):
``latest`` (this revision is the current one), ``absent`` (no live document has this id) and
``find`` (a query's result, count or distinct values are complete)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import kvcore
from kvcore.hashing import entry_leaf_hash
from kvcore.merkle import multi_path, root_of

from docstore.collections.query import compile_filter
from docstore.documents import records
from docstore.documents.flatten import OBJECT_HEADER, split_pointer
from docstore.documents.records import Header
from docstore.errors import (
    CorruptDataError,
    DocumentNotFoundError,
    InvalidPointerError,
    NotFoundError,
    ProofUnavailableError,
    QueryError,
)
from docstore.documents import erasure
from docstore.proofs.bundle import Property
from docstore.proofs.prove import erasure_entries
from docstore.proofs.checkpoint import read_unverified
from docstore.proofs.prove import _bundle
from docstore.proofs.statebundle import DocEntries, Query, StateProof
from docstore.proofs.verifystate import planned_ranges
from docstore.statemap import hashing as mh
from docstore.statemap.prove import prove_key, prove_range

if TYPE_CHECKING:
    import lmdb

    from docstore.engine.engine import Engine

MAX_PROVEN_DOCUMENTS = 100_000
"""Most documents one find proof reads (a listing or a wide range past it is refused: narrow
the filter, or use a limit)."""


def _state_of(engine: Engine, tx_id: int) -> kvcore.State:
    """The state after ``tx_id``, whose header must commit to a state map."""
    if tx_id == 0:
        raise ProofUnavailableError("the database is empty: there is no state to prove against yet")
    if engine.ledger.header(tx_id).state_root is None:
        raise ProofUnavailableError(
            f"transaction {tx_id} was committed before the state map existed (its header is of "
            "version 1): commit a transaction, and the state after it can be proven"
        )
    return engine.ledger.state(tx_id)


def _finish(engine: Engine, proof: StateProof, known: kvcore.State | None, with_header: bool) -> StateProof:
    """The bundle: its checkpoint and consistency proof added, and its state's header with the
    header's inclusion path when asked for (a verifier that pins no key) or when no checkpoint
    names the map root (a database without a key): only then are they read."""
    done: StateProof = _bundle(engine, proof, known)  # type: ignore[arg-type,assignment]
    if with_header or done.checkpoint is None or read_unverified(done.checkpoint).map_root is None:
        p = engine.ledger.prove_entry_at(done.state.tx_id, 0, done.state)
        done = done._replace(head=p.header, head_path=p.tx_path)
    return done


def _snapshot(
    engine: Engine, state: kvcore.State | None, known_state: kvcore.State | None
) -> tuple[lmdb.Transaction, int]:
    """A read transaction of the derived state and the transaction it reflects (which must be
    ``state``'s when one is asked for: the map holds the current state only); ``known_state``
    must be one of the ledger's states."""
    engine.check_open()
    if known_state is not None:
        engine.own_state(known_state, "known_state", trusted=False)
    with engine.lock:  # no commit of this process half applied: the map reflects the ledger's last
        txn = engine.store.read()
    reflected = engine.store.reflected(txn)
    tx_id = 0 if reflected is None else reflected[0]
    if tx_id > engine.ledger.tx_id:  # a reader: the writer's derived state is ahead of its view of the log
        engine.refresh()
    if state is not None:
        engine.own_state(state, "state", trusted=False)
        if state.tx_id != tx_id:
            txn.abort()
            raise QueryError(
                f"the current state is transaction {tx_id}: proofs of the current state are made as of it "
                f"(state {state.tx_id} was asked for)"
            )
    return txn, tx_id


def document_entries(
    engine: Engine, tx_id: int, index: int, pointer: str | None = None, erasing: set[int] | None = None,
) -> tuple[Header, DocEntries]:
    """The stored entries of the revision whose header is entry ``index`` of ``tx_id`` (all of
    them, or with ``pointer`` the header, that property and the path proving both in the run).
    An erased property is given by its leaf; its erasing transaction is added to ``erasing``."""
    ledger = engine.ledger
    (hkey, hvalue), = ledger.entry_items(tx_id, index, 1)
    if hvalue is None:
        raise CorruptDataError(f"transaction {tx_id}, entry {index}: a document header is a tombstone")
    header = Header.decode(hvalue)
    stored = ledger.entry_items(tx_id, index + 1, header.n) if header.n else []
    erased = ledger.erased_by(tx_id, index + 1, header.n) if header.n else {}
    cut = len(records.property_prefix(header.collection, header.id)) + 8
    salt = records.SALT_BYTES
    if any(v is None for _k, v in stored):
        raise CorruptDataError(f"document {header.id!r}: a stored property is a tombstone")
    try:
        props = [
            Property(k[cut:].decode(), b"", b"", ledger.erased_leaf(tx_id, index + 1 + i))
            if index + 1 + i in erased else Property(k[cut:].decode(), v[salt:], v[:salt])
            for i, (k, v) in enumerate(stored) if v is not None
        ]
    except UnicodeDecodeError:
        raise CorruptDataError(f"document {header.id!r}: a stored property pointer is damaged") from None
    if pointer is None:
        if erasing is not None:
            erasing.update(erased.values())
        return header, DocEntries(hvalue, props)
    for i, p in enumerate(props):
        if p.pointer == pointer and p.encoded != OBJECT_HEADER:
            leaves = [entry_leaf_hash(0, hkey, hvalue)] + [
                q.leaf if q.leaf is not None else entry_leaf_hash(0, k, v or b"") for q, (k, v) in zip(props, stored)
            ]
            path = multi_path([0, i + 1], len(leaves), lambda a, b: root_of(leaves[a:b]))
            if p.leaf is not None and erasing is not None:
                erasing.add(erased[index + 1 + i])
            return header, DocEntries(hvalue, [p], i, path)
    inside = [p.pointer for p in props if p.pointer.startswith(pointer + "/")]
    if inside:
        raise QueryError(
            f"pointer {pointer!r} addresses a container of {len(inside)} properties; prove one of them "
            f"(e.g. {inside[0]!r}) or the whole document"
        )
    raise NotFoundError(f"document {header.id!r} has no property at {pointer!r}")


def prove_latest(
    engine: Engine, coll: str, doc_id: str, pointer: str | None = None,
    state: kvcore.State | None = None, known_state: kvcore.State | None = None, with_header: bool = False,
) -> StateProof:
    if pointer is not None:
        split_pointer(pointer)
        try:
            pointer.encode()
        except UnicodeEncodeError:
            raise InvalidPointerError(f"JSON pointer {pointer!r} is not encodable as UTF-8") from None
    txn, tx_id = _snapshot(engine, state, known_state)
    with txn:
        smap = engine.store.smap
        key = mh.document_key(coll, doc_id)
        node = prove_key(smap, txn, key)
        value = smap.get(txn, key)
    if node is None or value is None:
        raise DocumentNotFoundError(
            f"no live document {doc_id!r} in {coll!r} (prove that with prove_absent)"
        )
    loc_tx, index, _digest = mh.parse_location(value)
    erasing: set[int] = set()
    header, entries = document_entries(engine, loc_tx, index, pointer, erasing)
    if (header.collection, header.id) != (coll, doc_id) or header.deleted:
        raise CorruptDataError(f"the state map's entry for {doc_id!r} in {coll!r} names another revision")
    st = _state_of(engine, tx_id)
    proof = StateProof("latest", coll, st, None, [], map=node, id=doc_id, pointer=pointer, documents=[entries],
                       erasures=erasure_entries(engine.ledger, erasing, st))
    return _finish(engine, proof, known_state, with_header)


def prove_absent(
    engine: Engine, coll: str, doc_id: str,
    state: kvcore.State | None = None, known_state: kvcore.State | None = None, with_header: bool = False,
) -> StateProof:
    txn, tx_id = _snapshot(engine, state, known_state)
    with txn:
        smap = engine.store.smap
        key = mh.document_key(coll, doc_id)
        if smap.get(txn, key) is not None:
            raise QueryError(f"document {doc_id!r} exists in {coll!r}: prove it with prove_latest")
        node = prove_range(smap, txn, key, key + b"\x00")
    st = _state_of(engine, tx_id)
    proof = StateProof("absent", coll, st, None, [], map=node, id=doc_id)
    return _finish(engine, proof, known_state, with_header)


def prove_find(
    engine: Engine, coll: str, query: Query,
    state: kvcore.State | None = None, known_state: kvcore.State | None = None, with_header: bool = False,
) -> StateProof:
    """A proof of a query's complete result (``query.op``: find, count or distinct)."""
    predicate = compile_filter(query.filter)
    txn, tx_id = _snapshot(engine, state, known_state)
    documents: list[DocEntries] = []
    ranges: list[tuple[bytes, bytes | None, Any]] = []
    with txn:
        store = engine.store
        smap = store.smap
        definition = store.definition(txn, coll)
        if definition is None:
            raise NotFoundError(f"no collection {coll!r}")
        dkey = mh.definition_key(coll)
        def_node = prove_key(smap, txn, dkey)
        def_value = smap.get(txn, dkey)
        if def_node is None or def_value is None:
            raise CorruptDataError(f"collection {coll!r} is missing from the state map")
        field, planned = planned_ranges(coll, definition, query.filter, lambda f: not store.multikey(txn, coll, f))
        single = None
        if field is not None and not store.multikey(txn, coll, field):
            prefix = mh.multikey_prefix(coll, field)
            single = prove_range(smap, txn, prefix, mh.successor(prefix))
        can_cut = query.op == "find" and query.sort is None and query.limit is not None
        want = None if not can_cut else query.skip + (query.limit or 0)
        seen: dict[tuple[int, int], bool] = {}
        erasing: set[int] = set()
        matched = 0
        for lo, hi in planned:
            end: bytes | None = hi
            for key, value in smap.items(txn, lo, hi):
                at = mh.parse_location(value)[:2]
                if at not in seen:
                    if len(seen) >= MAX_PROVEN_DOCUMENTS:
                        raise QueryError(
                            f"a proof of this query would read more than {MAX_PROVEN_DOCUMENTS} documents: "
                            "narrow the filter (on an indexed field) or set a limit"
                        )
                    header, entries = document_entries(engine, at[0], at[1], None, erasing)
                    documents.append(entries)
                    doc = _doc_of(engine, at, header, entries)
                    ok = predicate(doc)
                    seen[at] = ok
                    matched += ok
                if want is not None and matched >= want:
                    end = key + b"\x00"
                    break
            ranges.append((lo, end, prove_range(smap, txn, lo, end)))
            if want is not None and matched >= want:
                break
    (def_tx, def_index, _leaf), = [mh.parse_location(def_value)]
    (_k, def_bytes), = engine.ledger.entry_items(def_tx, def_index, 1)
    if def_bytes is None:
        raise CorruptDataError(f"collection {coll!r}: its definition entry is a tombstone")
    st = _state_of(engine, tx_id)
    proof = StateProof(
        "find", coll, st, None, [], documents=documents, query=query, indexed=field,
        definition=(def_bytes, def_node), ranges=ranges, single=single,
        erasures=erasure_entries(engine.ledger, erasing, st),
    )
    return _finish(engine, proof, known_state, with_header)


def _doc_of(engine: Engine, at: tuple[int, int], header: Header, entries: DocEntries) -> dict:
    if header.deleted:
        return {}
    erased = engine.ledger.erased_by(at[0], at[1] + 1, header.n) if header.n else {}
    marks = {p.pointer: erased[at[1] + 1 + i] for i, p in enumerate(entries.properties) if p.leaf is not None}
    return erasure.rebuild([(p.pointer, p.encoded) for p in entries.properties], marks)


def prove_collections(
    engine: Engine, state: kvcore.State | None = None, known_state: kvcore.State | None = None,
    with_header: bool = False,
) -> StateProof:
    """A proof of the complete list of collections (their definitions) as of the current state."""
    txn, tx_id = _snapshot(engine, state, known_state)
    with txn:
        smap = engine.store.smap
        node = prove_range(smap, txn, b"c\x00", b"c\x01")
        located = [mh.parse_location(v)[:2] for _k, v in smap.items(txn, b"c\x00", b"c\x01")]
    definitions = []
    for def_tx, def_index in located:
        (_k, raw), = engine.ledger.entry_items(def_tx, def_index, 1)
        if raw is None:
            raise CorruptDataError("a collection's definition entry is a tombstone")
        definitions.append(raw)
    st = _state_of(engine, tx_id)
    proof = StateProof("collections", "", st, None, [], map=node, definitions=definitions)
    return _finish(engine, proof, known_state, with_header)
