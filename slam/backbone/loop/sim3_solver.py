"""Geometric verification of a loop candidate: RANSAC over 3D-3D matches, then a reprojection refinement.

The two keyframes are 1 (the current keyframe) and 2 (the loop candidate).
Inputs are their matched map points, each in its own camera frame
(``X1_c1 = T_c1_w @ X_w``, metres or map units), the matched keypoints
(undistorted pixels) and their inverse level variances ``1 / sigma^2``
(ORB-SLAM's ``mvInvLevelSigma2``). The result is ``S_12`` (4x4,
``[[s R, t], [0, 1]]``) that maps points of camera 2 into camera 1:
``X1 = s R X2 + t``. Monocular maps have a free scale (``fix_scale=False``,
Sim3); stereo and RGB-D maps are metric (``fix_scale=True``, SE3, s = 1).

As ORB-SLAM's ``Sim3Solver``: minimal sets of 3 matches give a closed-form
similarity (Umeyama/Horn); a match is an inlier when both reprojections --
``S_12 X2`` into image 1 and ``S_12^-1 X1`` into image 2 -- fall within
chi2(2 dof, 99 %) = 9.21 times the keypoint's level variance. The best
hypothesis is refined on its inliers by Levenberg-Marquardt on the
reprojection errors in both images, and all matches are gated again with
the refined transform (repeated while the inlier set grows) (ORB-SLAM's ``OptimizeSim3``, done here in
numpy: 7 parameters, dense normal equations). Why not g2o: the binding's
``VertexSim3Expmap`` can neither fix its scale (needed for stereo/RGB-D) nor
take intrinsics (its ``EdgeSim3ProjectXYZ`` works on normalised coordinates
with the defaults f = 1, c = 0); a test holds this solver to g2o's optimum
on the Sim3 case (to 1e-9).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from slam.geometry.chi2 import CHI2_2DOF_99
from slam.geometry.align import umeyama
from slam.geometry.se3 import make_pose, sim3_exp, sim3_inverse, sim3_scale

log = logging.getLogger(__name__)

CHI2_2DOF = CHI2_2DOF_99  # chi2 inverse CDF, 2 dof, 99 %: RANSAC inlier gate (ORB-SLAM's Sim3Solver)
CHI2_REFINE = 10.0  # Huber threshold and outlier gate of the refinement (ORB-SLAM's OptimizeSim3)
_MIN_DEPTH = 1e-6  # points at or behind a camera do not project


@dataclass
class Sim3Result:
    """A verified loop transform.

    ``S_12``: 4x4 similarity mapping camera-2 points into camera 1; ``scale``
    its scale (1 with ``fix_scale``); ``inliers``: (N,) bool over the input
    matches; ``iterations``: RANSAC hypotheses tried.
    """

    S_12: np.ndarray
    scale: float
    inliers: np.ndarray
    iterations: int

    @property
    def n_inliers(self) -> int:
        return int(np.count_nonzero(self.inliers))


def _project(X: np.ndarray, K: tuple[float, float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixels of (N, 3) camera points and a mask of those in front of the camera."""
    fx, fy, cx, cy = K
    z = X[:, 2]
    ok = z > _MIN_DEPTH
    zs = np.where(ok, z, 1.0)
    uv = np.column_stack([fx * X[:, 0] / zs + cx, fy * X[:, 1] / zs + cy])
    return uv, ok


