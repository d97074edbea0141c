"""Local bundle adjustment on synthetic problems with known answers, both backends.

The timing benchmark (native vs g2o, build vs optimise split) is
``benchmarks/optim_speed.py``; ``pytest -s`` shows what the tests print.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import g2opy
import numpy as np
import pytest

import slam.backbone.optim.local_ba
from slam.geometry import inv_pose, make_pose, so3_exp
from slam.backbone.optim.local_ba import BACKENDS, local_bundle_adjustment
from tests.backbone.test_optim import (
    BF,
    CX,
    CY,
    FX,
    FY,
    SIGMA_PX,
    _corrupt,
    _levels,
    _project,
    perturb,
    pose_error,
    precision_recall,
)


@dataclass
class BAScene:
    poses: dict
    point_ids: np.ndarray
    X: np.ndarray
    obs_kf: np.ndarray
    obs_pt: np.ndarray
    uv: np.ndarray
    ur: np.ndarray
    w: np.ndarray
    outlier: np.ndarray


def ba_scene(rng, n_kf=5, n_pts=300, obs_per_pt=4, stereo_frac=0.5, outlier_frac=0.1) -> BAScene:
    """Keyframes 0.5 m apart along x, turning slightly; points 2..8 m ahead; ids offset so they aren't indices."""
    poses = {
        100 + k: inv_pose(make_pose(so3_exp(np.array([0.0, 0.03 * k, 0.0])), np.array([0.5 * k, 0.0, 0.0])))
        for k in range(n_kf)
    }
    X = np.column_stack([rng.uniform(-3, 3 + 0.5 * n_kf, n_pts), rng.uniform(-2, 2, n_pts), rng.uniform(2, 8, n_pts)])
    point_ids = 1000 + 7 * np.arange(n_pts)
    kf_ids = np.array(sorted(poses))
    obs_kf, obs_pt, uv, ur = [], [], [], []
    for j in range(n_pts):
        for k in rng.choice(kf_ids, min(obs_per_pt, n_kf), replace=False):
            _, uv_j, ur_j = _project(poses[k], X[j : j + 1])
            obs_kf.append(k)
            obs_pt.append(point_ids[j])
            uv.append(uv_j[0])
            ur.append(ur_j[0])
    n = len(obs_kf)
    sigma2, w = _levels(rng, n)
    noise = rng.normal(0, SIGMA_PX, (n, 3)) * np.sqrt(sigma2)[:, None]
    uv = np.array(uv) + noise[:, :2]
    ur = np.where(rng.random(n) < stereo_frac, np.array(ur) + noise[:, 2], -1.0)
    out = _corrupt(rng, uv, outlier_frac)
    return BAScene(poses, point_ids, X, np.array(obs_kf), np.array(obs_pt), uv, ur, w, out)


def run_ba(s: BAScene, poses, X, fixed, **kw):
    return local_bundle_adjustment(
        poses, fixed, s.point_ids, X, s.obs_kf, s.obs_pt, s.uv, s.ur, s.w, FX, FY, CX, CY, BF, **kw
    )



# ------------------------------------------------------------------ local BA


def _perturbed_start(rng, s: BAScene, fixed, trans=0.05, rot_deg=1.0, pt_sigma=0.1):
    poses = {k: (T.copy() if k in fixed else perturb(rng, T, trans, rot_deg)) for k, T in s.poses.items()}
    return poses, s.X + rng.normal(0, pt_sigma, s.X.shape)


def _max_pose_error(poses, truth):
    return max(pose_error(poses[k], truth[k])[0] for k in truth), max(pose_error(poses[k], truth[k])[1] for k in truth)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("stereo_frac", [0.0, 0.5], ids=["mono", "mixed"])
