"""kvcore's modules form a layered graph: no import cycle, no import inside a function to dodge
one, the limits a leaf, and the prover reading its ledger only through a ProofSource."""

from __future__ import annotations

import ast
from pathlib import Path

import kvcore
import kvcore.ledger
import kvcore.limits

ROOT = Path(kvcore.__file__).resolve().parent.parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in (ROOT / "kvcore").rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str) -> tuple[set[str], set[str], list[tuple[str, int]]]:
    """(kvcore modules ``name`` imports at run time, those it imports for type checking only,
    kvcore imports made inside functions as (module, line))."""
    runtime: set[str] = set()
    typing_only: set[str] = set()
    lazy: list[tuple[str, int]] = []

    def targets(node: ast.Import | ast.ImportFrom) -> list[str]:
        if isinstance(node, ast.Import):
            found = [alias.name for alias in node.names]
        else:
            assert not node.level, f"{name}: a relative import"
            base = node.module or ""
            found = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        return [t for t in found if t == "kvcore" or t.startswith("kvcore.")]

    def visit(node: ast.AST, in_function: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                for target in targets(child):
                    if in_function:
                        lazy.append((target, child.lineno))
                    (typing_only if type_checking else runtime).add(target)
            guarded = isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test)
            nested = isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            visit(child, in_function or nested, type_checking or guarded)

    visit(ast.parse(MODULES[name].read_text(encoding="utf-8")), False, False)
    return runtime - {name}, typing_only - runtime - {name}, lazy


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` (a package importing its own submodules excepted), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def walk(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if nxt.startswith(node + "."):  # kvcore -> kvcore.x: the package's own re-exports
                continue
            if state.get(nxt) == 1:
                return path[path.index(nxt) :] + [nxt]
            if nxt not in state:
                found = walk(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = walk(node)
            if found:
                return found
    return None


def test_no_kvcore_module_imports_kvcore_inside_a_function():
    lazy = {name: _imports(name)[2] for name in MODULES}
    assert {name: found for name, found in lazy.items() if found} == {}


def test_kvcore_has_no_import_cycle():
    graph = {name: {t for t in _imports(name)[0] if t in MODULES} for name in MODULES}
    assert _cycle(graph) is None


def test_limits_is_a_leaf_and_the_prover_knows_no_ledger():
    assert _imports("kvcore.limits")[:2] == ({"kvcore.errors"}, set())
    for name in ("kvcore.proving", "kvcore.proofsource"):
        runtime, typing_only, _ = _imports(name)
        assert "kvcore.ledger" not in runtime | typing_only, name


def test_the_limits_are_the_same_objects_everywhere_they_are_exported():
    for name in ("MAX_KEY_BYTES", "MAX_VALUE_BYTES", "MAX_TX_ENTRIES", "MAX_TX_BYTES"):
        assert getattr(kvcore, name) is getattr(kvcore.limits, name)
        assert getattr(kvcore.ledger, name) is getattr(kvcore.limits, name)
