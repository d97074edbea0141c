"""Rigid and similarity transforms as 4x4 matrices: SE(3) and Sim(3) exp/log, composition, inverse.

Conventions: a pose ``T_a_b`` maps points from frame ``b`` to frame ``a``
(``p_a = T_a_b @ p_b``); the camera pose is ``T_w_c``. Tangent vectors are
ordered translation first: ``xi = (rho, phi)`` for SE(3) and
``zeta = (rho, phi, sigma)`` for Sim(3) with scale ``s = exp(sigma)``.
"""

from __future__ import annotations

import numpy as np

from slam.geometry.so3 import hat, left_jacobian, project_to_so3, so3_exp, so3_log


def make_pose(R: np.ndarray, t: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """4x4 matrix ``[[scale * R, t], [0, 1]]``."""
    T = np.eye(4)
    T[:3, :3] = scale * np.asarray(R, dtype=np.float64)
    T[:3, 3] = np.asarray(t, dtype=np.float64)
    return T


def inv_pose(T: np.ndarray) -> np.ndarray:
    """Inverse of a rigid transform (or stack of them) without a general matrix inverse."""
    T = np.asarray(T, dtype=np.float64)
    R = T[..., :3, :3]
    Rt = np.swapaxes(R, -1, -2)
    out = np.zeros_like(T)
    out[..., :3, :3] = Rt
    out[..., :3, 3] = -np.einsum("...ij,...j->...i", Rt, T[..., :3, 3])
    out[..., 3, 3] = 1.0
    return out


def normalize_pose(T: np.ndarray) -> np.ndarray:
    """``T`` with its rotation block projected back onto SO(3) (translation kept).

    Products of poses drift off SO(3) by rounding; a chain that feeds its own
    output back (a constant-velocity prediction ``T_k T_{k-1}^-1 T_k``, with
    the transpose as inverse) doubles that drift every step, so composed poses
    are normalised where they are stored.
    """
    out = np.array(T, dtype=np.float64)
    out[:3, :3] = project_to_so3(out[:3, :3])
    return out


def transform_points(T: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 (rigid or similarity) transform to (N, 3) points."""
    T = np.asarray(T, dtype=np.float64)
    return np.asarray(points, dtype=np.float64) @ T[:3, :3].T + T[:3, 3]


def se3_exp(xi: np.ndarray) -> np.ndarray:
    """SE(3) exponential of ``xi = (rho, phi)``: ``[[exp(phi), J_l(phi) rho], [0, 1]]``."""
    xi = np.asarray(xi, dtype=np.float64)
    rho, phi = xi[:3], xi[3:]
    return make_pose(so3_exp(phi), left_jacobian(phi) @ rho)


def se3_log(T: np.ndarray) -> np.ndarray:
    """Inverse of :func:`se3_exp`."""
    T = np.asarray(T, dtype=np.float64)
    phi = so3_log(T[:3, :3])
    rho = np.linalg.solve(left_jacobian(phi), T[:3, 3])
    return np.concatenate([rho, phi])


def _sim3_V(phi: np.ndarray, sigma: float) -> np.ndarray:
    """``V = int_0^1 exp(sigma s) exp(s [phi]x) ds``, the translation Jacobian of Sim(3) exp.

    Written as ``c0 I + c1 [n]x + c2 [n]x^2`` with ``n = phi / |phi|``; the
    integrals have closed forms, and series where ``|phi|`` or ``sigma`` vanish.
    """
    theta2 = float(phi @ phi)
    theta = np.sqrt(theta2)
    W = hat(phi)
    c0 = 1.0 if abs(sigma) < 1e-12 else np.expm1(sigma) / sigma
    if theta < 1e-5:
        # c1 / theta -> int s e^{sigma s} ds, c2 / theta^2 -> int s^2/2 e^{sigma s} ds
        if abs(sigma) < 1e-5:
            k1 = 0.5 + sigma / 3.0
            k2 = 1.0 / 6.0 + sigma / 8.0
        else:
            e = np.exp(sigma)
            k1 = (e * (sigma - 1.0) + 1.0) / sigma**2
            k2 = 0.5 * (e * (sigma * sigma - 2.0 * sigma + 2.0) - 2.0) / sigma**3
        return c0 * np.eye(3) + k1 * W + k2 * (W @ W)
    e = np.exp(sigma)
    den = sigma * sigma + theta2
    int_sin = (e * (sigma * np.sin(theta) - theta * np.cos(theta)) + theta) / den
    int_cos = (e * (sigma * np.cos(theta) + theta * np.sin(theta)) - sigma) / den
    c1 = int_sin / theta
    c2 = (c0 - int_cos) / theta2
    return c0 * np.eye(3) + c1 * W + c2 * (W @ W)


def sim3_exp(zeta: np.ndarray) -> np.ndarray:
    """Sim(3) exponential of ``zeta = (rho, phi, sigma)``: ``[[e^sigma R, V rho], [0, 1]]``."""
    zeta = np.asarray(zeta, dtype=np.float64)
    rho, phi, sigma = zeta[:3], zeta[3:6], float(zeta[6])
    return make_pose(so3_exp(phi), _sim3_V(phi, sigma) @ rho, scale=np.exp(sigma))


def sim3_scale(S: np.ndarray) -> float:
    """Scale factor of a similarity transform (cube root of the determinant of its 3x3 block)."""
    return float(np.cbrt(np.linalg.det(np.asarray(S, dtype=np.float64)[:3, :3])))


def sim3_log(S: np.ndarray) -> np.ndarray:
    """Inverse of :func:`sim3_exp`."""
    S = np.asarray(S, dtype=np.float64)
    s = sim3_scale(S)
    phi = so3_log(S[:3, :3] / s)
    sigma = np.log(s)
    rho = np.linalg.solve(_sim3_V(phi, sigma), S[:3, 3])
    return np.concatenate([rho, phi, [sigma]])


def sim3_inverse(S: np.ndarray) -> np.ndarray:
    """Inverse of a similarity transform ``[[sR, t], [0, 1]]``."""
    S = np.asarray(S, dtype=np.float64)
    s = sim3_scale(S)
    R = S[:3, :3] / s
    return make_pose(R.T, -(R.T @ S[:3, 3]) / s, scale=1.0 / s)