def test_local_ba_recovers_scene(stereo_frac, backend):
    rng = np.random.default_rng(11)
    s = ba_scene(rng, n_kf=5, n_pts=300, obs_per_pt=5, stereo_frac=stereo_frac, outlier_frac=0.1)
    fixed = {100, 101}
    poses0, X0 = _perturbed_start(rng, s, fixed)
    res = run_ba(s, poses0, X0, fixed, backend=backend)
    before, after = _max_pose_error(poses0, s.poses), _max_pose_error(res.poses, s.poses)
    pt_before = np.median(np.linalg.norm(X0 - s.X, axis=1))
    pt_after = np.median(np.linalg.norm(res.points_w - s.X, axis=1))
    prec, rec = precision_recall(res.outlier_obs, s.outlier)
    st = res.stats
    print(f"\n  local BA {backend} {stereo_frac=}: pose {1e3 * before[0]:.1f} mm -> {1e3 * after[0]:.2f} mm, "
          f"{before[1]:.2f} -> {after[1]:.4f} deg; points {1e3 * pt_before:.0f} -> {1e3 * pt_after:.1f} mm; "
          f"outliers P={prec:.3f} R={rec:.3f}; chi2 {st.chi2_initial:.0f} -> {st.chi2_final_inliers:.0f} (inliers); "
          f"build {1e3 * st.build_s:.1f} ms, optimize {1e3 * st.optimize_s:.1f} ms, total {1e3 * st.total_s:.1f} ms")  # fmt: skip
    assert after[0] < 0.01 and after[0] < before[0] / 5
    assert after[1] < 0.1 and after[1] < before[1] / 5
    assert pt_after < pt_before / 3
    # A gross outlier also drags its point, so other observations of that point can fail the
    # gate too (ORB-SLAM erases them as well); observations of clean points must stay.
    dirty = np.isin(s.obs_pt, s.obs_pt[s.outlier])
    assert rec > 0.95 and prec > 0.75
    assert np.mean(res.outlier_obs[~dirty]) < 0.01
    assert not st.aborted and st.n_edges == len(s.obs_kf) and st.n_fixed == 2
    # gauge: fixed keyframes come back bit for bit
    for k in fixed:
        assert np.array_equal(res.poses[k], poses0[k])
    assert np.array_equal(res.point_ids, s.point_ids)


@pytest.mark.parametrize("backend", BACKENDS)
def test_local_ba_leaves_unobserved_points_and_keyframes_alone(backend):
    rng = np.random.default_rng(12)
    s = ba_scene(rng, n_kf=4, n_pts=100, obs_per_pt=3, outlier_frac=0.0)
    keep = s.obs_kf != 103  # keyframe 103 loses its observations
    keep &= s.obs_pt != s.point_ids[5]  # point 5 loses all of its observations
    poses0, X0 = _perturbed_start(rng, s, {100})
    res = local_bundle_adjustment(
        poses0, {100}, s.point_ids, X0, s.obs_kf[keep], s.obs_pt[keep], s.uv[keep], s.ur[keep], s.w[keep],
        FX, FY, CX, CY, BF, backend=backend,
    )  # fmt: skip
    assert np.array_equal(res.poses[103], poses0[103])
    assert np.array_equal(res.points_w[5], X0[5])
    assert res.stats.n_keyframes == 3 and res.stats.n_points == 99
    assert _max_pose_error({k: res.poses[k] for k in (101, 102)}, {k: s.poses[k] for k in (101, 102)})[0] < 0.01


def test_local_ba_sub_graph_build_matches_single_graph(monkeypatch):
    """The chunked g2o build (elements shared through add_graph) gives the same optimum as one graph."""
    rng = np.random.default_rng(15)
    s = ba_scene(rng, n_kf=4, n_pts=80, obs_per_pt=3)
    poses0, X0 = _perturbed_start(rng, s, {100})
    chunked = run_ba(s, poses0, X0, {100}, backend="g2o")  # 80 points + 240 edges: 1 sub-graph at the default size
    monkeypatch.setattr(slam.backbone.optim.local_ba, "_SUBGRAPH_SIZE", 7)
    tiny = run_ba(s, poses0, X0, {100}, backend="g2o")
    monkeypatch.setattr(slam.backbone.optim.local_ba, "_SUBGRAPH_SIZE", 10**9)
    single = run_ba(s, poses0, X0, {100}, backend="g2o")
    for other in (tiny, chunked):
        np.testing.assert_allclose(other.points_w, single.points_w, atol=1e-6)
        for k in poses0:
            np.testing.assert_allclose(other.poses[k], single.poses[k], atol=1e-8)
        assert np.array_equal(other.outlier_obs, single.outlier_obs)
    assert _max_pose_error(tiny.poses, s.poses)[0] < 0.01


