"""Essential-graph optimisation of keyframe poses after a loop (ORB-SLAM's OptimizeEssentialGraph), with g2o.

Frames and units: keyframe poses are ``T_c_w`` (4x4 float64, world -> camera,
metres or map units); a similarity ``S_c_w = [[s R, t], [0, 1]]`` maps world
points into camera ``c`` at scale ``s``. An edge ``i -> j`` measures
``S_j_i = S_j_w S_i_w^-1`` (camera-i points into camera j).

Solver: g2o through ``g2opy``. Monocular maps (``sim3=True``) use
``VertexSim3Expmap`` / ``EdgeSim3`` (7 dof per keyframe, scale drift is
corrected), error ``log(S_j_i S_i_w S_j_w^-1)`` in camera j (vertex 0 = i,
vertex 1 = j), information ``weight * I`` (ORB-SLAM: I). Stereo and RGB-D
maps (``sim3=False``) are metric: the binding's ``VertexSim3Expmap`` cannot
fix its scale, so they take the slam3d types ``VertexSE3`` (holding
``T_w_c``) / ``EdgeSE3`` (measurement ``T_i_j``), whose error
``(t, q_xyz)`` of ``T_i_j^-1 T_w_i^-1 T_w_j`` is also local to a camera;
the rotation rows get 4x the weight since ``q_xyz ~ phi / 2``, to match a
``log`` error. Not ``EdgeSE3Expmap``: on ``T_c_w`` vertices its error
``log(T_w_j T_j_i T_i_w)`` lives in the world frame, so identity information
weighs rotation errors by the distance to the world origin (measured: it
undid only 44 % of the drift on the test loop).

The flow (ORB-SLAM's CorrectLoop): the verified loop gives the current
keyframe's corrected ``S_c_w``; :func:`propagate_correction` moves its
covisible neighbourhood with it; :func:`essential_graph` lists the edges
(spanning tree, covisibility >= 100, previous loops);
:func:`optimize_essential_graph` measures those edges on the poses before the
correction, the new loop edges on the corrected ones, and optimises with the
loop keyframe fixed; :func:`correct_points` then moves each map point with
its reference keyframe.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import g2opy
import numpy as np

from slam.geometry.se3 import inv_pose, make_pose, sim3_inverse, sim3_scale

log = logging.getLogger(__name__)

MIN_COVIS_WEIGHT = 100  # ORB-SLAM: covisibility edges of the essential graph share >= 100 map points


@dataclass(frozen=True)
class PoseGraphEdge:
    """Relative measurement ``S_j_i`` (4x4, camera i -> camera j) with information ``weight * I``."""

    i: int
    j: int
    S_j_i: np.ndarray
    weight: float = 1.0
    kind: str = "tree"  # tree | covis | loop | new_loop (for logs and tests)


@dataclass
class EssentialGraphResult:
    """Optimised keyframe poses: ``S_c_w`` (similarity), ``T_c_w`` (rigid, ``[R, t / s]``) and ``scale`` s."""

    S_c_w: dict[int, np.ndarray]
    T_c_w: dict[int, np.ndarray]
    scale: dict[int, float]
    edges: list[PoseGraphEdge] = field(default_factory=list)
    seconds: float = 0.0


def _split(S: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """``(R, t, s)`` of a 4x4 similarity (g2o normalises R through its quaternion)."""
    S = np.asarray(S, dtype=np.float64)
    s = float(np.cbrt(np.linalg.det(S[:3, :3])))
    return S[:3, :3] / s, S[:3, 3].copy(), s


def _to_g2o(S: np.ndarray, sim3: bool):
    """g2o value of a vertex (``S_c_w``) or measurement (``S_j_i``): Sim3 as is, SE3 inverted (``T_w_c``, ``T_i_j``)."""
    R, t, s = _split(S)
    if sim3:
        return g2opy.Sim3(R, t, s)
    return g2opy.Isometry3d(R.T, (-R.T @ t).reshape(3, 1))


def _from_g2o(est, sim3: bool) -> np.ndarray:
    if sim3:
        return make_pose(est.rotation().matrix(), est.translation(), est.scale())
    return inv_pose(np.asarray(est.matrix(), dtype=np.float64))


def relative(S_j_w: np.ndarray, S_i_w: np.ndarray) -> np.ndarray:
    """``S_j_i = S_j_w S_i_w^-1`` (works for rigid and similarity transforms)."""
    return np.asarray(S_j_w, dtype=np.float64) @ sim3_inverse(S_i_w)


def optimize_pose_graph(
    S_c_w: Mapping[int, np.ndarray],
    edges: Sequence[PoseGraphEdge],
    fixed: Collection[int],
    sim3: bool,
    iterations: int = 20,
) -> dict[int, np.ndarray]:
    """Levenberg-Marquardt over the keyframe poses of ``S_c_w`` (initial values) with ``edges``; returns new ``S_c_w``.

    Keyframes in ``fixed`` keep their pose; with ``sim3=False`` every pose must
    be rigid and the result is rigid. Edges naming an unknown keyframe raise
    ``KeyError``.
    """
    if not fixed:
        raise ValueError("pose graph: at least one keyframe must be fixed (gauge freedom)")
    opt = g2opy.SparseOptimizer()
    if sim3:
        solver = g2opy.BlockSolverSim3(g2opy.LinearSolverEigenSim3())
    else:
        solver = g2opy.BlockSolverSE3(g2opy.LinearSolverEigenSE3())
    opt.set_algorithm(g2opy.OptimizationAlgorithmLevenberg(solver))
    vertices = {}
    fixed = set(fixed)
    for vid, kf in enumerate(S_c_w):
        v = g2opy.VertexSim3Expmap() if sim3 else g2opy.VertexSE3()
        v.set_id(vid)
        v.set_estimate(_to_g2o(S_c_w[kf], sim3))
        v.set_fixed(kf in fixed)
        opt.add_vertex(v)
        vertices[kf] = v
    info = np.eye(7) if sim3 else np.diag([1.0, 1.0, 1.0, 4.0, 4.0, 4.0])
    keep = []  # the binding does not own the edges: keep them alive until optimize() ran
    for e in edges:
        if e.i not in vertices or e.j not in vertices:
            raise KeyError(f"pose graph: edge {e.i} -> {e.j} ({e.kind}) names a keyframe without a pose")
        edge = g2opy.EdgeSim3() if sim3 else g2opy.EdgeSE3()
        edge.set_vertex(0, vertices[e.i])
        edge.set_vertex(1, vertices[e.j])
        edge.set_measurement(_to_g2o(e.S_j_i, sim3))
        edge.set_information(float(e.weight) * info)
        opt.add_edge(edge)
        keep.append(edge)
    opt.initialize_optimization(0)
    opt.optimize(int(iterations))  # ORB-SLAM: 20; g2o runs them all (stopping early on a cost plateau lost accuracy)
    return {kf: _from_g2o(v.estimate(), sim3) for kf, v in vertices.items()}


def essential_graph(
    parent: Mapping[int, int | None],
    covisibility: Mapping[tuple[int, int], int],
    loop_pairs: Iterable[tuple[int, int]] = (),
    min_weight: int = MIN_COVIS_WEIGHT,
) -> list[tuple[int, int, str]]:
    """The essential graph's edges ``(i, j, kind)``: spanning tree, previous loops, strong covisibility.

    ``parent``: keyframe id -> its spanning-tree parent (None for the root);
    ``covisibility``: ``(a, b)`` -> number of shared map points (either order,
    duplicates merged); ``loop_pairs``: loop edges of earlier closures. An
    unordered pair appears once, with the first kind in the order tree, loop,
    covis.
    """
    out: list[tuple[int, int, str]] = []
    seen: set[tuple[int, int]] = set()

    def add(a: int, b: int, kind: str) -> None:
        key = (min(a, b), max(a, b))
        if a != b and key not in seen:
            seen.add(key)
            out.append((key[0], key[1], kind))

    for kf, p in parent.items():
        if p is not None:
            add(p, kf, "tree")
    for a, b in loop_pairs:
        add(a, b, "loop")
    for (a, b), w in covisibility.items():
        if w >= min_weight:
            add(a, b, "covis")
    return out


def propagate_correction(
    T_c_w: Mapping[int, np.ndarray], current: int, S_cur_w_corrected: np.ndarray
) -> dict[int, np.ndarray]:
    """Corrected ``S_i_w`` for each keyframe of ``T_c_w`` (the current keyframe and its covisible neighbours).

    Each keeps its pose relative to ``current``: ``S_i_w = (T_i_w T_cur_w^-1) S_cur_w_corrected``.
    """
    T_w_cur = sim3_inverse(T_c_w[current])
    S = np.asarray(S_cur_w_corrected, dtype=np.float64)
    return {kf: np.asarray(T, dtype=np.float64) @ T_w_cur @ S for kf, T in T_c_w.items()}


def optimize_essential_graph(
    T_c_w: Mapping[int, np.ndarray],
    graph_edges: Iterable[tuple[int, int, str]],
    new_loop_edges: Iterable[tuple[int, int]],
    corrected_S_c_w: Mapping[int, np.ndarray],
    fixed: Collection[int],
    sim3: bool,
    iterations: int = 20,
    weight: float = 1.0,
) -> EssentialGraphResult:
    """ORB-SLAM's OptimizeEssentialGraph on arrays.

    ``T_c_w``: every keyframe's pose before the loop correction (rigid 4x4);
    ``graph_edges``: :func:`essential_graph`'s edges, measured on ``T_c_w``;
    ``new_loop_edges``: ``(i, j)`` pairs the loop fusion connected, measured
    on the corrected poses; ``corrected_S_c_w``: :func:`propagate_correction`'s
    poses, also the initial values of those keyframes; ``fixed``: the loop
    keyframe (ORB-SLAM fixes it). Returns similarity, rigid and scale per keyframe.
    """
    t0 = time.perf_counter()
    init = {kf: np.asarray(corrected_S_c_w.get(kf, T), dtype=np.float64) for kf, T in T_c_w.items()}
    edges = [PoseGraphEdge(i, j, relative(T_c_w[j], T_c_w[i]), weight, kind) for i, j, kind in graph_edges]
    edges += [PoseGraphEdge(i, j, relative(init[j], init[i]), weight, "new_loop") for i, j in new_loop_edges]
    if not sim3:
        for kf, S in corrected_S_c_w.items():
            if abs(sim3_scale(S) - 1.0) > 1e-6:
                raise ValueError(f"pose graph: rigid (sim3=False) graph got keyframe {kf} corrected with scale "
                                 f"{sim3_scale(S):.6f}")
    S_opt = optimize_pose_graph(init, edges, fixed, sim3, iterations)
    T_opt, scale = {}, {}
    for kf, S in S_opt.items():
        R, t, s = _split(S)
        T_opt[kf], scale[kf] = make_pose(R, t / s), s
    dt = time.perf_counter() - t0
    log.info("essential graph: %d keyframes, %d edges (%d new loop), %s, %.1f ms", len(init), len(edges),
             sum(e.kind == "new_loop" for e in edges), "Sim3" if sim3 else "SE3", 1e3 * dt)
    return EssentialGraphResult(S_c_w=S_opt, T_c_w=T_opt, scale=scale, edges=edges, seconds=dt)


def correct_points(
    points_w: np.ndarray,
    ref_kf: np.ndarray,
    S_c_w_before: Mapping[int, np.ndarray],
    S_c_w_after: Mapping[int, np.ndarray],
) -> np.ndarray:
    """Move each map point with its reference keyframe: ``X' = S_after^-1 S_before X`` (N, 3 -> N, 3).

    ``points_w``: (N, 3) world points; ``ref_kf``: (N,) reference keyframe id
    of each point. Points whose reference keyframe is missing from either
    mapping are returned unchanged.
    """
    X = np.asarray(points_w, dtype=np.float64)
    ref = np.asarray(ref_kf)
    if X.ndim != 2 or X.shape[1] != 3 or ref.shape != (X.shape[0],):
        raise ValueError(f"correct_points: need (N, 3) points and (N,) ids, got {X.shape} and {ref.shape}")
    out = X.copy()
    ids, inv = np.unique(ref, return_inverse=True)
    M = np.zeros((len(ids), 4, 4))
    known = np.zeros(len(ids), bool)
    for k, kf in enumerate(ids.tolist()):
        if kf in S_c_w_before and kf in S_c_w_after:
            M[k] = sim3_inverse(S_c_w_after[kf]) @ np.asarray(S_c_w_before[kf], dtype=np.float64)
            known[k] = True
    m = known[inv]
    Mi = M[inv[m]]
    out[m] = np.einsum("nij,nj->ni", Mi[:, :3, :3], X[m]) + Mi[:, :3, 3]
    return out
