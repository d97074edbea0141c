"""The trivial estimates of slam.eval.baselines against closed forms, and their scores under each alignment."""

from __future__ import annotations

import numpy as np
import pytest

from slam.eval.baselines import (
    ate_rmse,
    constant_velocity,
    restart_at_origin,
    stationary,
    straight_line,
    trivial_ates,
    trivial_estimates,
)
from slam.geometry import inv_pose, make_pose, se3_exp, so3_exp
from slam.trajectory import Trajectory

from .eval_synth import similarity, smooth_trajectory

TWIST = np.array([0.3, -0.1, 0.05, 0.02, 0.04, -0.03])  # (rho m, phi rad) per second


def _helix(t: np.ndarray) -> Trajectory:
    """Constant body twist from an arbitrary start: what constant velocity predicts exactly."""
    T0 = make_pose(so3_exp(np.array([0.3, -1.2, 0.5])), np.array([2.0, 1.0, -0.5]))
    return Trajectory(t, np.stack([T0 @ se3_exp(TWIST * tk) for tk in t]))


def _curvy(n: int = 50) -> Trajectory:
    return smooth_trajectory(np.arange(n) * 0.1)


def test_constant_velocity_is_exact_on_a_constant_twist_with_uneven_stamps():
    t = np.cumsum(np.r_[0.0, np.random.default_rng(0).uniform(0.02, 0.1, 39)]) + 100.0
    gt = _helix(t)
    cv = constant_velocity(gt)
    np.testing.assert_array_equal(cv.timestamps, gt.timestamps)
    np.testing.assert_allclose(cv.poses, gt.poses, atol=1e-9)
    assert ate_rmse(gt, cv, "none") < 1e-9


def test_constant_velocity_repeats_the_first_step_only():
    gt = _curvy()
    cv = constant_velocity(gt)
    np.testing.assert_allclose(cv.poses[:2], gt.poses[:2], atol=1e-12)
    step = inv_pose(cv.poses[:-1]) @ cv.poses[1:]  # the same relative motion every frame
    np.testing.assert_allclose(step, np.broadcast_to(step[0], step.shape), atol=1e-9)
    assert ate_rmse(gt, cv, "se3") > 1.0  # the curvy path leaves the helix by metres


def test_straight_lines_are_exact_on_a_straight_constant_speed_path():
    t = np.linspace(0.0, 3.0, 31)
    poses = np.tile(make_pose(so3_exp(np.array([0.1, 0.2, 0.3])), np.zeros(3)), (31, 1, 1))
    poses[:, :3, 3] = np.array([1.0, -2.0, 0.5]) + t[:, None] * np.array([0.4, 0.1, -0.2])
    gt = Trajectory(t, poses)
    for fit in ("lsq", "ends"):
        line = straight_line(gt, fit)
        np.testing.assert_allclose(line.positions, gt.positions, atol=1e-12)
        assert ate_rmse(gt, line, "se3") < 1e-9


def test_least_squares_line_beats_the_end_to_end_line_under_every_alignment():
    gt = _curvy()
    ends, lsq = straight_line(gt, "ends"), straight_line(gt, "lsq")
    np.testing.assert_allclose(ends.positions[[0, -1]], gt.positions[[0, -1]], atol=1e-12)
    for align in ("none", "se3", "sim3"):
        assert ate_rmse(gt, lsq, align) <= ate_rmse(gt, ends, align) + 1e-12
    # collinear: no rotation about the line is defined, so the score is the line's own (already the best) one
    assert ate_rmse(gt, lsq, "se3") == ate_rmse(gt, lsq, "none") == ate_rmse(gt, lsq, "sim3")
    # no other constant-speed line does better: perturbed lines a + b t score more
    rng = np.random.default_rng(1)
    t = gt.timestamps - gt.timestamps[0]
    for _ in range(20):
        other = Trajectory(gt.timestamps, lsq.poses.copy())
        other.poses[:, :3, 3] += rng.normal(0.0, 0.1, 3) + t[:, None] * rng.normal(0.0, 0.1, 3)
        assert ate_rmse(gt, other, "none") > ate_rmse(gt, lsq, "none")


