"""The state map of a real database against a model: after random commits (documents written,
updated, deleted, indexes created), reopening and a rebuild from the log, the map's root is the
one the last header commits to and the one a rebuild computes; every live document proves
current, every other id proves absent, and complete queries give the model's answers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import warnings

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

import docstore
import kvcore
from docstore.engine import derive
from docstore.engine.store import Store
from docstore.errors import DocumentNotFoundError, ProofUnavailableError
from docstore.statemap.hashing import map_root

IDS = [f"p{i}" for i in range(12)]
SITES = ["a", "b", "c", None]


def _engine(db):
    return db._engine  # noqa: SLF001 - the test inspects the derived state


def _map_items(db) -> list[tuple[bytes, bytes]]:
    eng = _engine(db)
    with eng.store.read() as txn:
        return list(eng.store.smap.items(txn, b""))


def _rebuilt_root(db) -> bytes:
    """The map rebuilt from the log alone, in a temporary store."""
    eng = _engine(db)
    tmp = tempfile.mkdtemp()
    try:
        store = Store(tmp, readonly=False, durable=False)
        try:
            derive.catch_up(store, eng.ledger, eng.read_doc)
            with store.read() as txn:
                return store.smap.root(txn)
        finally:
            store.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class DocstoreMap(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "db")
        self.db = docstore.open(self.path)
        self.coll = self.db.create_collection("pats", indexes=["site"])
        self.model: dict[str, dict] = {}
        self.indexed = {"site"}

    def teardown(self) -> None:
        self.db.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    @rule(ids=st.lists(st.sampled_from(IDS), min_size=1, max_size=5, unique=True),
          site=st.sampled_from(SITES), n=st.integers(0, 3))
    def write(self, ids, site, n):
        docs = []
        for i in ids:
            doc = {"_id": i, "n": n, "tags": list(range(n))}
            if site is not None:
                doc["site"] = site
            docs.append(doc)
        with self.db.transaction() as tx:
            for d in docs:
                if d["_id"] in self.model:
                    tx["pats"].replace(d["_id"], d)
                else:
                    tx["pats"].insert(d)
        for d in docs:
            self.model[d["_id"]] = d

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def delete(self, data):
        i = data.draw(st.sampled_from(sorted(self.model)))
        self.coll.delete(i)
        del self.model[i]

    @precondition(lambda self: "tags" not in self.indexed)
    @rule()
    def index_tags(self):
        self.coll.create_index("tags")
        self.indexed.add("tags")

    @rule()
    def reopen(self):
        self.db.close()
        self.db = docstore.open(self.path)
        self.coll = self.db["pats"]

    @rule()
    def lose_the_derived_state(self):
        self.db.close()
        shutil.rmtree(os.path.join(self.path, "state.lmdb"))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", kvcore.RecoveryWarning)
            self.db = docstore.open(self.path)
        self.coll = self.db["pats"]

    @invariant()
    def root_is_committed_and_history_independent(self):
        eng = _engine(self.db)
        items = _map_items(self.db)
        root = map_root(items)
        with eng.store.read() as txn:
            assert eng.store.smap.root(txn) == root
        assert eng.ledger.header(eng.ledger.tx_id).state_root == root
        assert _rebuilt_root(self.db) == root
        docs = [k for k, _v in items if k.startswith(b"d\x00")]
        assert len(docs) == len(self.model)

    @rule(data=st.data())
    def proofs_answer_like_the_model(self, data):
        state = self.db.checkpoint()  # the trusted checkpoint names the map root: compact bundles verify
        i = data.draw(st.sampled_from(IDS))
        if i in self.model:
            assert docstore.verify(self.coll.prove_latest(i).to_json(), state) == self.model[i]
            assert docstore.verify(self.coll.prove_latest(i, "/n", with_header=True).to_json(), self.db.state()) == self.model[i]["n"]
            with pytest.raises(Exception):
                self.coll.prove_absent(i)
        else:
            assert docstore.verify(self.coll.prove_absent(i).to_json(), state) is None
            with pytest.raises(DocumentNotFoundError):
                self.coll.prove_latest(i)
        site = data.draw(st.sampled_from(SITES))
        want = sorted((d for d in self.model.values() if d.get("site") == site), key=lambda d: d["_id"])
        got = docstore.verify(self.coll.prove_find({"site": site}).to_json(), state)
        assert sorted(got, key=lambda d: d["_id"]) == want
        key = self.db.verifier_key()
        assert docstore.verify(self.coll.prove_count({"site": site}).to_json(), self.db.state(), key) == len(want)
        every = docstore.verify(self.coll.prove_find({}).to_json(), state)
        assert sorted(every, key=lambda d: d["_id"]) == sorted(self.model.values(), key=lambda d: d["_id"])
        if "tags" in self.indexed:
            want_t = {d["_id"] for d in self.model.values() if 1 in d["tags"]}
            got_t = docstore.verify(self.coll.prove_find({"tags": 1}).to_json(), state)
            assert {d["_id"] for d in got_t} == want_t
        lim = docstore.verify(self.coll.prove_find({"n": {"$gte": 0}}, limit=2).to_json(), state)
        assert len(lim) == min(2, len(self.model))


TestDocstoreMap = DocstoreMap.TestCase
TestDocstoreMap.settings = settings(
    max_examples=25, stateful_step_count=12, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def test_a_damaged_map_is_rebuilt_and_an_audit_sees_it(tmp_path):
    path = str(tmp_path / "db")
    with docstore.open(path) as db:
        c = db.create_collection("pats", indexes=["site"])
        c.insert_many([{"_id": f"p{i:03d}", "site": f"s{i % 5}"} for i in range(300)])
        root = _engine(db).ledger.header(_engine(db).ledger.tx_id).state_root
        # change one map node's bytes (a value) in place: the audit compares the rebuilt map
        eng = _engine(db)
        with eng.store.write() as txn:
            cur = txn.cursor(db=eng.store.smap.db)
            assert cur.first()
            k, v = cur.key(), bytearray(cur.value())
            v[-1] ^= 0xFF
            txn.put(k, bytes(v), db=eng.store.smap.db)
        report = eng.audit()
        assert not report.ok and any("state map" in p for p in report.problems)
    # a root that no longer matches the last header is caught at open and rebuilt
    with docstore.open(path) as db:
        eng = _engine(db)
        with eng.store.write() as txn:
            txn.put(b"map.root", b"\x00" * 32, db=eng.store.meta)
    with pytest.warns(kvcore.RecoveryWarning):
        db = docstore.open(path)
    with db:
        with _engine(db).store.read() as txn:
            assert _engine(db).store.smap.root(txn) == root
        assert docstore.verify(db["pats"].prove_latest("p007").to_json(), db.checkpoint())["site"] == "s2"


def test_an_upgraded_database_proves_the_current_state_from_its_next_commit(tmp_path):
    fixture = os.path.join(os.path.dirname(__file__), "..", "fixtures", "db-v1.tar.gz")
    import tarfile

    path = str(tmp_path / "v1")
    with tarfile.open(fixture) as tar:
        tar.extractall(path, filter="data")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kvcore.RecoveryWarning)
        db = docstore.open(path)
    with db:
        names = db.collections()
        coll = db[names[0] if isinstance(names[0], str) else names[0]["name"]]
        some = next(iter(coll.find({}, limit=1)))
        with pytest.raises(ProofUnavailableError, match="version 1"):
            coll.prove_latest(some["_id"])
        db.create_collection("after-the-upgrade")  # any commit: a header of version 2
        state = db.state()
        assert docstore.verify(coll.prove_latest(some["_id"], with_header=True).to_json(), state) == some
        assert docstore.verify(coll.prove_absent("never").to_json(), state, db.verifier_key()) is None


CRASHER = textwrap.dedent(
    """
    import sys, docstore
    db = docstore.open(sys.argv[1])
    c = db["pats"]
    i = 0
    while True:
        c.insert_many([{"_id": f"w{i}-{j}", "site": f"s{j % 3}"} for j in range(50)])
        print("ack", i, flush=True)
        i += 1
    """
)


def test_a_writer_killed_mid_commit_leaves_a_map_that_matches_its_log(tmp_path):
    path = str(tmp_path / "db")
    with docstore.open(path) as db:
        db.create_collection("pats", indexes=["site"])
    proc = subprocess.Popen([sys.executable, "-c", CRASHER, path], stdout=subprocess.PIPE, text=True)
    acked = -1
    assert proc.stdout is not None
    for line in proc.stdout:
        parts = line.split()
        if len(parts) == 2 and parts[0] == "ack":
            acked = int(parts[1])
        if acked >= 5:
            break
    proc.kill()
    proc.wait()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", kvcore.RecoveryWarning)
        db = docstore.open(path)
    with db:
        eng = _engine(db)
        root = map_root(_map_items(db))
        assert eng.ledger.header(eng.ledger.tx_id).state_root == root == _rebuilt_root(db)
        state, key = db.state(), db.verifier_key()
        for i in range(acked + 1):
            assert docstore.verify(db["pats"].prove_latest(f"w{i}-7").to_json(), state, key)["site"] == "s1"
        assert eng.audit().ok


def test_verified_reads_while_a_writer_commits(tmp_path):
    """A verifying reader of the same process reads (proves freshness, absence, complete
    finds) while a writer commits: every read verifies, none is refused as stale."""
    import threading

    path = str(tmp_path / "db")
    db = docstore.open(path)
    c = db.create_collection("pats", indexes=["site"])
    c.insert_many([{"_id": f"p{i}", "site": "a", "n": 0} for i in range(20)])
    reader = docstore.open(path, readonly=True, verify=True, trusted_state=db.state(), verifier_key=db.verifier_key())
    stop = threading.Event()
    errors: list[BaseException] = []

    def write() -> None:
        try:
            n = 0
            while not stop.is_set() and n < 150:
                n += 1
                c.update(f"p{n % 20}", {"$set": {"n": n}})
                if n % 10 == 0:
                    c.insert({"_id": f"new{n}", "site": "b", "n": n})
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    t = threading.Thread(target=write)
    t.start()
    try:
        rc = reader["pats"]
        for i in range(150):
            assert rc.get(f"p{i % 20}")["site"] == "a"
            assert rc.count({"site": "a"}) == 20
            with pytest.raises(DocumentNotFoundError):
                rc.get("never")
    finally:
        stop.set()
        t.join()
        reader.close()
        db.close()
    assert not errors
