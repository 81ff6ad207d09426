"""Proof bundles of the current state (version 3; docs/proofs.md): ``latest``, ``absent`` and
``find`` (a complete query result, a count or distinct values).

Each carries the state map's root for its state in one of two ways: its signed checkpoint
names it (the checkpoint's ``state-map`` line), or the bundle carries the header of the state's
transaction (a version-2 header: its ``state_root`` is the map's root) with its inclusion path
(``head``, ``head_path``: needed by a verifier that does not pin the ledger's key). The state
itself is not written: it is the checkpoint's, or the root the header's path leads to. Then
come proofs from the state map (:mod:`docstore.statemap.prove`, each one base64 string of
:mod:`docstore.statemap.encoding`) and the documents they reach, each as its stored entries
(header and properties with their salts) so that the verifier rebuilds its run root; and, for
a verifier that knows another state, a consistency proof.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple


import orjson

import kvcore
from kvcore.hashing import decode_header, header_size, tx_leaf_hash
from kvcore.merkle import root_from_inclusion

from docstore.collections.cursor import check_paging, sort_key
from docstore.collections.query import compile_filter
from docstore.errors import VerificationError
from docstore.proofs.bundle import (
    FORMAT, MAX_BUNDLE_BYTES, ErasureEntry, Property, Proof, b64, check_utf8, consistency_of, dumps, erasures_of,
    hashes_of, nonneg_int,
    trust_fields, unb64,
)
from docstore.proofs.bundle import from_dict as bundle_from_dict
from docstore.proofs.checkpoint import read_unverified
from docstore.proofs.note import NoteError
from docstore.statemap import encoding

VERSION = 3
VERSION_WITH_ERASURES = 6
VERSION_WITH_INDEX_KINDS = 7
"""Version 7: a find proof (version 6's fields, ``erasures`` optional) over a collection with a
sparse, partial or compound index (docs/queries.md, "Indexes"): a verifier that predates those
kinds refuses it (an unknown version) rather than planning its ranges another way."""
"""Version 6: version 3 and ``erasures``, the proofs of the erasure records of the erased
properties its documents give by their leaf hashes (docs/proofs.md, "Erased properties")."""
KINDS = ("latest", "absent", "find", "collections")
OPS = ("find", "count", "distinct")
_COMMON = frozenset({"format", "version", "kind", "collection", "checkpoint", "consistency", "head", "head_path"})
_FIELDS = {
    "latest": _COMMON | {"id", "pointer", "map", "documents"},
    "absent": _COMMON | {"id", "map"},
    "find": _COMMON | {"query", "index", "single", "definition", "ranges", "documents"},
    "collections": _COMMON | {"map", "definitions"},
}
_QUERY_FIELDS = frozenset({"op", "filter", "sort", "skip", "limit", "field"})
_DOC_FIELDS = frozenset({"header", "properties", "ordinal", "path"})


class DocEntries(NamedTuple):
    """A document revision's stored entries: its header entry's value and its properties
    (all of them; or, with ``ordinal``, the one at that position and the path proving it in
    the revision's run)."""

    header: bytes
    properties: list[Property]
    ordinal: int | None = None
    path: list[bytes] | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"header": b64(self.header), "properties": [p.to_list() for p in self.properties]}
        if self.ordinal is not None:
            d["ordinal"] = self.ordinal
            d["path"] = [b64(h) for h in self.path or []]
        return d


class Query(NamedTuple):
    op: str  # find, count or distinct
    filter: dict
    sort: Any = None
    skip: int = 0
    limit: int | None = None
    field: str | None = None  # distinct's field

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "filter": self.filter, "sort": self.sort, "skip": self.skip,
                "limit": self.limit, "field": self.field}


def checked_query(
    op: str, filter: dict | None, sort: Any, skip: int, limit: int | None, field: str | None  # noqa: A002
) -> Query:
    """The query a find/count/distinct proof states, checked as the collection's own find checks
    it (QueryError for a malformed filter, paging or sort), before anything is asked or read."""
    compile_filter(filter)
    check_paging(skip, limit)
    if sort is not None:
        sort_key(sort)
    return Query(op, dict(filter or {}), sort, skip, limit, field)


