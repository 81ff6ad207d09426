"""The read pipeline shared by collections and transactions: plan, filter, sort, page, project."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from docstore.collections import budget
from docstore.collections.indexes import Index
from docstore.collections.indexspec import compound_plan
from docstore.collections.keyenc import index_range
from docstore.collections.query import (
    FieldBounds,
    compile_filter,
    compile_projection,
    extract_bounds,
    sort_key,
)
from docstore.errors import QueryError


@dataclass(frozen=True)
class Plan:
    """How a filter will be answered; ``explain()`` returns it as a dict."""

    kind: str  # "index", "or" (one index plan a branch of a top-level $or: ``branches``) or "scan"
    field: str | None = None
    bounds: FieldBounds | None = None
    candidates: int | None = None
    documents: int = 0
    branches: tuple[Plan, ...] = ()
    ranges: tuple[tuple[bytes | None, bytes | None], ...] | None = None
    """A compound index's byte ranges (its plan has no ``bounds``)."""

    def byte_ranges(self) -> list[tuple[bytes | None, bytes | None]]:
        """The byte ranges of index keys an index plan reads."""
        if self.ranges is not None:
            return list(self.ranges)
        assert self.bounds is not None, "an index plan has bounds or byte ranges"
        return index_range(self.bounds)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"plan": self.kind, "documents": self.documents}
        if self.kind == "or":
            out["branches"] = [{k: v for k, v in b.to_dict().items() if k != "documents"} for b in self.branches]
            out["candidates"] = self.candidates
        if self.kind == "index":
            b = self.bounds
            out["index"] = self.field
            if self.ranges is not None:
                out["ranges"] = len(self.ranges)
            elif b is not None and b.values is not None:
                out["equals"] = list(b.values)
            elif b is not None:
                out["range"] = {
                    "lo": b.lo,
                    "lo_inclusive": b.lo_inclusive,
                    "hi": b.hi,
                    "hi_inclusive": b.hi_inclusive,
                }
            out["candidates"] = self.candidates
        return out


def choose_plan(
    filter: dict | None,  # noqa: A002
    indexes: dict[str, Index],
    documents: int,
    count: bool = False,
) -> Plan:
    """Pick the index whose bounds select the fewest candidates.

    Candidates are counted only to choose between several usable indexes, or when ``count``
    asks for the figure (``explain``); with one usable index, ``candidates`` is None.

    A filter no index answers whose top level is a ``$or`` of clauses each answered by an
    index (the clause with the filter's other top-level conditions) gets an ``or`` plan: the
    union of those index plans' documents, each once. If any clause needs a scan, the whole
    filter is scanned.
    """
    plan = _one_index(filter, indexes, documents, count)
    if plan.kind == "scan" and filter and indexes:
        branches = or_branches(filter)
        if branches:
            plans = tuple(_one_index(b, indexes, documents, count) for b in branches)
            if all(p.kind == "index" for p in plans):
                total = sum(p.candidates or 0 for p in plans) if count else None
                return Plan("or", candidates=total, documents=documents, branches=plans)
    return plan


def or_branches(filter: dict) -> list[dict] | None:  # noqa: A002
    """The branches of a top-level ``$or`` of two or more clauses: each clause with the
    filter's other top-level conditions (a document the filter matches matches one of them),
    or None."""
    clauses = filter.get("$or")
    if not isinstance(clauses, (list, tuple)) or len(clauses) < 2 or not all(isinstance(c, dict) for c in clauses):
        return None
    rest = {k: v for k, v in filter.items() if k != "$or"}
    return [{"$and": [rest, dict(c)]} if rest else dict(c) for c in clauses]


