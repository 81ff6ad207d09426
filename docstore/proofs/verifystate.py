"""Pure verification of proofs of the current state (bundle version 3): a function of (proof,
trusted state, pinned keys), no I/O.

Checks, after the proof's state is authenticated (as for every bundle: docstore.proofs.verify):
the state's own transaction header is in the ledger at that state (its inclusion path, as the
last transaction) and commits to a state-map root; the state-map proofs lead to that root; and
the documents the bundle carries rebuild, entry by entry, the run roots the map holds for them.

- ``latest``: the map holds the document's key, with the run root of the carried revision
  (or of its header and the one property, through the run's path);
- ``absent``: the map's range ``[key, key + 0x00)`` is proven complete, and empty;
- ``find``: the collection's definition is the one in the map; the ranges are those the
  filter gives on the named index (or the whole collection), each proven complete (the last
  may stop early when a limit is met); every entry in them leads to a carried document, and
  the result (filter, sort, skip, limit, count or distinct values) is computed here from them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import orjson

import kvcore
from kvcore.hashing import entry_leaf_hash
from kvcore.merkle import root_from_multi

from docstore.collections.cursor import run_query
from docstore.collections.indexspec import compound_plan, covers, spec_keys, spec_of
from docstore.collections.keyenc import index_range
from docstore.collections.query import compile_filter, distinct_values, extract_bounds
from docstore.documents import erasure, records
from docstore.documents.flatten import OBJECT_HEADER, decode_value
from docstore.documents.ids import check_collection_name, check_id
from docstore.documents.records import Header
from docstore.errors import CorruptDataError, DocstoreError, VerificationError
from docstore.proofs import checkpoint as ckpt
from docstore.proofs.note import NoteError, Verifier
from docstore.proofs.bundle import Property
from docstore.proofs.erasureproof import check_all_used, proven_erasures
from docstore.proofs.statebundle import VERSION_WITH_INDEX_KINDS, DocEntries, Query, StateProof, new_index_kinds
from docstore.statemap import hashing as mh
from docstore.statemap.verify import verify_key, verify_range


def verify_state_proof(proof: StateProof, trusted: kvcore.State, map_root: bytes) -> Any:
    """What the proof shows, once its state is authenticated against ``trusted`` and the state
    map's root for that state (``map_root``) is too (the caller did both: see
    :func:`map_root_of`)."""
    try:
        if proof.kind != "collections" or proof.collection:
            check_collection_name(proof.collection)
        if proof.id is not None:
            check_id(proof.id)
    except DocstoreError as e:
        raise VerificationError(f"the proof names no document docstore could write: {e}") from None
    _not_older(proof, trusted)
    root = map_root
    if proof.kind == "collections":
        return _collections(proof, root)
    erased = Erased(proven_erasures(proof.erasures, proof.state))
    if proof.kind == "latest":
        got = _latest(proof, root, erased)
        erased.check_all_used()
        return got
    if proof.kind == "absent":
        key = mh.document_key(proof.collection, proof.id or "")
        if verify_range(proof.map, root, key, key + b"\x00", complete=True):
            raise VerificationError(f"absence check failed: the state holds document {proof.id!r}")
        return None
    got = _find(proof, root, erased)
    erased.check_all_used()
    return got


class Erased:
    """The erased entries a bundle's proven erasure records list, found by leaf (a leaf names
    its entry: the property's key, with collection, id, revision and ordinal, is hashed in
    it), and which records were used."""

    def __init__(self, listed: dict[tuple[int, int, bytes], int]) -> None:
        self._listed = listed
        self._by_leaf = {leaf: by for (_t, _i, leaf), by in listed.items()}
        self._used: set[int] = set()

    def by(self, p: Property) -> int:
        """The transaction that erased property ``p`` (given by its leaf), else VerificationError."""
        if p.encoded or p.salt or p.leaf is None:
            raise VerificationError(f"property {p.pointer!r}: an erased property carries its leaf alone")
        found = self._by_leaf.get(p.leaf)
        if found is None:
            raise VerificationError(
                f"erasure check failed: property {p.pointer!r} is given by its hash, but no erasure record in the "
                "proof lists it"
            )
        self._used.add(found)
        return found

    def check_all_used(self) -> None:
        check_all_used(self._listed, self._used)


def _not_older(proof: StateProof, trusted: kvcore.State) -> None:
    """Refuse a proof of a state older than the trusted one. An inclusion stays true in every
    later state, so older states are fine for version-1/2 bundles; what is *current* in an
    older state (the latest revision, an absence, a complete result) may be gone from the
    trusted one (docstore.proofs.verify accepted the state itself: the trusted one, an older
    one linked to it, or a newer one signed and linked)."""
    if proof.state.tx_id < trusted.tx_id:
        raise VerificationError(
            f"freshness check failed: the proof is of state {proof.state.tx_id}, older than the trusted "
            f"state {trusted.tx_id}; what was current then may not be now (ask for a proof of the "
            "current state, with known_state=... your trusted state)"
        )


def asks(
    proof: StateProof, kind: str, collection: str, *, id: str | None = None,  # noqa: A002
    pointer: str | None = None, query: Query | None = None,
) -> None:
    """Refuse a bundle that answers another question than the one asked (``docstore.verify``
    checks that a bundle's answer is true *for the question it states*: a reader that asked
    something checks the bundle states that, before trusting the answer)."""
    asked = (kind, collection, id, pointer, None if query is None else query.to_dict())
    stated = (proof.kind, proof.collection, proof.id, proof.pointer, None if proof.query is None else proof.query.to_dict())
    if asked != stated:
        raise VerificationError(
            f"the proof answers another question ({proof.kind} of {proof.collection!r}) than the one asked "
            f"({kind} of {collection!r}): a server answering with a proof of something else"
        )


def map_root_of(proof: StateProof, trusted_note: str | bytes | None, pinned: Sequence[Verifier]) -> bytes:
    """The state map's root for the proof's (authenticated) state, authenticated: the one its
    carried header commits to, the header being in the ledger at that state (its inclusion
    path); else the one the state's checkpoint names, if that checkpoint is the trusted one
    (``trusted_note``: the user vouches for it, or it was opened with the pinned keys) or a
    pinned key signed it. Else VerificationError: an unsigned state-map line proves nothing."""
    head, state = proof.head, proof.state
    if head is not None:
        if head.tx_id != state.tx_id:
            raise VerificationError(
                f"the header carried is of transaction {head.tx_id}, not of the proof's state {state.tx_id}"
            )
        if head.state_root is None:
            raise VerificationError("the state's transaction header commits to no state map (header version 1)")
        try:
            kvcore.verify_tx(head, proof.head_path, state)
        except kvcore.VerificationError as e:
            raise VerificationError(str(e)) from None
        if proof.checkpoint is not None and _named(proof.checkpoint) not in (None, head.state_root):
            raise VerificationError("the bundle's checkpoint names another state map root than its header")
        return head.state_root
    if trusted_note is not None:
        try:
            c = ckpt.read_unverified(trusted_note)
        except NoteError as e:
            raise VerificationError(f"the trusted checkpoint: {e}") from None
        if c.state == state and c.map_root is not None:
            return c.map_root
    if pinned and proof.checkpoint is not None:
        try:
            c = ckpt.open_checkpoint(proof.checkpoint, pinned)
        except NoteError as e:
            raise VerificationError(f"the bundle's checkpoint is not authenticated: {e}") from None
        if c.state == state and c.map_root is not None:
            return c.map_root
    raise VerificationError(
        "the state map's root is named only by the bundle's checkpoint, and no pinned key authenticates it "
        "(and it is not your trusted checkpoint): pin the ledger's key (verifier_keys=[...], immudoc verify "
        "--key KEY), or ask for the proof with its state's header (with_header=True, --with-header)"
    )


def _named(note: str) -> bytes | None:
    try:
        return ckpt.read_unverified(note).map_root
    except NoteError as e:
        raise VerificationError(f"the bundle's checkpoint: {e}") from None


def _header(raw: bytes, coll: str) -> Header:
    try:
        h = Header.decode(raw)
    except CorruptDataError as e:
        raise VerificationError(f"header check failed: {e}") from None
    if h.collection != coll or h.deleted or not 1 <= h.revision < 2**32:
        raise VerificationError("header check failed: the revision carried is not a live document of the collection")
    return h


def _document(entries: DocEntries, coll: str, erased: Erased | None = None) -> tuple[Header, bytes, dict]:
    """(header, run root, document) of a whole revision carried by a bundle (its erased
    properties shown as their markers)."""
    h = _header(entries.header, coll)
    if entries.ordinal is not None:
        raise VerificationError("a document is carried whole here, not one property of it")
    if h.n != len(entries.properties):
        raise VerificationError(
            f"completeness check failed: the header says {h.n} properties, the proof carries {len(entries.properties)}"
        )
    prefix = records.property_prefix(coll, h.id)
    leaves = [entry_leaf_hash(0, records.header_key(coll, h.id), entries.header)]
    marks: dict[str, int] = {}
    for i, p in enumerate(entries.properties):
        if p.leaf is not None:
            marks[p.pointer] = (erased or Erased({})).by(p)
            leaves.append(p.leaf)
            continue
        if len(p.salt) != records.SALT_BYTES:
            raise VerificationError(f"property {p.pointer!r} has a salt of {len(p.salt)} bytes")
        leaves.append(entry_leaf_hash(0, records.property_key(prefix, h.revision, i, p.pointer), p.salt + p.encoded))
    try:
        doc = erasure.rebuild([(p.pointer, p.encoded) for p in entries.properties], marks)
    except (DocstoreError, ValueError, LookupError) as e:
        raise VerificationError(f"the carried document does not decode: {e}") from None
    if doc.get("_id") != h.id:
        raise VerificationError("the carried document does not hold its own _id")
    return h, mh.run_root(leaves), doc


def _location(value: bytes) -> tuple[int, int, bytes]:
    try:
        return mh.parse_location(value)
    except ValueError as e:
        raise VerificationError(f"state map value check failed: {e}") from None


def _latest(proof: StateProof, root: bytes, erased: Erased) -> Any:
    coll, doc_id = proof.collection, proof.id or ""
    value = verify_key(proof.map, root, mh.document_key(coll, doc_id))
    _tx, _index, digest = _location(value)
    if len(proof.documents) != 1:
        raise VerificationError("a latest proof carries exactly one revision")
    entries = proof.documents[0]
    if proof.pointer is None:
        h, run, doc = _document(entries, coll, erased)
        if h.id != doc_id or run != digest:
            raise VerificationError(
                "freshness check failed: the revision carried does not have the run root the state commits to "
                "(it is not the current revision, or its stored entries were changed)"
            )
        return doc
    h = _header(entries.header, coll)
    if h.id != doc_id or entries.ordinal is None or entries.path is None or len(entries.properties) != 1:
        raise VerificationError("a latest proof of a property carries the header, that property and its path")
    p = entries.properties[0]
    if p.pointer != proof.pointer:
        raise VerificationError(f"pointer check failed: the property carried is {p.pointer!r}, not {proof.pointer!r}")
    by = erased.by(p) if p.leaf is not None else None
    if (by is None and len(p.salt) != records.SALT_BYTES) or not entries.ordinal < h.n:
        raise VerificationError("property check failed: a salt or ordinal out of range")
    key = records.property_key(records.property_prefix(coll, doc_id), h.revision, entries.ordinal, p.pointer)
    leaf = p.leaf if p.leaf is not None else entry_leaf_hash(0, key, p.salt + p.encoded)
    leaves = [entry_leaf_hash(0, records.header_key(coll, doc_id), entries.header), leaf]
    try:
        run = root_from_multi([0, entries.ordinal + 1], h.n + 1, leaves, entries.path)
    except ValueError as e:
        raise VerificationError(f"property path is malformed: {e}") from None
    if run != digest:
        raise VerificationError(
            "freshness check failed: the property carried does not lead to the run root the state commits to "
            "(not of the current revision, or its stored entry was changed)"
        )
    if by is not None:
        return erasure.marker(by)
    if p.encoded == OBJECT_HEADER:
        raise VerificationError("property check failed: that pointer addresses an object, not a value")
    try:
        return decode_value(p.encoded)
    except DocstoreError as e:
        raise VerificationError(f"value check failed: {e}") from None


def planned_ranges(
    coll: str, definition: dict[str, Any], filter: dict, single: Callable[[str], bool] | None = None  # noqa: A002
) -> tuple[str | None, list[tuple[bytes, bytes]]]:
    """(the indexed field whose ranges hold every document that may match ``filter``, or None
    for a listing of the collection; the state-map key ranges to prove). ``single(field)``
    says whether the field is known to hold one value in every document (then both bounds of
    a range narrow it; else one, as for an array any element may meet each bound). Pure: the
    verifier checks a bundle's ranges against the same computation."""
    specs = [i for i in definition.get("indexes", []) if covers(i, filter)]
    loose = extract_bounds(filter, multikey=True) if filter else {}
    # (rank, position, name): equality and $in before ranges, more fields of a compound
    # index used first, fewer values or ranges first; the first such index on ties
    ranked: list[tuple[tuple[int, int, int], int, str]] = []
    for n, spec in enumerate(specs):
        name = spec["field"]
        if spec.get("fields"):
            found = compound_plan(spec, filter, False)
            if found is not None:
                ranked.append((found[0], n, name))
        elif name in loose:
            b = loose[name]
            ranked.append(((int(b.values is None), -1, len(b.values or ())), n, name))
    if not ranked:
        prefix = mh.document_prefix(coll)
        return None, [(prefix, mh.successor(prefix))]
    _rank, n, field = min(ranked)
    one = single is not None and single(field)
    if specs[n].get("fields"):
        found = compound_plan(specs[n], filter, one)
        assert found is not None
        byte_ranges = found[1]
    else:
        bounds = loose[field]
        if one:
            bounds = extract_bounds(filter, multikey=False).get(field, bounds)
        byte_ranges = index_range(bounds)
    return field, [mh.index_key_range(coll, field, s, t) for s, t in byte_ranges]


