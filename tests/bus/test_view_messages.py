"""Viewer payloads (tracked features, map snapshots): round trips, checks, and the tracker's snapshot of a map."""

from __future__ import annotations

import numpy as np
import pytest

from slam.bus import messages as m
from slam.bus import topics
from slam.bus.codec import BusMessageError, Message
from slam.nodes.tracker import map_snapshot
from tests.bus.test_messages import over_wire


def test_no_stream_name_is_a_prefix_of_another():
    for a in topics.STREAMS:
        assert not any(b != a and b.startswith(a) for b in topics.STREAMS), a


def test_tracked_features_round_trip():
    rng = np.random.default_rng(3)
    uv = rng.random((50, 2)) * 300  # float64 keypoints, as the extractor gives them
    matched = rng.random(50) > 0.4
    msg = m.tracked_features_message(m.TrackedFeatures(7, 0.25, uv, matched, "lost"))
    back = m.message_to_tracked_features(over_wire(msg))
    assert (back.frame_index, back.stamp, back.state) == (7, 0.25, "lost")
    assert back.uv.dtype == np.float32 and back.matched.dtype == bool
    np.testing.assert_allclose(back.uv, uv, rtol=1e-6)
    np.testing.assert_array_equal(back.matched, matched)
    empty = m.message_to_tracked_features(over_wire(m.tracked_features_message(
        m.TrackedFeatures(0, 0.0, np.zeros((0, 2)), np.zeros(0, bool)))))
    assert empty.uv.shape == (0, 2) and empty.matched.shape == (0,)


def test_tracked_features_checks():
    with pytest.raises(ValueError, match="matched flags"):
        m.tracked_features_message(m.TrackedFeatures(0, 0.0, np.zeros((3, 2)), np.zeros(2, bool)))
    msg = over_wire(m.tracked_features_message(m.TrackedFeatures(0, 0.0, np.zeros((3, 2)), np.ones(3, bool))))
    with pytest.raises(BusMessageError, match="matched"):
        m.message_to_tracked_features(Message(msg.topic, msg.type, meta=msg.meta,
                                              arrays={**msg.arrays, "matched": np.ones(4, bool)}))
    with pytest.raises(BusMessageError, match="uv"):
        m.message_to_tracked_features(Message(msg.topic, msg.type, meta=msg.meta,
                                              arrays={**msg.arrays, "uv": np.zeros((3, 2))}))


def test_map_snapshot_round_trip():
    rng = np.random.default_rng(4)
    pts = rng.normal(size=(1000, 3))
    T = np.tile(np.eye(4), (3, 1, 1))
    T[:, :3, 3] = rng.normal(size=(3, 3))
    snap = m.MapSnapshot(12, 0.4, pts, np.array([0, 2, 5]), T, n_points=4000)
    back = m.message_to_map_snapshot(over_wire(m.map_snapshot_message(snap)))
    assert (back.frame_index, back.stamp, back.n_points) == (12, 0.4, 4000)
    assert back.points_w.dtype == np.float32
    np.testing.assert_allclose(back.points_w, pts, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(back.keyframe_ids, [0, 2, 5])
    np.testing.assert_array_equal(back.T_w_c, T)
    with pytest.raises(ValueError, match="one keyframe id"):
        m.map_snapshot_message(m.MapSnapshot(0, 0.0, pts, np.array([1]), T))
    msg = over_wire(m.map_snapshot_message(snap))
    with pytest.raises(BusMessageError, match="T_w_c"):
        m.message_to_map_snapshot(Message(msg.topic, msg.type, meta=msg.meta,
                                          arrays={**msg.arrays, "T_w_c": T[:2]}))


def test_tracker_map_snapshot_is_capped_and_takes_good_keyframes():
    from slam.backbone.frontend.features import Features
    from slam.backbone.map.map import Map

    slam_map = Map()
    rng = np.random.default_rng(5)
    n = 40
    feats = Features(rng.random((n, 2)), rng.random((n, 2)), np.zeros(n, np.int32), np.zeros(n, np.float32),
                     rng.integers(0, 256, (n, 32), dtype=np.uint8))
    kfs = [slam_map.new_keyframe(i, 0.1 * i, np.eye(4), feats) for i in range(3)]
    X = rng.normal(size=(n, 3))
    slam_map.new_points(X, kfs[0], np.arange(n))
    kfs[1].bad = True
    snap = map_snapshot(slam_map, 9, 0.9)
    assert snap.points_w.shape == (n, 3) and snap.n_points == n and snap.frame_index == 9
    np.testing.assert_allclose(np.sort(snap.points_w, axis=0), np.sort(X, axis=0).astype(np.float32), rtol=1e-6)
    assert sorted(snap.keyframe_ids) == [kfs[0].id, kfs[2].id] and snap.T_w_c.shape == (2, 4, 4)
    capped = map_snapshot(slam_map, 9, 0.9, max_points=15)
    assert 10 <= len(capped.points_w) <= 15 and capped.n_points == n
