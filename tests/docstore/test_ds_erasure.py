"""Erasure (issue 18 part 2): collection.erase destroys stored values and salts in every
revision, keeping their hashes; reads show markers, proofs of the rest still verify, proofs of
the erased verify as erased, nothing erased stays readable in any file, and the derived state
(indexes, the state map) follows, also when rebuilt from the log. On both backends."""

from __future__ import annotations

import os
import shutil

import pytest

import docstore
from docstore import ErasureRefusedError, NotFoundError, ReasonRequiredError

SECRET = "Zorblax-7781-secret"
OTHER = "Quenby-4412-other"


def _files(*roots) -> list[str]:
    out = []
    for root in roots:
        for d, _dirs, names in os.walk(root):
            out += [os.path.join(d, n) for n in names]
    return out


def assert_nowhere(place, *needles: bytes) -> None:
    """None of ``needles`` is in any file of the database (and, on PostgreSQL, in any live row
    of its tables: deleted row versions wait for VACUUM, docs/storage.md)."""
    roots = [place.target] if place.backend == "files" else [place.state_dir]
    for name in _files(*roots):
        with open(name, "rb") as f:
            data = f.read()
        for n in needles:
            assert n not in data, f"{n!r} is still in {name}"
    if place.backend == "postgres":
        import psycopg

        with psycopg.connect(place.target, autocommit=True) as conn:
            for n in needles:
                rows = conn.execute("SELECT count(*) FROM kv_tx WHERE position(%s IN payload) > 0", (n,)).fetchone()
                assert rows[0] == 0
                snap = conn.execute(
                    "SELECT count(*) FROM pg_tables WHERE tablename = 'ds_snapshot_chunk'"
                ).fetchone()[0]
                if snap:
                    got = conn.execute(
                        "SELECT count(*) FROM ds_snapshot_chunk WHERE position(%s IN data) > 0", (n,)
                    ).fetchone()
                    assert got[0] == 0


def _stored(coll, doc_id, pointer):
    """(encoded value, salt) of a property as stored (from its proof)."""
    p = coll.prove(doc_id, pointer).properties[0]
    return p.encoded, p.salt


@pytest.fixture
def people(place):
    db = place.open()
    c = db.create_collection("people", indexes=["name", "city"])
    c.insert({"_id": "p1", "name": SECRET, "born": 1970, "city": "Oslo", "tags": ["a", OTHER]})
    c.update("p1", {"$set": {"born": 1971}})
    c.insert({"_id": "p2", "name": "Bob", "born": 1980, "city": "Oslo"})
    yield place, db, c
    db.close()


def test_erase_pointers_reads_markers_everywhere(people):
    place, db, c = people
    enc, salt = _stored(c, "p1", "/name")
    before = db.state()
    keep = c.prove("p1", "/born")  # made before the erasure
    done = c.erase("p1", ["/name"], reason="consent withdrawn", user="dpo")
    assert (done.erased, done.revisions) == (2, 2) and done.tx == db.tx_id
    mark = {"$erased": done.tx}
    assert c.get("p1") == {"_id": "p1", "name": mark, "born": 1971, "city": "Oslo", "tags": ["a", OTHER]}
    assert [r.document["name"] for r in c.history("p1")] == [mark, mark]
    assert c.get("p1", at_tx=before.tx_id - 1)["name"] == mark  # every revision, every time
    assert c.find_one({"name": SECRET}) is None
    assert [d["_id"] for d in c.find({"city": "Oslo"})] == ["p1", "p2"]
    assert c.get("p2")["name"] == "Bob"
    assert c.erasures("p1") == [{
        "tx_id": done.tx, "timestamp_ns": c.erasures("p1")[0]["timestamp_ns"], "user": "dpo",
        "reason": "consent withdrawn", "meta": None, "pointers": ["/name"], "erased": 2,
    }]
    after = db.state()
    assert docstore.verify(keep, before) == 1971  # a proof made before still verifies
    docstore.verify_consistency(before, after, db.prove_consistency(before, after))  # and the ledger extends it
    assert docstore.verify(c.prove("p1", "/name"), after) == mark
    assert docstore.verify(c.prove("p1"), after)["name"] == mark
    assert db.audit().ok
    assert_nowhere(place, enc, salt)


