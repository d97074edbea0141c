"""Least-squares alignment of point sets (Umeyama, PAMI 1991)."""

from __future__ import annotations

import numpy as np

from slam.geometry.se3 import make_pose


def umeyama(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> tuple[float, np.ndarray, np.ndarray]:
    """Find ``s, R, t`` minimising ``sum |dst_i - (s R src_i + t)|^2``.

    ``src`` and ``dst`` are (N, 3) corresponding points. ``with_scale=False``
    gives the rigid (SE3) solution with ``s = 1``. Raises ``ValueError`` for
    fewer than 3 points or a degenerate (collinear, all equal) set.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama needs two (N, 3) arrays of equal shape, got {src.shape} and {dst.shape}")
    n = src.shape[0]
    if n < 3:
        raise ValueError(f"umeyama needs at least 3 point pairs, got {n}")
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = float(np.sum(xs * xs)) / n
    cov = xd.T @ xs / n
    U, D, Vt = np.linalg.svd(cov)
    if np.count_nonzero(D > 1e-12 * max(D[0], 1e-300)) < 2:
        raise ValueError("umeyama: degenerate point set (all points equal or collinear)")
    S = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        S[2, 2] = -1.0
    R = U @ S @ Vt
    s = float(np.trace(np.diag(D) @ S) / var_s) if with_scale else 1.0
    t = mu_d - s * R @ mu_s
    return s, R, t


def umeyama_transform(src: np.ndarray, dst: np.ndarray, with_scale: bool = False) -> np.ndarray:
    """:func:`umeyama` as a 4x4 matrix ``[[sR, t], [0, 1]]`` mapping ``src`` onto ``dst``."""
    s, R, t = umeyama(src, dst, with_scale)
    return make_pose(R, t, scale=s)