class StateProof(NamedTuple):
    """A proof about the current state (see the module); verify with :func:`docstore.verify`."""

    kind: str
    collection: str
    state: kvcore.State
    head: kvcore.TxHeader | None  # None: the checkpoint names the map root
    head_path: list[bytes]
    map: Any = None  # latest, absent: a state-map proof node
    id: str | None = None
    pointer: str | None = None
    documents: list[DocEntries] = []
    query: Query | None = None
    indexed: str | None = None  # find: the indexed field whose ranges are proven (None: a listing)
    definition: tuple[bytes, Any] | None = None  # find: the collection's definition and its key proof
    ranges: list[tuple[bytes, bytes | None, Any]] = []  # find: [lo, hi) and its range proof
    single: Any = None  # find: a range proof that no document holds an array on the index's field
    definitions: list[bytes] = []  # collections: every collection's definition, as stored
    checkpoint: str | None = None
    consistency: kvcore.ConsistencyProof | None = None
    consistency_state: kvcore.State | None = None
    erasures: list[ErasureEntry] | None = None  # version 6: the records of erased properties
    version: int = VERSION  # as read (a bundle made here states the version its contents need)

    def __repr__(self) -> str:
        what = self.id if self.kind != "find" else (self.query.op if self.query else "")
        return f"<StateProof {self.kind} {self.collection} {what}, state {self.state.tx_id}>"

    def with_consistency(self, other: kvcore.State, proof: kvcore.ConsistencyProof) -> StateProof:
        return self._replace(consistency=proof, consistency_state=other)

    def with_checkpoint(self, note: str | None) -> StateProof:
        return self._replace(checkpoint=note)

    def to_dict(self) -> dict[str, Any]:
        kinds = self.kind == "find" and self.definition is not None and new_index_kinds(self.definition[0])
        version = VERSION_WITH_INDEX_KINDS if kinds else VERSION_WITH_ERASURES if self.erasures else VERSION
        d: dict[str, Any] = {"format": FORMAT, "version": version, "kind": self.kind, "collection": self.collection}
        if self.kind in ("latest", "absent"):
            d["id"] = self.id
        if self.kind == "latest":
            d["pointer"] = self.pointer
        if self.kind == "find":
            assert self.query is not None and self.definition is not None
            d["query"] = self.query.to_dict()
            d["index"] = self.indexed
            d["single"] = None if self.single is None else _enc(self.single)
            d["definition"] = [b64(self.definition[0]), _enc(self.definition[1])]
            d["ranges"] = [[b64(lo), None if hi is None else b64(hi), _enc(node)] for lo, hi, node in self.ranges]
        else:
            d["map"] = _enc(self.map)
        if self.kind == "collections":
            d["definitions"] = [b64(x) for x in self.definitions]
        elif self.kind != "absent":
            d["documents"] = [doc.to_dict() for doc in self.documents]
        if self.erasures:
            d["erasures"] = [e.to_dict() for e in self.erasures]
        if self.head is not None:
            d["head"] = b64(self.head.encode())
            d["head_path"] = [b64(h) for h in self.head_path]
        d |= trust_fields(self)
        del d["state"]  # the checkpoint's, or where the head's path leads
        return d

    def to_json(self, indent: bool = False) -> str:
        return dumps(self.to_dict(), indent)

    @property
    def size(self) -> int:
        """Bytes of the compact JSON bundle."""
        return len(self.to_json().encode())


def new_index_kinds(definition: bytes) -> bool:
    """Whether a collection definition (as stored) has a sparse, partial or compound index."""
    try:
        meta = orjson.loads(definition)
        return any(
            isinstance(i, dict) and ("sparse" in i or "partial_filter" in i or "fields" in i) for i in meta.get("indexes", [])
        )
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return False


def _enc(node: Any) -> str:
    return b64(encoding.encode(node))


def _dec(v: Any, what: str) -> Any:
    try:
        return encoding.decode(unb64(v, what))
    except encoding.EncodingError as e:
        raise VerificationError(f"malformed proof bundle: {what} is not a state-map proof ({e})") from None


def _str(d: dict, name: str, optional: bool = False) -> Any:
    v = d.get(name)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise VerificationError(f"malformed proof bundle: {name!r} must be a string")
    check_utf8(v, name)
    return v


