"""Loop correction on the map (ORB-SLAM's CorrectLoop), in three steps the loop-closing thread runs in order.

1. :func:`correct_and_fuse` (under ``map.update_lock`` and ``map.lock``): the
   current keyframe's covisible group moves to its corrected pose (with the points
   it sees), the loop group's points replace their duplicates in it (fusion), the
   group's covisibility is rebuilt, and the new loop connections are listed. It
   returns a :class:`GraphSnapshot` of every keyframe pose before the correction
   and the essential graph.
2. :func:`optimize_snapshot` (no lock): the essential-graph optimisation.
3. :func:`write_back` (under both locks again): every keyframe takes its optimised
   pose, a keyframe created meanwhile moves with the keyframe it shares most points
   with, every map point with its reference keyframe.

Frames: ``T_c_w`` rigid world -> camera; corrections of monocular maps are
similarities ``S_c_w`` (the keyframe keeps ``[R, t / s]``, its points scale with it).
"""

from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from slam.backbone.frontend.local_map import gather_points, project_visible
from slam.backbone.frontend.matching import match_by_projection
from slam.backbone.loop.pose_graph import (EssentialGraphResult, correct_points, essential_graph,
                                           optimize_essential_graph, propagate_correction)
from slam.backbone.loop.verification import LoopMatch, rigid_of
from slam.backbone.map.map import KeyFrame, Map
from slam.geometry.se3 import sim3_inverse

log = logging.getLogger(__name__)


@dataclass
class GraphSnapshot:
    """What the essential-graph optimisation needs, read under the lock in step 1."""

    T_c_w: dict[int, np.ndarray]  # every keyframe of the loop's component, before the correction
    corrected: dict[int, np.ndarray]  # the current group's corrected S_c_w
    edges: list[tuple[int, int, str]]
    new_loop_edges: list[tuple[int, int]]
    fixed: int  # the loop keyframe
    moved_points: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # moved with the group
    fused: int = 0  # points replaced by loop-group points
    added: int = 0  # observations of loop-group points added to the current group


def _move(map_: Map, ids: np.ndarray, M: np.ndarray) -> np.ndarray:
    """Points ``ids`` through the world-to-world similarity ``M`` (4x4); returns the ids moved."""
    ids = ids[map_.valid_mask(ids)]
    if len(ids):
        X = map_.points_array(ids)
        map_.set_positions(ids, X @ M[:3, :3].T + M[:3, 3])
    return ids


def fuse_into(map_: Map, kf: KeyFrame, point_of_kp: np.ndarray) -> tuple[int, int]:
    """Keypoint ``i`` of ``kf`` takes loop point ``point_of_kp[i]`` (-1: none): a point already there is
    replaced by it (:meth:`Map.replace_point`), a free keypoint observes it. Returns (replaced, added).
    Call with the map lock held."""
    replaced = added = 0
    for i in np.flatnonzero(point_of_kp >= 0).tolist():
        lp = map_.resolve_point_id(int(point_of_kp[i]))
        if lp < 0 or kf.bad:
            continue
        cur = int(kf.point_ids[i])
        if cur == lp:
            continue
        if cur >= 0 and cur in map_.points:
            map_.replace_point(cur, lp)
            replaced += 1
        elif kf.id not in map_.points[lp].observations:
            map_.associate(kf, i, lp)
            added += 1
    return replaced, added


def search_and_fuse(map_: Map, kf: KeyFrame, loop_points, camera, bf: float, scale_factors: np.ndarray,
                    radius_px: float, max_dist: int = 50) -> tuple[int, int]:
    """Project the loop group's points (``loop_points``: a :class:`PointSet`) into ``kf`` at its (corrected)
    pose and fuse them with what they match (ORB-SLAM's SearchAndFuse). Call with the map lock held."""
    proj = project_visible(kf.T_c_w, loop_points.positions, loop_points.normals, loop_points.min_dist,
                           loop_points.max_dist, camera, bf, float(scale_factors[1]), len(scale_factors))
    if len(proj.idx) == 0:
        return 0, 0
    p_i, k_i = match_by_projection(kf.features, proj.uv, loop_points.descriptors[proj.idx],
                                   radius_px * scale_factors[proj.level], proj.level, max_dist=max_dist, ratio=1.0)
    point_of_kp = np.full(len(kf.features), -1, np.int64)
    point_of_kp[k_i] = loop_points.ids[proj.idx[p_i]]
    return fuse_into(map_, kf, point_of_kp)


