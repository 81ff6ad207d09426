"""The benchmark documents: ~1 KB, ~15 properties, some nested, deterministic."""

from __future__ import annotations

import random
from typing import Any

SITES = [f"site-{i:03d}" for i in range(10_000)]  # ~10 documents per site at 100k documents
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


def make_docs(n: int, seed: int = 42) -> list[dict[str, Any]]:
    rnd = random.Random(seed)
    docs = []
    for i in range(n):
        docs.append(
            {
                "_id": f"p{i:08d}",
                "patient": {"initials": rnd.choice("ABCDEFGH") + rnd.choice("KLMNOP"), "age": rnd.randint(18, 90)},
                "site": SITES[rnd.randrange(max(1, n // 10))],
                "arm": rnd.choice(["placebo", "treatment"]),
                "dosage": {"mg": rnd.choice([2.5, 5.0, 7.5, 10.0]), "freq": "daily"},
                "consent": rnd.random() < 0.95,
                "visits": [{"day": d, "bp": [rnd.randint(100, 140), rnd.randint(60, 90)]} for d in (1, 14)],
                "score": round(rnd.random(), 6),
                "notes": "".join(rnd.choice("abcdefghij klmnop") for _ in range(560)),
            }
        )
    return docs