def reprojection_chi2(
    S_12: np.ndarray,
    X1_c1: np.ndarray,
    X2_c2: np.ndarray,
    uv1: np.ndarray,
    uv2: np.ndarray,
    inv_sigma2_1: np.ndarray,
    inv_sigma2_2: np.ndarray,
    K1: tuple[float, float, float, float],
    K2: tuple[float, float, float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """``(chi2_1, chi2_2)``: squared pixel errors times ``1/sigma^2`` in image 1 and image 2 (inf behind a camera)."""
    p1, ok1 = _project(X2_c2 @ S_12[:3, :3].T + S_12[:3, 3], K1)
    S_21 = sim3_inverse(S_12)
    p2, ok2 = _project(X1_c1 @ S_21[:3, :3].T + S_21[:3, 3], K2)
    c1 = np.where(ok1, np.sum((p1 - uv1) ** 2, axis=1) * inv_sigma2_1, np.inf)
    c2 = np.where(ok2, np.sum((p2 - uv2) ** 2, axis=1) * inv_sigma2_2, np.inf)
    return c1, c2


def _check_inputs(X1: np.ndarray, X2: np.ndarray, uv1: np.ndarray, uv2: np.ndarray, w1: np.ndarray, w2: np.ndarray):
    n = X1.shape[0]
    shapes = {"X1_c1": (X1, (n, 3)), "X2_c2": (X2, (n, 3)), "uv1": (uv1, (n, 2)), "uv2": (uv2, (n, 2)),
              "inv_sigma2_1": (w1, (n,)), "inv_sigma2_2": (w2, (n,))}
    for name, (a, shape) in shapes.items():
        if a.shape != shape:
            raise ValueError(f"sim3 solver: {name} has shape {a.shape}, expected {shape} ({n} matches)")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"sim3 solver: {name} has non-finite values")


def solve_sim3(
    X1_c1: np.ndarray,
    X2_c2: np.ndarray,
    uv1: np.ndarray,
    uv2: np.ndarray,
    inv_sigma2_1: np.ndarray,
    inv_sigma2_2: np.ndarray,
    K1: tuple[float, float, float, float],
    K2: tuple[float, float, float, float],
    fix_scale: bool = False,
    min_inliers: int = 20,
    probability: float = 0.99,
    max_iterations: int = 300,
    refine: bool = True,
    seed: int = 0,
) -> Sim3Result | None:
    """RANSAC for ``S_12`` from N matches, refined on the inliers; ``None`` when no hypothesis keeps ``min_inliers``.

    ``X1_c1``, ``X2_c2``: (N, 3) matched points in each camera frame; ``uv1``,
    ``uv2``: (N, 2) their keypoints in pixels; ``inv_sigma2_*``: (N,)
    ``1 / sigma^2`` of those keypoints' pyramid levels; ``K*``: ``(fx, fy, cx, cy)``.
    The number of hypotheses adapts to the best inlier ratio (confidence
    ``probability``), capped at ``max_iterations``. Minimal sets that are
    degenerate (collinear or repeated points) are skipped, so a collinear
    set yields ``None``. Deterministic for a given ``seed``.
    """
    X1 = np.asarray(X1_c1, dtype=np.float64)
    X2 = np.asarray(X2_c2, dtype=np.float64)
    uv1 = np.asarray(uv1, dtype=np.float64)
    uv2 = np.asarray(uv2, dtype=np.float64)
    w1 = np.asarray(inv_sigma2_1, dtype=np.float64)
    w2 = np.asarray(inv_sigma2_2, dtype=np.float64)
    _check_inputs(X1, X2, uv1, uv2, w1, w2)
    n = X1.shape[0]
    if n < max(3, min_inliers):
        log.debug("sim3 solver: %d matches < %d needed", n, max(3, min_inliers))
        return None
    rng = np.random.default_rng(seed)
    best_inl: np.ndarray | None = None
    best_S = np.eye(4)
    needed = max_iterations
    it = 0
    while it < min(needed, max_iterations):
        it += 1
        idx = rng.choice(n, size=3, replace=False)
        try:
            s, R, t = umeyama(X2[idx], X1[idx], with_scale=not fix_scale)
        except ValueError:
            continue  # degenerate minimal set
        if not np.isfinite(s) or s <= 0.0:
            continue
        S = make_pose(R, t, scale=s)
        c1, c2 = reprojection_chi2(S, X1, X2, uv1, uv2, w1, w2, K1, K2)
        inl = (c1 < CHI2_2DOF) & (c2 < CHI2_2DOF)
        if best_inl is None or inl.sum() > best_inl.sum():
            best_inl, best_S = inl, S
            ratio = inl.sum() / n
            if ratio >= 1.0:
                needed = it
            elif ratio > 0.0:
                needed = int(np.ceil(np.log(1.0 - probability) / np.log(1.0 - ratio**3)))
    if best_inl is None or best_inl.sum() < min_inliers:
        log.debug("sim3 solver: best hypothesis has %d inliers < %d after %d iterations",
                  0 if best_inl is None else int(best_inl.sum()), min_inliers, it)
        return None
    if refine:
        # The refined transform re-gates every match (a minimal-set hypothesis misses the inliers
        # its error pushes past the gate); refine again while that set grows (at most twice more).
        for _ in range(3):
            best_S, _ = refine_sim3(best_S, X1, X2, uv1, uv2, w1, w2, K1, K2, fix_scale, best_inl)
            c1, c2 = reprojection_chi2(best_S, X1, X2, uv1, uv2, w1, w2, K1, K2)
            regated = (c1 < CHI2_2DOF) & (c2 < CHI2_2DOF)
            grew = np.count_nonzero(regated & ~best_inl) > 0
            best_inl = regated
            if not grew:
                break
        if best_inl.sum() < min_inliers:
            return None
    return Sim3Result(S_12=best_S, scale=sim3_scale(best_S), inliers=best_inl, iterations=it)


def _proj_jacobian(P: np.ndarray, K: tuple[float, float, float, float]) -> np.ndarray:
    """(N, 2, 3) Jacobian of the pinhole projection at camera points P."""
    fx, fy = K[0], K[1]
    z = P[:, 2]
    iz = 1.0 / z
    J = np.zeros((P.shape[0], 2, 3))
    J[:, 0, 0] = fx * iz
    J[:, 0, 2] = -fx * P[:, 0] * iz * iz
    J[:, 1, 1] = fy * iz
    J[:, 1, 2] = -fy * P[:, 1] * iz * iz
    return J


def _point_jacobian(P: np.ndarray) -> np.ndarray:
    """(N, 3, 7) derivative of ``exp(zeta) P`` at zeta = 0, zeta = (rho, phi, sigma): ``[I, -[P]x, P]``."""
    J = np.zeros((P.shape[0], 3, 7))
    J[:, :, :3] = np.eye(3)
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    # -[P]x, row by row
    J[:, 0, 4], J[:, 0, 5] = z, -y
    J[:, 1, 3], J[:, 1, 5] = -z, x
    J[:, 2, 3], J[:, 2, 4] = y, -x
    J[:, :, 6] = P
    return J


def _huber_weights(chi2: np.ndarray, delta2: float) -> np.ndarray:
    """IRLS weights of the Huber kernel on chi2 (1 inside, sqrt(delta2 / chi2) outside)."""
    return np.where(chi2 <= delta2, 1.0, np.sqrt(delta2 / np.maximum(chi2, 1e-300)))


def refine_sim3(
    S_12: np.ndarray,
    X1_c1: np.ndarray,
    X2_c2: np.ndarray,
    uv1: np.ndarray,
    uv2: np.ndarray,
    inv_sigma2_1: np.ndarray,
    inv_sigma2_2: np.ndarray,
    K1: tuple[float, float, float, float],
    K2: tuple[float, float, float, float],
    fix_scale: bool = False,
    inliers: np.ndarray | None = None,
    iterations: tuple[int, int] = (5, 10),
    chi2_th: float = CHI2_REFINE,
) -> tuple[np.ndarray, np.ndarray]:
    """Levenberg-Marquardt on the reprojection errors of the inliers in both images; returns ``(S_12, inliers)``.

    The cost is ``sum rho(chi2_1) + rho(chi2_2)`` with Huber ``rho`` at
    ``chi2_th`` and ``chi2_i`` as :func:`reprojection_chi2`. The update is
    ``S_12 <- exp(zeta) S_12`` with ``zeta = (rho, phi, sigma)``; ``fix_scale``
    drops ``sigma``. After ``iterations[0]`` iterations matches with either
    chi2 above ``chi2_th`` leave the inlier set and ``iterations[1]`` more run
    (ORB-SLAM's two rounds). Inputs as :func:`solve_sim3`.
    """
    X1 = np.asarray(X1_c1, dtype=np.float64)
    X2 = np.asarray(X2_c2, dtype=np.float64)
    uv1 = np.asarray(uv1, dtype=np.float64)
    uv2 = np.asarray(uv2, dtype=np.float64)
    w1 = np.asarray(inv_sigma2_1, dtype=np.float64)
    w2 = np.asarray(inv_sigma2_2, dtype=np.float64)
    _check_inputs(X1, X2, uv1, uv2, w1, w2)
    inl = np.ones(X1.shape[0], bool) if inliers is None else np.asarray(inliers, bool).copy()
    dof = 6 if fix_scale else 7
    S = np.asarray(S_12, dtype=np.float64).copy()

    def cost(S_: np.ndarray, m: np.ndarray) -> float:
        c1, c2 = reprojection_chi2(S_, X1[m], X2[m], uv1[m], uv2[m], w1[m], w2[m], K1, K2)
        if not (np.all(np.isfinite(c1)) and np.all(np.isfinite(c2))):
            return np.inf
        rho = lambda c: np.where(c <= chi2_th, c, 2.0 * np.sqrt(chi2_th * c) - chi2_th)  # noqa: E731
        return float(np.sum(rho(c1)) + np.sum(rho(c2)))

    for round_, n_it in enumerate(iterations):
        if round_ > 0:
            c1, c2 = reprojection_chi2(S, X1, X2, uv1, uv2, w1, w2, K1, K2)
            inl &= (c1 <= chi2_th) & (c2 <= chi2_th)
        m = inl
        if np.count_nonzero(m) < 3:
            break
        lam = None
        f = cost(S, m)
        for _ in range(n_it):
            a1, a2, a_uv1, a_uv2, a_w1, a_w2 = X1[m], X2[m], uv1[m], uv2[m], w1[m], w2[m]
            # image 1: P = S X2, d P / d zeta = [I, -[P]x, P]
            P = a2 @ S[:3, :3].T + S[:3, 3]
            p1 = np.column_stack([K1[0] * P[:, 0] / P[:, 2] + K1[2], K1[1] * P[:, 1] / P[:, 2] + K1[3]])
            r1 = p1 - a_uv1
            J1 = _proj_jacobian(P, K1) @ _point_jacobian(P)
            # image 2: Q = S^-1 X1; S^-1 <- S^-1 exp(-zeta): d Q / d zeta = -A [I, -[X1]x, X1], A = linear part of S^-1
            Sinv = sim3_inverse(S)
            Q = a1 @ Sinv[:3, :3].T + Sinv[:3, 3]
            p2 = np.column_stack([K2[0] * Q[:, 0] / Q[:, 2] + K2[2], K2[1] * Q[:, 1] / Q[:, 2] + K2[3]])
            r2 = p2 - a_uv2
            J2 = -_proj_jacobian(Q, K2) @ (Sinv[:3, :3] @ _point_jacobian(a1))
            wt1 = a_w1 * _huber_weights(np.sum(r1 * r1, 1) * a_w1, chi2_th)
            wt2 = a_w2 * _huber_weights(np.sum(r2 * r2, 1) * a_w2, chi2_th)
            J1, J2 = J1[:, :, :dof], J2[:, :, :dof]
            H = np.einsum("nki,nkj->ij", J1 * wt1[:, None, None], J1) + np.einsum("nki,nkj->ij", J2 * wt2[:, None, None], J2)
            g = np.einsum("nki,n,nk->i", J1, wt1, r1) + np.einsum("nki,n,nk->i", J2, wt2, r2)
            if lam is None:
                lam = 1e-5 * float(np.max(np.diag(H)))
            improved = False
            for _try in range(10):
                try:
                    dz = np.linalg.solve(H + lam * np.eye(dof), -g)
                except np.linalg.LinAlgError:
                    lam *= 10.0
                    continue
                zeta = np.zeros(7)
                zeta[:dof] = dz
                S_new = sim3_exp(zeta) @ S
                f_new = cost(S_new, m)
                if f_new < f:
                    S, f, improved = S_new, f_new, True
                    lam = max(lam / 3.0, 1e-12)
                    break
                lam *= 4.0
            if not improved or np.linalg.norm(dz) < 1e-12:
                break
    c1, c2 = reprojection_chi2(S, X1, X2, uv1, uv2, w1, w2, K1, K2)
    inl &= (c1 <= chi2_th) & (c2 <= chi2_th)
    return S, inl