def test_erase_whole_document_and_again(people):
    place, db, c = people
    secrets = [_stored(c, "p1", p) for p in ("/name", "/tags/1")]
    done = c.erase("p1", reason="consent withdrawn")
    doc = c.get("p1")
    assert doc["_id"] == "p1" and doc["name"] == doc["born"] == {"$erased": done.tx}
    assert doc["tags"] == [{"$erased": done.tx}, {"$erased": done.tx}]
    assert c.erase("p1").tx is None  # nothing left
    assert c.erase("p1", ["/name"]).erased == 0
    assert db.audit().ok
    assert_nowhere(place, *[b for pair in secrets for b in pair])


def test_after_erasure_the_document_lives_on(people):
    _place, db, c = people
    done = c.erase("p1", ["/name"])
    c.update("p1", {"$set": {"born": 1972}})
    got = c.get("p1")
    assert got["born"] == 1972 and got["name"] == {"$erased": done.tx}  # carried as data
    c.replace("p1", {"name": "Anon", "city": "Rome"})
    assert c.find_one({"name": "Anon"})["_id"] == "p1"
    assert db.audit().ok


def test_refusals_write_nothing(people):
    _place, db, c = people
    tx = db.tx_id
    with pytest.raises(ErasureRefusedError, match="_id"):
        c.erase("p1", ["/_id"])
    with pytest.raises(NotFoundError, match="/nope"):
        c.erase("p1", ["/nope"])
    with pytest.raises(NotFoundError):
        c.erase("p9")
    with pytest.raises(docstore.InvalidPointerError):
        c.erase("p1", ["name"])
    with pytest.raises(docstore.InvalidPointerError):
        c.erase("p1", "/name")  # a string, not a list
    u = db.create_collection("u", indexes=[])
    u.create_index("email", unique=True)
    u.insert({"_id": "x", "email": "x@example.org", "name": "X"})
    tx = db.tx_id
    with pytest.raises(ErasureRefusedError, match="unique"):
        u.erase("x", ["/email"])
    with pytest.raises(ErasureRefusedError, match="unique"):
        u.erase("x")
    assert u.erase("x", ["/name"]).erased == 1  # the other fields can be
    c.set_require_reason(True)
    tx = db.tx_id
    with pytest.raises(ReasonRequiredError):
        c.erase("p1", ["/name"])
    assert db.tx_id == tx


def test_derived_state_rebuilt_from_the_log(people):
    place, db, c = people
    done = c.erase("p1", ["/name", "/city"])
    want = {d["_id"]: d for d in c.find({})}
    db.close()
    state_root = place.target if place.backend == "files" else place.state_dir
    shutil.rmtree(os.path.join(state_root, "state.lmdb"))
    with pytest.warns(Warning):
        db = place.open()
    c = db["people"]
    assert {d["_id"]: d for d in c.find({})} == want
    assert c.find_one({"city": "Oslo"})["_id"] == "p2"
    assert c.get("p1")["city"] == {"$erased": done.tx}
    assert db.audit().ok
    db.close()


def test_verifying_reads_and_state_proofs(people):
    place, db, c = people
    done = c.erase("p1", ["/name"])
    state = db.state()
    db.close()
    vdb = place.open(verify=True, trusted_state=state)
    try:
        v = vdb["people"]
        assert v.get("p1")["name"] == {"$erased": done.tx}
        assert [d["_id"] for d in v.find({"city": "Oslo"})] == ["p1", "p2"]
        assert v.count({"city": "Oslo"}) == 2
        assert [r.document["name"] for r in v.history("p1")] == [{"$erased": done.tx}] * 2
        assert v.erasures("p1")[0]["tx_id"] == done.tx
        latest = v.prove_latest("p1", "/name", with_header=True)
        assert docstore.verify(latest, state) == {"$erased": done.tx}
        assert docstore.verify(v.prove_latest("p1", with_header=True), state)["name"] == {"$erased": done.tx}
    finally:
        vdb.close()