@pytest.mark.parametrize("backend", BACKENDS)
def test_local_ba_all_outliers_does_not_fail(backend):
    rng = np.random.default_rng(16)
    s = ba_scene(rng, n_kf=3, n_pts=30, obs_per_pt=2, outlier_frac=0.0)
    s.uv += rng.uniform(100, 300, s.uv.shape) * rng.choice([-1.0, 1.0], s.uv.shape)  # every observation far off
    res = run_ba(s, s.poses, s.X, {100}, iterations=(0, 10), backend=backend)  # nothing left for the second phase
    assert res.outlier_obs.all() and not res.stats.aborted
    assert np.array_equal(res.points_w, s.X)


@pytest.mark.parametrize("backend", BACKENDS)
def test_optimize_releases_the_gil(backend):
    rng = np.random.default_rng(17)
    s = ba_scene(rng, n_kf=6, n_pts=600, obs_per_pt=4)
    during, idle = gil_check(s, {100, 101}, backend)
    print(f"\n  spinning thread: {during:.0f} loops/ms inside the {backend} solver vs {idle:.0f} alone")
    # with the GIL held the spinner could not run at all inside optimize()
    assert during > 0.05 * idle


class _TrueOnCall:
    """Duck-typed ``threading.Event`` whose ``is_set`` turns True from the ``n``-th call on."""

    def __init__(self, n):
        self.n, self.calls = n, 0

    def is_set(self):
        self.calls += 1
        return self.calls >= self.n


@pytest.mark.parametrize("backend", BACKENDS)
def test_local_ba_abort(backend):
    rng = np.random.default_rng(13)
    s = ba_scene(rng, n_kf=5, n_pts=200, obs_per_pt=3)
    fixed = {100, 101}
    poses0, X0 = _perturbed_start(rng, s, fixed)
    ev = threading.Event()
    ev.set()
    res = run_ba(s, poses0, X0, fixed, abort=ev, backend=backend)
    assert res.stats.aborted
    assert all(np.array_equal(res.poses[k], poses0[k]) for k in poses0)
    assert np.array_equal(res.points_w, X0)
    assert res.outlier_obs.shape == (len(s.obs_kf),)
    # set during the first phase: its result comes back, the second phase is skipped
    first = run_ba(s, poses0, X0, fixed, abort=_TrueOnCall(3), backend=backend)
    full = run_ba(s, poses0, X0, fixed, backend=backend)
    assert first.stats.aborted and not full.stats.aborted
    assert _max_pose_error(first.poses, s.poses)[0] < _max_pose_error(poses0, s.poses)[0]
    assert not np.array_equal(first.points_w, full.points_w)


def test_local_ba_rejects_unknown_ids():
    rng = np.random.default_rng(14)
    s = ba_scene(rng, n_kf=3, n_pts=20, obs_per_pt=2)
    with pytest.raises(ValueError, match="keyframe"):
        run_ba(s, {k: T for k, T in s.poses.items() if k != 102}, s.X, {100})
    with pytest.raises(ValueError, match="point"):
        local_bundle_adjustment(
            s.poses, {100}, s.point_ids[1:], s.X[1:], s.obs_kf, s.obs_pt, s.uv, s.ur, s.w, FX, FY, CX, CY, BF
        )
    with pytest.raises(ValueError, match="backend"):
        run_ba(s, s.poses, s.X, {100}, backend="ceres")


