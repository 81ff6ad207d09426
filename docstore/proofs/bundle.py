"""Proof bundles: self-contained, versioned plain data (specified in docs/proofs.md).

A bundle names what it proves (collection, id, revision, pointer), carries the claimed data,
the exact ledger entries that store it (their salts included), a kvcore multi-entry proof that
those entries sit in a transaction, and the state it is relative to, optionally with a
consistency proof linking that state to another one.
"""

from __future__ import annotations

import base64
import binascii
import struct
from typing import Any, NamedTuple

import orjson

import kvcore

from docstore.errors import VerificationError

FORMAT = "immudoc-proof"
VERSION = 2
"""Version 2 adds ``checkpoint`` (the signed checkpoint of the proof's state); version 1
bundles (without it) are still read."""
VERSION_WITH_META = 4
"""Version 4: version 2 and ``tx_meta``, the proof of the transaction's entry 0 (its who and
why: docs/proofs.md, "Transaction proofs"); written only when asked (``with_meta=True``)."""
VERSION_WITH_ERASURES = 5
"""Version 5: version 4 (``tx_meta`` optional) and ``erasures``, the proofs of the erasure
records of erased properties, which the bundle gives by their leaf hashes (docs/proofs.md,
"Erased properties")."""
VERSIONS = (1, 2, 4, 5)
KINDS = ("document", "property", "collection")
MAX_BUNDLE_BYTES = 64 * 1024 * 1024
"""Largest bundle read; checked before it is parsed (a 4 MiB document proves in well under it)."""
_FIELDS_V1 = frozenset(
    {"format", "version", "kind", "collection", "id", "revision", "pointer", "claim", "index", "header",
     "properties", "ordinal", "tx", "path", "tx_path", "state", "consistency"}
)
_FIELDS = {
    1: _FIELDS_V1, 2: _FIELDS_V1 | {"checkpoint"}, 4: _FIELDS_V1 | {"checkpoint", "tx_meta"},
    5: _FIELDS_V1 | {"checkpoint", "tx_meta", "erasures"},
}
_ERASURE_FIELDS = frozenset({"tx", "index", "value", "path", "tx_path"})
_TX_META_FIELDS = frozenset({"key", "value", "deleted", "path"})
_CONSISTENCY_FIELDS = frozenset({"state", "old_tx_id", "new_tx_id", "path"})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def unb64(text: Any, what: str) -> bytes:
    if not isinstance(text, str):
        raise VerificationError(f"{what} must be a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise VerificationError(f"{what} is not valid base64") from None


def hashes_of(values: Any, what: str) -> list[bytes]:
    if not isinstance(values, list):
        raise VerificationError(f"{what} must be a list")
    out = [unb64(v, f"{what}[{i}]") for i, v in enumerate(values)]
    if any(len(h) != 32 for h in out):
        raise VerificationError(f"{what} holds a hash that is not 32 bytes")
    return out


class Property(NamedTuple):
    """One stored property: its pointer, encoded JSON text and salt; an erased one: its
    pointer and the leaf hash its erasure committed (``encoded`` and ``salt`` empty)."""

    pointer: str
    encoded: bytes
    salt: bytes
    leaf: bytes | None = None

    def to_list(self) -> list[str | None]:
        if self.leaf is not None:
            return [self.pointer, None, None, b64(self.leaf)]
        return [self.pointer, self.encoded.decode("utf-8", "surrogateescape"), b64(self.salt)]


class ErasureEntry(NamedTuple):
    """The proof of an erasure record (kvcore.erasure): entry ``index`` of transaction ``tx``
    is the reserved erasure key with ``value`` (the erased entries and their leaves)."""

    tx: kvcore.TxHeader
    index: int  # type: ignore[assignment]  # a field named like tuple.index (the bundle's name for it)
    value: bytes
    path: list[bytes]
    tx_path: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        return {"tx": self.tx.to_dict(), "index": self.index, "value": b64(self.value),
                "path": [b64(h) for h in self.path], "tx_path": [b64(h) for h in self.tx_path]}


def erasure_of(d: Any) -> ErasureEntry:
    if not isinstance(d, dict) or set(d) != _ERASURE_FIELDS:
        raise VerificationError("malformed proof bundle: an erasure holds exactly tx, index, value, path and tx_path")
    tx = kvcore.TxHeader.from_dict(d.get("tx"))
    return ErasureEntry(tx, nonneg_int(d.get("index")), unb64(d["value"], "erasures.value"),
                        hashes_of(d["path"], "erasures.path"), hashes_of(d["tx_path"], "erasures.tx_path"))


class TxMetaEntry(NamedTuple):
    """Entry 0 of the proof's transaction (its metadata, or another entry: then it has none)
    and its inclusion path in the transaction's entries tree."""

    key: bytes
    value: bytes
    deleted: bool
    path: list[bytes]

    def to_dict(self) -> dict[str, Any]:
        return {"key": b64(self.key), "value": b64(self.value), "deleted": self.deleted, "path": [b64(h) for h in self.path]}


def tx_meta_of(d: Any) -> TxMetaEntry:
    if not isinstance(d, dict) or set(d) != _TX_META_FIELDS or type(d.get("deleted")) is not bool:
        raise VerificationError("malformed proof bundle: 'tx_meta' holds exactly key, value, deleted and path")
    return TxMetaEntry(unb64(d["key"], "tx_meta.key"), unb64(d["value"], "tx_meta.value"), d["deleted"],
                       hashes_of(d["path"], "tx_meta.path"))


class Proof(NamedTuple):
    """A verifiable claim about a document, one of its properties, or a collection definition.

    Verify it with :func:`docstore.verify`; serialize with :meth:`to_json`, read back with
    :func:`docstore.proofs.load`. ``index`` is the position in transaction ``tx`` of the first
    proven entry: the document's header (document), the property (property), the collection
    definition (collection).
    """

    kind: str
    collection: str
    id: str | None
    revision: int
    pointer: str | None
    claim: Any
    header: bytes | None  # the stored header (document) or definition (collection)
    index: int  # type: ignore[assignment]  # a field named like tuple.index (the bundle's name for it)
    properties: list[Property]  # all (document), the proven one (property), none (collection)
    ordinal: int | None  # the proven property's ordinal (property proofs)
    tx: kvcore.TxHeader
    path: list[bytes]
    tx_path: list[bytes]
    state: kvcore.State
    consistency: kvcore.ConsistencyProof | None = None
    consistency_state: kvcore.State | None = None
    checkpoint: str | None = None  # the signed checkpoint (C2SP note text) of ``state``
    tx_meta: TxMetaEntry | None = None  # version 4: the transaction's entry 0, proven
    erasures: list[ErasureEntry] | None = None  # version 5: the records of erased properties

    def __repr__(self) -> str:
        return (
            f"<Proof {self.kind} {self.collection}/{self.id or ''}{self.pointer or ''} "
            f"revision {self.revision}, transaction {self.tx.tx_id}, state {self.state.tx_id}>"
        )

    @property
    def tx_id(self) -> int:
        return self.tx.tx_id

    def with_consistency(self, other: kvcore.State, proof: kvcore.ConsistencyProof) -> Proof:
        """A copy that also carries a consistency proof between its state and ``other``."""
        return self._replace(consistency=proof, consistency_state=other)

    def with_checkpoint(self, note: str | None) -> Proof:
        """A copy that carries the signed checkpoint of its state."""
        return self._replace(checkpoint=note)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "format": FORMAT,
            "version": VERSION_WITH_ERASURES if self.erasures else VERSION if self.tx_meta is None else VERSION_WITH_META,
            "kind": self.kind,
            "collection": self.collection,
            "id": self.id,
            "revision": self.revision,
            "pointer": self.pointer,
            "claim": self.claim,
            "index": self.index,
            "header": None if self.header is None else b64(self.header),
            "properties": [p.to_list() for p in self.properties],
        }
        if self.ordinal is not None:
            d["ordinal"] = self.ordinal
        d["tx"] = self.tx.to_dict()
        d["path"] = [b64(h) for h in self.path]
        d["tx_path"] = [b64(h) for h in self.tx_path]
        if self.tx_meta is not None:
            d["tx_meta"] = self.tx_meta.to_dict()
        if self.erasures:
            d["erasures"] = [e.to_dict() for e in self.erasures]
        return d | trust_fields(self)

    def to_json(self, indent: bool = False) -> str:
        """The bundle as JSON text (format in docs/proofs.md)."""
        return dumps(self.to_dict(), indent)

    @property
    def size(self) -> int:
        """Bytes of the compact JSON bundle."""
        return len(self.to_json().encode())


