"""Local bundle adjustment (ORB-SLAM's LocalBundleAdjustment): keyframe poses and map points, array in, array out.

Two solvers of the same problem, picked by ``backend``:

* ``"native"`` (default) -- :mod:`slam.backbone.optim.ba_kernel`: Levenberg-Marquardt with
  the Schur complement over the points, compiled with numba; one call per
  phase, no graph objects, no GIL held.
* ``"g2o"`` -- g2o through ``g2opy`` (``BlockSolverSE3``, Levenberg,
  ``VertexSE3Expmap`` / ``VertexPointXYZ``, ``EdgeSE3ProjectXYZ`` and
  ``EdgeStereoSE3ProjectXYZ``). ``optimize()`` releases the GIL, but the
  graph is built one Python call at a time with the GIL held.

Why two: on a window the size of a monocular keyframe's (10 keyframes,
3000 points, 12000 observations, 5 + 5 iterations; ``python -m
tests.test_local_ba``, 2 cores) g2o takes 200-360 ms, 70-120 ms of it
building the graph with the GIL held; the compiled solver takes 30-40 ms
and reaches the same cost to 1e-10 (same algorithm, same damping
schedule). That is what lets local mapping keep up with monocular
keyframes in fast turns. Tests hold the two to the same optimum.

Conventions as :mod:`slam.backbone.optim.pose`: poses ``T_c_w``, undistorted pixels,
``u_right < 0`` for monocular observations, information ``inv_sigma2 * I``
(RGB-D: the depth term as a disparity error with its own information), chi2
gates 5.991 / 7.815. g2o's ``VertexSE3Expmap`` holds ``T_c_w`` as an
``SE3Quat(R_c_w, t_c_w)`` and its edges project ``R_c_w @ X_w + t_c_w``, so
poses go in and come out without inversion.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import g2opy
import numpy as np

from slam.backbone.optim.ba_kernel import ba_levenberg
from slam.geometry.se3 import normalize_pose
from slam.backbone.optim.pose import CHI2_MONO, CHI2_STEREO, _check_stereo, _gates, reprojection_chi2

log = logging.getLogger(__name__)

BACKENDS = ("native", "g2o")
_NO_KERNEL_DELTA = 1e100  # a Huber kernel this wide is the identity (delta^2 stays finite)
_SUBGRAPH_SIZE = 512  # elements per sub-graph when building the g2o graph (see _GraphBuilder)


@dataclass
class BAStats:
    n_keyframes: int = 0  # keyframe vertices (fixed included)
    n_fixed: int = 0
    n_points: int = 0
    n_edges: int = 0
    n_outliers: int = 0
    chi2_initial: float = 0.0  # sum over all observations, no kernel, at the input
    chi2_final: float = 0.0  # the same at the output
    chi2_final_inliers: float = 0.0  # sum over the observations kept
    build_s: float = 0.0  # problem set-up (g2o: graph construction, GIL held)
    optimize_s: float = 0.0  # the solver's iterations (GIL released)
    total_s: float = 0.0
    aborted: bool = False  # True: the result is the input, or the first phase's result only


@dataclass
class BAResult:
    """Outcome of :func:`local_bundle_adjustment`; arrays line up with the inputs."""

    poses: dict[int, np.ndarray]  # every input pose; fixed ones are the input matrices
    point_ids: np.ndarray  # (P,) as given
    points_w: np.ndarray  # (P, 3); points without observations unchanged
    outlier_obs: np.ndarray  # (E,) bool: erase these observations
    chi2: np.ndarray  # (E,) final chi2 per observation
    stats: BAStats = field(default_factory=BAStats)


@dataclass
class _Problem:
    """The inputs in index form: keyframe ``kf_idx`` and point ``pt_idx`` of each observation."""

    T: np.ndarray  # (K, 4, 4) T_c_w
    X: np.ndarray  # (P, 3)
    free: np.ndarray  # (K,) bool
    kf_idx: np.ndarray  # (E,)
    pt_idx: np.ndarray  # (E,)
    uv: np.ndarray  # (E, 2)
    ur: np.ndarray  # (E,)
    w: np.ndarray  # (E,)
    wd: np.ndarray | None  # (E,) RGB-D disparity information, or None
    cam: tuple[float, float, float, float, float]  # fx, fy, cx, cy, bf
    chi2_mono: float
    chi2_stereo: float


def _lookup(ids_sorted: np.ndarray, order: np.ndarray, query: np.ndarray, what: str) -> np.ndarray:
    """Index into the original array of each id in ``query`` (ValueError when unknown)."""
    pos = np.searchsorted(ids_sorted, query)
    pos = np.minimum(pos, len(ids_sorted) - 1)
    if len(query) and (len(ids_sorted) == 0 or np.any(ids_sorted[pos] != query)):
        bad = query[ids_sorted[pos] != query] if len(ids_sorted) else query
        raise ValueError(f"observations refer to unknown {what} ids, e.g. {bad[:5].tolist()}")
    return order[pos]


def _classify(pb: _Problem, T: np.ndarray, X: np.ndarray, gate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Chi2 of every observation at ``(T, X)`` and the outlier flags (over the gate or behind the camera)."""
    R, t = T[:, :3, :3], T[:, :3, 3]
    p_c = np.einsum("eij,ej->ei", R[pb.kf_idx], X[pb.pt_idx]) + t[pb.kf_idx]
    chi2 = reprojection_chi2(p_c, pb.uv, pb.ur, pb.w, *pb.cam, inv_sigma2_disp=pb.wd)
    inlier = (chi2 <= gate) & (p_c[:, 2] > 0)
    return chi2, ~inlier