@pytest.mark.parametrize("kind", ["mono", "mixed", "rgbd"])
def test_native_and_g2o_reach_the_same_optimum(kind):
    """Same cost, same Levenberg schedule: converged, the two backends agree to numerical precision."""
    rng = np.random.default_rng(21)
    s = ba_scene(rng, n_kf=6, n_pts=400, obs_per_pt=4, stereo_frac=0.0 if kind == "mono" else 0.6, outlier_frac=0.1)
    fixed = {100, 101}
    poses0, X0 = _perturbed_start(rng, s, fixed)
    kw = {"iterations": (15, 15)}
    if kind == "rgbd":  # depth term weighted as a disparity error, its own information
        kw["obs_inv_sigma2_disp"] = rng.uniform(0.3, 3.0, len(s.obs_kf))
    nat = run_ba(s, poses0, X0, fixed, backend="native", **kw)
    ref = run_ba(s, poses0, X0, fixed, backend="g2o", **kw)
    for k in s.poses:
        dc, dr = pose_error(nat.poses[k], ref.poses[k])
        assert dc < 1e-5 and dr < 1e-4, (k, dc, dr)
    dirty = np.isin(np.arange(len(s.X)), np.searchsorted(s.point_ids, s.obs_pt[s.outlier]))
    np.testing.assert_allclose(nat.points_w[~dirty], ref.points_w[~dirty], atol=1e-4)
    assert np.mean(nat.outlier_obs == ref.outlier_obs) > 0.995
    assert nat.stats.chi2_final_inliers == pytest.approx(ref.stats.chi2_final_inliers, rel=1e-4)
    # and both are right
    assert _max_pose_error(nat.poses, s.poses)[0] < 0.01
    np.testing.assert_allclose(nat.poses[100], poses0[100])


def test_native_result_is_rigid_and_moves_only_free_keyframes():
    rng = np.random.default_rng(22)
    s = ba_scene(rng, n_kf=5, n_pts=200, obs_per_pt=3)
    fixed = {100, 102}
    poses0, X0 = _perturbed_start(rng, s, fixed, trans=0.1, rot_deg=3.0)
    res = run_ba(s, poses0, X0, fixed)
    for k, T in res.poses.items():
        np.testing.assert_allclose(T[:3, :3].T @ T[:3, :3], np.eye(3), atol=1e-12)
        np.testing.assert_array_equal(T[3], [0.0, 0.0, 0.0, 1.0])
        if k in fixed:
            assert np.array_equal(T, poses0[k])
    assert res.stats.chi2_final_inliers < 0.01 * res.stats.chi2_initial




# ----------------------------------------------------------------- GIL


def gil_check(s: BAScene, fixed, backend: str) -> tuple[float, float]:
    """Loops per ms of a spinning Python thread while local BA is inside the solver, and alone.

    "Inside" is g2o's ``optimize()`` or the compiled ``ba_levenberg``. A rate
    near the idle one means the solver runs without the GIL.
    """
    stop = threading.Event()
    count = [0]
    inside = [0, 0.0]  # loops counted, seconds spent inside the solver

    def timed(fn):
        def wrapper(*args):
            c0, t0 = count[0], time.perf_counter()
            out = fn(*args)
            inside[0] += count[0] - c0
            inside[1] += time.perf_counter() - t0
            return out

        return wrapper

    class TimedOptimizer(g2opy.SparseOptimizer):
        optimize = timed(g2opy.SparseOptimizer.optimize)

    def spin():
        while not stop.is_set():
            count[0] += 1

    th = threading.Thread(target=spin, daemon=True)
    th.start()
    time.sleep(0.05)
    c0, t0 = count[0], time.perf_counter()
    time.sleep(0.1)
    idle = (count[0] - c0) / (1e3 * (time.perf_counter() - t0))
    originals = slam.backbone.optim.local_ba.g2opy.SparseOptimizer, slam.backbone.optim.local_ba.ba_levenberg
    slam.backbone.optim.local_ba.g2opy.SparseOptimizer = TimedOptimizer
    slam.backbone.optim.local_ba.ba_levenberg = timed(originals[1])
    try:
        run_ba(s, *(_perturbed_start(np.random.default_rng(0), s, fixed)), fixed, backend=backend)
    finally:
        slam.backbone.optim.local_ba.g2opy.SparseOptimizer, slam.backbone.optim.local_ba.ba_levenberg = originals
        stop.set()
        th.join()
    return inside[0] / (1e3 * inside[1]), idle
