"""Verified by default: trusted states, and servers whose files were tampered with."""

from __future__ import annotations

import json
import shutil
import threading

import pytest

import docstore
import kvcore
from docstore import VerificationError
from docstore.proofs.trust import read_state_file
from remote_testlib import ServerProcess, flip_in_txlog


def test_no_trust_on_first_use(tmp_path):
    with ServerProcess(tmp_path / "db") as s:
        with pytest.raises(VerificationError, match="trust_on_first_use"):
            docstore.connect(s.target)
        with pytest.raises(VerificationError):
            docstore.connect(s.target, state_file=tmp_path / "none.json")
        assert not (tmp_path / "none.json").exists()
        with docstore.connect(s.target, state_file=tmp_path / "st.json", trust_on_first_use=True) as db:
            assert db.verifying
            saved = read_state_file(tmp_path / "st.json")
            assert saved == db.trusted_state == db.state()
        with docstore.connect(s.target, verify=False) as db:  # an explicit opt-out
            assert not db.verifying and db.trusted_state is None
        with pytest.raises(docstore.QueryError):
            docstore.connect(s.target, verify=False, state_file=tmp_path / "st.json")


def test_trusted_state_advances_only_through_verified_proofs(tmp_path):
    st = tmp_path / "st.json"
    with ServerProcess(tmp_path / "db") as s:
        with docstore.connect(s.target, state_file=st, trust_on_first_use=True) as db:
            first = db.trusted_state
            c = db.create_collection("t")
            doc_id = c.insert({"v": 1})
            assert db.trusted_state == first  # writes do not move it; verified reads do
            assert c.get(doc_id) == {"_id": doc_id, "v": 1}
            assert db.trusted_state.tx_id == 2 and read_state_file(st) == db.trusted_state
            c.update(doc_id, {"$set": {"v": 2}})
            assert db.state().tx_id == 3 and read_state_file(st).tx_id == 3
            assert c.get(doc_id, at_tx=2) == {"_id": doc_id, "v": 1}
            c.delete(doc_id)
            with pytest.raises(docstore.DocumentNotFoundError):
                c.get(doc_id)  # a proven deletion
        # a second client: from the saved file, no first-use flag needed
        with docstore.connect(s.target, state_file=st) as db:
            assert db.trusted_state.tx_id == 4
        # an explicit trusted state older than the file's: the two are linked by a proof
        with docstore.connect(s.target, state_file=st, trusted_state=first) as db:
            assert db.trusted_state.tx_id == 4
        # a trusted state this server never had
        forged = kvcore.State(2, bytes(32))
        with pytest.raises(VerificationError):
            docstore.connect(s.target, trusted_state=forged)
        with pytest.raises(VerificationError):
            docstore.connect(s.target, trusted_state=kvcore.State(99, bytes(32)))


def test_concurrent_verified_readers_share_one_trusted_history(tmp_path):
    st = tmp_path / "st.json"
    with ServerProcess(tmp_path / "db") as s:
        writer = docstore.connect(s.target, verify=False)
        c = writer.create_collection("t")
        ids = c.insert_many([{"i": i} for i in range(50)])
        db = docstore.connect(s.target, state_file=st, trust_on_first_use=True)
        errors: list[BaseException] = []
        stop = threading.Event()

        def read(k: int) -> None:
            rc = db["t"]
            try:
                n = 0
                while not stop.is_set() or n < 30:
                    doc = rc.get(ids[(k * 7 + n) % 50])
                    assert "i" in doc
                    if n % 10 == 0:
                        assert len(list(rc.find({"i": {"$lt": 5}}, verify=True))) == 5
                    n += 1
            except BaseException as e:  # noqa: BLE001
                errors.append(e)

        def write() -> None:
            for j in range(60):
                c.update(ids[j % 50], {"$set": {"w": j}})

        threads = [threading.Thread(target=read, args=(k,)) for k in range(8)]
        w = threading.Thread(target=write)
        for t in threads:
            t.start()
        w.start()
        w.join()
        stop.set()
        for t in threads:
            t.join()
        assert not errors, errors[:3]
        final = db.state()
        assert final == writer.state() and read_state_file(st) == final == db.trusted_state
        db.close()
        writer.close()