def _doc(d: Any, erased_ok: bool = False) -> DocEntries:
    if not isinstance(d, dict) or not set(d) <= _DOC_FIELDS or "header" not in d or "properties" not in d:
        raise VerificationError("malformed proof bundle: a document is {header, properties[, ordinal, path]}")
    props = d["properties"]
    if not isinstance(props, list):
        raise VerificationError("malformed proof bundle: a document's properties are a list")
    out = []
    for p in props:
        if erased_ok and isinstance(p, list) and len(p) == 4 and isinstance(p[0], str):
            if p[1] is not None or p[2] is not None:
                raise VerificationError("malformed proof bundle: an erased property has no value and no salt")
            check_utf8(p[0], "a property pointer")
            out.append(Property(p[0], b"", b"", unb64(p[3], "leaf")))
            continue
        if not (isinstance(p, list) and len(p) == 3 and isinstance(p[0], str) and isinstance(p[1], str)):
            raise VerificationError("malformed proof bundle: a property is [pointer, value, salt]")
        check_utf8(p[0], "a property pointer")
        try:
            encoded = p[1].encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise VerificationError("malformed proof bundle: a property value is not UTF-8 text") from None
        out.append(Property(p[0], encoded, unb64(p[2], "salt")))
    ordinal = d.get("ordinal")
    if ("ordinal" in d) != ("path" in d):
        raise VerificationError("malformed proof bundle: a property's ordinal and path come together")
    return DocEntries(
        unb64(d["header"], "a document header"),
        out,
        None if ordinal is None else nonneg_int(ordinal),
        None if ordinal is None else hashes_of(d.get("path"), "a document's path"),
    )


def from_dict(d: dict) -> StateProof:
    """Parse a version-3 or 6 bundle (the caller checked format and version); VerificationError
    if it is malformed."""
    kind = d.get("kind")
    if kind not in KINDS:
        raise VerificationError(f"unknown proof kind {kind!r} for version {VERSION}")
    version = d.get("version")
    v6 = version in (VERSION_WITH_ERASURES, VERSION_WITH_INDEX_KINDS)
    if version == VERSION_WITH_ERASURES and kind not in ("latest", "find"):
        raise VerificationError(f"malformed proof bundle: a {kind} proof has no version {VERSION_WITH_ERASURES}")
    if version == VERSION_WITH_INDEX_KINDS and kind != "find":
        raise VerificationError(f"malformed proof bundle: a {kind} proof has no version {VERSION_WITH_INDEX_KINDS}")
    unknown = set(d) - _FIELDS[kind] - ({"erasures"} if v6 else set())
    if unknown:
        raise VerificationError(f"malformed proof bundle: unknown fields {sorted(map(str, unknown))} for a {kind} proof")
    checkpoint = d.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise VerificationError("malformed proof bundle: 'checkpoint' is the text of a signed note")
    head: kvcore.TxHeader | None = None
    head_path: list[bytes] = []
    if "head" in d or "head_path" in d:
        raw = unb64(d.get("head"), "head")
        try:
            if len(raw) != header_size(raw):
                raise ValueError("its length is not its version's")
            head = kvcore.TxHeader(*decode_header(raw))
        except (ValueError, IndexError, struct.error) as e:
            raise VerificationError(f"malformed proof bundle: 'head' is not a transaction header ({e})") from None
        head_path = hashes_of(d.get("head_path"), "head_path")
        state = _state_of_head(head, raw, head_path)
    elif checkpoint is not None:
        try:
            state = read_unverified(checkpoint).state
        except NoteError as e:
            raise VerificationError(f"malformed proof bundle: its checkpoint: {e}") from None
    else:
        raise VerificationError(
            "malformed proof bundle: it carries neither a checkpoint nor its state's header (head, head_path)"
        )
    consistency, cstate = consistency_of(d.get("consistency"))
    proof = StateProof(
        kind=kind,
        collection=_str(d, "collection"),
        state=state,
        head=head,
        head_path=head_path,
        checkpoint=checkpoint,
        consistency=consistency,
        consistency_state=cstate,
    )
    if kind in ("latest", "absent"):
        proof = proof._replace(id=_str(d, "id"), map=_dec(d.get("map"), "map"))
    if kind == "collections":
        defs = d.get("definitions")
        if not isinstance(defs, list):
            raise VerificationError("malformed proof bundle: 'definitions' is a list")
        proof = proof._replace(map=_dec(d.get("map"), "map"), definitions=[unb64(x, "a definition") for x in defs])
    if kind == "latest":
        proof = proof._replace(pointer=_str(d, "pointer", optional=True))
    if kind in ("latest", "find"):
        docs = d.get("documents")
        if not isinstance(docs, list):
            raise VerificationError("malformed proof bundle: 'documents' is a list")
        proof = proof._replace(documents=[_doc(x, v6) for x in docs])
    if version == VERSION_WITH_ERASURES or (version == VERSION_WITH_INDEX_KINDS and "erasures" in d):
        proof = proof._replace(erasures=erasures_of(d))
    proof = proof._replace(version=version if isinstance(version, int) else VERSION)
    if kind == "find":
        q = d.get("query")
        if not isinstance(q, dict) or set(q) != _QUERY_FIELDS or q.get("op") not in OPS:
            raise VerificationError("malformed proof bundle: 'query' is {op, filter, sort, skip, limit, field}")
        if not isinstance(q["filter"], dict) or (q["field"] is not None and not isinstance(q["field"], str)):
            raise VerificationError("malformed proof bundle: the query's filter is an object, its field a string")
        limit = q["limit"]
        query = Query(q["op"], q["filter"], q["sort"], nonneg_int(q["skip"]), None if limit is None else nonneg_int(limit), q["field"])
        definition = d.get("definition")
        if not isinstance(definition, list) or len(definition) != 2:
            raise VerificationError("malformed proof bundle: 'definition' is [value, key proof]")
        ranges = d.get("ranges")
        if not isinstance(ranges, list):
            raise VerificationError("malformed proof bundle: 'ranges' is a list")
        parsed = []
        for r in ranges:
            if not isinstance(r, list) or len(r) != 3:
                raise VerificationError("malformed proof bundle: a range is [lo, hi, proof]")
            parsed.append(
                (unb64(r[0], "a range's start"), None if r[1] is None else unb64(r[1], "a range's end"), _dec(r[2], "a range's proof"))
            )
        proof = proof._replace(
            query=query,
            indexed=_str(d, "index", optional=True),
            single=None if d.get("single") is None else _dec(d.get("single"), "single"),
            definition=(unb64(definition[0], "the definition"), _dec(definition[1], "the definition's proof")),
            ranges=parsed,
        )
    return proof


