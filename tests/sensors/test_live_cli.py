"""``slam-run --camera ...``: live runs end to end, on a synthetic video and on fake cameras that fail."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time

import cv2
import pytest

import slam.sensors.camera as camera_module
from slam.cli.run import main
from slam.backbone.system import System
from slam.trajectory import read_tum

from .conftest import FakeCapture
from .test_live import imu_writer

N = 20
OUTPUTS = ("trajectory.txt", "keyframes.txt", "map.npz", "summary.json")


@pytest.fixture(scope="module")
def synth_video(tmp_path_factory):
    """20 frames of the synthetic room (320x240, 10 fps) as an MJPG .avi, with its camera file next to it."""
    from slam.synth import SynthSequence, preset

    cfg = dataclasses.replace(preset("tiny"), num_frames=N, noise=False, imu=False, depth=False, stereo=False)
    seq = SynthSequence(cfg)
    path = tmp_path_factory.mktemp("video") / "room.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), cfg.fps, (cfg.width, cfg.height))
    images = [cv2.cvtColor(seq.render_frame(i).rgb, cv2.COLOR_RGB2BGR) for i in range(N)]
    for img in images:
        writer.write(img)
    writer.release()
    seq.camera.to_yaml(path.with_suffix(".yaml"))
    return path, images


def summary(out):
    return json.loads((out / "summary.json").read_text())


def test_video_as_camera_writes_every_output(synth_video, tmp_path, capsys):
    path, _ = synth_video
    out = tmp_path / "out"
    assert main(["--camera", str(path), "--out", str(out), "--no-progress", "--sync-mapping"]) == 0
    assert all((out / name).is_file() for name in OUTPUTS)
    s = summary(out)
    assert s["mode"] == "mono" and s["reader"] == "LiveCamera" and s["frames"] == N
    assert s["tracked_frames"] > 0 and s["keyframes"] >= 2 and s["map_points"] > 50
    # one trajectory file per map (monocular tracking may lose the map and start a new one)
    assert sum(len(read_tum(out / m["trajectory"])) for m in s["maps"]) == s["tracked_frames"]
    live = s["live"]
    assert live["stop_reason"] == "end of video" and live["fault"] is None and live["imu"] is None
    assert live["camera"]["frames"] == N and live["camera"]["dropped"] == 0
    assert "stopped: end of video" in capsys.readouterr().out


def test_stalled_camera_stops_cleanly_with_everything_saved(synth_video, tmp_path, monkeypatch, capsys):
    _, images = synth_video
    fake = FakeCapture(frames=8, after="stall", images=images)
    monkeypatch.setattr(camera_module, "open_capture", lambda *a: fake)
    out = tmp_path / "out"
    t0 = time.monotonic()
    try:
        assert main(["--camera", "0", "--camera-file", str(synth_video[0].with_suffix(".yaml")), "--out", str(out),
                     "--no-progress", "--sync-mapping"]) == 3
    finally:
        fake.release_block.set()
    assert time.monotonic() - t0 < 15
    assert all((out / name).is_file() for name in OUTPUTS)
    s = summary(out)
    # frames that came while the system started (kernel warm-up) were dropped, as from any live camera
    assert s["frames"] + s["live"]["camera"]["dropped"] == 8 and s["live"]["fault"] == "stall"
    assert s["live"]["stop_reason"] == "camera 0: no frame for 2 s (camera stalled)"
    assert s["live"]["camera"]["stalls"] == 1
    assert "camera fault: camera 0: no frame for 2 s" in capsys.readouterr().err


def test_disappearing_camera_stops_cleanly(synth_video, tmp_path, monkeypatch):
    _, images = synth_video
    monkeypatch.setattr(camera_module, "open_capture", lambda *a: FakeCapture(frames=6, after="fail", images=images))
    out = tmp_path / "out"
    assert main(["--camera", "0", "--out", str(out), "--no-progress"]) == 3
    s = summary(out)
    assert all((out / name).is_file() for name in OUTPUTS)
    assert s["frames"] + s["live"]["camera"]["dropped"] == 6
    assert s["live"]["fault"] == "disappeared" and s["live"]["camera"]["disappeared"]


def test_camera_without_any_frame_still_says_why(tmp_path, monkeypatch):
    fake = FakeCapture(frames=0, after="fail")
    monkeypatch.setattr(camera_module, "open_capture", lambda *a: fake)
    out = tmp_path / "out"
    assert main(["--camera", "0", "--out", str(out), "--no-progress"]) == 3
    s = summary(out)
    assert s["frames"] == 0 and s["live"]["fault"] == "disappeared"
    assert (out / "trajectory.txt").is_file()


@pytest.mark.parametrize("sig,reason", [(signal.SIGTERM, "SIGTERM"), (signal.SIGINT, "interrupted (Ctrl-C)")])
def test_signal_stops_cleanly_with_everything_saved(synth_video, tmp_path, monkeypatch, sig, reason):
    path, _ = synth_video
    process = System.process

    def process_and_signal(self, frame, prepared=None):
        if frame.index == 4:
            os.kill(os.getpid(), sig)
        return process(self, frame, prepared)

    monkeypatch.setattr(System, "process", process_and_signal)
    out = tmp_path / "out"
    assert main(["--camera", str(path), "--out", str(out), "--no-progress", "--sync-mapping"]) == 0
    s = summary(out)
    assert all((out / name).is_file() for name in OUTPUTS)
    assert 5 <= s["frames"] <= 7 and s["live"]["stop_reason"] == reason
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers put back


def test_imu_over_serial_and_unplugged_mid_run(synth_video, tmp_path, pty_device):
    path, _ = synth_video
    stop = threading.Event()
    writer = imu_writer(pty_device, stop, unplug_after_s=1.0)
    out = tmp_path / "out"
    try:
        assert main(["--camera", str(path), "--realtime", "--imu", f"serial:{pty_device.name}:115200",
                     "--out", str(out), "--no-progress", "--max-frames", "16"]) == 0
    finally:
        stop.set()
        writer.join(2.0)
    s = summary(out)
    imu = s["live"]["imu"]
    assert s["mode"] == "mono-inertial" and s["frames"] == 16
    assert imu["port"] == pty_device.name and imu["baud"] == 115200
    assert imu["samples"] > 50 and imu["attached_to_frames"] > 50 and imu["garbage"] == 0
    assert not imu["alive"] and imu["disconnects"] == 1 and imu["frames_without_imu"] >= 3
    assert s["live"]["stop_reason"] == "--max-frames 16"


def test_bad_camera_or_arguments_are_clear_errors(tmp_path, capsys):
    assert main(["--camera", str(tmp_path / "nope.avi"), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path / 'nope.avi'}: no such camera device or video file" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert main(["--camera", "0", "--imu", "serial:/dev/ttyNOPE", "--out", str(tmp_path / "o")]) == 2
    assert "/dev/ttyNOPE: cannot open the IMU serial port" in capsys.readouterr().err
    assert main(["--camera", "0", "--mode", "rgbd", "--out", str(tmp_path / "o")]) == 2
    assert "mode 'rgbd' is not available live" in capsys.readouterr().err
    for argv in (["seq", "--camera", "0", "--out", "o"], ["--out", "o"], ["seq", "--imu", "serial", "--out", "o"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2
