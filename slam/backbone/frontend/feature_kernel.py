"""Compiled steps of ORB extraction around ``cv2.ORB`` (numba): level statistics, grid selection, placement.

After ``cv2.ORB`` has found some 2000 candidates, :class:`slam.backbone.frontend.features.FeatureExtractor`
keeps 1000 of them spread over a grid of cells per pyramid level and moves them to
full-image pixel coordinates. In numpy that was a dozen passes over temporaries
(cell ids, three stable argsorts, a running maximum for the rank in each cell,
``np.minimum.at`` for the adaptive threshold): about 1 ms per frame with the GIL
held. The kernels below do the same in two calls without the GIL.

The rules (and tie-breaks) are those of the numpy version they replace:

* a keypoint's cell at level ``l`` is ``floor(x / s_l / cell)``, ``floor(y / s_l / cell)``
  (clipped to the grid) with ``s_l`` the level's scale; its *rank* is its position in
  its cell by FAST score (best first; equal scores: lower index first);
* each level keeps its quota, taking keypoints by (rank, score, index): every cell's
  best, then every cell's second best, ...;
* if the levels together fall short of ``n_features`` (levels without enough corners),
  the rest fill up by (rank, score, level, index);
* the kept indices are returned in ascending order.

FAST scores are integers in [0, 255]; ``weak = 255 - score`` orders them.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def level_stats(resp, octv, n_levels):
    """Keypoints per level and the weakest FAST score of each level (``inf`` for an empty level)."""
    counts = np.zeros(n_levels, np.int64)
    weakest = np.full(n_levels, np.inf)
    for i in range(resp.shape[0]):
        o = octv[i]
        if 0 <= o < n_levels:
            counts[o] += 1
            r = np.float64(resp[i])
            if r < weakest[o]:
                weakest[o] = r
    return counts, weakest


@njit(cache=True, nogil=True)
def distribute(x, y, resp, octv, inv_scale, quotas, n_features, cell, nx, ny):
    """Indices (ascending) of the keypoints kept by the grid rule of the module docstring.

    ``x``, ``y``: (N,) float32 keypoint coordinates as ``cv2.ORB`` reports them
    (level coordinates times the level scale); ``resp`` (N,) float32 FAST scores;
    ``octv`` (N,) int64 levels; ``inv_scale`` (L,) float64 ``1 / s_l``; ``quotas``
    (L,) int64 keypoints wanted per level; ``cell`` float64 cell size [level px];
    ``nx``, ``ny`` grid size per level. With ``N <= n_features`` every keypoint is kept.
    """
    n = x.shape[0]
    if n <= n_features:
        return np.arange(n)
    n_levels = quotas.shape[0]
    cell_id = np.empty(n, np.int64)
    weak = np.empty(n, np.int64)
    key = np.empty(n, np.int64)
    for i in range(n):
        o = octv[i]
        cx = np.int64(np.float64(x[i]) * inv_scale[o] // cell)
        cy = np.int64(np.float64(y[i]) * inv_scale[o] // cell)
        cx = min(max(cx, 0), nx - 1)
        cy = min(max(cy, 0), ny - 1)
        cell_id[i] = (o * ny + cy) * nx + cx
        s = np.rint(np.float64(resp[i]))
        s = min(max(s, 0.0), 255.0)
        weak[i] = 255 - np.int64(s)
        key[i] = (cell_id[i] * 256 + weak[i]) * n + i  # unique: the sort order is total
    order = np.argsort(key)
    # rank of each keypoint inside its cell (0 = best)
    rank = np.empty(n, np.int64)
    start = 0
    for p in range(n):
        if p > 0 and cell_id[order[p]] != cell_id[order[p - 1]]:
            start = p
        rank[order[p]] = p - start
    # within each level: all cells' best, then all cells' second best, ...
    for i in range(n):
        key[i] = ((octv[i] * (n + 1) + rank[i]) * 256 + weak[i]) * n + i
    order = np.argsort(key)
    taken = np.zeros(n_levels, np.int64)
    keep = np.zeros(n, np.bool_)
    n_kept = 0
    for p in range(n):
        i = order[p]
        if taken[octv[i]] < quotas[octv[i]]:
            taken[octv[i]] += 1
            keep[i] = True
            n_kept += 1
    missing = n_features - n_kept
    if missing > 0:  # levels short of corners: fill with the rest, best-spread first
        n_rest = n - n_kept
        rest = np.empty(n_rest, np.int64)
        rest_key = np.empty(n_rest, np.int64)
        j = 0
        for p in range(n):
            i = order[p]
            if not keep[i]:
                rest[j] = i
                rest_key[j] = (rank[i] * 256 + weak[i]) * n + p  # ties: order of the level pass
                j += 1
        fill = np.argsort(rest_key)
        for q in range(min(missing, n_rest)):
            keep[rest[fill[q]]] = True
    return np.flatnonzero(keep)


@njit(cache=True, nogil=True)
def place(x, y, octv, idx, orb_scale, ratio):
    """Full-image pixel coordinates (N, 2) float64 of keypoints ``idx`` (pixel-centre convention).

    ``cv2.ORB`` reports a level-``l`` corner at ``x_l * orb_scale[l]``; the pyramid maps level
    pixel centres by ``(x_l + 0.5) * ratio[l] - 0.5`` with ``ratio[l]`` = image size / level size
    (per axis). Same operations, in the same order, as
    :func:`slam.backbone.frontend.features.level_to_image`.
    """
    out = np.empty((idx.shape[0], 2))
    for j in range(idx.shape[0]):
        i = idx[j]
        o = octv[i]
        out[j, 0] = (np.float64(x[i]) / orb_scale[o] + 0.5) * ratio[o, 0] - 0.5
        out[j, 1] = (np.float64(y[i]) / orb_scale[o] + 0.5) * ratio[o, 1] - 0.5
    return out
