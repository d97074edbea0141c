"""Local mapping's keyframe culling against ORB-SLAM's rule written plainly, one keyframe and point at a time."""

from __future__ import annotations

import numpy as np
import pytest

from slam.backbone.config import SlamConfig
from slam.geometry import PinholeCamera, inv_pose, make_pose, so3_exp
from slam.backbone.local_mapping import LocalMapper
from slam.backbone.map.map import Map
from tests.backbone.test_map import make_features

FX = 500.0
BF = 0.1 * FX  # close points: depth <= 40 * bf / fx = 4 m


def _shared_map(seed: int) -> Map:
    """12 keyframes; 500 points each seen by 2..12 of them at random octaves; some keyframes see many alone."""
    rng = np.random.default_rng(seed)
    m = Map(scale_factor=1.2, n_levels=8)
    for i in range(12):
        f = make_features(900, rng)
        f.octave[:] = rng.integers(0, 4, 900)
        m.new_keyframe(i, float(i), inv_pose(make_pose(so3_exp(rng.normal(0, 0.1, 3)), [0.2 * i, 0.0, 0.0])), f)
    for _ in range(500):
        kfs = rng.choice(12, int(rng.choice([2, 3, 4, 5] + [12] * 36)), replace=False)
        _observe(m, rng, kfs)
    for k in (2, 7):  # points of their own: too few redundant points to be culled
        for _ in range(150):
            _observe(m, rng, [k, (k + 1) % 12])
    for kf in list(m.keyframes.values()):
        kf.update_connections(m)
    return m


def _observe(m: Map, rng, kfs) -> None:
    slots = [int(rng.choice(np.flatnonzero(m.keyframes[int(k)].point_ids < 0))) for k in kfs]
    p = m.new_point(rng.normal([0, 0, 4], 1.0), int(kfs[0]), slots[0], update=False)
    for k, i in zip(kfs[1:], slots[1:]):
        m.associate(int(k), i, p)


def _cull_plain(m: Map, kf, mono: bool, ratio: float, th_obs: int = 3) -> None:
    """ORB-SLAM's KeyFrameCulling over ``kf``'s covisible keyframes, in order, written plainly."""
    for kid in list(kf.covisibles()):
        c = m.keyframes.get(kid)
        if c is None or c.bad or c.id == m.root_id:
            continue
        n_points = n_redundant = 0
        for i in np.flatnonzero(c.point_ids >= 0):
            if not mono and not (0 < c.features.depth[i] <= 40 * BF / FX):
                continue
            p = m.points.get(int(c.point_ids[i]))
            if p is None or p.bad:
                continue
            n_points += 1
            if len(p.observations) <= th_obs:
                continue
            level = c.features.octave[i]
            n_seen = sum(1 for k, kp in p.observations.items()
                         if k != c.id and k in m.keyframes and m.keyframes[k].features.octave[kp] <= level + 1)
            n_redundant += n_seen >= th_obs
        if n_points > 0 and n_redundant > ratio * n_points:
            m.erase_keyframe(c)


@pytest.mark.parametrize("mode", ["mono", "rgbd"])
@pytest.mark.parametrize("ratio", [0.9, 0.8])
def test_culling_equals_the_plain_rule(mode, ratio):
    plain, fast = _shared_map(7), _shared_map(7)
    cfg = SlamConfig()
    cfg.mapping.cull_redundant_ratio = ratio
    camera = PinholeCamera(fx=FX, fy=FX, cx=320.0, cy=240.0, width=640, height=480)
    mapper = LocalMapper(fast, camera, mode, cfg, extractor=None, bf=0.0 if mode == "mono" else BF)
    _cull_plain(plain, plain.keyframes[0], mode == "mono", ratio)
    mapper._cull_keyframes(fast.keyframes[0])
    kept = sorted(plain.keyframes)
    assert sorted(fast.keyframes) == kept
    assert 2 <= 12 - len(kept) <= 9, kept  # some culled, some kept: the rule is exercised both ways
    assert 2 in kept and 7 in kept
    np.testing.assert_array_equal(np.sort(fast.point_ids()), np.sort(plain.point_ids()))
