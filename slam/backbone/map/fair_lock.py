"""A re-entrant lock handed over in arrival order, that tells each thread how long it waited.

Python's ``threading.RLock`` is not fair: a thread that releases it and takes it
again at once (local mapping working through points in chunks) nearly always
wins over a thread already blocked on it, because the woken waiter still has to
get the GIL. The map's locks are :class:`FairRLock`: on release the lock goes
straight to the longest-waiting thread (its owner is set before it wakes), so
the releasing thread, coming back, queues behind it. Tracking then waits at
most for the section in progress, never for a run of them.
"""

from __future__ import annotations

import threading
import time
from collections import deque


class FairRLock:
    """Re-entrant, first come first served; use as ``with lock:`` (``acquire``/``release`` also work).

    :meth:`waited_s` is the calling thread's total time spent blocked on this lock (seconds),
    for instrumentation: read it before and after a piece of work.
    """

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the fields below for the few instructions of a hand-over
        self._owner: int | None = None  # thread ident
        self._count = 0
        self._waiters: deque[tuple[int, threading.Lock]] = deque()  # (thread ident, its gate, held until handed over)
        self._local = threading.local()

    def acquire(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        # Only this thread sets the owner to itself or hands the lock on while owning it, so reading
        # ``_owner`` without the mutex is safe here.
        if self._owner == me:
            self._count += 1
            return True
        with self._mutex:
            if self._owner is None and not self._waiters:
                self._owner, self._count = me, 1
                return True
            if not blocking:
                return False
            gate = threading.Lock()
            gate.acquire()
            self._waiters.append((me, gate))
        t0 = time.perf_counter()
        gate.acquire()  # released by the thread that hands the lock over, after making us the owner
        self._local.waited = getattr(self._local, "waited", 0.0) + time.perf_counter() - t0
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("cannot release a FairRLock this thread does not hold")
        self._count -= 1
        if self._count:
            return
        with self._mutex:
            if self._waiters:
                nxt, gate = self._waiters.popleft()
                self._owner, self._count = nxt, 1
                gate.release()
            else:
                self._owner = None

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()

    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def waited_s(self) -> float:
        """Seconds the calling thread has spent blocked on this lock so far."""
        return getattr(self._local, "waited", 0.0)
