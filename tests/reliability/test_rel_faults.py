"""Faults: a full disk (EFBIG through RLIMIT_FSIZE), a second writer, a read-only directory,
missing, foreign and damaged files, a database of a newer format.

Every fault gets a clear, typed error; nothing half-written becomes visible; and a failed open
leaves every file byte for byte as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

import docstore
import kvcore
from rel_testlib import contents, files_of, open_quiet, run_script, spawn_script, stop


def _make_db(path: Path) -> dict:
    with docstore.open(path) as db:
        c = db.create_collection("c", schema={"type": "object"}, indexes=["k", {"field": "u", "unique": True}])
        c.insert_many([{"_id": "a", "k": 1, "u": 1, "n": 0}, {"_id": "b", "k": 2, "u": 2, "n": 0}])
        c.update("a", {"$inc": {"n": 5}})
        return contents(db)


# ============================================================================== disk full
DISK_FULL = r'''
import json, os, resource, signal, sys
import docstore, kvcore

signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit then fails with EFBIG
path = sys.argv[1]
log = os.path.join(path, "ledger", "txlog")
soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
out = {"errors": [], "problems": []}


def limit(extra):
    resource.setrlimit(resource.RLIMIT_FSIZE, (os.path.getsize(log) + extra, hard))


def unlimit():
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


db = docstore.open(path)
c = db["c"]
state = db.state()
writes = [
    ("tx", lambda i: _tx(i)),
    ("insert", lambda i: c.insert({"_id": "i%d" % i, "k": i, "u": 100 + i, "pad": "p" * 400})),
    ("update", lambda i: c.update("a", {"$inc": {"n": 1}, "$set": {"pad": "q" * 300}})),
    ("delete", lambda i: c.delete("b")),
    ("create", lambda i: db.create_collection("new%d" % i)),
    ("index", lambda i: c.create_index("k%d" % i)),
]


def _tx(i):
    with db.transaction() as tx:
        tx["c"].insert_many([{"_id": "t%d-%d" % (i, j), "k": j, "u": "t%d-%d" % (i, j), "pad": "x" * 300} for j in range(3)])
        tx["c"].update("a", {"$inc": {"n": 1}})


# the limit falls inside the frame, the header, the entries and the entries-tree of the record
# (every write below needs more than 120 bytes of log)
for i, extra in enumerate([0, 1, 11, 12, 13, 40, 64, 65, 100, 120]):
    for name, write in writes:
        tx_id, size, before = db.tx_id, os.path.getsize(log), {d["_id"]: d for d in c.find()}
        limit(extra)
        try:
            write(i)
        except docstore.StorageError as e:
            out["errors"].append([name, extra, type(e).__name__, isinstance(e, kvcore.StorageError), str(e)])
        else:
            out["problems"].append("%s at +%d bytes did not fail" % (name, extra))
        finally:
            unlimit()
        # nothing of it is visible, nothing of it is on disk, and reads keep working
        if db.tx_id != tx_id or os.path.getsize(log) != size:
            out["problems"].append("%s at +%d: tx %d -> %d, log %d -> %d" % (name, extra, tx_id, db.tx_id, size, os.path.getsize(log)))
        if {d["_id"]: d for d in c.find()} != before or c.get("a") != before["a"]:
            out["problems"].append("%s at +%d changed what is served" % (name, extra))
        if [d["_id"] for d in c.find({"k": 2})] != ["b"] or "new%d" % i in db:
            out["problems"].append("%s at +%d: an index or a collection changed" % (name, extra))
        proof = c.prove("a", "/n")
        if docstore.verify(docstore.proofs.load(proof.to_json()), db.state()) != before["a"]["n"]:
            out["problems"].append("a proof after the failure does not verify")
# space returns: the same process writes again
_tx(99)
c.insert({"_id": "after", "k": 7, "u": "after"})
out["tx_id"] = db.tx_id
out["audit"] = db.audit().ok
out["docs"] = {d["_id"]: d for d in c.find()}
docstore.verify_consistency(state, db.state(), db.prove_consistency(state))
# a full disk while closing: the derived snapshots cannot be saved, which is harmless
limit(0)
db.close()
unlimit()
print(json.dumps(out))
'''


def test_disk_full_fails_cleanly_and_the_database_recovers(tmp_path):
    path = tmp_path / "db"
    _make_db(path)
    done = run_script(DISK_FULL, str(path))
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert out["problems"] == []
    assert len(out["errors"]) == 10 * 6
    for name, extra, kind, is_kv, message in out["errors"]:
        assert kind == "StorageError" and is_kv, (name, extra)
        assert "commit failed and was rolled back" in message and "File too large" in message
    assert out["audit"]
    # a fresh process (this one) sees exactly what the writer last served, and audits clean
    db, _notes = open_quiet(path)
    with db:
        assert db.tx_id == out["tx_id"]
        assert contents(db)["c"] == out["docs"]
        assert db.audit().ok
        assert {"after", "t99-0", "t99-2"} <= set(out["docs"])


def test_a_write_error_is_a_docstore_error_that_kvcore_callers_still_catch(tmp_path):
    """docstore wraps kvcore.StorageError in docstore.StorageError (a DocstoreError), which is
    still a kvcore.StorageError and an OSError: older ``except`` clauses keep working."""
    assert issubclass(docstore.StorageError, docstore.DocstoreError)
    assert issubclass(docstore.StorageError, kvcore.StorageError)
    assert issubclass(docstore.StorageError, OSError)
    path = tmp_path / "db"
    _make_db(path)
    with docstore.open(path) as db:
        storage = db.ledger._storage
        real = storage.append_many

        def failing(*args):
            raise kvcore.StorageError("commit failed and was rolled back: No space left on device")

        storage.append_many = failing
        try:
            with pytest.raises(docstore.StorageError, match="No space left"):
                db["c"].insert({"_id": "x"})
            assert db.tx_id == 3 and "x" not in {d["_id"] for d in db["c"].find()}
        finally:
            storage.append_many = real
        db["c"].insert({"_id": "x", "u": "x"})
        assert db.audit().ok


# ============================================================================ second writer
HOLDER = r'''
import sys
import docstore
db = docstore.open(sys.argv[1])
print("ready", db.tx_id, flush=True)
for line in sys.stdin:
    if line.strip() == "write":
        db["c"].insert({"k": 9, "u": "from-holder"})
        print("wrote", db.tx_id, flush=True)
    elif line.strip() == "close":
        db.close()
        print("closed", flush=True)
'''


def test_a_second_writer_gets_locked_error_and_changes_nothing(tmp_path):
    path = tmp_path / "db"
    before_docs = _make_db(path)
    holder = spawn_script(HOLDER, str(path))
    try:
        assert holder.stdout.readline().split()[0] == "ready"
        on_disk = files_of(path)
        with pytest.raises(kvcore.LockedError, match="open for writing by another process") as err:
            docstore.open(path)
        assert str(holder.pid) in str(err.value)  # it names the holder
        started = time.monotonic()
        with pytest.raises(kvcore.LockedError):
            docstore.open(path, wait=0.3)
        assert time.monotonic() - started >= 0.3
        assert files_of(path) == on_disk  # byte for byte, LOCK included
        # readers are welcome, and see the writer's commits after refresh()
        reader, _ = open_quiet(path, readonly=True)
        with reader:
            assert contents(reader) == before_docs
            holder.stdin.write("write\n")
            tx = int(holder.stdout.readline().split()[1])
            assert reader.refresh() == tx
            assert reader["c"].find_one({"u": "from-holder"})["k"] == 9
            with pytest.raises(kvcore.ReadOnlyError):
                reader["c"].insert({"x": 1})
        holder.stdin.write("close\n")
        assert holder.stdout.readline().strip() == "closed"
        with docstore.open(path, wait=5) as db:  # the lock is free again
            assert db.tx_id == tx and db.audit().ok
    finally:
        stop(holder)


# ======================================================================== read-only directory
READ_ONLY = r'''
import ctypes, json, os, sys
import docstore, kvcore

path = sys.argv[1]
out = {}
try:  # can this process still write there (root with CAP_DAC_OVERRIDE)?
    open(os.path.join(path, "ledger", "probe"), "w").close()
    os.remove(os.path.join(path, "ledger", "probe"))
    out["skip"] = "this user can write to a read-only directory"
except OSError:
    for label, fn in [
        ("writer", lambda: docstore.open(path)),
        ("new database inside", lambda: docstore.open(os.path.join(path, "new"))),
    ]:
        try:
            fn().close()
            out[label] = "opened"
        except Exception as e:
            out[label] = [type(e).__name__, isinstance(e, kvcore.ReadOnlyError), str(e)]
    with docstore.open(path, readonly=True) as db:
        out["docs"] = {d["_id"]: d for d in db["c"].find()}
        out["audit"] = db.audit().ok
        p = db["c"].prove("a", "/n")
        out["verified"] = docstore.verify(docstore.proofs.load(p.to_json()), db.state())
print(json.dumps(out))
'''


def _drop_dac_capabilities() -> None:  # runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER (PR_CAPBSET_DROP)
        if libc.prctl(24, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def _chmod_tree(path: Path, dirs: int, files: int) -> None:
    for p in [path, *path.rglob("*")]:
        os.chmod(p, dirs if p.is_dir() else files)


def test_a_read_only_directory_gives_read_only_error_and_still_serves_reads(tmp_path):
    """chmod does not stop root: as root the child drops CAP_DAC_OVERRIDE (and its kin) from its
    capability bounding set before exec, so it is held to the permission bits like anyone else.
    If that is impossible the test is skipped, saying why."""
    path = tmp_path / "db"
    docs = _make_db(path)["c"]
    _chmod_tree(path, 0o555, 0o444)
    try:
        on_disk = files_of(path)
        try:
            done = run_script(READ_ONLY, str(path), preexec_fn=_drop_dac_capabilities if os.geteuid() == 0 else None)
        except subprocess_error() as e:
            pytest.skip(f"running as root and cannot drop CAP_DAC_OVERRIDE for a child: {e}")
        assert done.returncode == 0, done.stderr
        out = json.loads(done.stdout)
        if "skip" in out:
            pytest.skip(f"cannot make a directory read-only here: {out['skip']} (running as uid {os.geteuid()})")
        for label in ("writer", "new database inside"):
            kind, is_read_only, message = out[label]
            assert kind == "ReadOnlyError" and is_read_only, out[label]
            assert "Permission denied" in message
        assert out["docs"] == docs and out["audit"] and out["verified"] == docs["a"]["n"]
        assert files_of(path) == on_disk
    finally:
        _chmod_tree(path, 0o755, 0o644)


def subprocess_error() -> tuple[type[BaseException], ...]:
    import subprocess

    return (subprocess.SubprocessError, OSError)


# ============================================================== missing, foreign, newer format
def _delete(rel):
    def damage(path: Path) -> None:
        target = path / rel
        shutil.rmtree(target) if target.is_dir() else target.unlink()

    return damage


def _write(rel, data: bytes):
    def damage(path: Path) -> None:
        (path / rel).write_bytes(data)

    return damage


def _make_dir_instead(rel):
    def damage(path: Path) -> None:
        (path / rel).unlink()
        (path / rel).mkdir()
        (path / rel / "inside").write_text("x")

    return damage


FAULTS = [
    # (case, damage, error for a writer, error for a reader, words the message must hold)
    ("txlog deleted", _delete("ledger/txlog"), kvcore.FormatError, kvcore.FormatError, "missing its transaction log"),
    ("FORMAT deleted", _delete("ledger/FORMAT"), kvcore.FormatError, kvcore.FormatError, "not an immudoc ledger"),
    ("ledger directory deleted", _delete("ledger"), kvcore.FormatError, kvcore.FormatError, "ledger"),
    ("newer format version", _write("ledger/FORMAT", b'{"format": "immudoc-kvcore", "version": 3}\n'),
     kvcore.FormatError, kvcore.FormatError, "format version 3"),
    ("FORMAT of something else", _write("ledger/FORMAT", b'{"format": "sqlite", "version": 1}\n'),
     kvcore.FormatError, kvcore.FormatError, "not an immudoc ledger"),
    ("FORMAT is not JSON", _write("ledger/FORMAT", b"\x00\xff garbage"), kvcore.FormatError, kvcore.FormatError,
     "not a ledger FORMAT file"),
    ("txlog replaced by a foreign file", _write("ledger/txlog", b"PK\x03\x04 a zip archive, say" * 40),
     kvcore.CorruptionError, kvcore.CorruptionError, "not a torn write"),
    ("txlog is a directory", _make_dir_instead("ledger/txlog"), kvcore.StorageError, kvcore.StorageError,
     "Is a directory"),
    ("FORMAT is a directory", _make_dir_instead("ledger/FORMAT"), kvcore.FormatError, kvcore.FormatError,
     "not a ledger FORMAT file"),
]


@pytest.mark.parametrize("case,damage,writer_error,reader_error,words", FAULTS, ids=[f[0] for f in FAULTS])
def test_a_damaged_database_gets_a_typed_error_and_is_left_untouched(
    tmp_path, case, damage, writer_error, reader_error, words
):
    path = tmp_path / "db"
    _make_db(path)
    damage(path)
    if (path / "ledger" / "LOCK").is_file():  # as left by another process: a failed open keeps it
        (path / "ledger" / "LOCK").write_text("424242")
    on_disk = files_of(path)
    for readonly, error in ((False, writer_error), (True, reader_error)):
        with pytest.raises(error) as err:
            docstore.open(path, readonly=readonly)
        assert isinstance(err.value, kvcore.KvError)
        if not readonly:
            assert words in str(err.value), str(err.value)
        assert files_of(path) == on_disk, f"{case}: a failed open changed the files"


@pytest.mark.parametrize("what", ["a directory of other files", "a regular file", "an empty ledger/ beside files"])
def test_a_path_that_is_not_a_database_is_refused_untouched(tmp_path, what):
    target = tmp_path / "target"
    if what == "a regular file":
        target.write_text("not a database\n")
    else:
        target.mkdir()
        (target / "notes.txt").write_text("my notes\n")
        (target / "photos").mkdir()
        if what == "an empty ledger/ beside files":
            (target / "ledger").mkdir()
            (target / "ledger" / "unrelated.bin").write_bytes(b"\x00\x01")
    on_disk = files_of(target)
    for readonly in (False, True):
        with pytest.raises(kvcore.FormatError, match="not an immudoc|no ledger|not a directory"):
            docstore.open(target, readonly=readonly)
        assert files_of(target) == on_disk


def test_a_new_database_goes_in_a_new_or_empty_directory(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for path in (empty, tmp_path / "fresh" / "nested"):
        with docstore.open(path) as db:
            db.create_collection("c").insert({"_id": "x"})
        with docstore.open(path) as db:
            assert db["c"].get("x") == {"_id": "x"}


def test_stray_files_in_a_database_are_ignored_and_kept(tmp_path):
    """Files docstore does not know (an editor's backup, a note, a leftover temporary snapshot)
    are neither an error nor touched."""
    path = tmp_path / "db"
    docs = _make_db(path)
    strays = {
        path / "README.txt": b"hands off\n",
        path / "ledger" / "txlog.bak": b"old copy",
        path / "docs.snap.tmp": b"half a snapshot",
        path / "ledger" / "index.snap.tmp": b"half an index",
    }
    for p, data in strays.items():
        p.write_bytes(data)
    for readonly in (True, False):
        db, _ = open_quiet(path, readonly=readonly)
        with db:
            assert contents(db) == docs and db.audit().ok
    for p, data in strays.items():
        if not p.name.endswith(".tmp"):  # temporary snapshots are rewritten by the next save
            assert p.read_bytes() == data


@pytest.mark.parametrize("name", ["state.lmdb", "ledger/index.lmdb", "ledger/txindex", "ledger/tree"])
def test_missing_derived_files_are_rebuilt(tmp_path, name):
    path = tmp_path / "db"
    docs = _make_db(path)
    shutil.rmtree(path / name) if (path / name).is_dir() else (path / name).unlink()
    db, _notes = open_quiet(path)
    with db:
        assert contents(db) == docs and db.audit().ok
    assert (path / name).exists()


# ============================================= the directory deleted or moved while it is open
@pytest.mark.parametrize("how", ["delete", "move", "replace"])
def test_a_commit_is_refused_once_the_database_directory_is_gone(tmp_path, how):
    """A commit is acknowledged only where the database will be opened next: after the
    directory is deleted, moved away or replaced under an open database, commits raise
    StorageError, and nothing of them is found when the database is opened again."""
    path = tmp_path / "db"
    docs = _make_db(path)
    db = docstore.open(path)
    try:
        if how == "delete":
            shutil.rmtree(path)
        elif how == "move":
            path.rename(tmp_path / "moved")
        else:
            path.rename(tmp_path / "moved")
            shutil.copytree(tmp_path / "moved", path)
        for attempt in range(2):  # the second commit fails as the first did
            with pytest.raises(docstore.StorageError, match="deleted, moved or replaced"):
                db["c"].insert({"_id": f"new{attempt}", "k": 9, "u": 9 + attempt})
    finally:
        db.close()
    if how == "delete":
        assert not path.exists()
        return
    for where in ([tmp_path / "moved", path] if how == "replace" else [tmp_path / "moved"]):
        reopened, _notes = open_quiet(where)
        with reopened:
            assert contents(reopened) == docs and reopened.audit().ok


def test_kvcore_refuses_a_commit_after_its_log_was_unlinked(tmp_path):
    with kvcore.Ledger.open(tmp_path / "ledger") as led:
        led.set(b"k", b"1")
        (tmp_path / "ledger" / "txlog").unlink()
        with pytest.raises(kvcore.StorageError, match="deleted, moved or replaced"):
            led.set(b"k", b"2")
        assert led.tx_id == 1 and led.get(b"k").value == b"1"
