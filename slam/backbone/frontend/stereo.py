"""Stereo matching of ORB keypoints on a rectified pair: depth and right x per left keypoint (ORB-SLAM2).

Coarse match by Hamming distance inside a row band, refined to sub-pixel by
zero-mean SAD block matching at the keypoint's pyramid level.
"""

from __future__ import annotations

import cv2
import numpy as np

from slam.backbone.frontend.features import Features, BandGrid, image_to_level, level_sizes, level_to_image
from slam.backbone.frontend.matching import TH_HIGH, TH_LOW, hamming
from slam.geometry.camera import PinholeCamera


def match_stereo(left: Features, right: Features, camera: PinholeCamera, bf: float,
                 left_image: np.ndarray | None = None, right_image: np.ndarray | None = None,
                 scale_factor: float = 1.2, max_dist: float | None = None, mad_k: float = 3.0,
                 window: int = 5, search: int = 3) -> np.ndarray:
    """Depth of left keypoints from the keypoints of the right image of a rectified pair (ORB-SLAM2 style).

    For each left keypoint: right keypoints within ``2 * scale^octave_right`` rows, octave within
    +-1, disparity in ``[0, fx]`` (depth beyond one baseline); the best Hamming distance below
    ``max_dist`` (default: mean of TH_HIGH and TH_LOW) wins. With both grey images (uint8, as
    extracted) the right position is refined to sub-pixel at the keypoint's pyramid level: zero-mean
    SAD of a ``2*window+1`` square over ``+-search`` level pixels, and the equiangular (V) fit of
    the three costs around the minimum (~0.05 px; without images the disparity is only as precise
    as the keypoint positions). Matches whose cost (SAD, or Hamming without images) lies above
    ``median + mad_k * 1.4826 * MAD`` are dropped, as is disparity <= 0. Fills ``left.depth`` [m]
    and ``left.u_right`` [px]; returns the indices of the left keypoints that got a depth.
    """
    if max_dist is None:
        max_dist = (TH_HIGH + TH_LOW) / 2
    nl = len(left)
    left.depth = np.zeros(nl)
    left.u_right = np.full(nl, -1.0)
    none = np.zeros(0, np.int64)
    if nl == 0 or len(right) == 0:
        return none
    uvl, uvr = left.uv_und, right.uv_und
    max_disp = float(camera.fx)  # ORB-SLAM's maxD = bf / baseline
    # candidates: right keypoints in the box [uL - maxD, uL] x (vL +- the widest row band)
    top = int(max(left.octave.max(), right.octave.max())) + 2
    band = 2.0 * scale_factor ** np.arange(top)  # row tolerance per right octave
    r_max = band[left.octave + 1]
    grid = BandGrid(uvr, camera.width, camera.height, band_px=2.0)  # thin bands: the row windows are thin
    il, ir = grid.query(uvl[:, 0] - max_disp, uvl[:, 0], uvl[:, 1] - r_max, uvl[:, 1] + r_max)
    oct_r = right.octave[ir]
    ok = (np.abs(uvr[ir, 1] - uvl[il, 1]) <= band[oct_r]) & (np.abs(oct_r - left.octave[il]) <= 1)
    il, ir = il[ok], ir[ok]
    if len(il) == 0:
        return none
    dist = hamming(left.desc[il], right.desc[ir])
    o = np.argsort(il * 512 + dist, kind="stable")  # best right keypoint of each left keypoint
    il, ir, dist = il[o], ir[o], dist[o]
    first = np.r_[True, il[1:] != il[:-1]] & (dist < max_dist)
    il, ir = il[first], ir[first]
    cost = dist[first].astype(np.float64)
    ur = uvr[ir, 0].copy()
    if left_image is not None and right_image is not None and len(il):
        ur, cost, ok = _refine_subpixel(left_image, right_image, uvl[il], left.octave[il], ur,
                                        scale_factor, window, search)
        il, ur, cost = il[ok], ur[ok], cost[ok]
    disp = uvl[il, 0] - ur
    ok = (disp > 0) & (disp <= max_disp)
    il, ur, cost, disp = il[ok], ur[ok], cost[ok], disp[ok]
    if len(il) >= 5:
        med = np.median(cost)
        mad = np.median(np.abs(cost - med))
        ok = cost <= med + mad_k * 1.4826 * max(mad, 1e-9)
        il, ur, disp = il[ok], ur[ok], disp[ok]
    left.depth[il] = bf / disp
    left.u_right[il] = ur
    return il