def test_stationary_sits_at_the_centroid_and_scores_the_spread():
    gt = _curvy()
    st = stationary(gt)
    np.testing.assert_allclose(st.positions, np.broadcast_to(gt.positions.mean(axis=0), st.positions.shape))
    spread = float(np.sqrt(np.mean(np.sum((gt.positions - gt.positions.mean(axis=0)) ** 2, axis=1))))
    for align in ("none", "se3", "sim3"):
        assert ate_rmse(gt, st, align) == pytest.approx(spread)


def test_restart_at_origin_keeps_the_motion_but_not_the_anchor():
    gt = _curvy(40)
    r = 15
    tr, stay = restart_at_origin(gt, r, "track"), restart_at_origin(gt, r, "stay")
    np.testing.assert_allclose(tr.poses[:r], gt.poses[:r])
    np.testing.assert_allclose(tr.poses[r], gt.poses[0], atol=1e-12)  # the new map's origin is the old one's
    rel_gt = inv_pose(gt.poses[r:-1]) @ gt.poses[r + 1:]
    np.testing.assert_allclose(inv_pose(tr.poses[r:-1]) @ tr.poses[r + 1:], rel_gt, atol=1e-9)
    np.testing.assert_allclose(stay.poses[r:], np.broadcast_to(gt.poses[0], stay.poses[r:].shape))
    assert ate_rmse(gt, tr, "se3") > 0.1 and ate_rmse(gt, stay, "se3") > 0.1
    with pytest.raises(ValueError, match="restart index"):
        restart_at_origin(gt, 0)


def test_scores_do_not_depend_on_the_ground_truth_frame():
    """The same path in another world frame (and scale, for sim3) scores the same: alignment does its job."""
    gt = _curvy()
    moved = similarity(gt, so3_exp(np.array([0.4, -0.7, 2.0])), np.array([10.0, -3.0, 2.5]), 1.0)
    a, b = trivial_ates(gt, "se3", restarts=(20,)), trivial_ates(moved, "se3", restarts=(20,))
    assert a.keys() == b.keys() == {"constant_velocity", "line_lsq", "line_ends", "stationary",
                                    "restart_20_track", "restart_20_stay"}
    for k in a:
        assert b[k] == pytest.approx(a[k], rel=1e-6)
    scaled = similarity(gt, np.eye(3), np.zeros(3), 3.0)
    s1, s3 = trivial_ates(gt, "sim3"), trivial_ates(scaled, "sim3")
    for k in s1:
        assert s3[k] == pytest.approx(3.0 * s1[k], rel=1e-6)


def test_sim3_never_scores_worse_than_se3():
    gt = _curvy()
    se3, sim3 = trivial_ates(gt, "se3"), trivial_ates(gt, "sim3")
    assert all(sim3[k] <= se3[k] + 1e-12 for k in se3)


def test_too_little_ground_truth_is_an_error():
    one = Trajectory(np.zeros(1), np.eye(4)[None])
    with pytest.raises(ValueError, match="at least 2"):
        trivial_estimates(one)
    with pytest.raises(ValueError, match="unknown line fit"):
        straight_line(_curvy(), "best")  # type: ignore[arg-type]


def test_the_accuracy_helper_rejects_a_loose_bound_and_a_trivial_estimate():
    from tests.accuracy import assert_beats_trivial

    gt = _curvy(60)
    rng = np.random.default_rng(2)
    good = Trajectory(gt.timestamps, gt.poses.copy())
    good.poses[:, :3, 3] += rng.normal(0.0, 0.01, (len(gt), 3))
    moved = similarity(good, so3_exp(np.array([0.1, 0.2, -0.3])), np.array([1.0, 2.0, 3.0]), 1.0)
    res = assert_beats_trivial(moved, gt, "se3", bound=0.05)
    assert res.ate < 0.03 and res.matched == 60 and res.best_trivial[1] > 0.1
    with pytest.raises(AssertionError, match="is not 2.0x below the trivial answer"):
        assert_beats_trivial(moved, gt, "se3", bound=0.5 * res.best_trivial[1] + 1e-6)
    with pytest.raises(AssertionError, match="above the bound"):
        assert_beats_trivial(constant_velocity(gt), gt, "se3", bound=0.05)
    # a restart adds the restart answers, on the matched frames
    res = assert_beats_trivial(moved, gt, "se3", bound=0.05, restarts_at=(gt.timestamps[30],))
    assert {"restart_30_track", "restart_30_stay"} <= res.trivial.keys()
