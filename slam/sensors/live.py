"""Live frames with their IMU samples: a camera plus, optionally, a serial IMU on the same (host) clock.

    with open_live_source("/dev/video0", imu="serial") as source:   # or LiveSource(LiveCamera(...), SerialImu(...))
        for frame in source.frames(stop):   # frame.imu: the samples in (previous frame, this frame]
            ...
    source.end_reason, source.fault         # why it ended; the CameraError of a stall/disappearance, or None
    source.stats()                          # camera and IMU counters, for summary.json

Iteration ends at the end of a video, on :meth:`LiveSource.stop` (or the
``stop`` event) or on a camera fault, which is kept in ``fault`` rather than
raised, so the caller saves its results either way.

The IMU is optional and may die at any time (unplugged, silent): frames then
come with no samples and tracking goes on visually; :class:`SerialImu` says so
in the log, once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from slam.records import Frame, ImuSamples
from slam.sensors.camera import CameraError, LiveCamera
from slam.sensors.clock import ClockAligner
from slam.sensors.imu_serial import SerialImu, parse_imu_spec

log = logging.getLogger(__name__)


class LiveSource:
    """Frames of ``camera`` with ``frame.imu`` filled from ``imu`` (None: camera only).

    imu_wait_s: how long a frame waits for the IMU samples up to its time still in transit
    (serial latency); a sample that comes later than that, with a time before the previous
    frame, is dropped and counted (``imu_late``).
    """

    def __init__(self, camera: LiveCamera, imu: SerialImu | None = None, imu_wait_s: float = 0.02):
        self.camera, self.imu, self.imu_wait_s = camera, imu, imu_wait_s
        if imu is not None:  # IMU samples carry host-clock times: a video's frames must too
            camera.file_times = False
        self._prev_t = -np.inf
        self.imu_samples = 0  # attached to frames
        self.imu_late = 0
        self.frames_without_imu = 0
        self.fault: CameraError | None = None  # the stall or disappearance that ended the frames
        self.end_reason: str | None = None

    def start(self) -> LiveSource:
        """Start the IMU (if any, and not started) and the camera (waits for its first frame)."""
        if self.imu is not None and not self.imu.started:
            self.imu.start()
        try:
            self.camera.start()
        except CameraError as e:
            if e.kind == "open":
                self.close()
                raise
            self._fail(e)  # no first frame: frames() yields none, the caller still saves and reports
        except BaseException:  # a bad camera file, Ctrl-C: leave no reader thread behind
            self.close()
            raise
        return self

    def _fail(self, e: CameraError) -> None:
        self.fault, self.end_reason = e, str(e)
        log.error("%s; the live source stops", e)

    def __iter__(self) -> Iterator[Frame]:
        return self.frames()

    def frames(self, stop: threading.Event | None = None) -> Iterator[Frame]:
        """Frames with their IMU samples until the camera ends, faults (see ``fault``) or ``stop`` is set."""
        if self.fault is not None:
            return
        done = threading.Event()
        watcher = None
        if stop is not None:  # relay an outside stop event to the camera, which polls its own
            def relay() -> None:
                while not done.wait(0.05):
                    if stop.is_set():
                        self.stop()
                        return

            watcher = threading.Thread(target=relay, name="live-stop", daemon=True)
            watcher.start()
        try:
            for frame in self.camera.frames():
                if self.imu is not None:
                    frame.imu = self._imu_for(frame.timestamp)
                    self.imu_samples += len(frame.imu)
                    if not len(frame.imu):
                        self.frames_without_imu += 1
                self._prev_t = frame.timestamp
                yield frame
        except CameraError as e:
            if e.kind == "open":
                raise
            self._fail(e)
        finally:
            done.set()
            if watcher is not None:
                watcher.join()
            self.end_reason = str(self.fault) if self.fault else self.camera.stats().stop_reason

    def _imu_for(self, t: float) -> ImuSamples:
        imu = self.imu
        if imu.alive:
            imu.wait_until(t, self.imu_wait_s)
        batch = imu.take_until(t)
        late = batch.t <= self._prev_t
        if late.any():
            self.imu_late += int(late.sum())
            keep = ~late
            batch = ImuSamples(batch.t[keep], batch.gyro[keep], batch.accel[keep])
        return batch

    def stop(self) -> None:
        """End the iteration after the current frame (safe from a signal handler)."""
        self.camera.stop()

    def close(self) -> None:
        self.camera.close()
        if self.imu is not None:
            self.imu.close()

    def __enter__(self) -> LiveSource:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def stats(self) -> dict:
        """Camera and IMU counters (JSON-ready)."""
        out: dict = {"end_reason": self.end_reason, "fault": None if self.fault is None else self.fault.kind,
                     "camera": self.camera.stats().to_dict(), "imu": None}
        if self.imu is not None:
            out["imu"] = {"port": self.imu.name, "baud": self.imu.baud, "alive": self.imu.alive,
                          **self.imu.stats().to_dict(), "attached_to_frames": self.imu_samples,
                          "late_dropped": self.imu_late, "frames_without_imu": self.frames_without_imu}
        return out


def open_live_source(camera: str | int, imu: str | None = None, width: int | None = None, height: int | None = None,
                     fps: float | None = None, camera_file: str | Path | None = None, realtime: bool = False,
                     stall_timeout_s: float = 2.0, imu_time_shift_s: float = 0.0) -> LiveSource:
    """A live source from command-line/launch-file values (not started: use ``with`` or ``start()``).

    imu: ``serial[:PORT[:BAUD]]`` or None; imu_time_shift_s: ``t_imu = t_cam + shift`` (Kalibr's
    ``timeshift_cam_imu``). Raises :class:`~slam.errors.DataError` (naming the device) on a bad spec or
    when no IMU port can be found.
    """
    serial_imu = None
    if imu:
        port, baud = parse_imu_spec(imu).resolve()
        serial_imu = SerialImu(port, baud, clock=ClockAligner(extra_offset_s=-imu_time_shift_s))
    cam = LiveCamera(camera, width, height, fps, camera_file=camera_file, realtime=realtime,
                     stall_timeout_s=stall_timeout_s)
    return LiveSource(cam, serial_imu)
