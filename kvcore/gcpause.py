"""Pause Python's cyclic garbage collector around bulk work.

A batch write makes ~100 short-lived containers (tuples, lists) per document or thousand
entries, and reference counting frees all of them; but while they are alive they count toward
the collector's thresholds, so a big batch triggers collections that traverse the whole heap,
the application's objects included (measured: 20% of ``insert_many`` time with 20k other
documents in memory). :func:`paused` turns the collector off for the duration of such a
batch and back on after, if it was on. It is process-wide and nests across threads: the
collector comes back when the last paused section ends.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0
_we_disabled = False


@contextmanager
def paused() -> Iterator[None]:
    """``with paused():`` runs its body with the cyclic collector off (if it was on)."""
    global _depth, _we_disabled
    with _lock:
        if _depth == 0:
            _we_disabled = gc.isenabled()
            if _we_disabled:
                gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _we_disabled:
                _we_disabled = False
                gc.enable()
