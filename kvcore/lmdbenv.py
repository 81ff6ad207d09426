"""LMDB environments, opened once per process and shared.

LMDB forbids opening one environment twice in a process (its locks are POSIX ``fcntl`` locks,
owned by the process: a second open shares them and closing it releases them; py-lmdb refuses
it), yet a process may hold a ledger open for writing and again read-only, or open it twice
read-only. So every :class:`kvcore.keystore.KeyStore` of an environment in this process shares
one :class:`SharedEnv`, counted by its users and closed by the last.

A shared environment is found again by its path only while the path still names its files
(the device and inode of ``data.mdb`` and ``lock.mdb``): after a writer swaps in a rebuilt
index, the next open of the path opens the new files, and the old environment serves its
remaining users until they let it go.

In a child process made by ``fork``, environments inherited from the parent are closed (which
LMDB allows: it clears only this process's reader slots) and forgotten before the child opens
any: the child's ledgers open their own.
"""

from __future__ import annotations

import os
import sys
import threading
from typing import TYPE_CHECKING, TypeAlias

import lmdb

if TYPE_CHECKING:
    from lmdb import _Database

DbHandle: TypeAlias = "_Database"
"""A named database's handle (py-lmdb's ``_Database``)."""

MAP_SIZE = (1 << 40) if sys.maxsize > 2**32 else (1 << 30)
"""The address space reserved for an index (1 TiB; the file grows only as it is written)."""
MAX_READERS = 1024
"""Read transactions open at once, over every process (each thread's query holds one)."""
ROWS_DB = b"revisions"
META_DB = b"meta"


class SharedEnv:
    """One open LMDB environment (``env``) and its two named databases, shared by the
    key stores of this process that use it."""

    __slots__ = ("env", "path", "identity", "writable", "rows", "meta", "users")

    def __init__(
        self, env: lmdb.Environment, path: str, identity: tuple[int, ...], writable: bool,
        rows: DbHandle, meta: DbHandle,
    ) -> None:
        self.env = env
        self.path = path
        self.identity = identity
        self.writable = writable
        self.rows = rows
        self.meta = meta
        self.users = 0


_lock = threading.Lock()
_open: dict[str, SharedEnv] = {}
_pid = os.getpid()


def identity(path: str) -> tuple[int, ...] | None:
    """The device and inode of an environment's ``data.mdb`` and ``lock.mdb``, or None if
    either is missing."""
    try:
        d = os.stat(os.path.join(path, "data.mdb"))
        lk = os.stat(os.path.join(path, "lock.mdb"))
    except OSError:
        return None
    return (d.st_dev, d.st_ino, lk.st_dev, lk.st_ino)


def _forget_inherited() -> None:
    global _pid
    if os.getpid() == _pid:
        return
    for shared in _open.values():
        try:
            shared.env.close()
        except Exception:  # noqa: BLE001 - the parent's environment: nothing to report here
            pass
    _open.clear()
    _pid = os.getpid()


def acquire(path: str, *, writable: bool, create: bool) -> SharedEnv:
    """The environment in directory ``path``, opened if this process has not yet.

    ``create`` makes a new environment (the directory must not hold one); otherwise its
    ``data.mdb`` must exist (and, read-only, its ``lock.mdb``: a writer re-creates a missing
    one, as LMDB does). ``writable`` asks for an environment this process
    may write; a shared one opened read-only does not qualify (lmdb.ReadonlyError). Raises
    ``lmdb.Error`` or OSError if it cannot be opened.
    """
    real = os.path.realpath(path)
    with _lock:
        _forget_inherited()
        shared = _open.get(real)
        if shared is not None and not create and shared.identity == identity(real):
            if writable and not shared.writable:
                raise lmdb.ReadonlyError(f"{real!r} is open read-only in this process")
            shared.users += 1
            return shared
        if shared is not None:  # another environment once had this path: leave it to its users
            del _open[real]
        data = os.path.join(real, "data.mdb")
        if not create and not os.path.isfile(data):
            raise lmdb.Error(f"{real!r} holds no LMDB environment (no data.mdb)")
        if not create and os.path.getsize(data) == 0:  # LMDB would make a new environment of it
            raise lmdb.Error(f"{data!r} is empty")
        if not create and not writable and not os.path.isfile(os.path.join(real, "lock.mdb")):
            raise lmdb.Error(f"{real!r} has no lock.mdb, which a reader may not create")
        env = lmdb.open(
            real, map_size=MAP_SIZE, subdir=True, readonly=not writable, create=create,
            sync=True, metasync=False, max_readers=MAX_READERS, max_dbs=4, lock=True, readahead=False,
            lib_version=0,
        )
        try:
            if not create:
                _check_size(env, real)
            if create:
                with env.begin(write=True) as txn:
                    rows = env.open_db(ROWS_DB, txn=txn, create=True)
                    meta = env.open_db(META_DB, txn=txn, create=True)
            else:  # (a handle opened in a read transaction would not outlive it)
                rows = env.open_db(ROWS_DB, create=False)
                meta = env.open_db(META_DB, create=False)
        except BaseException:
            env.close()
            raise
        ident = identity(real)
        assert ident is not None
        shared = SharedEnv(env, real, ident, writable, rows, meta)
        shared.users = 1
        _open[real] = shared
        return shared


def _check_size(env: lmdb.Environment, path: str) -> None:
    """Refuse a data file shorter than the pages its metadata uses: reading a page past the end
    of a mapped file would kill the process (SIGBUS), not raise."""
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = os.path.getsize(os.path.join(path, "data.mdb"))
    if size < used:
        raise lmdb.Error(f"its data file holds {size} bytes, its metadata uses {used}")


def release(shared: SharedEnv) -> None:
    """One user is done with ``shared``; the last closes it."""
    with _lock:
        shared.users -= 1
        if shared.users > 0:
            return
        if _open.get(shared.path) is shared:
            del _open[shared.path]
        if os.getpid() == _pid:
            shared.env.close()


def detach(shared: SharedEnv) -> None:
    """Stop handing ``shared`` out (its files are being replaced); its users keep it."""
    with _lock:
        if _open.get(shared.path) is shared:
            del _open[shared.path]


def writable_here(path: str) -> bool:
    """Whether this process may write the environment's files (a reader then opens it
    writable, so that a writer in the same process can share it; it never writes)."""
    return all(os.access(os.path.join(path, f), os.W_OK) for f in ("data.mdb", "lock.mdb"))