def _one_index(
    filter: dict | None,  # noqa: A002
    indexes: dict[str, Index],
    documents: int,
    count: bool = False,
) -> Plan:
    if not filter or not indexes:
        return Plan("scan", documents=documents)
    indexes = {f: idx for f, idx in indexes.items() if idx.answers(filter)}  # sparse, partial: when implied
    if not indexes:
        return Plan("scan", documents=documents)
    exact: dict[str, FieldBounds] | None = None  # all conditions on a field intersected
    if any(idx.multikey for idx in indexes.values()):
        bounds = extract_bounds(filter)  # sound for every index
    else:  # no document meets an array on an indexed path: every condition applies
        bounds = exact = extract_bounds(filter, multikey=False)
    usable: list[Plan] = []
    for f, b in bounds.items():
        idx = indexes.get(f)
        if idx is None or idx.compound:
            continue
        if not idx.multikey and b.values is None:  # no arrays on the path: both ends apply
            if exact is None:
                exact = extract_bounds(filter, multikey=False)
            b = exact.get(f, b)
        usable.append(Plan("index", f, b, None, documents))
    for name, idx in indexes.items():  # compound indexes: a condition on their first field
        if idx.compound:
            found = compound_plan(idx.spec, filter, not idx.multikey)
            if found is not None:
                usable.append(Plan("index", name, None, None, documents, ranges=tuple(found[1])))
    if not usable:
        return Plan("scan", documents=documents)
    if len(usable) == 1 and not count:
        return usable[0]
    best: Plan | None = None
    for p in usable:
        ranges = p.byte_ranges()
        n = indexes[p.field or ""].count_in(ranges) if ranges else 0
        if best is None or n < (best.candidates or 0):
            best = replace(p, candidates=n)
    assert best is not None
    return best


MAX_SORTED = 100_000
"""Documents a sort holds in memory at most: the first ``skip + limit`` of the order when a
limit is given (a heap), else every match. More is a QueryError: give a limit, or narrow the
filter (docs/queries.md)."""


def sorted_bounded(
    docs: Iterable[dict], key: Callable[[dict], Any], first: int | None, what: str = "a sort",
    advice: str = "give a limit (skip + limit at most that), or a narrower filter",
) -> list[dict]:
    """``docs`` in ``key`` order (stable), or only the ``first`` of that order; memory bounded
    by MAX_SORTED documents (beyond: a QueryError naming ``what`` and giving ``advice``)."""
    if first is not None and first <= MAX_SORTED:
        return heapq.nsmallest(first, docs, key=key)  # stable, like sorted()[:first]
    held: list[dict] = []
    for doc in docs:
        held.append(doc)
        if len(held) > MAX_SORTED:
            raise QueryError(
                f"{what} of more than {MAX_SORTED:,} documents is refused (it would hold them all in "
                f"memory): {advice}"
            )
    held.sort(key=key)
    return held if first is None else held[:first]


def check_paging(skip: Any, limit: Any) -> None:
    if type(skip) is not int or skip < 0:
        raise QueryError(f"skip must be a non-negative integer, got {skip!r}")
    if limit is not None and (type(limit) is not int or limit < 0):
        raise QueryError(f"limit must be a non-negative integer or None, got {limit!r}")


def run_query(
    docs: Iterable[dict],
    filter: dict | None = None,  # noqa: A002
    projection: Any = None,
    sort: Any = None,
    skip: int = 0,
    limit: int | None = None,
    *,
    predicate: Callable[[dict], bool] | None = None,
) -> Iterator[dict]:
    """Filter, sort, page and project ``docs`` (validated before any document is read)."""
    check_paging(skip, limit)
    match = predicate or compile_filter(filter)
    project = compile_projection(projection) if projection is not None else None
    key = sort_key(sort) if sort is not None else None
    return _pipeline(docs, match, project, key, skip, limit)


def _pipeline(
    docs: Iterable[dict],
    match: Callable[[dict], bool],
    project: Callable[[dict], dict] | None,
    key: Callable[[dict], Any] | None,
    skip: int,
    limit: int | None,
) -> Iterator[dict]:
    if limit == 0:
        return
    selected: Iterable[dict] = (d for d in budget.checked(docs) if match(d))  # stops at the deadline
    if key is not None:
        selected = sorted_bounded(selected, key, None if limit is None else skip + limit)
    n = 0
    for i, doc in enumerate(selected):
        if i < skip:
            continue
        yield project(doc) if project is not None else doc
        n += 1
        if limit is not None and n >= limit:
            return
