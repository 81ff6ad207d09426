"""The database's derived, in-memory state: collection definitions, the current revision of
every document (encoded), and secondary indexes.

Everything here is rebuilt from the ledger: on open from a checksummed snapshot plus the
transactions committed after it, or from the whole ledger if the snapshot is missing or damaged.
"""

from __future__ import annotations

import marshal
import os
from dataclasses import dataclass, field
from typing import Any

import orjson

import kvcore
from kvcore import gcpause, snapshot

from docstore.collections.indexes import SecondaryIndex
from docstore.collections.schema import Schema
from docstore.errors import CorruptDataError
from docstore.documents.flatten import flatten_raw, unflatten
from docstore.documents.records import SALT_BYTES, Header, parse_property_key

SNAPSHOT_MAGIC_V1 = b"IMDOCS01"  # the first container (sha256): still read
SNAPSHOT_MAGIC = b"IMDOCS02"  # kvcore.snapshot's container
SNAPSHOT_VERSION = 1


def encode_doc(doc: dict) -> bytes | tuple[bytes]:
    """Compact, exact encoding of a document for the cache (orjson; marshal if it cannot)."""
    try:
        return orjson.dumps(doc)
    except TypeError:  # integers beyond 64 bits
        return (marshal.dumps(doc),)


def same_json(a: Any, b: Any) -> bool:
    """Exact equality of two JSON values, unlike ``==``: ``true``, ``1`` and ``1.0`` differ, and
    so do key orders and ``0.0``/``-0.0``."""
    if type(a) is dict and type(b) is dict:  # as they are: a document may be nested to the limit
        return flatten_raw(a) == flatten_raw(b)
    return type(a) is type(b) and flatten_raw({"": a}) == flatten_raw({"": b})


def copy_doc(doc: dict) -> dict:
    """A deep copy of a JSON document (fast: a marshal round trip)."""
    return marshal.loads(marshal.dumps(doc))


def decode_doc(raw: bytes | tuple[bytes]) -> dict:
    if isinstance(raw, bytes):
        return orjson.loads(raw)
    return marshal.loads(raw[0])


@dataclass
class CollectionState:
    name: str
    meta: dict[str, Any]
    schema: Schema | None = None
    docs: dict[str, Any] = field(default_factory=dict)
    indexes: dict[str, SecondaryIndex] = field(default_factory=dict)

    def put(self, doc_id: str, doc: dict | None) -> None:
        self.put_many([(doc_id, doc)])

    def put_many(self, items: list[tuple[str, dict | None]]) -> None:
        """Cache and index many distinct documents (None: the document was deleted)."""
        docs = self.docs
        for doc_id, doc in items:
            if doc is None:
                docs.pop(doc_id, None)
            else:
                docs[doc_id] = encode_doc(doc)
        for idx in self.indexes.values():
            idx.put_many(items)

    def apply_meta(self, meta: dict[str, Any]) -> None:
        """Take a new definition: (re)compile the schema, add or drop indexes."""
        schema_doc = meta.get("schema")
        if not same_json(schema_doc, self.meta.get("schema")) or self.schema is None and schema_doc is not None:
            self.schema = None if schema_doc is None else Schema(schema_doc)
        wanted = {i["field"]: bool(i.get("unique")) for i in meta.get("indexes", [])}
        for f in list(self.indexes):
            if f not in wanted or self.indexes[f].unique != wanted[f]:
                del self.indexes[f]
        for f, unique in wanted.items():
            if f not in self.indexes:
                idx = SecondaryIndex(f, unique)
                idx.bulk_load((i, decode_doc(raw)) for i, raw in self.docs.items())
                self.indexes[f] = idx
        self.meta = meta


def doc_from_entries(header: Header, entries: list[kvcore.Entry], prefix: bytes) -> dict:
    """Rebuild a document from its header and property entries (checking they belong)."""
    if len(entries) != header.n:
        raise CorruptDataError(
            f"document {header.collection}/{header.id} revision {header.revision}: "
            f"{len(entries)} properties found, the header says {header.n}"
        )
    cut = len(prefix) + 8
    pairs = []
    for i, e in enumerate(entries):
        key = e.key
        if not key.startswith(prefix) or key[len(prefix) : cut] != _rev_ord(header.revision, i):
            parse_property_key(key)  # raises CorruptDataError for foreign keys
            raise CorruptDataError(
                f"document {header.collection}/{header.id}: entry {i} belongs to another revision"
            )
        value = e.value
        if len(value) <= SALT_BYTES:
            raise CorruptDataError(f"document {header.collection}/{header.id}: property {i} is short")
        try:
            pointer = key[cut:].decode()
        except UnicodeDecodeError:
            raise CorruptDataError(
                f"document {header.collection}/{header.id}: property {i} has a damaged pointer"
            ) from None
        pairs.append((pointer, value[SALT_BYTES:]))
    return unflatten(pairs)