class _NativeSolver:
    """:mod:`slam.backbone.optim.ba_kernel` on the problem's arrays; keeps the current estimate between phases."""

    def __init__(self, pb: _Problem):
        self.pb = pb
        used_kf = np.zeros(len(pb.T), bool)
        used_kf[pb.kf_idx] = True
        self.slot = np.full(len(pb.T), -1, np.int64)
        movable = np.flatnonzero(pb.free & used_kf)
        self.slot[movable] = np.arange(len(movable))
        self.n_free = len(movable)
        self.R = np.ascontiguousarray(pb.T[:, :3, :3])
        self.t = np.ascontiguousarray(pb.T[:, :3, 3])
        self.X = np.ascontiguousarray(pb.X, dtype=np.float64)
        stereo = pb.ur >= 0
        self.meas = np.column_stack([pb.uv, np.where(stereo, pb.ur, 0.0)])
        self.smask = stereo.astype(np.float64)
        self.w = np.ascontiguousarray(pb.w, dtype=np.float64)
        self.wr = self.w if pb.wd is None else np.ascontiguousarray(pb.wd, dtype=np.float64)
        self.cam = np.array(pb.cam, dtype=np.float64)
        self.delta2 = _gates(pb.ur, pb.chi2_mono, pb.chi2_stereo).astype(np.float64)
        self.kf = np.ascontiguousarray(pb.kf_idx, dtype=np.int64)
        self.pt = np.ascontiguousarray(pb.pt_idx, dtype=np.int64)

    def run(self, iterations: int, robust: bool, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # observations grouped by point (active ones only): the Schur complement walks them per point
        act = np.flatnonzero(active)
        pt_obs = act[np.argsort(self.pt[act], kind="stable")]
        pt_start = np.searchsorted(self.pt[pt_obs], np.arange(len(self.X) + 1)).astype(np.int64)
        self.R, self.t, self.X, _ = ba_levenberg(
            self.R, self.t, self.X, self.kf, self.pt, self.meas, self.smask, self.w, self.wr, self.cam,
            self.pb.wd is not None, np.ascontiguousarray(active), self.delta2, robust,
            self.slot, self.n_free, pt_start, pt_obs, int(iterations),
        )  # fmt: skip
        T = self.pb.T.copy()
        for i in np.flatnonzero(self.slot >= 0).tolist():
            T[i] = normalize_pose(np.vstack([np.column_stack([self.R[i], self.t[i]]), [0.0, 0.0, 0.0, 1.0]]))
        return T, self.X.copy()


class _GraphBuilder:
    """Adds vertices and edges to an optimizer through small sub-graphs merged with ``add_graph``.

    Each ``add_vertex`` / ``add_edge`` of the binding costs time linear in the
    number of elements already added through that graph object (~2.5 ns per
    element; removing vertices does not bring it down, so it is the binding's
    bookkeeping, not g2o's), which makes filling one big graph quadratic:
    ~0.3 s for 10k elements. Sub-graphs of a few hundred elements keep every
    call cheap, and ``add_graph`` shares the elements rather than copying
    them, so the Python references stay valid. Measured on 10 kf / 2000
    points / 8000 observations: build 290 -> 55 ms (GIL held), solve median
    120 -> 205 ms but best case equal (GIL released), total 410 -> 270 ms.
    """

    def __init__(self, opt: g2opy.SparseOptimizer, size: int | None = None):
        self.opt, self.size = opt, size or _SUBGRAPH_SIZE
        self.done: list[g2opy.OptimizableGraph] = []  # merged sub-graphs, kept alive with the optimizer
        self.sub, self.n = g2opy.OptimizableGraph(), 0

    def add_vertex(self, v) -> None:
        self.sub.add_vertex(v)
        self._count()

    def add_edge(self, e) -> None:
        self.sub.add_edge(e)
        self._count()

    def _count(self) -> None:
        self.n += 1
        if self.n >= self.size:
            self.flush()

    def flush(self) -> None:
        if self.n:
            self.opt.add_graph(self.sub)
            self.done.append(self.sub)
            self.sub, self.n = g2opy.OptimizableGraph(), 0


class _G2OSolver:
    """The problem as a g2o graph; only keyframes and points with an observation get a vertex."""

    def __init__(self, pb: _Problem):
        self.pb = pb
        self.opt = opt = g2opy.SparseOptimizer()
        opt.set_algorithm(
            g2opy.OptimizationAlgorithmLevenberg(g2opy.BlockSolverSE3(g2opy.LinearSolverEigenSE3()))
        )
        graph = _GraphBuilder(opt)
        T, X = pb.T, pb.X
        self.kf_vertex: dict[int, g2opy.VertexSE3Expmap] = {}
        for i in np.unique(pb.kf_idx).tolist():
            v = g2opy.VertexSE3Expmap()
            v.set_id(i)
            v.set_estimate(g2opy.SE3Quat(T[i, :3, :3], T[i, :3, 3]))
            v.set_fixed(not pb.free[i])
            graph.add_vertex(v)
            self.kf_vertex[i] = v
        self.used_pt = np.unique(pb.pt_idx)
        self.pt_vertex: dict[int, g2opy.VertexPointXYZ] = {}
        base = len(T)
        for j in self.used_pt.tolist():
            v = g2opy.VertexPointXYZ()
            v.set_id(base + j)
            v.set_marginalized(True)
            v.set_estimate(X[j])
            graph.add_vertex(v)
            self.pt_vertex[j] = v
        # One kernel object per edge type, shared: widening it later removes every kernel in one call.
        self.k_mono = g2opy.RobustKernelHuber(float(np.sqrt(pb.chi2_mono)))
        self.k_stereo = g2opy.RobustKernelHuber(float(np.sqrt(pb.chi2_stereo)))
        uv, ur, w, wd = pb.uv, pb.ur, pb.w, pb.wd
        meas3 = np.column_stack([uv, ur])
        info: dict[tuple[float, float, bool], np.ndarray] = {}
        fx_, fy_, cx_, cy_, bf_ = pb.cam
        self.edges = []
        for e, (i, j, wi, wri, st) in enumerate(
            zip(pb.kf_idx.tolist(), pb.pt_idx.tolist(), w.tolist(), (w if wd is None else wd).tolist(),
                (ur >= 0).tolist())
        ):
            if st:
                edge = g2opy.EdgeStereoSE3ProjectXYZ()
                edge.set_measurement(meas3[e])
                edge.bf = bf_
                edge.set_robust_kernel(self.k_stereo)
            else:
                edge = g2opy.EdgeSE3ProjectXYZ()
                edge.set_measurement(uv[e])
                edge.set_robust_kernel(self.k_mono)
            key = (wi, wri, st)
            if key not in info:
                if not st:
                    info[key] = wi * np.eye(2)
                elif wd is None:
                    info[key] = wi * np.eye(3)
                else:  # chi2 = wi (e_u^2 + e_v^2) + wri (e_ur - e_u)^2, as reprojection_chi2
                    info[key] = np.array([[wi + wri, 0.0, -wri], [0.0, wi, 0.0], [-wri, 0.0, wri]])
            edge.set_information(info[key])
            edge.fx, edge.fy, edge.cx, edge.cy = fx_, fy_, cx_, cy_
            edge.set_vertex(0, self.pt_vertex[j])
            edge.set_vertex(1, self.kf_vertex[i])
            graph.add_edge(edge)
            self.edges.append(edge)
        graph.flush()
        self.active = np.ones(len(self.edges), bool)  # every edge starts at level 0

    def run(self, iterations: int, robust: bool, active: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        for e in np.flatnonzero(active != self.active).tolist():
            self.edges[e].set_level(0 if active[e] else 1)
        self.active = active.copy()
        delta = (np.sqrt(self.pb.chi2_mono), np.sqrt(self.pb.chi2_stereo)) if robust else (_NO_KERNEL_DELTA,) * 2
        self.k_mono.set_delta(float(delta[0]))
        self.k_stereo.set_delta(float(delta[1]))
        self.opt.initialize_optimization(0)
        self.opt.optimize(int(iterations))
        T = self.pb.T.copy()
        for i, v in self.kf_vertex.items():
            T[i] = v.estimate().matrix()
        X = self.pb.X.copy()
        if self.pt_vertex:
            X[self.used_pt] = np.array([self.pt_vertex[j].estimate() for j in self.used_pt.tolist()])
        return T, X


def local_bundle_adjustment(
    poses: Mapping[int, np.ndarray],
    fixed: Collection[int],
    point_ids: np.ndarray,
    points_w: np.ndarray,
    obs_kf: np.ndarray,
    obs_pt: np.ndarray,
    obs_uv: np.ndarray,
    obs_ur: np.ndarray,
    obs_inv_sigma2: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    bf: float = 0.0,
    iterations: tuple[int, int] = (5, 10),
    abort: threading.Event | None = None,
    chi2_mono: float = CHI2_MONO,
    chi2_stereo: float = CHI2_STEREO,
    obs_inv_sigma2_disp: np.ndarray | None = None,
    backend: str = "native",
) -> BAResult:
    """Jointly refine keyframe poses and map points (ORB-SLAM's LocalBundleAdjustment).

    ``iterations[0]`` Levenberg iterations with Huber kernels, then the
    observations over their chi2 gate or with the point behind the camera
    are left out and ``iterations[1]`` more run without kernels. The returned
    ``outlier_obs`` is the classification at the final estimate.

    Args:
        poses: keyframe id -> (4, 4) ``T_c_w``; every keyframe that observes a point.
        fixed: ids (in ``poses``) held fixed, e.g. the keyframes that see local
            points but are outside the local window. They fix the gauge.
        point_ids, points_w: (P,) unique ids and (P, 3) world positions.
        obs_kf, obs_pt: (E,) keyframe id and point id of each observation.
        obs_uv, obs_ur, obs_inv_sigma2: (E, 2), (E,), (E,) as in :func:`slam.backbone.optim.pose.optimize_pose`.
        abort: checked before building, after building and between the two
            phases. Set before optimising: the input comes back; set after the
            first phase: that phase's result.
        backend: ``"native"`` (compiled, default) or ``"g2o"``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"unknown BA backend {backend!r} (have: {', '.join(BACKENDS)})")
    t_start = time.perf_counter()
    stats = BAStats()
    pt_ids = np.asarray(point_ids, dtype=np.int64).reshape(-1)
    X = np.array(points_w, dtype=np.float64).reshape(-1, 3)
    e_kf = np.asarray(obs_kf, dtype=np.int64).reshape(-1)
    e_pt = np.asarray(obs_pt, dtype=np.int64).reshape(-1)
    n_e = len(e_kf)
    uv = np.ascontiguousarray(obs_uv, dtype=np.float64).reshape(n_e, 2)
    ur = np.asarray(obs_ur, dtype=np.float64).reshape(n_e)
    w = np.broadcast_to(np.asarray(obs_inv_sigma2, dtype=np.float64), (n_e,))
    wd = None if obs_inv_sigma2_disp is None else np.broadcast_to(
        np.asarray(obs_inv_sigma2_disp, dtype=np.float64), (n_e,))
    _check_stereo(ur, bf)
    gate = _gates(ur, chi2_mono, chi2_stereo)

    kf_ids = np.array(sorted(poses), dtype=np.int64)
    fixed_set = {int(k) for k in fixed}
    T_in = np.array([np.asarray(poses[int(k)], dtype=np.float64) for k in kf_ids]).reshape(-1, 4, 4)
    kf_idx = _lookup(kf_ids, np.arange(len(kf_ids)), e_kf, "keyframe")
    pt_order = np.argsort(pt_ids, kind="stable")
    if len(np.unique(pt_ids)) != len(pt_ids):
        raise ValueError("point_ids must be unique")
    pt_idx = _lookup(pt_ids[pt_order], pt_order, e_pt, "point")
    free = np.array([int(k) not in fixed_set for k in kf_ids], bool)
    pb = _Problem(T_in, X, free, kf_idx, pt_idx, uv, ur, w, wd,
                  (float(fx), float(fy), float(cx), float(cy), float(bf)), chi2_mono, chi2_stereo)

    def result(T: np.ndarray, Xo: np.ndarray) -> BAResult:
        chi2, outlier = _classify(pb, T, Xo, gate)
        out_poses = {
            int(k): (np.array(poses[int(k)], dtype=np.float64) if int(k) in fixed_set else T[i].copy())
            for i, k in enumerate(kf_ids)
        }
        stats.n_edges = n_e
        stats.n_outliers = int(outlier.sum())
        stats.chi2_final = float(chi2[np.isfinite(chi2)].sum())
        stats.chi2_final_inliers = float(chi2[~outlier].sum())
        stats.total_s = time.perf_counter() - t_start
        return BAResult(out_poses, pt_ids.copy(), Xo, outlier, chi2, stats)

    chi2_0, _ = _classify(pb, T_in, X, gate)
    stats.chi2_initial = float(chi2_0[np.isfinite(chi2_0)].sum())
    used_kf = np.unique(kf_idx)
    stats.n_keyframes = len(used_kf)
    stats.n_fixed = int((~free[used_kf]).sum())
    stats.n_points = len(np.unique(pt_idx))
    if n_e == 0 or (abort is not None and abort.is_set()):
        stats.aborted = n_e > 0
        return result(T_in, X)

    t0 = time.perf_counter()
    solver = _NativeSolver(pb) if backend == "native" else _G2OSolver(pb)
    stats.build_s = time.perf_counter() - t0
    if abort is not None and abort.is_set():
        stats.aborted = True
        return result(T_in, X)

    # ---- phase 1: robust
    t0 = time.perf_counter()
    T, Xo = solver.run(iterations[0], True, np.ones(n_e, bool))
    stats.optimize_s = time.perf_counter() - t0
    if abort is not None and abort.is_set():
        stats.aborted = True
        return result(T, Xo)

    # ---- phase 2: outliers out, kernels off
    _, outlier = _classify(pb, T, Xo, gate)
    if iterations[1] > 0 and not outlier.all():
        t0 = time.perf_counter()
        T, Xo = solver.run(iterations[1], False, ~outlier)
        stats.optimize_s += time.perf_counter() - t0
    res = result(T, Xo)
    log.debug(
        "local BA (%s): %d kf (%d fixed), %d pts, %d obs, %d outliers, chi2 %.4g -> %.4g, build %.1f ms, opt %.1f ms",
        backend, stats.n_keyframes, stats.n_fixed, stats.n_points, n_e, stats.n_outliers,
        stats.chi2_initial, stats.chi2_final, 1e3 * stats.build_s, 1e3 * stats.optimize_s,
    )  # fmt: skip
    return res
