"""Requests to an inference server: ``RpcServer`` (ROUTER) and ``RpcClient`` (DEALER).

A request is a bus message whose ``seq`` is the request id; the answer carries the same id,
the server's name and version in ``meta["server"]``, and failures as a message of type
``"error"`` with ``meta["error"]`` (never an exception across the wire). A ``"heartbeat"``
request is answered by the server itself with its name, version and models. Every answer's
``meta["server"]`` also carries what the server has rejected (``rejected``, ``reject_reasons``:
count per reason, ``last_reject``), so the client knows of malformed or hostile traffic.

The client never waits: ``submit`` returns at once (``None`` when the request cannot be
queued, e.g. no server is connected), ``poll`` returns what has come back. An answer after
its deadline comes back flagged ``late`` (the caller applies it to a later frame or drops
it); a request whose deadline passes unanswered is reported once as ``timed_out``. After
``miss_limit`` misses in a row the client logs once that the server is down and goes on;
it reconnects by itself and logs once when answers come back.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import zmq

from slam.bus import topics
from slam.bus.codec import (
    DEFAULT_MAX_MESSAGE_BYTES,
    MAX_FRAMES,
    BusMessageError,
    Message,
    decode,
    encode,
)
from slam.bus.sockets import BusSocket, Curve
from slam.bus.stats import BusStats

log = logging.getLogger(__name__)

Handler = Callable[[Message], Message]  # one request -> its answer (raise to answer with an error)
BatchHandler = Callable[[list[Message]], Sequence[Message | BaseException]]  # requests -> answers, in order


@dataclass
class RpcStats(BusStats):
    """BusStats plus, client side: unsent (could not queue), answered (in time), late, timeouts,
    unknown (answers to requests already forgotten), heartbeats answered and missed (not in the
    other counts); both sides: errors (error answers)."""

    unsent: int = 0
    answered: int = 0
    late: int = 0
    timeouts: int = 0
    unknown: int = 0
    errors: int = 0
    heartbeats: int = 0
    heartbeat_misses: int = 0


@dataclass
class RpcResult:
    """What became of one request. Times are ``time.monotonic()`` seconds.

    reply: the answer (None for a timeout); late: it came after the deadline; timed_out: the
    deadline passed without an answer (reported once; a late answer may still follow).
    """

    request_id: int
    topic: str
    type: str
    stamp: float  # the request message's stamp (e.g. the frame time), seconds
    submitted: float
    deadline: float
    reply: Message | None = None
    received: float | None = None
    late: bool = False
    timed_out: bool = False

    @property
    def error(self) -> str | None:
        """The server's error text when the answer is an error."""
        if self.reply is not None and self.reply.type == topics.ERROR:
            return str(self.reply.meta.get("error", "error"))
        return None

    @property
    def ok(self) -> bool:
        """An answer in time that is not an error."""
        return self.reply is not None and not self.late and self.error is None

    @property
    def latency_s(self) -> float | None:
        return None if self.received is None else self.received - self.submitted


