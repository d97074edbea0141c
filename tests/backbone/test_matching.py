"""Descriptor matching: Hamming distances, search by projection, brute force, orientation check, epipolar search."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.backbone.frontend.features import FeatureConfig, FeatureExtractor, Features, set_depth_from_map
from slam.backbone.frontend.matching import (
    TH_HIGH,
    TH_LOW,
    fundamental_from_pose,
    hamming,
    hamming_matrix,
    match_by_projection,
    match_descriptors,
    rotation_consistency,
    search_epipolar,
)

from tests.conftest import timed


@pytest.fixture(scope="module")
def pair(synth640):
    """Frames 0 and 3 (0.1 s apart) of a 640x480 synthetic sequence: noisy images, exact depth, true poses."""
    seq, clean = synth640
    ex = FeatureExtractor(FeatureConfig(), seq.camera)
    out = {}
    for i in (0, 3):
        f = seq.render_frame(i, with_right=False)
        feats = ex.extract(cv2.cvtColor(f.rgb, cv2.COLOR_RGB2GRAY))
        out[i] = (feats, clean.render_frame(i, with_right=False).depth, f.T_w_c)
    return seq.camera, ex, out



def _project_0_to_3(camera, pair_data):
    """Frame-0 keypoints moved into frame 3 with the true depth and poses: pixels, depth in 3, visible mask."""
    (f0, d0, T0), (_, d3, T3) = pair_data[0], pair_data[3]
    has_depth = set_depth_from_map(f0, d0, 0.0)
    X0 = camera.unproject(f0.uv, f0.depth)
    T30 = np.linalg.inv(T3) @ T0
    X3 = X0 @ T30[:3, :3].T + T30[:3, 3]
    uv3, front = camera.project(X3)
    vis = has_depth & front & camera.in_image(uv3, margin=20)  # keypoints are not found closer to the border
    ui = np.clip(np.rint(uv3[:, 0]).astype(int), 0, camera.width - 1)
    vi = np.clip(np.rint(uv3[:, 1]).astype(int), 0, camera.height - 1)
    vis &= np.abs(d3[vi, ui] - X3[:, 2]) < 0.03 * X3[:, 2]  # not occluded in frame 3
    return uv3, X3[:, 2], vis, T30


# ------------------------------------------------------------------ distances
def test_hamming_against_naive_bit_count():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    b = rng.integers(0, 256, (500, 32), dtype=np.uint8)
    naive = np.unpackbits(a ^ b, axis=1).sum(axis=1)
    assert np.array_equal(hamming(a, b), naive)
    assert np.array_equal(hamming(a, b[0]), np.unpackbits(a ^ b[0], axis=1).sum(axis=1))
    assert hamming(a[3], b[3]) == naive[3]
    assert np.array_equal(hamming(a[:, :5], b[:, :5]), np.unpackbits(a[:, :5] ^ b[:, :5], axis=1).sum(axis=1))
    D = hamming_matrix(a[:70], b[:90])
    assert D.shape == (70, 90) and D.dtype == np.int32
    assert np.array_equal(D, np.unpackbits(a[:70, None] ^ b[None, :90], axis=2).sum(axis=2))
    assert hamming_matrix(a[:0], b).shape == (0, 500)
    A = rng.integers(0, 256, (1000, 32), dtype=np.uint8)
    _, t_min, _ = timed(lambda: hamming_matrix(A, A), n=5)
    print(f"\nhamming_matrix 1000 x 1000: min {t_min:.2f} ms")


# ------------------------------------------------------------------ search by projection
def test_match_by_projection_against_ground_truth(pair):
    camera, ex, data = pair
    f0, f3 = data[0][0], data[3][0]
    uv3, z3, vis, _ = _project_0_to_3(camera, data)
    idx = np.nonzero(vis)[0]
    assert len(idx) > 400
    # predicted level from the change of distance, radius of 3 px at that level (as ORB-SLAM)
    level = np.clip(np.rint(f0.octave[idx] + np.log(f0.depth[idx] / z3[idx]) / np.log(ex.scale_factor)),
                    0, ex.n_levels - 1).astype(int)
    (p, k), t_min, t_med = timed(
        lambda: match_by_projection(f3, uv3[idx], f0.desc[idx], 3.0 * ex.scale_factors[level], level))
    err = np.linalg.norm(f3.uv_und[k] - uv3[idx[p]], axis=1)
    print(f"\nmatch_by_projection {len(idx)} points x {len(f3)} keypoints: {len(p)} matches "
          f"({len(p) / len(idx):.0%}), {np.mean(err < 2):.0%} within 2 px; min {t_min:.2f} ms, median {t_med:.2f} ms")
    assert len(p) >= 0.5 * len(idx)
    assert np.mean(err < 2.0) >= 0.8
    assert len(np.unique(k)) == len(k) and len(np.unique(p)) == len(p)
    assert np.all(np.diff(p) > 0)


def test_match_by_projection_timing_1000_by_1000(pair):
    _, ex, data = pair
    f3 = data[3][0]
    rng = np.random.default_rng(0)
    uv = f3.uv_und + rng.normal(0, 1.0, f3.uv_und.shape)
    desc = f3.desc.copy()
    flip = rng.integers(0, 32, len(desc))
    desc[np.arange(len(desc)), flip] ^= 0x11  # a few bits differ
    (p, k), t_min, t_med = timed(lambda: match_by_projection(f3, uv, desc, 4.0 * ex.scale_factors[f3.octave],
                                                               f3.octave))
    print(f"\nmatch_by_projection {len(uv)} x {len(f3)}: {len(p)} matches, min {t_min:.2f} ms, median {t_med:.2f} ms")
    assert np.mean(p == k) > 0.95 and len(p) > 0.9 * len(uv)


def _toy_features(uv, octave, desc, u_right=None):
    uv = np.asarray(uv, float)
    f = Features(uv, uv.copy(), np.asarray(octave, np.int32), np.zeros(len(uv), np.float32),
                 np.asarray(desc, np.uint8), u_right=None if u_right is None else np.asarray(u_right, float))
    f.build_grid(640, 480)
    return f


def test_match_by_projection_rules():
    rng = np.random.default_rng(5)
    base = rng.integers(0, 256, (4, 32), dtype=np.uint8)
    near = base.copy()
    near[:, 0] ^= 0x0F  # 4 bits away
    far = base.copy()
    far[:, :4] ^= 0xFF  # 32 bits away
    # keypoints 0/1 at (100,100) (levels 0 and 1), keypoint 2 at (300,200) level 2, keypoint 3 at (500,400)
    f = _toy_features([[100, 100], [101, 100], [300, 200], [500, 400]], [0, 1, 2, 0],
                      [base[0], near[0], base[2], base[3]], u_right=[-1, -1, 280, 480])
    e = np.zeros(0, int)
    # the best keypoint in the window wins
    p, k = match_by_projection(f, [[100.5, 100.2]], [base[0]], [3.0], [-1])
    assert (p.tolist(), k.tolist()) == ([0], [0])
    # second best at a different level: no ratio test; at the same level: ratio test rejects
    p, k = match_by_projection(f, [[100.5, 100.2]], [near[0]], [3.0], -1, ratio=0.8)
    assert k.tolist() == [1]
    f_same = _toy_features([[100, 100], [101, 100]], [0, 0], [base[0], near[0]])
    assert len(match_by_projection(f_same, [[100.5, 100.2]], [base[0]], [3.0], -1, ratio=0.8)[0]) == 1
    other = base[0].copy()
    other[0] ^= 0x01
    amb = base[0].copy()
    amb[1] ^= 0xFF  # 8 bits from keypoint 0, 9 from keypoint 1: too close a call
    f_amb = _toy_features([[100, 100], [101, 100]], [0, 0], [base[0], other])
    assert len(match_by_projection(f_amb, [[100.5, 100.2]], [amb], [3.0], -1, ratio=0.8)[0]) == 0
    assert len(match_by_projection(f_amb, [[100.5, 100.2]], [amb], [3.0], -1, ratio=1.0)[0]) == 1
    # predicted level window, radius, max distance, taken
    assert match_by_projection(f, [[300, 200]], [base[2]], [3.0], [0])[1].tolist() == []
    assert match_by_projection(f, [[300, 200]], [base[2]], [3.0], [3])[1].tolist() == [2]
    assert match_by_projection(f, [[305, 200]], [base[2]], [3.0], [-1])[1].tolist() == []
    assert match_by_projection(f, [[300, 200]], [far[2]], [3.0], -1, max_dist=20)[1].tolist() == []
    taken = np.array([False, False, True, False])
    assert match_by_projection(f, [[300, 200]], [base[2]], [3.0], -1, taken=taken)[1].tolist() == []
    # predicted right coordinate must agree where both are known
    assert match_by_projection(f, [[300, 200]], [base[2]], [3.0], -1, proj_ur=[281.0])[1].tolist() == [2]
    assert match_by_projection(f, [[300, 200]], [base[2]], [3.0], -1, proj_ur=[270.0])[1].tolist() == []
    assert match_by_projection(f, [[300, 200]], [base[2]], [3.0], -1, proj_ur=[-1.0])[1].tolist() == [2]
    # two points want keypoint 3: the closer descriptor wins it, the other one gets nothing else nearby
    p, k = match_by_projection(f, [[500, 400], [501, 401]], [near[3], base[3]], [3.0, 3.0], -1)
    assert (p.tolist(), k.tolist()) == ([1], [3])
    # ... and when there is another candidate, the loser takes it in the second round
    p, k = match_by_projection(f, [[100, 100], [100.5, 100]], [base[0], base[0]], [3.0, 3.0], -1)
    assert sorted(k.tolist()) == [0, 1]
    assert match_by_projection(f, [[100, 100], [100.5, 100]], [base[0], base[0]], [3.0, 3.0], -1,
                               rounds=1)[1].tolist() == [0]
    # nothing to do
    assert match_by_projection(f, np.zeros((0, 2)), np.zeros((0, 32), np.uint8), np.zeros(0), -1)[0].tolist() == []
    assert match_by_projection(Features.empty(), [[1.0, 1.0]], [base[0]], [3.0], -1)[0].tolist() == e.tolist()


def _match_by_projection_plain(f, proj_uv, desc, radius, predicted_level=-1, max_dist=TH_HIGH, ratio=0.8,
                               taken=None, proj_ur=None, rounds=2):
    """match_by_projection written plainly: every keypoint tested against every point, then loops.

    A point's candidates are ordered by distance, then by the keypoints' grid order (band of ``v``, then ``u``,
    then index: how the grid lists them), its best and second best the first two; a keypoint wanted by several
    points goes to the smallest distance, then the smallest point index.
    """
    proj_uv = np.asarray(proj_uv, float)
    m, n = len(proj_uv), len(f)
    radius = np.broadcast_to(np.asarray(radius, float), (m,))
    level = np.broadcast_to(np.asarray(predicted_level, int), (m,))
    ur = None if proj_ur is None else np.broadcast_to(np.asarray(proj_ur, float), (m,))
    taken = np.zeros(n, bool) if taken is None else np.asarray(taken, bool)
    desc = np.asarray(desc, np.uint8)
    if m == 0 or n == 0:
        return np.zeros(0, int), np.zeros(0, int)
    f._ensure_grid()
    grid_rank = np.empty(n, int)
    grid_rank[f._grid.order] = np.arange(n)
    cands = []  # per point: (distance, grid rank, keypoint) of the keypoints it may take, sorted
    for i in range(m):
        (u, v), r = proj_uv[i], radius[i]
        if not np.all(np.isfinite([u - r, u + r, v - r, v + r])) or r < 0:  # no search box
            cands.append([])
            continue
        ok = (np.abs(f.uv_und[:, 0] - u) < r) & (np.abs(f.uv_und[:, 1] - v) < r) & ~taken
        if level[i] >= 0:
            ok &= np.abs(f.octave - level[i]) <= 1
        if ur is not None and not ur[i] < 0:
            ok &= (f.u_right < 0) | (np.abs(f.u_right - ur[i]) < r)
        ks = np.flatnonzero(ok)
        d = np.unpackbits(desc[i] ^ f.desc[ks], axis=1).sum(axis=1)
        cands.append(sorted(zip(d.tolist(), grid_rank[ks].tolist(), ks.tolist())))
    won = {}  # point -> keypoint
    owner = {}  # keypoint -> point
    for _ in range(max(rounds, 1)):
        wanted = {}  # keypoint -> (distance, point): the closest, the first point on a tie
        for i in range(m):
            if i in won:
                continue
            c = [x for x in cands[i] if x[2] not in owner]
            if not c:
                continue
            d1, _, k1 = c[0]
            if d1 > max_dist:
                continue
            if ratio < 1.0 and len(c) > 1 and f.octave[c[1][2]] == f.octave[k1] and d1 > ratio * c[1][0]:
                continue
            if k1 not in wanted or d1 < wanted[k1][0]:
                wanted[k1] = (d1, i)
        if not wanted:
            break
        for k, (_, i) in wanted.items():
            won[i], owner[k] = k, i
    p = np.array(sorted(won), int)
    return p, np.array([won[i] for i in p], int)


def _assert_as_plain(f, *args, **kw):
    p, k = match_by_projection(f, *args, **kw)
    q, j = _match_by_projection_plain(f, *args, **kw)
    assert p.dtype == k.dtype == np.int64
    assert np.array_equal(p, q) and np.array_equal(k, j)
    return len(p)


def _assert_options_as_plain(f, uv, desc, radius, level, rng):
    """The plain version and match_by_projection agree with each option: a few matches each time."""
    m, n = len(uv), len(f)
    g = f.subset(np.arange(n))  # some keypoints with a right coordinate (g builds its grid itself)
    g.u_right = np.where(rng.random(n) < 0.6, f.uv_und[:, 0] - rng.uniform(5, 40, n), -1.0)
    ur = np.where(rng.random(m) < 0.7, uv[:, 0] - rng.uniform(5, 40, m), -1.0)
    return [
        _assert_as_plain(f, uv, desc, radius, level),
        _assert_as_plain(f, uv, desc, radius, -1),
        _assert_as_plain(f, uv, desc, 8.0, level, ratio=1.0),
        _assert_as_plain(f, uv, desc, radius, level, ratio=0.6, max_dist=50, rounds=1),
        _assert_as_plain(f, uv, desc, radius, level, rounds=3),
        _assert_as_plain(f, uv, desc, radius, level, taken=rng.random(n) < 0.4),
        _assert_as_plain(g, uv, desc, radius, level, proj_ur=ur),
        _assert_as_plain(g, uv, desc, radius * 3, level, proj_ur=ur, taken=rng.random(n) < 0.2, ratio=0.9),
        _assert_as_plain(f, uv[::3], desc[::3], radius[::3], level[::3], rounds=0),  # as rounds=1
    ]


def test_match_by_projection_as_plain_version_synthetic(pair):
    camera, ex, data = pair
    f0, f3 = data[0][0], data[3][0]
    uv3, z3, vis, _ = _project_0_to_3(camera, data)
    idx = np.nonzero(vis)[0]
    level = np.clip(np.rint(f0.octave[idx] + np.log(f0.depth[idx] / z3[idx]) / np.log(ex.scale_factor)),
                    0, ex.n_levels - 1).astype(int)
    rng = np.random.default_rng(8)
    n = _assert_options_as_plain(f3, uv3[idx], f0.desc[idx], 3.0 * ex.scale_factors[level], level, rng)
    # every keypoint of frame 3 searched for near its own place: dense, overlapping windows
    uv = f3.uv_und + rng.normal(0, 2.0, f3.uv_und.shape)
    n += _assert_options_as_plain(f3, uv, f3.desc, 5.0 * ex.scale_factors[f3.octave], f3.octave, rng)
    print(f"\nmatch_by_projection as its plain version, synthetic: {n} matches")
    assert min(n) > 50


def test_match_by_projection_as_plain_version_kitti(kitti_path):
    """Real features: KITTI keypoints searched for near their place in the next frames (forward motion)."""
    from slam.datasets import open_sequence

    seq = open_sequence(kitti_path)
    ex = FeatureExtractor(FeatureConfig(), seq.camera)
    rng = np.random.default_rng(9)
    n = []
    for i, j in ((0, 1), (40, 42)):
        fi, fj = ex.extract(seq[i].image), ex.extract(seq[j].image)
        n += _assert_options_as_plain(fj, fi.uv_und, fi.desc, 12.0 * ex.scale_factors[fi.octave], fi.octave, rng)
    print(f"\nmatch_by_projection as its plain version, KITTI: {n} matches")
    assert min(n) > 10


def test_match_by_projection_ties_and_edge_cases():
    """Few distinct descriptors and keypoints on the same pixels (ties everywhere), points without a search box."""
    rng = np.random.default_rng(10)
    for trial in range(20):
        n = int(rng.choice([1, 3, 40, 800]))
        uv = np.round(rng.uniform([-5, -5], [645, 485], (n, 2)) / 4) * 4  # shared pixels, some outside the image
        pool = rng.integers(0, 256, (int(rng.integers(1, 4)), 32), dtype=np.uint8)
        f = Features(uv, uv.copy(), rng.integers(0, 4, n).astype(np.int32), np.zeros(n, np.float32),
                     pool[rng.integers(0, len(pool), n)],
                     u_right=np.where(rng.random(n) < 0.5, -1.0, uv[:, 0] - rng.uniform(0, 30, n)))
        if trial % 2:
            f.build_grid(640, 480, band_px=float(rng.choice([4.0, 8.0, 16.0])))  # else the grid builds itself
        m = int(rng.choice([1, 5, 500]))
        puv = uv[rng.integers(0, n, m)] + rng.normal(0, 3, (m, 2))
        r = rng.uniform(1, 20, m)
        r[rng.random(m) < 0.05] = rng.choice([np.nan, np.inf, -1.0, 0.0])
        puv[rng.random(m) < 0.05] = np.nan
        desc = pool[rng.integers(0, len(pool), m)]
        level = np.where(rng.random(m) < 0.3, -1, rng.integers(0, 4, m))
        ur = np.where(rng.random(m) < 0.3, -1.0, puv[:, 0] - rng.uniform(0, 30, m))
        _assert_as_plain(f, puv, desc, r, level, ratio=float(rng.choice([0.6, 0.8, 1.0])),
                         taken=rng.random(n) < 0.3, proj_ur=ur, rounds=int(rng.choice([1, 2, 3])))
        _assert_as_plain(f, puv, desc, 10.0, -1, max_dist=float(rng.choice([0, 50, 100])))
    # nothing to do: no points, no keypoints, no candidates, no search box
    f = _toy_features([[100, 100], [300, 200]], [0, 2], rng.integers(0, 256, (2, 32), dtype=np.uint8))
    d = f.desc[:1]
    for args in ((f, np.zeros((0, 2)), np.zeros((0, 32), np.uint8), np.zeros(0)),
                 (Features.empty(), [[100.0, 100.0]], d, 3.0), (f, [[500.0, 50.0]], d, 3.0),
                 (f, [[100.0, 100.0]], d, 3.0, 5), (f, [[np.nan, 100.0]], d, 3.0), (f, [[100.0, 100.0]], d, np.inf)):
        p, k = match_by_projection(*args)
        assert len(p) == len(k) == 0 and p.dtype == k.dtype == np.int64
    assert _assert_as_plain(f, [[100.0, 100.0]], d, 3.0, taken=[True, False]) == 0
    assert _assert_as_plain(f, [[100.0, 100.0], [300, 200]], f.desc, 3.0) == 2


# ------------------------------------------------------------------ brute force and orientation
def test_match_descriptors_recovers_a_permutation():
    rng = np.random.default_rng(2)
    d1 = rng.integers(0, 256, (300, 32), dtype=np.uint8)
    perm = rng.permutation(300)
    d2 = d1[perm].copy()
    d2[:, 5] ^= 0x21  # 2 bits of noise
    d2 = np.vstack([d2, rng.integers(0, 256, (200, 32), dtype=np.uint8)])  # distractors
    i1, i2 = match_descriptors(d1, d2)
    assert len(i1) == 300 and np.all(np.diff(i1) > 0)
    assert np.array_equal(perm[i2], i1)
    # a descriptor present twice in desc2 fails the ratio test
    d3 = np.vstack([d1[:1], d1[:1], d1[1:50]])
    i1, i2 = match_descriptors(d1[:50], d3)
    assert 0 not in i1 and len(i1) == 49
    # threshold
    assert len(match_descriptors(d1[:10], d2[:0])[0]) == 0
    far = d1[:10] ^ np.uint8(0xFF)
    assert len(match_descriptors(d1[:10], far, max_dist=TH_LOW)[0]) == 0
    assert TH_LOW < TH_HIGH


def test_match_descriptors_on_frames_with_rotation_check(pair):
    camera, _, data = pair
    f0, f3 = data[0][0], data[3][0]
    (i0, i3), t_min, _ = timed(lambda: match_descriptors(f0.desc, f3.desc), n=5)
    keep = rotation_consistency(f0.angle[i0], f3.angle[i3])
    i0, i3 = i0[keep], i3[keep]
    uv3, _, vis, _ = _project_0_to_3(camera, data)
    ok = vis[i0]
    err = np.linalg.norm(f3.uv_und[i3[ok]] - uv3[i0[ok]], axis=1)
    print(f"\nmatch_descriptors 1000 x 1000: {len(i0)} matches, {np.mean(err < 3):.0%} true; min {t_min:.2f} ms")
    assert len(i0) > 150 and np.mean(err < 3.0) > 0.9


def test_rotation_consistency_rejects_planted_matches():
    rng = np.random.default_rng(3)
    a1 = rng.uniform(0, 360, 300)
    good = np.mod(a1 - 7.0 + rng.normal(0, 2.0, 300), 360)  # the image turned by ~7 degrees
    wrong = rng.uniform(0, 360, 60)
    a2 = np.concatenate([good, wrong])
    keep = rotation_consistency(np.concatenate([a1, rng.uniform(0, 360, 60)]), a2)
    assert keep[:300].mean() > 0.97
    assert keep[300:].mean() < 0.25
    assert rotation_consistency(np.zeros(0), np.zeros(0)).shape == (0,)


# ------------------------------------------------------------------ epipolar search
def test_fundamental_from_pose():
    rng = np.random.default_rng(4)
    K = np.array([[500.0, 0, 320], [0, 510, 240], [0, 0, 1]])
    from slam.geometry.se3 import make_pose

    ang = rng.normal(0, 0.1, 3)
    R = cv2.Rodrigues(ang)[0]
    T21 = make_pose(R, [0.3, -0.1, 0.05])
    X1 = rng.uniform([-2, -2, 3], [2, 2, 8], (50, 3))
    X2 = X1 @ R.T + T21[:3, 3]
    x1 = np.c_[(X1[:, :2] / X1[:, 2:]) @ K[:2, :2].T + K[:2, 2], np.ones(50)]
    x2 = np.c_[(X2[:, :2] / X2[:, 2:]) @ K[:2, :2].T + K[:2, 2], np.ones(50)]
    F = fundamental_from_pose(T21, K)
    lines = x1 @ F.T
    d = np.abs(np.sum(lines * x2, axis=1)) / np.hypot(lines[:, 0], lines[:, 1])
    assert d.max() < 1e-6


def test_search_epipolar_finds_true_correspondences(pair):
    camera, ex, data = pair
    f0, f3 = data[0][0], data[3][0]
    uv3, _, vis, T30 = _project_0_to_3(camera, data)
    free0 = np.arange(0, len(f0))
    free3 = np.arange(0, len(f3))
    (i0, i3), t_min, t_med = timed(
        lambda: search_epipolar(f0, f3, T30, camera.K, free0, free3, ex.level_sigma2), n=5)
    print(f"\nsearch_epipolar {len(f0)} x {len(f3)}: {len(i0)} pairs, min {t_min:.2f} ms, median {t_med:.2f} ms")
    assert len(i0) > 100
    assert len(np.unique(i3)) == len(i3)
    # every pair is within the chi-square band of its epipolar line
    F = fundamental_from_pose(T30, camera.K)
    lines = np.c_[f0.uv_und[i0], np.ones(len(i0))] @ F.T
    d = np.abs(np.sum(lines * np.c_[f3.uv_und[i3], np.ones(len(i3))], axis=1)) / np.hypot(lines[:, 0], lines[:, 1])
    assert np.all(d**2 < 3.84 * ex.level_sigma2[f3.octave[i3]] + 1e-6)
    # and the pairs are the same scene points (checked with the true depth)
    ok = vis[i0]
    err = np.linalg.norm(f3.uv_und[i3[ok]] - uv3[i0[ok]], axis=1)
    assert ok.sum() > 80 and np.mean(err < 3.0) > 0.9
    # the fundamental matrix gives the same answer; candidate subsets are respected
    j0, j3 = search_epipolar(f0, f3, F, None, free0, free3, ex.level_sigma2)
    assert np.array_equal(j0, i0) and np.array_equal(j3, i3)
    sub0, sub3 = free0[::2], free3[1::2]
    k0, k3 = search_epipolar(f0, f3, T30, camera.K, sub0, sub3, ex.level_sigma2)
    assert np.all(np.isin(k0, sub0)) and np.all(np.isin(k3, sub3))
    assert len(search_epipolar(f0, f3, T30, camera.K, free0[:0], free3)[0]) == 0


def _search_epipolar_plain(f1, f2, T21, K, idx1, idx2, sigma2, *, max_dist=TH_LOW, ratio=0.6, chi2=3.84,
                           scale_factor=1.2, epipole_px=10.0):
    """search_epipolar written plainly: the whole distance matrix (in float32, as documented there), then a loop."""
    F = fundamental_from_pose(T21, K)
    ep = K @ T21[:3, 3]
    e2 = ep[:2] / ep[2]
    uv2, oct2 = f2.uv_und[idx2], f2.octave[idx2]
    lines = np.c_[f1.uv_und[idx1], np.ones(len(idx1))] @ F.T
    lines /= np.hypot(lines[:, 0], lines[:, 1])[:, None]
    dline = lines[:, :2].astype(np.float32) @ uv2.T.astype(np.float32) + lines[:, 2:].astype(np.float32)
    near_line = np.abs(dline) < np.sqrt(chi2 * sigma2[oct2]).astype(np.float32)
    # a pair of keypoints without depth needs keypoint 2 away from the epipole
    mono1, mono2 = f1.u_right[idx1] < 0, f2.u_right[idx2] < 0
    near_epipole = np.sum((uv2 - e2) ** 2, axis=1) < epipole_px**2 * scale_factor**oct2
    allowed = near_line & ~(mono1[:, None] & (mono2 & near_epipole)[None, :])
    H = hamming_matrix(f1.desc[idx1], f2.desc[idx2])
    taken = {}  # keypoint 2 -> (distance, keypoint 1): the smallest distance, the first keypoint 1 on a tie
    for i in range(len(idx1)):
        js = np.flatnonzero(allowed[i])
        if len(js) == 0:
            continue
        js = js[np.argsort(H[i, js], kind="stable")]  # by distance, then index
        d1, d2 = H[i, js[0]], (H[i, js[1]] if len(js) > 1 else np.inf)
        if d1 <= max_dist and d1 < ratio * d2 and (js[0] not in taken or d1 < taken[js[0]][0]):
            taken[js[0]] = (d1, i)
    i1 = np.array([idx1[i] for _, i in taken.values()], int)
    i2 = np.array([idx2[j] for j in taken], int)
    keep = rotation_consistency(f1.angle[i1], f2.angle[i2])
    i1, i2 = i1[keep], i2[keep]
    o = np.argsort(i1)
    return i1[o], i2[o]


def _assert_search_epipolar_as_plain(f1, f2, T21, K, sigma2, rng):
    """search_epipolar and the plain version agree on random candidate subsets, with and without depths."""
    n = []
    for variant in range(4):
        idx1 = np.sort(rng.choice(len(f1), int(rng.uniform(0.6, 0.8) * len(f1)), replace=False))
        idx2 = np.sort(rng.choice(len(f2), int(rng.uniform(0.6, 0.8) * len(f2)), replace=False))
        g1, g2, kw = f1, f2, {}
        if variant == 1:  # some keypoints with a depth (stereo)
            g1, g2 = f1.subset(np.arange(len(f1))), f2.subset(np.arange(len(f2)))
            g1.u_right = np.where(rng.random(len(f1)) < 0.5, f1.uv_und[:, 0] - 10.0, -1.0)
            g2.u_right = np.where(rng.random(len(f2)) < 0.5, f2.uv_und[:, 0] - 10.0, -1.0)
        elif variant == 2:  # candidates in any order, looser thresholds
            idx1, idx2 = rng.permutation(idx1), rng.permutation(idx2)
            kw = dict(chi2=5.99, ratio=0.8, max_dist=TH_HIGH)
        elif variant == 3:  # small subsets
            idx1, idx2 = idx1[:3], idx2[::40]
        i1, i2 = search_epipolar(g1, g2, T21, K, idx1, idx2, sigma2, **kw)
        j1, j2 = _search_epipolar_plain(g1, g2, T21, K, idx1, idx2, sigma2, **kw)
        assert np.array_equal(i1, j1) and np.array_equal(i2, j2)
        n.append(len(i1))
    return n


def test_search_epipolar_as_plain_version_synthetic(pair):
    camera, ex, data = pair
    (f0, _, T0), (f3, _, T3) = data[0], data[3]
    rng = np.random.default_rng(6)
    n = _assert_search_epipolar_as_plain(f0, f3, np.linalg.inv(T3) @ T0, camera.K, ex.level_sigma2, rng)
    n += _assert_search_epipolar_as_plain(f3, f0, np.linalg.inv(T0) @ T3, camera.K, ex.level_sigma2, rng)
    print(f"\nsearch_epipolar as its plain version, synthetic pair: {n} matches")
    assert min(n[:3] + n[4:7]) > 50


def test_search_epipolar_as_plain_version_kitti(kitti_path):
    """Real features on KITTI frames 2 to 10 apart (forward motion: the epipole is in the image)."""
    from slam.datasets import open_sequence

    seq = open_sequence(kitti_path)
    ex = FeatureExtractor(FeatureConfig(), seq.camera)
    rng = np.random.default_rng(7)
    feats = {}
    n = []
    for i, j in ((0, 2), (30, 36), (80, 70)):
        for k in (i, j):
            if k not in feats:
                feats[k] = ex.extract(seq[k].image)
        T_c2_c1 = np.linalg.inv(seq.groundtruth_pose(j)) @ seq.groundtruth_pose(i)
        n += _assert_search_epipolar_as_plain(feats[i], feats[j], T_c2_c1, seq.camera.K, ex.level_sigma2, rng)
    print(f"\nsearch_epipolar as its plain version, KITTI pairs: {n} matches")
    assert min(n[:3] + n[4:7] + n[8:11]) > 10
