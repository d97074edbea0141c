"""Keyframe database (cosine retrieval, ORB-SLAM acceptance) and candidate consistency on tiny descriptors."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from slam.backbone.loop.keyframe_database import ConsistencyChecker, KeyFrameDatabase


def _places(n_places=5, dim=16, seed=0):
    """One random unit direction per place; keyframes of a place are noisy copies of it."""
    rng = np.random.default_rng(seed)
    P = rng.normal(size=(n_places, dim))
    return P / np.linalg.norm(P, axis=1, keepdims=True), rng


def test_query_ranks_by_cosine_and_excludes():
    P, rng = _places()
    db = KeyFrameDatabase(16)
    for kf in range(20):  # kf k shows place k % 5
        db.add(kf, 3.0 * (P[kf % 5] + 0.05 * rng.normal(size=16)))  # any norm: stored normalised
    assert len(db) == 20 and 7 in db
    assert np.linalg.norm(db.descriptor(7)) == pytest.approx(1.0, abs=1e-6)
    res = db.query(P[2], k=4)
    assert sorted(kf for kf, _ in res) == [2, 7, 12, 17]
    assert [s for _, s in res] == sorted([s for _, s in res], reverse=True)
    assert all(0.9 < s <= 1.0 + 1e-6 for _, s in res)
    res = db.query(P[2], k=4, exclude={2, 7})
    assert [kf for kf, _ in res][:2] in ([12, 17], [17, 12]) and all(kf not in (2, 7) for kf, _ in res)
    assert db.query(P[2], k=10, min_score=0.9) == db.query(P[2], k=4)


def test_remove_and_replace():
    P, _ = _places()
    db = KeyFrameDatabase(16, capacity=2)  # also grows past its capacity
    for kf in range(5):
        db.add(kf, P[kf])
    assert db.remove(1) and not db.remove(1) and 1 not in db and len(db) == 4
    assert [kf for kf, _ in db.query(P[4], k=1)] == [4]  # the moved row still answers for its id
    db.add(0, P[3])
    assert sorted(kf for kf, _ in db.query(P[3], k=2)) == [0, 3]


def test_detect_loop_candidates_orb_slam_acceptance():
    P, rng = _places(n_places=6, seed=1)
    db = KeyFrameDatabase(16)
    # the trajectory passes place 0 (kf 0-2), places 1-4, then returns to place 0 (kf 20, the query)
    for kf in range(3):
        db.add(kf, P[0] + 0.1 * rng.normal(size=16))
    for kf in range(3, 19):
        db.add(kf, P[1 + (kf - 3) // 4] + 0.1 * rng.normal(size=16))
    # covisible neighbours of the query: the last keyframes, a different place that looks half-alike
    for kf in (19,):
        db.add(kf, P[4] + 0.6 * P[0])
    q = P[0] + 0.1 * rng.normal(size=16)
    cands = db.detect_loop_candidates(20, q, covisible=[17, 18, 19])
    assert sorted(c for c, _ in cands) == [0, 1, 2]
    # neighbours that all look like the query set a bound above every candidate: none left
    for kf in (17, 18, 19):
        db.add(kf, q + 0.01 * rng.normal(size=16))
    assert db.detect_loop_candidates(20, q, covisible=[17, 18, 19]) == []
    # the trivial retrieval (every non-neighbour) would have accepted the wrong places too
    assert len(db.query(q, k=100, exclude={17, 18, 19, 20})) > 3


def test_bad_descriptors_are_refused():
    db = KeyFrameDatabase(4)
    with pytest.raises(ValueError, match="expected 4"):
        db.add(0, np.ones(5))
    with pytest.raises(ValueError, match="zero"):
        db.add(0, np.zeros(4))
    with pytest.raises(ValueError, match="finite"):
        db.query(np.array([1.0, np.nan, 0.0, 0.0]))
    assert db.query(np.ones(4)) == []


def test_thread_safety_under_concurrent_add_remove_query():
    P, _ = _places(n_places=8, dim=8)
    db = KeyFrameDatabase(8, capacity=1)
    errors = []

    def writer(offset):
        try:
            for k in range(300):
                db.add(offset + k, P[k % 8])
                if k % 3 == 0:
                    db.remove(offset + k - 1)
        except Exception as e:  # noqa: BLE001 - surfaced below
            errors.append(e)

    def reader():
        try:
            for _ in range(300):
                for kf, s in db.query(P[0], k=5):
                    assert -1.0 - 1e-5 <= s <= 1.0 + 1e-5
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(o,)) for o in (0, 10000)] + [threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    added = {o + k for o in (0, 10000) for k in range(300)}
    expected = added - {o + k - 1 for o in (0, 10000) for k in range(0, 300, 3)}
    assert len(db) == len(expected) and all(kf in db for kf in expected)


def test_consistency_needs_three_consecutive_confirmations():
    cc = ConsistencyChecker(min_consistency=3)
    groups = {100: [101, 102], 101: [100, 102, 103], 102: [101, 103], 103: [102], 500: [501]}
    # the loop region answers for four keyframes in a row through different members of its group
    assert cc.update([100], groups) == []
    assert cc.update([101, 500], groups) == []  # 500: a one-off false candidate
    assert cc.update([102], groups) == []
    assert cc.update([103], groups) == [103]
    # a candidate that appears once, or with a gap, is never accepted
    cc2 = ConsistencyChecker(min_consistency=3)
    for cands in ([500], [], [500], [500], [100]):
        assert cc2.update(cands, groups) == []
    assert cc2.update([], groups) == [] and cc2.groups == []
