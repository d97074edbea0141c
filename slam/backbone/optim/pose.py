"""Motion-only bundle adjustment (ORB-SLAM's PoseOptimization) and the reprojection model, array in, array out.

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
  pass compiled (``slam.backbone.optim.pose_kernel``, numba, no GIL). Not g2o: with
  g2o the per-edge Python calls alone cost more than the whole solve, and
  the binding's ``EdgeStereoSE3ProjectXYZOnlyPose`` exposes no ``fx``..``bf``
  or ``Xw``, so it cannot be used for stereo at all.

Local bundle adjustment lives in :mod:`slam.backbone.optim.local_ba`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from slam.geometry.chi2 import CHI2_2DOF_95, CHI2_3DOF_95
from slam.geometry.se3 import normalize_pose
from slam.backbone.optim.pose_kernel import exp_left, pose_system

log = logging.getLogger(__name__)

CHI2_MONO = CHI2_2DOF_95  # chi-square 95% quantile, 2 dof (slam.geometry.chi2)
CHI2_STEREO = CHI2_3DOF_95  # chi-square 95% quantile, 3 dof
_MIN_ACTIVE = 3  # fewer active observations cannot fix 6 dof


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
        """``(H, g, cost)`` at pose ``T``: Gauss-Newton normal equations and robust cost (compiled, see slam.backbone.optim.pose_kernel)."""
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


def _se3_exp_left(xi: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``exp(xi) @ T`` for a small 6-vector ``xi = (rho, phi)`` (the compiled kernel's exponential)."""
    out = np.eye(4)
    exp_left(np.ascontiguousarray(xi, dtype=np.float64), T[:3, :3], T[:3, 3], out[:3, :3], out[:3, 3])
    return out


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
                T = _se3_exp_left(dx, T)
                return (T, *prob.residuals(T), solves)
            T_new = _se3_exp_left(dx, T)
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

