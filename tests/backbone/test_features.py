"""ORB extraction, grid area queries, RGB-D depth and stereo matching on rendered synthetic frames."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from slam.backbone.frontend import feature_kernel
from slam.backbone.frontend.features import (
    FeatureConfig,
    FeatureExtractor,
    Features,
    image_to_level,
    level_sizes,
    level_to_image,
    set_depth_from_map,
)
from slam.backbone.frontend.features import _detect
from slam.backbone.frontend.stereo import match_stereo
from slam.geometry.camera import PinholeCamera

from tests.conftest import timed


@pytest.fixture(scope="module")
def synth(synth640):
    """Frame 0 of a 640x480 synthetic sequence: noisy left/right images and exact depth."""
    seq, clean = synth640
    f = seq.render_frame(0)
    gray = cv2.cvtColor(f.rgb, cv2.COLOR_RGB2GRAY)
    right = cv2.cvtColor(f.right, cv2.COLOR_RGB2GRAY)
    depth = clean.render_frame(0, with_right=False).depth
    return seq.camera, gray, right, depth, seq.cfg.stereo_baseline



def _cells(uv, w=640, h=480, nx=8, ny=6):
    c = np.zeros((ny, nx), int)
    np.add.at(c, (np.clip(uv[:, 1] * ny // h, 0, ny - 1).astype(int), np.clip(uv[:, 0] * nx // w, 0, nx - 1).astype(int)), 1)
    return c


# ------------------------------------------------------------------ extraction
def test_extract_count_spread_and_layout(synth):
    cam, gray, *_ = synth
    cfg = FeatureConfig()
    ex = FeatureExtractor(cfg, cam)
    f, t_min, t_med = timed(lambda: ex.extract(gray))
    print(f"\nextract 640x480, {len(f)} keypoints: min {t_min:.2f} ms, median {t_med:.2f} ms (threshold {ex.threshold})")
    n = len(f)
    assert 0.95 * cfg.n_features <= n <= cfg.n_features
    assert f.uv.shape == (n, 2) and f.uv.dtype == np.float64
    assert f.desc.shape == (n, 32) and f.desc.dtype == np.uint8 and f.desc.flags.c_contiguous
    assert f.octave.dtype == np.int32 and f.angle.dtype == np.float32
    assert np.all(f.depth == 0) and np.all(f.u_right == -1)
    assert np.allclose(f.uv_und, f.uv)  # no distortion
    assert cam.in_image(f.uv).all()
    # spread: (nearly) every cell of an 8 x 6 grid holds keypoints; no cell hoards them
    cells = _cells(f.uv)
    assert np.count_nonzero(cells) >= 46
    assert cells.max() < 0.08 * n
    # the pyramid is used with ORB-SLAM's geometric split over levels
    counts = np.bincount(f.octave, minlength=cfg.n_levels)
    assert len(counts) == cfg.n_levels
    assert np.allclose(counts, ex.quotas, rtol=0.1, atol=3)
    assert np.allclose(ex.scale_factors, 1.2 ** np.arange(8))
    assert np.allclose(ex.level_sigma2, 1.2 ** (2 * np.arange(8)))
    assert np.allclose(ex.inv_level_sigma2 * ex.level_sigma2, 1.0)


def test_keypoints_at_coarse_levels_sit_on_pixel_centres(synth):
    """Rotating the image by 180 degrees must move every keypoint to (W-1-u, H-1-v) at each level.

    This holds only if level coordinates are mapped to the image with the pyramid's pixel-centre
    convention; cv2.ORB's own ``x_l * scale^l`` is off by up to ~2 px at the coarsest level.
    """
    cam, gray, *_ = synth
    ex = FeatureExtractor(FeatureConfig(fallback_cell_px=0, adaptive_threshold=False), cam)
    a = ex.extract(gray)
    b = ex.extract(np.ascontiguousarray(gray[::-1, ::-1]))
    b_back = np.array([639.0, 479.0]) - b.uv
    for lv in (3, 5, 7):
        pa, pb = a.uv[a.octave == lv], b_back[b.octave == lv]
        d = np.linalg.norm(pa[:, None] - pb[None], axis=2).min(axis=1)
        close = d[d < 3.0]
        assert len(close) > 0.5 * len(pa)
        assert np.median(close) < 0.05, (lv, np.median(close))


def test_level_coordinate_round_trip():
    sizes = level_sizes(640, 480, 1.2, 8)
    assert tuple(sizes[0]) == (640, 480) and tuple(sizes[7]) == (179, 134)
    rng = np.random.default_rng(1)
    uv = rng.uniform(0, 100, (50, 2))
    oc = rng.integers(0, 8, 50)
    assert np.allclose(image_to_level(level_to_image(uv, oc, sizes, 640, 480), oc, sizes, 640, 480), uv)
    assert np.allclose(level_to_image(uv, np.zeros(50, int), sizes, 640, 480), uv)


def test_adaptive_threshold_keeps_the_same_keypoints(synth):
    cam, gray, *_ = synth
    fixed = FeatureExtractor(FeatureConfig(adaptive_threshold=False), cam).extract(gray)
    ex = FeatureExtractor(FeatureConfig(adaptive_threshold=True), cam)
    ex.extract(gray)
    assert ex.threshold > 20  # rich texture: raised for the next frame
    adapted = ex.extract(gray)
    same = np.linalg.norm(fixed.uv[:, None] - adapted.uv[None], axis=2).min(axis=1) < 1e-6
    assert same.mean() > 0.95


def test_fallback_finds_corners_in_low_contrast_cells(synth):
    cam, gray, *_ = synth
    img = gray.astype(np.float32)
    img[:, 320:] = 128 + (img[:, 320:] - 128) * 0.12  # right half: contrast too low for FAST at 20
    img = np.clip(img, 0, 255).astype(np.uint8)
    without = FeatureExtractor(FeatureConfig(fallback_cell_px=0), cam).extract(img)
    with_fb = FeatureExtractor(FeatureConfig(fallback_cell_px=80), cam).extract(img)
    right_cells = lambda f: np.count_nonzero(_cells(f.uv)[:, 4:])
    assert right_cells(with_fb) > right_cells(without)
    assert right_cells(with_fb) >= 20
    assert len(with_fb) >= 0.95 * 1000


def _distribute_plain(x, y, resp, octv, inv_scale, quotas, n_features, cell, nx, ny):
    """The grid selection written plainly: cells per level, rank by score in each cell, quotas, fill-up."""
    n = len(x)
    if n <= n_features:
        return np.arange(n)
    score = [int(np.clip(np.rint(r), 0, 255)) for r in resp]
    cells = {}
    for i in range(n):
        o = int(octv[i])
        cx = min(max(int(float(x[i]) * inv_scale[o] // cell), 0), nx - 1)
        cy = min(max(int(float(y[i]) * inv_scale[o] // cell), 0), ny - 1)
        cells.setdefault((o, cy, cx), []).append(i)
    rank = {}
    for members in cells.values():
        for r, i in enumerate(sorted(members, key=lambda i: (-score[i], i))):
            rank[i] = r
    kept, rest = [], []
    for lv, quota in enumerate(quotas):
        cand = sorted((i for i in range(n) if octv[i] == lv), key=lambda i: (rank[i], -score[i], i))
        kept += cand[:quota]
        rest += cand[quota:]
    missing = n_features - len(kept)
    if missing > 0:  # levels short of corners: the best-spread of the rest
        kept += sorted(rest, key=lambda i: (rank[i], -score[i], octv[i], i))[:missing]
    return np.sort(np.array(kept, np.int64))


def _assert_selection_as_plain(ex, uv, resp, octv, w, h):
    x, y = np.ascontiguousarray(uv[:, 0], np.float32), np.ascontiguousarray(uv[:, 1], np.float32)
    resp, octv = np.asarray(resp, np.float32), np.asarray(octv, np.int64)
    keep = ex._distribute(x, y, resp, octv, w, h)
    cell = float(ex.cfg.grid_cell_px)
    plain = _distribute_plain(x, y, resp, octv, ex.inv_scale_factors, ex.quotas, ex.cfg.n_features, cell,
                              int(np.ceil(w / cell)) + 1, int(np.ceil(h / cell)) + 1)
    np.testing.assert_array_equal(keep, plain)
    # placement: the compiled conversion is level_to_image's, to the bit
    sizes = level_sizes(w, h, ex.scale_factor, ex.n_levels)
    ratio = np.array([w, h], np.float64) / sizes
    placed = feature_kernel.place(x, y, octv, keep, ex._orb_scales, ratio)
    ref = level_to_image(uv[keep].astype(np.float64) / ex._orb_scales[octv[keep]][:, None], octv[keep], sizes, w, h)
    np.testing.assert_array_equal(placed, ref)
    return len(keep)


def test_grid_selection_as_plain_rule_on_real_candidates(synth, kitti_path):
    from slam.datasets import open_sequence

    cam, gray, *_ = synth
    seq = open_sequence(kitti_path)
    for camera, image in ((cam, gray), (seq.camera, seq[0].image), (seq.camera, seq[60].image)):
        image = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = image.shape
        for cfg in (FeatureConfig(), FeatureConfig(n_features=500, grid_cell_px=30), FeatureConfig(n_levels=6)):
            ex = FeatureExtractor(cfg, camera)
            uv, resp, octv, _, _ = _detect(ex._orb(ex.n_candidates, 20), image)
            assert len(uv) > cfg.n_features
            assert _assert_selection_as_plain(ex, uv, resp, octv, w, h) == cfg.n_features


def test_grid_selection_as_plain_rule_on_random_candidates(synth):
    """Ties everywhere (few distinct scores, repeated positions), levels short of corners, few candidates."""
    cam = synth[0]
    ex = FeatureExtractor(FeatureConfig(n_features=300), cam)
    rng = np.random.default_rng(3)
    for trial in range(12):
        n = int(rng.integers(200, 900))
        uv = np.column_stack([rng.uniform(-2, 642, n), rng.uniform(-2, 482, n)]).astype(np.float32)
        uv[: n // 5] = uv[n // 5: 2 * (n // 5)]  # keypoints on the same pixels
        resp = rng.integers(18, 18 + [1, 3, 40][trial % 3], n).astype(np.float32)
        octv = np.minimum(rng.geometric(0.25 + 0.1 * (trial % 4), n) - 1, ex.n_levels - 1)
        k = _assert_selection_as_plain(ex, uv, resp, octv, 640, 480)
        assert k == min(n, 300)


def test_fallback_on_crops_equals_whole_image(synth, kitti_path):
    """The fallback pass on crops around empty cells finds what cv2.ORB finds on the whole image with a mask."""
    from slam.datasets import open_sequence

    cam, gray, *_ = synth
    low = gray.astype(np.float32)
    low[:, 320:] = 128 + (low[:, 320:] - 128) * 0.12  # right half: few corners, many ties
    low = np.clip(low, 0, 255).astype(np.uint8)
    seq = open_sequence(kitti_path)
    rng = np.random.default_rng(4)
    found = []
    for camera, image in ((cam, gray), (cam, low), (seq.camera, seq[30].image)):
        image = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        h, w = image.shape
        ex = FeatureExtractor(FeatureConfig(), camera)
        ny, nx = -(-h // 80), -(-w // 80)
        for p in (0.05, 0.15, 0.4):
            empty = rng.random((ny, nx)) < p
            empty[0, -1] = empty[-1, 0] = True  # cells at the image corners (crop clipped by the image)
            n = max(round(ex._orb_quotas[0] * empty.mean()), 16)
            a = ex.fallback_corners(image, empty, n, crops=True)
            b = ex.fallback_corners(image, empty, n, crops=False)
            for u, v in zip(a, b):
                np.testing.assert_array_equal(u, v)
            found.append(len(a[0]))
    assert min(found[3:6]) >= 16  # the low-contrast image: the n best (and ties) in every trial
    assert sum(found) > 200


def test_undistorted_coordinates_with_distortion(synth):
    _, gray, *_ = synth
    cam = PinholeCamera(640, 480, 517.3, 516.5, 318.6, 255.3, (0.2624, -0.9531, -0.0054, 0.0026, 1.1633))
    f = FeatureExtractor(FeatureConfig(), cam).extract(gray)
    assert np.abs(f.uv_und - cam.undistort_points(f.uv)).max() < 2e-3
    assert np.abs(f.uv_und - f.uv).max() > 1.0


def test_extract_accepts_rgb_and_blank_images(synth):
    cam, gray, *_ = synth
    ex = FeatureExtractor(FeatureConfig(), cam)
    rgb = np.repeat(gray[:, :, None], 3, axis=2)
    assert len(ex.extract(rgb)) > 900
    blank = ex.extract(np.full((480, 640), 90, np.uint8))
    assert len(blank) == 0 and blank.desc.shape == (0, 32)
    assert len(blank.in_area(100.0, 100.0, 10.0)) == 0


# ------------------------------------------------------------------ area queries
def _random_features(n=3000, seed=0):
    rng = np.random.default_rng(seed)
    uv = rng.uniform([-5, -5], [645, 485], (n, 2))
    f = Features(uv, uv.copy(), rng.integers(0, 8, n).astype(np.int32), np.zeros(n, np.float32),
                 rng.integers(0, 256, (n, 32), dtype=np.uint8))
    f.build_grid(640, 480)
    return f


def test_in_area_matches_brute_force():
    f = _random_features()
    rng = np.random.default_rng(1)
    for _ in range(200):
        u, v = rng.uniform(-20, 660), rng.uniform(-20, 500)
        r = rng.uniform(0.5, 40)
        lo, hi = (int(x) for x in np.sort(rng.integers(-1, 8, 2)))
        got = f.in_area(u, v, r, lo, hi)
        ok = (np.abs(f.uv_und[:, 0] - u) < r) & (np.abs(f.uv_und[:, 1] - v) < r)
        if lo >= 0:
            ok &= f.octave >= lo
        if hi >= 0:
            ok &= f.octave <= hi
        assert np.array_equal(got, np.nonzero(ok)[0])


def test_in_areas_batch_equals_single_queries():
    f = _random_features(seed=2)
    rng = np.random.default_rng(3)
    m = 300
    u, v, r = rng.uniform(0, 640, m), rng.uniform(0, 480, m), rng.uniform(1, 20, m)
    lo = rng.integers(-1, 4, m)
    hi = np.where(rng.random(m) < 0.5, -1, lo + 2)
    q, k = f.in_areas(u, v, r, lo, hi)
    assert np.all(np.diff(q) >= 0)
    for i in range(0, m, 7):
        assert np.array_equal(np.sort(k[q == i]), f.in_area(u[i], v[i], r[i], int(lo[i]), int(hi[i])))
    # invalid queries give nothing; the grid builds itself if nobody built it
    g = Features(f.uv, f.uv_und, f.octave, f.angle, f.desc)
    q2, _ = g.in_areas(np.array([np.nan, 100.0]), np.array([10.0, 100.0]), np.array([5.0, 0.0]))
    assert len(q2) == 0



def test_band_grid_band_start():
    """``band_start[b]`` is the first sorted key of band b (the compiled search by projection reads one band)."""
    for seed, band_px in ((4, 8.0), (5, 2.0), (6, 30.0)):
        f = _random_features(n=500, seed=seed)
        f.build_grid(640, 480, band_px)
        g = f._grid
        band = np.clip(np.floor(f.uv_und[g.order, 1] / band_px), 0, g.n_bands - 1)
        assert len(g.band_start) == g.n_bands + 1 and g.band_start.dtype == np.int64
        assert np.array_equal(g.band_start, np.searchsorted(band, np.arange(g.n_bands + 1)))


# ------------------------------------------------------------------ RGB-D
def test_set_depth_from_map():
    uv = np.array([[10.4, 20.6], [30.0, 5.0], [-3.0, 4.0], [50.2, 60.0], [639.4, 479.4]])
    und = uv + 0.25
    f = Features(uv, und, np.zeros(5, np.int32), np.zeros(5, np.float32), np.zeros((5, 32), np.uint8))
    depth = np.zeros((480, 640), np.float32)
    depth[21, 10] = 2.0
    depth[5, 30] = 0.0  # invalid
    depth[60, 50] = np.nan
    depth[479, 639] = 4.0
    ok = set_depth_from_map(f, depth, bf=40.0)
    assert ok.tolist() == [True, False, False, False, True]
    assert np.allclose(f.depth, [2.0, 0, 0, 0, 4.0])
    assert np.allclose(f.u_right, [und[0, 0] - 20.0, -1, -1, -1, und[4, 0] - 10.0])


# ------------------------------------------------------------------ stereo
def test_match_stereo_depth_against_ground_truth(synth):
    cam, gray, right_gray, depth, baseline = synth
    bf = cam.fx * baseline
    left = FeatureExtractor(FeatureConfig(), cam).extract(gray)
    right = FeatureExtractor(FeatureConfig(), cam).extract(right_gray)
    for images in (False, True):
        args = (gray, right_gray) if images else (None, None)
        il, t_min, t_med = timed(lambda args=args: match_stereo(left, right, cam, bf, *args))
        gt = depth[np.rint(left.uv[il, 1]).astype(int), np.rint(left.uv[il, 0]).astype(int)]
        rel = np.abs(left.depth[il] - gt) / gt
        print(f"\nmatch_stereo (sub-pixel: {images}): {len(il)} depths, median rel. error {np.median(rel):.4f}, "
              f"min {t_min:.2f} ms, median {t_med:.2f} ms")
        assert len(il) > 0.5 * len(left)
        assert np.all(left.depth[il] > 0) and np.all(left.u_right[il] < left.uv_und[il, 0])
        assert np.allclose(left.u_right[il], left.uv_und[il, 0] - bf / left.depth[il])
        others = np.setdiff1d(np.arange(len(left)), il)
        assert np.all(left.depth[others] == 0) and np.all(left.u_right[others] == -1)
        if images:
            assert np.median(rel) < 0.01
            assert np.mean(rel > 0.05) < 0.02
        else:
            assert np.median(rel) < 0.05
            assert np.mean(rel > 0.25) < 0.05


def test_match_stereo_without_right_keypoints(synth):
    cam, gray, *_ = synth
    left = FeatureExtractor(FeatureConfig(), cam).extract(gray)
    assert len(match_stereo(left, Features.empty(), cam, 50.0)) == 0
    assert np.all(left.depth == 0) and np.all(left.u_right == -1)
