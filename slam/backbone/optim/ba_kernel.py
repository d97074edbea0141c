"""Compiled local bundle adjustment (numba): Levenberg-Marquardt with the Schur complement over the points.

Keyframe poses and map points are refined together. A local window holds a
handful of free keyframes and thousands of points, so the normal equations

    [ U   W ] [dc]   [bc]
    [ W^T V ] [dp] = [bp]

have a dense 6n x 6n camera block ``U`` (n free keyframes) and a block
diagonal point block ``V`` (3x3 per point). Eliminating the points leaves the
reduced camera system ``(U - W V^-1 W^T) dc = bc - W V^-1 bp``, built point
by point from the pairs of keyframes that see it, then solved by Cholesky;
the point steps follow by back substitution. This is the algorithm g2o runs
for ORB-SLAM's local BA (``BlockSolver`` with marginalised points, Levenberg
damping as in ``OptimizationAlgorithmLevenberg``); here it runs in one
compiled call per phase, without the GIL and without building a graph object
per observation.

Model and conventions as :mod:`slam.backbone.optim.pose_kernel`: residual = measurement -
prediction, poses ``T_c_w`` perturbed on the left, ``T <- exp(xi) T`` with
``xi = (rho, phi)``; points are updated additively. Huber's kernel enters as
the IRLS weight ``sqrt(delta2 / chi2)`` on the information (g2o's first-order
robust information), and the cost is the sum of Huber's rho.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from slam.backbone.optim.pose_kernel import exp_left, observe

_MAX_TRIES = 10  # damping increases per iteration before giving up (g2o's Levenberg: 10)
_TAU = 1e-5  # initial damping: tau * max(diag(H)) (g2o's default)


@njit(cache=True, nogil=True, inline="always")
def _robust(chi2, delta2, robust):
    """Huber's rho and IRLS weight at ``chi2``."""
    if robust and chi2 > delta2:
        return 2.0 * np.sqrt(delta2 * chi2) - delta2, np.sqrt(delta2 / chi2)
    return chi2, 1.0


@njit(cache=True, nogil=True)
def ba_cost(R, t, X, kf, pt, meas, smask, w, wr, cam, disparity, active, delta2, robust):
    """Sum of Huber's rho (or of chi2) over the active observations; non-finite ones are left out."""
    fx, fy, cx, cy, bf = cam[0], cam[1], cam[2], cam[3], cam[4]
    J = np.empty((3, 6))
    cost = 0.0
    for e in range(kf.shape[0]):
        if not active[e]:
            continue
        k = kf[e]
        r0, r1, r2, pz = observe(R[k], t[k], X[pt[e]], meas[e], smask[e], fx, fy, cx, cy, bf, disparity, J)
        if pz == 0.0:
            continue
        chi2 = w[e] * (r0 * r0 + r1 * r1) + wr[e] * r2 * r2
        if np.isfinite(chi2):
            cost += _robust(chi2, delta2[e], robust)[0]
    return cost


@njit(cache=True, nogil=True)
def ba_linearize(R, t, X, kf, pt, meas, smask, w, wr, cam, disparity, active, delta2, robust, slot, n_free):
    """Blocks of the weighted normal equations at the current estimate.

    ``slot[k]`` is keyframe ``k``'s index among the free ones, or -1 when fixed.
    Returns ``U (n_free, 6, 6)``, ``bc (n_free, 6)``, ``V (P, 3, 3)``, ``bp (P, 3)``,
    ``Wb (E, 6, 3)`` (filled for observations from free keyframes) and the cost.
    """
    fx, fy, cx, cy, bf = cam[0], cam[1], cam[2], cam[3], cam[4]
    U = np.zeros((n_free, 6, 6))
    bc = np.zeros((n_free, 6))
    V = np.zeros((X.shape[0], 3, 3))
    bp = np.zeros((X.shape[0], 3))
    Wb = np.zeros((kf.shape[0], 6, 3))
    J = np.empty((3, 6))
    JX = np.empty((3, 3))
    cost = 0.0
    for e in range(kf.shape[0]):
        if not active[e]:
            continue
        k, p = kf[e], pt[e]
        Rk = R[k]
        s = smask[e]
        r0, r1, r2, pz = observe(Rk, t[k], X[p], meas[e], s, fx, fy, cx, cy, bf, disparity, J)
        if pz == 0.0:
            continue
        chi2 = w[e] * (r0 * r0 + r1 * r1) + wr[e] * r2 * r2
        if not np.isfinite(chi2):
            continue
        rho, hub = _robust(chi2, delta2[e], robust)
        cost += rho
        # d(prediction)/dX = d(prediction)/dp @ R, and dp/dp is the first three columns of J
        for a in range(3):
            for b in range(3):
                JX[a, b] = J[a, 0] * Rk[0, b] + J[a, 1] * Rk[1, b] + J[a, 2] * Rk[2, b]
        wu, w3 = hub * w[e], hub * wr[e] * s
        for a in range(3):
            bp[p, a] += wu * (JX[0, a] * r0 + JX[1, a] * r1) + w3 * JX[2, a] * r2
            for b in range(3):
                V[p, a, b] += wu * (JX[0, a] * JX[0, b] + JX[1, a] * JX[1, b]) + w3 * JX[2, a] * JX[2, b]
        c = slot[k]
        if c < 0:
            continue
        for a in range(6):
            bc[c, a] += wu * (J[0, a] * r0 + J[1, a] * r1) + w3 * J[2, a] * r2
            for b in range(6):
                U[c, a, b] += wu * (J[0, a] * J[0, b] + J[1, a] * J[1, b]) + w3 * J[2, a] * J[2, b]
            for b in range(3):
                Wb[e, a, b] = wu * (J[0, a] * JX[0, b] + J[1, a] * JX[1, b]) + w3 * J[2, a] * JX[2, b]
    return U, bc, V, bp, Wb, cost


