"""Tracking's per-frame bookkeeping (local keyframes by votes, local-map points) against the plain loops.

A random map with many keyframes sharing points (equal votes everywhere), erased and fused
points, and frames whose matches include erased, fused and unknown ids.
"""

from __future__ import annotations

import numpy as np
import pytest

from slam.backbone.config import SlamConfig
from slam.backbone.frontend.features import Features
from slam.backbone.frontend.local_map import gather_points
from slam.backbone.frontend.tracking import TrackedFrame, Tracker
from slam.backbone.map.map import Map
from slam.geometry.camera import PinholeCamera

N_KP = 150


def _features(rng, n=N_KP) -> Features:
    uv = rng.uniform(0, [640, 480], (n, 2))
    return Features(uv, uv.copy(), rng.integers(0, 8, n).astype(np.int32), np.zeros(n, np.float32),
                    rng.integers(0, 256, (n, 32), dtype=np.uint8))


def _random_map(seed: int, n_kf: int = 14, n_points: int = 500) -> Map:
    rng = np.random.default_rng(seed)
    m = Map()
    kfs = [m.new_keyframe(i, 0.1 * i, np.eye(4), _features(rng)) for i in range(n_kf)]
    for _ in range(n_points):
        k = int(rng.integers(0, n_kf))
        free = np.flatnonzero(kfs[k].point_ids < 0)
        if len(free) == 0:
            continue
        p = m.new_point(rng.normal(0, 1, 3) + [0, 0, 4], kfs[k], int(rng.choice(free)))
        # a few more observations by nearby keyframes (shared points: covisibility, equal votes)
        for j in rng.choice(np.arange(max(k - 3, 0), min(k + 4, n_kf)), size=int(rng.integers(0, 4)), replace=False):
            free = np.flatnonzero(kfs[j].point_ids < 0)
            if j != k and len(free) and j not in p.observations:
                m.associate(kfs[j], int(rng.choice(free)), p)
    ids = m.point_ids()
    for pid in rng.choice(ids, size=len(ids) // 10, replace=False).tolist():  # erased points
        if pid in m.points:
            m.erase_point(pid)
    live = m.point_ids()
    for a, b in rng.choice(live, size=(len(live) // 20, 2), replace=False).tolist():  # fused duplicates
        if a in m.points and b in m.points:
            m.replace_point(a, b)
    for kf in kfs:
        kf.update_connections(m, min_weight=3)
    return m


def _frame(rng, m: Map) -> TrackedFrame:
    ever = np.arange(m.next_point_id)  # live, erased and fused ids
    ids = np.full(N_KP, -1, np.int64)
    take = rng.random(N_KP) < 0.7
    ids[take] = rng.choice(ever, size=int(take.sum()))
    ids[rng.random(N_KP) < 0.02] = m.next_point_id + 5  # never handed out
    return TrackedFrame(0, 0.0, _features(rng), np.eye(4), ids, np.zeros(N_KP, bool))


def _local_keyframes_plain(tracker: Tracker, cur: TrackedFrame) -> tuple[list[int], int]:
    """ORB-SLAM's UpdateLocalKeyFrames voting as one loop per observation: (chosen ids, reference id)."""
    m, n_max = tracker.map, tracker.tc.max_local_keyframes
    votes: dict[int, int] = {}
    for pid in cur.point_ids[cur.point_ids >= 0]:
        p = m.points.get(int(pid))
        if p is None or p.bad:
            continue
        for kf_id in p.observations:
            votes[kf_id] = votes.get(kf_id, 0) + 1
    ranked = sorted(votes, key=votes.get, reverse=True)  # stable: ties in first-vote order
    chosen = [k for k in ranked if k in m.keyframes and not m.keyframes[k].bad][:n_max]
    seen = set(chosen)
    for k in list(chosen):
        if len(seen) >= n_max:
            break
        for c in m.keyframes[k].covisibles(10):
            if c not in seen and len(seen) < n_max:
                seen.add(c)
                chosen.append(c)
    ref = tracker.ref_kf.id
    if chosen and votes and chosen[0] != ref:
        ref = chosen[0]
    return chosen, ref


def _gather_plain(m: Map, keyframes, exclude):
    ids = np.unique(np.concatenate([k.point_ids for k in keyframes]))
    ids = np.setdiff1d(ids[ids >= 0], exclude[exclude >= 0])
    return ids[m.valid_mask(ids)]


@pytest.mark.parametrize("seed", range(4))
def test_local_keyframes_and_points_as_plain_loops(seed):
    m = _random_map(seed)
    rng = np.random.default_rng(100 + seed)
    cfg = SlamConfig()
    cfg.tracking.max_local_keyframes = [5, 8, 30, 80][seed]  # bound reached or not
    tracker = Tracker(PinholeCamera(640, 480, 500.0, 500.0, 320.0, 240.0), "rgbd", m, cfg)
    n_chosen = []
    for _ in range(6):
        cur = _frame(rng, m)
        tracker.ref_kf = m.keyframes[int(rng.choice(list(m.keyframes)))]
        want, want_ref = _local_keyframes_plain(tracker, cur)
        with m.lock:
            got = tracker._local_keyframes(cur)
            pts = gather_points(m, got, cur.point_ids)
        assert [k.id for k in got] == want == tracker.local_kf_ids
        assert tracker.ref_kf.id == want_ref
        plain = _gather_plain(m, got, cur.point_ids)
        if len(plain) == 0:
            assert pts is None
            continue
        assert pts.ids.dtype == np.int64
        np.testing.assert_array_equal(pts.ids, plain)
        np.testing.assert_array_equal(pts.positions, m.points_array(plain))
        np.testing.assert_array_equal(pts.descriptors, m.descriptors_of(plain))
        n_chosen.append(len(want))
    assert max(n_chosen) >= 5


def test_gather_points_edge_cases():
    m = _random_map(9)
    kfs = list(m.keyframes.values())
    assert gather_points(m, [], np.array([-1])) is None
    for sel in (kfs[:1], kfs[2:6], kfs):
        for exclude in (np.array([-1, -1]), np.array([10**9, -7]), np.concatenate([k.point_ids for k in sel])[::3],
                        m.point_ids()):
            pts = gather_points(m, sel, exclude)
            plain = _gather_plain(m, sel, exclude)
            if len(plain) == 0:
                assert pts is None
            else:
                np.testing.assert_array_equal(pts.ids, plain)
    empty = m.new_keyframe(99, 9.9, np.eye(4), _features(np.random.default_rng(0)))  # sees no point
    assert gather_points(m, [empty], np.array([-1])) is None