def trust_fields(proof: Any) -> dict[str, Any]:
    """The fields every bundle ends with: its state, the state's signed checkpoint, and a
    consistency proof between it and another state."""
    d: dict[str, Any] = {"state": proof.state.to_dict()}
    if proof.checkpoint is not None:
        d["checkpoint"] = proof.checkpoint
    if proof.consistency is not None and proof.consistency_state is not None:
        d["consistency"] = {
            "state": proof.consistency_state.to_dict(),
            "old_tx_id": proof.consistency.old_tx_id,
            "new_tx_id": proof.consistency.new_tx_id,
            "path": [b64(h) for h in proof.consistency.path],
        }
    return d


def dumps(d: dict[str, Any], indent: bool = False) -> str:
    """A bundle's dict as JSON text (the standard library's for integers beyond 64 bits)."""
    opts = orjson.OPT_INDENT_2 if indent else 0
    try:
        return orjson.dumps(d, option=opts).decode()
    except TypeError:
        import json

        return json.dumps(d, indent=2 if indent else None, ensure_ascii=False)


def from_dict(d: Any) -> Proof:
    """Parse a bundle dict; raises VerificationError if it is malformed or of another version."""
    if not isinstance(d, dict):
        raise VerificationError("a proof bundle must be a JSON object")
    if d.get("format") != FORMAT:
        raise VerificationError(f"not an immudoc proof (format {d.get('format')!r})")
    version = d.get("version")
    if type(version) is not int or version not in VERSIONS:
        raise VerificationError(
            f"proof format version {version!r} is not supported (this reads versions "
            f"{', '.join(map(str, VERSIONS))}, and 3, 6 and 7 for proofs of the current state)"
        )
    unknown = set(d) - _FIELDS[version]
    if unknown:
        raise VerificationError(
            f"malformed proof bundle: unknown fields {sorted(map(str, unknown))} for version {version}"
        )
    checkpoint = d.get("checkpoint")
    if checkpoint is not None and not isinstance(checkpoint, str):
        raise VerificationError("malformed proof bundle: 'checkpoint' is the text of a signed note")
    kind = d.get("kind")
    if kind not in KINDS:
        raise VerificationError(f"unknown proof kind {kind!r}")
    try:
        header = d["header"]
        props = d["properties"]
        if not (header is None or isinstance(header, str)) or not isinstance(props, list):
            raise TypeError
        properties = []
        for p in props:
            if version == VERSION_WITH_ERASURES and isinstance(p, list) and len(p) == 4 and isinstance(p[0], str):
                if p[1] is not None or p[2] is not None:
                    raise VerificationError("malformed proof bundle: an erased property has no value and no salt")
                check_utf8(p[0], "a property pointer")
                properties.append(Property(p[0], b"", b"", unb64(p[3], "leaf")))
                continue
            if not (isinstance(p, list) and len(p) == 3 and isinstance(p[0], str) and isinstance(p[1], str)):
                raise TypeError
            check_utf8(p[0], "a property pointer")
            try:
                encoded = p[1].encode("utf-8", "surrogateescape")
            except UnicodeEncodeError:
                raise VerificationError("malformed proof bundle: a property value is not UTF-8 text") from None
            properties.append(Property(p[0], encoded, unb64(p[2], "salt")))
        consistency, cstate = consistency_of(d.get("consistency"))
        ordinal = d.get("ordinal")
        if ordinal is not None:
            ordinal = nonneg_int(ordinal)
        for name in ("collection",):
            if not isinstance(d.get(name), str):
                raise TypeError
        if d.get("id") is not None and not isinstance(d.get("id"), str):
            raise TypeError
        if d.get("pointer") is not None and not isinstance(d.get("pointer"), str):
            raise TypeError
        for name in ("collection", "id", "pointer"):
            if d.get(name) is not None:
                check_utf8(d[name], name)
        tx = kvcore.TxHeader.from_dict(d.get("tx"))
        try:
            tx.encode()
        except struct.error:
            raise VerificationError("malformed proof bundle: a transaction header field is out of range") from None
        return Proof(
            kind=kind,
            collection=d["collection"],
            id=d.get("id"),
            revision=nonneg_int(d.get("revision")),
            pointer=d.get("pointer"),
            claim=d.get("claim"),
            header=None if header is None else unb64(header, "header"),
            index=nonneg_int(d.get("index")),
            properties=properties,
            ordinal=ordinal,
            tx=tx,
            path=hashes_of(d.get("path"), "path"),
            tx_path=hashes_of(d.get("tx_path"), "tx_path"),
            state=kvcore.State.from_dict(d.get("state")),
            consistency=consistency,
            consistency_state=cstate,
            checkpoint=checkpoint,
            tx_meta=tx_meta_of(d.get("tx_meta")) if version == VERSION_WITH_META or (
                version == VERSION_WITH_ERASURES and "tx_meta" in d) else None,
            erasures=erasures_of(d) if version == VERSION_WITH_ERASURES else None,
        )
    except (KeyError, TypeError, kvcore.VerificationError) as e:
        if isinstance(e, VerificationError):
            raise
        detail = str(e) if isinstance(e, kvcore.VerificationError) else "missing or mistyped fields"
        raise VerificationError(f"malformed proof bundle: {detail}") from None


