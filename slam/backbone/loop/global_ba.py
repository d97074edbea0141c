"""Global bundle adjustment after a loop (ORB-SLAM's RunGlobalBundleAdjustment), snapshot in, write-back out.

:func:`snapshot` reads every keyframe pose, map point and observation (in chunks
under ``map.lock``, so tracking never waits long); :func:`solve` runs the
compiled bundle adjustment of :mod:`slam.backbone.optim.local_ba` over all of
them without any lock, the map's first keyframes (:attr:`Map.origins`) fixed;
:func:`write_back` (under ``map.update_lock`` and ``map.lock``, local mapping
paused) sets the optimised poses and positions. What was created meanwhile
follows: a keyframe not in the snapshot moves with its spanning-tree parent
(keeping its pose relative to it), a point not in the snapshot with its
reference keyframe.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from slam.backbone.loop.correction import anchor_of
from slam.backbone.map.map import Map
from slam.backbone.optim.local_ba import BAResult, local_bundle_adjustment
from slam.geometry.se3 import inv_pose

log = logging.getLogger(__name__)

CHUNK = 200  # points whose observations are read per hold of the map lock


@dataclass
class GlobalProblem:
    poses: dict[int, np.ndarray]  # T_c_w of every keyframe at the snapshot
    fixed: set[int]
    point_ids: np.ndarray
    points_w: np.ndarray
    obs_kf: np.ndarray
    obs_pt: np.ndarray
    obs_uv: np.ndarray
    obs_ur: np.ndarray
    obs_octave: np.ndarray


def snapshot(map_: Map) -> GlobalProblem | None:
    """Every keyframe and point of the map with their observations; None when there is nothing to adjust."""
    with map_.lock:
        poses = {k: f.T_c_w.copy() for k, f in map_.keyframes.items() if not f.bad}
        features = {k: map_.keyframes[k].features for k in poses}
        fixed = {k for k in map_.origins if k in poses} or ({min(poses)} if poses else set())
        ids = map_.point_ids()
    if len(poses) < 2 or len(ids) == 0:
        return None
    rows, kfs, kps, keep_ids, pos = [], [], [], [], []
    for start in range(0, len(ids), CHUNK):
        with map_.lock:
            chunk = ids[start : start + CHUNK]
            chunk = chunk[map_.valid_mask(chunk)]
            r, k, i = map_.observation_table(chunk)
            keep_ids.append(chunk)
            pos.append(map_.points_array(chunk).copy())
        rows.append(r + sum(len(c) for c in keep_ids[:-1]))
        kfs.append(k)
        kps.append(i)
    point_ids = np.concatenate(keep_ids)
    row, obs_kf, obs_kp = np.concatenate(rows), np.concatenate(kfs), np.concatenate(kps)
    known = np.isin(obs_kf, np.fromiter(poses, np.int64))
    row, obs_kf, obs_kp = row[known], obs_kf[known], obs_kp[known]
    uv, ur, oc = np.empty((len(obs_kf), 2)), np.empty(len(obs_kf)), np.empty(len(obs_kf), np.int64)
    for k in np.unique(obs_kf).tolist():
        sel = np.flatnonzero(obs_kf == k)
        f, kp = features[k], obs_kp[sel]
        uv[sel], ur[sel], oc[sel] = f.uv_und[kp], f.u_right[kp], f.octave[kp]
    return GlobalProblem(poses, fixed, point_ids, np.concatenate(pos), obs_kf, point_ids[row], uv, ur, oc)


def solve(pb: GlobalProblem, camera, bf: float, inv_level_sigma2: np.ndarray, disp_inv_sigma2: float | None,
          iterations: tuple[int, int], abort: threading.Event | None = None) -> BAResult:
    """The bundle adjustment of the snapshot (no lock held); ``abort`` stops it early (result then unused)."""
    return local_bundle_adjustment(
        pb.poses, pb.fixed, pb.point_ids, pb.points_w, pb.obs_kf, pb.obs_pt, pb.obs_uv, pb.obs_ur,
        inv_level_sigma2[pb.obs_octave], camera.fx, camera.fy, camera.cx, camera.cy, bf, iterations=iterations,
        abort=abort, obs_inv_sigma2_disp=None if disp_inv_sigma2 is None else np.full(len(pb.obs_kf), disp_inv_sigma2),
    )


def write_back(map_: Map, pb: GlobalProblem, res: BAResult) -> tuple[int, int]:
    """Optimised poses and points into the map; what was created meanwhile follows (module docstring).

    Call with ``map.update_lock`` and ``map.lock`` held and local mapping paused.
    Returns (keyframes moved, points moved).
    """
    old = {k: f.T_c_w.copy() for k, f in map_.keyframes.items()}
    new: dict[int, np.ndarray] = {k: res.poses[k] for k in old if k in res.poses}
    # Keyframes created during the BA: breadth-first down the spanning tree from the optimised ones.
    todo = deque(k for k in new)
    while todo:
        p = todo.popleft()
        for c in sorted(map_.keyframes[p].children):
            if c in map_.keyframes and c not in new:
                new[c] = (old[c] @ inv_pose(old[p])) @ new[p]  # T_c_p kept
                todo.append(c)
    for k in sorted(set(old) - set(new)):  # not attached to the tree yet (queued for local mapping)
        a = anchor_of(map_, map_.keyframes[k], set(new) & set(old))
        if a is not None:
            new[k] = (old[k] @ inv_pose(old[a])) @ new[a]
    for k, T in new.items():
        map_.keyframes[k].T_c_w = T
    ids = map_.point_ids()
    in_ba = np.isin(ids, res.point_ids)
    X = map_.points_array(ids).copy()
    opt_row = np.searchsorted(res.point_ids, ids[in_ba])
    X[in_ba] = res.points_w[opt_row]
    moved = int(in_ba.sum())
    for j in np.flatnonzero(~in_ba).tolist():  # points created meanwhile: with their reference keyframe
        ref = map_.points[int(ids[j])].ref_kf_id
        if ref in new and ref in old:
            M = inv_pose(new[ref]) @ old[ref]
            X[j] = M[:3, :3] @ X[j] + M[:3, 3]
            moved += 1
    map_.set_positions(ids, X)
    return len(new), moved


def run(map_: Map, camera, bf: float, inv_level_sigma2: np.ndarray, disp_inv_sigma2: float | None,
        iterations: tuple[int, int], abort: threading.Event, pause_mapping, resume_mapping) -> dict | None:
    """Snapshot, solve, write back (with local mapping paused for the write); None when aborted or empty.

    Returns ``{"keyframes", "points", "observations", "seconds", "solve_s"}``.
    """
    t0 = time.perf_counter()
    pb = snapshot(map_)
    if pb is None or abort.is_set():
        return None
    t1 = time.perf_counter()
    res = solve(pb, camera, bf, inv_level_sigma2, disp_inv_sigma2, iterations, abort)
    solve_s = time.perf_counter() - t1
    if abort.is_set() or res.stats.aborted:
        log.info("global BA aborted (a new loop)")
        return None
    pause_mapping()
    try:
        with map_.update_lock, map_.lock:
            n_kf, n_pt = write_back(map_, pb, res)
            map_.corrections += 1
    finally:
        resume_mapping()
    ids = map_.point_ids()
    for start in range(0, len(ids), CHUNK):
        map_.refresh_points(ids[start : start + CHUNK], descriptors=False)
    out = {"keyframes": len(pb.poses), "points": len(pb.point_ids), "observations": len(pb.obs_kf),
           "seconds": time.perf_counter() - t0, "solve_s": solve_s}
    log.info("global BA: %d keyframes, %d points, %d observations, %.2f s (solve %.2f s); wrote %d keyframes, "
             "%d points", out["keyframes"], out["points"], out["observations"], out["seconds"], solve_s, n_kf, n_pt)
    return out