def _state_of_head(head: kvcore.TxHeader, raw: bytes, path: list[bytes]) -> kvcore.State:
    """The state whose last transaction is ``head``: the root its inclusion path leads to."""
    if head.tx_id < 1:
        raise VerificationError("malformed proof bundle: 'head' is of no transaction")
    try:
        root = root_from_inclusion(head.tx_id - 1, head.tx_id, tx_leaf_hash(raw), path)
    except ValueError as e:
        raise VerificationError(f"malformed proof bundle: 'head_path' is not its inclusion path ({e})") from None
    return kvcore.State(head.tx_id, root)


def parse(d: Any) -> Proof | StateProof:
    """Any bundle's dict: version 1 or 2 (:func:`docstore.proofs.bundle.from_dict`) or 3."""
    if isinstance(d, dict) and d.get("format") == FORMAT and type(d.get("version")) is int and d.get("version") in (
        VERSION, VERSION_WITH_ERASURES, VERSION_WITH_INDEX_KINDS
    ):
        return from_dict(d)
    return bundle_from_dict(d)


def load_any(text: str | bytes) -> Proof | StateProof:
    """Read any bundle from its JSON text (at most MAX_BUNDLE_BYTES, checked first)."""
    import json

    if not isinstance(text, (str, bytes)):
        raise VerificationError(f"a proof bundle is JSON text, got {type(text).__name__}")
    if len(text) > MAX_BUNDLE_BYTES or (isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) > MAX_BUNDLE_BYTES):
        raise VerificationError(f"a proof bundle is at most {MAX_BUNDLE_BYTES} bytes; this one is larger")
    try:
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise VerificationError(f"a proof bundle must be JSON: {e}") from None
    return parse(d)
