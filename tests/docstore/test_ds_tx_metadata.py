"""Who, when and why on every transaction (issue 18, part 1): ``user``, ``reason`` and ``meta``
committed with a write's transaction as its entry 0, shown by ``history()``, proven for a
verifying reader; remotely the user is the principal the server authenticated."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import orjson
import pytest

import docstore
from docstore import QueryError, VerificationError
from docstore.documents import txmeta

REPO = Path(__file__).resolve().parents[2]


def _user(db) -> str | None:
    """The user an embedded database records as given; a remote one refuses user=."""
    return None if not db.local else "ann"


def test_every_write_carries_its_metadata_into_history(db):
    c = db.create_collection("visits")
    user = _user(db)
    c.insert({"_id": "v1", "mg": 5}, user=user, reason="enrolment", meta={"meaning": "authorship"})
    c.update("v1", {"$set": {"mg": 6}}, user=user, reason="dose corrected", meta={"meaning": "correction"})
    c.replace("v1", {"mg": 7}, reason="re-entered")
    c.update("v1", {"$set": {"mg": 8}})  # none
    with db.transaction(user=user, reason="batch of two") as tx:
        tx["visits"].update("v1", {"$set": {"mg": 9}})
        tx["visits"].insert({"_id": "v2"})
    db.run_transaction(lambda tx: tx["visits"].delete("v2"), reason="withdrawn")
    c.insert_many([{"_id": "v3"}, {"_id": "v4"}], reason="import", per_transaction=1)
    c.delete("v1", user=user, reason="duplicate", meta={"ticket": 42, "approved": True})
    got = [(r.revision, r.user, r.reason, r.meta) for r in c.history("v1")]
    assert got == [
        (1, user, "enrolment", {"meaning": "authorship"}),
        (2, user, "dose corrected", {"meaning": "correction"}),
        (3, None, "re-entered", None),
        (4, None, None, None),
        (5, user, "batch of two", None),
        (6, user, "duplicate", {"ticket": 42, "approved": True}),
    ]
    assert [(r.reason, r.deleted) for r in c.history("v2")] == [("batch of two", False), ("withdrawn", True)]
    assert [r.reason for r in c.history("v3")] == [r.reason for r in c.history("v4")] == ["import"]
    assert c.history("v1")[0].to_dict()["reason"] == "enrolment"


@pytest.mark.parametrize(
    "kw,words",
    [
        ({"reason": ""}, "reason is a text"),
        ({"reason": "   "}, "reason is a text"),
        ({"reason": 5}, "reason is a text"),
        ({"reason": "x" * 4097}, "reason is a text"),
        ({"meta": ["not", "an", "object"]}, "meta is a JSON object"),
        ({"meta": {1: "x"}}, "meta is a JSON object"),
        ({"meta": {"s": {1, 2}}}, "JSON values only"),
        ({"meta": {"big": "x" * 20000}}, "at most 16384 bytes"),
    ],
)
def test_bad_metadata_is_a_query_error_and_writes_nothing(db, kw, words):
    c = db.create_collection("c")
    before = db.state()
    for write in (
        lambda: c.insert({"_id": "a"}, **kw),
        lambda: c.insert_many([{"_id": "a"}], per_transaction=1, **kw),
        lambda: c.update("zz", {"$set": {"n": 1}}, **kw),
        lambda: c.delete("zz", **kw),
        lambda: db.transaction(**kw),
    ):
        with pytest.raises(QueryError, match=words):
            write()
    assert db.state() == before and "a" not in {d["_id"] for d in c.find()}


def test_a_user_is_given_embedded_and_taken_from_the_connection_remotely(db):
    c = db.create_collection("c")
    before = db.state()
    if db.local:
        with pytest.raises(QueryError, match="user is a name"):
            c.insert({"_id": "a"}, user="")
        c.insert({"_id": "a"}, user="dr. who")
        assert c.history("a")[0].user == "dr. who"
    else:
        for write in (lambda: c.insert({"_id": "a"}, user="mallory"), lambda: db.transaction(user="mallory"),
                      lambda: c.delete("a", user="mallory")):
            with pytest.raises(QueryError, match="principal"):
                write()
        assert db.state() == before


def test_metadata_alone_commits_nothing(db):
    db.create_collection("c")
    before = db.state()
    with db.transaction(reason="nothing to say") as tx:
        tx["c"].find_one({})
    assert db.state() == before


@pytest.mark.embedded
def test_the_entry_is_entry_0_in_canonical_json_and_the_audit_passes(db):
    c = db.create_collection("c", indexes=["n"])
    c.insert({"_id": "a", "n": 1}, user="ann", reason="r", meta={"z": 1, "a": [True, None]})
    tx_id = db.tx_id
    first = db.ledger.entries(tx_id, 0, 1)[0]
    assert first.key == b"m\x00" == txmeta.META_KEY
    assert first.value == b'{"meta":{"a":[true,null],"z":1},"reason":"r","user":"ann"}'
    assert first.value == orjson.dumps(orjson.loads(first.value), option=orjson.OPT_SORT_KEYS)
    assert txmeta.of_tx(db.ledger, tx_id - 1) is None  # the collection's creation carries none
    assert db.audit().ok


def test_a_verifying_reader_proves_the_metadata_and_refuses_a_changed_one(place, tmp_path):
    with place.open() as db:
        c = db.create_collection("visits")
        c.insert({"_id": "v1", "mg": 5}, user="ann", reason="enrolment")
        c.update("v1", {"$set": {"mg": 6}}, user="bob", reason="typo fixed")
        c.update("v1", {"$set": {"mg": 7}})
        trusted, key = db.state(), db.verifier_key()
    with place.open(readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as v:
        assert [(r.user, r.reason) for r in v["visits"].history("v1")] == [
            ("ann", "enrolment"), ("bob", "typo fixed"), (None, None)
        ]
    # the reason rewritten where the log keeps it (its checksum fixed): served as stored by a
    # plain reader, refused by a verifying one
    place.rewrite_bytes(b'"reason":"typo fixed"', b'"reason":"typo FIXED"')
    with place.open(readonly=True) as plain:
        assert plain["visits"].history("v1")[1].reason == "typo FIXED"
    with place.open(readonly=True, verify=True, trusted_state=trusted, verifier_key=key) as v:
        with pytest.raises(VerificationError):  # (the proof of the revision, or of the metadata)
            v["visits"].history("v1")


def test_the_server_records_the_tokens_name(tmp_path):
    sys.path.append(str(REPO / "tests" / "remote"))
    from remote_testlib import ServerProcess

    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps([
        {"token": "t-ann", "role": "admin", "name": "Ann Smith (investigator)"},
        {"token": "t-anon", "role": "write"},
    ]))
    with ServerProcess(tmp_path / "db", "--tokens-file", str(tokens)) as srv:
        with docstore.connect(srv.target, verify=False, token="t-ann") as ann:
            ann.create_collection("c").insert({"_id": "a"}, reason="first visit")
            with ann.transaction(reason="second") as tx:
                tx["c"].update("a", {"$set": {"n": 1}})
        with docstore.connect(srv.target, verify=False, token="t-anon") as anon:
            anon["c"].update("a", {"$set": {"n": 2}}, meta={"source": "device"})
            hist = anon["c"].history("a")
    assert [(r.user, r.reason, r.meta) for r in hist] == [
        ("Ann Smith (investigator)", "first visit", None),
        ("Ann Smith (investigator)", "second", None),
        (None, None, {"source": "device"}),
    ]


def _stamps(db, coll: str, doc_id: str) -> list[int]:
    return [r.timestamp_ns for r in db[coll].history(doc_id)]


def test_the_log_lists_who_when_and_why_newest_first(db):
    c = db.create_collection("visits")
    user = _user(db)
    c.insert({"_id": "v1", "mg": 5}, user=user, reason="enrolment")
    c.update("v1", {"$set": {"mg": 6}}, reason="dose corrected", meta={"meaning": "correction"})
    c.update("v1", {"$set": {"mg": 7}})
    log = db.log()
    assert [r["tx_id"] for r in log] == list(range(db.tx_id, 0, -1))
    assert [(r["user"], r["reason"], r["meta"]) for r in log[:3]] == [
        (None, None, None), (None, "dose corrected", {"meaning": "correction"}), (user, "enrolment", None)
    ]
    assert [r["timestamp_ns"] for r in log[:3]] == _stamps(db, "visits", "v1")[::-1]
    assert all(r["entries"] >= 1 for r in log)
    assert db.log(limit=1) == log[:1] and db.log(before_tx=log[0]["tx_id"], limit=2) == log[1:3]
    t = _stamps(db, "visits", "v1")
    assert [r["tx_id"] for r in db.log(since=t[1], until=t[1])] == [log[1]["tx_id"]]
    assert [r["tx_id"] for r in db.log(since=t[1])] == [log[0]["tx_id"], log[1]["tx_id"]]
    if user is not None:
        assert [r["reason"] for r in db.log(user=user)] == ["enrolment"]
    assert db.log(user="nobody") == []
    for bad in ({"limit": 0}, {"limit": 10_001}, {"before_tx": 0}, {"user": ""},
                {"since": "yesterday"}, {"until": "2026-12-06T10:00:00"}):
        with pytest.raises(QueryError):
            db.log(**bad)


def test_time_travel_by_time(db):
    import datetime as dt

    c = db.create_collection("c")
    c.insert({"_id": "a", "v": 1})
    c.update("a", {"$set": {"v": 2}})
    t1, t2 = _stamps(db, "c", "a")
    assert db.tx_at_time(t1) == db.tx_at_time(t2 - 1) == db.tx_id - 1 and db.tx_at_time(t2) == db.tx_id
    up = -(-t1 // 1000)  # t1 rounded up to a microsecond: a datetime holds no finer
    as_dt = dt.datetime.fromtimestamp(up // 10**6, dt.timezone.utc) + dt.timedelta(microseconds=up % 10**6)
    for when in (t1, as_dt, as_dt.isoformat(), as_dt.isoformat().replace("+00:00", "Z")):
        if when is not t1 and up * 1000 >= t2:  # two commits within one microsecond
            continue
        assert c.get("a", at_time=when) == {"_id": "a", "v": 1}
        assert list(c.find({"v": 1}, at_time=when)) == [{"_id": "a", "v": 1}]
        assert c.find_one({}, at_time=when) == {"_id": "a", "v": 1}
    assert c.get("a", at_time=t2 + 10**12) == {"_id": "a", "v": 2}
    assert db.tx_at_time(0) == 0
    with pytest.raises(docstore.DocumentNotFoundError):
        c.get("a", at_time=t1 - 1)
    for bad, words in ((dt.datetime(2026, 1, 1), "timezone"), ("not a time", "ISO 8601"), (-5, "before 1970"),
                       (1.5, "datetime with a timezone"), ("2026-12-06T10:00:00", "timezone")):
        with pytest.raises(QueryError, match=words):
            c.get("a", at_time=bad)
    with pytest.raises(QueryError, match="not both"):
        c.get("a", at_tx=1, at_time=t1)


def test_a_collection_may_require_a_reason_for_every_change(db):
    c = db.create_collection("visits", require_reason=True)
    assert c.info()["require_reason"] is True
    c.insert({"_id": "v1", "mg": 5})  # a new document needs none
    c.insert_many([{"_id": "v2"}, {"_id": "v3"}])
    before = db.state()
    for change in (
        lambda: c.update("v1", {"$set": {"mg": 6}}),
        lambda: c.replace("v1", {"mg": 6}),
        lambda: c.delete("v1"),
        lambda: c.update("v1", {"$set": {"mg": 6}}, meta={"why": "not a reason"}),
        lambda: db.run_transaction(lambda tx: tx["visits"].delete("v2")),
    ):
        with pytest.raises(docstore.ReasonRequiredError, match="requires a reason"):
            change()
    with pytest.raises(docstore.ReasonRequiredError):
        with db.transaction() as tx:
            tx["visits"].insert({"_id": "v4"})
            tx["visits"].update("v3", {"$set": {"x": 1}})  # one change without a reason: nothing committed
    assert db.state() == before and "v4" not in {d["_id"] for d in c.find()}
    c.update("v1", {"$set": {"mg": 6}}, reason="dose corrected")
    with db.transaction(reason="two withdrawn") as tx:
        tx["visits"].delete("v2")
        tx["visits"].delete("v3")
    assert [r.reason for r in c.history("v2")] == [None, "two withdrawn"]
    other = db.create_collection("free")
    other.insert({"_id": "x"})
    other.update("x", {"$set": {"n": 1}})  # other collections are not bound
    c.set_require_reason(False)
    assert c.info()["require_reason"] is False
    c.delete("v1")
    c.set_require_reason()
    c.insert({"_id": "v1"})  # a new document (the id's last revision was a deletion)
    with pytest.raises(docstore.ReasonRequiredError):
        c.delete("v1")
    with pytest.raises(QueryError):
        db.create_collection("bad", require_reason="yes")


# ------------------------------------------------------------- a proof of who and why (bundle version 4)
def _b64_edit(text: str, fn) -> str:
    import base64

    return base64.b64encode(fn(base64.b64decode(text))).decode()


def test_a_proof_of_a_revision_proves_who_and_why(db):
    import base64

    c = db.create_collection("visits")
    user = _user(db)
    c.insert({"_id": "v1", "mg": 5}, user=user, reason="enrolment", meta={"meaning": "authorship"})
    c.update("v1", {"$set": {"mg": 6}})
    other = db.create_collection("other")
    other.insert({"_id": "o"}, reason="unrelated")
    state = db.state()
    first = c.history("v1")[0].tx_id
    expected = {"reason": "enrolment", "meta": {"meaning": "authorship"}} | ({"user": user} if user else {})
    for proof in (c.prove("v1", at_tx=first, with_meta=True), c.prove("v1", "/mg", at_tx=first, with_meta=True)):
        d = proof.to_dict()
        assert d["version"] == 4 and set(d["tx_meta"]) == {"key", "value", "deleted", "path"}
        claim, meta = docstore.verify(proof.to_json(), state, with_meta=True)
        assert meta == expected and claim in ({"_id": "v1", "mg": 5}, 5)
        assert docstore.verify(proof, state) == claim  # without asking: the claim alone
    plain = c.prove("v1", with_meta=True)  # the second revision: a transaction without metadata
    assert docstore.verify(plain, state, with_meta=True) == ({"_id": "v1", "mg": 6}, None)
    assert c.prove("v1").to_dict()["version"] == 2  # unless asked, the bundle stays version 2
    with pytest.raises(VerificationError, match="carries no transaction metadata"):
        docstore.verify(c.prove("v1"), state, with_meta=True)

    d = c.prove("v1", at_tx=first, with_meta=True).to_dict()
    borrowed = other.prove("o", with_meta=True).to_dict()["tx_meta"]  # another transaction's entry 0
    edits = {
        "value": lambda b: b["tx_meta"].update(value=_b64_edit(b["tx_meta"]["value"], lambda v: v.replace(b"enrolment", b"enrolled!"))),
        "key": lambda b: b["tx_meta"].update(key=base64.b64encode(b"m\x01").decode()),
        "deleted": lambda b: b["tx_meta"].update(deleted=True),
        "path": lambda b: b["tx_meta"].update(path=b["tx_meta"]["path"][:-1]),
        "path hash": lambda b: b["tx_meta"]["path"].__setitem__(0, _b64_edit(b["tx_meta"]["path"][0], lambda h: bytes([h[0] ^ 1]) + h[1:])),
        "borrowed": lambda b: b.update(tx_meta=borrowed),
        "missing": lambda b: b.pop("tx_meta"),
        "extra field": lambda b: b["tx_meta"].update(index=0),
        "on version 2": lambda b: b.update(version=2),
    }
    import copy
    import json

    for name, edit in edits.items():
        forged = copy.deepcopy(d)
        edit(forged)
        with pytest.raises(VerificationError):
            docstore.verify(json.dumps(forged), state, with_meta=True)
            raise AssertionError(name)
