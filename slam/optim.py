"""Motion-only and local bundle adjustment (ORB-SLAM style) behind array-in, array-out functions.

Callers pass numpy arrays and get numpy arrays back; no g2o object leaves
this module.

Conventions (as in ``slam.geometry``): a camera pose is given as ``T_c_w``
(world -> camera, 4x4); pixels are undistorted; a stereo / RGB-D observation
carries ``u_right = u - bf / z`` (``bf`` = baseline times ``fx``, in pixels),
and ``u_right < 0`` marks a monocular observation. Each observation's
information is ``inv_sigma2 * I`` (``inv_sigma2 = 1 / sigma^2`` of its
pyramid level, pixels^-2), so its chi2 is ``inv_sigma2 * |residual|^2`` and
the outlier gates are chi-square 95% quantiles: 5.991 (2 dof, mono) and
7.815 (3 dof, stereo).

* :func:`optimize_pose` -- motion-only BA for tracking: Gauss-Newton /
  Levenberg on the 6x6 normal equations with Huber IRLS, the per-observation
  pass compiled (``slam.pose_kernel``, numba, no GIL). Not g2o: with
  g2o the per-edge Python calls alone cost more than the whole solve, and
  the binding's ``EdgeStereoSE3ProjectXYZOnlyPose`` exposes no ``fx``..``bf``
  or ``Xw``, so it cannot be used for stereo at all.
* :func:`local_bundle_adjustment` -- keyframe poses and points with g2o
  (Levenberg, Schur complement over marginalised points). ``optimize()``
  releases the GIL, so tracking keeps running while it works; graph
  building is Python and does hold it.

g2o's ``VertexSE3Expmap`` holds ``T_c_w`` as an ``SE3Quat(R_c_w, t_c_w)``
and its edges project ``R_c_w @ X_w + t_c_w``, so poses go in and come out
without inversion.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

import g2opy
import numpy as np

from slam.geometry.se3 import normalize_pose
from slam.pose_kernel import pose_system

log = logging.getLogger(__name__)

CHI2_MONO = 5.991  # chi-square 95% quantile, 2 dof
CHI2_STEREO = 7.815  # chi-square 95% quantile, 3 dof
_NO_KERNEL_DELTA = 1e100  # a Huber kernel this wide is the identity (delta^2 stays finite)
_MIN_ACTIVE = 3  # fewer active observations cannot fix 6 dof
_SUBGRAPH_SIZE = 512  # elements per sub-graph when building the local BA graph (see _GraphBuilder)


# ---------------------------------------------------------------- projection


def reprojection_chi2(
    p_c: np.ndarray,
    uv: np.ndarray,
    u_right: np.ndarray,
    inv_sigma2: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    bf: float,
    inv_sigma2_disp: np.ndarray | None = None,
) -> np.ndarray:
    """Chi2 of each observation of camera-frame points ``p_c`` (N, 3): ``inv_sigma2 * |meas - proj|^2``.

    Stereo observations (``u_right >= 0``) add the right-image column term.
    With ``inv_sigma2_disp`` (RGB-D) that term is the disparity error
    ``(u_r - u)_meas - (u_r - u)_pred`` weighted by the depth sensor's noise:
    for a virtual right image made from depth, ``u_right`` inherits the error of
    ``u``, so only the disparity carries new information.
    Points at or behind the camera give ``inf`` or garbage; gate them on depth.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        inv_z = 1.0 / p_c[:, 2]
        u = fx * p_c[:, 0] * inv_z + cx
        v = fy * p_c[:, 1] * inv_z + cy
        eu = uv[:, 0] - u
        e2 = eu**2 + (uv[:, 1] - v) ** 2
        stereo = u_right >= 0
        er = u_right - (u - bf * inv_z)
        if inv_sigma2_disp is None:
            return inv_sigma2 * (e2 + np.where(stereo, er**2, 0.0))
        return inv_sigma2 * e2 + inv_sigma2_disp * np.where(stereo, (er - eu) ** 2, 0.0)


def _gates(u_right: np.ndarray, chi2_mono: float, chi2_stereo: float) -> np.ndarray:
    return np.where(u_right >= 0, chi2_stereo, chi2_mono)


def _check_stereo(u_right: np.ndarray, bf: float) -> None:
    if bf <= 0 and np.any(u_right >= 0):
        raise ValueError("stereo observations (u_right >= 0) need bf > 0")


