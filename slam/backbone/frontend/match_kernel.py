"""Compiled search by projection (numba): candidates from the keypoint grid, Hamming distances, winners.

Tracking matches its local map against the frame's keypoints twice per frame
(some 300-3000 projected points against ~1000 keypoints). In numpy the search
builds every (point, keypoint) candidate pair through the band grid
(``searchsorted`` and repeats), gathers both descriptors of each pair, and
picks the winners with several stable argsorts, some twenty passes over
temporaries. The kernel below visits each point once (its bands, a binary
search, then the exact box, level, ``taken`` and stereo tests without branches
and an XOR-popcount distance per keypoint read), keeps each point's candidates
(grid position, distance), then runs the rounds of best / second best per point
and closest point per keypoint, all without the GIL (local mapping keeps
running in parallel). :func:`slam.backbone.frontend.matching.match_by_projection` prepares the
inputs (contiguous float64 / int64 / uint8 arrays, descriptors as uint64 words,
so one specialisation is compiled) and keeps the public interface.

The rules and tie-breaks are those of the vectorised version it replaces:
candidates of a point in grid order (band, then ``u``, then keypoint index, as
:class:`slam.backbone.frontend.features.BandGrid` sorts them), its best and second best the
first ones of that order with the smallest distance; a keypoint wanted by
several points goes to the smallest distance, then the smallest point index.
"""

from __future__ import annotations

import numpy as np
from numba import njit

_M1 = np.uint64(0x5555555555555555)
_M2 = np.uint64(0x3333333333333333)
_M4 = np.uint64(0x0F0F0F0F0F0F0F0F)
_H01 = np.uint64(0x0101010101010101)
_S1 = np.uint64(1)
_S2 = np.uint64(2)
_S4 = np.uint64(4)
_S56 = np.uint64(56)


@njit(cache=True, nogil=True, inline="always")
def _popcount(x):
    """Set bits of a uint64 (the SWAR count; LLVM turns it into ``popcnt`` where the CPU has it)."""
    x = x - ((x >> _S1) & _M1)
    x = (x & _M2) + ((x >> _S2) & _M2)
    x = (x + (x >> _S4)) & _M4
    return (x * _H01) >> _S56