def _rev_ord(rev: int, i: int) -> bytes:
    return rev.to_bytes(4, "big") + i.to_bytes(4, "big")


class DbState:
    """All collections' derived state, plus the ledger transaction it reflects."""

    def __init__(self) -> None:
        self.collections: dict[str, CollectionState] = {}
        self.tx_id = 0
        self.root = b""  # the ledger root at tx_id, as recorded in a snapshot

    # ------------------------------------------------------------ replay
    def apply_tx(self, ledger: kvcore.Ledger, tx_id: int) -> None:
        """Apply one committed transaction read back from the ledger."""
        entries = ledger.entries(tx_id)
        i = 0
        while i < len(entries):
            e = entries[i]
            kind = e.key[:2]
            if kind == b"c\x00":
                name = e.key[2:].decode()
                if e.deleted:
                    self.collections.pop(name, None)
                else:
                    meta = orjson.loads(e.value)
                    coll = self.collections.get(name) or CollectionState(name, {})
                    coll.apply_meta(meta)
                    self.collections[name] = coll
                i += 1
            elif kind == b"d\x00":
                header = Header.decode(e.value)
                props = entries[i + 1 : i + 1 + header.n]
                target = self.collections.get(header.collection)
                if target is None:
                    raise CorruptDataError(
                        f"transaction {tx_id} writes to unknown collection {header.collection!r}"
                    )
                if header.deleted:
                    target.put(header.id, None)
                else:
                    from docstore.documents.records import property_prefix

                    prefix = property_prefix(header.collection, header.id)
                    target.put(header.id, doc_from_entries(header, props, prefix))
                i += 1 + header.n
            else:
                i += 1
        self.tx_id = tx_id

    def catch_up(self, ledger: kvcore.Ledger) -> int:
        """Apply every transaction after the one the state reflects; returns how many."""
        start = self.tx_id
        for tx_id in range(start + 1, ledger.tx_id + 1):
            self.apply_tx(ledger, tx_id)
        return ledger.tx_id - start

    # ---------------------------------------------------------- snapshots
    def dump(self, root: bytes) -> bytes:
        """The snapshot bytes; ``root`` is the ledger's root at ``tx_id`` (checked on load)."""
        body = marshal.dumps(
            (
                SNAPSHOT_VERSION,
                self.tx_id,
                root,
                [
                    (c.name, orjson.dumps(c.meta), c.docs, [i.dump() for i in c.indexes.values()])
                    for c in self.collections.values()
                ],
            )
        )
        return snapshot.wrap(SNAPSHOT_MAGIC, body)

    @classmethod
    def load(cls, blob: bytes) -> DbState | None:
        body = snapshot.unwrap(blob, SNAPSHOT_MAGIC, SNAPSHOT_MAGIC_V1)
        if body is None:
            return None
        with gcpause.paused():  # millions of objects that live on: nothing to collect
            return cls._decode(body)

    @classmethod
    def _decode(cls, body: Any) -> DbState | None:
        try:
            version, tx_id, root, colls = marshal.loads(body)
            if version != SNAPSHOT_VERSION or type(root) is not bytes:
                return None
            state = cls()
            state.tx_id = tx_id
            state.root = root
            for name, meta_raw, docs, idx_dumps in colls:
                meta = orjson.loads(meta_raw)
                coll = CollectionState(name, meta, docs=docs)
                schema_doc = meta.get("schema")
                coll.schema = None if schema_doc is None else Schema(schema_doc)
                for d in idx_dumps:
                    idx = SecondaryIndex.load(d)
                    coll.indexes[idx.field] = idx
                state.collections[name] = coll
            return state
        except (ValueError, EOFError, TypeError, KeyError, AttributeError):
            return None


def load_snapshot(path: str) -> DbState | None:
    try:
        with open(path, "rb") as f:
            return DbState.load(f.read())
    except OSError:
        return None


def save_snapshot(path: str, state: DbState, ledger: kvcore.Ledger) -> None:
    tmp = path + ".tmp"
    try:
        blob = state.dump(ledger.state(state.tx_id).root)
        with open(tmp, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        pass  # derived data: the next open replays the ledger instead