@njit(cache=True, nogil=True)
def _cholesky_solve(A, b):
    """Solve ``A x = b`` for symmetric positive definite ``A`` (overwritten); ``ok`` False when it is not."""
    n = A.shape[0]
    for j in range(n):
        d = A[j, j]
        for k in range(j):
            d -= A[j, k] * A[j, k]
        if not d > 0.0:
            return b, False
        d = np.sqrt(d)
        A[j, j] = d
        for i in range(j + 1, n):
            s = A[i, j]
            for k in range(j):
                s -= A[i, k] * A[j, k]
            A[i, j] = s / d
    x = b.copy()
    for i in range(n):
        s = x[i]
        for k in range(i):
            s -= A[i, k] * x[k]
        x[i] = s / A[i, i]
    for i in range(n - 1, -1, -1):
        s = x[i]
        for k in range(i + 1, n):
            s -= A[k, i] * x[k]
        x[i] = s / A[i, i]
    return x, True


@njit(cache=True, nogil=True, inline="always")
def _inv3(M, out):
    """``out = M^-1`` for a 3x3 matrix; False when singular."""
    c00 = M[1, 1] * M[2, 2] - M[1, 2] * M[2, 1]
    c01 = M[1, 2] * M[2, 0] - M[1, 0] * M[2, 2]
    c02 = M[1, 0] * M[2, 1] - M[1, 1] * M[2, 0]
    det = M[0, 0] * c00 + M[0, 1] * c01 + M[0, 2] * c02
    if not abs(det) > 1e-300:
        return False
    i = 1.0 / det
    out[0, 0], out[1, 0], out[2, 0] = c00 * i, c01 * i, c02 * i
    out[0, 1] = (M[0, 2] * M[2, 1] - M[0, 1] * M[2, 2]) * i
    out[0, 2] = (M[0, 1] * M[1, 2] - M[0, 2] * M[1, 1]) * i
    out[1, 1] = (M[0, 0] * M[2, 2] - M[0, 2] * M[2, 0]) * i
    out[1, 2] = (M[0, 2] * M[1, 0] - M[0, 0] * M[1, 2]) * i
    out[2, 1] = (M[0, 1] * M[2, 0] - M[0, 0] * M[2, 1]) * i
    out[2, 2] = (M[0, 0] * M[1, 1] - M[0, 1] * M[1, 0]) * i
    return True


