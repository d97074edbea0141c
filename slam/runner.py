"""One frame loop for every way frames reach the SLAM system: replay, a live camera, the SLAM process of a graph.

    stop = StopRequest()
    runner = Runner(system, stop=stop, back_pressure=True, on_result=show)
    report = runner.run(items)            # PipelineItem-like records, in frame order
    accounting = frame_accounting(system, report, frames=n)

Each item carries a decoded frame (or why it could not be read), its features
when they were extracted ahead (``prepared``) and when it arrived
(``t_arrival``, ``time.perf_counter``; None: unknown). The loop stops when the
items run out, at ``max_frames``, or when ``stop`` is set (a signal, a fault of
the source): what it tracked so far is the system's, to save.

Back-pressure (offline replay): a replay must not outrun local mapping.
Tracking a frame after a keyframe may overlap the mapping of that keyframe
for ``mapping_lag`` frames; before the next one the loop waits until the
mapper has finished it. So the map a frame is tracked against, and whether
the mapper is idle when tracking decides on a keyframe, are what a camera
slow enough for this machine gives, however fast frames could be decoded.
Measured on the KITTI 07 clip (mono, 2 loaded cores; Sim3 ATE, lost frames,
keyframes, wall time): lag 1 0.310-0.317 m, 0 lost in 5 of 5 runs, 78
keyframes, 20 s, as ``--realtime`` at the clip's 10 Hz in the same conditions
(0.314 m, 0 lost, 80, 19 s); lag 0 (= ``--sync-mapping``) 0.335 m, 0 lost but a
keyframe almost every frame, 3x the wall time; lag 2 0.30-0.33 m with up to 4
frames lost; no back-pressure (before) 0.29-0.99 m, up to 8 lost, 11-22 s. On
the synthetic 600-frame RGB-D loop lag 1 gives 3.3-3.6 mm against 3.4 mm with
``--sync-mapping`` (no back-pressure: 5.4 mm). Lag 1 is the monocular default.
With depth (RGB-D, stereo) keyframes are rarer and cheap to map, and lag 1
still let the keyframes fall differently from the deterministic run: on three
renders of that loop (quiet 2 cores, benchmarks/backbone.py) lag 1 gave 3.5 /
6.1 / 4.3 mm against 3.4 / 4.0 / 5.4 mm with ``--sync-mapping``, while lag 0
gave 4.0 mm on the 6.1 mm render in 4 % more wall time (9.9 against 9.5 s). So
RGB-D and stereo replay waits for each keyframe (lag 0) by default.
Decoding and feature extraction of the next frames overlap
mapping either way. Without back-pressure (``--realtime``, live cameras)
tracking goes on while the mapper works, as it must at camera rate.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from slam.backbone.frontend.tracking import FrameResult, State
from slam.backbone.system import System
from slam.outputs import FrameTimes

log = logging.getLogger(__name__)

DEFAULT_MAPPING_LAG = 1  # frames tracked while the mapper works on the last keyframe (see above): monocular
DEFAULT_MAPPING_LAG_DEPTH = 0  # with depth (RGB-D, stereo): wait for each keyframe (see above)


def default_mapping_lag(mode: str) -> int:
    """The back-pressure lag a replay uses in ``mode`` unless told otherwise."""
    return DEFAULT_MAPPING_LAG if mode.startswith("mono") else DEFAULT_MAPPING_LAG_DEPTH


class StopRequest(threading.Event):
    """A stop event that remembers why it was set first (``reason``), e.g. "interrupted (Ctrl-C)"."""

    def __init__(self) -> None:
        super().__init__()
        self.reason: str | None = None

    def request(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.set()


@dataclass
class RunReport:
    """What the loop did with the items it was given."""

    processed: int = 0  # frames handed to the system (tracked, lost or initialising)
    skipped: list[dict] = field(default_factory=list)  # frames that could not be read: index, reason
    stop_reason: str | None = None  # None: the items ran out
    mapping_wait_s: float = 0.0  # time spent waiting for local mapping (back-pressure)


class Runner:
    """Feeds items to ``system`` in order, timing each pose (``times``) and reporting it (``on_result``)."""

    def __init__(self, system: System, *, stop: threading.Event | None = None, times: FrameTimes | None = None,
                 back_pressure: bool = False, on_result: Callable[[FrameResult], None] | None = None,
                 max_frames: int | None = None, mapping_lag: int = DEFAULT_MAPPING_LAG):
        self.system = system
        self.mapping_lag = mapping_lag  # back-pressure: frames tracked while the mapper works on a keyframe
        self._since_kf = 0  # frames tracked since the last keyframe insertion
        self.stop = stop if stop is not None else StopRequest()
        self.times = times if times is not None else FrameTimes()
        self.back_pressure = back_pressure
        self.on_result = on_result
        self.max_frames = max_frames
        self.report = RunReport()

    def run(self, items: Iterable) -> RunReport:
        rep = self.report
        for item in items:
            if self.stop.is_set():
                rep.stop_reason = getattr(self.stop, "reason", None) or "stopped"
                break
            if item.error is not None or item.frame is None:
                log.warning("skipping frame %d: %s", item.index, item.error)
                rep.skipped.append({"index": item.index, "reason": str(item.error)})
            else:
                self._track(item)
            if self.max_frames is not None and rep.processed + len(rep.skipped) >= self.max_frames:
                rep.stop_reason = f"--max-frames {self.max_frames}"
                break
        else:
            if self.stop.is_set():  # the items ended because of the stop (a source that watches it)
                rep.stop_reason = getattr(self.stop, "reason", None) or "stopped"
        return rep

    def _track(self, item) -> None:
        if self.back_pressure and self._since_kf >= self.mapping_lag:
            # The mapper finishes the last keyframe before more frames are tracked: the replay
            # cannot outrun it (backlog > 0 only after a keyframe was inserted).
            t0 = time.perf_counter()
            self.system.wait_for_mapping(0)
            self.report.mapping_wait_s += time.perf_counter() - t0
        res = self.system.process(item.frame, item.prepared)
        self._since_kf = 0 if res.is_keyframe else self._since_kf + 1
        self.report.processed += 1
        latency = None if item.t_arrival is None else time.perf_counter() - item.t_arrival
        self.times.add(res.timings_ms["total"], latency)
        if self.on_result is not None:
            self.on_result(res)


def frame_accounting(system: System | None, report: RunReport, frames: int, *, received: int | None = None,
                     rejected: int = 0) -> dict:
    """Where every frame of the source went; the counts add up to ``frames``.

    frames: the frames the source had (replay: the frames to replay; a graph: sent + unreadable).
    received: frames the SLAM process took off the bus (a graph; None in process), so that
    ``dropped_by_bus`` = sent - received; rejected: malformed frame messages among them.
    """
    results = system.results if system is not None else []
    by_state = {s: sum(r.state == s for r in results) for s in State}
    unreadable = len(report.skipped)
    if received is None:  # in process: whatever the loop did not reach
        dropped, not_processed = 0, frames - unreadable - report.processed
    else:
        dropped = max(frames - unreadable - received, 0)
        not_processed = max(received - rejected - report.processed, 0)
    return {
        "frames": frames,
        "tracked": by_state[State.OK],
        "lost": by_state[State.LOST],
        "initialising": by_state[State.NOT_INITIALIZED],
        "unreadable": unreadable,
        "dropped_by_bus": dropped,
        "rejected_by_bus": rejected,
        "not_processed": not_processed,
    }


def describe_accounting(acc: dict) -> str:
    """One console line: "300 frames: 290 tracked, 0 lost, 10 initialising" plus any other non-zero count."""
    parts = [f"{acc['tracked']} tracked", f"{acc['lost']} lost"]
    names = {"initialising": "initialising", "unreadable": "unreadable", "dropped_by_bus": "dropped by the bus",
             "rejected_by_bus": "rejected by the bus", "not_processed": "not processed before the stop"}
    parts += [f"{acc[k]} {name}" for k, name in names.items() if acc.get(k)]
    return f"{acc['frames']} frames: " + ", ".join(parts)
