"""No library module reads or writes a private attribute of another object (docs/architecture.md):
collections, transactions and proofs go through the engine's methods, the remote client through
its connection's, the ledger's proof builder through its ProofSource."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAMEDTUPLE_API = {"_replace", "_asdict", "_fields", "_make"}  # public despite the underscore


def _reaches(package: str) -> list[str]:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):  # generated
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Attribute):
                continue
            name = node.attr
            if not name.startswith("_") or name.startswith("__") or name in NAMEDTUPLE_API:
                continue
            if isinstance(node.value, ast.Name) and node.value.id in ("self", "cls"):
                continue
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)}")
    return found


def test_kvcore_reaches_no_private_attribute_of_another_object():
    assert _reaches("kvcore") == []


def test_docstore_reaches_no_private_attribute_of_another_object():
    assert _reaches("docstore") == []