def _tampered_setup(tmp_path):
    st = tmp_path / "st.json"
    db_dir = tmp_path / "db"
    with ServerProcess(db_dir) as s:
        with docstore.connect(s.target, state_file=st, trust_on_first_use=True) as db:
            c = db.create_collection("trials", indexes=["site"])
            c.insert({"_id": "p17", "site": "Oslo", "dosage": {"mg": 5}, "note": "dose-5mg-approved"})
            c.insert({"_id": "p18", "site": "Oslo", "dosage": {"mg": 7}})
            assert c.get("p17")["note"] == "dose-5mg-approved"  # verified; the state file advances
    return db_dir, st


def test_tampered_value_in_txlog(tmp_path):
    """Someone edits a stored value on the server's disk (fixing the record's CRC): the server
    serves the edited document, and the client refuses it."""
    db_dir, st = _tampered_setup(tmp_path)
    trusted = read_state_file(st)
    flip_in_txlog(db_dir, b"dose-5mg-approved", b"dose-9mg-approved")
    with ServerProcess(db_dir) as s:
        with docstore.connect(s.target, verify=False) as plain:
            assert plain["trials"].get("p17")["note"] == "dose-9mg-approved"  # what it serves
        with docstore.connect(s.target, state_file=st) as db:  # its history of roots is intact
            c = db["trials"]
            with pytest.raises(VerificationError):
                c.get("p17")
            with pytest.raises(VerificationError):
                list(c.find({"site": "Oslo"}, verify=True))
            with pytest.raises(VerificationError):
                docstore.verify(c.prove("p17", "/note"), trusted)
            assert c.get("p18")["dosage"] == {"mg": 7}  # untouched documents still verify
        with docstore.connect(s.target, verify=False) as plain:
            assert not plain.audit().ok  # its own audit sees it too, and from then on it refuses
            with pytest.raises(docstore.CorruptDataError, match="audit failed"):
                plain["trials"].get("p18")
    assert read_state_file(st) == trusted


def _forge(path, note: str, extra: int = 0) -> None:
    """A database with the same operations but another value: every hash recomputed."""
    with docstore.open(path) as db:
        c = db.create_collection("trials", indexes=["site"])
        c.insert({"_id": "p17", "site": "Oslo", "dosage": {"mg": 5}, "note": note})
        c.insert({"_id": "p18", "site": "Oslo", "dosage": {"mg": 7}})
        for i in range(extra):
            c.insert({"_id": f"x{i}"})


@pytest.mark.parametrize("extra", [0, 3])
def test_forged_database(tmp_path, extra):
    """The database is replaced by a forged one whose hashes are all consistent (the same
    number of transactions, or more): the client refuses it at once."""
    db_dir, st = _tampered_setup(tmp_path)
    trusted = read_state_file(st)
    shutil.rmtree(db_dir)
    _forge(db_dir, "dose-9mg-approved", extra)
    with docstore.open(db_dir) as forged:
        assert forged.audit().ok  # self-consistent
        assert forged.state().tx_id == trusted.tx_id + extra
    with ServerProcess(db_dir) as s:
        with pytest.raises(VerificationError):
            docstore.connect(s.target, state_file=st)
        with pytest.raises(VerificationError):
            docstore.connect(s.target, trusted_state=trusted)
        with docstore.connect(s.target, verify=False) as plain:
            assert plain["trials"].get("p17")["note"] == "dose-9mg-approved"
            with pytest.raises(VerificationError):
                docstore.verify(plain["trials"].prove("p17"), trusted)
    assert read_state_file(st) == trusted  # never advanced to the forged history


def test_rolled_back_database(tmp_path):
    """The server is restored from an older copy: it lost transactions the client saw."""
    db_dir, st = _tampered_setup(tmp_path)
    old_copy = tmp_path / "copy"
    shutil.copytree(db_dir, old_copy)
    with ServerProcess(db_dir) as s:
        with docstore.connect(s.target, state_file=st) as db:
            db["trials"].insert({"_id": "p19"})
            db["trials"].get("p19")
    assert json.loads(st.read_text())["tx_id"] == 4
    shutil.rmtree(db_dir)
    shutil.copytree(old_copy, db_dir)
    with ServerProcess(db_dir) as s:
        with pytest.raises(VerificationError, match="lost transactions|rolled back"):
            docstore.connect(s.target, state_file=st)


def test_find_verify_needs_a_verifying_connection(tmp_path):
    with ServerProcess(tmp_path / "db") as s:
        with docstore.connect(s.target, verify=False) as db:
            db.create_collection("t").insert({"a": 1})
            with pytest.raises(VerificationError):
                db["t"].find({}, verify=True)
