"""Moving a database between backends: a directory and a PostgreSQL database, either way
(``immudoc migrate SRC DST``; docs/scale-out.md).

The ledger is copied byte for byte (:func:`kvcore.copy_ledger`: the same transactions, ids,
timestamps and roots), the signing key with it (the same key signs the same checkpoints), and
the destination's derived state is built from the copied log when it is first opened here.
At the end the destination's state and signed checkpoint must equal the source's: a
migration that does not reproduce them refuses (VerificationError) instead of reporting success.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from typing import Any

import kvcore
from kvcore.ledger import open_storage
from kvcore.storage.postgres import is_url, redact

from docstore.database import open as open_db
from docstore.documents.records import PROPERTY_PREFIX
from docstore.engine.engine import STATE_DIR_ENV, default_state_dir
from docstore.errors import QueryError, StorageError, VerificationError
from docstore.proofs import keyfile


def migrate(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    *,
    key_file: str | os.PathLike[str] | None = None,
    src_state_dir: str | os.PathLike[str] | None = None,
    dst_state_dir: str | os.PathLike[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Copy the database at ``src`` to a new one at ``dst`` (each a directory or a
    ``postgresql://`` URL; ``dst`` must hold no database yet). ``key_file``: the source's
    signing key (default: the source's own, in its directory or its state directory). A
    PostgreSQL side keeps its local state in ``src_state_dir`` / ``dst_state_dir`` (default as
    :func:`docstore.open`). Returns ``{"state", "checkpoint", "transactions"}``, checked equal
    on both sides. ``progress(done, total)`` counts copied transactions."""
    src, dst = os.fspath(src), os.fspath(dst)
    src_key = os.fspath(key_file) if key_file is not None else _key_of(src, src_state_dir)
    if not os.path.exists(src_key):
        raise StorageError(f"the source's signing key {src_key!r} is missing: give it (key_file=..., --key-file)")
    with open_db(src, readonly=True, key_file=src_key, state_dir=_str(src_state_dir)) as source:
        state = source.state()
        checkpoint = source.checkpoint(state)
    dst_dir = _str(dst_state_dir) or (
        (os.environ.get(STATE_DIR_ENV) or default_state_dir(dst)) if is_url(dst) else dst
    )
    _check_new(dst, dst_dir)
    kvcore.copy_ledger(_ledger_of(src), _ledger_of(dst), progress=progress, unindexed_prefixes=(PROPERTY_PREFIX,))
    os.makedirs(dst_dir, mode=0o700, exist_ok=True)
    keyfile.write(os.path.join(dst_dir, keyfile.KEY_FILE), keyfile.load(src_key), create=True)
    with warnings.catch_warnings():  # the copy has no derived state yet: built now, as expected
        warnings.simplefilter("ignore", kvcore.RecoveryWarning)
        copy = open_db(dst, state_dir=dst_dir if is_url(dst) else None)
    with copy:
        got_state = copy.state()
        got_checkpoint = copy.checkpoint(got_state)
        audit = copy.audit()
    if got_state != state or got_checkpoint != checkpoint or not audit.ok:
        raise VerificationError(
            f"the copy at {_name(dst)} does not reproduce the source: its state, signed checkpoint or audit differs"
        )
    return {"state": state.to_dict(), "checkpoint": checkpoint, "transactions": state.tx_id}


def _str(p: str | os.PathLike[str] | None) -> str | None:
    return None if p is None else os.fspath(p)


def _ledger_of(path: str) -> str:
    return path if is_url(path) else os.path.join(path, "ledger")


def _key_of(path: str, state_dir: str | os.PathLike[str] | None) -> str:
    env = os.environ.get(keyfile.KEY_FILE_ENV)
    if env:
        return env
    if is_url(path):
        base = _str(state_dir) or os.environ.get(STATE_DIR_ENV) or default_state_dir(path)
        return os.path.join(base, keyfile.KEY_FILE)
    return os.path.join(path, keyfile.KEY_FILE)


def _check_new(dst: str, dst_dir: str) -> None:
    """The destination holds no database (nothing is overwritten)."""
    if is_url(dst):
        try:  # the storage alone: opening a ledger would build its key index to answer this
            storage = open_storage(dst, readonly=True)
        except kvcore.FormatError:
            storage = None  # no ledger there: good
        if storage is not None:
            try:
                if storage.tx_count():
                    raise QueryError(f"the destination {_name(dst)} already holds a ledger: migrate into a new database")
            finally:
                storage.close()
        if os.path.exists(os.path.join(dst_dir, keyfile.KEY_FILE)):
            raise QueryError(f"the destination's state directory {dst_dir!r} already holds a signing key")
        return
    if os.path.exists(dst) and (not os.path.isdir(dst) or os.listdir(dst)):
        raise QueryError(f"the destination {dst!r} is not a new or empty directory")


def _name(path: str) -> str:
    return redact(path) if is_url(path) else repr(path)
