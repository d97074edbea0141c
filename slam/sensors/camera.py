"""A live camera through ``cv2.VideoCapture``: a device (``0``, ``/dev/video0``), a stream URL or a video file.

    cam = LiveCamera("/dev/video0", width=640, height=480, fps=30).start()  # waits for the first frame
    for frame in cam.frames():      # Frame records, RGB, host-clock timestamps (a video file: its own)
        ...
    cam.close()

A grabber thread reads frames into a small queue. From a device the queue
keeps the newest ``queue_size`` frames and drops the oldest when tracking falls
behind (counted); from a video file nothing is dropped: the file is read as
fast as it is consumed, or at its own rate with ``realtime=True``.

Timestamps of a video file are the file's own frame times (seconds from its
start, ``CAP_PROP_POS_MSEC``; ``index / fps`` where it reports none), so a replay
of a recording is evaluated against its ground truth without a ``--t-offset``
(``file_times=False`` puts them on the host clock, for pairing with a live IMU).
Timestamps of a device or stream are ``time.monotonic()`` seconds, the clock the
IMU is aligned to. When the capture reports increasing frame times (``CAP_PROP_POS_MSEC``: V4L2's
buffer stamps, a file's presentation times) they are mapped onto the host
clock by a :class:`~slam.sensors.clock.ClockAligner`, which removes the jitter
of the moment the thread happened to read; otherwise the arrival time is used.

:meth:`frames` ends when a video ends; it raises :class:`CameraError` when no
frame comes for ``stall_timeout_s`` ("stall") or reads fail ``fail_limit``
times in a row or the device node vanishes ("disappeared"). It never blocks
longer than the stall timeout.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import cv2
import numpy as np

from slam.datasets.base import load_camera_yaml
from slam.datasets.video import VideoSequence, guess_camera
from slam.errors import DataError
from slam.geometry.camera import PinholeCamera
from slam.records import Frame
from slam.sensors.clock import ClockAligner

log = logging.getLogger(__name__)


class CameraError(DataError):
    """The camera cannot be opened, stalled or disappeared; ``kind`` is "open", "stall" or "disappeared"."""

    def __init__(self, source: str | Path | None, message: str, kind: str = "open"):
        self.kind = kind
        super().__init__(source, message)


@dataclass(frozen=True)
class CameraSource:
    """What ``--camera`` names: ``kind`` "device" (index or path), "file" or "stream" (URL)."""

    kind: str
    arg: str | int  # what cv2.VideoCapture opens
    label: str  # for messages

    @property
    def api(self) -> int:
        """Capture backend: V4L2 for a Linux device path (FFmpeg would not open it), else any."""
        if self.kind == "device" and isinstance(self.arg, str) and sys.platform.startswith("linux"):
            return cv2.CAP_V4L2
        return cv2.CAP_ANY


def resolve_source(source: str | int) -> CameraSource:
    """A device index (``0``, ``"0"``), a device path (``/dev/video0``), a URL or an existing video file."""
    if isinstance(source, int) or (isinstance(source, str) and source.isdigit()):
        return CameraSource("device", int(source), f"camera {int(source)}")
    s = str(source)
    if "://" in s:
        return CameraSource("stream", s, s)
    p = Path(s)
    if s.startswith("/dev/"):
        if not p.exists():
            raise CameraError(s, "no such camera device (is it plugged in? see `ls /dev/video*`)")
        return CameraSource("device", s, s)
    if p.is_dir():
        raise CameraError(s, "is a folder; --camera takes a camera device (0, /dev/video0) or a video file "
                             "(a sequence folder is replayed with `slam-run SEQUENCE`)")
    if not p.is_file():
        raise CameraError(s, "no such camera device or video file")
    return CameraSource("file", s, s)


def camera_for_video(path: str | Path, width: int, height: int) -> PinholeCamera:
    """The camera the video reader uses: ``<stem>.yaml`` or ``camera.yaml`` next to the file, else a guess."""
    p = Path(path)
    return VideoSequence._load_camera(SimpleNamespace(root=p, name=p.stem), width, height)  # type: ignore[arg-type]


@dataclass
class CameraStats:
    source: str = ""
    width: int | None = None
    height: int | None = None
    frames: int = 0  # delivered to the consumer
    grabbed: int = 0  # read from the capture
    dropped: int = 0  # grabbed but replaced by newer frames before the consumer took them
    read_failures: int = 0
    stalls: int = 0
    disappeared: bool = False
    # "file" (a video's own frame times), "driver" (capture times mapped to the host clock) or "host" (arrival)
    timestamps: str | None = None
    timestamp_fixes: int = 0  # frame times that did not increase, moved 1 us after the previous one
    fps: float | None = None  # median rate of grabbed frames
    stop_reason: str | None = None
    last_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def open_capture(arg: str | int, api: int) -> Any:
    """The default capture factory: ``cv2.VideoCapture(arg, api)``."""
    return cv2.VideoCapture(arg, api)


class LiveCamera:
    """Frames from ``source`` (see :func:`resolve_source`) as :class:`~slam.records.Frame` records.

    width/height/fps: asked of a device (what it delivers is used, with a warning when it differs);
    camera / camera_file: intrinsics (default: next to a video file, else a guess, with a warning);
    realtime: pace a video file at its own rate (default: as fast as consumed, nothing dropped);
    stall_timeout_s: no frame for this long ends :meth:`frames` with a "stall" :class:`CameraError`
    (``first_frame_timeout_s`` for the first frame: cameras take a while to start);
    fail_limit: consecutive failed reads that mean the device is gone;
    capture_factory: ``(arg, api) -> VideoCapture-like`` (tests pass fakes);
    file_times: a video file's frames keep the file's times (default) instead of the host clock.
    """

    def __init__(self, source: str | int, width: int | None = None, height: int | None = None,
                 fps: float | None = None, *, camera: PinholeCamera | None = None,
                 camera_file: str | Path | None = None, realtime: bool = False, stall_timeout_s: float = 2.0,
                 first_frame_timeout_s: float = 10.0, queue_size: int = 2, fail_limit: int = 5,
                 capture_factory: Callable[[str | int, int], Any] | None = None, file_times: bool = True):
        self.src = resolve_source(source)
        self.width, self.height, self.fps = width, height, fps
        self.camera_file = None if camera_file is None else Path(camera_file)
        self.camera: PinholeCamera | None = camera
        self.realtime = realtime
        self.stall_timeout_s, self.first_frame_timeout_s = stall_timeout_s, first_frame_timeout_s
        self.queue_size, self.fail_limit = max(1, int(queue_size)), max(1, int(fail_limit))
        self.capture_factory = capture_factory or open_capture
        self.is_file = self.src.kind == "file"
        self.file_times = self.is_file and file_times
        self._cap: Any = None
        self._queue: deque[tuple] = deque()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._clock = ClockAligner(window_s=10.0)
        self._last_grab = time.monotonic()
        self._grab_dt: deque[float] = deque(maxlen=100)
        self._stats = CameraStats(source=self.src.label)
        self._ended = False

    @property
    def label(self) -> str:
        """The source as error messages start with it: ``camera 0``, ``/dev/video0``, a file path."""
        return self.src.label

    @property
    def name(self) -> str:
        """The source as log lines name it: ``camera 0``, ``camera /dev/video0``, ``camera clip.avi``."""
        return self.label if self.label.startswith("camera ") else f"camera {self.label}"

    # ------------------------------------------------------------ lifecycle
    def start(self) -> LiveCamera:
        """Open the capture, start grabbing and wait for the first frame (its size sets the camera model)."""
        if self._thread is not None:
            return self
        try:
            cap = self.capture_factory(self.src.arg, self.src.api)
        except Exception as e:  # noqa: BLE001 - a backend may raise anything on a bad source
            raise CameraError(self.label, f"cannot open: {e}") from None
        if cap is None or not cap.isOpened():
            what = "the video (unknown codec or not a video)" if self.is_file else "the camera (busy or not a camera?)"
            raise CameraError(self.label, f"cannot open {what}")
        self._cap = cap
        self._configure()
        self._last_grab = time.monotonic()
        self._thread = threading.Thread(target=self._grab_loop, name="camera-grab", daemon=True)
        self._thread.start()
        first = self._wait_first()
        h, w = first[2].shape[:2]
        self._stats.width, self._stats.height = w, h
        self.camera = self._camera_model(w, h)
        log.info("%s: %dx%d", self.name, w, h)
        return self

    def stop(self) -> None:
        """Ask :meth:`frames` to end after the frame it is on (thread- and signal-safe: waits poll at 10 Hz)."""
        self._stop.set()

    def close(self, timeout: float = 1.0) -> None:
        self.stop()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # blocked in read(): releasing under it may crash the backend
                log.warning("%s: grabber still blocked in read(); leaving the capture open", self.name)
                return
        if self._cap is not None:
            try:
                self._cap.release()
            except Exception as e:  # noqa: BLE001 - a failing backend may raise anything
                log.debug("%s: release failed: %s", self.name, e)
            self._cap = None

    def __enter__(self) -> LiveCamera:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> CameraStats:
        with self._cond:
            self._stats.fps = float(1.0 / np.median(self._grab_dt)) if self._grab_dt else None
            return CameraStats(**asdict(self._stats))

    # ------------------------------------------------------------ setup
    def _configure(self) -> None:
        asked = {cv2.CAP_PROP_FRAME_WIDTH: self.width, cv2.CAP_PROP_FRAME_HEIGHT: self.height,
                 cv2.CAP_PROP_FPS: self.fps}
        if self.is_file:
            if any(v is not None for v in asked.values()):
                log.warning("%s: --width/--height/--fps are for devices; a video file plays as recorded",
                            self.name)
            return
        for prop, v in asked.items():
            if v is not None:
                try:
                    self._cap.set(prop, float(v))
                except Exception as e:  # noqa: BLE001
                    log.debug("%s: cannot set property %d: %s", self.name, prop, e)
        if self.fps is not None:
            got = _get(self._cap, cv2.CAP_PROP_FPS)
            if got and abs(got - self.fps) > 0.5:
                log.warning("%s: asked for %g fps, the driver reports %g", self.name, self.fps, got)

    def _camera_model(self, w: int, h: int) -> PinholeCamera:
        if (self.width or self.height) and not self.is_file and (w, h) != (self.width or w, self.height or h):
            log.warning("%s: asked for %sx%s, it delivers %dx%d", self.name, self.width, self.height, w, h)
        cam = self.camera
        if cam is None and self.camera_file is not None:
            cam = load_camera_yaml(self.camera_file)
        elif cam is None and self.is_file:
            return camera_for_video(self.src.arg, w, h)
        elif cam is None:
            cam = guess_camera(w, h)
            log.warning("%s: no --camera-file; GUESSING the camera fx = fy = %.1f, principal point at the "
                        "centre, no distortion (calibrate with `slam-calib camera`)", self.name, cam.fx)
            return cam
        if (cam.width, cam.height) == (w, h):
            return cam
        where = self.camera_file or "the camera model"
        if cam.width * h == cam.height * w:  # same aspect: the driver scaled the image
            log.warning("%s is for %dx%d; %s delivers %dx%d: scaling the intrinsics", where, cam.width,
                        cam.height, self.name, w, h)
            return cam.scaled(w / cam.width)
        raise CameraError(where, f"is for {cam.width}x{cam.height} but {self.name} delivers {w}x{h}")

    def _wait_first(self) -> tuple:
        deadline = time.monotonic() + self.first_frame_timeout_s
        with self._cond:
            while not self._queue and time.monotonic() < deadline:
                self._cond.wait(min(deadline - time.monotonic(), 0.1))
            item = self._queue[0] if self._queue else None
            if item is None:
                self._stats.stalls += 1
                self._stats.stop_reason = f"no frame within {self.first_frame_timeout_s:g} s of opening"
        if item is not None and item[0] == "frame":
            return item
        self.close()
        if item is None:
            raise CameraError(self.label, self._stats.stop_reason, kind="stall")
        if item[0] == "error":
            self._stats.stop_reason = self._stats.last_error = str(item[1])
            self._stats.disappeared = item[1].kind == "disappeared"
            raise item[1]
        self._stats.stop_reason = f"delivered no frame ({item[1]})"
        raise CameraError(self.label, self._stats.stop_reason, kind="open")

    # ------------------------------------------------------------ grabber thread
    def _grab_loop(self) -> None:
        fails, index = 0, 0
        pace: tuple[float, float] | None = None  # (first frame time [s], host time then)
        prev_t = -np.inf
        prev_pts = None
        while not self._stop.is_set():
            try:
                ok, bgr = self._cap.read()
            except Exception as e:  # noqa: BLE001 - a failing backend may raise
                ok, bgr = False, None
                self._stats.last_error = f"{type(e).__name__}: {e}"
            arrival = time.monotonic()
            if not ok or bgr is None:
                if self.is_file:
                    total = _get(self._cap, cv2.CAP_PROP_FRAME_COUNT)
                    reason = "end of video" if not total or index >= total - 1 else \
                        f"video ended early: frame {index} of {int(total)} cannot be decoded"
                    self._put(("end", reason))
                    return
                fails += 1
                with self._cond:
                    self._stats.read_failures += 1
                gone = isinstance(self.src.arg, str) and self.src.arg.startswith("/dev/") \
                    and not os.path.exists(self.src.arg)
                if gone or fails >= self.fail_limit:
                    why = "its device node is gone" if gone else f"{fails} reads failed in a row"
                    self._put(("error", CameraError(self.label, f"camera disappeared: {why}", kind="disappeared")))
                    return
                self._stop.wait(0.05)
                continue
            fails = 0
            pts = _get(self._cap, cv2.CAP_PROP_POS_MSEC)
            if self.is_file and self.realtime and pts is not None and np.isfinite(pts):
                if pace is None:
                    pace = (pts / 1e3, arrival)
                delay = pace[1] + (pts / 1e3 - pace[0]) - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
                arrival = time.monotonic()
            t = self._timestamp(index, pts, prev_pts, arrival)
            prev_pts = pts
            if t <= prev_t:
                t = prev_t + 1e-6
                self._stats.timestamp_fixes += 1
            prev_t = t
            rgb = cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB if bgr.ndim == 2 else cv2.COLOR_BGR2RGB)
            with self._cond:
                if index:
                    self._grab_dt.append(arrival - self._last_grab)
                self._last_grab = arrival
                self._stats.grabbed += 1
            self._put(("frame", index, rgb, t))
            index += 1

    def _timestamp(self, index: int, pts: float | None, prev_pts: float | None, arrival: float) -> float:
        """Time of a frame: a video's own time, or on the host clock the capture's time mapped, or the arrival."""
        valid = pts is not None and np.isfinite(pts) and pts >= 0
        if self.file_times:
            if index == 0:
                self._stats.timestamps = "file"
                log.info("%s: timestamps from the video file's frame times", self.name)
            if valid and (prev_pts is None or pts > prev_pts):
                return pts / 1e3
            fps = _get(self._cap, cv2.CAP_PROP_FPS)
            return index / (fps if fps and fps > 0 else 30.0)
        if index == 1:  # decide once: driver times if the first two increase
            self._stats.timestamps = "driver" if valid and prev_pts is not None and pts > prev_pts else "host"
            log.info("%s: timestamps from %s", self.name, "the capture, aligned to the host clock"
                     if self._stats.timestamps == "driver" else "the arrival on the host")
        if index == 0 or self._stats.timestamps == "driver":
            if valid and (prev_pts is None or pts > prev_pts):
                self._clock.add(pts / 1e3, arrival)
                return self._clock.to_host(pts / 1e3)
            return arrival
        return arrival

    def _put(self, item: tuple) -> None:
        """Queue ``item``. A full queue: a file's frame waits for room, a device's replaces the oldest frame.

        The end and error markers are always queued (after the frames before them).
        """
        with self._cond:
            if item[0] == "frame" and self.is_file:
                while len(self._queue) >= self.queue_size and not self._stop.is_set():
                    self._cond.wait(0.1)
            elif item[0] == "frame" and len(self._queue) >= self.queue_size:
                self._queue.popleft()
                self._stats.dropped += 1
            self._queue.append(item)
            self._cond.notify_all()

    # ------------------------------------------------------------ consumer
    def frames(self) -> Iterator[Frame]:
        """Frames in order until the source ends or :meth:`stop`; raises :class:`CameraError` on a fault."""
        self.start()
        while True:
            with self._cond:
                while not self._queue and not self._stop.is_set():
                    since = time.monotonic() - self._last_grab
                    if since >= self.stall_timeout_s:
                        self._stats.stalls += 1
                        self._stats.stop_reason = f"no frame for {self.stall_timeout_s:g} s (camera stalled)"
                        self._stats.last_error = self._stats.stop_reason
                        raise CameraError(self.label, self._stats.stop_reason, kind="stall")
                    self._cond.wait(min(self.stall_timeout_s - since, 0.1))
                if self._stop.is_set() and not self._queue:
                    self._stats.stop_reason = self._stats.stop_reason or "stopped"
                    return
                item = self._queue.popleft()
                self._cond.notify_all()
                if item[0] == "frame":
                    self._stats.frames += 1
            if item[0] == "end":
                self._stats.stop_reason = item[1]
                log.info("%s: %s after %d frames", self.name, item[1], self._stats.frames)
                return
            if item[0] == "error":
                self._stats.disappeared = item[1].kind == "disappeared"
                self._stats.stop_reason = self._stats.last_error = str(item[1])
                raise item[1]
            _, index, rgb, t = item
            yield Frame(index=index, timestamp=t, image=rgb, camera=self.camera, source=f"{self.label}#{index}")
            if self._stop.is_set():
                self._stats.stop_reason = self._stats.stop_reason or "stopped"
                return


def _get(cap: Any, prop: int) -> float | None:
    try:
        v = float(cap.get(prop))
    except Exception:  # noqa: BLE001 - fakes and odd backends
        return None
    return v if np.isfinite(v) else None
