"""kvcore.gcpause: bulk writes pause the cyclic garbage collector and always restore it."""

from __future__ import annotations

import gc
import threading

import pytest

from kvcore import Ledger, gcpause
from kvcore.ledger import BULK_ENTRIES


@pytest.fixture(autouse=True)
def _gc_enabled():
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_nests_and_restores():
    with gcpause.paused():
        assert not gc.isenabled()
        with gcpause.paused():
            assert not gc.isenabled()
        assert not gc.isenabled()
    assert gc.isenabled()


def test_paused_restores_after_an_exception():
    with pytest.raises(ValueError):
        with gcpause.paused():
            raise ValueError("boom")
    assert gc.isenabled()


def test_a_collector_the_application_turned_off_stays_off():
    gc.disable()
    with gcpause.paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_threads_restore_once_the_last_one_ends():
    inside, release = threading.Barrier(3), threading.Event()

    def work() -> None:
        with gcpause.paused():
            inside.wait()
            release.wait()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    inside.wait()
    assert not gc.isenabled()
    release.set()
    for t in threads:
        t.join()
    assert gc.isenabled()


def test_a_bulk_commit_pauses_and_restores(tmp_path):
    seen: list[bool] = []
    with Ledger.open(tmp_path / "led") as led:
        bulk = [(b"k%06d" % i, b"v") for i in range(BULK_ENTRIES)]
        led.commit(bulk, check=lambda _last: seen.append(gc.isenabled()))
        led.commit(bulk[:10], check=lambda _last: seen.append(gc.isenabled()))
        assert seen == [False, True] and gc.isenabled()
        assert led.get(b"k000000").revision == 2 and led.get(b"k001000").revision == 1
