"""Geometric verification of a loop candidate (ORB-SLAM's ComputeSim3), on the map's keyframes and points.

Keyframe 1 is the current keyframe, keyframe 2 the candidate. Steps:

1. :func:`match_keyframe_points`: brute-force Hamming matching of the keypoints of
   both keyframes that have a good map point (nearest neighbour, ratio test, mutual,
   orientation-consistent), as ORB-SLAM's SearchByBoW does over its vocabulary tree;
2. :func:`~slam.backbone.loop.sim3_solver.solve_sim3` on those matches (SE3 for
   stereo/RGB-D, Sim3 monocular): ``S_12`` maps candidate-camera points into the
   current camera;
3. guided matching: the map points of the candidate's covisible group, projected
   into the current keyframe with ``S_cw = S_12 T_2w`` and into its covisible group,
   matched to their free keypoints; the group's pose (relative poses kept; a similarity
   for monocular maps, rigid otherwise) re-estimated from all those matches
   (:func:`refine_rig_pose`, stereo/RGB-D with the depth term), the matching repeated
   once from it.

A loop is accepted with at least ``min_inliers`` RANSAC inliers after the refinement,
``min_projected_matches`` matched points in all and ``min_projected_matches`` inliers of
the group's pose re-estimation (ORB-SLAM: 20 and 40).
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
from slam.backbone.optim.pose import CHI2_MONO, CHI2_STEREO
from slam.geometry.so3 import so3_log
from slam.geometry.se3 import inv_pose, make_pose, se3_exp, sim3_exp, sim3_inverse, sim3_scale

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
                     scale_factors: np.ndarray, camera, bf: float, fix_scale: bool,
                     disp_inv_sigma2: float | None = None) -> LoopMatch | None:
    """The loop ``kf`` -> ``cand`` if it passes the module's checks, else None.

    ``camera``: the pinhole model of undistorted keypoints; ``inv_level_sigma2``,
    ``scale_factors``: per pyramid level (the feature extractor's); ``disp_inv_sigma2``: RGB-D
    depth information (as tracking's). Takes the map
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
    n_inliers = res.n_inliers
    # Guided matching: the candidate group's points projected with the found transform, into the current
    # keyframe and its covisible group; the group's pose (relative poses kept; monocular: a similarity) is then
    # re-estimated from all those matches (stereo/RGB-D: depth included; outliers out) and the matching repeated
    # once from it. The minimal-set transform rests on a few dozen matches of one keyframe, often in one part of
    # the image at one depth, where a rotation and a sideways shift look alike (measured on the monocular demo: a
    # transform 6.9 deg off that fitted the 54 matches better than the true one); the group's baseline tells them apart.
    with map_.lock:
        group_cur = [kf] + [map_.keyframes[k] for k in kf.covisibles(cfg.refine_group)
                            if k in map_.keyframes and k != cand.id]
        T_g_c = [g.T_c_w @ inv_pose(T1) for g in group_cur]
    # Monocular: the group's view of the loop is often one wall at one depth (loop600_s0: 2.1-2.3 m, the current
    # group 0.2 m wide), and the loop side's points are a few percent off in depth (4 % there, against the rendered
    # depth); the similarity then turns to fit them (9 deg off the truth at a robust cost of 600 against 1377 at the
    # true rotation, the odometry's drift being 0.2-0.5 deg). So the rotation is held to the odometry's (the
    # uncorrected pose's) by a prior of mono_rotation_prior_deg, and the guided matching is also started from the
    # uncorrected pose, so its windows do not follow RANSAC's turn alone; the hypothesis with more inliers wins.
    prior = 0.0 if fix_scale or cfg.mono_rotation_prior_deg <= 0 else float(np.radians(cfg.mono_rotation_prior_deg)) ** -2
    hyps = [(S_cw, point_of_kp)]
    if not fix_scale and cfg.mono_odometry_hypothesis:
        hyps.append((T1.copy(), np.full(len(f1), -1, np.int64)))
    best = None
    for h, (S0, p0) in enumerate(hyps):
        r = _guided_refine(map_, S0, p0, group_cur, T_g_c, pts, camera, bf, scale_factors, inv_level_sigma2,
                           disp_inv_sigma2, fix_scale, cfg, kf, cand, R_prior=T1[:3, :3], prior_inv_sigma2=prior)
        log.debug("loop %d -> %d: hypothesis %d -> %d inliers, %d matched", kf.id, cand.id, h, r[2],
                  int(np.count_nonzero(r[1] >= 0)))
        if best is None or r[2] > best[2]:
            best = r
    S_cw, point_of_kp, n_inliers = best
    S_12 = S_cw @ sim3_inverse(T2)
    matched = int(np.count_nonzero(point_of_kp >= 0))
    if matched < cfg.min_projected_matches or n_inliers < cfg.min_projected_matches:
        log.debug("loop %d -> %d: %d inliers but %d matched points < %d", kf.id, cand.id, n_inliers, matched,
                  cfg.min_projected_matches)
        return None
    return LoopMatch(cand.id, S_12, S_cw, point_of_kp, n_inliers, matched)


def _guided_refine(map_: Map, S_cw: np.ndarray, point_of_kp: np.ndarray, group_cur: list, T_g_c: list, pts,
                   camera, bf: float, scale_factors: np.ndarray, inv_level_sigma2: np.ndarray,
                   disp_inv_sigma2: float | None, fix_scale: bool, cfg: LoopConfig, kf: KeyFrame,
                   cand: KeyFrame, R_prior: np.ndarray | None = None,
                   prior_inv_sigma2: float = 0.0) -> tuple[np.ndarray, np.ndarray, int]:
    """Guided matching of the loop group's points ``pts`` from ``S_cw`` and the group's pose re-estimation, twice.

    Returns ``(S_cw, point_of_kp, n_inliers)`` (see :func:`verify_candidate`).
    """
    n_inliers = int(np.count_nonzero(point_of_kp >= 0))
    for _ in range(2):
        obs = []  # (group index, keypoint, point id)
        for gi, g in enumerate(group_cur):
            start = point_of_kp if gi == 0 else np.full(len(g.features), -1, np.int64)
            found = _guided_matches(start, g.features, pts, rigid_of(T_g_c[gi] @ S_cw), camera, bf, scale_factors,
                                    cfg)
            if gi == 0:
                point_of_kp = found
            kp = np.flatnonzero(found >= 0)
            obs.append((np.full(len(kp), gi), kp, found[kp]))
        gidx, kp, pid = (np.concatenate(o) for o in zip(*obs))
        if np.count_nonzero(gidx == 0) < cfg.min_projected_matches:
            break
        with map_.lock:
            ok = map_.valid_mask(pid)
            gidx, kp, pid = gidx[ok], kp[ok], pid[ok]
            X = map_.points_array(pid)
        uv, ur, w = np.empty((len(kp), 2)), np.empty(len(kp)), np.empty(len(kp))
        for gi, g in enumerate(group_cur):
            sel = np.flatnonzero(gidx == gi)
            uv[sel], ur[sel] = g.features.uv_und[kp[sel]], g.features.u_right[kp[sel]]
            w[sel] = inv_level_sigma2[g.features.octave[kp[sel]]]
        # one camera alone cannot tell a similarity's scale from its translation's (same pixels): keep RANSAC's
        S_cw, inl = refine_rig_pose(S_cw, np.stack(T_g_c)[gidx], X, uv, ur, w, camera, bf, disp_inv_sigma2,
                                    fix_scale=fix_scale or len(np.unique(gidx)) < 2, R_prior=R_prior,
                                    prior_inv_sigma2=prior_inv_sigma2)
        cur = gidx == 0
        point_of_kp[kp[cur & ~inl]] = -1
        n_inliers = int(np.count_nonzero(inl))
        log.debug("loop %d -> %d: group of %d keyframes, %d of %d matches inliers (%d of the keyframe's)", kf.id,
                  cand.id, len(group_cur), n_inliers, len(inl), int(np.count_nonzero(inl & cur)))
        if n_inliers < cfg.min_projected_matches:
            break
    return S_cw, point_of_kp, n_inliers


def _guided_matches(point_of_kp: np.ndarray, f1, pts, T_c_w: np.ndarray, camera, bf: float,
                    scale_factors: np.ndarray, cfg: LoopConfig) -> np.ndarray:
    """``point_of_kp`` with the points of ``pts`` not matched yet, projected at ``T_c_w``, matched to free keypoints."""
    point_of_kp = point_of_kp.copy()
    proj = project_visible(T_c_w, pts.positions, pts.normals, pts.min_dist, pts.max_dist, camera, bf,
                           float(scale_factors[1]) if len(scale_factors) > 1 else 1.2, len(scale_factors))
    sel = np.flatnonzero(~np.isin(pts.ids[proj.idx], point_of_kp[point_of_kp >= 0]))
    if len(sel):
        p_i, k_i = match_by_projection(
            f1, proj.uv[sel], pts.descriptors[proj.idx[sel]], cfg.projection_radius_px * scale_factors[proj.level[sel]],
            proj.level[sel], max_dist=cfg.match_max_hamming, taken=point_of_kp >= 0,
            proj_ur=proj.u_right[sel] if bf > 0 else None,
        )
        point_of_kp[k_i] = pts.ids[proj.idx[sel[p_i]]]
    return point_of_kp


def refine_rig_pose(T_c_w: np.ndarray, T_g_c: np.ndarray, X_w: np.ndarray, uv: np.ndarray, u_right: np.ndarray,
                    inv_sigma2: np.ndarray, camera, bf: float, disp_inv_sigma2: float | None,
                    rounds: int = 4, iterations: int = 10, fix_scale: bool = True,
                    R_prior: np.ndarray | None = None, prior_inv_sigma2: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Refine the pose of a rigid group of cameras from their matches to fixed world points.

    Camera ``c`` (the current keyframe) has pose ``T_c_w``; observation ``e`` is made by a
    camera at ``T_g_c[e] @ T_c_w`` (4x4 each, the group's poses relative to ``c``, kept) of
    point ``X_w[e]`` at undistorted pixel ``uv[e]`` (and ``u_right[e] >= 0``: the virtual
    right-image column of stereo/RGB-D, weighted by ``disp_inv_sigma2`` or the pixel weight).
    Gauss-Newton on ``T_c_w <- exp(xi) T_c_w`` with Huber kernels, observations re-gated
    (chi2 95 %) after each round, the last round without kernel, as tracking's pose optimisation.
    ``fix_scale=False`` (monocular): ``T_c_w`` is a similarity ``[s R, t]`` (world points at the loop
    side's scale into camera ``c`` at the current side's), updated by ``sim3_exp`` over 7 parameters.
    The group sees more of the loop's points, spread wider, than one keyframe: a translation
    that one keyframe's few distant points leave loose is pinned. ``R_prior`` with ``prior_inv_sigma2 > 0``
    (1/rad^2): a prior holding the rotation of ``T_c_w`` near ``R_prior`` (world -> camera ``c``).
    Returns ``(T_c_w, inliers)``.
    """
    T = np.asarray(T_c_w, np.float64).copy()
    fx, fy, cx, cy = camera.fx, camera.fy, camera.cx, camera.cy
    stereo = (u_right >= 0) & (bf > 0)
    w_r = inv_sigma2 if disp_inv_sigma2 is None else np.full(len(uv), disp_inv_sigma2)
    gate = np.where(stereo, CHI2_STEREO, CHI2_MONO)
    R_g, t_g = T_g_c[:, :3, :3], T_g_c[:, :3, 3]
    inl = np.ones(len(uv), bool)
    dof = 6 if fix_scale else 7

    def residuals(T_):
        Y = X_w @ T_[:3, :3].T + T_[:3, 3]  # current-camera points
        P = np.einsum("eij,ej->ei", R_g, Y) + t_g
        z = P[:, 2]
        zs = np.where(z > 1e-6, z, 1e-6)
        u, v = fx * P[:, 0] / zs + cx, fy * P[:, 1] / zs + cy
        r = np.column_stack([u - uv[:, 0], v - uv[:, 1], np.where(stereo, u - bf / zs - u_right, 0.0)])
        chi2 = (r[:, 0] ** 2 + r[:, 1] ** 2) * inv_sigma2 + r[:, 2] ** 2 * w_r
        chi2 = np.where(z > 1e-6, chi2, np.inf)
        return Y, P, zs, r, chi2

    for rnd in range(rounds):
        robust = rnd < rounds - 1
        for _ in range(iterations):
            Y, P, zs, r, chi2 = residuals(T)
            m = inl & np.isfinite(chi2)
            if m.sum() < 6:
                return T, np.zeros(len(uv), bool)
            # d P / d xi = R_g [I, -[Y]x]
            J_y = np.zeros((len(Y), 3, dof))
            J_y[:, :, :3] = np.eye(3)
            if not fix_scale:
                J_y[:, :, 6] = Y
            J_y[:, 0, 4], J_y[:, 0, 5] = Y[:, 2], -Y[:, 1]
            J_y[:, 1, 3], J_y[:, 1, 5] = -Y[:, 2], Y[:, 0]
            J_y[:, 2, 3], J_y[:, 2, 4] = Y[:, 1], -Y[:, 0]
            J_P = np.einsum("eij,ejk->eik", R_g, J_y)
            iz = 1.0 / zs
            J_proj = np.zeros((len(Y), 3, 3))
            J_proj[:, 0, 0], J_proj[:, 0, 2] = fx * iz, -fx * P[:, 0] * iz * iz
            J_proj[:, 1, 1], J_proj[:, 1, 2] = fy * iz, -fy * P[:, 1] * iz * iz
            J_proj[:, 2] = J_proj[:, 0]
            J_proj[:, 2, 2] += bf * iz * iz
            J = np.einsum("eij,ejk->eik", J_proj, J_P)
            w = np.column_stack([inv_sigma2, inv_sigma2, np.where(stereo, w_r, 0.0)])
            if robust:
                delta2 = gate
                w = w * np.where(chi2 <= delta2, 1.0, np.sqrt(delta2 / np.maximum(chi2, 1e-300)))[:, None]
            w = np.where(m[:, None], w, 0.0)
            H = np.einsum("eki,ek,ekj->ij", J, w, J)
            g = np.einsum("eki,ek,ek->i", J, w, r)
            if R_prior is not None and prior_inv_sigma2 > 0:
                R_ = T[:3, :3] / np.cbrt(np.linalg.det(T[:3, :3]))
                H[3:6, 3:6] += prior_inv_sigma2 * np.eye(3)
                g[3:6] += prior_inv_sigma2 * so3_log(R_ @ R_prior.T)
            try:
                dx = np.linalg.solve(H + 1e-9 * np.eye(dof), -g)
            except np.linalg.LinAlgError:
                break
            T = (se3_exp(dx) if fix_scale else sim3_exp(dx)) @ T
            if np.linalg.norm(dx) < 1e-8:
                break
        _, _, _, _, chi2 = residuals(T)
        inl = chi2 <= gate
    return T, inl
