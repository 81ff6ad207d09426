"""Load: 16 client threads writing and reading through one server for a bounded time."""

from __future__ import annotations

import os
import random
import threading
import time

import docstore
from docstore.proofs.trust import read_state_file
from remote_testlib import ServerProcess

THREADS = 16
SECONDS = float(os.environ.get("IMMUDOC_LOAD_SECONDS", "4"))


def test_sixteen_threads_through_one_server(tmp_path, record_property):
    st = tmp_path / "trusted.json"
    with ServerProcess(tmp_path / "db") as s:
        setup = docstore.connect(s.target, state_file=st, trust_on_first_use=True)
        setup.create_collection("load", indexes=["t"])
        setup.create_collection("counters")
        setup["counters"].insert_many([{"_id": f"t{t}", "n": 0} for t in range(THREADS)])
        setup.close()

        shared = docstore.connect(s.target, state_file=st, timeout=60)  # one verifying client for all
        acked: list[list[str]] = [[] for _ in range(THREADS)]
        bumps = [0] * THREADS
        errors: list[tuple[int, BaseException]] = []
        ops = [0] * THREADS
        deadline = time.monotonic() + SECONDS

        def worker(t: int) -> None:
            rnd = random.Random(t)
            c = shared["load"]
            i = 0
            try:
                while time.monotonic() < deadline:
                    r = rnd.random()
                    if r < 0.35:
                        acked[t].append(c.insert({"_id": f"t{t}-{i}", "t": t, "i": i}))
                    elif r < 0.45:
                        ids = c.insert_many([{"_id": f"t{t}-{i}-{j}", "t": t, "i": i} for j in range(25)])
                        acked[t].extend(ids)
                    elif r < 0.70 and acked[t]:
                        doc_id = rnd.choice(acked[t])
                        assert c.get(doc_id)["_id"] == doc_id  # verified against the trusted state
                    elif r < 0.80:
                        n = sum(1 for _ in c.find({"t": t}))
                        assert n == len(acked[t]), (n, len(acked[t]))
                    elif r < 0.85:
                        assert c.count({"t": t}, verify=False) == len(acked[t])
                    elif r < 0.90 and acked[t]:
                        mine = list(c.find({"t": t, "i": {"$lt": 3}}, verify=True))
                        assert all(d["t"] == t for d in mine)
                    else:
                        with shared.transaction() as tx:  # optimistic; only this thread writes t{t}
                            cur = tx["counters"].get(f"t{t}")
                            tx["counters"].update(f"t{t}", {"$set": {"n": cur["n"] + 1}})
                        bumps[t] += 1
                    ops[t] += 1
                    i += 1
            except BaseException as e:  # noqa: BLE001
                errors.append((t, e))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
        t0 = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join(SECONDS + 120)
        elapsed = time.perf_counter() - t0
        assert not any(th.is_alive() for th in threads)
        assert not errors, errors[:3]

        all_ids = [i for a in acked for i in a]
        assert len(all_ids) == len(set(all_ids))  # nothing duplicated
        c = shared["load"]
        stored = [d["_id"] for d in c.find({}, projection={"_id": 1})]
        assert len(stored) == len(set(stored)) == len(all_ids)  # nothing lost, nothing extra
        assert set(stored) == set(all_ids)
        for t in range(THREADS):
            assert c.count({"t": t}, verify=False) == len(acked[t])
            assert shared["counters"].get(f"t{t}")["n"] == bumps[t]
        report = shared.audit()
        assert report.ok, report.problems
        assert read_state_file(st) == shared.trusted_state
        assert shared.state() == shared.trusted_state
        shared.close()
    assert s.proc.returncode == 0
    total = sum(ops)
    record_property("load_ops", total)
    print(f"\nload: {THREADS} threads, {total} operations in {elapsed:.1f} s ({total / elapsed:,.0f} ops/s), {len(all_ids)} documents")
