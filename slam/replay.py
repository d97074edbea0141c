"""Feed a recorded sequence to the tracker as a camera would: decode ahead, extract features in order, pace.

    pipe = FramePipeline(seq, system.prepare, n, realtime=False)
    for item in pipe:                    # in frame order
        if item.error: ...               # a corrupt frame: skip it, say why
        system.process(item.frame, item.prepared)
    pipe.close()

Three stages overlap (OpenCV's decoding and ORB release the GIL):

* ``readers`` threads decode frames up to ``lookahead`` frames ahead (PNG
  decoding of a 640x480 RGB-D frame costs 10-25 ms, as much as tracking);
* one thread extracts features, strictly in frame order (the extractor adapts
  its FAST threshold from frame to frame);
* the caller's thread tracks.

With ``realtime`` a frame "arrives" at its recorded time (relative to the
first frame; ``realtime=2.0``: twice as fast as recorded) and its features
are extracted only then, as with a live camera,
so ``latency_ms`` (arrival to the caller receiving the prepared frame, plus
whatever the caller adds) is what a live user would see. Without it, frames
arrive as fast as the stages allow.

With ``preload`` every frame is decoded into memory before the first one is
delivered (``load()``), so timing runs see what a camera delivers, decoded
frames, without the disk and PNG decoding a replay adds (on the synthetic
RGB-D sequences that decoding costs ~25 ms of CPU per frame, as much as
tracking and mapping together). A 640x480 RGB-D frame takes ~2 MB.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from slam.errors import CorruptFrameError
from slam.records import Frame


@dataclass
class PipelineItem:
    index: int
    frame: Frame | None  # None when the frame could not be read
    prepared: Any  # what ``prepare(frame)`` returned
    error: Exception | None  # why the frame could not be read
    t_arrival: float  # time.perf_counter() when the frame arrived (realtime: its recorded time)


class FramePipeline:
    def __init__(self, seq, prepare: Callable[[Frame], Any], n: int, realtime: bool | float = False,
                 readers: int = 2, lookahead: int = 4, preload: bool = False):
        self.seq, self.prepare, self.n = seq, prepare, int(n)
        # realtime: frames arrive at their recorded times; a number plays the recording that many times faster
        self.realtime = bool(realtime)
        self.speed = 1.0 if isinstance(realtime, bool) else float(realtime)
        if self.speed <= 0:
            raise ValueError(f"replay speed must be positive, got {self.speed}")
        self.preload = preload
        self.lookahead = max(int(lookahead), 1)
        if getattr(seq, "sequential", False):
            readers = 1  # a video decodes in order, in one thread
        self._read_pool = ThreadPoolExecutor(max_workers=max(int(readers), 1), thread_name_prefix="frame-read")
        self._prep_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="frame-features")
        self._reads: dict[int, Future] = {}
        self._next_read = 0
        self._clock: tuple[float, float] | None = None  # (first recorded timestamp, wall time then)

    def load(self) -> None:
        """Decode every frame now (``preload``); a no-op otherwise or when done already."""
        if self.preload and self._next_read < self.n:
            for i in range(self._next_read, self.n):
                self._reads[i] = self._read_pool.submit(self._read, i)
            self._next_read = self.n
            for f in self._reads.values():
                f.result()

    def __iter__(self) -> Iterator[PipelineItem]:
        self.load()
        preps: deque[Future] = deque()
        try:
            for i in range(min(2, self.n)):  # frame i+1 is prepared while frame i is tracked
                preps.append(self._prep_pool.submit(self._prepare, i))
            for i in range(self.n):
                item = preps.popleft().result()
                if i + 2 < self.n:
                    preps.append(self._prep_pool.submit(self._prepare, i + 2))
                yield item
        finally:
            for f in preps:
                f.cancel()

    def close(self) -> None:
        for f in self._reads.values():
            f.cancel()
        self._read_pool.shutdown(wait=True, cancel_futures=True)
        self._prep_pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> FramePipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ stages
    def _read(self, i: int) -> tuple[Frame | None, Exception | None]:
        try:
            return self.seq[i], None
        except CorruptFrameError as e:
            return None, e

    def _prepare(self, i: int) -> PipelineItem:
        """Runs in the feature thread, in frame order."""
        while self._next_read < min(i + self.lookahead, self.n):  # keep the readers ``lookahead`` frames ahead
            self._reads[self._next_read] = self._read_pool.submit(self._read, self._next_read)
            self._next_read += 1
        frame, error = self._reads.pop(i).result()
        t_arrival = time.perf_counter()
        if self.realtime and frame is not None:
            t_arrival = self._wait_for_recorded_time(frame.timestamp)
        prepared = self.prepare(frame) if frame is not None else None
        return PipelineItem(i, frame, prepared, error, t_arrival)

    def _wait_for_recorded_time(self, t_frame: float) -> float:
        """Sleep until the frame's recorded time has come; returns that arrival time (perf_counter)."""
        if self._clock is None:
            self._clock = (t_frame, time.perf_counter())
            return self._clock[1]
        due = self._clock[1] + (t_frame - self._clock[0]) / self.speed
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        return due
