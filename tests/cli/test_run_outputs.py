"""What ``slam-run`` writes besides the TUM trajectory: the KITTI pose file of a KITTI sequence."""

from __future__ import annotations

import json

import numpy as np

from slam.cli.eval import main as eval_main
from slam.cli.run import main
from slam.trajectory import read_kitti, read_tum


def test_kitti_sequence_gets_one_kitti_pose_per_image(kitti_path, tmp_path):
    n = 30
    assert main([str(kitti_path), "--out", str(tmp_path), "--mode", "mono", "--max-frames", str(n),
                 "--no-progress"]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "trajectory_kitti.txt" in summary["outputs"]
    times = np.loadtxt(kitti_path / "sequences" / "07" / "times.txt")[:n]
    kitti = read_kitti(tmp_path / "trajectory_kitti.txt", times)  # the devkit's format: one line per image
    tum = read_tum(tmp_path / "trajectory.txt")
    assert len(kitti) == n and 0 < len(tum) < n  # monocular: the first frames come before the map
    for i in range(n):  # a tracked frame's own pose, else the previous frame's (the first pose before any)
        j = np.nonzero(np.abs(tum.timestamps - times[i]) < 1e-5)[0]  # TUM stamps are printed to 1 us
        want = tum.poses[j[0]] if j.size else (kitti.poses[i - 1] if i else tum.poses[0])
        np.testing.assert_allclose(kitti.poses[i], want, atol=1e-6, err_msg=f"frame {i}")
    # and slam-eval scores it against the ground truth like the TUM file
    gt = kitti_path / "poses" / "07.txt"
    est_times = tmp_path / "times.txt"
    est_times.write_text("\n".join(f"{t:.6e}" for t in times) + "\n")
    assert eval_main([str(gt), str(tmp_path / "trajectory_kitti.txt"), "--est-times", str(est_times),
                      "--align", "sim3", "--json", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["matched"] == n


def test_a_camera_at_rest_says_why_nothing_was_tracked(euroc_path, tmp_path, capsys):
    """The EuRoC micro clip: a monocular camera at rest never initialises; the run says so and writes its summary."""
    assert main([str(euroc_path), "--out", str(tmp_path), "--no-progress"]) == 4
    err = capsys.readouterr().err
    summary = json.loads((tmp_path / "summary.json").read_text())
    why = summary["failure"]
    assert why in err and "parallax" in why and "at rest" in why and "offers only mono-inertial, mono" in why
    assert summary["tracked_frames"] == 0 and summary["frames"] == 95 and summary["evaluation"] is None
    assert read_tum(tmp_path / "trajectory.txt", allow_empty=True).timestamps.size == 0
