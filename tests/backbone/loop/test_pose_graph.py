"""Essential-graph optimisation on a synthetic loop with injected drift; map-point correction.

``python -m tests.backbone.loop.test_pose_graph`` prints the timing on 200 keyframes / 2000 edges.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from slam.backbone.loop.pose_graph import (
    PoseGraphEdge,
    correct_points,
    essential_graph,
    optimize_essential_graph,
    optimize_pose_graph,
    propagate_correction,
    relative,
)
from slam.geometry import inv_pose, make_pose, sim3_inverse, sim3_scale, so3_exp, umeyama


def _circle(n: int, radius: float = 10.0) -> list[np.ndarray]:
    """Ground-truth ``T_c_w`` of n keyframes on a circle, looking along the tangent, with a small height wave."""
    out = []
    for k in range(n):
        a = 2 * np.pi * k / n
        c = np.array([radius * np.cos(a), radius * np.sin(a), 0.3 * np.sin(3 * a)])
        R_w_c = so3_exp(np.array([0.0, 0.0, a])) @ so3_exp(np.array([np.pi / 2, 0.0, 0.0]))
        out.append(inv_pose(make_pose(R_w_c, c)))
    return out


def _drift(gt: list[np.ndarray], yaw_deg: float, trans: float, scale_step: float, noise: float, seed: int = 0):
    """Odometry poses: each relative motion gets a yaw bias, a translation bias, noise and (mono) scale drift.

    Returns rigid ``T_c_w`` (as a monocular map holds them) and the map scale at each keyframe
    (camera-k points of the map are ``scale[k]`` times the true ones).
    """
    rng = np.random.default_rng(seed)
    est, scales = [gt[0].copy()], [1.0]
    for k in range(1, len(gt)):
        T_rel = gt[k] @ inv_pose(gt[k - 1])  # true T_k_(k-1)
        err = so3_exp(np.radians([0.0, yaw_deg, 0.0]) + rng.normal(0, noise, 3))
        s = scales[-1] * scale_step
        t = s * T_rel[:3, 3] + trans * np.array([1.0, 0.0, 0.0]) + rng.normal(0, noise, 3)
        est.append(make_pose(err @ T_rel[:3, :3], t) @ est[-1])
        scales.append(s)
    return est, scales


def _ate(T_c_w: list[np.ndarray], gt: list[np.ndarray], with_scale: bool) -> float:
    """RMSE of camera centres after a least-squares alignment (Sim3 for mono, SE3 otherwise)."""
    c = np.array([inv_pose(T)[:3, 3] for T in T_c_w])
    g = np.array([inv_pose(T)[:3, 3] for T in gt])
    s, R, t = umeyama(c, g, with_scale=with_scale)
    return float(np.sqrt(np.mean(np.sum((c @ (s * R).T + t - g) ** 2, axis=1))))


def _close_loop(n: int, sim3: bool, seed: int = 0):
    gt = _circle(n)
    est, scales = _drift(gt, yaw_deg=0.3, trans=0.01, scale_step=1.004 if sim3 else 1.0, noise=0.002, seed=seed)
    T = dict(enumerate(est))
    cur, loop = n - 1, 0
    # verified loop: camera-cur points of the drifted map (scale scales[cur]) into camera 0 (true)
    S_loop_cur = gt[loop] @ inv_pose(gt[cur]) @ make_pose(np.eye(3), np.zeros(3), 1.0 / scales[cur])
    S_cur_w = sim3_inverse(S_loop_cur) @ T[loop]
    neighbours = {k: T[k] for k in (n - 3, n - 2, n - 1)}
    corrected = propagate_correction(neighbours, cur, S_cur_w)
    parent = {0: None, **{k: k - 1 for k in range(1, n)}}
    covis = {(k, k + 2): 150 for k in range(n - 2)}
    covis.update({(k, k + 3): 40 for k in range(n - 3)})  # too weak for the essential graph
    edges = essential_graph(parent, covis)
    new_loop = [(i, j) for i in neighbours for j in (0, 1, 2)]
    res = optimize_essential_graph(T, edges, new_loop, corrected, fixed=[loop], sim3=sim3)
    return gt, est, scales, res


@pytest.mark.parametrize("sim3", [False, True])
def test_loop_closure_removes_drift(sim3):
    n = 60
    gt, est, _, res = _close_loop(n, sim3)
    ate_drift = _ate(est, gt, with_scale=sim3)
    ate_opt = _ate([res.T_c_w[k] for k in range(n)], gt, with_scale=sim3)
    assert ate_drift > 0.5  # the drift is real: ~1 m on a 10 m circle
    assert ate_opt < 0.05 * ate_drift, (ate_opt, ate_drift)  # measured: 1.8 % (SE3), 2.7 % (Sim3)
    assert np.array_equal(res.S_c_w[0], est[0]) or np.abs(res.S_c_w[0] - est[0]).max() < 1e-12
    assert sum(e.kind == "covis" for e in res.edges) == n - 2  # weight 150 in, 40 out
    if not sim3:
        assert all(s == pytest.approx(1.0, abs=1e-12) for s in res.scale.values())
    else:
        assert res.scale[n - 1] == pytest.approx(1.004 ** (n - 1), rel=0.02)  # the map scale drift, undone


def test_consistent_edges_give_zero_correction():
    gt = _circle(20)
    T = dict(enumerate(gt))
    for sim3 in (False, True):
        S = {k: (make_pose(np.eye(3), np.zeros(3), 1.0 + 0.01 * k) @ v if sim3 else v) for k, v in T.items()}
        edges = [PoseGraphEdge(i, j, relative(S[j], S[i])) for i in range(20) for j in (i + 1, i + 5) if j < 20]
        out = optimize_pose_graph(S, edges, fixed=[0], sim3=sim3)
        assert max(np.abs(out[k] - S[k]).max() for k in S) < 1e-9


@pytest.mark.parametrize("sim3", [False, True])
def test_result_does_not_depend_on_the_world_frame(sim3):
    """Moving the world origin 100 m away moves the answer with it (edge errors are local to a camera)."""
    n = 30
    gt = _circle(n)
    est, scales = _drift(gt, 0.3, 0.01, 1.004 if sim3 else 1.0, 0.002)
    G = make_pose(so3_exp(np.array([0.3, -0.2, 1.0])), np.array([100.0, -50.0, 20.0]))  # p_w' = G p_w
    S_loop = gt[0] @ inv_pose(gt[n - 1]) @ make_pose(np.eye(3), np.zeros(3), 1.0 / scales[n - 1])
    out = []
    for W in (np.eye(4), inv_pose(G)):
        T = {k: v @ W for k, v in enumerate(est)}
        edges = [PoseGraphEdge(k - 1, k, relative(T[k], T[k - 1])) for k in range(1, n)]
        edges.append(PoseGraphEdge(n - 1, 0, S_loop))
        res = optimize_pose_graph(T, edges, fixed=[0], sim3=sim3)
        out.append({k: v @ inv_pose(W) for k, v in res.items()})
    assert max(np.abs(out[0][k] - out[1][k]).max() for k in range(n)) < 1e-6


def test_fixed_keyframe_stays_and_bad_edges_are_refused():
    gt, est, _, res = _close_loop(30, sim3=True)
    assert np.abs(res.S_c_w[0] - est[0]).max() < 1e-12
    with pytest.raises(KeyError, match="99"):
        optimize_pose_graph({0: est[0]}, [PoseGraphEdge(0, 99, np.eye(4))], fixed=[0], sim3=False)
    with pytest.raises(ValueError, match="fixed"):
        optimize_pose_graph({0: est[0]}, [], fixed=[], sim3=False)


def test_essential_graph_dedupes_and_filters():
    parent = {0: None, 1: 0, 2: 1}
    covis = {(0, 1): 300, (1, 0): 300, (0, 2): 100, (1, 2): 99}
    assert essential_graph(parent, covis, loop_pairs=[(2, 0)]) == [(0, 1, "tree"), (1, 2, "tree"), (0, 2, "loop")]
    assert essential_graph(parent, covis) == [(0, 1, "tree"), (1, 2, "tree"), (0, 2, "covis")]


def test_correct_points_follows_reference_keyframe():
    rng = np.random.default_rng(0)
    gt = _circle(10)
    before = {k: gt[k] for k in range(3)}
    after = {k: make_pose(so3_exp(rng.normal(0, 0.1, 3)), rng.normal(0, 1, 3), 1.3) @ gt[k] for k in range(3)}
    X = rng.normal(0, 5, (100, 3))
    ref = rng.integers(0, 4, 100)  # id 3 has no correction: unchanged
    Y = correct_points(X, ref, before, after)
    for x, y, r in zip(X, Y, ref):
        if r == 3:
            assert np.array_equal(x, y)
        else:  # the point keeps its coordinates in its reference camera
            assert np.allclose(after[r][:3, :3] @ y + after[r][:3, 3], before[r][:3, :3] @ x + before[r][:3, 3])
    with pytest.raises(ValueError):
        correct_points(X, ref[:5], before, after)


def test_propagation_keeps_relative_poses():
    gt = _circle(10)
    T = {k: gt[k] for k in (3, 4, 5)}
    S = make_pose(so3_exp(np.array([0.1, 0.0, 0.2])), np.array([1.0, 2.0, 0.0]), 0.8) @ T[5]
    C = propagate_correction(T, 5, S)
    assert np.allclose(C[5], S)
    for k in (3, 4):
        assert np.allclose(relative(C[k], C[5]), relative(T[k], T[5]))
        assert sim3_scale(C[k]) == pytest.approx(0.8)


def benchmark(n: int = 200, n_edges: int = 2000, repeats: int = 3) -> None:
    """Time the essential-graph optimisation on n keyframes with ~n_edges edges (tree + covisibility + loop)."""
    gt = _circle(n)
    for sim3 in (False, True):
        est, scales = _drift(gt, 0.3, 0.01, 1.004 if sim3 else 1.0, 0.002)
        T = dict(enumerate(est))
        parent = {0: None, **{k: k - 1 for k in range(1, n)}}
        per = max(1, (n_edges - n) // n)
        covis = {(k, k + d): 150 for k in range(n) for d in range(2, 2 + per) if k + d < n}
        edges = essential_graph(parent, covis)
        S_loop_cur = gt[0] @ inv_pose(gt[n - 1]) @ make_pose(np.eye(3), np.zeros(3), 1.0 / scales[n - 1])
        nb = {k: T[k] for k in range(n - 3, n)}
        corrected = propagate_correction(nb, n - 1, sim3_inverse(S_loop_cur) @ T[0])
        times = []
        for _ in range(repeats):
            res = optimize_essential_graph(T, edges, [(i, j) for i in nb for j in (0, 1, 2)], corrected, [0], sim3)
            times.append(res.seconds)
        ate0 = _ate(est, gt, sim3)
        ate1 = _ate([res.T_c_w[k] for k in range(n)], gt, sim3)
        print(f"{'Sim3' if sim3 else 'SE3 '} {n} kf, {len(res.edges)} edges, 20 it: "
              f"{1e3 * min(times):.0f} ms best / {1e3 * np.median(times):.0f} ms median; "
              f"ATE {ate0:.3f} m -> {ate1:.3f} m")


if __name__ == "__main__":
    t0 = time.perf_counter()
    benchmark()
    print(f"total {time.perf_counter() - t0:.1f} s")
