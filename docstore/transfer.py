"""Moving documents in and out in bulk, embedded and remote alike: :func:`import_documents`
commits a stream of documents in batches (each batch one atomic transaction), in bounded
memory, and reports each batch's transaction; :func:`definition` and
:func:`apply_definition` carry a collection's schema, indexes and options with an export.

>>> for batch in import_documents(db, "visits", docs, batch_size=1000):
...     print(batch.first, batch.last, batch.tx_id)

Everything here uses the contract of :mod:`docstore.api` only (``db.run_transaction``,
``tx[name].insert``/``get``/``replace``, ``create_collection``...), so it behaves the same on
:func:`docstore.open` and :func:`docstore.connect`.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from docstore.errors import (
    CollectionNotFoundError,
    DocstoreError,
    DocumentNotFoundError,
    QueryError,
    TransactionTooLargeError,
)

if TYPE_CHECKING:
    from docstore import api

__all__ = [
    "BATCH_SIZE", "DEFINITION_KEY", "EXISTING", "ImportBatch", "ImportProgress", "apply_definition",
    "check_fits", "cost_bound", "definition", "doc_cost", "import_documents", "is_definition",
]

BATCH_SIZE = 1000
"""Documents committed together by default (each batch one transaction)."""
EXISTING = ("error", "replace", "skip")
"""What :func:`import_documents` does with a document whose ``_id`` exists: refuse it (the
batch is not written), replace the document with it (a new revision), or leave it."""
FILL = 0.9
"""A batch is cut once its estimated entries or bytes reach this share of a transaction's limit."""
_MAX_LEVEL = 101
"""Nesting levels walked (docstore.documents.flatten.MAX_DEPTH, plus the leaves' level)."""
DEFINITION_KEY = "$immudoc"
DEFINITION_KIND = "collection-definition"
DEFINITION_VERSION = 1


# ------------------------------------------------------------------ what a document costs
def doc_cost(doc: Any, coll: str = "") -> tuple[int, int]:
    """(ledger entries, bytes) the document takes when written, exactly for entries: one
    header entry plus one entry a flattened property (docstore.documents.flatten: scalar
    leaves, empty containers, headers of objects whose first key is "0"), each a key (prefix,
    ordinal, pointer) and a salted value; bytes are a lower estimate (strings counted a byte a
    character). Unique-index claims are not counted. One walk, nothing encoded."""
    if not isinstance(doc, dict):
        return 1, 0
    doc_id = doc.get("_id")
    overhead = len(coll) + (len(doc_id) if isinstance(doc_id, str) else 24) + 28
    entries = 1 + (0 if "_id" in doc else 1)  # the header (and a generated _id)
    size = 64 + (0 if "_id" in doc else overhead + 30)
    stack: list[tuple[Any, int, int]] = [(doc, 0, 1)]  # (node, pointer bytes, nesting level)
    pop, push = stack.pop, stack.append
    while stack:
        node, depth, level = pop()
        if level > _MAX_LEVEL:  # not a storable document (too deep, or a cycle): its insert says why
            return 1, 0
        if type(node) is dict:
            if not node:
                entries += 1
                size += overhead + depth + 2
                continue
            if level > 1 and next(iter(node)) == "0":
                entries += 1
                size += overhead + depth + 3
            for k, v in node.items():
                push((v, depth + (len(k) if type(k) is str else 8) + 1, level + 1))
        elif type(node) is list:
            if not node:
                entries += 1
                size += overhead + depth + 2
                continue
            for i, v in enumerate(node):
                push((v, depth + len(str(i)) + 1, level + 1))
        else:
            entries += 1
            size += overhead + depth + (len(node) + 2 if type(node) is str else 5)
    return entries, size


def cost_bound(doc: Any, coll: str = "") -> tuple[int, int]:
    """Upper bounds of :func:`doc_cost`, from the document's JSON text (a few C calls where
    :func:`doc_cost` walks in Python): a container of n children has n - 1 commas, so its
    entries are at most the commas plus twice the containers plus the header and an ``_id``
    (commas inside strings only raise the bound); bytes are an estimate (twice the text, plus
    each entry's key prefix and salt). Falls back on :func:`doc_cost` for
    what orjson does not write (integers past 64 bits, say)."""
    try:
        text = _dumps(doc)
    except TypeError:  # orjson's JSONEncodeError: a big integer, or not JSON (its insert says why)
        return doc_cost(doc, coll)
    entries = 2 + text.count(b",") + 2 * (text.count(b"{") + text.count(b"["))
    doc_id = doc.get("_id") if type(doc) is dict else None
    overhead = len(coll) + (len(doc_id) if isinstance(doc_id, str) else 24) + 32
    return entries, 64 + len(text) * 2 + entries * overhead