@njit(cache=True, nogil=True)
def _lower_bound(keys, lo, hi, x):
    """First index in ``[lo, hi)`` with ``keys[i] >= x`` (``hi`` if none), keys ascending."""
    while lo < hi:
        mid = (lo + hi) >> 1
        if keys[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@njit(cache=True, nogil=True)
def search_by_projection(keys, order, band_start, band_px, u_lo, u_hi, stride,
                         kuv, koct, kur, kdesc, taken,
                         puv, radius, level, pur, pdesc, use_ur, max_dist, ratio, rounds):
    """Matches of projected points to keypoints: ``(point_idx, kp_idx)`` int64, sorted by point.

    Args:
        keys, order, band_start: the keypoint grid (:class:`slam.backbone.frontend.features.BandGrid`): sorted keys
            ``band * stride + (clip(u, u_lo, u_hi) - u_lo)``, the keypoint of each key, and the first
            key of each band (``n_bands + 1`` entries); ``band_px``, ``u_lo``, ``u_hi``, ``stride`` its scalars.
        kuv: (N, 2) keypoints' undistorted pixels; koct: (N,) octave; kur: (N,) right x (< 0 unknown);
        kdesc: (N, W) descriptors as uint64 words; taken: (N,) uint8, 1 = may not be matched.
        puv: (M, 2) projected pixels; radius: (M,); level: (M,) predicted octave (< 0: any);
        pur: (M,) predicted right x (< 0 unknown); pdesc: (M, W) uint64 words;
        use_ur: apply the right-x check.
        max_dist, ratio, rounds: as :func:`slam.backbone.frontend.matching.match_by_projection`.
    """
    n = kuv.shape[0]
    m = puv.shape[0]
    nw = kdesc.shape[1]
    n_bands = band_start.shape[0] - 1
    # ---- the keypoints in grid order: a band's keys are then read in sequence (the inputs are read in
    # their order and scattered: faster than a gather when they are not in cache yet)
    su = np.empty(n)
    sv = np.empty(n)
    sur = np.empty(n)
    soct = np.empty(n, np.int64)
    sfree = np.empty(n, np.bool_)
    sdesc = np.empty((n, nw), np.uint64)
    rank = np.empty(n, np.int64)
    for i in range(n):
        rank[order[i]] = i
    for k in range(n):
        i = rank[k]
        su[i] = kuv[k, 0]
        sv[i] = kuv[k, 1]
        sur[i] = kur[k]
        soct[i] = koct[k]
        sfree[i] = taken[k] == 0
        for w in range(nw):
            sdesc[i, w] = kdesc[k, w]
    # ---- candidates of every point, as grid positions (compressed rows: cand_i / cand_d[start[q]:start[q + 1]])
    cap = 16 * m + n
    cand_i = np.empty(cap, np.int64)
    cand_d = np.empty(cap, np.int64)
    start = np.zeros(m + 1, np.int64)
    big = np.int64(1) << 62
    # octave bounds level -+ 1, applied as Features.in_areas applies them: each bound only if some point has it
    use_lo = False
    use_hi = False
    for q in range(m):
        use_lo |= level[q] >= 1
        use_hi |= level[q] >= 0
    nc = 0
    for q in range(m):
        start[q] = nc
        u, v, r = puv[q, 0], puv[q, 1], radius[q]
        u0, u1, v0, v1 = u - r, u + r, v - r, v + r
        if not (np.isfinite(u0) and np.isfinite(u1) and np.isfinite(v0) and np.isfinite(v1)
                and u1 >= u0 and v1 >= v0) or n == 0:
            continue
        if cap - nc < n:  # room for every keypoint, so no check in the loops below (a check there costs 2x)
            cap = 2 * cap + n
            grown_i = np.empty(cap, np.int64)
            grown_d = np.empty(cap, np.int64)
            grown_i[:nc] = cand_i[:nc]
            grown_d[:nc] = cand_d[:nc]
            cand_i, cand_d = grown_i, grown_d
        lv = level[q]
        oct_lo = (lv - 1 if lv >= 0 else -1) if use_lo else -big
        oct_hi = lv + 1 if use_hi and lv >= 0 else big
        ur = pur[q]
        any_ur = not use_ur or ur < 0  # no right-x check for this point
        b0 = int(min(max(np.floor(v0 / band_px), 0.0), n_bands - 1.0))
        b1 = int(min(max(np.floor(v1 / band_px), 0.0), n_bands - 1.0))
        cu0 = min(max(u0, u_lo), u_hi)
        cu1 = min(max(u1, u_lo), u_hi)
        for b in range(b0, b1 + 1):
            base = b * stride - u_lo
            x0 = base + cu0
            x1 = base + cu1
            end = band_start[b + 1]
            i = _lower_bound(keys, band_start[b], end, x0)
            while i < end and keys[i] <= x1:
                # every test without a branch (they pass or fail at random), the candidate written anyway
                # and kept by advancing nc
                o = soct[i]
                ok = ((abs(su[i] - u) < r) & (abs(sv[i] - v) < r) & (o >= oct_lo) & (o <= oct_hi) & sfree[i]
                      & (any_ur | (sur[i] < 0) | (abs(sur[i] - ur) < r)))
                d = np.uint64(0)
                for w in range(nw):
                    d += _popcount(pdesc[q, w] ^ sdesc[i, w])
                cand_i[nc] = i
                cand_d[nc] = np.int64(d)
                nc += np.int64(ok)
                i += 1
    start[m] = nc
    # ---- rounds: each free point its best free keypoint (distance, ratio test), each keypoint its closest point
    pt_kp = np.full(m, -1, np.int64)  # keypoint won by each point
    kp_pt = np.full(n, -1, np.int64)  # point that won each keypoint (by grid position)
    want_q = np.empty(m, np.int64)  # this round's proposals, by ascending point
    want_k = np.empty(m, np.int64)
    want_d = np.empty(m, np.int64)
    claim_q = np.full(n, -1, np.int64)  # this round's closest point of each keypoint
    claim_d = np.zeros(n, np.int64)
    test_ratio = ratio < 1.0
    n_won = 0
    for _ in range(max(rounds, 1)):
        any_pair = False
        nw_ = 0
        for q in range(m):
            if pt_kp[q] >= 0:
                continue
            k1 = -1
            k2 = -1
            d1 = 0
            d2 = 0
            for c in range(start[q], start[q + 1]):
                k = cand_i[c]
                if kp_pt[k] >= 0:
                    continue
                any_pair = True
                d = cand_d[c]
                if k1 < 0 or d < d1:
                    k2, d2 = k1, d1
                    k1, d1 = k, d
                elif k2 < 0 or d < d2:
                    k2, d2 = k, d
            if k1 < 0 or not d1 <= max_dist:
                continue
            if test_ratio and k2 >= 0 and soct[k1] == soct[k2] and not d1 <= ratio * d2:
                continue
            want_q[nw_] = q
            want_k[nw_] = k1
            want_d[nw_] = d1
            nw_ += 1
        if not any_pair:
            break
        for j in range(nw_):  # points ascending: a tie keeps the first point
            k = want_k[j]
            if claim_q[k] < 0 or want_d[j] < claim_d[k]:
                claim_q[k] = want_q[j]
                claim_d[k] = want_d[j]
        new = 0
        for j in range(nw_):
            k = want_k[j]
            q = claim_q[k]
            if q == want_q[j]:
                pt_kp[q] = k
                new += 1
        for j in range(nw_):
            k = want_k[j]
            if claim_q[k] >= 0:
                kp_pt[k] = claim_q[k]
                claim_q[k] = -1
        n_won += new
        if new == 0:
            break
    out_q = np.empty(n_won, np.int64)
    out_k = np.empty(n_won, np.int64)
    j = 0
    for q in range(m):
        if pt_kp[q] >= 0:
            out_q[j] = q
            out_k[j] = order[pt_kp[q]]
            j += 1
    return out_q, out_k
