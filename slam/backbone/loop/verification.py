"""Geometric verification of a loop candidate (ORB-SLAM's ComputeSim3), on the map's keyframes and points.

Keyframe 1 is the current keyframe, keyframe 2 the candidate. Steps:

1. :func:`match_keyframe_points`: brute-force Hamming matching of the keypoints of
   both keyframes that have a good map point (nearest neighbour, ratio test, mutual,
   orientation-consistent), as ORB-SLAM's SearchByBoW does over its vocabulary tree;
2. :func:`~slam.backbone.loop.sim3_solver.solve_sim3` on those matches (SE3 for
   stereo/RGB-D, Sim3 monocular): ``S_12`` maps candidate-camera points into the
   current camera;
3. guided matching: the map points of the candidate's covisible group, projected
   into the current keyframe with ``S_cw = S_12 T_2w``, matched to its free keypoints.

A loop is accepted with at least ``min_inliers`` inliers after the refinement and
``min_projected_matches`` matched points in all (ORB-SLAM: 20 and 40).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from slam.backbone.config import LoopConfig
from slam.backbone.frontend.local_map import gather_points, project_visible
from slam.backbone.frontend.matching import match_by_projection, match_descriptors, rotation_consistency
from slam.backbone.loop.sim3_solver import solve_sim3
from slam.backbone.map.map import KeyFrame, Map
from slam.geometry.se3 import make_pose, sim3_scale

log = logging.getLogger(__name__)


@dataclass
class LoopMatch:
    """A verified loop between the current keyframe and ``loop_kf_id``.

    ``S_12``: 4x4 similarity, loop-keyframe camera -> current camera; ``S_cw``:
    the current keyframe's corrected pose (world -> current camera, similarity);
    ``point_of_kp``: (N,) loop-group point id matched to each keypoint of the
    current keyframe (-1: none); ``inliers``: RANSAC + refinement inliers;
    ``matched``: entries of ``point_of_kp`` set.
    """

    loop_kf_id: int
    S_12: np.ndarray
    S_cw: np.ndarray
    point_of_kp: np.ndarray
    inliers: int
    matched: int


def match_keyframe_points(map_: Map, kf1: KeyFrame, kf2: KeyFrame, max_dist: int = 50,
                          ratio: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint pairs ``(i1, i2)`` of two keyframes whose good map points have similar descriptors.

    Only keypoints with a good map point take part (the loop is verified in 3D);
    two keypoints seeing the same map point are not a match (it is not a loop).
    Call without the map lock: it is taken to read the point ids.
    """
    with map_.lock:
        idx1 = np.flatnonzero(kf1.point_ids >= 0)
        idx1 = idx1[map_.valid_mask(kf1.point_ids[idx1])]
        idx2 = np.flatnonzero(kf2.point_ids >= 0)
        idx2 = idx2[map_.valid_mask(kf2.point_ids[idx2])]
        p1, p2 = kf1.point_ids[idx1].copy(), kf2.point_ids[idx2].copy()
    a, b = match_descriptors(kf1.features.desc[idx1], kf2.features.desc[idx2], max_dist=max_dist, ratio=ratio)
    keep = p1[a] != p2[b]
    a, b = a[keep], b[keep]
    keep = rotation_consistency(kf1.features.angle[idx1[a]], kf2.features.angle[idx2[b]])
    return idx1[a[keep]], idx2[b[keep]]


def rigid_of(S_cw: np.ndarray) -> np.ndarray:
    """The rigid pose ``[R, t / s]`` of a similarity ``[s R, t]`` (same pixels for every point)."""
    s = sim3_scale(S_cw)
    return make_pose(S_cw[:3, :3] / s, S_cw[:3, 3] / s)


def verify_candidate(map_: Map, kf: KeyFrame, cand: KeyFrame, cfg: LoopConfig, inv_level_sigma2: np.ndarray,
                     scale_factors: np.ndarray, camera, bf: float, fix_scale: bool) -> LoopMatch | None:
    """The loop ``kf`` -> ``cand`` if it passes the module's checks, else None.

    ``camera``: the pinhole model of undistorted keypoints; ``inv_level_sigma2``,
    ``scale_factors``: per pyramid level (the feature extractor's). Takes the map
    lock only to read; the RANSAC and the projections run without it.
    """
    i1, i2 = match_keyframe_points(map_, kf, cand, cfg.match_max_hamming, cfg.match_ratio)
    if len(i1) < cfg.min_matches:
        log.debug("loop %d -> %d: %d descriptor matches < %d", kf.id, cand.id, len(i1), cfg.min_matches)
        return None
    with map_.lock:
        if kf.bad or cand.bad:
            return None
        T1, T2 = kf.T_c_w.copy(), cand.T_c_w.copy()
        pid2 = cand.point_ids[i2].copy()
        ok = map_.valid_mask(kf.point_ids[i1]) & map_.valid_mask(pid2)
        i1, i2, pid2 = i1[ok], i2[ok], pid2[ok]
        Xw1 = map_.points_array(kf.point_ids[i1])
        Xw2 = map_.points_array(pid2)
        group = [cand] + [map_.keyframes[k] for k in cand.covisibles() if k in map_.keyframes]
        pts = gather_points(map_, group, np.zeros(0, np.int64))
    if len(i1) < cfg.min_matches or pts is None:
        return None
    f1, f2 = kf.features, cand.features
    K = (camera.fx, camera.fy, camera.cx, camera.cy)
    res = solve_sim3(
        Xw1 @ T1[:3, :3].T + T1[:3, 3], Xw2 @ T2[:3, :3].T + T2[:3, 3], f1.uv_und[i1], f2.uv_und[i2],
        inv_level_sigma2[f1.octave[i1]], inv_level_sigma2[f2.octave[i2]], K, K, fix_scale=fix_scale,
        min_inliers=cfg.min_inliers, seed=kf.id,
    )
    if res is None:
        log.debug("loop %d -> %d: no transform with %d inliers among %d matches", kf.id, cand.id,
                  cfg.min_inliers, len(i1))
        return None
    S_cw = res.S_12 @ T2
    point_of_kp = np.full(len(f1), -1, np.int64)
    point_of_kp[i1[res.inliers]] = pid2[res.inliers]
    # Guided matching: the candidate group's points projected with the found transform.
    T_guess = rigid_of(S_cw)
    proj = project_visible(T_guess, pts.positions, pts.normals, pts.min_dist, pts.max_dist, camera, bf,
                           float(scale_factors[1]) if len(scale_factors) > 1 else 1.2, len(scale_factors))
    already = np.isin(pts.ids[proj.idx], point_of_kp[point_of_kp >= 0])
    sel = np.flatnonzero(~already)
    if len(sel):
        p_i, k_i = match_by_projection(
            f1, proj.uv[sel], pts.descriptors[proj.idx[sel]], cfg.projection_radius_px * scale_factors[proj.level[sel]],
            proj.level[sel], max_dist=cfg.match_max_hamming, taken=point_of_kp >= 0,
        )
        point_of_kp[k_i] = pts.ids[proj.idx[sel[p_i]]]
    matched = int(np.count_nonzero(point_of_kp >= 0))
    if matched < cfg.min_projected_matches:
        log.debug("loop %d -> %d: %d inliers but %d matched points < %d", kf.id, cand.id, res.n_inliers, matched,
                  cfg.min_projected_matches)
        return None
    return LoopMatch(cand.id, res.S_12, S_cw, point_of_kp, res.n_inliers, matched)