def correct_and_fuse(map_: Map, kf: KeyFrame, loop: LoopMatch, camera, bf: float, scale_factors: np.ndarray,
                     fuse_radius_px: float) -> GraphSnapshot:
    """Step 1 (module docstring). Call with ``map.update_lock`` and ``map.lock`` held."""
    kf.update_connections(map_)
    group = [kf.id] + [k for k in kf.covisibles() if k in map_.keyframes]
    loop_kf = map_.keyframes[loop.loop_kf_id]
    loop_group = [loop_kf] + [map_.keyframes[k] for k in loop_kf.covisibles() if k in map_.keyframes]
    loop_group = [g for g in loop_group if g.id not in set(group)]
    T_before = {k: f.T_c_w.copy() for k, f in map_.keyframes.items()}
    corrected = propagate_correction({k: T_before[k] for k in group}, kf.id, loop.S_cw)
    # every group keyframe keeps its pose relative to kf: one world-to-world move for all their points
    M = sim3_inverse(loop.S_cw) @ T_before[kf.id]
    ids = np.unique(np.concatenate([map_.keyframes[k].point_ids for k in group]))
    moved = _move(map_, ids[ids >= 0], M)
    for k in group:
        map_.keyframes[k].T_c_w = rigid_of(corrected[k])
    previous = {k: set(map_.keyframes[k].connections) for k in group}
    replaced, added = fuse_into(map_, kf, loop.point_of_kp)
    loop_points = gather_points(map_, loop_group, np.zeros(0, np.int64))
    if loop_points is not None:
        for k in group:
            g = map_.keyframes.get(k)
            if g is not None and not g.bad:
                r, a = search_and_fuse(map_, g, loop_points, camera, bf, scale_factors, fuse_radius_px)
                replaced, added = replaced + r, added + a
    group_set = set(group)
    new_loop = []
    for k in group:
        g = map_.keyframes.get(k)
        if g is None:
            continue
        g.update_connections(map_)
        new_loop += [(k, o) for o in g.connections if o not in previous[k] and o not in group_set]
    if not any(o == loop_kf.id or k == kf.id for k, o in new_loop):
        new_loop.append((kf.id, loop_kf.id))  # the loop itself, even if fusion left no covisibility edge
    parent = {k: (f.parent_id if f.parent_id in map_.keyframes else None) for k, f in map_.keyframes.items()}
    covis = {(a, b): w for a, f in map_.keyframes.items() for b, w in f.connections.items() if a < b}
    loops = {(min(a, b), max(a, b)) for a, f in map_.keyframes.items() for b in f.loop_edges if b in map_.keyframes}
    edges = essential_graph(parent, covis, loops)
    # the new loop connections are measured on the corrected poses only (ORB-SLAM inserts them first):
    # their covisibility edges, measured before the correction, would pull the drift back in
    new_pairs = {(min(a, b), max(a, b)) for a, b in new_loop}
    edges = [e for e in edges if (e[0], e[1]) not in new_pairs]
    component = _component(kf.id, edges + [(a, b, "new_loop") for a, b in new_loop])
    T_before = {k: T for k, T in T_before.items() if k in component and k in map_.keyframes}
    edges = [e for e in edges if e[0] in T_before and e[1] in T_before]
    new_loop = [(a, b) for a, b in new_loop if a in T_before and b in T_before]
    corrected = {k: S for k, S in corrected.items() if k in T_before}
    log.info("loop %d -> %d: group of %d keyframes corrected, %d points fused, %d observations added, "
             "%d new loop connections", kf.id, loop_kf.id, len(group), replaced, added, len(new_loop))
    return GraphSnapshot(T_before, corrected, edges, new_loop, loop_kf.id, moved, replaced, added)


def _component(start: int, edges) -> set[int]:
    adj: dict[int, list[int]] = {}
    for a, b, _ in edges:
        adj.setdefault(a, []).append(b)
        adj.setdefault(b, []).append(a)
    seen, todo = {start}, deque([start])
    while todo:
        for n in adj.get(todo.popleft(), ()):
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return seen


def optimize_snapshot(snap: GraphSnapshot, sim3: bool, iterations: int = 20) -> EssentialGraphResult:
    """Step 2 (no lock held): the essential graph, the loop keyframe fixed."""
    return optimize_essential_graph(snap.T_c_w, snap.edges, snap.new_loop_edges, snap.corrected, [snap.fixed],
                                    sim3, iterations)


def anchor_of(map_: Map, kf: KeyFrame, known: set[int]) -> int | None:
    """The keyframe of ``known`` that shares most map points with ``kf`` (its parent first if known)."""
    if kf.parent_id in known:
        return kf.parent_id
    votes: dict[int, int] = {}
    for pid in kf.point_ids[kf.point_ids >= 0].tolist():
        p = map_.points.get(pid)
        if p is not None:
            for k in p.observations:
                if k in known:
                    votes[k] = votes.get(k, 0) + 1
    return max(votes, key=lambda k: (votes[k], -k)) if votes else None


def write_back(map_: Map, snap: GraphSnapshot, res: EssentialGraphResult, current_id: int) -> int:
    """Step 3 (module docstring). Call with ``map.update_lock`` and ``map.lock`` held. Returns the number
    of keyframes moved."""
    # Each keyframe's points are consistent with its pose now: the corrected one for the current group.
    before = {k: snap.corrected.get(k, T) for k, T in snap.T_c_w.items()}
    after = dict(res.S_c_w)
    known = set(after)
    for k, f in sorted(map_.keyframes.items()):
        if k in known:
            continue
        # created (or outside the loop's component) since the snapshot: move with the keyframe it hangs on
        a = anchor_of(map_, f, known) if k > max(snap.T_c_w) else None
        if a is None:
            continue
        M = sim3_inverse(after[a]) @ before[a]  # world -> world
        before[k] = f.T_c_w.copy()
        after[k] = f.T_c_w @ sim3_inverse(M)
    moved = 0
    for k, S in after.items():
        f = map_.keyframes.get(k)
        if f is not None and not f.bad:
            f.T_c_w = rigid_of(S)
            moved += 1
    ids = map_.point_ids()
    ref = np.array([map_.points[i].ref_kf_id for i in ids.tolist()], np.int64)
    # points the group's correction moved in step 1 follow the current keyframe (ORB-SLAM's mnCorrectedByKF)
    ref[np.isin(ids, snap.moved_points)] = current_id
    X = map_.points_array(ids)
    map_.set_positions(ids, correct_points(X, ref, before, after))
    return moved
