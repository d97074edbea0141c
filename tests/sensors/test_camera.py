"""LiveCamera: a video file read as a camera, and fake captures that stall or disappear."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from slam.geometry import PinholeCamera
from slam.sensors.camera import CameraError, LiveCamera, resolve_source

from .conftest import FakeCapture, bar_index, write_video


@pytest.fixture
def video(tmp_path):
    return write_video(tmp_path / "clip.avi", n=30, fps=30.0)


def test_video_file_yields_every_frame_in_order(video, caplog):
    with caplog.at_level(logging.WARNING):
        cam = LiveCamera(str(video))
        frames = list(cam.frames())
    cam.close()
    assert [bar_index(f.image) for f in frames] == list(range(30))
    assert [f.index for f in frames] == list(range(30))
    t = np.array([f.timestamp for f in frames])
    np.testing.assert_allclose(t, np.arange(30) / 30.0, atol=1e-3)  # the file's own frame times
    f = frames[0]
    assert f.image.shape == (48, 64, 3) and f.image.dtype == np.uint8 and f.source == f"{video}#0"
    assert f.camera.fx == pytest.approx(0.9 * 64) and "GUESSING" in caplog.text  # the video reader's guess
    st = cam.stats()
    assert (st.frames, st.grabbed, st.dropped, st.stalls) == (30, 30, 0, 0)
    assert st.stop_reason == "end of video" and st.timestamps == "file" and (st.width, st.height) == (64, 48)


def test_video_file_on_the_host_clock_when_asked(video):
    """For pairing with a live sensor (an IMU on the host clock): capture times mapped to time.monotonic()."""
    t0 = time.monotonic()
    cam = LiveCamera(str(video), file_times=False)
    t = np.array([f.timestamp for f in cam.frames()])
    cam.close()
    assert len(t) == 30 and np.all(np.diff(t) > 0) and t0 - 1.0 < t[0] and t[-1] <= time.monotonic()
    assert cam.stats().timestamps == "driver"


def test_video_file_in_realtime_keeps_its_rate(tmp_path):
    path = write_video(tmp_path / "fast.avi", n=10, fps=50.0)
    cam = LiveCamera(str(path), realtime=True)
    t0 = time.monotonic()
    frames = list(cam.frames())
    cam.close()
    assert len(frames) == 10 and time.monotonic() - t0 >= 0.17
    np.testing.assert_allclose(np.diff([f.timestamp for f in frames]), 0.02, atol=0.004)


def test_camera_file_next_to_the_video_or_given(video, tmp_path):
    cam_model = PinholeCamera(64, 48, 50.0, 50.0, 31.5, 23.5)
    cam_model.to_yaml(video.with_suffix(".yaml"))
    cam = LiveCamera(str(video)).start()
    assert cam.camera == cam_model
    cam.close()
    # a camera file for twice the size: same aspect, scaled; another aspect: an error naming the file
    big = tmp_path / "big.yaml"
    PinholeCamera(128, 96, 100.0, 100.0, 63.5, 47.5).to_yaml(big)
    cam = LiveCamera(str(video), camera_file=big).start()
    assert cam.camera.fx == pytest.approx(50.0) and cam.camera.width == 64
    cam.close()
    wide = tmp_path / "wide.yaml"
    PinholeCamera(128, 48, 100.0, 100.0, 63.5, 23.5).to_yaml(wide)
    with pytest.raises(CameraError, match="is for 128x48 but camera .* delivers 64x48") as e:
        LiveCamera(str(video), camera_file=wide).start()
    assert e.value.path == wide


def test_resolve_source(tmp_path, video):
    assert resolve_source("0").kind == "device" and resolve_source("0").arg == 0
    assert resolve_source(2).arg == 2
    assert resolve_source("rtsp://cam.local/stream").kind == "stream"
    assert resolve_source(str(video)).kind == "file"
    with pytest.raises(CameraError, match="no such camera device or video file"):
        resolve_source(str(tmp_path / "missing.avi"))
    with pytest.raises(CameraError, match="is a folder"):
        resolve_source(str(tmp_path))
    with pytest.raises(CameraError, match="/dev/video987: no such camera device"):
        resolve_source("/dev/video987")


def test_not_a_video_is_a_clear_error(tmp_path):
    p = tmp_path / "notes.avi"
    p.write_bytes(b"\x00" * 500)
    with pytest.raises(CameraError, match="cannot open the video") as e:
        LiveCamera(str(p)).start()
    assert e.value.path == p and e.value.kind == "open"


def test_stalled_camera_raises_within_the_timeout():
    fake = FakeCapture(frames=3, after="stall")
    cam = LiveCamera(0, stall_timeout_s=0.5, capture_factory=lambda *a: fake)
    got = []
    t0 = time.monotonic()
    with pytest.raises(CameraError) as e:
        for f in cam.frames():
            got.append(f.index)
    waited = time.monotonic() - t0
    assert got == [0, 1, 2] and e.value.kind == "stall"
    assert str(e.value) == "camera 0: no frame for 0.5 s (camera stalled)"
    assert 0.5 <= waited < 1.5
    # the grabber is stuck in read(), as with V4L2: close() does not wait for it forever
    t0 = time.monotonic()
    cam.close(timeout=0.2)
    assert time.monotonic() - t0 < 1.0 and not fake.released
    fake.release_block.set()
    cam._thread.join(2.0)
    assert not cam._thread.is_alive()
    assert cam.stats().stalls == 1 and cam.stats().frames == 3


def test_disappearing_camera_ends_with_a_clear_message():
    fake = FakeCapture(frames=4, after="fail")
    cam = LiveCamera(0, capture_factory=lambda *a: fake)
    got = []
    with pytest.raises(CameraError, match="camera 0: camera disappeared: 5 reads failed in a row") as e:
        for f in cam.frames():
            got.append(f.index)
    cam.close()
    assert got == [0, 1, 2, 3] and e.value.kind == "disappeared" and fake.released
    st = cam.stats()
    assert st.disappeared and st.read_failures == 5 and "disappeared" in st.stop_reason


def test_no_first_frame_is_a_stall_at_start():
    fake = FakeCapture(frames=0, after="stall")
    cam = LiveCamera(0, first_frame_timeout_s=0.3, capture_factory=lambda *a: fake)
    with pytest.raises(CameraError, match="no frame within 0.3 s of opening"):
        cam.start()
    fake.release_block.set()
    cam._thread.join(2.0)
    assert not cam._thread.is_alive()


def test_slow_consumer_drops_oldest_frames_from_a_device():
    fake = FakeCapture(frames=20, after="fail", period_s=0.005)
    cam = LiveCamera(0, capture_factory=lambda *a: fake, queue_size=2)
    got = []
    with pytest.raises(CameraError):
        for f in cam.frames():
            got.append(f.index)
            time.sleep(0.03)  # tracking slower than the camera
    cam.close()
    st = cam.stats()
    assert got == sorted(got) and got[-1] == 19 and len(got) < 20
    assert st.dropped == 20 - len(got) and st.timestamps == "host"


def test_stop_ends_the_frames():
    fake = FakeCapture(frames=1000, after="fail", period_s=0.002)
    cam = LiveCamera(0, capture_factory=lambda *a: fake)
    n = 0
    for _ in cam.frames():
        n += 1
        if n == 5:
            cam.stop()
    cam.close()
    assert n <= 7 and fake.released
