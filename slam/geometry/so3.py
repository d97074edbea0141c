"""Rotations: SO(3) exponential/logarithm and quaternions (TUM order ``qx qy qz qw``).

All functions are pure and work on float64 numpy arrays. Angles are radians.
"""

from __future__ import annotations

import numpy as np

_EPS = 1e-10


def hat(w: np.ndarray) -> np.ndarray:
    """Skew-symmetric matrix ``[w]x`` with ``hat(w) @ v == cross(w, v)``; ``w`` may be (3,) or (N, 3)."""
    w = np.asarray(w, dtype=np.float64)
    out = np.zeros(w.shape[:-1] + (3, 3))
    out[..., 0, 1], out[..., 0, 2] = -w[..., 2], w[..., 1]
    out[..., 1, 0], out[..., 1, 2] = w[..., 2], -w[..., 0]
    out[..., 2, 0], out[..., 2, 1] = -w[..., 1], w[..., 0]
    return out


def vee(W: np.ndarray) -> np.ndarray:
    """Inverse of :func:`hat` (takes the antisymmetric part)."""
    W = np.asarray(W, dtype=np.float64)
    return 0.5 * np.stack(
        [W[..., 2, 1] - W[..., 1, 2], W[..., 0, 2] - W[..., 2, 0], W[..., 1, 0] - W[..., 0, 1]], axis=-1
    )


def so3_exp(w: np.ndarray) -> np.ndarray:
    """Rodrigues' formula: rotation matrix of the rotation vector ``w`` (axis * angle)."""
    w = np.asarray(w, dtype=np.float64)
    theta2 = np.sum(w * w, axis=-1)[..., None, None]
    theta = np.sqrt(theta2)
    small = theta2 < 1e-8
    safe = np.where(small, 1.0, theta)
    # Taylor series below ~1e-4 rad keep full precision.
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe)) / (safe * safe))
    W = hat(w)
    return np.eye(3) + a * W + b * (W @ W)


def so3_log(R: np.ndarray) -> np.ndarray:
    """Rotation vector of ``R``; angle in [0, pi]. Stable near 0 and near pi."""
    R = np.asarray(R, dtype=np.float64)
    if R.ndim == 3:
        return np.stack([so3_log(r) for r in R])
    cos = (np.trace(R) - 1.0) * 0.5
    w = vee(R)  # = sin(theta) * n
    sin = np.linalg.norm(w)
    theta = np.arctan2(sin, cos)  # well conditioned at every angle, unlike arccos
    if theta < 1e-6:
        return w  # first order: R ~ I + [w]x
    if np.pi - theta < 1e-3:
        # Near pi the antisymmetric part vanishes; the symmetric part is
        # cos I + (1 - cos) n n^T, so read the axis from its largest column.
        B = (0.5 * (R + R.T) - cos * np.eye(3)) / (1.0 - cos)
        k = int(np.argmax(np.diag(B)))
        n = B[:, k] / np.sqrt(max(B[k, k], _EPS))
        n /= np.linalg.norm(n)
        if np.dot(n, w) < 0:  # sign from the (small) antisymmetric part
            n = -n
        return theta * n
    return theta / sin * w


def rotation_angle(R: np.ndarray) -> np.ndarray:
    """Angle (radians, in [0, pi]) of a rotation matrix or stack of them; accurate near 0 and pi."""
    R = np.asarray(R, dtype=np.float64)
    cos = (np.trace(R, axis1=-2, axis2=-1) - 1.0) * 0.5
    sin = np.linalg.norm(vee(R), axis=-1)
    return np.arctan2(sin, cos)


def left_jacobian(w: np.ndarray) -> np.ndarray:
    """Left Jacobian ``J_l(w)`` of SO(3); ``se3_exp`` uses it for the translation part."""
    w = np.asarray(w, dtype=np.float64)
    theta2 = float(w @ w)
    W = hat(w)
    if theta2 < 1e-8:
        return np.eye(3) + 0.5 * W + W @ W / 6.0
    theta = np.sqrt(theta2)
    return (
        np.eye(3)
        + (1.0 - np.cos(theta)) / theta2 * W
        + (theta - np.sin(theta)) / (theta2 * theta) * (W @ W)
    )


def quat_to_rot(q_xyzw: np.ndarray) -> np.ndarray:
    """Rotation matrix from a quaternion in TUM order ``(qx, qy, qz, qw)``; normalises first."""
    q = np.asarray(q_xyzw, dtype=np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    R = np.empty(q.shape[:-1] + (3, 3))
    R[..., 0, 0] = 1 - 2 * (y * y + z * z)
    R[..., 0, 1] = 2 * (x * y - z * w)
    R[..., 0, 2] = 2 * (x * z + y * w)
    R[..., 1, 0] = 2 * (x * y + z * w)
    R[..., 1, 1] = 1 - 2 * (x * x + z * z)
    R[..., 1, 2] = 2 * (y * z - x * w)
    R[..., 2, 0] = 2 * (x * z - y * w)
    R[..., 2, 1] = 2 * (y * z + x * w)
    R[..., 2, 2] = 1 - 2 * (x * x + y * y)
    return R


def rot_to_quat(R: np.ndarray) -> np.ndarray:
    """Unit quaternion ``(qx, qy, qz, qw)`` with ``qw >= 0`` of a rotation matrix (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    if R.ndim == 3:
        return np.stack([rot_to_quat(r) for r in R])
    tr = np.trace(R)
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    else:
        i = int(np.argmax(np.diag(R)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + R[i, i] - R[j, j] - R[k, k], _EPS))
        q = np.empty(4)
        q[i] = 0.25 * s
        q[j] = (R[j, i] + R[i, j]) / s
        q[k] = (R[k, i] + R[i, k]) / s
        q[3] = (R[k, j] - R[j, k]) / s
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def project_to_so3(M: np.ndarray) -> np.ndarray:
    """Closest rotation (Frobenius norm) to a 3x3 matrix, via SVD."""
    U, _, Vt = np.linalg.svd(np.asarray(M, dtype=np.float64))
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt
