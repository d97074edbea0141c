"""Monocular two-view initialisation on synthetic keypoints with known motion and structure.

The keypoints are exact projections (plus pixel noise) of random points 2-6 m in
front of the first camera, with random descriptors shared by both views, so the
test isolates the geometry: essential matrix, pose recovery, triangulation,
checks, and the two-keyframe bundle adjustment.
"""

from __future__ import annotations

import numpy as np
import pytest

from slam.backbone.config import SlamConfig
from slam.backbone.frontend.features import Features
from slam.backbone.frontend.initializer import MonoInitializer
from slam.backbone.frontend.tracking import Tracker, TrackedFrame
from slam.backbone.map.map import Map
from slam.geometry import PinholeCamera, inv_pose, make_pose, rotation_angle, so3_exp, transform_points

CAM = PinholeCamera(width=640, height=480, fx=525.0, fy=525.0, cx=319.5, cy=239.5)
N = 400
NOISE_PX = 0.5


def _scene(rng: np.random.Generator) -> np.ndarray:
    """(N, 3) points in the first camera's frame: depth 2-6 m, inside the image."""
    z = rng.uniform(2.0, 6.0, N)
    u, v = rng.uniform(20, CAM.width - 20, N), rng.uniform(20, CAM.height - 20, N)
    return np.stack([(u - CAM.cx) / CAM.fx * z, (v - CAM.cy) / CAM.fy * z, z], axis=1)


def _frame(index: int, X_c: np.ndarray, desc: np.ndarray, rng: np.random.Generator) -> TrackedFrame:
    uv = X_c[:, :2] / X_c[:, 2:3] * [CAM.fx, CAM.fy] + [CAM.cx, CAM.cy] + rng.normal(0.0, NOISE_PX, (len(X_c), 2))
    feats = Features(uv, uv.copy(), np.zeros(len(uv), np.int32), np.zeros(len(uv), np.float32), desc)
    n = len(uv)
    return TrackedFrame(index, 0.1 * index, feats, None, np.full(n, -1, np.int64), np.zeros(n, bool))


def _initialise(T_c1_c2: np.ndarray, seed: int = 0):
    """Run the initialiser on the pair (first camera at the origin, second at ``T_c1_c2``)."""
    rng = np.random.default_rng(seed)
    X1 = _scene(rng)
    X2 = transform_points(inv_pose(T_c1_c2), X1)
    desc = rng.integers(0, 256, (N, 32), dtype=np.uint8)
    cfg = SlamConfig()
    m = Map(CAM, scale_factor=cfg.features.scale_factor, n_levels=cfg.features.n_levels)
    inserted = []
    tracker = Tracker(CAM, "mono", m, cfg, insert_keyframe=lambda kf: inserted.append(kf) or True)  # accepted
    init = MonoInitializer(tracker)
    assert not init.add(_frame(0, X1, desc, rng))  # the first view only becomes the reference
    ok = init.add(_frame(1, X2, desc, rng))
    return ok, m, inserted, X1


def test_recovers_relative_pose_up_to_scale_and_the_structure():
    T_c1_c2 = make_pose(so3_exp(np.array([0.02, -0.08, 0.01])), np.array([0.3, 0.05, 0.04]))
    ok, m, inserted, X1 = _initialise(T_c1_c2)
    assert ok and len(m.keyframes) == 2 and [kf.frame_index for kf in inserted] == [0, 1]
    kf1, kf2 = inserted
    np.testing.assert_allclose(kf1.T_c_w, np.eye(4), atol=1e-12)  # the map starts at the first view
    T_c2_c1_gt, T_c2_c1 = inv_pose(T_c1_c2), kf2.T_c_w @ inv_pose(kf1.T_c_w)
    # rotation: error far below the rotation itself (the trivial "no rotation" answer)
    rot_err = np.degrees(rotation_angle(T_c2_c1[:3, :3].T @ T_c2_c1_gt[:3, :3]))
    assert rot_err < 0.05 * np.degrees(rotation_angle(T_c2_c1_gt[:3, :3])) and rot_err < 0.3
    # translation: right direction (scale is free); a trivial guess along the optical axis is 80 degrees off
    t, t_gt = T_c2_c1[:3, 3], T_c2_c1_gt[:3, 3]
    cos = t @ t_gt / (np.linalg.norm(t) * np.linalg.norm(t_gt))
    assert np.degrees(np.arccos(min(cos, 1.0))) < 1.0
    # median scene depth 1 (the monocular map's unit)
    pts = [(kf1.point_ids.tolist().index(p.id), p.position) for p in m.points.values() if not p.bad]
    assert len(pts) > 0.8 * N
    idx = np.array([i for i, _ in pts])
    X = np.array([x for _, x in pts])
    assert np.median(X[:, 2]) == pytest.approx(1.0, rel=0.05)
    # points at the true scale (from the baseline) against the truth, and against the trivial answer:
    # every point on its ray at the median depth (a wall), at its best scale
    X_true = X1[idx]
    err = np.linalg.norm(X * (np.linalg.norm(t_gt) / np.linalg.norm(t)) - X_true, axis=1)
    rays = X_true / X_true[:, 2:3]
    trivial = np.linalg.norm(rays * np.median(X_true[:, 2]) - X_true, axis=1)
    assert np.median(err) < 0.1 * np.median(trivial), (np.median(err), np.median(trivial))
    assert np.median(err / X_true[:, 2]) < 0.02


@pytest.mark.parametrize("what,T_c1_c2", [
    ("pure rotation", make_pose(so3_exp(np.array([0.0, 0.1, 0.02])), np.zeros(3))),
    ("too little parallax", make_pose(so3_exp(np.array([0.0, 0.05, 0.0])), np.array([0.01, 0.0, 0.0]))),
])
def test_refuses_a_pair_without_enough_parallax(what, T_c1_c2):
    ok, m, inserted, _ = _initialise(T_c1_c2)
    assert not ok and len(m.keyframes) == 0 and inserted == [], what
