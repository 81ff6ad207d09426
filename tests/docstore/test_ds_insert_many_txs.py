"""insert_many returns the ids and the transactions that wrote them (issue 19), embedded and
remote alike: one transaction, or one a group with per_transaction; none for a repeat of an
idempotent write."""

from __future__ import annotations

import docstore


def test_ids_and_transactions(db):
    c = db.create_collection("t")
    got = c.insert_many([{"_id": f"a{i}"} for i in range(5)])
    assert isinstance(got, docstore.InsertedIds) and got == [f"a{i}" for i in range(5)]
    assert got.transactions == [(db.state().tx_id, 5)]
    before = db.state().tx_id
    got = c.insert_many(({"_id": f"b{i}"} for i in range(7)), per_transaction=3)
    assert got == [f"b{i}" for i in range(7)]
    assert got.transactions == [(before + 1, 3), (before + 2, 3), (before + 3, 1)]
    assert [r.tx_id for r in (c.history("b0")[0], c.history("b3")[0], c.history("b6")[0])] == [
        before + 1, before + 2, before + 3]
    first = c.insert_many([{"_id": "k1"}], idempotency_key="key-1")
    again = c.insert_many([{"_id": "k1"}], idempotency_key="key-1")
    assert first == again == ["k1"] and len(first.transactions) == 1 and again.transactions == []
