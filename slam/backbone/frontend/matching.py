"""Descriptor matching of ORB features: Hamming distances, search by projection, brute force, epipolar search.

The brute-force and epipolar searches are vectorised: candidate pairs are built in one go (from a
distance matrix or point-to-line distances), their distances computed in one batch, and the winners
picked by sorting. The search by projection, run twice per tracked frame, is compiled
(:mod:`slam.backbone.frontend.match_kernel`). Thresholds follow ORB-SLAM (``TH_HIGH``, ``TH_LOW``, ratio tests,
orientation histogram).
"""

from __future__ import annotations

import cv2
import numpy as np

from slam.backbone.frontend.features import Features
from slam.backbone.frontend.match_kernel import search_by_projection

TH_HIGH = 100  # Hamming distance accepted when the geometry already restricts the candidates well
TH_LOW = 50  # Hamming distance for matches with weak geometric support
_BIG = 1 << 20  # a distance larger than any real one
_EPI_BLOCK = 1 << 17  # point-to-epipolar-line distances computed at once by search_epipolar


# ======================================================================= distances
def _as_u8(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise Hamming distances of (N, B) uint8 descriptors (either side may be one row): (N,) int32."""
    a, b = _as_u8(a), _as_u8(b)
    if a.shape[-1] % 8 == 0:  # XOR and popcount on 64-bit words
        a, b = a.view(np.uint64), b.view(np.uint64)
    x = np.bitwise_count(a ^ b)
    if x.ndim == 1:
        return np.int32(x.sum(dtype=np.int32))
    out = x[:, 0].astype(np.int32)
    for c in range(1, x.shape[1]):
        out += x[:, c]
    return out


def hamming_matrix(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """All Hamming distances between (N, B) and (M, B) uint8 descriptors: (N, M) int32.

    With bits as +-1, ``a . b = nbits - 2 * hamming``: one float32 matrix product (exact: small integers).
    """
    A, B = _as_u8(A), _as_u8(B)
    if len(A) == 0 or len(B) == 0:
        return np.zeros((len(A), len(B)), np.int32)
    nbits = A.shape[1] * 8
    a = np.unpackbits(A, axis=1).astype(np.float32) * 2.0 - 1.0
    b = np.unpackbits(B, axis=1).astype(np.float32) * 2.0 - 1.0
    return np.rint((nbits - a @ b.T) * 0.5).astype(np.int32)


def _unique_by(key: np.ndarray, dist: np.ndarray) -> np.ndarray:
    """Positions that keep, for each value of ``key``, the entry with the smallest distance."""
    if len(key) == 0:
        return np.zeros(0, np.int64)
    o = np.argsort(key.astype(np.int64) * 1024 + np.minimum(dist, 1023), kind="stable")  # by key, then distance
    k = key[o]
    return o[np.r_[True, k[1:] != k[:-1]]]


# ============================================================ search by projection
def _words(desc: np.ndarray) -> np.ndarray:
    """(N, B) uint8 descriptors as (N, ceil(B / 8)) uint64 words (zero bytes appended: same distances)."""
    d = _as_u8(desc)
    if d.shape[1] % 8:
        d = np.concatenate([d, np.zeros((len(d), 8 - d.shape[1] % 8), np.uint8)], axis=1)
    return d.view(np.uint64)


def match_by_projection(features: Features, proj_uv: np.ndarray, desc: np.ndarray, radius: np.ndarray | float,
                        predicted_level: np.ndarray | int = -1, max_dist: float = TH_HIGH, ratio: float = 0.8,
                        taken: np.ndarray | None = None, proj_ur: np.ndarray | None = None,
                        rounds: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Match projected map points to keypoints (ORB-SLAM's SearchByProjection, compiled).

    ``proj_uv`` (M, 2) undistorted pixels, ``desc`` (M, 32) the points' descriptors, ``radius`` (M,)
    search half-width [px], ``predicted_level`` (M,) octave (candidates within +-1) or -1 for any.
    ``taken`` (N,) marks keypoints that may not be matched; ``proj_ur`` (M,) predicted right x
    (or -1): keypoints with ``u_right >= 0`` must then also agree within ``radius``.
    Each point takes its best keypoint if the distance is <= ``max_dist`` and, when the second
    best is at the same level, below ``ratio`` times it; a keypoint goes to its closest point. With
    ``rounds`` > 1 the points that lost their keypoint to a closer point (and those that found no
    match) try again among the keypoints still free (often the same corner detected at another
    level). Returns ``(point_idx, kp_idx)`` sorted by point.

    Candidates are the keypoints of :meth:`Features.in_areas` (the box of half-width ``radius``,
    octaves ``level - 1 .. level + 1``). Ties: a point's best (and second best) is the first of its
    candidates in grid order with the smallest distance; a keypoint wanted by several points goes
    to the smallest distance, then the smallest point index. The search itself runs in
    :func:`slam.backbone.frontend.match_kernel.search_by_projection` (numba, without the GIL).
    """
    e = np.zeros(0, np.int64)
    m = len(proj_uv)
    n = len(features)
    if m == 0 or n == 0:
        return e, e
    grid = features._ensure_grid()
    uv = np.asarray(proj_uv, np.float64)
    taken_u8 = np.zeros(n, np.uint8) if taken is None else np.ascontiguousarray(taken, bool).view(np.uint8)
    return search_by_projection(
        grid.keys, grid.order, grid.band_start, grid.band_px, grid.u_lo, grid.u_hi, grid.stride,
        np.ascontiguousarray(features.uv_und, np.float64), np.ascontiguousarray(features.octave, np.int64),
        np.ascontiguousarray(features.u_right, np.float64), _words(features.desc), taken_u8,
        np.ascontiguousarray(uv if uv.shape[1] == 2 else uv[:, :2]), _per_point(radius, m, np.float64),
        _per_point(predicted_level, m, np.int64), _per_point(-1.0 if proj_ur is None else proj_ur, m, np.float64),
        _words(desc), proj_ur is not None, float(max_dist), float(ratio), int(rounds))


def _per_point(x, m: int, dtype) -> np.ndarray:
    """A scalar or per-point argument as a contiguous (m,) array (``np.broadcast_to`` costs more)."""
    a = np.asarray(x, dtype)
    if a.shape == (m,):
        return np.ascontiguousarray(a)
    if a.ndim == 0:
        return np.full(m, a)
    return np.ascontiguousarray(np.broadcast_to(a, (m,)))


# ==================================================================== brute force
def match_descriptors(desc1: np.ndarray, desc2: np.ndarray, max_dist: float = TH_LOW, ratio: float = 0.75,
                      mutual: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Brute-force matches ``(i1, i2)``: nearest neighbour with a ratio test, optionally mutual.

    A match needs distance <= ``max_dist`` and < ``ratio`` x the second nearest; each ``i2`` is
    used once (closest ``i1`` wins). Sorted by ``i1``.
    """
    e = np.zeros(0, np.int64)
    d1, d2 = _as_u8(desc1), _as_u8(desc2)
    if len(d1) == 0 or len(d2) == 0:
        return e, e
    kk = 2 if len(d2) >= 2 else 1
    dist, nidx = cv2.batchDistance(d1, d2, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=kk)
    dist = dist.astype(np.int64)
    j = nidx[:, 0].astype(np.int64)
    ok = (j >= 0) & (dist[:, 0] <= max_dist)
    if kk == 2 and ratio < 1.0:
        ok &= dist[:, 0] < ratio * dist[:, 1]
    i1 = np.nonzero(ok)[0]
    if mutual and len(i1):  # the reverse search only for the descriptors that were chosen
        cand = np.unique(j[i1])
        _, back = cv2.batchDistance(d2[cand], d1, cv2.CV_32S, normType=cv2.NORM_HAMMING, K=1)
        back_of = np.full(len(d2), -1, np.int64)
        back_of[cand] = back[:, 0]
        i1 = i1[back_of[j[i1]] == i1]
    keep = _unique_by(j[i1], dist[i1, 0])
    i1 = np.sort(i1[keep])
    return i1, j[i1]


def rotation_consistency(angle1: np.ndarray, angle2: np.ndarray, bins: int = 30, keep: int = 3) -> np.ndarray:
    """Mask of matches whose orientation change falls in the ``keep`` most voted histogram bins.

    As ORB-SLAM: bins of 360/``bins`` degrees; the 2nd and 3rd bins count only with more than
    a tenth of the votes of the first.
    """
    a1 = np.asarray(angle1, np.float64)
    n = len(a1)
    if n == 0:
        return np.zeros(0, bool)
    rot = np.mod(a1 - np.asarray(angle2, np.float64), 360.0)
    b = np.rint(rot * (bins / 360.0)).astype(np.int64) % bins
    counts = np.bincount(b, minlength=bins)
    top = np.argsort(-counts, kind="stable")[:keep]
    top = top[(counts[top] > 0) & ((top == top[0]) | (counts[top] >= 0.1 * counts[top[0]]))]
    return np.isin(b, top)


# ============================================================== epipolar search
def fundamental_from_pose(T_c2_c1: np.ndarray, K1: np.ndarray, K2: np.ndarray | None = None) -> np.ndarray:
    """F21 with ``x2^T F21 x1 = 0`` for pixels x1 in camera 1 and x2 in camera 2."""
    K2 = K1 if K2 is None else K2
    R, t = T_c2_c1[:3, :3], T_c2_c1[:3, 3]
    tx = np.array([[0.0, -t[2], t[1]], [t[2], 0.0, -t[0]], [-t[1], t[0], 0.0]])
    return np.linalg.inv(K2).T @ (tx @ R) @ np.linalg.inv(K1)


def search_epipolar(f1: Features, f2: Features, T_c2_c1_or_F21: np.ndarray, K: np.ndarray | None = None,
                    idx1: np.ndarray | None = None, idx2: np.ndarray | None = None,
                    level_sigma2: np.ndarray | None = None, *, max_dist: float = TH_LOW, ratio: float = 0.6,
                    chi2: float = 3.84, scale_factor: float = 1.2, check_orientation: bool = True,
                    epipole_px: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """Matches for triangulation between two keyframes: descriptors constrained to the epipolar line.

    Pass ``T_c2_c1`` (4x4) with ``K`` or ``F21`` (3x3, pixels). ``idx1``/``idx2``: candidate
    keypoints (e.g. those without a map point; default all). A pair needs the squared distance of
    keypoint 2 to the epipolar line of keypoint 1 below ``chi2 * level_sigma2[octave2]``, and, when
    neither keypoint has a depth, keypoint 2 away from the epipole (``epipole_px * sqrt(scale)``);
    then the best distance <= ``max_dist`` and < ``ratio`` x the second best of keypoint 1, each
    keypoint 2 once, and consistent orientation changes. Returns global indices ``(i1, i2)``.
    """
    e = np.zeros(0, np.int64)
    idx1 = np.arange(len(f1)) if idx1 is None else np.asarray(idx1)
    idx2 = np.arange(len(f2)) if idx2 is None else np.asarray(idx2)
    if idx1.dtype == bool:
        idx1 = np.nonzero(idx1)[0]
    if idx2.dtype == bool:
        idx2 = np.nonzero(idx2)[0]
    if len(idx1) == 0 or len(idx2) == 0:
        return e, e
    M = np.asarray(T_c2_c1_or_F21, np.float64)
    if M.shape == (4, 4):
        if K is None:
            raise ValueError("search_epipolar: a pose needs K")
        F = fundamental_from_pose(M, K)
        ep = K @ M[:3, 3]  # camera 1's centre seen from camera 2
    else:
        F = M
        ep = np.linalg.svd(F)[0][:, 2]  # left null vector: F^T e2 = 0
    if level_sigma2 is None:
        level_sigma2 = scale_factor ** (2.0 * np.arange(max(int(f2.octave.max(initial=0)) + 1, 1)))
    sig2 = np.asarray(level_sigma2, np.float64)
    # epipolar lines l = F x1 scaled to unit normal, so l . x2 is the distance in pixels
    lines = np.c_[f1.uv_und[idx1], np.ones(len(idx1))] @ F.T
    lines /= np.maximum(np.hypot(lines[:, 0], lines[:, 1]), 1e-300)[:, None]
    uv2 = f2.uv_und[idx2]
    oct2 = f2.octave[idx2]
    # the (n1, n2) point-to-line distances in float32 (sub-1e-4 px error), computed and thresholded by blocks of
    # rows: a block stays in cache, and its product is small enough for OpenBLAS to run it in the calling thread
    # (threads cost more than such a product, far more on a busy machine). With 2 rows or more a block is a
    # matrix product as that of all rows at once (not a matrix-vector one): the same float32 values.
    n1, n2 = len(idx1), len(idx2)
    nrm, off = lines[:, :2].astype(np.float32), lines[:, 2:].astype(np.float32)
    uv2t = uv2.T.astype(np.float32)
    thr = np.sqrt(chi2 * sig2[oct2]).astype(np.float32)
    nblk = max(1, min(n1 // 2, -(-n1 * n2 // _EPI_BLOCK)))
    edges = np.arange(nblk + 1) * n1 // nblk  # blocks of equal size (to one row)
    buf = np.empty((-(-n1 // nblk), n2), np.float32)
    near = np.empty(buf.shape, bool)
    hits = []
    for r0, r1 in zip(edges[:-1], edges[1:]):
        d = np.matmul(nrm[r0:r1], uv2t, out=buf[:r1 - r0])
        d += off[r0:r1]
        np.less(np.abs(d, out=d), thr, out=near[:r1 - r0])
        hits.append(np.flatnonzero(near[:r1 - r0]) + r0 * n2)
    a, b = np.divmod(np.concatenate(hits), n2)  # the pairs sorted by a, then b (as np.nonzero, which is slower)
    if len(a) and epipole_px > 0 and abs(ep[2]) > 1e-12:
        # keypoints 2 without depth near the epipole: no pair with keypoints 1 without depth
        e2 = ep[:2] / ep[2]
        de2 = np.sum((uv2 - e2) ** 2, axis=1)
        near_ep = (f2.u_right[idx2] < 0) & (de2 < epipole_px**2 * scale_factor ** oct2)
        if near_ep.any():
            keep = ~(near_ep[b] & (f1.u_right[idx1] < 0)[a])
            a, b = a[keep], b[keep]
    if len(a) == 0:
        return e, e
    dist = hamming(np.take(f1.desc[idx1], a, axis=0), np.take(f2.desc[idx2], b, axis=0))  # take: faster than [a]
    # each keypoint 1 (a run of equal a): its best pair (smallest distance, then smallest b) and second best distance
    start = np.flatnonzero(np.r_[True, a[1:] != a[:-1]])
    best = np.minimum.reduceat(dist.astype(np.int64) * len(a) + np.arange(len(a)), start) % len(a)
    d1 = dist[best]
    rest = dist.copy()
    rest[best] = _BIG
    d2 = np.minimum.reduceat(rest, start)  # _BIG without a second pair
    best = best[(d1 <= max_dist) & (d1 < ratio * d2)]
    best = best[_unique_by(b[best], dist[best])]  # best is sorted by a: a keypoint 2 tied goes to the first one
    i1, i2 = idx1[a[best]], idx2[b[best]]
    if check_orientation and len(i1):
        m = rotation_consistency(f1.angle[i1], f2.angle[i2])
        i1, i2 = i1[m], i2[m]
    o = np.argsort(i1, kind="stable")
    return i1[o], i2[o]
