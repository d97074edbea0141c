"""ORB features of one image, spread over the image by a grid, with optional depth per keypoint.

Pixel coordinates ``uv`` are as detected (distorted image); ``uv_und`` are the
same points in the ideal pinhole camera with the same K (what the geometry
uses). ``u_right`` follows ORB-SLAM2: the x coordinate of the keypoint in a
(virtual, for RGB-D) rectified right image, ``u - bf / depth``; -1 where unknown.

Extraction (:class:`FeatureExtractor`) runs ``cv2.ORB`` once on an image pyramid
for about twice the keypoints wanted, then keeps the wanted number per level,
spread over a grid of cells (best FAST score of each cell first), as ORB-SLAM's
distribution does (compiled: :mod:`slam.backbone.frontend.feature_kernel`). Cells of the
image left without any corner get a second pass at a lower FAST threshold on the finest
level, on crops around those cells (same corners as on the whole image). Area queries (:meth:`Features.in_area`,
:meth:`Features.in_areas`) use a grid of horizontal bands sorted by ``u``.
Depth from an RGB-D depth map fills ``depth`` and ``u_right`` here; stereo matching
(:mod:`slam.backbone.frontend.stereo`) does the same for a rectified pair.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import cv2
import numpy as np

from slam.backbone.frontend import feature_kernel
from slam.geometry.camera import PinholeCamera

log = logging.getLogger(__name__)


@dataclass
class Features:
    uv: np.ndarray  # (N, 2) float64, distorted pixels
    uv_und: np.ndarray  # (N, 2) float64, undistorted pixels
    octave: np.ndarray  # (N,) int32 pyramid level
    angle: np.ndarray  # (N,) float32 degrees (ORB orientation)
    desc: np.ndarray  # (N, 32) uint8 ORB descriptors
    depth: np.ndarray = field(default=None)  # (N,) float64 metres, 0 = unknown
    u_right: np.ndarray = field(default=None)  # (N,) float64, -1 = unknown
    response: np.ndarray = field(default=None)  # (N,) float32 FAST score (0 where unknown)
    _grid: BandGrid | None = field(default=None, repr=False, compare=False)  # built by build_grid

    def __post_init__(self) -> None:
        n = len(self.uv)
        if self.depth is None:
            self.depth = np.zeros(n)
        if self.u_right is None:
            self.u_right = np.full(n, -1.0)
        if self.response is None:
            self.response = np.zeros(n, np.float32)

    def __len__(self) -> int:
        return int(self.uv.shape[0])

    @classmethod
    def empty(cls) -> Features:
        return cls(np.zeros((0, 2)), np.zeros((0, 2)), np.zeros(0, np.int32), np.zeros(0, np.float32),
                   np.zeros((0, 32), np.uint8))

    def subset(self, idx: np.ndarray) -> Features:
        """The features ``idx`` (indices or mask) as a new :class:`Features` (no grid)."""
        return Features(self.uv[idx], self.uv_und[idx], self.octave[idx], self.angle[idx], self.desc[idx],
                        self.depth[idx], self.u_right[idx], self.response[idx])

    # ------------------------------------------------------------ area search
    def build_grid(self, width: int, height: int, band_px: float = 8.0) -> None:
        """Index ``uv_und`` for area queries in an image of ``width`` x ``height`` pixels."""
        self._grid = BandGrid(self.uv_und, width, height, band_px)

    def _ensure_grid(self) -> BandGrid:
        if self._grid is None or self._grid.n != len(self):
            # no size given: cover the keypoints themselves
            hi = np.ceil(self.uv_und.max(axis=0)) + 1 if len(self) else np.ones(2)
            self.build_grid(int(max(hi[0], 1)), int(max(hi[1], 1)))
        return self._grid

    def in_area(self, u: float, v: float, r: float, min_level: int = -1, max_level: int = -1) -> np.ndarray:
        """Indices (ascending) of keypoints with ``|u_und - u| < r`` and ``|v_und - v| < r``.

        ``min_level`` / ``max_level`` restrict the octave when >= 0 (as ORB-SLAM's GetFeaturesInArea).
        """
        _, k = self.in_areas(np.array([u], float), np.array([v], float), np.array([r], float), min_level, max_level)
        return np.sort(k)

    def in_areas(self, u: np.ndarray, v: np.ndarray, r: np.ndarray | float,
                 min_level: np.ndarray | int = -1, max_level: np.ndarray | int = -1) -> tuple[np.ndarray, np.ndarray]:
        """Batch :meth:`in_area`: all pairs ``(query index, keypoint index)``, grouped by query.

        ``r``, ``min_level`` and ``max_level`` are scalars or per-query arrays (levels < 0: no bound).
        """
        grid = self._ensure_grid()
        u = np.asarray(u, np.float64).ravel()
        v = np.asarray(v, np.float64).ravel()
        r = np.broadcast_to(np.asarray(r, np.float64), u.shape)
        q, k = grid.query(u - r, u + r, v - r, v + r)
        if len(q) == 0:
            return q, k
        keep = (np.abs(self.uv_und[k, 0] - u[q]) < r[q]) & (np.abs(self.uv_und[k, 1] - v[q]) < r[q])
        lo = np.broadcast_to(np.asarray(min_level), u.shape)
        hi = np.broadcast_to(np.asarray(max_level), u.shape)
        if np.any(lo >= 0):
            keep &= self.octave[k] >= lo[q]  # lo < 0 passes since octave >= 0
        if np.any(hi >= 0):
            keep &= (hi[q] < 0) | (self.octave[k] <= hi[q])
        return q[keep], k[keep]


class BandGrid:
    """Keypoints sorted by (horizontal band of ``band_px`` rows, u): an area query is a few ``searchsorted``."""

    def __init__(self, uv: np.ndarray, width: int, height: int, band_px: float):
        self.n = len(uv)
        self.band_px = float(band_px)
        self.n_bands = max(1, int(np.ceil(height / band_px)))
        # u is clipped to [u_lo, u_hi] inside the key; clipping is monotone, so no point is missed
        self.u_lo, self.u_hi = -float(width), 2.0 * width
        self.stride = 4.0 * width + 8.0
        band = self._band(uv[:, 1])
        key = band * self.stride + (np.clip(uv[:, 0], self.u_lo, self.u_hi) - self.u_lo)
        self.order = np.argsort(key, kind="stable")
        self.keys = key[self.order]
        # first key of each band (and the end): keys of band b lie in [b * stride, b * stride + 3 * width]
        self.band_start = np.searchsorted(self.keys, np.arange(self.n_bands + 1) * self.stride).astype(np.int64)

    def _band(self, v: np.ndarray) -> np.ndarray:
        return np.clip(np.floor(v / self.band_px), 0, self.n_bands - 1)

    def query(self, u0: np.ndarray, u1: np.ndarray, v0: np.ndarray, v1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Candidate pairs (query, keypoint) for the boxes ``u0 <= u <= u1, v0 <= v <= v1``.

        Exact in u, whole bands in v: a superset that the caller filters exactly.
        """
        ok = np.isfinite(u0) & np.isfinite(u1) & np.isfinite(v0) & np.isfinite(v1) & (u1 >= u0) & (v1 >= v0)
        qi = np.nonzero(ok)[0]
        if len(qi) == 0 or self.n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        b0 = self._band(v0[qi]).astype(np.int64)
        b1 = self._band(v1[qi]).astype(np.int64)
        q, band = expand_ranges(b0, b1 + 1, qi)
        base = band * self.stride - self.u_lo
        s = np.searchsorted(self.keys, base + np.clip(u0[q], self.u_lo, self.u_hi), side="left")
        e = np.searchsorted(self.keys, base + np.clip(u1[q], self.u_lo, self.u_hi), side="right")
        q, pos = expand_ranges(s, e, q)
        return q, self.order[pos]


def expand_ranges(start: np.ndarray, end: np.ndarray, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flatten the integer ranges ``[start_i, end_i)``: returns (owner of each value, value)."""
    counts = np.maximum(end - start, 0)
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    owners = np.repeat(owner, counts)
    offs = np.repeat(start - (np.cumsum(counts) - counts), counts)
    return owners, np.arange(total, dtype=np.int64) + offs


# ======================================================================= extraction
@dataclass
class FeatureConfig:
    n_features: int = 1000  # keypoints wanted per image
    scale_factor: float = 1.2  # scale between two pyramid levels
    n_levels: int = 8  # pyramid levels
    fast_threshold: int = 20  # FAST threshold of the main pass (grey levels)
    min_fast_threshold: int = 7  # FAST threshold of the fallback pass (finest level) in cells without corners
    grid_cell_px: int = 32  # spreading cell size at each level [level pixels] (ORB-SLAM: 30)
    oversample: float = 2.0  # cv2.ORB candidates per wanted keypoint, among which the grid chooses
    edge_threshold: int = 19  # border without keypoints [level pixels] (ORB-SLAM: 19)
    fallback_cell_px: int = 80  # cells [px] checked for emptiness after the main pass (0 = no fallback pass)
    adaptive_threshold: bool = True  # raise the main threshold on rich texture (same keypoints, faster; stateful)
    max_fast_threshold: int = 60  # upper bound of the adaptive threshold


def level_quotas(n: int, scale_factor: float, n_levels: int) -> np.ndarray:
    """Keypoints per level, shrinking by ``1 / scale_factor`` from one level to the next (as ORB / ORB-SLAM)."""
    f = 1.0 / scale_factor
    per = n * (1 - f) / (1 - f**n_levels) if n_levels > 1 else float(n)
    q = np.round(per * f ** np.arange(n_levels)).astype(np.int64)
    q[-1] = max(n - int(q[:-1].sum()), 0)
    return q


def level_sizes(width: int, height: int, scale_factor: float, n_levels: int) -> np.ndarray:
    """(n_levels, 2) width and height of each pyramid level, rounded as cv2.ORB rounds them."""
    s = np.array([scale_factor**lv for lv in range(n_levels)], np.float32)
    inv = np.float32(1.0) / s
    return np.stack([np.rint(np.float32(width) * inv), np.rint(np.float32(height) * inv)], axis=1).astype(np.int64)


def level_to_image(uv_level: np.ndarray, octave: np.ndarray, sizes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Level pixel coordinates -> full-image pixel coordinates (pixel centres, as cv2.resize maps them)."""
    ratio = np.array([width, height], np.float64) / sizes[octave]
    return (uv_level + 0.5) * ratio - 0.5


def image_to_level(uv: np.ndarray, octave: np.ndarray, sizes: np.ndarray, width: int, height: int) -> np.ndarray:
    """Inverse of :func:`level_to_image`."""
    ratio = sizes[octave] / np.array([width, height], np.float64)
    return (uv + 0.5) * ratio - 0.5


class FeatureExtractor:
    """ORB keypoints and descriptors of grey images from one camera (one extractor per image stream).

    ``scale_factors[l] = scale_factor ** l``; ``level_sigma2[l] = scale_factors[l] ** 2`` is the
    variance [px^2] of a keypoint position detected at level ``l``. Keypoint positions of every
    level are in full-image pixels with the pixel-centre convention of the pyramid (cv2.ORB's own
    coordinates are off by up to ~2 px at the coarsest level). The extractor keeps one piece of
    state, the adaptive FAST threshold, so use one extractor per camera stream (left, right).
    """

    def __init__(self, cfg: FeatureConfig, camera: PinholeCamera):
        self.cfg = cfg
        self.camera = camera
        self.scale_factor = float(cfg.scale_factor)
        self.n_levels = int(cfg.n_levels)
        self.scale_factors = self.scale_factor ** np.arange(self.n_levels, dtype=np.float64)
        self.inv_scale_factors = 1.0 / self.scale_factors
        self.level_sigma2 = self.scale_factors**2
        self.inv_level_sigma2 = 1.0 / self.level_sigma2
        self.quotas = level_quotas(cfg.n_features, cfg.scale_factor, cfg.n_levels)
        self.n_candidates = round(cfg.n_features * cfg.oversample)
        # what cv2.ORB keeps per level (its own split of n_candidates, same rule)
        self._orb_quotas = level_quotas(self.n_candidates, cfg.scale_factor, cfg.n_levels)
        self.threshold = int(cfg.fast_threshold)  # main-pass threshold now in use (adaptive)
        self._orbs: dict[tuple[int, int, int], cv2.ORB] = {}
        self._orb_scales = np.array([cfg.scale_factor**lv for lv in range(self.n_levels)], np.float32).astype(np.float64)
        self._ratios: dict[tuple[int, int], np.ndarray] = {}  # (w, h) -> (n_levels, 2) image / level size
        self._crop_orb: cv2.ORB | None = None  # the fallback pass on crops

    def _orb(self, n: int, threshold: int, n_levels: int | None = None) -> cv2.ORB:
        n_levels = self.n_levels if n_levels is None else n_levels
        key = (n, threshold, n_levels)
        orb = self._orbs.get(key)
        if orb is None:
            if len(self._orbs) > 64:
                self._orbs.clear()
            c = self.cfg
            orb = cv2.ORB_create(nfeatures=n, scaleFactor=c.scale_factor, nlevels=n_levels,
                                 edgeThreshold=c.edge_threshold, firstLevel=0, WTA_K=2,
                                 scoreType=cv2.ORB_FAST_SCORE, patchSize=31, fastThreshold=threshold)
            self._orbs[key] = orb
        return orb

    def extract(self, gray: np.ndarray) -> Features:
        """Keypoints of an H x W uint8 grey image (RGB is converted), well spread, with descriptors."""
        if gray.ndim == 3:
            gray = cv2.cvtColor(gray, cv2.COLOR_RGB2GRAY)
        c = self.cfg
        h, w = gray.shape
        uv, resp, octv, ang, desc = _detect(self._orb(self.n_candidates, self.threshold), gray)
        self._adapt_threshold(resp, octv)
        if c.fallback_cell_px > 0 and c.min_fast_threshold < c.fast_threshold:
            extra = self._fallback(gray, uv)
            if extra is not None:
                uv, resp, octv, ang, desc = (np.concatenate([a, b]) for a, b in
                                             zip((uv, resp, octv, ang, desc), extra))
        x, y = np.ascontiguousarray(uv[:, 0]), np.ascontiguousarray(uv[:, 1])
        keep = self._distribute(x, y, resp, octv, w, h)
        # cv2.ORB reports level-l corners at x_l * scale^l; the pyramid's pixel centres map by
        # (x_l + 0.5) * (width / level width) - 0.5 (up to ~1.8 px apart at the coarsest level)
        ratio = self._ratios.get((w, h))
        if ratio is None:
            sizes = level_sizes(w, h, self.scale_factor, self.n_levels)
            ratio = self._ratios[(w, h)] = np.array([w, h], np.float64) / sizes
        uv_img = feature_kernel.place(x, y, octv, keep, self._orb_scales, ratio)
        feats = Features(uv_img, undistort_fast(self.camera, uv_img),
                         octv[keep].astype(np.int32), ang[keep].astype(np.float32),
                         np.ascontiguousarray(desc[keep]), response=resp[keep].astype(np.float32))
        feats.build_grid(w, h)
        return feats

    # ---------------------------------------------------------------- steps
    def _adapt_threshold(self, resp: np.ndarray, octv: np.ndarray) -> None:
        """Next frame's main threshold: just below the weakest corner kept, if every level was full.

        cv2.ORB keeps the best-scored corners of each level, so while every level still fills up,
        a higher threshold gives the same keypoints but FAST costs less (fewer corners to score).
        Any level that did not fill up returns the threshold to its base value.
        """
        c = self.cfg
        if not c.adaptive_threshold:
            return
        counts, weakest = feature_kernel.level_stats(resp, octv, self.n_levels)
        if len(resp) == 0 or np.any(counts < self._orb_quotas):
            self.threshold = int(c.fast_threshold)
            return
        t = int(0.8 * weakest.min())
        self.threshold = int(np.clip(t, c.fast_threshold, c.max_fast_threshold))

    def _fallback(self, gray: np.ndarray, uv: np.ndarray) -> tuple[np.ndarray, ...] | None:
        """Corners at the low threshold, finest level only, inside the coarse cells the main pass left empty.

        One level keeps it cheap: FAST at a low threshold over the whole pyramid would cost
        as much as the main pass. Returned in raster order (``y``, then ``x``).
        """
        c = self.cfg
        h, w = gray.shape
        cell = c.fallback_cell_px
        ny, nx = -(-h // cell), -(-w // cell)
        cx = np.clip((uv[:, 0] // cell).astype(np.int64), 0, nx - 1)
        cy = np.clip((uv[:, 1] // cell).astype(np.int64), 0, ny - 1)
        empty = np.bincount(cy * nx + cx, minlength=nx * ny).reshape(ny, nx) == 0
        if not empty.any():
            return None
        n = max(round(self._orb_quotas[0] * empty.mean()), 16)  # level 0's share of the empty area
        found = self.fallback_corners(gray, empty, n)
        return found if len(found[0]) else None

    def fallback_corners(self, gray: np.ndarray, empty: np.ndarray, n: int,
                         crops: bool | None = None) -> tuple[np.ndarray, ...]:
        """The ``n`` best corners (all tied with the n-th too) of ``cv2.ORB`` at the fallback threshold,
        finest level, inside the cells ``empty`` (ny, nx) bool of ``fallback_cell_px``; raster order.

        Equal to one ``cv2.ORB`` call on the whole image with the empty cells as mask (FAST keeps
        the best ``n`` of a level and every corner tied with the n-th), but FAST at a low threshold
        scans the whole image however small the mask (~4 ms at 640x480). With few empty cells
        (``crops`` None: when the crops cover less than half the image) FAST runs on crops around
        runs of empty cells instead, with a margin wide enough (:data:`_CROP_MARGIN`) that
        corners, orientations and descriptors inside the cells are those of the whole image.
        """
        c = self.cfg
        h, w = gray.shape
        cell = c.fallback_cell_px
        rects = _empty_runs(empty, cell, w, h)
        boxes = [(max(x0 - _CROP_MARGIN, 0), max(y0 - _CROP_MARGIN, 0), min(x1 + _CROP_MARGIN, w),
                  min(y1 + _CROP_MARGIN, h)) for x0, y0, x1, y1 in rects]
        if crops is None:
            crops = sum((x1 - x0) * (y1 - y0) for x0, y0, x1, y1 in boxes) < 0.5 * w * h
        if not crops:
            mask = np.repeat(np.repeat(empty.astype(np.uint8) * 255, cell, axis=0), cell, axis=1)[:h, :w]
            return _raster_order(_detect(self._orb(n, c.min_fast_threshold, 1), gray, np.ascontiguousarray(mask)))
        orb = self._crop_orb
        if orb is None:  # its own object: nfeatures changes per crop
            orb = self._crop_orb = cv2.ORB_create(nlevels=1, edgeThreshold=c.edge_threshold, firstLevel=0, WTA_K=2,
                                                  scoreType=cv2.ORB_FAST_SCORE, patchSize=31,
                                                  fastThreshold=c.min_fast_threshold)
        per_crop = []
        for (x0, y0, x1, y1), (bx0, by0, bx1, by1) in zip(rects, boxes):
            crop = gray[by0:by1, bx0:bx1]
            mask = np.zeros(crop.shape, np.uint8)
            mask[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0] = 255
            orb.setMaxFeatures((x1 - x0) * (y1 - y0))  # at most one corner per pixel: FAST keeps them all
            kps = orb.detect(crop, mask)
            per_crop.append((crop, (bx0, by0), kps))
        resp = np.fromiter((k.response for _, _, kps in per_crop for k in kps), np.float32)
        # FAST's choice over the whole image: the n best and every corner tied with the n-th
        least = np.sort(resp)[::-1][n - 1] if len(resp) > n else -np.inf
        parts = []
        for crop, (bx0, by0), kps in per_crop:
            kps = [k for k in kps if k.response >= least]
            if not kps:
                continue
            kps, desc = orb.compute(crop, kps)
            if desc is None or not kps:
                continue
            uv, r, o, a = _keypoint_arrays(kps)
            parts.append((uv + np.array([bx0, by0], np.float32), r, o, a, desc))
        if not parts:
            return _no_keypoints()
        return _raster_order(tuple(np.concatenate(x) for x in zip(*parts)))

    def _distribute(self, x: np.ndarray, y: np.ndarray, resp: np.ndarray, octv: np.ndarray,
                    w: int, h: int) -> np.ndarray:
        """Indices of the kept keypoints: per level its quota, taking cells round-robin, best score first.

        ``x``, ``y``: (N,) float32 as cv2.ORB reports them. The rule is
        :func:`slam.backbone.frontend.feature_kernel.distribute`'s.
        """
        cell = float(self.cfg.grid_cell_px)
        nx = int(np.ceil(w / cell)) + 1
        ny = int(np.ceil(h / cell)) + 1
        return feature_kernel.distribute(x, y, resp, octv, self.inv_scale_factors, self.quotas,
                                         int(self.cfg.n_features), cell, nx, ny)


# Crops around empty cells reach this far [px] beyond them: FAST (radius 3, non-maximum
# suppression +1), ORB's orientation patch (radius 15) and its descriptor (pattern radius < 19,
# on an image blurred 7 x 7) of a corner inside the cells then read only pixels of the crop.
_CROP_MARGIN = 32


def _empty_runs(empty: np.ndarray, cell: int, w: int, h: int) -> list[tuple[int, int, int, int]]:
    """Pixel rectangles ``(x0, y0, x1, y1)`` of the horizontal runs of empty cells, row by row."""
    rects = []
    for cy in range(empty.shape[0]):
        row = np.flatnonzero(empty[cy])
        if len(row) == 0:
            continue
        breaks = np.flatnonzero(np.diff(row) > 1)
        for s, e in zip(np.r_[0, breaks + 1], np.r_[breaks, len(row) - 1]):
            rects.append((int(row[s]) * cell, cy * cell, min((int(row[e]) + 1) * cell, w), min((cy + 1) * cell, h)))
    return rects


@functools.lru_cache(maxsize=8)
def _undistortion_table(camera: PinholeCamera) -> np.ndarray:
    """Undistorted position of every pixel centre, (H, W, 2) float64 (built once per camera, ~0.25 s)."""
    u, v = np.meshgrid(np.arange(camera.width, dtype=np.float64), np.arange(camera.height, dtype=np.float64))
    return camera.undistort_points(np.stack([u, v], axis=-1).reshape(-1, 2)).reshape(camera.height, camera.width, 2)


def undistort_fast(camera: PinholeCamera, uv: np.ndarray) -> np.ndarray:
    """``camera.undistort_points`` for points inside the image, by bilinear lookup in a per-pixel table.

    The undistortion map is smooth, so interpolating it between pixel centres errs by far less
    than a thousandth of a pixel for ordinary lenses; points outside the image are solved exactly.
    """
    uv = np.asarray(uv, np.float64)
    if not camera.has_distortion:
        return uv.copy()
    w, h = camera.width, camera.height
    if len(uv) < 64 or w < 2 or h < 2:
        return camera.undistort_points(uv)
    table = _undistortion_table(camera).reshape(-1, 2)
    x, y = uv[:, 0], uv[:, 1]
    inside = (x >= 0) & (x <= w - 1) & (y >= 0) & (y <= h - 1)
    x0 = np.clip(np.floor(x), 0, w - 2).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, h - 2).astype(np.int64)
    ax = (np.clip(x, 0, w - 1) - x0)[:, None]
    ay = (np.clip(y, 0, h - 1) - y0)[:, None]
    i = y0 * w + x0
    top = table[i] + ax * (table[i + 1] - table[i])
    bottom = table[i + w] + ax * (table[i + w + 1] - table[i + w])
    out = top + ay * (bottom - top)
    if not inside.all():
        out[~inside] = camera.undistort_points(uv[~inside])
    return out


def _detect(orb: cv2.ORB, gray: np.ndarray, mask: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """cv2.ORB keypoints as arrays: uv (N,2) float32, score, octave, angle, desc (N,32)."""
    kps, desc = orb.detectAndCompute(gray, mask)
    if len(kps) == 0 or desc is None:
        return _no_keypoints()
    return (*_keypoint_arrays(kps), desc)


def _keypoint_arrays(kps) -> tuple[np.ndarray, ...]:
    """uv (N,2) float32, score (N,) float32, octave (N,) int64 and angle (N,) float32 of cv2 keypoints."""
    n = len(kps)
    uv = cv2.KeyPoint_convert(kps).reshape(-1, 2)
    resp = np.fromiter((k.response for k in kps), np.float32, n)
    octv = np.fromiter((k.octave for k in kps), np.int64, n)
    ang = np.fromiter((k.angle for k in kps), np.float32, n)
    return uv, resp, octv, ang


def _no_keypoints() -> tuple[np.ndarray, ...]:
    return (np.zeros((0, 2), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
            np.zeros(0, np.float32), np.zeros((0, 32), np.uint8))


def _raster_order(found: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """Keypoint arrays ``(uv, ...)`` sorted by ``y``, then ``x`` (a canonical order, whatever cv2's)."""
    order = np.lexsort((found[0][:, 0], found[0][:, 1]))
    return tuple(a[order] for a in found)


# ============================================================================ depth
def set_depth_from_map(features: Features, depth: np.ndarray, bf: float) -> np.ndarray:
    """Depth per keypoint from an H x W float32 depth map [m] (0 = invalid), sampled at the rounded ``uv``.

    Fills ``features.depth`` and ``features.u_right = u_und - bf / depth`` where the depth is valid
    (ORB-SLAM2's virtual right coordinate; ``bf`` = fx * virtual baseline [px m]; ``bf <= 0``: depth
    only). Returns the mask of keypoints with a valid depth.
    """
    h, w = depth.shape[:2]
    n = len(features)
    u = np.rint(features.uv[:, 0]).astype(np.int64)
    v = np.rint(features.uv[:, 1]).astype(np.int64)
    inside = (u >= 0) & (u < w) & (v >= 0) & (v < h)
    d = np.zeros(n)
    d[inside] = depth[v[inside], u[inside]]
    ok = np.isfinite(d) & (d > 0)
    d[~ok] = 0.0
    features.depth = d
    ur = np.full(n, -1.0)
    if bf > 0:
        ur[ok] = features.uv_und[ok, 0] - bf / d[ok]
    features.u_right = ur
    return ok
