"""Group commit in the document store (docstore.engine.groupcommit): threads committing at the
same time share durable writes, and every transaction is still checked on its own: one unique
value claimed by many gets one winner, a conflict refuses only its transaction, the derived
state and the state map of each group equal what the log gives (audit, reopen)."""

from __future__ import annotations

import threading

import docstore
from docstore.errors import ConflictError, DuplicateKeyError
from tests.docstore.test_ds_transactions import run_threads


def test_concurrent_claims_of_a_unique_value_have_one_winner(db):
    users = db.create_collection("users", indexes=[{"field": "email", "unique": True}, "team"])
    won: list[str] = []
    lost: list[int] = []
    lock = threading.Lock()

    def claim(t: int) -> None:
        for i in range(6):
            try:
                doc_id = users.insert({"email": f"user{i}@x", "team": t})
            except DuplicateKeyError:
                with lock:
                    lost.append(t)
            else:
                with lock:
                    won.append(doc_id)

    run_threads(8, claim)
    assert len(won) == 6 and len(lost) == 8 * 6 - 6
    assert sorted(d["email"] for d in users.find()) == sorted(f"user{i}@x" for i in range(6))
    assert db.audit().ok


def test_a_conflict_in_a_group_refuses_only_its_transaction(db):
    c = db.create_collection("c")
    c.insert({"_id": "hot", "n": 0})
    outcomes: list[str] = []
    lock = threading.Lock()

    def work(t: int) -> None:
        for i in range(10):
            try:
                with db.transaction() as tx:  # read, then write: concurrent ones conflict
                    doc = tx["c"].get("hot")
                    tx["c"].replace("hot", {"n": doc["n"] + 1})
                    tx["c"].insert({"_id": f"t{t}-{i}", "t": t})
            except ConflictError:
                with lock:
                    outcomes.append("conflict")
            else:
                with lock:
                    outcomes.append("ok")

    run_threads(6, work)
    committed = outcomes.count("ok")
    assert committed >= 1
    assert c.get("hot")["n"] == committed  # no lost update
    assert c.count() == 1 + committed  # a refused transaction left nothing behind
    assert db.audit().ok


def test_groups_of_inserts_updates_and_an_index_reopen_to_the_same_state(tmp_path):
    path = str(tmp_path / "db")
    with docstore.open(path) as d:
        c = d.create_collection("visits", indexes=["site"])

        def work(t: int) -> None:
            for i in range(25):
                doc_id = c.insert({"site": f"s{i % 5}", "t": t, "i": i})
                if i % 3 == 0:
                    c.update(doc_id, {"$set": {"site": f"s{(i + 1) % 5}"}})
                if t == 0 and i == 10:
                    c.create_index("t")

        run_threads(6, work)
        state = d.state()
        counts = {s: c.count({"site": s}) for s in ("s0", "s1", "s2", "s3", "s4")}
        assert sum(counts.values()) == 150
        assert c.count({"t": 3}) == 25
        assert d.audit().ok
    with docstore.open(path) as again:  # the derived state on disk is the log's
        assert again.state() == state
        assert {s: again["visits"].count({"site": s}) for s in counts} == counts
        assert again.audit().ok