def _dumps(doc: Any) -> bytes:
    import orjson

    return orjson.dumps(doc)


def check_fits(docs: list, coll: str = "") -> None:
    """TransactionTooLargeError, before anything is done, if ``docs`` cannot be written in one
    transaction (more entries than kvcore.MAX_TX_ENTRIES, or more bytes than MAX_TX_BYTES)."""
    from kvcore import MAX_TX_BYTES, MAX_TX_ENTRIES

    bounds = [cost_bound(doc, coll) for doc in docs]
    if sum(e for e, _ in bounds) <= MAX_TX_ENTRIES and sum(s for _, s in bounds) <= MAX_TX_BYTES:
        return  # the common case: the bounds fit, no walk needed
    entries = size = 0
    for doc in docs:
        e, s = doc_cost(doc, coll)
        entries += e
        size += s
    if entries > MAX_TX_ENTRIES or size > MAX_TX_BYTES:
        what = (f"{entries:,} ledger entries, more than the {MAX_TX_ENTRIES:,}" if entries > MAX_TX_ENTRIES
                else f"at least {size:,} bytes, more than the {MAX_TX_BYTES:,}")
        share = max(entries / MAX_TX_ENTRIES, size / MAX_TX_BYTES)
        per = max(1, int(len(docs) * FILL / share) // 100 * 100 or int(len(docs) * FILL / share))
        raise TransactionTooLargeError(
            f"the transaction is too large: {len(docs):,} documents need {what} one transaction can hold, "
            f"and nothing was written; commit them in several transactions: per_transaction={per:,} "
            "or fewer (each group atomic), or docstore.transfer.import_documents (immudoc import)"
        )


# ------------------------------------------------------------------ import
@dataclass(frozen=True)
class ImportBatch:
    """One committed batch of :func:`import_documents`."""

    first: int
    """Number of the batch's first document: its position in the input from 1, or the number
    given with it (``numbered``: a line number, say)."""
    last: int
    """Number of its last document."""
    tx_id: int | None
    """The transaction that committed it (None if it wrote nothing: every document skipped)."""
    inserted: int
    replaced: int = 0
    skipped: int = 0

    @property
    def documents(self) -> int:
        return self.inserted + self.replaced + self.skipped

    def to_dict(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "tx": self.tx_id, "inserted": self.inserted,
                "replaced": self.replaced, "skipped": self.skipped}


@dataclass
class ImportProgress:
    """What an import has committed so far (the sum of its batches), kept on the error that
    stops it as ``error.import_progress``."""

    unit: str = "document"
    first: int | None = None
    last: int | None = None
    first_tx: int | None = None
    last_tx: int | None = None
    batches: int = 0
    inserted: int = 0
    replaced: int = 0
    skipped: int = 0
    failed_at: int | None = None
    """The number of the document refused, when the error is one document's."""
    failed_batch: tuple[int, int] | None = None
    """(first, last) numbers of the batch that was not written."""
    error: str | None = None
    """The message of the error that stopped the import, as it was raised."""

    def add(self, b: ImportBatch) -> None:
        if self.first is None:
            self.first = b.first
        self.last = b.last
        if b.tx_id is not None:
            if self.first_tx is None:
                self.first_tx = b.tx_id
            self.last_tx = b.tx_id
        self.batches += 1
        self.inserted += b.inserted
        self.replaced += b.replaced
        self.skipped += b.skipped

    def to_dict(self) -> dict[str, Any]:
        return {"batches": self.batches, "first": self.first, "last": self.last, "first_tx": self.first_tx,
                "last_tx": self.last_tx, "inserted": self.inserted, "replaced": self.replaced, "skipped": self.skipped}

    def committed(self) -> str:
        """What stays committed, in words: "lines 1-4000 are committed (transactions 12-15)"."""
        if self.last is None:
            return "nothing was committed"
        txs = ("no transaction: every document was skipped" if self.first_tx is None
               else f"transaction {self.first_tx}" if self.first_tx == self.last_tx
               else f"transactions {self.first_tx}-{self.last_tx}")
        return f"{self.unit}s {self.first}-{self.last} are committed ({txs})"

    def failure(self, error: str, resume: str) -> str:
        """The one line an import that stopped says: what is committed, where and why it
        stopped, how to resume."""
        if self.failed_at is not None:
            where = f"{self.unit} {self.failed_at}"
        elif self.failed_batch is not None:
            where = f"{self.unit}s {self.failed_batch[0]}-{self.failed_batch[1]} (one transaction, not written)"
        else:
            where = "stopped"
        text = f"{self.committed()}; {where}: {error}"
        return f"{text}; {resume}" if self.last is not None else text


def import_documents(
    db: api.Database, collection: str, docs: Iterable[Any], *, batch_size: int = BATCH_SIZE, existing: str = "error",
    numbered: bool = False, user: str | None = None, reason: str | None = None, meta: dict[str, Any] | None = None,
) -> Iterator[ImportBatch]:
    """Insert ``docs`` (any iterable, read lazily) into ``collection``, ``batch_size``
    documents a transaction (fewer when a batch's entries or bytes approach the ledger's
    per-transaction limits); yields each committed batch as it is committed. Memory stays
    bounded by one batch.

    ``existing``: what a document whose ``_id`` exists does (:data:`EXISTING`): ``"error"``
    (DuplicateIdError), ``"replace"`` (a new revision of it: upsert), ``"skip"`` (left as it
    is: resume an import that stopped). ``numbered``: ``docs`` are ``(number, document)``
    pairs (line numbers, say), which batches and errors name instead of positions.
    ``user``, ``reason``, ``meta``: committed with every batch's transaction.

    A batch is atomic. An error stops the import: the batches before it stay committed, and
    the error (its own type) says which (``error.import_progress``: an :class:`ImportProgress`;
    its message starts with "documents 1-4000 are committed (transactions 12-15)"). The
    arguments are checked before anything is read or written."""
    if type(batch_size) is not int or batch_size < 1:
        raise QueryError(f"batch_size must be a positive integer, got {batch_size!r}")
    if existing not in EXISTING:
        raise QueryError(f"existing must be one of {', '.join(EXISTING)}, got {existing!r}")
    if isinstance(docs, (dict, str, bytes)) or not isinstance(docs, Iterable):
        raise QueryError(f"import_documents takes an iterable of documents, got {type(docs).__name__}")
    db.collection(collection)  # CollectionNotFoundError before anything is read
    tx_kw: dict[str, Any] = {"user": user, "reason": reason, "meta": meta}
    db.transaction(user=user, reason=reason, meta=meta).rollback()  # who and why checked (QueryError) first
    progress = ImportProgress(unit="line" if numbered else "document")
    return _batches(db, collection, docs, batch_size, existing, numbered, tx_kw, progress)


def _numbered(items: Iterable[Any]) -> Iterator[tuple[int, Any]]:
    for item in items:
        if type(item) is not tuple or len(item) != 2 or type(item[0]) is not int:
            raise QueryError(f"numbered documents are (number, document) pairs, got {type(item).__name__}")
        yield item


def _batches(
    db: api.Database, collection: str, docs: Iterable[Any], batch_size: int, existing: str, numbered: bool,
    tx_kw: dict[str, Any], progress: ImportProgress,
) -> Iterator[ImportBatch]:
    from kvcore import MAX_TX_BYTES, MAX_TX_ENTRIES

    max_entries, max_bytes = int(MAX_TX_ENTRIES * FILL), int(MAX_TX_BYTES * FILL)
    items: Iterable[tuple[int, Any]] = _numbered(docs) if numbered else enumerate(docs, 1)
    batch: list[tuple[int, Any]] = []
    entries = size = 0
    for n, doc in items:
        e, s = cost_bound(doc, collection)
        if batch and (entries + e > max_entries or size + s > max_bytes):
            yield _commit(db, collection, batch, existing, tx_kw, progress)
            batch, entries, size = [], 0, 0
        batch.append((n, doc))
        entries += e
        size += s
        if len(batch) >= batch_size:
            yield _commit(db, collection, batch, existing, tx_kw, progress)
            batch, entries, size = [], 0, 0
    if batch:
        yield _commit(db, collection, batch, existing, tx_kw, progress)


def _commit(
    db: api.Database, collection: str, batch: list[tuple[int, Any]], existing: str, tx_kw: dict[str, Any],
    progress: ImportProgress,
) -> ImportBatch:
    """Commit one batch (retried on a conflict, as run_transaction does); the error that stops
    it names what is committed and the document (or batch) at fault."""
    from kvcore import gcpause

    counts = [0, 0, 0]  # inserted, replaced, skipped
    failed: list[int] = []
    done: list[Any] = []

    def stage(tx: Any) -> None:
        done.append(tx)
        counts[:] = [0, 0, 0]
        failed.clear()
        txc = tx[collection]
        for n, doc in batch:
            try:
                if existing != "error" and type(doc) is dict and "_id" in doc and _exists(txc, doc["_id"]):
                    if existing == "skip":
                        counts[2] += 1
                    else:
                        txc.replace(doc["_id"], doc)
                        counts[1] += 1
                    continue
                txc.insert_many((doc,))
                counts[0] += 1
            except DocstoreError:
                failed.append(n)
                raise

    try:
        with gcpause.paused():  # see kvcore.gcpause: a batch's temporaries are freed by reference counts
            db.run_transaction(stage, **tx_kw)
    except Exception as e:
        progress.failed_at = failed[-1] if failed else None
        progress.failed_batch = (batch[0][0], batch[-1][0])
        _annotate(e, progress)
        raise
    result = ImportBatch(batch[0][0], batch[-1][0], done[-1].tx_id, *counts)
    progress.add(result)
    return result


def _exists(txc: Any, doc_id: Any) -> bool:
    try:
        txc.get(doc_id)
    except DocumentNotFoundError:
        return False
    return True


def _annotate(e: BaseException, progress: ImportProgress) -> None:
    """Put what is committed into the error's one line (its type stays, for callers and exit
    codes), and the figures on it as ``import_progress``."""
    e.import_progress = progress  # type: ignore[attr-defined]
    if e.args and isinstance(e.args[0], str):
        progress.error = e.args[0]
        e.args = (progress.failure(e.args[0], f"to resume, import the rest, or all again skipping existing {progress.unit}s' ids"),
                  *e.args[1:])


# ------------------------------------------------------------------ definitions
def definition(db: api.Database, collection: str) -> dict[str, Any]:
    """The collection's definition as export writes it (its first line with
    ``--with-definition``): ``{"$immudoc": "collection-definition", "version": 1, "name": ...,
    "schema": ..., "indexes": [...], "require_reason": ...}``."""
    coll = db.collection(collection)
    info = coll.info(verify=False)
    return {
        DEFINITION_KEY: DEFINITION_KIND, "version": DEFINITION_VERSION, "name": collection,
        "schema": info["schema"], "indexes": info["indexes"], "require_reason": bool(info.get("require_reason")),
    }


def is_definition(value: Any) -> bool:
    """Whether a JSON value is a collection definition (:func:`definition`)."""
    return type(value) is dict and value.get(DEFINITION_KEY) == DEFINITION_KIND


def apply_definition(db: api.Database, collection: str, spec: Any, *, create: bool = False) -> str:
    """Give ``collection`` the schema, indexes and options of ``spec`` (:func:`definition`):
    create it with them (``create``; else CollectionNotFoundError), or, if it exists, set its
    schema and options and create the indexes it lacks. Returns "created", "updated" or
    "unchanged". QueryError for a malformed definition, before anything is written."""
    if not is_definition(spec):
        raise QueryError("not a collection definition (a JSON object with \"$immudoc\": \"collection-definition\")")
    if spec.get("version") != DEFINITION_VERSION:
        raise QueryError(f"collection definition version {spec.get('version')!r} is not supported (this version reads {DEFINITION_VERSION})")
    schema, indexes, require = spec.get("schema"), spec.get("indexes", []), spec.get("require_reason", False)
    if not isinstance(indexes, list) or not all(isinstance(i, dict) and isinstance(i.get("field"), str) for i in indexes):
        raise QueryError("a collection definition's indexes are a list of {\"field\": ..., \"unique\": ...}")
    if type(require) is not bool:
        raise QueryError("a collection definition's require_reason is true or false")
    try:
        coll = db.collection(collection)
    except CollectionNotFoundError:
        if not create:
            raise CollectionNotFoundError(
                f"no collection {collection!r} to apply the definition to (create it with the definition: --create)"
            ) from None
        db.create_collection(collection, schema, indexes, require_reason=require)
        return "created"
    changed = False
    if coll.schema != schema:
        coll.set_schema(schema)
        changed = True
    have = {i["field"]: bool(i.get("unique")) for i in coll.indexes()}
    for i in indexes:
        unique = bool(i.get("unique"))
        if i["field"] not in have:
            coll.create_index(i["field"], unique=unique)
            changed = True
        elif have[i["field"]] != unique:
            raise QueryError(
                f"collection {collection!r} has an index on {i['field']!r} that is {'not ' if unique else ''}unique; "
                "the definition's is the opposite (drop one of them first)"
            )
    if bool(coll.info(verify=False).get("require_reason")) != require:
        coll.set_require_reason(require)
        changed = True
    return "updated" if changed else "unchanged"
