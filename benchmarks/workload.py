"""The benchmark data: deterministic documents (~1 KB, 16 properties, some nested) and KV pairs.

Documents are produced in batches so that a million of them never sit in memory at once; the
same ``(n, seed)`` always gives the same documents. About 10 documents share each ``site``
(the indexed equality field) and ``score`` is uniform in [0, 1) (the indexed range field).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["patient", "site", "arm", "dosage", "consent"],
    "properties": {
        "patient": {
            "type": "object",
            "properties": {"initials": {"type": "string"}, "age": {"type": "integer", "minimum": 0}},
        },
        "site": {"type": "string"},
        "arm": {"enum": ["placebo", "treatment"]},
        "dosage": {"type": "object", "properties": {"mg": {"type": "number"}}},
        "consent": {"type": "boolean"},
        "visits": {"type": "array"},
    },
}
INDEXES = ["site", "score"]  # equality finds use site, range finds use score
NOTES_LEN = 560
_POOL: list[str] = []


def _pool() -> str:
    if not _POOL:
        rnd = random.Random(0)
        _POOL.append("".join(rnd.choice("abcdefghij klmnop") for _ in range(1 << 16)))
    return _POOL[0]


def doc_id(i: int) -> str:
    return f"p{i:08d}"


def iter_batches(n: int, batch: int = 1000, seed: int = 42) -> Iterator[list[dict[str, Any]]]:
    """Documents ``0 .. n-1`` in lists of ``batch``."""
    rnd = random.Random(seed)
    pool = _pool()
    span = len(pool) - NOTES_LEN
    sites = max(1, n // 10)
    out: list[dict[str, Any]] = []
    for i in range(n):
        off = rnd.randrange(span)
        out.append(
            {
                "_id": doc_id(i),
                "patient": {"initials": rnd.choice("ABCDEFGH") + rnd.choice("KLMNOP"), "age": rnd.randint(18, 90)},
                "site": f"site-{rnd.randrange(sites):06d}",
                "arm": rnd.choice(("placebo", "treatment")),
                "dosage": {"mg": rnd.choice((2.5, 5.0, 7.5, 10.0)), "freq": "daily"},
                "consent": rnd.random() < 0.95,
                "visits": [{"day": d, "bp": [rnd.randint(100, 140), rnd.randint(60, 90)]} for d in (1, 14)],
                "score": round(rnd.random(), 6),
                "notes": pool[off : off + NOTES_LEN],
            }
        )
        if len(out) == batch:
            yield out
            out = []
    if out:
        yield out


def make_docs(n: int, seed: int = 42) -> list[dict[str, Any]]:
    """All ``n`` documents as one list (for small ``n``)."""
    return [d for b in iter_batches(n, 1000, seed) for d in b]


def large_doc(doc_id: str, props: int = 1000) -> dict[str, Any]:
    """A document of about ``props`` scalar properties (~30 bytes of JSON each)."""
    rnd = random.Random(doc_id)
    return {
        "_id": doc_id,
        "status": "open",
        "readings": [{"t": i, "v": round(rnd.random() * 100, 3)} for i in range((props - 2) // 2)],
    }


def kv_batches(n: int, batch: int = 1000, seed: int = 7) -> Iterator[list[tuple[bytes, bytes]]]:
    """``n`` random 32-byte keys with random 32-byte values, in lists of ``batch``."""
    rnd = random.Random(seed)
    for start in range(0, n, batch):
        yield [(rnd.randbytes(32), rnd.randbytes(32)) for _ in range(min(batch, n - start))]
