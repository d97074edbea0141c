"""Local mapping's triangulation and fusion on a small synthetic map with exact structure.

Keyframes at known poses see random points 2-6 m away; keypoints are the
projections (plus pixel noise) with one random descriptor per point, shared by
every view. Some points are in the map already (they connect the keyframes in
the covisibility graph); the others are free keypoints for triangulation.
"""

from __future__ import annotations

import numpy as np

from slam.backbone.config import SlamConfig
from slam.backbone.frontend.features import FeatureExtractor, Features
from slam.backbone.local_mapping import LocalMapper
from slam.backbone.map.map import Map
from slam.geometry import PinholeCamera, inv_pose, make_pose, so3_exp, transform_points

CAM = PinholeCamera(width=640, height=480, fx=525.0, fy=525.0, cx=319.5, cy=239.5)
NOISE_PX = 0.5
N_MAPPED = 80  # points already in the map, seen by every keyframe
N_FREE = 300  # points seen by every keyframe as free keypoints


class Scene:
    """Truth and a map of keyframes at ``T_w_c`` poses; keypoint ``i`` of every keyframe is point ``i``."""

    def __init__(self, T_w_cs: list[np.ndarray], seed: int = 0):
        rng = np.random.default_rng(seed)
        z = rng.uniform(2.0, 6.0, N_MAPPED + N_FREE)
        u, v = rng.uniform(60, CAM.width - 60, len(z)), rng.uniform(60, CAM.height - 60, len(z))
        self.X = transform_points(T_w_cs[0], np.stack([(u - CAM.cx) / CAM.fx * z, (v - CAM.cy) / CAM.fy * z, z], 1))
        desc = rng.integers(0, 256, (len(z), 32), dtype=np.uint8)
        cfg = SlamConfig()
        self.map = Map(CAM, scale_factor=cfg.features.scale_factor, n_levels=cfg.features.n_levels)
        self.kfs = []
        for i, T_w_c in enumerate(T_w_cs):
            Xc = transform_points(inv_pose(T_w_c), self.X)
            uv = Xc[:, :2] / Xc[:, 2:3] * [CAM.fx, CAM.fy] + [CAM.cx, CAM.cy] + rng.normal(0, NOISE_PX, (len(z), 2))
            f = Features(uv, uv.copy(), np.zeros(len(z), np.int32), np.zeros(len(z), np.float32), desc.copy())
            self.kfs.append(self.map.new_keyframe(i, float(i), inv_pose(T_w_c), f))
        for j in range(N_MAPPED):
            p = self.map.new_point(self.X[j], self.kfs[0], j)
            for kf in self.kfs[1:]:
                self.map.associate(kf, j, p)
        self.map.refresh_points(np.arange(N_MAPPED))
        for kf in self.kfs:
            kf.update_connections(self.map)
        self.mapper = LocalMapper(self.map, CAM, "mono", cfg, FeatureExtractor(cfg.features, CAM), bf=0.0)

    def median_depth(self, kf) -> float:
        return float(np.median(transform_points(kf.T_c_w, self.X[:N_MAPPED])[:, 2]))


def _poses() -> list[np.ndarray]:
    return [make_pose(np.eye(3), np.zeros(3)),
            make_pose(so3_exp(np.array([0.0, -0.05, 0.01])), np.array([0.35, 0.03, 0.05]))]


def test_triangulated_points_are_close_to_the_truth():
    s = Scene(_poses())
    kf0, kf1 = s.kfs
    s.mapper._triangulate(kf1)
    new = [p for p in s.map.points.values() if p.id >= N_MAPPED and not p.bad]
    assert len(new) > 0.8 * N_FREE
    # each new point joins the same keypoint (the same true point) in both keyframes: no wrong match
    idx = np.array([p.observations[kf1.id] for p in new])
    assert all(p.observations == {kf1.id: i, kf0.id: i} for p, i in zip(new, idx))
    assert np.all(idx >= N_MAPPED)
    X = np.array([p.position for p in new])
    err = np.linalg.norm(X - s.X[idx], axis=1)
    # trivial answer: every keypoint's point on its ray at the map's median depth (what the map knew before)
    Xc = transform_points(kf1.T_c_w, s.X[idx])
    trivial = np.linalg.norm(Xc / Xc[:, 2:3] * s.median_depth(kf1) - Xc, axis=1)
    assert np.median(err) < 0.1 * np.median(trivial), (np.median(err), np.median(trivial))
    assert np.median(err / Xc[:, 2]) < 0.02
    assert kf0.id in kf1.covisibles() and kf1.weight(kf0.id) >= N_MAPPED + len(new)


def test_triangulation_needs_a_baseline():
    """Two keyframes 1 mm apart: no point is created (the depth would be noise)."""
    poses = _poses()
    poses[1] = make_pose(so3_exp(np.array([0.0, -0.05, 0.01])), np.array([0.001, 0.0, 0.0]))
    s = Scene(poses)
    s.mapper._triangulate(s.kfs[1])
    assert len(s.map.points) == N_MAPPED


def test_fuse_merges_a_duplicate_and_adds_missing_observations():
    s = Scene(_poses() + [make_pose(so3_exp(np.array([0.0, 0.04, 0.0])), np.array([-0.3, 0.0, 0.02]))])
    kf0, kf1, kf2 = s.kfs
    m = s.map
    # point A: seen by kf0 and kf1, and in kf2 by a duplicate made from kf2 alone (2 cm off)
    a = N_MAPPED
    A = m.new_point(s.X[a], kf0, a)
    m.associate(kf1, a, A)
    dup = m.new_point(s.X[a] + [0.02, 0.0, 0.0], kf2, a)
    # point B: seen by kf0 and kf1; its keypoint in kf2 is free (tracking missed it)
    b = N_MAPPED + 1
    B = m.new_point(s.X[b], kf0, b)
    m.associate(kf1, b, B)
    m.refresh_points(np.array([A.id, B.id, dup.id]))
    for kf in s.kfs:
        kf.update_connections(m)
    s.mapper._fuse(kf2)
    assert dup.bad or dup.id not in m.points  # the duplicate is gone, its observation taken over
    assert kf2.point_ids[a] == A.id and A.observations == {kf0.id: a, kf1.id: a, kf2.id: a}
    assert kf2.point_ids[b] == B.id and B.observations[kf2.id] == b
    # nothing else changed hands: every mapped keypoint of kf2 still holds its own point
    assert np.array_equal(kf2.point_ids[:N_MAPPED], np.arange(N_MAPPED))
