"""LiveSource: camera frames with the IMU samples since the previous frame, on one clock; an IMU that dies."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from slam.sensors import (
    CameraError,
    LiveCamera,
    LiveSource,
    SerialImu,
    open_live_source,
)

from .conftest import FakeCapture, imu_line, write_video

OFFSET_NS = 5_000_000_000_000  # the IMU's clock runs 5000 s ahead of the host's


def imu_writer(dev, stop: threading.Event, unplug_after_s: float | None = None):
    """Samples at 200 Hz stamped with the host clock (+ offset) when written, as a device would."""

    def run():
        dev.write(b"# start\n")
        t0 = time.monotonic()
        next_ns = time.monotonic_ns()
        while not stop.is_set():
            now = time.monotonic_ns()
            while next_ns <= now:
                dev.write(imu_line(next_ns + OFFSET_NS))
                next_ns += 5_000_000
            if unplug_after_s is not None and time.monotonic() - t0 > unplug_after_s:
                dev.unplug()
                return
            time.sleep(0.004)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def test_frames_carry_the_imu_samples_between_them(tmp_path, pty_device):
    video = write_video(tmp_path / "clip.avi", n=12, fps=20.0)
    imu = SerialImu(pty_device.name)
    source = LiveSource(LiveCamera(str(video), realtime=True), imu)
    stop = threading.Event()
    imu.start()
    writer = imu_writer(pty_device, stop)
    try:
        time.sleep(0.2)
        frames = list(source.start())
    finally:
        stop.set()
        writer.join(2.0)
        source.close()
    assert len(frames) == 12
    prev = -np.inf
    for f in frames[1:]:
        t = f.imu.t
        assert np.all((t > prev) & (t <= f.timestamp)) and np.all(np.diff(t) > 0)
        assert 4 <= len(f.imu) <= 16  # 10 samples per 50 ms frame, give or take the frame jitter
        prev = f.timestamp
        np.testing.assert_allclose(f.imu.gyro, np.tile([0.1, -0.2, 0.3], (len(f.imu), 1)))
    # the IMU clock was mapped onto the host's: the newest sample of a frame is within a few ms of it
    gaps = [f.timestamp - f.imu.t[-1] for f in frames[1:]]
    assert np.median(gaps) < 0.01 and max(gaps) < 0.03, gaps
    st = source.stats()
    assert st["imu"]["alive"] and st["imu"]["garbage"] == 0 and st["imu"]["samples"] >= st["imu"]["attached_to_frames"]
    assert st["camera"]["frames"] == 12 and st["imu"]["frames_without_imu"] == 0


def test_imu_unplugged_mid_run_leaves_frames_without_samples(tmp_path, pty_device, caplog):
    video = write_video(tmp_path / "clip.avi", n=16, fps=20.0)
    imu = SerialImu(pty_device.name, reopen_s=0.1)
    source = LiveSource(LiveCamera(str(video), realtime=True), imu)
    stop = threading.Event()
    imu.start()
    writer = imu_writer(pty_device, stop, unplug_after_s=0.35)
    try:
        frames = list(source.start())
    finally:
        stop.set()
        writer.join(2.0)
        source.close()
    assert len(frames) == 16  # the camera goes on
    counts = [len(f.imu) for f in frames]
    assert counts[2] > 0 and counts[-3:] == [0, 0, 0]
    st = source.stats()
    assert not st["imu"]["alive"] and st["imu"]["disconnects"] == 1 and st["imu"]["frames_without_imu"] >= 3
    assert "visual-only" in caplog.text


def test_camera_only_and_a_fault_ends_the_frames(caplog):
    source = LiveSource(LiveCamera(0, capture_factory=lambda *a: FakeCapture(frames=3, after="fail")))
    frames = list(source.start())  # the camera vanishes after 3 frames: the iteration ends, nothing raised
    source.close()
    assert len(frames) == 3 and all(len(f.imu) == 0 for f in frames)
    assert source.fault.kind == "disappeared" and source.end_reason == str(source.fault)
    assert "camera 0: camera disappeared" in caplog.text
    st = source.stats()
    assert st["imu"] is None and st["fault"] == "disappeared"


def test_open_live_source_and_an_outside_stop_event(tmp_path):
    video = write_video(tmp_path / "clip.avi", n=30, fps=20.0)
    stop = threading.Event()
    frames = []
    with open_live_source(str(video), realtime=True) as source:
        for f in source.frames(stop):
            frames.append(f)
            if len(frames) == 3:
                stop.set()
    assert 3 <= len(frames) <= 5 and source.fault is None and source.end_reason == "stopped"
    assert not [t for t in threading.enumerate() if t.name == "live-stop"]


def test_no_first_frame_is_a_fault_not_an_exception():
    fake = FakeCapture(frames=0, after="fail")
    source = LiveSource(LiveCamera(0, capture_factory=lambda *a: fake)).start()
    assert list(source) == [] and source.fault.kind == "disappeared"
    source.close()
    with pytest.raises(CameraError, match="no such camera device"):
        open_live_source("/dev/video987")
