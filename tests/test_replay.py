"""The replay pipeline: frames decoded ahead in any order, features extracted in order, realtime pacing."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from slam.errors import CorruptFrameError
from slam.records import Frame
from slam.replay import FramePipeline


class FakeSequence:
    """Frames whose decoding takes a random time (so parallel readers finish out of order)."""

    def __init__(self, n: int, dt: float = 0.01, corrupt: tuple[int, ...] = (), seed: int = 0):
        self.n, self.dt, self.corrupt = n, dt, set(corrupt)
        self.delays = np.random.default_rng(seed).uniform(0.0, 0.01, n)
        self.reading: set[int] = set()
        self.read: set[int] = set()
        self.max_parallel = 0
        self.lock = threading.Lock()

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> Frame:
        with self.lock:
            self.reading.add(i)
            self.read.add(i)
            self.max_parallel = max(self.max_parallel, len(self.reading))
        time.sleep(self.delays[i])
        with self.lock:
            self.reading.discard(i)
        if i in self.corrupt:
            raise CorruptFrameError(f"frame_{i}.png", "truncated PNG")
        return Frame(index=i, timestamp=100.0 + i * self.dt, image=np.full((4, 4, 3), i, np.uint8), camera=None)


def test_frames_come_in_order_prepared_in_order_and_corrupt_ones_reported():
    seq = FakeSequence(40, corrupt=(7, 8, 30))
    prepared_order = []

    def prepare(frame):
        prepared_order.append(frame.index)
        return frame.index * 10

    with FramePipeline(seq, prepare, len(seq), readers=3, lookahead=6) as pipe:
        items = list(pipe)
    assert [it.index for it in items] == list(range(40))
    assert prepared_order == [i for i in range(40) if i not in (7, 8, 30)]  # strictly in frame order
    for it in items:
        if it.index in (7, 8, 30):
            assert it.frame is None and it.prepared is None
            assert "truncated PNG" in str(it.error) and f"frame_{it.index}.png" in str(it.error)
        else:
            assert it.error is None and it.frame.index == it.index and it.prepared == 10 * it.index
    assert seq.max_parallel >= 2  # decoding did overlap


def test_max_frames_stops_early_and_reads_nothing_beyond():
    seq = FakeSequence(50)
    with FramePipeline(seq, lambda f: None, 5, lookahead=4) as pipe:
        assert [it.index for it in pipe] == [0, 1, 2, 3, 4]
    assert seq.read == {0, 1, 2, 3, 4}


def test_realtime_frames_arrive_at_their_recorded_times():
    seq = FakeSequence(12, dt=0.03)
    with FramePipeline(seq, lambda f: time.perf_counter(), len(seq), realtime=True) as pipe:
        items = list(pipe)
    arrivals = np.array([it.t_arrival for it in items])
    np.testing.assert_allclose(np.diff(arrivals), 0.03, atol=1e-9)  # the schedule itself is exact
    started = np.array([it.prepared for it in items])  # features only after arrival, as with a camera
    assert np.all(started >= arrivals - 1e-6)
    assert np.all(started - arrivals < 0.025)  # and promptly


@pytest.mark.parametrize("speed", [2.0, 0.5])
def test_realtime_speed_scales_the_schedule(speed):
    seq = FakeSequence(8, dt=0.03)
    with FramePipeline(seq, lambda f: None, len(seq), realtime=speed) as pipe:
        arrivals = np.array([it.t_arrival for it in pipe])
    np.testing.assert_allclose(np.diff(arrivals), 0.03 / speed, atol=1e-9)
    with pytest.raises(ValueError, match="positive"):
        FramePipeline(seq, lambda f: None, len(seq), realtime=0.0)


def test_an_unexpected_reader_error_reaches_the_caller():
    class Broken(FakeSequence):
        def __getitem__(self, i):
            if i == 3:
                raise RuntimeError("disk vanished")
            return super().__getitem__(i)

    with FramePipeline(Broken(10), lambda f: None, 10) as pipe, pytest.raises(RuntimeError, match="disk vanished"):
        list(pipe)


def test_preload_decodes_everything_before_the_first_frame():
    seq = FakeSequence(20, corrupt=(4,))
    with FramePipeline(seq, lambda f: len(seq.read), 20, preload=True) as pipe:
        pipe.load()
        assert seq.read == set(range(20))
        items = list(pipe)
    assert [it.index for it in items] == list(range(20))
    assert all(it.prepared == 20 for it in items if it.error is None)
    assert items[4].error is not None and items[4].frame is None
