"""Closed-form checks of association, alignment, ATE, RPE and the statistics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slam.eval import (
    EvalError,
    Statistics,
    align_trajectory,
    associate,
    ate,
    ate_errors,
    rotation_angle_deg,
    rpe,
    rpe_pairs,
)
from slam.geometry import make_pose, so3_exp
from slam.trajectory import Trajectory

from .eval_synth import perturb, similarity, smooth_trajectory

R0 = so3_exp(np.array([0.4, -0.7, 2.0]))
T0 = np.array([10.0, -3.0, 2.5])


def _gt(n: int = 120) -> Trajectory:
    return smooth_trajectory(np.arange(n) * 0.1)


def test_statistics_definitions():
    e = np.array([1.0, 2.0, 2.0, 5.0])
    s = Statistics.from_errors(e)
    assert s.rmse == pytest.approx(np.sqrt(34 / 4))
    assert (s.mean, s.median, s.min, s.max, s.sse, s.n) == (2.5, 2.0, 1.0, 5.0, 34.0, 4)
    assert s.std == pytest.approx(np.std(e))  # population std, like evo
    with pytest.raises(EvalError):
        Statistics.from_errors(np.array([]))


def test_associate_nearest_within_tolerance_shorter_drives():
    gt = np.array([0.0, 0.1, 0.2, 0.3, 0.4, 0.5])
    est = np.array([0.104, 0.29, 0.45, 0.9])  # fewer: the estimate drives
    i_gt, i_est = associate(gt, est, max_diff=0.02)
    assert i_gt.tolist() == [1, 3] and i_est.tolist() == [0, 1]
    i_gt, i_est = associate(gt, est, max_diff=0.06)
    assert i_gt.tolist() == [1, 3, 4] and i_est.tolist() == [0, 1, 2]
    # an exact tie (binary fractions) goes to the earlier stamp, as in evo
    assert associate([0.0, 0.25, 0.5, 0.75], [0.375, 2.0], 0.2)[0].tolist() == [1]


def test_associate_offset_and_ground_truth_driving():
    gt = np.array([10.0, 11.0, 12.0])
    est = np.arange(0.0, 3.0, 0.25)  # denser: ground truth drives, offset moves the estimate
    assert associate(gt, est, 0.01)[0].size == 0
    i_gt, i_est = associate(gt, est, 0.01, t_offset=10.0)
    assert i_gt.tolist() == [0, 1, 2] and i_est.tolist() == [0, 4, 8]


def test_rigid_and_similarity_transforms_are_undone():
    gt = _gt()
    est = similarity(gt, R0, T0, 1.0)
    est_a, s, T = align_trajectory(gt, est, "se3")
    assert s == 1.0 and ate(gt, est_a).max < 1e-9
    np.testing.assert_allclose(est_a.poses, gt.poses, atol=1e-9)
    np.testing.assert_allclose(T[:3, :3], R0.T, atol=1e-9)

    est = similarity(gt, R0, T0, 0.25)  # monocular: unknown scale
    est_a, s, T = align_trajectory(gt, est, "sim3")
    assert s == pytest.approx(4.0, rel=1e-9) and ate(gt, est_a).max < 1e-9
    np.testing.assert_allclose(T[:3, :3] / s, R0.T, atol=1e-9)
    assert ate(gt, align_trajectory(gt, est, "se3")[0]).rmse > 1.0  # se3 cannot fix the scale


def test_constant_offset_without_alignment():
    gt = _gt()
    off = np.array([0.3, -0.4, 1.2])  # |off| = 1.3
    est = gt.transformed(T_left=make_pose(np.eye(3), off))
    s = ate(gt, align_trajectory(gt, est, "none")[0])
    for v in (s.rmse, s.mean, s.median, s.min, s.max):
        assert v == pytest.approx(1.3, abs=1e-12)
    assert s.std == pytest.approx(0.0, abs=1e-12)
    assert ate(gt, align_trajectory(gt, est, "se3")[0]).max < 1e-9


def test_rpe_of_a_known_per_step_error():
    gt = _gt(80)
    D = make_pose(so3_exp(np.array([0.0, 0.0, np.deg2rad(0.5)])), np.array([0.03, 0.0, 0.04]))
    poses = [gt.poses[0]]
    for k in range(1, len(gt)):  # every step of the estimate is the true step followed by D
        poses.append(poses[-1] @ np.linalg.inv(gt.poses[k - 1]) @ gt.poses[k] @ D)
    est = Trajectory(gt.timestamps, np.array(poses))
    t, r = rpe(gt, est, 1, "f")
    assert t.n == 79 and t.max == pytest.approx(0.05, abs=1e-9) and t.min == pytest.approx(0.05, abs=1e-9)
    assert r.rmse == pytest.approx(0.5, abs=1e-7) and r.std == pytest.approx(0.0, abs=1e-7)
    # RPE is blind to a rigid change of world frame
    t2, r2 = rpe(gt, similarity(est, R0, T0, 1.0), 1, "f")
    assert t2.rmse == pytest.approx(t.rmse, abs=1e-9) and r2.rmse == pytest.approx(r.rmse, abs=1e-7)


def test_rpe_pairs_in_frames_metres_and_seconds():
    n = 11
    poses = np.tile(np.eye(4), (n, 1, 1))
    poses[:, 0, 3] = np.arange(n)  # 1 m per frame along x
    traj = Trajectory(np.arange(n) * 0.1 + 5.0, poses)
    assert rpe_pairs(traj, 3, "f") == [(0, 3), (3, 6), (6, 9)]
    assert rpe_pairs(traj, 2.5, "m") == [(0, 3), (3, 6), (6, 9)]
    assert rpe_pairs(traj, 0.2, "s") == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 10)]
    with pytest.raises(EvalError):
        rpe(traj, traj, 20, "f")
    with pytest.raises(EvalError):
        rpe_pairs(traj, 1.5, "f")


def test_rotation_angle_is_accurate_near_zero_and_pi():
    for a in (1e-9, 1e-5, 0.3, np.pi - 1e-6, np.pi):
        R = so3_exp(a * np.array([0.6, 0.0, 0.8]))
        assert rotation_angle_deg(R) == pytest.approx(np.degrees(a), abs=1e-9)


def test_alignment_needs_three_non_collinear_poses():
    gt = _gt(2)
    with pytest.raises(EvalError, match="at least 3"):
        align_trajectory(gt, gt, "se3")
    line = Trajectory(np.arange(5.0), np.tile(np.eye(4), (5, 1, 1)))
    line.poses[:, 0, 3] = np.arange(5.0)
    with pytest.raises(EvalError, match="alignment failed"):
        align_trajectory(line, line, "sim3")
    assert align_trajectory(gt, gt, "none")[1] == 1.0


@settings(max_examples=25, deadline=None)
@given(
    rotvec=st.lists(st.floats(-3.0, 3.0), min_size=3, max_size=3),
    trans=st.lists(st.floats(-100.0, 100.0), min_size=3, max_size=3),
    scale=st.floats(0.05, 20.0),
)
def test_alignment_invariance(rotvec, trans, scale):
    """ATE after sim3 alignment does not depend on the world frame or scale of the estimate."""
    gt = _gt(60)
    est = perturb(gt, np.random.default_rng(0))
    base = ate_errors(gt, align_trajectory(gt, est, "sim3")[0])
    moved = similarity(est, so3_exp(np.array(rotvec)), np.array(trans), scale)
    np.testing.assert_allclose(ate_errors(gt, align_trajectory(gt, moved, "sim3")[0]), base, atol=1e-8)
