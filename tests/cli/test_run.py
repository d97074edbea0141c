"""End-to-end runs of ``slam-run`` on the shared real recordings and on broken input."""

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from slam.cli.run import main
from slam.synth.generate import generate
from slam.trajectory import read_tum
from tests.accuracy import assert_run_beats_trivial
from tests.conftest import small_demo


@pytest.fixture(scope="module")
def synth_seq(tmp_path_factory):
    """60 frames (2 s, 1.9 m) of the demo trajectory at 320x240 on disk, RGB-D and stereo."""
    return generate(small_demo(60, imu=False), tmp_path_factory.mktemp("synth") / "seq", progress=False)


def test_rgbd_replay_of_tum_clip(tum_path, tmp_path):
    assert main([str(tum_path), "--out", str(tmp_path), "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    traj = read_tum(tmp_path / "trajectory.txt")
    assert len(traj) == summary["frames"] == 9
    assert summary["mode"] == "rgbd" and summary["lost_frames"] == []
    assert summary["keyframes"] >= 1 and summary["map_points"] > 300
    assert (tmp_path / "map.npz").is_file() and (tmp_path / "keyframes.txt").is_file()
    # No accuracy bound on these 9 frames: over their ~5 cm a straight line at constant speed scores 3.4 mm ATE,
    # as well as the tracker does (3.1 mm); test_rgbd_replay_of_synthetic_sequence checks accuracy instead.
    assert summary["evaluation"]["ate_rmse_m"] is not None


def test_rgbd_replay_of_synthetic_sequence(synth_seq, tmp_path):
    assert main([str(synth_seq), "--out", str(tmp_path), "--mode", "rgbd", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == summary["tracked_frames"] == 60 and summary["lost_frames"] == []
    # every trivial answer (constant velocity, straight line, stationary) scores above 100 mm here
    print("\n ", assert_run_beats_trivial(synth_seq, tmp_path, "se3", bound=0.015))


def test_monocular_replay_of_kitti_clip(kitti_path, tmp_path):
    assert main([str(kitti_path), "--out", str(tmp_path), "--mode", "mono", "--max-frames", "60", "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["frames"] == 60 and summary["evaluation"]["align"] == "sim3"
    assert summary["stop_reason"] == "--max-frames 60" and summary["frame_accounting"]["not_processed"] == 0
    # 21 m of driving. Monocular tracking still loses the map in places (see the backbone issue): this checks it
    # initialises, tracks most frames, and beats every trivial answer on the frames it tracked (the best, constant
    # velocity, scores 1.5 m on the 54 frames tracked; the tracker 0.21 m).
    assert summary["tracked_frames"] >= 30
    print("\n ", assert_run_beats_trivial(kitti_path, tmp_path, "sim3", bound=0.5))


def test_corrupt_frame_is_skipped_and_reported(tum_path, tmp_path):
    seq = tmp_path / "seq"
    shutil.copytree(tum_path, seq)
    rgb = sorted((seq / "rgb").iterdir())
    rgb[4].write_bytes(rgb[4].read_bytes()[:200])  # truncated PNG
    out = tmp_path / "out"
    assert main([str(seq), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert [s["index"] for s in summary["skipped_frames"]] == [4]
    assert rgb[4].name in summary["skipped_frames"][0]["reason"]
    assert len(read_tum(out / "trajectory.txt")) == 8


def test_missing_depth_is_tracked_not_fatal(tum_path, tmp_path):
    seq = tmp_path / "seq"
    shutil.copytree(tum_path, seq)
    sorted((seq / "depth").iterdir())[3].unlink()
    out = tmp_path / "out"
    assert main([str(seq), "--out", str(out), "--no-progress"]) == 0
    assert len(read_tum(out / "trajectory.txt")) == 9


@pytest.mark.parametrize("mode", ["stereo", "mono-inertial"])
def test_unavailable_mode_is_a_clear_error(tum_path, tmp_path, capsys, mode):
    assert main([str(tum_path), "--out", str(tmp_path), "--mode", mode]) == 2
    err = capsys.readouterr().err
    assert f"mode '{mode}' is not available" in err and "rgbd" in err


def test_unknown_folder_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "empty" in capsys.readouterr().err
    assert not np.any([p.name == "trajectory.txt" for p in tmp_path.rglob("*")])


def test_sync_mapping_is_repeatable(tum_path, tmp_path):
    runs = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        assert main([str(tum_path), "--out", str(out), "--no-progress", "--sync-mapping"]) == 0
        runs.append(read_tum(out / "trajectory.txt").poses)
    np.testing.assert_array_equal(runs[0], runs[1])


@pytest.mark.parametrize("under", [False, True])
def test_out_that_is_a_file_is_refused_before_the_run(tum_path, tmp_path, capsys, monkeypatch, under):
    import slam.cli.run as run_cli

    started = []
    monkeypatch.setattr(run_cli, "run", lambda args: started.append(args))
    f = tmp_path / "file"
    f.write_text("not a folder")
    out = f / "out" if under else f
    assert main([str(tum_path), "--out", str(out), "--no-progress"]) == 2
    assert not started  # refused at start, not after tracking the whole sequence
    assert str(f) in capsys.readouterr().err and f.read_text() == "not a folder"


def test_plot_flag_writes_the_ate_plot_named_in_the_summary(tum_path, tmp_path):
    assert main([str(tum_path), "--out", str(tmp_path), "--no-progress", "--plot"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    png = tmp_path / summary["evaluation"]["plot"]
    assert png.name == "trajectory_ate.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert summary["files"][png.name]["bytes"] == png.stat().st_size
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_replay_stopped_by_a_signal_saves_what_it_tracked(kitti_path, tmp_path, sig):
    """Ctrl-C (SIGINT) or SIGTERM mid-replay: exit 0, trajectory, map and a summary that says why and how far."""
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "slam.cli.run", str(kitti_path), "--mode", "mono", "--out",
                             str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # wait until the replay has started (its log line; stderr is no terminal, so no progress bar), let it
    # track for a few seconds (the clip takes ~20 s), then stop it
    seen, deadline = b"", time.monotonic() + 120
    while time.monotonic() < deadline and b"Ctrl-C stops and saves" not in seen:
        if select.select([proc.stderr], [], [], 0.5)[0]:
            chunk = os.read(proc.stderr.fileno(), 4096)
            if not chunk:
                break
            seen += chunk
    time.sleep(4.0)
    proc.send_signal(sig)
    stdout, stderr = (b.decode() for b in proc.communicate(timeout=120))
    stderr = seen.decode(errors="replace") + stderr
    assert proc.returncode == 0, stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stop_reason"] == ("interrupted (Ctrl-C)" if sig == signal.SIGINT else "SIGTERM")
    acc = summary["frame_accounting"]
    assert acc["frames"] == 160 and 0 < acc["not_processed"] < 160 and acc["tracked"] == summary["tracked_frames"] > 0
    assert sum(acc[k] for k in ("tracked", "lost", "initialising", "unreadable", "dropped_by_bus", "rejected_by_bus",
                                "not_processed")) == 160
    # trajectory.txt holds the largest map; a reset puts the other maps' poses beside it
    assert sum(len(read_tum(out / m["trajectory"])) for m in summary["maps"]) == summary["tracked_frames"]
    assert (out / "map.npz").is_file() and (out / "keyframes.txt").is_file()
    assert "not processed before the stop" in stdout and "stopped:" in stdout


def test_default_replay_waits_for_local_mapping(tum_path, tmp_path):
    """Without --realtime the replay never outruns local mapping; --realtime does not wait (camera-like)."""
    assert main([str(tum_path), "--out", str(tmp_path / "a"), "--no-progress"]) == 0
    assert main([str(tum_path), "--out", str(tmp_path / "b"), "--no-progress", "--realtime"]) == 0
    a, b = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("a", "b"))
    assert a["replay"]["back_pressure"] and not b["replay"]["back_pressure"]
    assert a["stop_reason"] == "end of sequence" and a["frame_accounting"]["tracked"] == 9
