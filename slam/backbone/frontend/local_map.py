"""Projecting map points into a frame: the visibility test of the tracking thread (vectorised).

A map point is searched in a frame when it projects inside the image in front
of the camera, its distance lies in its scale-invariance range and the viewing
direction is within 60 degrees of its mean viewing direction (ORB-SLAM's test).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slam.geometry.camera import PinholeCamera


@dataclass
class Projection:
    idx: np.ndarray  # (K,) indices into the queried points that pass the test
    uv: np.ndarray  # (K, 2) undistorted pixels
    u_right: np.ndarray  # (K,) predicted right-image x (stereo/RGB-D), -1 for mono
    level: np.ndarray  # (K,) predicted pyramid level
    view_cos: np.ndarray  # (K,) cosine between viewing ray and the point's mean normal


def project_visible(
    T_c_w: np.ndarray,
    positions: np.ndarray,
    normals: np.ndarray | None,
    min_dist: np.ndarray | None,
    max_dist: np.ndarray | None,
    camera: PinholeCamera,
    bf: float,
    scale_factor: float,
    n_levels: int,
    min_view_cos: float = 0.5,
) -> Projection:
    """Points of ``positions`` (M, 3, world) visible from ``T_c_w``, with predicted pixel and level.

    ``camera`` is the pinhole model of the undistorted keypoints (``PinholeCamera.undistorted()``).
    ``normals``, ``min_dist`` and ``max_dist`` may be None (no viewing-angle or
    scale test: used for the points of the last frame in the motion model).
    """
    P = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    Pc = P @ T_c_w[:3, :3].T + T_c_w[:3, 3]
    uv, ok = camera.project(Pc)
    zs = np.where(ok, Pc[:, 2], 1.0)
    u, v = uv[:, 0], uv[:, 1]
    ok &= (u >= 0) & (u <= camera.width - 1) & (v >= 0) & (v <= camera.height - 1)
    center = -T_c_w[:3, :3].T @ T_c_w[:3, 3]
    ray = P - center
    dist = np.linalg.norm(ray, axis=1)
    if min_dist is not None and max_dist is not None:
        ok &= (dist >= 0.8 * min_dist) & (dist <= 1.2 * max_dist)
    if normals is not None:
        cos = np.einsum("ij,ij->i", ray, normals) / np.maximum(dist, 1e-12)
        ok &= cos >= min_view_cos
    else:
        cos = np.ones(len(P))
    idx = np.nonzero(ok)[0]
    if max_dist is not None:
        ratio = np.maximum(max_dist[idx] / np.maximum(dist[idx], 1e-12), 1e-12)
        level = np.clip(np.ceil(np.log(ratio) / np.log(scale_factor)).astype(int), 0, n_levels - 1)
    else:
        level = np.full(len(idx), -1)
    ur = u[idx] - bf / zs[idx] if bf > 0 else np.full(len(idx), -1.0)
    return Projection(idx, np.column_stack([u[idx], v[idx]]), ur, level, cos[idx])


@dataclass
class PointSet:
    """Map points gathered for projection: ids and the per-point data the visibility test needs."""

    ids: np.ndarray  # (P,) int64
    positions: np.ndarray  # (P, 3) world
    normals: np.ndarray  # (P, 3) mean viewing directions
    min_dist: np.ndarray  # (P,) metres
    max_dist: np.ndarray  # (P,) metres
    descriptors: np.ndarray  # (P, 32) uint8


def gather_points(slam_map, keyframes, exclude: np.ndarray) -> PointSet | None:
    """Good points seen by ``keyframes``, except the ids in ``exclude``; None if there are none.

    Ids come out ascending (as ``np.unique``). Call with ``slam_map.lock`` held (the arrays are
    read in one consistent step).
    """
    if not keyframes:
        return None
    ids = np.concatenate([k.point_ids for k in keyframes])
    ids = ids[ids >= 0]
    if len(ids) == 0:
        return None
    # one mark per id in [lo, hi] instead of sorting ~20k ids twice (unique, setdiff1d)
    lo, hi = int(ids.min()), int(ids.max())
    mark = np.zeros(hi - lo + 1, bool)
    mark[ids - lo] = True
    exclude = np.asarray(exclude, np.int64)
    exclude = exclude[(exclude >= lo) & (exclude <= hi)]
    mark[exclude - lo] = False
    ids = np.flatnonzero(mark) + lo
    ids = ids[slam_map.valid_mask(ids)]
    if len(ids) == 0:
        return None
    rng = slam_map.distance_ranges_of(ids)
    return PointSet(ids, slam_map.points_array(ids), slam_map.normals_of(ids), rng[:, 0], rng[:, 1],
                    slam_map.descriptors_of(ids))
