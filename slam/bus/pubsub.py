"""Streams: ``Publisher`` (PUB) and ``Subscriber`` (SUB) of bus messages.

Publishing never blocks: a subscriber whose queue (``hwm`` messages) is full misses the
message, which it sees as a gap in the topic's sequence numbers (``stats.gaps``). A
subscriber rejects malformed, oversized or unknown messages, counts them and keeps going.
Each object belongs to one thread (ZeroMQ sockets are not thread-safe).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

import zmq

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

DEFAULT_HWM = 16  # messages queued per peer: ~0.5 s of 30 Hz frames, ~35 MB of RGB-D


class Publisher:
    """Publishes messages on ``endpoint`` (bound by default; ``curve``: ``CurveServer`` keys to bind off loopback).

    ``publish`` numbers the messages of each topic 0, 1, 2, ... in ``seq``. Do not modify an
    array after publishing it: it is sent from the caller's memory, without a copy.

    wait_subscribers: use an XPUB socket, which sees subscriptions arrive, so that
    ``wait_for_subscribers`` can hold back the first message until someone listens (a replay
    must not lose its first frames to a subscriber that connects a moment later).
    """

    def __init__(
        self,
        ctx: zmq.Context | None,
        endpoint: str,
        *,
        bind: bool = True,
        curve: Curve = None,
        hwm: int = DEFAULT_HWM,
        wait_subscribers: bool = False,
    ):
        kind, options = (zmq.XPUB, {zmq.XPUB_VERBOSE: 1}) if wait_subscribers else (zmq.PUB, None)
        self._bus = BusSocket(ctx, kind, endpoint, bind=bind, curve=curve, sndhwm=hwm, options=options)
        self._xpub = wait_subscribers
        self._subscriptions = 0
        self._seq: dict[str, int] = {}
        self.stats = BusStats()

    @property
    def endpoint(self) -> str:
        return self._bus.endpoint

    def publish(self, msg: Message) -> bool:
        """Send ``msg`` (with the topic's next sequence number) without blocking; False if dropped."""
        seq = self._seq.get(msg.topic, 0)
        frames = encode(msg, seq)
        self._seq[msg.topic] = seq + 1
        try:
            self._bus.sock.send_multipart(frames, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            self.stats.dropped += 1
            return False
        self.stats.sent += 1
        self.stats.bytes += sum(len(f) if isinstance(f, bytes) else f.nbytes for f in frames)
        return True

    @property
    def subscriptions(self) -> int:
        """Subscriptions seen so far, less those withdrawn (a subscriber of k topics counts k; XPUB only)."""
        self._read_subscriptions(0)
        return self._subscriptions

    def wait_for_subscribers(self, n: int = 1, timeout_s: float = 10.0, stop: threading.Event | None = None) -> bool:
        """Wait until ``n`` subscriptions have reached this publisher; False on timeout or ``stop``.

        Needs ``wait_subscribers=True``. A message published after it returns True reaches them.
        """
        if not self._xpub:
            raise RuntimeError("wait_for_subscribers needs Publisher(..., wait_subscribers=True)")
        end = time.monotonic() + timeout_s
        while self.subscriptions < n:
            left = end - time.monotonic()
            if left <= 0 or (stop is not None and stop.is_set()):
                return False
            self._read_subscriptions(min(100, max(1, round(left * 1e3))))
        return True

    def _read_subscriptions(self, timeout_ms: int) -> None:
        """Count the (un)subscribe messages an XPUB socket passes up: first byte 1 or 0, then the topic."""
        if not self._xpub:
            return
        sock = self._bus.sock
        if not sock.poll(timeout_ms, zmq.POLLIN):
            return
        while sock.get(zmq.EVENTS) & zmq.POLLIN:
            note = sock.recv(zmq.NOBLOCK)
            if note[:1] == b"\x01":
                self._subscriptions += 1
            elif note[:1] == b"\x00":
                self._subscriptions = max(0, self._subscriptions - 1)

    def close(self) -> None:
        self._bus.close()

    def __enter__(self) -> Publisher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Subscriber:
    """Receives messages of ``topics`` (all when empty) from one or more ``endpoints`` (connected by default).

    conflate: ``recv`` returns the newest message waiting and drops older ones (counted in
    ``stats.dropped``): for consumers that only want the latest frame or pose. (ZeroMQ's own
    CONFLATE option does not work with multipart messages, so it is done here.)
    max_bytes: larger messages are rejected; on a bound subscriber a peer sending a larger
    single frame is disconnected by ZeroMQ (over ipc and tcp) before the memory is spent.
    """

    def __init__(
        self,
        ctx: zmq.Context | None,
        endpoints: str | Sequence[str],
        topics: Sequence[str] = (),
        *,
        bind: bool = False,
        conflate: bool = False,
        curve: Curve = None,
        hwm: int = DEFAULT_HWM,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ):
        self._bus = BusSocket(ctx, zmq.SUB, endpoints, bind=bind, curve=curve, rcvhwm=hwm, max_bytes=max_bytes)
        self._topics = {t.encode() for t in topics}
        for t in self._topics or {b""}:
            self._bus.sock.setsockopt(zmq.SUBSCRIBE, t)
        self.conflate = conflate
        self._poller = zmq.Poller()  # kept: building one per recv costs more than the rest of recv
        self._poller.register(self._bus.sock, zmq.POLLIN)
        self.max_bytes = max_bytes
        self._last_seq: dict[str, int] = {}
        self.stats = BusStats()

    @property
    def endpoint(self) -> str:
        return self._bus.endpoint

    def recv(self, timeout_ms: int | None = 0) -> Message | None:
        """The next good message, or None when none came within ``timeout_ms`` (None: wait for one)."""
        sock = self._bus.sock
        deadline = None if timeout_ms is None else time.monotonic() + timeout_ms / 1e3
        while True:
            wait = None if deadline is None else max(0, round((deadline - time.monotonic()) * 1e3))
            if not self._poller.poll(wait):
                return None
            msg = self._accept()
            if msg is None:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                continue
            while self.conflate and sock.get(zmq.EVENTS) & zmq.POLLIN:
                newer = self._accept()
                if newer is not None:
                    self.stats.dropped += 1
                    msg = newer
            return msg

    def _accept(self) -> Message | None:
        """Receive, decode and count one message (one is waiting); None if it is rejected or not ours."""
        try:
            frames = self._bus.recv_message(self.max_bytes, MAX_FRAMES)
            if self._topics and frames[0].bytes not in self._topics:
                return None  # a longer topic that only shares our prefix
            msg = decode(frames, self.max_bytes)
        except BusMessageError as e:
            self.stats.reject(e, self.endpoint, log)
            return None
        self.stats.received += 1
        self.stats.bytes += sum(len(f) for f in frames)
        last = self._last_seq.get(msg.topic)
        if last is not None and msg.seq > last + 1:
            self.stats.gaps += msg.seq - last - 1
        self._last_seq[msg.topic] = msg.seq  # a smaller seq: the publisher restarted
        return msg

    def close(self) -> None:
        self._bus.close()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
