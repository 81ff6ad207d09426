"""Property salts: 16 fresh random bytes per property, never handed out twice, not even by a
forked child process (salts are drawn from a per-thread pool of os.urandom bytes)."""

from __future__ import annotations

import os
import threading

from docstore.documents import records
from docstore.documents.flatten import flatten_raw

DOC = {"_id": "a", "consent": True, "dosage": {"mg": 5}, "tags": ["x", "y"], "note": "n" * 100}
PROPS = 6  # properties of DOC


def _salts(count: int) -> list[bytes]:
    out = []
    for i in range(count):
        for _key, value in records.property_entries("c", f"d{i}", 1, *flatten_raw(DOC)):
            out.append(value[: records.SALT_BYTES])
    return out


def test_salts_are_distinct_across_properties_documents_and_pool_refills():
    salts = _salts(2000)  # 10,000 salts: several refills of the 64 KiB pool
    assert len(flatten_raw(DOC)[0]) == PROPS and len(salts) == 2000 * PROPS
    assert all(len(s) == records.SALT_BYTES for s in salts)
    assert len(set(salts)) == len(salts)


def test_threads_draw_distinct_salts():
    results: list[list[bytes]] = [[] for _ in range(4)]

    def work(k: int) -> None:
        results[k] = _salts(300)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [s for r in results for s in r]
    assert len(every) == 4 * 300 * PROPS and len(set(every)) == len(every)


def test_a_forked_child_never_reuses_the_parents_salts():
    _salts(1)  # the parent's pool now holds unused bytes a naive child would hand out too
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        os.write(write, b"".join(_salts(20)))
        os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 65536):
        child += chunk
    os.close(read)
    assert os.waitpid(pid, 0)[1] == 0
    parent = b"".join(_salts(20))
    n = records.SALT_BYTES
    theirs = {child[i : i + n] for i in range(0, len(child), n)}
    mine = {parent[i : i + n] for i in range(0, len(parent), n)}
    assert len(theirs) == len(child) // n == 20 * PROPS and not theirs & mine