def erasures_of(d: dict[str, Any]) -> list[ErasureEntry]:
    got = d.get("erasures")
    if not isinstance(got, list) or not got:
        raise VerificationError("malformed proof bundle: version 5 carries a non-empty list of erasures")
    return [erasure_of(e) for e in got]


def consistency_of(c: Any) -> tuple[kvcore.ConsistencyProof | None, kvcore.State | None]:
    """A bundle's optional ``consistency`` field: (the proof, the other state), or Nones."""
    if c is None:
        return None, None
    if not isinstance(c, dict) or set(c) != _CONSISTENCY_FIELDS:
        raise VerificationError(
            "malformed proof bundle: 'consistency' holds exactly state, old_tx_id, new_tx_id and path"
        )
    try:
        cstate = kvcore.State.from_dict(c.get("state"))
    except kvcore.VerificationError as e:
        raise VerificationError(f"malformed proof bundle: {e}") from None
    proof = kvcore.ConsistencyProof(
        nonneg_int(c.get("old_tx_id")), nonneg_int(c.get("new_tx_id")), hashes_of(c.get("path"), "consistency.path")
    )
    return proof, cstate


def check_utf8(text: str, what: str) -> None:
    try:
        text.encode()
    except UnicodeEncodeError:
        raise VerificationError(f"malformed proof bundle: {what} is not UTF-8 text") from None


def nonneg_int(v: Any) -> int:
    if type(v) is not int or v < 0:
        raise VerificationError(f"expected a non-negative integer, got {v!r}")
    return v


def load(text: str | bytes) -> Proof:
    """Read a proof bundle from its JSON text (at most :data:`MAX_BUNDLE_BYTES`, checked first)."""
    import json

    if not isinstance(text, (str, bytes)):
        raise VerificationError(f"a proof bundle is JSON text, got {type(text).__name__}")
    if len(text) > MAX_BUNDLE_BYTES or (isinstance(text, str) and len(text.encode("utf-8", "surrogatepass")) > MAX_BUNDLE_BYTES):
        raise VerificationError(f"a proof bundle is at most {MAX_BUNDLE_BYTES} bytes; this one is larger")
    try:  # the standard library keeps integers of any size exact
        d = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise VerificationError(f"a proof bundle must be JSON: {e}") from None
    return from_dict(d)
