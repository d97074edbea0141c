"""Compiled inner loop of the motion-only pose optimisation (numba): cost, Gauss-Newton system, one pass.

Tracking optimises each frame's pose twice over some 300-600 observations.
In numpy every Levenberg iteration builds (N, 3, 6) Jacobians and a dozen
temporaries; the loop below does residual, Huber weight, Jacobian and the
6x6 accumulation per observation in one pass, without the GIL (local mapping
keeps running in parallel). ``slam.backbone.optim.pose`` keeps the Levenberg logic.

Model (as :func:`slam.backbone.optim.pose.reprojection_chi2`): a point ``p = R X + t`` in
the camera projects to ``u = fx x/z + cx``, ``v = fy y/z + cy`` and, for a
stereo / RGB-D observation, ``u_r = u - bf/z``. Residuals are measurement
minus prediction; the third is the right-image column error, or with
``disparity`` the disparity error ``r_ur - r_u``. The pose is perturbed on the
left, ``T <- exp(xi) T`` with ``xi = (rho, phi)``, so ``dp/dxi = [I, -[p]x]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True, inline="always")
def observe(R, t, X, meas, s, fx, fy, cx, cy, bf, disparity, J):
    """Residuals of one observation of world point ``X`` from pose ``(R, t)``, and ``J`` = d(prediction)/d(xi).

    ``meas`` is (u, v, u_right); ``s`` is 1.0 for stereo / RGB-D, 0.0 for mono
    (third residual zero). Fills ``J`` (3, 6); its first three columns are also
    d(prediction)/d(p) for the camera-frame point ``p``. Returns
    ``(r0, r1, r2, pz)``; the caller skips the observation when ``pz == 0``
    (``J`` is then not filled).
    """
    px = R[0, 0] * X[0] + R[0, 1] * X[1] + R[0, 2] * X[2] + t[0]
    py = R[1, 0] * X[0] + R[1, 1] * X[1] + R[1, 2] * X[2] + t[1]
    pz = R[2, 0] * X[0] + R[2, 1] * X[1] + R[2, 2] * X[2] + t[2]
    if pz == 0.0:
        return 0.0, 0.0, 0.0, 0.0
    iz = 1.0 / pz
    xz, yz = px * iz, py * iz
    u = fx * xz + cx
    r0 = meas[0] - u
    r1 = meas[1] - (fy * yz + cy)
    r2 = (meas[2] - u + bf * iz) * s
    if disparity:
        r2 -= r0 * s
    J[0, 0] = fx * iz
    J[0, 1] = 0.0
    J[0, 2] = -fx * xz * iz
    J[0, 3] = -fx * xz * yz
    J[0, 4] = fx * (1.0 + xz * xz)
    J[0, 5] = -fx * yz
    J[1, 0] = 0.0
    J[1, 1] = fy * iz
    J[1, 2] = -fy * yz * iz
    J[1, 3] = -fy * (1.0 + yz * yz)
    J[1, 4] = fy * xz * yz
    J[1, 5] = fy * xz
    c = bf * iz
    for k in range(6):
        J[2, k] = 0.0 if disparity else J[0, k]
    J[2, 2] += c * iz
    J[2, 3] += c * yz
    J[2, 4] -= c * xz
    return r0, r1, r2, pz


@njit(cache=True, nogil=True)
def pose_system(X, R, t, meas, smask, w, wr, fx, fy, cx, cy, bf, disparity, active, delta2, robust):
    """Robust cost and weighted normal equations ``H = sum J^T W J``, ``g = sum J^T W r`` at pose ``(R, t)``.

    Args:
        X: (N, 3) world points; meas: (N, 3) measured u, v, u_right (0 where mono);
        smask: (N,) 1.0 for stereo / RGB-D observations, 0.0 for mono;
        w, wr: (N,) information of the pixel rows and of the third row;
        active: (N,) bool, observations that take part;
        delta2: (N,) Huber threshold on chi2 (used when ``robust``).

    Returns ``(H (6, 6), g (6,), cost)``; the cost sums Huber's rho (or chi2)
    over active observations. Observations with a non-finite chi2 (a point on
    the camera plane) are left out.
    """
    H = np.zeros((6, 6))
    g = np.zeros(6)
    J = np.zeros((3, 6))
    cost = 0.0
    for n in range(X.shape[0]):
        if not active[n]:
            continue
        r0, r1, r2, pz = observe(R, t, X[n], meas[n], smask[n], fx, fy, cx, cy, bf, disparity, J)
        if pz == 0.0:
            continue
        s = smask[n]
        chi2 = w[n] * (r0 * r0 + r1 * r1) + wr[n] * r2 * r2
        if not np.isfinite(chi2):
            continue
        hub = 1.0
        if robust and chi2 > delta2[n]:
            cost += 2.0 * np.sqrt(delta2[n] * chi2) - delta2[n]
            hub = np.sqrt(delta2[n] / chi2)
        else:
            cost += chi2
        wu, wv, w3 = hub * w[n], hub * w[n], hub * wr[n] * s
        for a in range(6):
            g[a] += wu * J[0, a] * r0 + wv * J[1, a] * r1 + w3 * J[2, a] * r2
            for b in range(a, 6):
                H[a, b] += wu * J[0, a] * J[0, b] + wv * J[1, a] * J[1, b] + w3 * J[2, a] * J[2, b]
    for a in range(6):
        for b in range(a):
            H[a, b] = H[b, a]
    return H, g, cost


@njit(cache=True, nogil=True, inline="always")
def exp_left(xi, R, t, R_out, t_out):
    """``(R_out, t_out) = exp(xi) (R, t)`` for ``xi = (rho, phi)`` (SE(3) exponential, left)."""
    p0, p1, p2 = xi[3], xi[4], xi[5]
    th2 = p0 * p0 + p1 * p1 + p2 * p2
    if th2 < 1e-10:
        a, b, c = 1.0 - th2 / 6.0, 0.5 - th2 / 24.0, 1.0 / 6.0 - th2 / 120.0
    else:
        th = np.sqrt(th2)
        sn, cs = np.sin(th), np.cos(th)
        a, b, c = sn / th, (1.0 - cs) / th2, (th - sn) / (th2 * th)
    K = np.zeros((3, 3))
    K[0, 1], K[0, 2], K[1, 0], K[1, 2], K[2, 0], K[2, 1] = -p2, p1, p2, -p0, -p1, p0
    E = np.empty((3, 3))
    Vm = np.empty((3, 3))
    for i in range(3):
        for j in range(3):
            k2 = K[i, 0] * K[0, j] + K[i, 1] * K[1, j] + K[i, 2] * K[2, j]
            d = 1.0 if i == j else 0.0
            E[i, j] = d + a * K[i, j] + b * k2
            Vm[i, j] = d + b * K[i, j] + c * k2
    for i in range(3):
        for j in range(3):
            R_out[i, j] = E[i, 0] * R[0, j] + E[i, 1] * R[1, j] + E[i, 2] * R[2, j]
        t_out[i] = E[i, 0] * t[0] + E[i, 1] * t[1] + E[i, 2] * t[2] + Vm[i, 0] * xi[0] + Vm[i, 1] * xi[1] + Vm[i, 2] * xi[2]
