"""KITTI segment errors on hand-constructed cases with known answers, and the automatic short lengths."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from slam.eval import EvalError, auto_segment_lengths, kitti_segment_errors
from slam.geometry import make_pose, so3_exp
from slam.trajectory import Trajectory, read_kitti

KITTI07 = Path(__file__).resolve().parents[3] / "shared/data/kitti_odometry_seq07_first160/poses/07.txt"


def _line(n: int, axis: int, step: float = 1.0) -> Trajectory:
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, axis, 3] = step * np.arange(n)
    return Trajectory(np.arange(n) * 0.1, poses)


def test_scale_error_on_a_straight_line():
    """GT 1 m per frame, estimate 1.1 m per frame. With L = 10 m a segment ends 11 frames on
    (the first frame *beyond* 10 m), so t_err / L = 0.1 * 11 / 10 -> t_rel = 11 %.
    31 frames, first frames 0, 10 (20 and 30 have no frame 11 m on): 2 segments."""
    gt = _line(31, 0)
    est = _line(31, 0, 1.1)
    k = kitti_segment_errors(gt, est, lengths=[10.0], step=10)
    assert k.n_segments == 2 and k.lengths == [10.0] and not k.auto_lengths
    assert k.t_rel == pytest.approx(11.0, abs=1e-9)
    assert k.r_rel == pytest.approx(0.0, abs=1e-12)


def test_rotation_drift_about_the_direction_of_travel():
    """Estimate spins 0.1 deg per frame about z while moving along z: over 11 frames the error pose
    is a pure 1.1 deg rotation, per 10 m -> r_rel = 11 deg / 100 m and t_rel = 0."""
    gt = _line(31, 2)
    est_poses = gt.poses.copy()
    for i in range(len(gt)):
        est_poses[i, :3, :3] = so3_exp(np.array([0.0, 0.0, np.deg2rad(0.1 * i)]))
    k = kitti_segment_errors(gt, Trajectory(gt.timestamps, est_poses), lengths=[10.0], step=10)
    assert k.r_rel == pytest.approx(11.0, abs=1e-9)
    assert k.t_rel == pytest.approx(0.0, abs=1e-9)
    # a rigid change of the estimate's world frame changes nothing
    moved = Trajectory(gt.timestamps, make_pose(so3_exp(np.array([1.0, 2.0, 0.5])), [4.0, 5.0, 6.0]) @ est_poses)
    assert kitti_segment_errors(gt, moved, lengths=[10.0]).r_rel == pytest.approx(11.0, abs=1e-9)


def test_per_length_breakdown_and_pooling():
    gt = _line(61, 0)
    est = _line(61, 0, 1.1)
    k = kitti_segment_errors(gt, est, lengths=[10.0, 20.0], step=10)
    # L = 10: firsts 0..40 (5 segments, 11 %); L = 20: firsts 0..30 (4 segments, 10.5 %)
    assert k.per_length[10.0]["n"] == 5 and k.per_length[20.0]["n"] == 4
    assert k.per_length[10.0]["t_rel"] == pytest.approx(11.0)
    assert k.per_length[20.0]["t_rel"] == pytest.approx(10.5)
    assert k.t_rel == pytest.approx((5 * 11.0 + 4 * 10.5) / 9)


def test_short_paths_get_automatic_lengths():
    assert auto_segment_lengths(90.6) == [9.0, 18.0, 27.0, 36.0, 45.0, 54.0, 63.0, 72.0]
    assert auto_segment_lengths(30.0) == [3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0]
    assert auto_segment_lengths(2.3)[-1] == pytest.approx(1.6)
    gt = _line(31, 0)
    k = kitti_segment_errors(gt, _line(31, 0, 1.1))  # 30 m: no 100 m segment
    assert k.auto_lengths and k.lengths == [3.0, 6.0, 9.0, 12.0, 15.0, 18.0, 21.0, 24.0]
    assert k.per_length[3.0]["t_rel"] == pytest.approx(10.0 * 4 / 3)
    with pytest.raises(EvalError):
        kitti_segment_errors(gt, gt, lengths=[100.0])
    still = Trajectory(np.arange(5.0), np.tile(np.eye(4), (5, 1, 1)))
    with pytest.raises(EvalError):
        kitti_segment_errors(still, still)


def test_standard_lengths_on_long_paths():
    gt = _line(1001, 0)  # 1 km
    k = kitti_segment_errors(gt, _line(1001, 0, 1.01))
    assert not k.auto_lengths and k.lengths == [100.0 * i for i in range(1, 9)]
    assert k.per_length[100.0]["t_rel"] == pytest.approx(1.01)


@pytest.mark.skipif(not KITTI07.exists(), reason="shared KITTI sample missing")
def test_kitti07_ground_truth_against_itself():
    gt = read_kitti(KITTI07)
    k = kitti_segment_errors(gt, gt)
    assert k.auto_lengths and k.lengths[0] == 9.0 and k.t_rel < 1e-9 and k.r_rel < 1e-6
