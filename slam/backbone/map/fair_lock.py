"""A re-entrant lock handed over in arrival order, with precedence for a latency-critical thread.

Python's ``threading.RLock`` is not fair: a thread that releases it and takes it
again at once (local mapping working through points in chunks) nearly always
wins over a thread already blocked on it, because the woken waiter still has to
get the GIL. :class:`FairRLock` hands the lock over instead of merely freeing it:

* a thread inside ``with lock.priority():`` (tracking) that waits is handed the lock
  as soon as the holder releases it, before any other waiter, so it waits at most
  for the section in progress;
* other waiters are handed the lock in arrival order, except when a priority thread
  releases it: then the first waiter is only woken to try again, and the priority
  thread, coming back a moment later, may take the lock first (it holds the map for
  microseconds at a time, hundreds of times per frame; handing over at each release
  would make it queue behind a whole mapping chunk every time).

* while a priority thread is inside its ``priority()`` block (tracking a frame), another
  thread that releases the lock yields the GIL right after (``time.sleep(0)``): the priority
  thread then runs at a moment the lock is free. Otherwise the interpreter's periodic GIL
  switch lands anywhere, mostly while local mapping holds the lock, and tracking, resumed,
  blocks on it (measured: twice as many frames waited, p95 of the wait 0.7 -> 2.9 ms).

Without priority threads it is a plain first-come-first-served lock (``map.update_lock``).
Each thread's time blocked on the lock is kept (:meth:`FairRLock.waited_s`) for instrumentation.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque


class FairRLock:
    """Re-entrant; use as ``with lock:`` (``acquire``/``release`` also work). See the module docstring."""

    def __init__(self) -> None:
        self._mutex = threading.Lock()  # guards the fields below for the few instructions of a hand-over
        self._owner: int | None = None  # thread ident
        self._count = 0
        self._urgent: deque[tuple[int, threading.Lock]] = deque()  # waiting priority threads (ident, gate)
        self._waiters: deque[tuple[int, threading.Lock]] = deque()  # waiting other threads
        self._local = threading.local()
        self._priority_active = 0  # priority() blocks open, all threads

    # ---------------------------------------------------------------- locking
    def acquire(self, blocking: bool = True) -> bool:
        me = threading.get_ident()
        # Only this thread sets the owner to itself or hands the lock on while owning it, so reading
        # ``_owner`` without the mutex is safe here.
        if self._owner == me:
            self._count += 1
            return True
        urgent = getattr(self._local, "priority", 0) > 0
        retry = False  # woken by a priority thread's release: first in line among the others
        t0 = None
        while True:
            with self._mutex:
                if self._owner is None and not self._urgent and (urgent or retry or not self._waiters):
                    self._owner, self._count = me, 1
                    break
                if not blocking:
                    return False
                gate = threading.Lock()
                gate.acquire()
                if urgent:
                    self._urgent.append((me, gate))
                elif retry:
                    self._waiters.appendleft((me, gate))
                else:
                    self._waiters.append((me, gate))
            if t0 is None:
                t0 = time.perf_counter()
            gate.acquire()  # released by the thread that handed the lock over (or woke us to retry)
            if self._owner == me:
                break
            retry = True
        if t0 is not None:
            self._local.waited = getattr(self._local, "waited", 0.0) + time.perf_counter() - t0
        return True

    def release(self) -> None:
        if self._owner != threading.get_ident():
            raise RuntimeError("cannot release a FairRLock this thread does not hold")
        self._count -= 1
        if self._count:
            return
        prioritised = getattr(self._local, "priority", 0) > 0
        with self._mutex:
            gate = None
            if self._urgent:
                nxt, gate = self._urgent.popleft()
                self._owner, self._count = nxt, 1
            elif self._waiters:
                nxt, gate = self._waiters.popleft()
                if prioritised:
                    self._owner = None  # wake it to try again; this thread may come back first
                else:
                    self._owner, self._count = nxt, 1
            else:
                self._owner = None
            if gate is not None:
                gate.release()
        if self._priority_active and not prioritised:
            time.sleep(0)  # let a priority thread that wants the GIL run now, while the lock is free

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()

    # ------------------------------------------------------------ precedence
    @contextlib.contextmanager
    def priority(self):
        """Within this block the calling thread takes precedence over the others (see the module docstring)."""
        self._local.priority = getattr(self._local, "priority", 0) + 1
        with self._mutex:
            self._priority_active += 1
        try:
            yield self
        finally:
            with self._mutex:
                self._priority_active -= 1
            self._local.priority -= 1

    # ---------------------------------------------------------------- queries
    def held(self) -> bool:
        """Whether the calling thread holds the lock."""
        return self._owner == threading.get_ident()

    def waited_s(self) -> float:
        """Seconds the calling thread has spent blocked on this lock so far."""
        return getattr(self._local, "waited", 0.0)
