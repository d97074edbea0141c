"""Two-view triangulation of points from normalised (undistorted) image coordinates."""

from __future__ import annotations

import numpy as np

from slam.geometry.se3 import transform_points


def triangulate_dlt(T_c1_w: np.ndarray, T_c2_w: np.ndarray, xn1: np.ndarray, xn2: np.ndarray) -> np.ndarray:
    """Linear (DLT) triangulation, vectorised over N points.

    ``T_ci_w`` are world-to-camera transforms (4x4); ``xn1``, ``xn2`` are (N, 2)
    normalised coordinates of the same points in each camera. Returns (N, 3)
    world points (the SVD null vector of each 4x4 system, dehomogenised).
    """
    P1 = np.asarray(T_c1_w, dtype=np.float64)[:3, :]
    P2 = np.asarray(T_c2_w, dtype=np.float64)[:3, :]
    x1 = np.asarray(xn1, dtype=np.float64)
    x2 = np.asarray(xn2, dtype=np.float64)
    A = np.stack(
        [
            x1[:, :1] * P1[2] - P1[0],
            x1[:, 1:2] * P1[2] - P1[1],
            x2[:, :1] * P2[2] - P2[0],
            x2[:, 1:2] * P2[2] - P2[1],
        ],
        axis=1,
    )  # (N, 4, 4)
    _, _, Vt = np.linalg.svd(A)
    X = Vt[:, -1, :]
    w = X[:, 3:4]
    w = np.where(np.abs(w) < 1e-300, 1e-300, w)
    return X[:, :3] / w


def depths_in_camera(T_c_w: np.ndarray, points_w: np.ndarray) -> np.ndarray:
    """z coordinate of world points in a camera (positive in front)."""
    return transform_points(T_c_w, points_w)[:, 2]


def parallax_deg(C1: np.ndarray, C2: np.ndarray, points_w: np.ndarray) -> np.ndarray:
    """Angle (degrees) between the rays from camera centres ``C1`` and ``C2`` to each point."""
    r1 = points_w - np.asarray(C1)
    r2 = points_w - np.asarray(C2)
    cos = np.sum(r1 * r2, axis=1) / (np.linalg.norm(r1, axis=1) * np.linalg.norm(r2, axis=1) + 1e-300)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def reprojection_error(T_c_w: np.ndarray, points_w: np.ndarray, xn: np.ndarray) -> np.ndarray:
    """Euclidean error, in normalised coordinates, between projected points and observations."""
    pc = transform_points(T_c_w, points_w)
    z = np.where(np.abs(pc[:, 2]) < 1e-12, 1e-12, pc[:, 2])
    return np.linalg.norm(pc[:, :2] / z[:, None] - xn, axis=1)
