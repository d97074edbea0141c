"""``InferenceClient``: the SLAM process's one way to ask a learned model, never blocking its caller.

    client = InferenceClient.connect("ipc:///tmp/slam/infer")      # slam-infer, another process or host
    client = InferenceClient.in_process(LocalInferenceServer(cfg))  # the same service in a thread, inproc://
    rid = client.submit("descriptor", {"image": rgb}, deadline_s=0.5)   # None: could not be queued
    for result in client.poll():                                     # slam.bus.rpc.RpcResult
        ...

Both are the same code: an :class:`~slam.bus.rpc.RpcClient` (requests with
deadlines, late answers flagged, heartbeats, reconnection) talking to
``nets.server``'s service behind an :class:`~slam.bus.rpc.RpcServer`. On top
of it the client keeps

* a short backlog of requests that could not be queued yet (a server still
  connecting, or gone): sent as soon as it is connected, reported as
  ``timed_out`` when their deadline passes first, so every request taken gets
  an outcome;
* one flag, :meth:`InferenceClient.available`: False after a request timed
  out or got an error answer, or while the server is down; True again as soon
  as the server answers (a result or a heartbeat). Each change is logged once.

One client serves one consumer thread at a time; a lock makes it safe to
build it in one thread and use it in another.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from slam.bus.codec import Message
from slam.bus.keys import CurveClient
from slam.bus.rpc import RpcClient, RpcResult

if TYPE_CHECKING:
    from slam.inference.local import LocalInferenceServer

log = logging.getLogger(__name__)


@dataclass
class _Unsent:
    ticket: int
    msg: Message
    submitted: float  # time.monotonic() seconds
    deadline: float


class InferenceClient:
    """Requests by task to the server at ``endpoint`` (``local``: the in-process server it was acquired from).

    ``name`` labels the log lines (e.g. ``"netvlad"``); ``heartbeat_s``: how often a silent server is asked
    whether it is there (seconds); ``keep_late_s``: how long after its deadline an answer is still taken;
    ``backlog``: requests kept while none can be queued (more are refused).
    """

    def __init__(self, endpoint: str, *, curve: CurveClient | None = None, name: str = "inference",
                 heartbeat_s: float = 1.0, keep_late_s: float = 5.0, backlog: int = 16,
                 local: LocalInferenceServer | None = None):
        self.name = name
        self.local = local
        self.keep_late_s = keep_late_s
        self.backlog = backlog
        self.rpc = RpcClient(None, endpoint, curve=curve, heartbeat_s=heartbeat_s, keep_late_s=keep_late_s)
        self._lock = threading.Lock()
        self._available = True
        self._heartbeats = 0  # rpc.stats.heartbeats when last looked at
        self._closed = False
        self._tickets = itertools.count(1)
        self._unsent: deque[_Unsent] = deque()
        self._sent: dict[int, tuple[int, float]] = {}  # rpc request id -> (ticket, forget after: monotonic s)

    @classmethod
    def connect(cls, endpoint: str, **kwargs) -> InferenceClient:
        """A client of the ``slam-infer`` serving ``endpoint`` (ipc://, tcp://; it need not be up yet)."""
        return cls(endpoint, **kwargs)

    @classmethod
    def in_process(cls, server: LocalInferenceServer, **kwargs) -> InferenceClient:
        """A client of ``server``, served in a thread of this process while the client is open."""
        endpoint = server.acquire()
        try:
            return cls(endpoint, local=server, **kwargs)
        except BaseException:
            server.release()
            raise

    @property
    def endpoint(self) -> str:
        return self.rpc.endpoint

    @property
    def where(self) -> str:
        return "in-process" if self.local is not None else self.endpoint

    def submit(self, task: str, arrays: dict[str, np.ndarray], deadline_s: float, stamp: float = 0.0,
               topic: str = "infer") -> int | None:
        """Ask ``task`` of the server, due within ``deadline_s`` seconds; the request's ticket (the
        ``request_id`` of its results), or None when it cannot even be kept (the backlog is full)."""
        with self._lock:
            now = time.monotonic()
            item = _Unsent(next(self._tickets), Message(topic, task, 0, float(stamp), {}, arrays), now,
                           now + deadline_s)
            if self._unsent or not self._send(item):  # keep the order: behind what waits already
                if len(self._unsent) >= self.backlog:
                    return None
                self._unsent.append(item)
            return item.ticket

    def _send(self, item: _Unsent) -> bool:
        rid = self.rpc.submit(item.msg, max(item.deadline - time.monotonic(), 0.0))
        if rid is None:
            return False
        self._sent[rid] = (item.ticket, item.deadline + self.keep_late_s + 1.0)
        return True

    def poll(self) -> list[RpcResult]:
        """Answers (in time or ``late``), error answers and requests that just ``timed_out`` (also those that
        could not be sent before their deadline), by ticket; never blocks."""
        with self._lock:
            now = time.monotonic()
            results: list[RpcResult] = []
            while self._unsent and (self._unsent[0].deadline < now or self._send(self._unsent[0])):
                item = self._unsent.popleft()
                if item.deadline < now:  # never sent: it timed out here
                    results.append(RpcResult(item.ticket, item.msg.topic, item.msg.type, item.msg.stamp,
                                             item.submitted, item.deadline, timed_out=True))
            for r in self.rpc.poll():
                ticket, _ = self._sent.get(r.request_id, (None, 0.0))
                if ticket is None:
                    continue
                if not r.timed_out:
                    del self._sent[r.request_id]
                results.append(replace(r, request_id=ticket))
            for rid in [rid for rid, (_, forget) in self._sent.items() if now > forget]:
                del self._sent[rid]
            for r in results:
                if r.timed_out:
                    self._set_available(False, f"no answer within {r.deadline - r.submitted:.2f} s")
                elif r.error is not None:
                    self._set_available(False, f"error answer: {r.error}")
                else:
                    self._set_available(True, "answers again")
            heartbeats = self.rpc.stats.heartbeats
            if self.rpc.down:
                self._set_available(False, "server down")
            elif heartbeats > self._heartbeats and not any(r.timed_out or r.error for r in results):
                self._set_available(True, "the server answers again")
            self._heartbeats = heartbeats
            return results

    @property
    def waiting(self) -> int:
        """Requests taken and not yet answered or timed out (sent or in the backlog)."""
        return self.rpc.in_flight + len(self._unsent)

    def available(self) -> bool:
        """Whether requests get answers now: False after a timeout or error answer or while the server is down,
        until the server is heard again."""
        return self._available

    def _set_available(self, ok: bool, why: str) -> None:
        if ok == self._available:
            return
        self._available = ok
        if ok:
            log.info("%s (%s): available again: %s", self.name, self.where, why)
        else:
            log.warning("%s (%s): unavailable: %s; going on without it", self.name, self.where, why)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self.rpc.close()
        if self.local is not None:
            self.local.release()

    def __enter__(self) -> InferenceClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