def _pyramid(image: np.ndarray, sizes: np.ndarray, top: int) -> list[np.ndarray]:
    """Levels 0..top of ``image`` (grey), each resized from the previous one to ``sizes[l]`` (as cv2.ORB)."""
    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    out = [image]
    for lv in range(1, top + 1):
        out.append(cv2.resize(out[-1], (int(sizes[lv, 0]), int(sizes[lv, 1])), interpolation=cv2.INTER_LINEAR))
    return out


def _refine_subpixel(left_image: np.ndarray, right_image: np.ndarray, uvl: np.ndarray, octave: np.ndarray,
                     ur: np.ndarray, scale_factor: float, w: int, L: int) -> tuple[np.ndarray, ...]:
    """Sub-pixel right x by block matching along the row at each keypoint's pyramid level.

    Zero-mean SAD (robust to a brightness offset between the cameras) and the equiangular fit
    (the right sub-pixel model for an L1 cost; a parabola suits SSD). All levels at once: the
    pyramid is flattened into one buffer and patches are gathered by linear index. Returns refined
    u_right [px], the minimum cost per pixel, and a mask of usable results (minimum inside the range).
    """
    n = len(uvl)
    h0, w0 = left_image.shape[:2]
    n_levels = int(octave.max()) + 1
    sizes = level_sizes(w0, h0, scale_factor, n_levels)
    pl = _pyramid(left_image, sizes, n_levels - 1)
    pr = _pyramid(right_image, sizes, n_levels - 1)
    flat_l = np.concatenate([x.reshape(-1) for x in pl])
    flat_r = np.concatenate([x.reshape(-1) for x in pr])
    offset = np.r_[0, np.cumsum(sizes[:, 0] * sizes[:, 1])[:-1]]
    side, n_shift = 2 * w + 1, 2 * L + 1
    ql = np.rint(image_to_level(uvl, octave, sizes, w0, h0)).astype(np.int64)
    u0 = np.rint(image_to_level(np.c_[ur, uvl[:, 1]], octave, sizes, w0, h0)[:, 0]).astype(np.int64)
    ul, vl = ql[:, 0], ql[:, 1]
    ww, hh = sizes[octave, 0], sizes[octave, 1]
    ok = (ul - w >= 0) & (ul + w < ww) & (vl - w >= 0) & (vl + w < hh) & (u0 - L - w >= 0) & (u0 + L + w < ww)
    sel = np.nonzero(ok)[0]
    out_u, out_cost = np.zeros(n), np.zeros(n)
    m = len(sel)
    if m == 0:
        return out_u, out_cost, ok
    ul, vl, u0, ww, base = ul[sel], vl[sel], u0[sel], ww[sel], offset[octave[sel]]
    d = np.arange(-w, w + 1)
    row = (vl[:, None] + d) * ww[:, None] + base[:, None]  # (m, side) start of each patch row
    pa = flat_l[(row + ul[:, None])[:, :, None] + d].astype(np.float32)  # (m, side, side)
    pa -= pa.mean(axis=(1, 2), keepdims=True)
    rows = flat_r[(row + u0[:, None])[:, :, None] + np.arange(-w - L, w + L + 1)].astype(np.float32)
    col = rows.sum(axis=1)  # window means from column sums
    csum = np.concatenate([np.zeros((m, 1), np.float32), np.cumsum(col, axis=1)], axis=1)
    mean = (csum[:, side:] - csum[:, :-side]) / float(side * side)  # (m, 2L+1)
    costs = np.empty((m, n_shift), np.float32)
    for k in range(n_shift):  # shift of the right window: 2L+1 vectorised steps
        diff = rows[:, :, k:k + side] - pa
        diff -= mean[:, k, None, None]
        costs[:, k] = np.abs(diff, out=diff).reshape(m, -1).sum(axis=1)
    best = np.argmin(costs, axis=1)
    b = np.clip(best, 1, 2 * L - 1)
    r = np.arange(m)
    c1, c2, c3 = costs[r, b - 1], costs[r, b], costs[r, b + 1]
    rise = np.maximum(c1, c3) - c2
    delta = np.where(rise > 0, 0.5 * (c1 - c3) / np.where(rise > 0, rise, 1.0), 0.0)
    xl = u0 + (best - L) + delta  # level x of the match
    out_u[sel] = level_to_image(np.c_[xl, np.zeros(m)], octave[sel], sizes, w0, h0)[:, 0]
    out_cost[sel] = c2 / float(side * side)
    ok[sel] = (best > 0) & (best < 2 * L) & (np.abs(delta) <= 0.5)
    return out_u, out_cost, ok