# ------------------------------------------------------------------ server
class RpcServer:
    """Answers requests with ``handler(request) -> answer``; one thread serves (``serve_once`` or ``start``).

    ``curve``: ``CurveServer`` keys: only clients whose public key is in the allowed folder
    can connect (required to bind tcp off loopback).
    """

    def __init__(
        self,
        ctx: zmq.Context | None,
        endpoint: str,
        *,
        name: str = "inference",
        version: str = "0",
        models: Sequence[str] = (),
        bind: bool = True,
        curve: Curve = None,
        hwm: int = 64,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        self._bus = BusSocket(ctx, zmq.ROUTER, endpoint, bind=bind, curve=curve, sndhwm=hwm, rcvhwm=hwm, max_bytes=max_bytes)
        self.info = {"name": name, "version": version}
        self.models = list(models)
        self.max_bytes = max_bytes
        self.stats = RpcStats()
        self._error_kinds: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def endpoint(self) -> str:
        return self._bus.endpoint

    def serve_once(self, handler: Handler, timeout_ms: int = 100) -> bool:
        """Wait up to ``timeout_ms`` for one request and answer it; True if a message was taken."""
        sock = self._bus.sock
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return False
        taken = self._take()
        if taken is not None:
            routing_id, request = taken
            try:
                answer: Message | BaseException = handler(request)
            except Exception as e:  # noqa: BLE001 - the server keeps serving whatever one request does
                answer = e
            self._reply(routing_id, request, answer)
        return True

    def serve_batch(self, handler: BatchHandler, max_batch: int = 8, timeout_ms: int = 100) -> int:
        """Answer the requests waiting (at most ``max_batch``, waiting up to ``timeout_ms`` for the first)
        with one ``handler`` call, e.g. one forward pass of a network over the batch.

        ``handler(requests)`` returns one answer per request, in order: a ``Message`` or an exception
        (sent back as an error answer). Heartbeats are answered at once, not passed on. Returns the
        number of messages taken.
        """
        sock = self._bus.sock
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return 0
        batch: list[tuple[bytes, Message]] = []
        n = 0
        while n < max_batch and sock.get(zmq.EVENTS) & zmq.POLLIN:
            n += 1
            taken = self._take()
            if taken is not None:
                batch.append(taken)
        if not batch:
            return n
        try:
            answers: list[Message | BaseException] = list(handler([request for _, request in batch]))
            if len(answers) != len(batch):
                raise RuntimeError(f"batch handler answered {len(answers)} of {len(batch)} requests")
        except Exception as e:  # noqa: BLE001 - the server keeps serving whatever one batch does
            answers = [e] * len(batch)
        for (routing_id, request), answer in zip(batch, answers):
            self._reply(routing_id, request, answer)
        return n

    def _take(self) -> tuple[bytes, Message] | None:
        """Receive one message: its routing id and request; None if rejected or a heartbeat (answered here)."""
        try:
            frames = self._bus.recv_message(self.max_bytes, MAX_FRAMES + 1)  # + the routing id
            if len(frames) < 3:
                raise BusMessageError("too_few_frames", f"{len(frames)} frame(s) with the routing id")
            request = decode(frames[1:], self.max_bytes)
        except BusMessageError as e:
            self.stats.reject(e, self.endpoint, log)
            return None
        self.stats.received += 1
        routing_id = frames[0].bytes
        if request.type == topics.HEARTBEAT:
            server = {**self.server_meta(), "models": self.models}
            self._send(routing_id, Message(request.topic, topics.HEARTBEAT, request.seq, request.stamp, {"server": server}))
            return None
        return routing_id, request

    def server_meta(self) -> dict:
        """``meta["server"]`` of every answer: name, version and what this server has rejected so far."""
        st = self.stats
        return {**self.info, "rejected": st.rejected, "reject_reasons": dict(st.reasons), "last_reject": st.last_reject}

    def _reply(self, routing_id: bytes, request: Message, answer: Message | BaseException) -> None:
        """Send the handler's answer, or an error answer when it raised, returned an exception or a non-message."""
        if not isinstance(answer, (Message, BaseException)):
            answer = TypeError(f"handler returned {type(answer).__name__}, not a Message")
        if isinstance(answer, Message):
            answer = replace(answer, topic=request.topic, seq=request.seq, meta={**answer.meta, "server": self.server_meta()})
            try:
                self._send(routing_id, answer)
                return
            except BusMessageError as e:  # a payload the codec refuses becomes an error answer, not a dead server
                answer = e
        self.stats.errors += 1
        kind = type(answer).__name__
        if kind not in self._error_kinds:
            self._error_kinds.add(kind)
            log.warning("%s: request %r failed: %s: %s (further %s errors are only counted)",
                        self.endpoint, request.type, kind, answer, kind)
        meta = {"error": f"{kind}: {answer}", "server": self.server_meta()}
        self._send(routing_id, Message(request.topic, topics.ERROR, request.seq, request.stamp, meta))

    def _send(self, routing_id: bytes, answer: Message) -> None:
        frames = encode(answer)  # before sending anything: raises BusMessageError for a bad payload
        try:
            self._bus.sock.send_multipart([routing_id, *frames], flags=zmq.NOBLOCK, copy=False)
            self.stats.sent += 1
        except zmq.Again:  # the client's queue is full or it is gone: it will time out
            self.stats.dropped += 1

    def serve_forever(self, handler: Handler, stop: threading.Event, poll_ms: int = 50) -> None:
        """Serve until ``stop`` is set."""
        while not stop.is_set():
            self.serve_once(handler, poll_ms)

    def start(self, handler: Handler) -> threading.Thread:
        """Serve in a background thread until ``close()``; the socket then belongs to that thread."""
        self._thread = threading.Thread(
            target=self.serve_forever, args=(handler, self._stop), name=f"rpc-{self.info['name']}", daemon=True
        )
        self._thread.start()
        return self._thread

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._bus.close()

    def __enter__(self) -> RpcServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------ client
@dataclass
class _Pending:
    result: RpcResult
    internal: bool = False  # a heartbeat: handled here, not returned to the caller


class RpcClient:
    """Sends requests to the server at ``endpoint`` and collects answers, never blocking.

    curve: ``CurveClient`` keys for a CURVE server. The server counts as down after
    ``miss_limit`` timeouts or unsendable requests in a row with nothing heard from it for
    ``down_after_s`` seconds (a slow server whose answers come late is not down). heartbeat_s:
    how often to ask whether the server is there while nothing is heard from it (seconds);
    heartbeat_timeout_s: its deadline.
    keep_late_s: how long after its deadline an answer is still matched to its request (and
    returned as late). One thread uses a client.
    """

    def __init__(
        self,
        ctx: zmq.Context | None,
        endpoint: str,
        *,
        curve: Curve = None,
        hwm: int = 8,
        miss_limit: int = 3,
        down_after_s: float = 1.0,
        heartbeat_s: float = 1.0,
        heartbeat_timeout_s: float = 0.5,
        keep_late_s: float = 5.0,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        options = {
            zmq.IMMEDIATE: 1,  # queue only to a connected server: with none, submit fails at once (no stale backlog)
            zmq.HEARTBEAT_IVL: 1000,  # ZMTP pings: a vanished peer (host down, cable out) is dropped after 3 s
            zmq.HEARTBEAT_TIMEOUT: 3000,
        }
        self._bus = BusSocket(
            ctx, zmq.DEALER, endpoint, bind=False, curve=curve, sndhwm=hwm,
            rcvhwm=max(hwm, 64), max_bytes=max_bytes, options=options,
        )
        self.miss_limit = miss_limit
        self.down_after_s = down_after_s
        self.heartbeat_s = heartbeat_s
        self.heartbeat_timeout_s = heartbeat_timeout_s
        self.keep_late_s = keep_late_s
        self.max_bytes = max_bytes
        self.stats = RpcStats()
        self.server_info: dict | None = None  # the last heartbeat's answer: name, version, models
        # what the server reported rejecting, from its latest answer: rejected, reject_reasons, last_reject
        self.server_rejects: dict | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, _Pending] = {}
        self._expired: dict[int, _Pending] = {}  # timed out, reported; a late answer may still come
        self._misses = 0
        self._down = False
        self._last_heard = time.monotonic()  # a grace of down_after_s from the start
        self._last_heartbeat = float("-inf")
        self._heartbeat_id: int | None = None

    @property
    def endpoint(self) -> str:
        return self._bus.endpoint

    @property
    def down(self) -> bool:
        """The server missed ``miss_limit`` requests in a row, was silent ``down_after_s``, and has not answered since."""
        return self._down

    @property
    def in_flight(self) -> int:
        """Requests sent and neither answered nor timed out."""
        return sum(not p.internal for p in self._pending.values())

    def submit(self, msg: Message, deadline_s: float) -> int | None:
        """Send ``msg`` as a request due within ``deadline_s`` seconds; its id, or None if it could not be queued."""
        return self._send(msg, deadline_s, internal=False)

    def _send(self, msg: Message, deadline_s: float, internal: bool) -> int | None:
        rid = next(self._ids)
        frames = encode(msg, rid)
        now = time.monotonic()
        try:
            self._bus.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.stats.unsent += not internal
            self.stats.heartbeat_misses += internal
            self._missed()
            return None
        self.stats.sent += 1
        result = RpcResult(rid, msg.topic, msg.type, float(msg.stamp), now, now + deadline_s)
        self._pending[rid] = _Pending(result, internal)
        return rid

    def poll(self) -> list[RpcResult]:
        """Answers received since the last call (in time or ``late``) and requests that just ``timed_out``."""
        out: list[RpcResult] = []
        sock = self._bus.sock
        while sock.get(zmq.EVENTS) & zmq.POLLIN:
            try:
                frames = self._bus.recv_message(self.max_bytes, MAX_FRAMES)
                reply = decode(frames, self.max_bytes)
            except BusMessageError as e:
                self.stats.reject(e, self.endpoint, log)
                continue
            self.stats.received += 1
            self.stats.bytes += sum(len(f) for f in frames)
            self._heard()
            self._match(reply, out)
        now = time.monotonic()
        for rid, p in list(self._pending.items()):
            if now > p.result.deadline:
                del self._pending[rid]
                p.result.timed_out = True
                self._expired[rid] = p
                self.stats.timeouts += not p.internal
                self.stats.heartbeat_misses += p.internal
                self._missed()
                if not p.internal:
                    out.append(replace(p.result))
        for rid, p in list(self._expired.items()):
            if now > p.result.deadline + self.keep_late_s:
                del self._expired[rid]
        self._heartbeat(now)
        self._check_down(now)
        return out

    def _match(self, reply: Message, out: list[RpcResult]) -> None:
        p = self._pending.pop(reply.seq, None) or self._expired.pop(reply.seq, None)
        if p is None:
            self.stats.unknown += 1
            return
        server = reply.meta.get("server")
        if isinstance(server, dict) and isinstance(server.get("rejected"), int):
            self.server_rejects = {k: server.get(k) for k in ("rejected", "reject_reasons", "last_reject")}
        r = p.result
        r.received = time.monotonic()
        r.reply = reply
        r.late = r.timed_out or r.received > r.deadline
        r.timed_out = False
        if p.internal:
            self.stats.heartbeats += not r.late
            if reply.type == topics.HEARTBEAT and isinstance(reply.meta.get("server"), dict):
                self.server_info = reply.meta["server"]
            return
        self.stats.late += r.late
        self.stats.answered += not r.late
        self.stats.errors += r.error is not None
        out.append(r)

    def _heartbeat(self, now: float) -> None:
        """Ask whether the server is there when nothing has been heard for ``heartbeat_s`` (and at the start)."""
        if self._heartbeat_id in self._pending or now - self._last_heartbeat < self.heartbeat_s:
            return
        if self.server_info is not None and now - self._last_heard < self.heartbeat_s:
            return
        self._last_heartbeat = now
        msg = Message(topics.HEARTBEAT, topics.HEARTBEAT, stamp=time.time())
        self._heartbeat_id = self._send(msg, self.heartbeat_timeout_s, internal=True)

    def _heard(self) -> None:
        self._misses = 0
        self._last_heard = time.monotonic()
        if self._down:
            self._down = False
            log.info("inference server back at %s", self.endpoint)

    def _missed(self) -> None:
        self._misses += 1
        self._check_down(time.monotonic())

    def _check_down(self, now: float) -> None:
        if not self._down and self._misses >= self.miss_limit and now - self._last_heard >= self.down_after_s:
            self._down = True
            log.warning("inference server down at %s; continuing without learned inputs", self.endpoint)

    def close(self) -> None:
        self._bus.close()

    def __enter__(self) -> RpcClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
