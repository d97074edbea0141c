"""`slam-eval` with ground truth and estimate in different formats (each detected by its column count)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from slam.cli.eval import main
from slam.errors import DataError
from slam.geometry import so3_exp
from slam.trajectory import Trajectory, detect_format, per_frame_poses, read_kitti, write_kitti, write_tum

from ..conftest import shared
from .eval_synth import perturb, similarity, smooth_trajectory


@pytest.fixture(scope="module")
def kitti07():
    root = shared("kitti_odometry_seq07_first160")
    return root / "poses" / "07.txt", root / "sequences" / "07" / "times.txt"


def _run(capsys, argv) -> tuple[dict, str]:
    out = argv[-1]
    rc = main([str(a) for a in argv[:-1]] + ["--json", str(out)])
    text = capsys.readouterr()
    assert rc == 0, text.err
    return json.loads(out.read_text()), text.out


def test_kitti_ground_truth_with_a_tum_estimate_as_the_readme_prints_it(kitti07, tmp_path, capsys):
    """The README's command: KITTI ground truth (its times.txt found by the layout), TUM estimate, sim3."""
    gt_path, times_path = kitti07
    gt = read_kitti(gt_path, np.loadtxt(times_path))
    est = similarity(perturb(gt, np.random.default_rng(7), pos_sigma=0.05, rot_sigma=0.002),
                     so3_exp(np.array([0.1, -0.2, 0.3])), np.array([1.0, 2.0, 3.0]), 0.25)  # monocular: any scale
    ep = tmp_path / "trajectory.txt"
    write_tum(ep, est.subset(slice(5, None)))  # monocular initialisation: the first frames have no pose
    d, text = _run(capsys, [gt_path, ep, "--align", "sim3", tmp_path / "r.json"])
    assert d["gt_format"] == "kitti" and d["est_format"] == "tum"
    assert d["matched"] == 155 and d["aligned"]["scale"] == pytest.approx(4.0, rel=0.02)
    assert d["ate"]["rmse"] < 0.15
    assert f"stamps from {times_path}" in text


def test_tum_ground_truth_with_a_kitti_estimate_and_its_times(kitti07, tmp_path, capsys):
    gt_path, times_path = kitti07
    stamps = np.loadtxt(times_path)
    gt = read_kitti(gt_path, stamps)
    gp, ep = tmp_path / "gt_tum.txt", tmp_path / "est_kitti.txt"
    write_tum(gp, gt)
    write_kitti(ep, perturb(gt, np.random.default_rng(3), pos_sigma=0.02, rot_sigma=0.001))
    d, _ = _run(capsys, [gp, ep, "--est-times", times_path, tmp_path / "r.json"])
    assert (d["gt_format"], d["est_format"], d["matched"]) == ("tum", "kitti", 160)
    assert d["ate"]["rmse"] < 0.1


def test_two_kitti_files_without_times_associate_by_line_index(tmp_path, capsys):
    gt = smooth_trajectory(np.arange(0.0, 30.0))  # stamps 0, 1, 2, ...: the line index
    gp, ep = tmp_path / "a" / "gt.txt", tmp_path / "b" / "est.txt"
    gp.parent.mkdir()
    ep.parent.mkdir()
    write_kitti(gp, gt)
    write_kitti(ep, perturb(gt, np.random.default_rng(1)))
    d, text = _run(capsys, [gp, ep, tmp_path / "r.json"])
    assert d["matched"] == 30 and "line index" in text


def test_explicit_formats_override_detection(tmp_path, capsys):
    gt = smooth_trajectory(np.arange(0.0, 3.0, 0.1))
    gp = tmp_path / "gt.txt"
    write_tum(gp, gt)
    assert main([str(gp), str(gp), "--est-format", "kitti"]) == 2
    assert "expected 12 columns, found 8" in capsys.readouterr().err


def test_kitti_without_times_against_tum_says_which_flag(tmp_path, capsys):
    gt = smooth_trajectory(np.arange(0.0, 3.0, 0.1))
    gp, ep = tmp_path / "poses.txt", tmp_path / "est.txt"
    write_kitti(gp, gt)
    write_tum(ep, gt)
    assert main([str(gp), str(ep)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--gt-times" in err


def test_detect_format_names_the_line_of_an_unknown_column_count(tmp_path):
    p = tmp_path / "t.txt"
    p.write_text("# a comment\n\n0 1 2 3 4 5 6\n")
    with pytest.raises(DataError, match=r"t.txt:3:.*7 columns"):
        detect_format(p)
    p.write_text("# header only\n")
    with pytest.raises(DataError, match="no poses"):
        detect_format(p)


def test_per_frame_poses_holds_the_previous_pose_for_frames_without_one():
    stamps = np.arange(8) * 0.1
    traj = smooth_trajectory(stamps)
    tracked = traj.subset(np.array([2, 3, 5, 6]))  # frames 0, 1 before initialisation; 4 and 7 lost
    out = per_frame_poses(tracked, stamps)
    assert len(out) == 8 and np.array_equal(out.timestamps, stamps)
    want = [2, 2, 2, 3, 3, 5, 6, 6]
    np.testing.assert_array_equal(out.poses, traj.poses[want])
    with pytest.raises(ValueError):
        per_frame_poses(Trajectory(np.zeros(0), np.zeros((0, 4, 4))), stamps)
    unknown = stamps.copy()
    unknown[[0, 4]] = np.nan  # skipped frames: no stamp known
    out = per_frame_poses(tracked, unknown)
    np.testing.assert_array_equal(out.poses, traj.poses[[2, 2, 2, 3, 3, 5, 6, 6]])
