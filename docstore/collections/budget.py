"""Time budgets of queries: a deadline for a whole call, and one for each regular-expression test.

A query runs under the deadline of the thread that runs it (:func:`deadline`: the server sets
its call's, an embedded caller passes ``max_time_ms``). Scans check it every
:data:`CHECK_EVERY` documents and raise :class:`~docstore.errors.QueryTimeoutError` once it has
passed. A ``$regex`` is matched by the ``regex`` engine (Python's ``re`` syntax, with a
timeout) with at most :data:`REGEX_SECONDS`, or what is left of the deadline, for one value: a
pattern of catastrophic backtracking (``^(a|aa)+$`` against ``"aaaa...!"``) stops with the same
error instead of holding a core for minutes. Deadlines are per thread; a block inside another
keeps the earlier of the two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from docstore.errors import QueryError, QueryTimeoutError

REGEX_SECONDS = 1.0
"""The most one ``$regex`` test of one value may take (seconds)."""

CHECK_EVERY = 256
"""Documents a scan reads between two looks at the deadline."""

MAX_TIME_MS = 2**31 - 1  # about 24.8 days: pymongo's and MongoDB's largest maxTimeMS

_local = threading.local()

T = TypeVar("T")


def _now() -> float:
    return time.monotonic()


def current() -> float | None:
    """The monotonic time at which this thread's query must stop (None: no deadline)."""
    return getattr(_local, "at", None)


@contextmanager
def until(at: float | None) -> Iterator[None]:
    """Run the block under the deadline ``at`` (monotonic seconds; None: the current one)."""
    before = current()
    if at is not None and (before is None or at < before):
        _local.at = at
    try:
        yield
    finally:
        _local.at = before


def deadline(seconds: float | None) -> float | None:
    """The monotonic deadline ``seconds`` from now (None: none)."""
    return None if seconds is None else _now() + seconds


def check() -> None:
    """Raise QueryTimeoutError if this thread's deadline has passed."""
    at = current()
    if at is not None and _now() >= at:
        raise QueryTimeoutError("the query ran past its deadline and was stopped (max_time_ms, or the call's timeout)")


def checked(items: Iterable[T]) -> Iterator[T]:
    """``items``, looking at the deadline every CHECK_EVERY of them (and before the first)."""
    check()
    n = 0
    for item in items:
        n += 1
        if n == CHECK_EVERY:
            n = 0
            check()
        yield item


def bounded(items: Iterator[T], at: float | None) -> Iterator[T]:
    """A lazy result, each step of which runs under the deadline ``at`` (a cursor the caller
    pulls from later, in the thread that pulls)."""
    if at is None:
        yield from items
        return
    while True:
        with until(at):
            try:
                item = next(items)
            except StopIteration:
                return
        yield item


def regex_seconds() -> float:
    """How long the next regex test may take: REGEX_SECONDS, or less if the deadline is near."""
    at = current()
    if at is None:
        return REGEX_SECONDS
    left = at - _now()
    if left <= 0:
        raise QueryTimeoutError("the query ran past its deadline and was stopped (max_time_ms, or the call's timeout)")
    return min(REGEX_SECONDS, left)


def seconds_of(max_time_ms: object) -> float | None:
    """``max_time_ms`` (pymongo's name: a positive whole number of milliseconds, or None) in
    seconds; QueryError for anything else."""
    if max_time_ms is None:
        return None
    if type(max_time_ms) is not int or not 0 < max_time_ms <= MAX_TIME_MS:
        raise QueryError(f"max_time_ms must be a whole number of milliseconds from 1 to {MAX_TIME_MS}, got {max_time_ms!r}")
    return max_time_ms / 1000
