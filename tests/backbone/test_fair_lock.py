"""The map's lock: re-entrant, handed over in arrival order, and first to a thread that has priority."""

from __future__ import annotations

import sys
import threading
import time

import pytest

from slam.backbone.map.fair_lock import FairRLock


def _waiter(lock: FairRLock, order: list, name: str, priority: bool = False) -> threading.Thread:
    def run():
        if priority:
            with lock.priority(), lock:
                order.append(name)
        else:
            with lock:
                order.append(name)

    t = threading.Thread(target=run, name=name)
    t.start()
    return t


def _wait_queued(lock: FairRLock, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(lock._urgent) + len(lock._waiters) < n:
        assert time.monotonic() < deadline, "waiters did not queue"
        time.sleep(0.001)


def test_reentrant_and_release_checks():
    lock = FairRLock()
    with lock:
        with lock:
            assert lock.held()
        assert lock.held()
    assert not lock.held()
    with pytest.raises(RuntimeError):
        lock.release()


def test_holder_coming_back_queues_behind_a_waiter():
    """What ``time.sleep(0)`` tried to get from RLock: the waiter has the lock before the holder's next chunk."""
    lock = FairRLock()
    order = []
    lock.acquire()
    t = _waiter(lock, order, "waiter")
    _wait_queued(lock, 1)
    lock.release()
    with lock:  # the releasing thread comes straight back
        order.append("holder again")
    t.join(5)
    assert order == ["waiter", "holder again"]
    assert lock.waited_s() >= 0.0


def test_waiters_in_arrival_order_priority_first():
    lock = FairRLock()
    order = []
    lock.acquire()
    threads = [_waiter(lock, order, "a")]
    _wait_queued(lock, 1)
    threads.append(_waiter(lock, order, "b"))
    _wait_queued(lock, 2)
    threads.append(_waiter(lock, order, "tracking", priority=True))
    _wait_queued(lock, 3)
    lock.release()
    for t in threads:
        t.join(5)
    assert order == ["tracking", "a", "b"]


def test_priority_thread_coming_back_goes_first_and_the_waiter_still_gets_it():
    """Tracking takes the map hundreds of times per frame: releasing it does not hand it to local mapping."""
    lock = FairRLock()
    order = []
    with lock.priority():
        lock.acquire()
        t = _waiter(lock, order, "mapping")
        _wait_queued(lock, 1)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(60.0)  # the woken waiter cannot run Python code before this thread blocks
        try:
            lock.release()
            with lock:
                order.append("tracking again")
        finally:
            sys.setswitchinterval(interval)
    t.join(5)
    assert order == ["tracking again", "mapping"]


def test_waited_time_is_per_thread():
    lock = FairRLock()
    waited = {}

    def run():
        with lock:
            pass
        waited["other"] = lock.waited_s()

    lock.acquire()
    t = threading.Thread(target=run)
    t.start()
    _wait_queued(lock, 1)
    time.sleep(0.05)
    lock.release()
    t.join(5)
    assert waited["other"] >= 0.04
    assert lock.waited_s() == 0.0  # this thread never waited
