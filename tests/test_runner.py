"""The one frame loop (slam.runner): back-pressure on local mapping, stop requests, every frame accounted for."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from slam.backbone.frontend.tracking import State
from slam.replay import PipelineItem
from slam.runner import Runner, StopRequest, describe_accounting, frame_accounting


@dataclass
class _Result:
    index: int
    state: State
    is_keyframe: bool
    timings_ms: dict = field(default_factory=lambda: {"total": 1.0})


class _SlowMapperSystem:
    """Every 3rd frame is a keyframe that a mapping thread takes ``map_s`` to process.

    Records, for each tracked frame, how many keyframes the mapper still had (queued or in work).
    """

    def __init__(self, map_s: float = 0.03):
        self.map_s = map_s
        self.backlog = 0
        self.cond = threading.Condition()
        self.backlog_seen: list[int] = []
        self.results: list[_Result] = []

    def _map(self) -> None:
        time.sleep(self.map_s)
        with self.cond:
            self.backlog -= 1
            self.cond.notify_all()

    def wait_for_mapping(self, max_backlog: int = 0, timeout: float | None = None) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: self.backlog <= max_backlog, timeout)

    def process(self, frame, prepared=None) -> _Result:
        with self.cond:
            self.backlog_seen.append(self.backlog)
        kf = frame % 3 == 0
        if kf:
            with self.cond:
                self.backlog += 1
            threading.Thread(target=self._map, daemon=True).start()
        res = _Result(frame, State.OK if frame else State.NOT_INITIALIZED, kf)
        self.results.append(res)
        return res


def _items(n: int, unreadable: tuple[int, ...] = ()):
    for i in range(n):
        err = OSError(f"frame {i} unreadable") if i in unreadable else None
        yield PipelineItem(i, None if err else i, None, err, time.perf_counter())


@pytest.mark.parametrize("lag", [0, 1, 2])
def test_back_pressure_never_tracks_ahead_of_local_mapping(lag):
    system = _SlowMapperSystem()
    report = Runner(system, back_pressure=True, mapping_lag=lag).run(_items(12))
    assert report.processed == 12 and report.stop_reason is None
    # a frame is tracked with the mapper still on a keyframe only within ``lag`` frames after it
    for i, backlog in enumerate(system.backlog_seen):
        since_kf = i - 1 - (i - 1) // 3 * 3 if i else 0  # frames tracked since the last keyframe
        assert backlog <= 1 and (backlog == 0 or since_kf < lag), (i, backlog)
    assert report.mapping_wait_s > 0


def test_without_back_pressure_tracking_runs_ahead():
    system = _SlowMapperSystem(map_s=0.2)
    Runner(system, back_pressure=False).run(_items(12))
    assert max(system.backlog_seen) >= 2  # keyframes pile up: what a camera-paced run may see


def test_stop_request_ends_the_loop_and_the_rest_is_counted_as_not_processed():
    system, stop = _SlowMapperSystem(map_s=0.0), StopRequest()
    runner = Runner(system, stop=stop, on_result=lambda res: res.index == 4 and stop.request("SIGTERM"))
    report = runner.run(_items(10, unreadable=(2,)))
    assert report.stop_reason == "SIGTERM" and report.processed == 4
    acc = frame_accounting(system, report, frames=10)
    assert acc == {"frames": 10, "tracked": 3, "lost": 0, "initialising": 1, "unreadable": 1, "dropped_by_bus": 0,
                   "rejected_by_bus": 0, "not_processed": 5}
    assert describe_accounting(acc) == ("10 frames: 3 tracked, 0 lost, 1 initialising, 1 unreadable, "
                                        "5 not processed before the stop")


def test_bus_accounting_counts_what_the_bus_dropped():
    system = _SlowMapperSystem(map_s=0.0)
    report = Runner(system).run(_items(6))
    # the source sent 8 (+1 it could not read), the SLAM process took 7 (1 malformed): 1 dropped on the way
    report.skipped = [{"index": 3, "reason": "corrupt"}]
    acc = frame_accounting(system, report, frames=9, received=7, rejected=1)
    assert (acc["dropped_by_bus"], acc["rejected_by_bus"], acc["not_processed"], acc["unreadable"]) == (1, 1, 0, 1)
    assert sum(v for k, v in acc.items() if k != "frames") == 9


def test_max_frames_counts_unreadable_frames_too():
    report = Runner(_SlowMapperSystem(map_s=0.0), max_frames=5).run(_items(10, unreadable=(1,)))
    assert report.processed == 4 and len(report.skipped) == 1 and report.stop_reason == "--max-frames 5"