def test_reader_process_sees_the_erasure(place, tmp_path):
    if place.backend != "files":
        pytest.skip("a reader of a directory database shares its derived state files")
    import time

    db = place.open()
    c = db.create_collection("people", indexes=["name"])
    c.insert({"_id": "p1", "name": SECRET})
    reader = place.open(readonly=True)
    try:
        assert reader["people"].get("p1")["name"] == SECRET  # read (and cached) before
        done = c.erase("p1")
        time.sleep(0.2)  # a reader looks whether the files were replaced every 50 ms
        assert reader["people"].get("p1")["name"] == {"$erased": done.tx}
        assert reader["people"].find_one({"name": SECRET}) is None
        c.insert({"_id": "p2", "name": "Bob", "note": "unindexed secret"})
        assert reader["people"].get("p2")["note"] == "unindexed secret"
        done = c.erase("p2", ["/note"])  # no index row held it: the files are not compacted
        time.sleep(0.2)
        assert reader["people"].get("p2")["note"] == {"$erased": done.tx}
    finally:
        reader.close()
        db.close()


# ------------------------------------------------------------------ a state machine against a model
import tempfile  # noqa: E402

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule  # noqa: E402

IDS = st.sampled_from(["a", "b", "c"])
FIELDS = st.sampled_from(["name", "city", "n"])
VALUES = st.one_of(st.integers(-5, 5), st.text("xyz", min_size=1, max_size=4), st.booleans())


class ErasureMachine(RuleBasedStateMachine):
    """Inserts, updates, deletes and erasures against a model of every revision: reads,
    history, index lookups and proofs agree with it; the audit passes at the end."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = tempfile.mkdtemp()
        self.db = docstore.open(self.dir + "/db")
        self.c = self.db.create_collection("c", indexes=["name"])
        self.history: dict[str, list[dict | None]] = {}  # every revision, as it now reads

    @rule(doc_id=IDS, field=FIELDS, value=VALUES)
    def write(self, doc_id, field, value):
        live = self.history.get(doc_id, [None])[-1]
        if live is None:
            doc = {"_id": doc_id, field: value}
            self.c.insert(dict(doc))
        else:
            doc = self.c.update(doc_id, {"$set": {field: value}})
        self.history.setdefault(doc_id, []).append(doc)

    @rule(doc_id=IDS)
    def delete(self, doc_id):
        if self.history.get(doc_id, [None])[-1] is not None:
            self.c.delete(doc_id)
            self.history[doc_id].append(None)

    @rule(doc_id=IDS, field=FIELDS)
    def erase(self, doc_id, field):
        revs = self.history.get(doc_id)
        if not revs or not any(r is not None and field in r for r in revs):
            return
        done = self.c.erase(doc_id, ["/" + field])
        for r in revs:
            if r is not None and field in r and not (isinstance(r[field], dict) and "$erased" in r[field]):
                assert done.tx is not None
                r[field] = {"$erased": done.tx}

    @invariant()
    def reads_agree(self):
        for doc_id, revs in self.history.items():
            live = revs[-1]
            assert self.c.find_one({"_id": doc_id}) == live
            got = [r.document for r in self.c.history(doc_id)]
            assert got == revs
            if live is not None and isinstance(live.get("name"), (str, int)):
                assert doc_id in [d["_id"] for d in self.c.find({"name": live["name"]})]

    def teardown(self) -> None:
        try:
            state = self.db.state()
            for doc_id, revs in self.history.items():
                if revs[-1] is not None:
                    assert docstore.verify(self.c.prove(doc_id), state) == revs[-1]
            assert self.db.audit().ok
        finally:
            self.db.close()
            shutil.rmtree(self.dir, ignore_errors=True)


TestErasureMachine = ErasureMachine.TestCase
TestErasureMachine.settings = settings(
    max_examples=15, stateful_step_count=15, deadline=None, suppress_health_check=list(HealthCheck)
)


def test_schema_exempts_erased_properties(tmp_path):
    db = docstore.open(tmp_path / "db")
    schema = {"type": "object", "required": ["name"], "additionalProperties": False,
              "properties": {"_id": {}, "name": {"type": "string"}, "n": {"type": "integer"}}}
    c = db.create_collection("s", schema=schema)
    c.insert({"_id": "a", "name": "Ada", "n": 1})
    done = c.erase("a", ["/name"])
    assert c.update("a", {"$inc": {"n": 1}}) == {"_id": "a", "name": {"$erased": done.tx}, "n": 2}
    with pytest.raises(docstore.SchemaError, match="/n"):
        c.update("a", {"$set": {"n": "two"}})  # the rest is still checked
    with pytest.raises(docstore.SchemaError):
        c.insert({"_id": "b", "name": 5})
    db.close()