# ------------------------------------------------------------ motion-only BA


@dataclass
class PoseResult:
    """Outcome of :func:`optimize_pose`."""

    T_c_w: np.ndarray  # (4, 4) refined world -> camera pose
    inliers: np.ndarray  # (N,) bool, final classification (chi2 gate and positive depth)
    n_inliers: int
    chi2: np.ndarray  # (N,) chi2 of every observation at the final pose
    iterations: int = 0  # linear solves over all rounds


class _PoseProblem:
    """Residuals, cost and normal equations of N observations of fixed world points, for one pose."""

    def __init__(self, points_w, uv, u_right, inv_sigma2, fx, fy, cx, cy, bf, inv_sigma2_disp=None):
        f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # one compiled kernel for every call
        self.X = f64(points_w)
        self.meas = np.column_stack([uv, np.maximum(u_right, 0.0)])
        self.smask = (u_right >= 0).astype(np.float64)  # zero row 3 for mono
        self.w = f64(inv_sigma2)
        # Third row: u_right's error (stereo) or the disparity error (RGB-D, see reprojection_chi2).
        self.disparity = inv_sigma2_disp is not None
        self.wr = self.w if inv_sigma2_disp is None else f64(inv_sigma2_disp)
        self.cam = tuple(float(c) for c in (fx, fy, cx, cy, bf))

    def residuals(self, T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Camera-frame points (N, 3) and residuals ``meas - proj`` (N, 3)."""
        fx, fy, cx, cy, bf = self.cam
        p = self.X @ T[:3, :3].T + T[:3, 3]
        with np.errstate(divide="ignore", invalid="ignore"):
            inv_z = 1.0 / p[:, 2]
        u = fx * p[:, 0] * inv_z + cx
        r = np.empty_like(p)
        r[:, 0] = self.meas[:, 0] - u
        r[:, 1] = self.meas[:, 1] - (fy * p[:, 1] * inv_z + cy)
        r[:, 2] = (self.meas[:, 2] - u + bf * inv_z) * self.smask
        if self.disparity:
            r[:, 2] -= r[:, 0] * self.smask
        return p, r

    def system(self, T: np.ndarray, active: np.ndarray, delta2: np.ndarray | None):
        """``(H, g, cost)`` at pose ``T``: Gauss-Newton normal equations and robust cost (compiled, see slam.pose_kernel)."""
        fx, fy, cx, cy, bf = self.cam
        robust = delta2 is not None
        return pose_system(self.X, np.ascontiguousarray(T[:3, :3]), np.ascontiguousarray(T[:3, 3]), self.meas,
                           self.smask, self.w, self.wr, fx, fy, cx, cy, bf, self.disparity, active,
                           delta2 if robust else self.w, robust)

    def cost(self, r: np.ndarray, active: np.ndarray, delta2: np.ndarray | None):
        """Per-observation chi2 and the (robust) cost summed over active observations."""
        chi2 = self.w * (r[:, 0] ** 2 + r[:, 1] ** 2) + self.wr * r[:, 2] ** 2
        if delta2 is None:
            rho = chi2
        else:
            rho = np.where(chi2 <= delta2, chi2, 2.0 * np.sqrt(delta2 * chi2) - delta2)
        return chi2, float(np.sum(rho[active]))


def _se3_exp(xi: np.ndarray) -> np.ndarray:
    """``se3_exp`` for one small 6-vector, without the per-call overhead of the general version."""
    rho, phi = xi[:3], xi[3:]
    theta2 = float(phi @ phi)
    K = np.array([[0.0, -phi[2], phi[1]], [phi[2], 0.0, -phi[0]], [-phi[1], phi[0], 0.0]])
    K2 = K @ K
    if theta2 < 1e-10:
        a, b, c = 1.0 - theta2 / 6.0, 0.5 - theta2 / 24.0, 1.0 / 6.0 - theta2 / 120.0
    else:
        theta = np.sqrt(theta2)
        s, co = np.sin(theta), np.cos(theta)
        a, b, c = s / theta, (1.0 - co) / theta2, (theta - s) / (theta2 * theta)
    T = np.eye(4)
    T[:3, :3] += a * K + b * K2
    T[:3, 3] = rho + b * (K @ rho) + c * (K2 @ rho)
    return T


def _pose_levenberg(prob: _PoseProblem, T, active, delta2, iterations, tol=1e-8, rel_tol=1e-6):
    """Levenberg-damped Gauss-Newton on the pose; Huber via IRLS when ``delta2`` is given.

    Returns the pose, its ``prob.residuals`` and the number of linear solves.
    Stops once a step is below ``tol`` (radians / metres; that step is taken
    without checking the cost) or lowers the cost by less than ``rel_tol`` of it.
    """
    H, g, cost = prob.system(T, active, delta2)
    lam, solves = 0.0, 0
    for _ in range(iterations):
        diag = np.diag(H).copy()
        accepted = converged = False
        for _trial in range(6):
            solves += 1
            try:
                dx = np.linalg.solve(H + np.diag(lam * diag + 1e-12), g)
            except np.linalg.LinAlgError:
                lam = max(lam * 10.0, 1e-4)
                continue
            if float(dx @ dx) < tol * tol:
                T = _se3_exp(dx) @ T
                return (T, *prob.residuals(T), solves)
            T_new = _se3_exp(dx) @ T
            H_new, g_new, cost_new = prob.system(T_new, active, delta2)  # the next iteration's system if accepted
            if cost_new <= cost:
                converged = cost - cost_new <= rel_tol * cost
                T, H, g, cost, accepted = T_new, H_new, g_new, cost_new, True
                lam = 0.0 if lam < 1e-6 else lam / 10.0
                break
            lam = max(lam * 10.0, 1e-4)
        if not accepted or converged:
            break
    return (T, *prob.residuals(T), solves)


def optimize_pose(
    T_c_w: np.ndarray,
    points_w: np.ndarray,
    uv: np.ndarray,
    u_right: np.ndarray,
    inv_sigma2: np.ndarray,
    fx: float,
    fy: float,
    cx: float,
    cy: float,
    bf: float = 0.0,
    rounds: int = 4,
    iterations: int = 10,
    chi2_mono: float = CHI2_MONO,
    chi2_stereo: float = CHI2_STEREO,
    inv_sigma2_disp: np.ndarray | None = None,
) -> PoseResult:
    """Refine a camera pose from 2D(+right u)-3D matches with fixed points (ORB-SLAM's PoseOptimization).

    Each of ``rounds`` rounds runs up to ``iterations`` damped Gauss-Newton
    steps with Huber kernels (delta = sqrt of the gate) on the observations
    that are currently inliers, then re-classifies every observation by its
    chi2 at the new pose: above the gate (or behind the camera) it is left
    out of the next round, below it it comes back. The last round runs
    without the kernel. Rounds stop early once a step is negligible.

    Args:
        T_c_w: (4, 4) initial world -> camera pose.
        points_w: (N, 3) map points in the world frame.
        uv: (N, 2) undistorted pixel measurements.
        u_right: (N,) right-image column for stereo / RGB-D, negative for monocular.
        inv_sigma2: (N,) information scale of each observation (pixels^-2).
        fx, fy, cx, cy: intrinsics in pixels; bf: baseline * fx in pixels (stereo only).
        inv_sigma2_disp: (N,) RGB-D only: information of the disparity (depth) term,
            from the depth sensor's noise; the third residual is then the
            disparity error (see :func:`reprojection_chi2`).
    """
    T = normalize_pose(T_c_w)  # a prediction composed from poses may be slightly off SO(3)
    X = np.asarray(points_w, dtype=np.float64).reshape(-1, 3)
    n = len(X)
    ur = np.asarray(u_right, dtype=np.float64).reshape(n)
    if n == 0:
        return PoseResult(T, np.zeros(0, bool), 0, np.zeros(0))
    _check_stereo(ur, bf)
    w = np.broadcast_to(np.asarray(inv_sigma2, dtype=np.float64), (n,))
    wd = None if inv_sigma2_disp is None else np.broadcast_to(np.asarray(inv_sigma2_disp, dtype=np.float64), (n,))
    prob = _PoseProblem(X, np.asarray(uv, dtype=np.float64).reshape(n, 2), ur, w, fx, fy, cx, cy, bf, wd)
    gate = _gates(ur, chi2_mono, chi2_stereo)
    active = np.ones(n, dtype=bool)
    steps = 0
    p, r = prob.residuals(T)
    for rnd in range(max(rounds, 1)):
        if active.sum() < _MIN_ACTIVE:
            break
        robust = rnd < rounds - 1 or rounds == 1
        T, p, r, k = _pose_levenberg(prob, T, active, gate if robust else None, iterations)
        steps += k
        chi2, _ = prob.cost(r, active, None)
        # NaN chi2 (point on the camera plane) fails the comparison and counts as outlier
        active = (chi2 <= gate) & (p[:, 2] > 0)
    chi2, _ = prob.cost(r, active, None)
    inliers = (chi2 <= gate) & (p[:, 2] > 0)
    return PoseResult(T, inliers, int(inliers.sum()), chi2, steps)


# ------------------------------------------------------------------ local BA


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
    build_s: float = 0.0  # graph construction (holds the GIL)
    optimize_s: float = 0.0  # g2o optimize() calls (release the GIL)
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


def _lookup(ids_sorted: np.ndarray, order: np.ndarray, query: np.ndarray, what: str) -> np.ndarray:
    """Index into the original array of each id in ``query`` (ValueError when unknown)."""
    pos = np.searchsorted(ids_sorted, query)
    pos = np.minimum(pos, len(ids_sorted) - 1)
    if len(query) and (len(ids_sorted) == 0 or np.any(ids_sorted[pos] != query)):
        bad = query[ids_sorted[pos] != query] if len(ids_sorted) else query
        raise ValueError(f"observations refer to unknown {what} ids, e.g. {bad[:5].tolist()}")
    return order[pos]


def _classify(R, t, X, kf_idx, pt_idx, uv, ur, w, cam, gate, wd=None):
    p_c = np.einsum("eij,ej->ei", R[kf_idx], X[pt_idx]) + t[kf_idx]
    chi2 = reprojection_chi2(p_c, uv, ur, w, *cam, inv_sigma2_disp=wd)
    inlier = (chi2 <= gate) & (p_c[:, 2] > 0)
    return chi2, ~inlier


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
        obs_uv, obs_ur, obs_inv_sigma2: (E, 2), (E,), (E,) as in :func:`optimize_pose`.
        abort: checked before building, after building and between the two
            phases (the binding cannot stop g2o mid-phase: its force-stop
            flag is a dangling pointer). Set before optimising: the input
            comes back; set after the first phase: that phase's result.
    """
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
    cam = (float(fx), float(fy), float(cx), float(cy), float(bf))
    gate = _gates(ur, chi2_mono, chi2_stereo)

    kf_ids = np.array(sorted(poses), dtype=np.int64)
    fixed_set = {int(k) for k in fixed}
    T_in = np.array([np.asarray(poses[int(k)], dtype=np.float64) for k in kf_ids]).reshape(-1, 4, 4)
    kf_idx = _lookup(kf_ids, np.arange(len(kf_ids)), e_kf, "keyframe")
    pt_order = np.argsort(pt_ids, kind="stable")
    if len(np.unique(pt_ids)) != len(pt_ids):
        raise ValueError("point_ids must be unique")
    pt_idx = _lookup(pt_ids[pt_order], pt_order, e_pt, "point")

    def result(T: np.ndarray, Xo: np.ndarray) -> BAResult:
        chi2, outlier = _classify(T[:, :3, :3], T[:, :3, 3], Xo, kf_idx, pt_idx, uv, ur, w, cam, gate, wd)
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

    chi2_0, _ = _classify(T_in[:, :3, :3], T_in[:, :3, 3], X, kf_idx, pt_idx, uv, ur, w, cam, gate, wd)
    stats.chi2_initial = float(chi2_0[np.isfinite(chi2_0)].sum())
    if n_e == 0 or (abort is not None and abort.is_set()):
        stats.aborted = n_e > 0
        return result(T_in, X)

    # ---- build: only keyframes and points that take part in an observation get a vertex
    t0 = time.perf_counter()
    opt = g2opy.SparseOptimizer()
    opt.set_algorithm(
        g2opy.OptimizationAlgorithmLevenberg(g2opy.BlockSolverSE3(g2opy.LinearSolverEigenSE3()))
    )
    graph = _GraphBuilder(opt)
    used_kf = np.unique(kf_idx)
    used_pt = np.unique(pt_idx)
    kf_vertex: dict[int, g2opy.VertexSE3Expmap] = {}
    for i in used_kf.tolist():
        v = g2opy.VertexSE3Expmap()
        v.set_id(i)
        v.set_estimate(g2opy.SE3Quat(T_in[i, :3, :3], T_in[i, :3, 3]))
        v.set_fixed(int(kf_ids[i]) in fixed_set)
        graph.add_vertex(v)
        kf_vertex[i] = v
    stats.n_keyframes = len(used_kf)
    stats.n_fixed = sum(int(kf_ids[i]) in fixed_set for i in used_kf.tolist())
    pt_vertex: dict[int, g2opy.VertexPointXYZ] = {}
    base = len(kf_ids)
    for j in used_pt.tolist():
        v = g2opy.VertexPointXYZ()
        v.set_id(base + j)
        v.set_marginalized(True)
        v.set_estimate(X[j])
        graph.add_vertex(v)
        pt_vertex[j] = v
    stats.n_points = len(used_pt)

    # One kernel object per edge type, shared: widening it later removes every kernel in one call.
    k_mono = g2opy.RobustKernelHuber(float(np.sqrt(chi2_mono)))
    k_stereo = g2opy.RobustKernelHuber(float(np.sqrt(chi2_stereo)))
    meas3 = np.column_stack([uv, ur])
    info: dict[tuple[float, bool], np.ndarray] = {}
    fx_, fy_, cx_, cy_, bf_ = cam
    edges = []
    for e, (i, j, wi, wri, st) in enumerate(
        zip(kf_idx.tolist(), pt_idx.tolist(), w.tolist(), (w if wd is None else wd).tolist(), (ur >= 0).tolist())
    ):
        if st:
            edge = g2opy.EdgeStereoSE3ProjectXYZ()
            edge.set_measurement(meas3[e])
            edge.bf = bf_
            edge.set_robust_kernel(k_stereo)
        else:
            edge = g2opy.EdgeSE3ProjectXYZ()
            edge.set_measurement(uv[e])
            edge.set_robust_kernel(k_mono)
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
        edge.set_vertex(0, pt_vertex[j])
        edge.set_vertex(1, kf_vertex[i])
        graph.add_edge(edge)
        edges.append(edge)
    graph.flush()
    stats.build_s = time.perf_counter() - t0

    def read_back() -> tuple[np.ndarray, np.ndarray]:
        T = T_in.copy()
        for i, v in kf_vertex.items():
            T[i] = v.estimate().matrix()
        Xo = X.copy()
        if pt_vertex:
            Xo[used_pt] = np.array([pt_vertex[j].estimate() for j in used_pt.tolist()])
        return T, Xo

    if abort is not None and abort.is_set():
        stats.aborted = True
        return result(T_in, X)

    # ---- phase 1: robust
    t0 = time.perf_counter()
    opt.initialize_optimization(0)
    opt.optimize(int(iterations[0]))
    stats.optimize_s = time.perf_counter() - t0
    T, Xo = read_back()
    if abort is not None and abort.is_set():
        stats.aborted = True
        return result(T, Xo)

    # ---- phase 2: outliers out, kernels off
    _, outlier = _classify(T[:, :3, :3], T[:, :3, 3], Xo, kf_idx, pt_idx, uv, ur, w, cam, gate, wd)
    if iterations[1] > 0 and not outlier.all():
        for e in np.flatnonzero(outlier).tolist():
            edges[e].set_level(1)
        k_mono.set_delta(_NO_KERNEL_DELTA)
        k_stereo.set_delta(_NO_KERNEL_DELTA)
        t0 = time.perf_counter()
        opt.initialize_optimization(0)
        opt.optimize(int(iterations[1]))
        stats.optimize_s += time.perf_counter() - t0
        T, Xo = read_back()
    res = result(T, Xo)
    log.debug(
        "local BA: %d kf (%d fixed), %d pts, %d obs, %d outliers, chi2 %.4g -> %.4g, build %.1f ms, opt %.1f ms",
        stats.n_keyframes, stats.n_fixed, stats.n_points, n_e, stats.n_outliers,
        stats.chi2_initial, stats.chi2_final, 1e3 * stats.build_s, 1e3 * stats.optimize_s,
    )  # fmt: skip
    return res
