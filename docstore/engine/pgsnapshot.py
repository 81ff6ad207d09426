"""The derived state's snapshot in PostgreSQL, so that a server needs no disk of its own.

On a PostgreSQL ledger each writer keeps its derived state (``state.lmdb``: locations,
indexes, the state map) in a local directory, a cache of the log that it reads at memory
speed. A server started without that directory (a new machine, a container) would rebuild it
from the whole log; instead it takes the newest **snapshot** of the derived state that a
writer published into the ledger's own PostgreSQL database, checks it against the log exactly
as it checks a state directory it finds on disk (the transaction it reflects, the ledger root
there, and the state-map root that transaction's header commits to; anything else is rebuilt
from the log), and catches up from the log from there. docs/scale-out.md, "Stateless servers".

Tables (created on first publish, in the connection's schema, beside the ledger's)::

    ds_snapshot       (name text primary key, tx_id bigint, root bytea, size bigint,
                       sha256 bytea, chunks int, taken_at timestamptz)
    ds_snapshot_chunk (name text, seq int, data bytea, primary key (name, seq))

A snapshot is LMDB's compacted copy of the environment as of one read transaction (whole
transactions only), streamed in chunks of CHUNK bytes in both directions: memory stays
bounded by a chunk whatever the size. Publishing replaces the previous snapshot in one
PostgreSQL transaction (under a transaction advisory lock, keeping the newer of two racing
publishers'), so a reader sees one whole snapshot or the one before.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, NamedTuple

from docstore.errors import StorageError

if TYPE_CHECKING:
    from docstore.engine.store import Store

NAME = "state.lmdb"
CHUNK = 1 << 20
_LOCK_KEY = 0x696D6D75646F6373  # the advisory lock of publishing ("immudocs")
_DDL = """
CREATE TABLE IF NOT EXISTS ds_snapshot (
    name text PRIMARY KEY, tx_id bigint NOT NULL, root bytea NOT NULL, size bigint NOT NULL,
    sha256 bytea NOT NULL, chunks int NOT NULL, taken_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS ds_snapshot_chunk (
    name text NOT NULL, seq int NOT NULL, data bytea NOT NULL, PRIMARY KEY (name, seq)
);
ALTER TABLE ds_snapshot_chunk ALTER COLUMN data SET STORAGE EXTERNAL;
"""


class Snapshot(NamedTuple):
    """A published snapshot: the transaction the derived state reflects, its size in bytes."""

    tx_id: int
    size: int


def _connect(url: str) -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - a PostgreSQL ledger is open, so psycopg is there
        raise StorageError("the PostgreSQL backend needs psycopg: pip install 'immudoc[postgres]'") from None
    try:
        return psycopg.connect(url, autocommit=False)
    except psycopg.Error as e:
        raise StorageError(f"cannot reach PostgreSQL to publish or fetch the derived state: {_line(e)}") from None


def _line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def publish(url: str, store: Store) -> Snapshot:
    """Copy ``store`` (compacted, as of one read transaction) into the database at ``url``,
    replacing an older snapshot; a newer one already there is kept (returned)."""
    import psycopg

    tmp = tempfile.mkdtemp(prefix="immudoc-publish-")
    try:
        with store.read() as txn:
            reflected = store.reflected(txn)
            if reflected is None:
                raise StorageError("the derived state reflects no transaction yet: nothing to publish")
            tx_id, root, _version = reflected
            store.env.copy(tmp, compact=True, txn=txn)
        name = os.path.join(tmp, "data.mdb")
        size = os.path.getsize(name)
        conn = _connect(url)
        try:
            with conn:  # one PostgreSQL transaction: the old snapshot or the new, whole
                conn.execute(_DDL)
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
                row = conn.execute("SELECT tx_id, size FROM ds_snapshot WHERE name = %s", (NAME,)).fetchone()
                if row is not None and int(row[0]) >= tx_id:
                    return Snapshot(int(row[0]), int(row[1]))
                conn.execute("DELETE FROM ds_snapshot_chunk WHERE name = %s", (NAME,))
                digest, seq = hashlib.sha256(), 0
                with open(name, "rb") as f:
                    while chunk := f.read(CHUNK):
                        digest.update(chunk)
                        conn.execute(
                            "INSERT INTO ds_snapshot_chunk (name, seq, data) VALUES (%s, %s, %s)", (NAME, seq, chunk)
                        )
                        seq += 1
                conn.execute(
                    "INSERT INTO ds_snapshot (name, tx_id, root, size, sha256, chunks) VALUES (%s, %s, %s, %s, %s, %s) "
                    "ON CONFLICT (name) DO UPDATE SET tx_id = EXCLUDED.tx_id, root = EXCLUDED.root, "
                    "size = EXCLUDED.size, sha256 = EXCLUDED.sha256, chunks = EXCLUDED.chunks, taken_at = now()",
                    (NAME, tx_id, root, size, digest.digest(), seq),
                )
        except psycopg.Error as e:
            raise StorageError(f"cannot publish the derived state to PostgreSQL: {_line(e)}") from None
        finally:
            conn.close()
        return Snapshot(tx_id, size)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch(url: str, path: str) -> tuple[Snapshot | None, str | None]:
    """Write the newest published snapshot as ``path/state.lmdb`` (which must not exist):
    (the snapshot, None), or (None, why not) when there is none or it cannot be taken whole (a
    chunk missing or changed: its size and SHA-256 are checked before it is put in place). The
    caller then checks it against the log, as any state directory."""
    import psycopg

    dest = os.path.join(path, NAME)
    part = dest + ".part"
    shutil.rmtree(part, ignore_errors=True)
    try:
        conn = _connect(url)
    except StorageError as e:
        return None, str(e)
    try:
        conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ  # one snapshot, whole
        conn.read_only = True
        with conn:
            if conn.execute("SELECT to_regclass('ds_snapshot') IS NOT NULL").fetchone()[0] is not True:
                return None, None
            row = conn.execute("SELECT tx_id, size, sha256, chunks FROM ds_snapshot WHERE name = %s", (NAME,)).fetchone()
            if row is None:
                return None, None
            tx_id, size, sha, chunks = int(row[0]), int(row[1]), bytes(row[2]), int(row[3])
            os.makedirs(part)
            digest, seq, written = hashlib.sha256(), 0, 0
            with open(os.path.join(part, "data.mdb"), "wb") as f:
                while seq < chunks:  # a chunk at a time: memory bounded whatever the size
                    got = conn.execute(
                        "SELECT data FROM ds_snapshot_chunk WHERE name = %s AND seq = %s", (NAME, seq)
                    ).fetchone()
                    if got is None:
                        return None, f"the published derived state lacks its part {seq}"
                    data = bytes(got[0])
                    digest.update(data)
                    f.write(data)
                    written += len(data)
                    seq += 1
                f.flush()
                os.fsync(f.fileno())
            if written != size or digest.digest() != sha:
                return None, "the published derived state does not match its checksum"
        os.rename(part, dest)
        return Snapshot(tx_id, size), None
    except psycopg.Error as e:
        return None, f"cannot read the published derived state: {_line(e)}"
    except OSError as e:
        return None, f"cannot write the published derived state here: {e.strerror}"
    finally:
        conn.close()
        with contextlib.suppress(OSError):
            shutil.rmtree(part)


def drop(url: str) -> None:
    """Remove the published derived state (after an erasure: it holds rows of erased values;
    PostgreSQL keeps the deleted rows' bytes until VACUUM reclaims them: docs/storage.md)."""
    import psycopg

    conn = _connect(url)
    try:
        with conn:
            conn.execute(_DDL)
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
            conn.execute("DELETE FROM ds_snapshot_chunk WHERE name = %s", (NAME,))
            conn.execute("DELETE FROM ds_snapshot WHERE name = %s", (NAME,))
    except psycopg.Error as e:
        raise StorageError(f"cannot remove the derived state published in PostgreSQL: {_line(e)}") from None
    finally:
        conn.close()