def _collections(proof: StateProof, root: bytes) -> list[str]:
    """The names of every collection: the map's ``c\\0`` range, proven complete, each entry
    holding the leaf hash of a carried definition."""
    if proof.collection:
        raise VerificationError("a proof of the list of collections names no collection")
    by_leaf: dict[bytes, bytes] = {}
    names = []
    for key, value in verify_range(proof.map, root, b"c\x00", b"c\x01", complete=True):
        leaf = _location(value)[2]
        found = [d for d in proof.definitions if entry_leaf_hash(0, key, d) == leaf]
        if not found:
            raise VerificationError("completeness check failed: a collection's definition is not carried")
        by_leaf[leaf] = found[0]
        try:
            meta = orjson.loads(found[0])
        except orjson.JSONDecodeError:
            raise VerificationError("a carried definition is not JSON") from None
        name = key[2:].decode("utf-8", "replace")
        if not isinstance(meta, dict) or meta.get("name") != name:
            raise VerificationError("definition check failed: a definition names another collection")
        names.append(name)
    if len(by_leaf) != len(proof.definitions):
        raise VerificationError("the proof carries definitions that no proven entry leads to")
    return names


def _find(proof: StateProof, root: bytes, erased: Erased) -> Any:
    coll, query = proof.collection, proof.query
    assert query is not None and proof.definition is not None
    def_bytes, def_node = proof.definition
    dvalue = verify_key(def_node, root, mh.definition_key(coll))
    if _location(dvalue)[2] != entry_leaf_hash(0, records.collection_key(coll), def_bytes):
        raise VerificationError("definition check failed: the collection's definition carried is not the current one")
    if new_index_kinds(def_bytes) != (proof.version == VERSION_WITH_INDEX_KINDS):
        raise VerificationError(
            f"the proof is of version {proof.version}; a find proof over sparse, partial or compound indexes is of "
            f"version {VERSION_WITH_INDEX_KINDS}, and only such a proof is"
        )
    try:
        definition = orjson.loads(def_bytes)
        predicate = compile_filter(query.filter)
    except (orjson.JSONDecodeError, DocstoreError) as e:
        raise VerificationError(f"the query or the definition is not valid: {e}") from None
    if not isinstance(definition, dict) or definition.get("name") != coll:
        raise VerificationError("definition check failed: it names another collection")
    single = None
    if proof.single is not None:  # the index's field holds one value in every document
        prefix = mh.multikey_prefix(coll, proof.indexed or "")
        if verify_range(proof.single, root, prefix, mh.successor(prefix), complete=True):
            raise VerificationError("the proof says no document holds an array on the field, and it does not hold")
        single = proof.indexed
    try:
        field, planned = planned_ranges(coll, definition, query.filter, lambda f: f == single)
        spec = spec_of(definition, field) if field is not None else {}
    except (DocstoreError, KeyError, TypeError) as e:
        raise VerificationError(f"the collection's definition has an index docstore cannot plan with: {e}") from None
    if proof.indexed != field:
        raise VerificationError(
            f"the proof's ranges are over {proof.indexed!r}, the filter is answered by {field!r}"
        )
    ranges = proof.ranges
    if not ranges and planned:
        raise VerificationError("the proof holds no range of the query")
    if len(ranges) > len(planned):
        raise VerificationError("the proof holds more ranges than the query has")
    stopped_early = len(ranges) < len(planned)
    for i, (lo, hi, _node) in enumerate(ranges):
        want_lo, want_hi = planned[i]
        if lo != want_lo:
            raise VerificationError("range check failed: a range does not start where the query's does")
        if hi != want_hi:
            if hi is None or hi > want_hi or i != len(ranges) - 1:
                raise VerificationError("range check failed: a range ends past the query's, or before it yet not last")
            stopped_early = True
    by_digest: dict[bytes, tuple[Header, dict]] = {}
    for entries in proof.documents:
        h, run, doc = _document(entries, coll, erased)
        if run in by_digest:
            raise VerificationError("the proof carries a document twice")
        by_digest[run] = (h, doc)
    ordered: list[dict] = []
    used: set[bytes] = set()
    for lo, hi, node in ranges:
        for key, value in verify_range(node, root, lo, hi, complete=True):
            digest = _location(value)[2]
            found = by_digest.get(digest)
            if found is None:
                raise VerificationError(
                    "completeness check failed: no document the proof carries has the run root an entry of the "
                    "proven range holds (a document left out, or one whose entries differ from what the state commits to)"
                )
            h, doc = found
            if field is None:
                ok = key == mh.document_key(coll, h.id)
            else:
                ok = key in {mh.index_key(coll, field, e, h.id) for e in spec_keys(doc, spec)}
            if not ok:
                raise VerificationError("entry check failed: an entry of the range does not belong to its document")
            if digest not in used:
                used.add(digest)
                ordered.append(doc)
    if len(used) != len(by_digest):
        raise VerificationError("the proof carries documents that no proven entry leads to")
    if stopped_early:
        if query.op != "find" or query.sort is not None or query.limit is None:
            raise VerificationError("the proof stops before the end of the query's ranges, which only a limit allows")
        if sum(1 for d in ordered if predicate(d)) < query.skip + query.limit:
            raise VerificationError("completeness check failed: the proof stops before the limit is reached")
    if query.op == "count":
        return sum(1 for d in ordered if predicate(d))
    if query.op == "distinct":
        if not isinstance(query.field, str):
            raise VerificationError("a distinct proof names its field")
        return distinct_values((d for d in ordered if predicate(d)), query.field)
    try:
        return list(run_query(ordered, query.filter, None, query.sort, query.skip, query.limit, predicate=predicate))
    except DocstoreError as e:
        raise VerificationError(f"the query is not valid: {e}") from None
