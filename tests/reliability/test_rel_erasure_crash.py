"""Erasures interrupted by SIGKILL at random points (issue 18): on reopen every erasure is whole
(committed and completed: no listed value readable) or absent (nothing destroyed), neighbours are
intact, the audit passes, and an erased value is in no file of the database. On both backends."""

from __future__ import annotations

import os
import random
import signal
import time
import warnings

from rel_testlib import spawn_script, stop

SECRET = "Secret-{doc:03d}-{rev:03d}-xq"
DOCS_PER_ROUND = 6
REVISIONS = 25

CHILD = r"""
import sys, warnings
warnings.simplefilter("ignore")
import docstore
target, state_dir, first, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
kw = {"state_dir": state_dir} if state_dir != "-" else {}
db = docstore.open(target, **kw)
c = db["people"]
print("open", flush=True)
for i in range(first, first + n):
    print("intent", i, flush=True)
    c.erase(f"d{i:03d}", ["/name", "/notes/0"], reason="consent withdrawn")
    print("ack", i, flush=True)
"""


def _secret(doc: int, rev: int) -> str:
    return SECRET.format(doc=doc, rev=rev)


def _open(place):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a completed erasure or a rebuilt derived state is said so
        return place.open()


def _files_with(place, needles: list[bytes]) -> list[str]:
    roots = [place.target] if place.backend == "files" else [place.state_dir]
    found = []
    for root in roots:
        for d, _dirs, names in os.walk(root):
            for n in names:
                with open(os.path.join(d, n), "rb") as f:
                    data = f.read()
                found += [f"{os.path.join(d, n)}: {s.decode()}" for s in needles if s in data][:3]
    return found


def test_erasure_killed_at_random_points(place):
    rounds = 8
    total = rounds * DOCS_PER_ROUND
    db = place.open()
    c = db.create_collection("people", indexes=["name"])
    for i in range(total):
        c.insert({"_id": f"d{i:03d}", "name": _secret(i, 0), "notes": [_secret(i, 0), "x"], "age": i})
        for r in range(1, REVISIONS):
            c.update(f"d{i:03d}", {"$set": {"name": _secret(i, r), "notes": [_secret(i, r), "x"]}})
    db.close()
    rnd = random.Random(20261206)
    state_dir = str(place.state_dir) if place.state_dir else "-"
    erased: set[int] = set()
    stats = {"whole": 0, "absent": 0}
    for k in range(rounds):
        first = k * DOCS_PER_ROUND
        proc = spawn_script(CHILD, str(place.target), state_dir, str(first), str(DOCS_PER_ROUND))
        acked: list[int] = []
        intent = None
        try:
            assert proc.stdout.readline().strip() == "open", proc.stderr.read()
            want = rnd.randrange(0, 3)
            while len(acked) < want:
                word, i = proc.stdout.readline().split()
                if word == "ack":
                    acked.append(int(i))
            time.sleep(rnd.random() * 0.05)
            os.kill(proc.pid, signal.SIGKILL)
            for line in proc.stdout:
                word, i = line.split()
                if word == "intent":
                    intent = int(i)
                else:
                    acked.append(int(i))
                    intent = None
        finally:
            stop(proc)
        db = _open(place)
        try:
            c = db["people"]
            for i in range(first, first + DOCS_PER_ROUND):
                doc = c.get(f"d{i:03d}")
                marks = [doc["name"], doc["notes"][0]]
                gone = all(isinstance(m, dict) and set(m) == {"$erased"} for m in marks)
                whole = [r.document["name"] for r in c.history(f"d{i:03d}")]
                if i in acked:
                    assert gone, (i, doc)
                if gone:
                    assert all(isinstance(n, dict) for n in whole), "every revision erased"
                    assert doc["notes"][1] == "x" and doc["age"] == i  # neighbours intact
                    erased.add(i)
                    stats["whole"] += 1
                else:
                    assert i not in acked and (intent is None or i >= intent)
                    assert whole == [_secret(i, r) for r in range(REVISIONS)]  # nothing destroyed
                    stats["absent"] += 1
            assert c.find_one({"name": _secret(first, REVISIONS - 1)}) in (None, c.get(f"d{first:03d}"))
            report = db.audit()
            assert report.ok, report.problems
        finally:
            db.close()
        leftover = _files_with(place, [_secret(i, r).encode() for i in erased for r in range(REVISIONS)])
        assert not leftover, leftover
    assert stats["whole"] and stats["absent"], stats
