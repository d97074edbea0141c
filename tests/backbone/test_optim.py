"""Motion-only and local BA on synthetic problems with known answers.

The timing of :func:`optimize_pose` against the g2o reference is
``benchmarks/optim_speed.py``.
Local BA: ``tests/test_local_ba.py``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import g2opy
import numpy as np
import pytest

from slam.geometry import (
    inv_pose,
    make_pose,
    rotation_angle,
    se3_exp,
    so3_exp,
    transform_points,
)
from slam.backbone.optim.pose import (
    CHI2_MONO,
    CHI2_STEREO,
    _PoseProblem,
    optimize_pose,
    reprojection_chi2,
)

FX, FY, CX, CY = 520.0, 510.0, 320.0, 240.0
BF = 0.12 * FX  # 12 cm baseline
SIGMA_PX = 0.5
LEVEL_SCALE = 1.2


# ------------------------------------------------------------------ scenes


def _levels(rng, n):
    sigma2 = LEVEL_SCALE ** (2 * rng.integers(0, 4, n))
    return sigma2, 1.0 / sigma2


def _project(T_c_w, X):
    p = transform_points(T_c_w, X)
    u = FX * p[:, 0] / p[:, 2] + CX
    v = FY * p[:, 1] / p[:, 2] + CY
    return p, np.column_stack([u, v]), u - BF / p[:, 2]


def _corrupt(rng, uv, frac):
    """Shift a fraction of the measurements by 15..60 px in each coordinate."""
    out = rng.random(len(uv)) < frac
    uv[out] += rng.uniform(15, 60, (out.sum(), 2)) * rng.choice([-1.0, 1.0], (out.sum(), 2))
    return out


@dataclass
class PoseScene:
    T_c_w: np.ndarray
    X: np.ndarray
    uv: np.ndarray
    ur: np.ndarray
    w: np.ndarray
    outlier: np.ndarray


def pose_scene(rng, n=500, stereo_frac=0.5, outlier_frac=0.2) -> PoseScene:
    T_c_w = make_pose(so3_exp(rng.normal(0, 0.5, 3)), rng.normal(0, 2, 3))
    p_c = np.column_stack([rng.uniform(-3, 3, n), rng.uniform(-2, 2, n), rng.uniform(2, 12, n)])
    X = transform_points(inv_pose(T_c_w), p_c)
    _, uv, ur = _project(T_c_w, X)
    sigma2, w = _levels(rng, n)
    noise = rng.normal(0, SIGMA_PX, (n, 3)) * np.sqrt(sigma2)[:, None]
    uv += noise[:, :2]
    ur = np.where(rng.random(n) < stereo_frac, ur + noise[:, 2], -1.0)
    out = _corrupt(rng, uv, outlier_frac)
    return PoseScene(T_c_w, X, uv, ur, w, out)


def perturb(rng, T, trans=0.05, rot_deg=2.0):
    """Left-perturb a pose by exactly ``trans`` metres and ``rot_deg`` degrees in random directions."""
    d = rng.normal(size=3)
    a = rng.normal(size=3)
    return se3_exp(np.r_[trans * d / np.linalg.norm(d), np.deg2rad(rot_deg) * a / np.linalg.norm(a)]) @ T


def pose_error(T_est, T_true):
    """Camera-centre error (m) and rotation error (deg) of ``T_c_w`` estimates."""
    dc = np.linalg.norm(inv_pose(T_est)[:3, 3] - inv_pose(T_true)[:3, 3])
    return float(dc), float(np.rad2deg(rotation_angle(T_est[:3, :3] @ T_true[:3, :3].T)))


def precision_recall(flagged, truth):
    tp = np.sum(flagged & truth)
    return tp / max(flagged.sum(), 1), tp / max(truth.sum(), 1)


# --------------------------------------------------- g2o reference (tests and benchmark only)


def optimize_pose_g2o(T_c_w, X, uv, ur, w, rounds=4, iterations=10):
    """ORB-SLAM's PoseOptimization written directly on g2o, to cross-check and time :func:`optimize_pose`.

    Stereo observations use ``EdgeStereoSE3ProjectXYZ`` on fixed point
    vertices: the binding's only-pose stereo edge exposes no camera fields.
    """
    opt = g2opy.SparseOptimizer()
    opt.set_algorithm(g2opy.OptimizationAlgorithmLevenberg(g2opy.BlockSolverSE3(g2opy.LinearSolverDenseSE3())))
    v = g2opy.VertexSE3Expmap()
    v.set_id(0)
    v.set_estimate(g2opy.SE3Quat(T_c_w[:3, :3], T_c_w[:3, 3]))
    opt.add_vertex(v)
    k_mono, k_stereo = g2opy.RobustKernelHuber(np.sqrt(CHI2_MONO)), g2opy.RobustKernelHuber(np.sqrt(CHI2_STEREO))
    edges, gates = [], []
    for i in range(len(X)):
        if ur[i] >= 0:
            p = g2opy.VertexPointXYZ()
            p.set_id(i + 1)
            p.set_estimate(X[i])
            p.set_fixed(True)
            opt.add_vertex(p)
            e = g2opy.EdgeStereoSE3ProjectXYZ()
            e.set_vertex(0, p)
            e.set_vertex(1, v)
            e.set_measurement(np.array([uv[i, 0], uv[i, 1], ur[i]]))
            e.set_information(w[i] * np.eye(3))
            e.bf = BF
            e.set_robust_kernel(k_stereo)
            gates.append(CHI2_STEREO)
        else:
            e = g2opy.EdgeSE3ProjectXYZOnlyPose()
            e.set_vertex(0, v)
            e.Xw = X[i]
            e.set_measurement(uv[i])
            e.set_information(w[i] * np.eye(2))
            e.set_robust_kernel(k_mono)
            gates.append(CHI2_MONO)
        e.fx, e.fy, e.cx, e.cy = FX, FY, CX, CY
        opt.add_edge(e)
        edges.append(e)
    inl = np.ones(len(X), bool)
    for rnd in range(rounds):
        v.set_estimate(v.estimate())  # ORB-SLAM resets the estimate each round; kept for parity
        opt.initialize_optimization(0)
        opt.optimize(iterations)
        for i, e in enumerate(edges):
            e.compute_error()
            inl[i] = e.chi2() <= gates[i] and e.is_depth_positive()
            e.set_level(0 if inl[i] else 1)
        if rnd == rounds - 2:
            k_mono.set_delta(1e100)
            k_stereo.set_delta(1e100)
    return v.estimate().matrix(), inl


# ------------------------------------------------------------ optimize_pose


def test_chi2_and_pose_convention_match_g2o():
    """SE3Quat(R_c_w, t_c_w) is what g2o's edges project with, and our chi2 is g2o's."""
    rng = np.random.default_rng(0)
    s = pose_scene(rng, n=20, stereo_frac=0.5, outlier_frac=0.3)
    T = perturb(rng, s.T_c_w)
    v = g2opy.VertexSE3Expmap()
    v.set_estimate(g2opy.SE3Quat(T[:3, :3], T[:3, 3]))
    np.testing.assert_allclose(v.estimate().matrix(), T, atol=1e-12)
    ours = reprojection_chi2(transform_points(T, s.X), s.uv, s.ur, s.w, FX, FY, CX, CY, BF)
    for i in range(len(s.X)):
        p = g2opy.VertexPointXYZ()
        p.set_estimate(s.X[i])
        if s.ur[i] >= 0:
            e = g2opy.EdgeStereoSE3ProjectXYZ()
            e.set_measurement(np.array([*s.uv[i], s.ur[i]]))
            e.set_information(s.w[i] * np.eye(3))
            e.bf = BF
        else:
            e = g2opy.EdgeSE3ProjectXYZ()
            e.set_measurement(s.uv[i])
            e.set_information(s.w[i] * np.eye(2))
        e.fx, e.fy, e.cx, e.cy = FX, FY, CX, CY
        e.set_vertex(0, p)
        e.set_vertex(1, v)
        e.compute_error()
        assert ours[i] == pytest.approx(e.chi2(), rel=1e-6)  # g2o keeps bf in float


@pytest.mark.parametrize("disparity", [False, True], ids=["stereo", "rgbd"])
def test_pose_normal_equations_match_finite_differences(disparity):
    """The compiled system equals J^T W J and J^T W r with J from central differences of the residuals."""
    rng = np.random.default_rng(5)
    s = pose_scene(rng, n=200, stereo_frac=0.5, outlier_frac=0.0)
    wd = rng.uniform(0.5, 2.0, 200) if disparity else None
    prob = _PoseProblem(s.X, s.uv, s.ur, s.w, FX, FY, CX, CY, BF, wd)
    T = perturb(rng, s.T_c_w, 0.02, 1.0)
    _, r = prob.residuals(T)
    h = 1e-6
    J = np.zeros((200, 3, 6))
    for k in range(6):
        d = np.zeros(6)
        d[k] = h
        _, r_plus = prob.residuals(se3_exp(d) @ T)
        _, r_minus = prob.residuals(se3_exp(-d) @ T)
        J[:, :, k] = -(r_plus - r_minus) / (2 * h)  # residual = meas - proj
    W = np.column_stack([s.w, s.w, s.w if wd is None else wd])
    active = rng.random(200) < 0.9
    Wa = W * active[:, None]
    H_ref = np.einsum("nki,nk,nkj->ij", J, Wa, J)
    g_ref = np.einsum("nki,nk,nk->i", J, Wa, r)
    H, g, cost = prob.system(T, active, None)
    np.testing.assert_allclose(H, H_ref, rtol=1e-5, atol=1e-3 * np.abs(H_ref).max() * 1e-3)
    np.testing.assert_allclose(g, g_ref, rtol=1e-5, atol=1e-6 * np.abs(g_ref).max())
    chi2, cost_ref = prob.cost(r, active, None)
    assert cost == pytest.approx(cost_ref, rel=1e-12)
    # Huber: the IRLS weights sqrt(min(1, delta2 / chi2)) scale each observation's rows
    delta2 = np.full(200, 2.0)
    H_rob, _, cost_rob = prob.system(T, active, delta2)
    hub = np.sqrt(np.minimum(1.0, delta2 / np.maximum(chi2, 1e-300)))
    np.testing.assert_allclose(H_rob, np.einsum("nki,nk,nkj->ij", J, Wa * hub[:, None], J), rtol=1e-5,
                               atol=1e-6 * np.abs(H_ref).max())
    assert cost_rob == pytest.approx(prob.cost(r, active, delta2)[1], rel=1e-12)


@pytest.mark.parametrize("stereo_frac", [0.0, 1.0, 0.5], ids=["mono", "stereo", "mixed"])
def test_optimize_pose_recovers_pose_and_flags_outliers(stereo_frac):
    rng = np.random.default_rng(int(10 * stereo_frac) + 3)
    for trial in range(3):
        s = pose_scene(rng, n=500, stereo_frac=stereo_frac, outlier_frac=0.2)
        T0 = perturb(rng, s.T_c_w, 0.05, 2.0)
        t0 = time.perf_counter()
        res = optimize_pose(T0, s.X, s.uv, s.ur, s.w, FX, FY, CX, CY, BF)
        dt = time.perf_counter() - t0
        dc, dr = pose_error(res.T_c_w, s.T_c_w)
        prec, rec = precision_recall(~res.inliers, s.outlier)
        print(f"\n  {stereo_frac=} trial {trial}: {1e3 * dc:.2f} mm {dr:.4f} deg, outliers P={prec:.3f} "
              f"R={rec:.3f}, {res.iterations} solves, {1e3 * dt:.2f} ms")  # fmt: skip
        assert dc < 0.005 and dr < 0.1
        assert prec > 0.9 and rec > 0.9
        assert res.n_inliers == res.inliers.sum()
        assert res.chi2.shape == (500,) and np.all(res.chi2[res.inliers] <= CHI2_STEREO)


def test_optimize_pose_returns_a_rigid_pose_from_a_sheared_start():
    """A prediction composed from poses can be slightly off SO(3); the result must not be."""
    rng = np.random.default_rng(11)
    s = pose_scene(rng, n=300, stereo_frac=0.5, outlier_frac=0.1)
    T0 = perturb(rng, s.T_c_w, 0.02, 1.0)
    T0[:3, :3] = T0[:3, :3] @ np.diag([1.01, 0.995, 1.0])
    res = optimize_pose(T0, s.X, s.uv, s.ur, s.w, FX, FY, CX, CY, BF)
    R = res.T_c_w[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    dc, dr = pose_error(res.T_c_w, s.T_c_w)
    assert dc < 0.005 and dr < 0.1


@pytest.mark.parametrize("stereo_frac", [0.0, 0.5], ids=["mono", "mixed"])
def test_optimize_pose_agrees_with_g2o(stereo_frac):
    rng = np.random.default_rng(7)
    s = pose_scene(rng, n=300, stereo_frac=stereo_frac, outlier_frac=0.2)
    T0 = perturb(rng, s.T_c_w, 0.05, 2.0)
    res = optimize_pose(T0, s.X, s.uv, s.ur, s.w, FX, FY, CX, CY, BF)
    T_ref, inl_ref = optimize_pose_g2o(T0, s.X, s.uv, s.ur, s.w)
    dc, dr = pose_error(res.T_c_w, T_ref)
    assert dc < 1e-4 and dr < 1e-3
    assert np.mean(res.inliers == inl_ref) > 0.995


def test_optimize_pose_degenerate_inputs():
    T = make_pose(np.eye(3), [0.1, 0.2, 0.3])
    empty = optimize_pose(T, np.zeros((0, 3)), np.zeros((0, 2)), np.zeros(0), np.zeros(0), FX, FY, CX, CY)
    assert empty.n_inliers == 0 and np.array_equal(empty.T_c_w, T)
    # every point behind the camera: nothing to optimise, nothing kept
    X = np.column_stack([np.zeros(5), np.zeros(5), -np.arange(1.0, 6.0)])
    res = optimize_pose(T, X, np.full((5, 2), 300.0), -np.ones(5), np.ones(5), FX, FY, CX, CY)
    assert res.n_inliers == 0 and np.all(np.isfinite(res.T_c_w))
    with pytest.raises(ValueError):
        optimize_pose(T, X, np.full((5, 2), 300.0), np.ones(5), np.ones(5), FX, FY, CX, CY, bf=0.0)
