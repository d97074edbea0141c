"""The progress of a process graph (``slam-run --launch``), read off the SLAM process's ``poses`` endpoint.

The supervising process subscribes to the poses (and the flow-control credit)
the SLAM process publishes and advances a :class:`~slam.cli.console.Progress`
by one per pose, that is per frame tracked, lost or initialising, as in-process
replay does per frame. It only listens, in a thread of its own: ZeroMQ drops
what a slow subscriber does not take at its high-water mark, so the graph never
waits for it. A poses endpoint bound with CURVE keys (tcp off loopback) cannot
be read without a client key it allows: then there is no progress.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from pathlib import Path

from slam.bus import topics
from slam.bus.codec import BusMessageError, Message
from slam.bus.messages import message_to_frame_credit, message_to_pose
from slam.bus.pubsub import Subscriber
from slam.cli import console
from slam.nodes.common import is_off_loopback
from slam.nodes.launch import LaunchSpec

log = logging.getLogger(__name__)

FPS_WINDOW = 30  # poses over which the rate is shown (as slam-run's in-process bar)


class PoseProgress:
    """Advances ``bar`` once per pose message on ``endpoint`` until :meth:`close`.

    The thread ends once the SLAM process says it took the end of the stream (its
    credit with ``end_taken``: every pose was published before it), or, after
    :meth:`close` asked, when nothing more came for ``quiet_ms``.
    """

    def __init__(self, endpoint: str, bar: console.Progress, quiet_ms: int = 200):
        self.endpoint, self.bar, self.quiet_ms = endpoint, bar, quiet_ms
        self.poses = 0
        self.end_seen = False  # the end-of-stream credit came: no pose is still on its way
        self._times: deque[float] = deque(maxlen=FPS_WINDOW + 1)  # time.monotonic of the last poses
        self._closing = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pose-progress", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        sub = Subscriber(None, self.endpoint, topics=[topics.POSES, topics.CREDIT])  # this thread's socket
        try:
            while not self.end_seen:
                msg = sub.recv(timeout_ms=self.quiet_ms)
                if msg is None:
                    if self._closing.is_set():
                        break
                    continue
                try:
                    self._take(msg)
                except BusMessageError as e:
                    sub.stats.reject(e, sub.endpoint, log)
        finally:
            sub.close()

    def _take(self, msg: Message) -> None:
        if msg.type == topics.FRAME_CREDIT:
            self.end_seen = message_to_frame_credit(msg).end_taken
            return
        pose = message_to_pose(msg)
        self._times.append(time.monotonic())
        span = self._times[-1] - self._times[0]
        fps = (len(self._times) - 1) / span if span > 0 else 0.0
        self.poses += 1
        self.bar.update()
        self.bar.set_postfix(fps=f"{fps:.0f}", state=pose.state, refresh=False)

    def close(self, timeout_s: float = 2.0) -> None:
        """After the graph stopped: take the poses still on their way, then close the bar."""
        self._closing.set()
        self._thread.join(timeout_s)
        self.bar.close()


def start_pose_progress(spec: LaunchSpec, run_dir: Path, total: int | None,
                        enabled: bool = True) -> PoseProgress | None:
    """The graph's progress (``total`` frames when known), or None when disabled or the poses are CURVE-protected."""
    if not enabled:
        return None
    if is_off_loopback(spec, "poses"):
        log.debug("no progress: the poses endpoint %s is bound with CURVE keys", spec.endpoints.get("poses"))
        return None
    return PoseProgress(spec.endpoint("poses", run_dir), console.progress(total, "slam-run"))


def sequence_length(sequence: Path | None, max_frames: int | None) -> int | None:
    """The frames a replay of ``sequence`` sends (None: unknown, e.g. a camera)."""
    if sequence is None:
        return max_frames
    from slam.datasets import open_sequence
    from slam.errors import DataError

    try:
        n = len(open_sequence(sequence))
    except (DataError, OSError, TypeError) as e:  # the source process reports it; the bar has no total
        log.debug("progress without a total: %s", e)
        return max_frames
    return n if max_frames is None else min(n, max_frames)
