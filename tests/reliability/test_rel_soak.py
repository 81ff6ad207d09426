"""A bounded soak: continuous writes with periodic proofs, reads and audits, then a phase of
reads, proofs and audits alone; the memory of the process (RSS, from /proc/self/status) must
grow no faster than the data it writes, and not at all while it writes nothing.

The number of live documents stays constant (every insert deletes the oldest), so what may grow
is the in-memory key index (a few dozen bytes per ledger entry written: docs/storage.md) and
bounded caches. The long variant runs for minutes (``--runslow``; IMMUDOC_SOAK_SECONDS sets how
long); the default one for seconds.
"""

from __future__ import annotations

import json
import os

import pytest

from rel_testlib import run_script

SOAK = r'''
import gc, json, os, random, sys, time
import docstore

path, seconds = sys.argv[1], float(sys.argv[2])


def rss():
    # the process's own memory: anonymous pages (the derived state and the key index are
    # memory-mapped files, whose pages are the operating system's page cache, shared and
    # reclaimable, and counted in VmRSS as RssFile)
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024


db = docstore.open(path)
docs = db.create_collection("docs", schema={"type": "object", "required": ["grp"]},
                            indexes=["grp", {"field": "key", "unique": True}])
live = ["d%d" % i for i in range(300)]
docs.insert_many([{"_id": i, "grp": k % 10, "key": i, "n": 0, "body": "x" * 200} for k, i in enumerate(live)])
trusted = db.state()
key = [db.verifier_key()]
log = os.path.join(path, "ledger", "txlog")
rnd = random.Random(1)
out = {"write": [], "read": [], "ops": {"tx": 0, "proofs": 0, "audits": 0, "finds": 0}}
next_id = 300


def prove_some(k):
    for _ in range(k):
        doc_id = rnd.choice(live)
        pointer = "/n" if rnd.random() < 0.5 else None
        proof = docs.prove(doc_id, pointer, known_state=trusted)
        docstore.verify(docstore.proofs.load(proof.to_json()), trusted, key)
        out["ops"]["proofs"] += 1


def read_some():
    list(docs.find({"grp": rnd.randrange(10)}, sort=[("n", -1)], limit=20))
    docs.count({"n": {"$gte": 5}})
    out["ops"]["finds"] += 1


def sample(phase):
    gc.collect()
    out[phase].append([rss(), os.path.getsize(log)])


def run(phase, until, writes):
    global next_id
    last_sample = last_audit = 0.0
    while time.monotonic() < until:
        if writes:
            with db.transaction() as tx:  # three updates, one insert, one delete: one transaction
                for doc_id in rnd.sample(live, 3):
                    tx["docs"].update(doc_id, {"$inc": {"n": 1}, "$set": {"body": "y" * rnd.randint(50, 300)}})
                new = "d%d" % next_id
                next_id += 1
                tx["docs"].insert({"_id": new, "grp": next_id % 10, "key": new, "n": 0, "body": "z" * 100})
                tx["docs"].delete(live.pop(0))
                live.append(new)
            out["ops"]["tx"] += 1
            if out["ops"]["tx"] % 10 == 0:
                prove_some(1)
                read_some()
        else:
            prove_some(2)
            read_some()
        now = time.monotonic()
        if now - last_audit > max(2.0, seconds / 15):
            report = db.audit()
            assert report.ok, report.problems
            out["ops"]["audits"] += 1
            last_audit = now
        if now - last_sample > max(0.2, seconds / 100):
            sample(phase)
            last_sample = now
    sample(phase)


start = time.monotonic()
run("write", start + seconds * 0.6, True)
run("read", start + seconds, False)
out["tx_id"] = db.tx_id
db.close()
print(json.dumps(out))
'''

MB = 1024 * 1024


def _soak(tmp_path, seconds: float) -> dict:
    done = run_script(SOAK, str(tmp_path / "db"), str(seconds), timeout=seconds * 3 + 120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _check(out: dict, write_slack_mb: float, read_slack_mb: float) -> None:
    write, read = out["write"], out["read"]
    assert len(write) >= 3 and len(read) >= 3, out["ops"]
    assert out["ops"]["audits"] >= 2 and out["ops"]["proofs"] > 0 and out["ops"]["tx"] > 0
    # writes: after a warm-up of a fifth of the phase, memory grows no faster than twice the
    # ledger (measured: about 1.6x, the in-memory key index of every revision plus what an audit
    # rebuilds for a moment), plus slack for the allocator and the bounded caches
    warm = write[len(write) // 5]
    end = write[-1]
    grown, written = end[0] - warm[0], end[1] - warm[1]
    assert written > 0
    assert grown <= 2.0 * written + write_slack_mb * MB, (
        f"RSS grew {grown / MB:.1f} MB while the ledger grew {written / MB:.1f} MB"
    )
    # reads, proofs and audits alone: flat
    warm = read[len(read) // 4]
    grown = max(r[0] for r in read[len(read) // 4 :]) - warm[0]
    assert read[-1][1] == read[0][1]  # nothing was written
    assert grown <= read_slack_mb * MB, f"RSS grew {grown / MB:.1f} MB while nothing was written"


def test_short_soak_memory_stays_bounded(tmp_path):
    # slack: the allocator keeps a constant ~5 MB more since property entries are built when a
    # write is buffered (measured: +5.5 MB after both 8 s and 40 s of writes, the rate unchanged)
    _check(_soak(tmp_path, 8.0), write_slack_mb=17, read_slack_mb=8)


@pytest.mark.slow
def test_soak_for_minutes(tmp_path):
    seconds = float(os.environ.get("IMMUDOC_SOAK_SECONDS", "180"))
    out = _soak(tmp_path, seconds)
    _check(out, write_slack_mb=64, read_slack_mb=16)
    assert out["ops"]["tx"] > 1000
