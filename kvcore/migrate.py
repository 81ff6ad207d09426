"""Copying a ledger to another backend (a directory of files, a PostgreSQL database), byte for
byte: every transaction's stored payload is appended as it is (same ids, timestamps, entries,
roots), so every proof, checkpoint and audit of the source holds for the copy.

The copy streams (one transaction in memory at a time, and the ledger tree's nodes), checks
each source record's framing as it reads it, and at the end opens the copy as a ledger (which
builds its key index from the copied log) and checks that its state, root included, is the
source's.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Iterable

from kvcore.errors import InvalidInputError, VerificationError
from kvcore.hashing import header_size, tx_leaf_hash
from kvcore.ledger import Ledger, RecoveryWarning, open_storage
from kvcore.models import State
from kvcore.storage.postgres import is_url, redact
from kvcore.tree import MerkleTree


def copy_ledger(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], *, progress: Callable[[int, int], None] | None = None,
    unindexed_prefixes: Iterable[bytes] = (), last_tx: int | None = None,
) -> State:
    """Copy the ledger at ``src`` into a new, empty ledger at ``dst`` (each a directory or a
    ``postgresql://`` URL); returns the state, the same on both (checked). ``progress(done,
    total)`` is called as transactions are copied. The source is opened read-only (a writer
    may go on; what it commits after the copy started is not copied). The copy's key index is
    built with ``unindexed_prefixes`` (as the copy will be opened: see :meth:`Ledger.open`).
    ``last_tx``: copy transactions 1 to ``last_tx`` only (a state the caller holds)."""
    source = Ledger.open(src, readonly=True, unindexed_prefixes=unindexed_prefixes)
    try:
        want = source.state()
        if last_tx is not None:
            if not 0 <= last_tx <= want.tx_id:
                raise InvalidInputError(f"the source has no transaction {last_tx} (it has {want.tx_id})")
            want = source.state(last_tx)
        storage = open_storage(dst, format_version=source.format_version)
        try:
            if storage.tx_count():
                raise InvalidInputError(f"the destination {_name(dst)} already holds a ledger: copy into a new one")
            tree = MerkleTree()
            total = want.tx_id
            for tx_id, body, extra in source.stored(1):
                if tx_id > total:
                    break
                added = tree.append(tx_leaf_hash(body[: header_size(body)]))
                storage.append(body, extra, added)
                if progress is not None:
                    progress(tx_id, total)
        finally:
            storage.close()
    finally:
        source.close()
    with warnings.catch_warnings():  # the copy has no key index yet: opening it builds one
        warnings.simplefilter("ignore", RecoveryWarning)
        with Ledger.open(dst, unindexed_prefixes=unindexed_prefixes) as copy:
            got = copy.state()
    if got != want:
        raise VerificationError(
            f"the copy's state (transaction {got.tx_id}) is not the source's ({want.tx_id}): the copy is not faithful"
        )
    return got


def _name(path: str | os.PathLike[str]) -> str:
    return redact(str(path)) if is_url(path) else repr(os.fspath(path))