@njit(cache=True, nogil=True)
def ba_solve(U, bc, V, bp, Wb, kf, slot, pt_start, pt_obs, lam):
    """Damped step ``(H + lam I) d = b`` by the Schur complement over the points.

    ``pt_obs[pt_start[p]:pt_start[p + 1]]`` are point ``p``'s active observations.
    Returns ``(dc (n_free, 6), dp (P, 3), ok)``; ``ok`` is False when the
    damped system is not positive definite (the caller raises the damping).
    """
    n_free = U.shape[0]
    n_pts = V.shape[0]
    S = np.zeros((6 * n_free, 6 * n_free))
    rhs = np.zeros(6 * n_free)
    for c in range(n_free):
        for a in range(6):
            rhs[6 * c + a] = bc[c, a]
            for b in range(6):
                S[6 * c + a, 6 * c + b] = U[c, a, b]
            S[6 * c + a, 6 * c + a] += lam
    Vinv = np.empty((n_pts, 3, 3))
    Vd = np.empty((3, 3))
    WV = np.empty((6, 3))
    dp = np.zeros((n_pts, 3))
    for p in range(n_pts):
        lo, hi = pt_start[p], pt_start[p + 1]
        if lo == hi:
            continue
        for a in range(3):
            for b in range(3):
                Vd[a, b] = V[p, a, b]
            Vd[a, a] += lam
        if not _inv3(Vd, Vinv[p]):
            return np.zeros((n_free, 6)), dp, False
        Vi = Vinv[p]
        for ia in range(lo, hi):
            ea = pt_obs[ia]
            ca = slot[kf[ea]]
            if ca < 0:
                continue
            for a in range(6):
                for b in range(3):
                    WV[a, b] = Wb[ea, a, 0] * Vi[0, b] + Wb[ea, a, 1] * Vi[1, b] + Wb[ea, a, 2] * Vi[2, b]
                rhs[6 * ca + a] -= WV[a, 0] * bp[p, 0] + WV[a, 1] * bp[p, 1] + WV[a, 2] * bp[p, 2]
            for ib in range(lo, hi):
                eb = pt_obs[ib]
                cb = slot[kf[eb]]
                if cb < ca:  # the lower triangle (and the diagonal blocks) suffice for Cholesky
                    continue
                for a in range(6):
                    for b in range(6):
                        S[6 * cb + b, 6 * ca + a] -= WV[a, 0] * Wb[eb, b, 0] + WV[a, 1] * Wb[eb, b, 1] + WV[a, 2] * Wb[eb, b, 2]
    x, ok = _cholesky_solve(S, rhs)
    dc = np.zeros((n_free, 6))
    if not ok:
        return dc, dp, False
    for c in range(n_free):
        for a in range(6):
            dc[c, a] = x[6 * c + a]
    for p in range(n_pts):
        lo, hi = pt_start[p], pt_start[p + 1]
        if lo == hi:
            continue
        r = bp[p].copy()
        for i in range(lo, hi):
            e = pt_obs[i]
            c = slot[kf[e]]
            if c < 0:
                continue
            for b in range(3):
                r[b] -= Wb[e, 0, b] * dc[c, 0] + Wb[e, 1, b] * dc[c, 1] + Wb[e, 2, b] * dc[c, 2] \
                    + Wb[e, 3, b] * dc[c, 3] + Wb[e, 4, b] * dc[c, 4] + Wb[e, 5, b] * dc[c, 5]
        Vi = Vinv[p]
        for a in range(3):
            dp[p, a] = Vi[a, 0] * r[0] + Vi[a, 1] * r[1] + Vi[a, 2] * r[2]
    return dc, dp, True


@njit(cache=True, nogil=True)
def ba_levenberg(R, t, X, kf, pt, meas, smask, w, wr, cam, disparity, active, delta2, robust,
                 slot, n_free, pt_start, pt_obs, iterations):
    """``iterations`` Levenberg-Marquardt iterations (g2o's damping schedule); returns new ``(R, t, X, cost)``.

    Each iteration linearises once and retries with more damping (up to 10
    times) until a step lowers the cost; it stops early when none does.
    The gain ratio and the damping update are Nielsen's, as in g2o.
    """
    R, t, X = R.copy(), t.copy(), X.copy()
    R_new, t_new, X_new = R.copy(), t.copy(), X.copy()
    lam, nu = -1.0, 2.0
    cost = ba_cost(R, t, X, kf, pt, meas, smask, w, wr, cam, disparity, active, delta2, robust)
    for _ in range(iterations):
        U, bc, V, bp, Wb, cost = ba_linearize(R, t, X, kf, pt, meas, smask, w, wr, cam, disparity, active,
                                              delta2, robust, slot, n_free)
        if lam < 0.0:
            m = 0.0
            for c in range(n_free):
                for a in range(6):
                    m = max(m, U[c, a, a])
            for p in range(V.shape[0]):
                for a in range(3):
                    m = max(m, V[p, a, a])
            lam = _TAU * m
            if lam <= 0.0:
                break  # nothing observed
        accepted = False
        for _try in range(_MAX_TRIES):
            dc, dp, ok = ba_solve(U, bc, V, bp, Wb, kf, slot, pt_start, pt_obs, lam)
            if ok:
                for k in range(R.shape[0]):
                    if slot[k] >= 0:
                        exp_left(dc[slot[k]], R[k], t[k], R_new[k], t_new[k])
                    else:
                        R_new[k] = R[k]
                        t_new[k] = t[k]
                for p in range(X.shape[0]):
                    for a in range(3):
                        X_new[p, a] = X[p, a] + dp[p, a]
                new_cost = ba_cost(R_new, t_new, X_new, kf, pt, meas, smask, w, wr, cam, disparity, active,
                                   delta2, robust)
                # predicted decrease of the damped model: d^T (lam d + b)
                pred = 0.0
                for c in range(n_free):
                    for a in range(6):
                        pred += dc[c, a] * (lam * dc[c, a] + bc[c, a])
                for p in range(X.shape[0]):
                    for a in range(3):
                        pred += dp[p, a] * (lam * dp[p, a] + bp[p, a])
                rho = (cost - new_cost) / (pred + 1e-3)
                if rho > 0.0 and np.isfinite(new_cost):
                    R, R_new = R_new, R
                    t, t_new = t_new, t
                    X, X_new = X_new, X
                    cost = new_cost
                    alpha = 1.0 - (2.0 * rho - 1.0) ** 3
                    lam *= max(1.0 / 3.0, min(alpha, 2.0 / 3.0))
                    nu = 2.0
                    accepted = True
                    break
            lam *= nu
            nu *= 2.0
        if not accepted:
            break
    return R, t, X, cost
