"""Backing up a directory database and restoring it (``immudoc backup DIR`` / ``immudoc
restore DIR``; docs/storage.md, "Backup and restore").

A backup is a directory: ``ledger/`` (the ledger's transactions 1 to N, copied as stored by
:func:`kvcore.copy_ledger`, which reads a consistent prefix while a writer goes on),
``manifest.json`` (the state N and its root, the signed checkpoint of that state, the verifier
keys), and ``signing.key`` only when asked (``with_key``). Everything else a database holds
(collections, schemas, indexes, history, the state map) is in the ledger or derived from it:
a restore rebuilds it. A restore copies the ledger into a new directory and succeeds only if
the copy's state and root equal the manifest's, the manifest's checkpoint is signed by its
verifier key (or one the caller pins) and names that state, and the copy signs the very same
checkpoint when the key came with the backup. A database on PostgreSQL is backed up with
PostgreSQL's own tools (pg_dump).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import warnings
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import kvcore
from kvcore.storage.postgres import is_url

from docstore.documents.records import PROPERTY_PREFIX
from docstore.errors import QueryError, StorageError, VerificationError
from docstore.proofs import keyfile

if TYPE_CHECKING:
    from docstore.database import Database

MANIFEST = "manifest.json"
FORMAT = "immudoc-backup"
VERSION = 1
PG_DUMP = "a database on PostgreSQL is backed up with PostgreSQL's tools (pg_dump, or a base backup)"


__all__ = ["backup", "read_manifest", "restore"]


def backup(
    db: Database, directory: str | os.PathLike[str], key_path: str, *, with_key: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Copy ``db`` (a directory database) into the new or empty ``directory``: its ledger up
    to the state it reads now, and a manifest; its signing key (at ``key_path``) too with
    ``with_key`` (who holds that copy can sign as the database). Returns the manifest.
    :meth:`Database.backup` calls this."""
    if db.on_postgres:
        raise StorageError(PG_DUMP)
    if type(with_key) is not bool:
        raise QueryError(f"with_key is true or false, got {with_key!r}")
    directory = os.fspath(directory)
    _check_new(directory, "the backup directory")
    state = db.state()
    checkpoint = db.checkpoint(state)
    made = _make_dir(directory)
    try:
        kvcore.copy_ledger(
            os.path.join(db.path, "ledger"), os.path.join(directory, "ledger"), progress=progress,
            last_tx=state.tx_id, unindexed_prefixes=(PROPERTY_PREFIX,),
        )
        if with_key:
            keyfile.write(os.path.join(directory, keyfile.KEY_FILE), keyfile.load(key_path), create=True)
        manifest = {
            "format": FORMAT, "version": VERSION, "tx_id": state.tx_id, "root": state.root.hex(),
            "checkpoint": checkpoint, "verifier_keys": db.verifier_keys(), "with_key": with_key,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        _write_json(os.path.join(directory, MANIFEST), manifest)
    except BaseException:
        _undo(directory, made)
        raise
    return manifest


def read_manifest(backup_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest of a backup (StorageError if ``backup_dir`` holds no backup)."""
    path = os.path.join(os.fspath(backup_dir), MANIFEST)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise StorageError(f"no immudoc backup at '{os.fspath(backup_dir)}' (it has no {MANIFEST})") from None
    except (OSError, ValueError) as e:
        raise StorageError(f"the backup's {MANIFEST} cannot be read: {e}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise StorageError(f"'{path}' is not an immudoc backup manifest")
    if manifest.get("version") != VERSION:
        raise StorageError(f"backup manifest version {manifest.get('version')} is not supported (this immudoc reads {VERSION})")
    return manifest


def restore(
    backup_dir: str | os.PathLike[str], target: str | os.PathLike[str], *,
    key_file: str | os.PathLike[str] | None = None, verifier_keys: Iterable[str] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Restore the backup in ``backup_dir`` into ``target``, a new or empty directory; returns
    ``{"tx_id", "root", "checkpoint", "signing_key"}``.

    The signing key is the backup's (if it was made with the key), else ``key_file``'s, else a
    new one of the same origin (the restored database then signs with a new verifier key). The manifest's checkpoint
    must be signed by one of ``verifier_keys`` (default: the manifest's own keys) and name the
    restored state; with the original key, the restored database must sign that very
    checkpoint. On any failure the target is left as it was (VerificationError, StorageError)."""
    from docstore.database import open as open_db
    from docstore.proofs.checkpoint import open_checkpoint, read_unverified
    from docstore.proofs.note import NoteError, verifiers

    backup_dir, target = os.fspath(backup_dir), os.fspath(target)
    if is_url(target):
        raise StorageError("restore makes a directory database; to move it to PostgreSQL, restore it, then `immudoc migrate`")
    manifest = read_manifest(backup_dir)
    _check_new(target, "the restore target")
    keys = list(verifier_keys) if verifier_keys else list(manifest.get("verifier_keys") or [])
    try:
        claimed = open_checkpoint(manifest["checkpoint"], verifiers(keys))
    except (NoteError, KeyError, ValueError) as e:
        raise VerificationError(f"the backup's checkpoint is not signed by the verifier key: {e}") from None
    want = kvcore.State(int(manifest["tx_id"]), bytes.fromhex(manifest["root"]))
    if claimed.state != want:
        raise VerificationError("the backup's manifest names a state its checkpoint does not sign")
    backup_key = os.path.join(backup_dir, keyfile.KEY_FILE)
    source_key = backup_key if os.path.exists(backup_key) else (None if key_file is None else os.fspath(key_file))
    made = _make_dir(target)
    try:
        kvcore.copy_ledger(
            os.path.join(backup_dir, "ledger"), os.path.join(target, "ledger"), progress=progress,
            unindexed_prefixes=(PROPERTY_PREFIX,),
        )
        if source_key is not None:
            keyfile.write(os.path.join(target, keyfile.KEY_FILE), keyfile.load(source_key), create=True)
        with warnings.catch_warnings():  # the copy has no derived state yet: built now, as expected
            warnings.simplefilter("ignore", kvcore.RecoveryWarning)
            copy = open_db(target, origin=None if source_key is not None else claimed.origin)
        with copy:
            got = copy.state()
            checkpoint = copy.checkpoint(got)
            report = copy.audit()
        if got != want or not report.ok:
            raise VerificationError(
                f"the restored copy does not reproduce the backup: state {got.tx_id} ({got.root.hex()[:16]}...), "
                f"the manifest's {want.tx_id} ({want.root.hex()[:16]}...)" + ("" if report.ok else f"; {report}")
            )
        mine = read_unverified(checkpoint)
        if mine.map_root != claimed.map_root or (source_key is not None and checkpoint != manifest["checkpoint"]
                                                 and _same_key(checkpoint, keys)):
            raise VerificationError("the restored copy's checkpoint differs from the backup's")
    except BaseException:
        _undo(target, made)
        raise
    return {
        "tx_id": got.tx_id, "root": got.root.hex(), "checkpoint": checkpoint,
        "signing_key": "the backup's" if source_key == backup_key else ("given" if source_key else "new"),
    }


def _same_key(checkpoint: str, keys: list[str]) -> bool:
    """Whether ``checkpoint`` is signed by one of ``keys`` (then it must equal the backup's)."""
    from docstore.proofs.checkpoint import open_checkpoint
    from docstore.proofs.note import NoteError, verifiers

    try:
        open_checkpoint(checkpoint, verifiers(keys))
    except NoteError:
        return False
    return True


def _check_new(path: str, what: str) -> None:
    if os.path.exists(path) and (not os.path.isdir(path) or os.listdir(path)):
        raise QueryError(f"{what} '{path}' is not a new or empty directory")


def _make_dir(path: str) -> bool:
    """Create ``path`` (True), or use it as it is, empty (False)."""
    if os.path.isdir(path):
        return False
    os.makedirs(path, mode=0o700)
    return True


def _undo(path: str, made: bool) -> None:
    """Remove what a failed backup or restore wrote (the directory too, if it made it)."""
    if made:
        shutil.rmtree(path, ignore_errors=True)
        return
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if os.path.isdir(full) and not os.path.islink(full):
            shutil.rmtree(full, ignore_errors=True)
        else:
            os.remove(full)


def _write_json(path: str, value: Any) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
