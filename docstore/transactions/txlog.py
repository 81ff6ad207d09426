"""The ledger's transactions as an audit trail: ``Database.log()`` (who, when, why, newest
first, filtered by user and time) and time travel by time (``at_time=``: the last transaction
committed at or before a time). Transactions' timestamps never decrease (docs/hashing.md), so
a time is found by a binary search over headers."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from docstore.collections import budget
from docstore.errors import QueryError

if TYPE_CHECKING:
    from docstore.engine.engine import Engine

MAX_LOG = 10_000
"""The most transactions one log() call returns (page with ``before_tx``)."""


def time_ns(value: Any, name: str = "at_time") -> int:
    """A time as nanoseconds since the Unix epoch: a timezone-aware ``datetime``, an ISO 8601
    text with its offset (``2026-12-06T17:30:00Z``), or an int of nanoseconds. A time without
    a timezone is refused (QueryError): it would mean different instants on different hosts."""
    if type(value) is int:
        if value < 0:
            raise QueryError(f"{name} must not be before 1970, got {value}")
        if value >= 2**63:
            raise QueryError(f"{name} is too far in the future (at most 2**63 - 1 nanoseconds), got {value}")
        return value
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            raise QueryError(f"{name} is not an ISO 8601 time: {value!r} (e.g. 2026-12-06T17:30:00Z)") from None
    if isinstance(value, dt.datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            raise QueryError(f"{name} needs a timezone (e.g. 2026-12-06T17:30:00Z, or a datetime with tzinfo)")
        delta = value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
        ns = (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000
        if not 0 <= ns < 2**63:
            raise QueryError(f"{name} must be from 1970 to 2262, got {value.isoformat()}")
        return ns
    raise QueryError(f"{name} is a datetime with a timezone, an ISO 8601 text or nanoseconds, got {type(value).__name__}")


def tx_at_time(engine: Engine, t_ns: int, upto: int | None = None) -> int:
    """The last transaction (up to ``upto``, default the ledger's last) committed at or before
    ``t_ns``; 0 if none was."""
    lo, hi = 0, engine.tx_id if upto is None else upto  # invariant: lo's time <= t < time of hi + 1
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if engine.tx_time_ns(mid) <= t_ns:
            lo = mid
        else:
            hi = mid - 1
    return lo


def log(
    engine: Engine, *, user: str | None = None, since: Any = None, until: Any = None, limit: int = 100,
    before_tx: int | None = None,
) -> list[dict[str, Any]]:
    """Transactions newest first, each ``{"tx_id", "timestamp_ns", "user", "reason", "meta",
    "entries"}``: those of ``user`` only (when given), committed from ``since`` to ``until``
    (inclusive; times as :func:`time_ns` takes), before transaction ``before_tx`` (paging), at
    most ``limit`` (1 to MAX_LOG). Runs under the caller's deadline (it may read many
    transactions' heads to find a rare user's)."""
    if type(limit) is not int or not 1 <= limit <= MAX_LOG:
        raise QueryError(f"limit must be a whole number from 1 to {MAX_LOG}, got {limit!r}")
    if user is not None and (not isinstance(user, str) or not user):
        raise QueryError(f"user is a non-empty name, got {user!r}")
    if before_tx is not None and (type(before_tx) is not int or before_tx < 1):
        raise QueryError(f"before_tx must be a transaction id (1 or more), got {before_tx!r}")
    engine.check_open()
    last = engine.tx_id if before_tx is None else min(engine.tx_id, before_tx - 1)
    if until is not None:
        last = tx_at_time(engine, time_ns(until, "until"), last)
    first = 1
    if since is not None:
        first = tx_at_time(engine, time_ns(since, "since") - 1, last) + 1
    out: list[dict[str, Any]] = []
    for tx_id in budget.checked(range(last, first - 1, -1)):
        header = engine.ledger.header(tx_id)
        meta = engine.tx_meta(tx_id) or {}
        if user is not None and meta.get("user") != user:
            continue
        out.append({
            "tx_id": tx_id, "timestamp_ns": header.timestamp_ns, "user": meta.get("user"),
            "reason": meta.get("reason"), "meta": meta.get("meta"), "entries": header.n_entries,
        })
        if len(out) >= limit:
            break
    return out


def one_of(at_tx: int | None, at_time: Any) -> None:
    """QueryError if both ``at_tx`` and ``at_time`` are given."""
    if at_tx is not None and at_time is not None:
        raise QueryError("give at_tx or at_time, not both")



def resolve(engine: Engine, at_tx: int | None, at_time: Any) -> int | None:
    """``at_tx``, or the transaction ``at_time`` means (None if neither is given). On a
    verifying database the answer is proven against the trusted state: the transaction's
    header (at or before the time) and the next one's (after it)."""
    one_of(at_tx, at_time)
    if at_time is None:
        return at_tx
    t = time_ns(at_time)
    if engine.trust is None:
        return tx_at_time(engine, t)
    from docstore.proofs import reader
    from docstore.proofs.txproof import check_time_boundary, prove_header, verify_header

    state = reader.current_state(engine)
    n = tx_at_time(engine, t, state.tx_id)
    check_time_boundary(n, t, state, lambda i: verify_header(prove_header(engine, i, state), i, state), at_time)
    return n
