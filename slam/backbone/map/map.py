"""The shared map: keyframes, map points, the covisibility graph and the spanning tree.

Tracking, local mapping and loop closing share one :class:`Map`. Every public
method of ``Map`` takes ``map.lock`` (a re-entrant lock that hands itself to the
tracking thread first, :class:`~slam.backbone.map.fair_lock.FairRLock`) for its duration, so
single calls are atomic. A caller that makes several calls which must see or
leave a consistent map (read a keyframe's points then their positions; create
a point then associate it elsewhere; iterate over ``map.keyframes`` or
``map.points``) holds the lock around them::

    with map.lock:
        p = map.new_point(X, kf, i)
        map.associate(other_kf, j, p)

``map.update_lock`` (ORB-SLAM's map-update mutex) orders the two things that
must not interleave: tracking a frame and recording its pose against its
reference keyframe (the tracker holds it for the whole frame), and writing
optimised keyframe poses and point positions back (local BA holds it, with
``map.lock``, for the write only, never for the solve). A frame is thus tracked
and recorded against one version of the geometry. Take ``update_lock`` before
``map.lock``, never the other way round.

Point and keyframe ids are handed out by the map, densely and never reused;
point numbers used every frame by tracking are gathered from stacked arrays
(:meth:`Map.points_array`, :meth:`Map.descriptors_of`, ...) in one fancy index.
"""

from __future__ import annotations

import functools
import logging
import weakref
from typing import NamedTuple

import numpy as np

from slam.backbone.frontend.features import Features
from slam.geometry.camera import PinholeCamera
from slam.backbone.map.fair_lock import FairRLock
from slam.backbone.map.keyframe import KeyFrame
from slam.backbone.map.mappoint import MapPoint, PointArrays, distinctive_index
from slam.trajectory import Trajectory

__all__ = ["KeyFrame", "LocalWindow", "Map", "MapPoint"]

log = logging.getLogger(__name__)


def _locked(method):
    """Run the method with ``self.lock`` held."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self.lock:
            return method(self, *args, **kwargs)

    return wrapper


class LocalWindow(NamedTuple):
    """What local bundle adjustment optimises around a keyframe."""

    keyframe_ids: list[int]  # the keyframe and its best covisibles (optimised)
    point_ids: np.ndarray  # (P,) int64, good points seen by those keyframes (optimised)
    fixed_ids: list[int]  # other keyframes seeing those points (held fixed), most shared points first


class Map:
    """Keyframes and map points with their observations and graphs; see the module docstring for locking."""

    def __init__(
        self,
        camera: PinholeCamera | None = None,
        scale_factor: float = 1.2,
        n_levels: int = 8,
        min_point_obs: int = 2,
    ):
        self.lock = FairRLock()
        self.update_lock = FairRLock()  # tracking a frame vs writing optimised poses back (module docstring)
        self.camera = camera
        self.scale_factor = float(scale_factor)  # ORB pyramid scale between levels
        self.n_levels = int(n_levels)  # ORB pyramid levels
        self.min_point_obs = int(min_point_obs)  # a point losing an observation below this turns bad
        self._init_state()

    def _init_state(self) -> None:
        self.keyframes: dict[int, KeyFrame] = {}
        self.points: dict[int, MapPoint] = {}
        self.next_kf_id = 0
        self.next_point_id = 0
        self.root_id = -1  # the first keyframe: never erased, root of the spanning tree
        # keyframes that start a map (the root, and the first keyframe after tracking was lost and a new
        # map started): the only keyframes without a parent
        self.origins: set[int] = set()
        # erased keyframe id -> (parent id, T_c_parent), to recover poses of frames tracked against it
        self.erased_keyframes: dict[int, tuple[int, np.ndarray]] = {}
        self.replaced: dict[int, int] = {}  # fused point id -> the id it was fused into
        # +1 each time loop closing or global BA moves the whole map (under update_lock): tracking then
        # re-expresses its last frame through its reference keyframe (Tracker._follow_map_corrections)
        self.corrections = 0
        self._arrays = PointArrays()

    def __repr__(self) -> str:
        return f"Map(keyframes={len(self.keyframes)}, points={len(self.points)})"

    def _kf(self, kf: KeyFrame | int) -> KeyFrame:
        return kf if isinstance(kf, KeyFrame) else self.keyframes[int(kf)]

    def _pt(self, p: MapPoint | int) -> MapPoint:
        return p if isinstance(p, MapPoint) else self.points[int(p)]

    def _live_kf(self, kf: KeyFrame | int) -> KeyFrame:
        kf = self._kf(kf)
        if kf.bad or self.keyframes.get(kf.id) is not kf:
            raise ValueError(f"{kf!r} is not a good keyframe of this map")
        return kf

    # ------------------------------------------------------------ adding
    @_locked
    def add_keyframe(self, kf: KeyFrame) -> KeyFrame:
        """Insert ``kf``; a negative id gets the next free one. The first keyframe becomes the root."""
        if kf.id < 0:
            kf.id = self.next_kf_id
        if kf.id < self.next_kf_id:
            raise ValueError(f"keyframe id {kf.id} is or was in use (ids are never reused; next free {self.next_kf_id})")
        self.next_kf_id = max(self.next_kf_id, kf.id + 1)
        self.keyframes[kf.id] = kf
        kf._map = weakref.ref(self)
        if self.root_id < 0:
            self.root_id = kf.id
            self.origins.add(kf.id)
        return kf

    @_locked
    def new_keyframe(self, frame_index: int, timestamp: float, T_c_w: np.ndarray, features: Features,
                     starts_map: bool = False, thumbnail: np.ndarray | None = None) -> KeyFrame:
        """Create and insert a keyframe with no map points yet (arguments in :class:`KeyFrame` order).

        ``starts_map``: the keyframe begins a new map (tracking initialised again after it was lost):
        it has no parent in the spanning tree, and :meth:`check_consistency` accepts that.
        ``thumbnail``: the frame's small image (:func:`slam.backbone.loop.place.thumbnail`), or None.
        """
        kf = self.add_keyframe(KeyFrame(-1, frame_index, timestamp, T_c_w, features))
        kf.thumbnail = thumbnail
        if starts_map:
            self.origins.add(kf.id)
        return kf

    @_locked
    def add_point(self, point: MapPoint) -> MapPoint:
        """Insert ``point`` (its numbers move into the map's arrays). Its observations must already
        agree with the keyframes' ``point_ids``; use :meth:`associate` to add more."""
        if point.id < 0:
            point.id = self.next_point_id
        if point.id < self.next_point_id:
            raise ValueError(f"point id {point.id} is or was in use (ids are never reused; next free {self.next_point_id})")
        point.bind(self._arrays)
        self.next_point_id = max(self.next_point_id, point.id + 1)
        self.points[point.id] = point
        return point

    @_locked
    def new_point(
        self,
        position: np.ndarray,
        kf: KeyFrame | int,
        kp_idx: int,
        descriptor: np.ndarray | None = None,
        update: bool = True,
    ) -> MapPoint:
        """Create a point at world ``position`` seen by keypoint ``kp_idx`` of ``kf`` (its reference keyframe).

        The descriptor defaults to the keypoint's; with ``update`` the normal and
        distance range are computed from that single observation.
        """
        kf = self._live_kf(kf)
        if descriptor is None:
            descriptor = kf.features.desc[kp_idx]
        p = MapPoint(self.next_point_id, position, descriptor, ref_kf_id=kf.id, arrays=self._arrays)
        self.next_point_id += 1
        self.points[p.id] = p
        self.associate(kf, kp_idx, p)
        if update:
            self.refresh_points(np.array([p.id]), descriptors=False)
        return p

    @_locked
    def new_points(self, positions: np.ndarray, kf: KeyFrame | int, kp_idx: np.ndarray) -> np.ndarray:
        """Create points at world ``positions`` (K, 3) seen by free keypoints ``kp_idx`` (K,) of ``kf``.

        The batch form of :meth:`new_point` for the hundreds of points a stereo/RGB-D keyframe adds:
        normals and distance ranges are set in one :meth:`refresh_points`. Returns the new ids.
        """
        kf = self._live_kf(kf)
        kp_idx = np.asarray(kp_idx, dtype=np.int64).reshape(-1)
        X = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
        if np.any(kf.point_ids[kp_idx] >= 0):
            raise ValueError("new_points: some keypoints already have a map point")
        ids = np.arange(self.next_point_id, self.next_point_id + len(kp_idx), dtype=np.int64)
        for pid, X_i, kp in zip(ids.tolist(), X, kp_idx.tolist()):
            p = MapPoint(pid, X_i, kf.features.desc[kp], ref_kf_id=kf.id, arrays=self._arrays)
            self.points[pid] = p
            p.add_observation(kf.id, kp)
        self.next_point_id += len(kp_idx)
        kf.point_ids[kp_idx] = ids
        self.refresh_points(ids, descriptors=False)
        return ids

    @_locked
    def associate(self, kf: KeyFrame | int, kp_idx: int, point: MapPoint | int) -> None:
        """Link keypoint ``kp_idx`` of ``kf`` and ``point`` on both sides.

        A point already at that keypoint loses this observation (and may turn
        bad); if ``point`` was seen at another keypoint of ``kf``, that link is dropped.
        """
        kf, point = self._live_kf(kf), self._pt(point)
        if point.bad or self.points.get(point.id) is not point:
            raise ValueError(f"cannot associate {point!r}: it is not a good point of this map")
        kp_idx = int(kp_idx)
        old = int(kf.point_ids[kp_idx])
        if old == point.id and point.observations.get(kf.id) == kp_idx:
            return
        if old >= 0 and old != point.id and old in self.points:
            self.erase_observation(kf, old)
        prev = point.observations.pop(kf.id, None)
        if prev is not None and kf.point_ids[prev] == point.id:
            kf.point_ids[prev] = -1
        kf.point_ids[kp_idx] = point.id
        point.add_observation(kf.id, kp_idx)

    # ---------------------------------------------------------- removing
    @_locked
    def erase_observation(self, kf: KeyFrame | int, point: MapPoint | int) -> bool:
        """Unlink ``kf`` and ``point`` (order as in :meth:`associate`); True if the point turned bad and was erased."""
        kf, point = self._kf(kf), self._pt(point)
        idx = point.observations.get(kf.id)
        if idx is None:
            return False
        if kf.point_ids[idx] == point.id:
            kf.point_ids[idx] = -1
        if point.erase_observation(kf.id, self.min_point_obs) or point.bad:
            self.erase_point(point)
            return True
        return False

    @_locked
    def erase_point(self, point: MapPoint | int) -> None:
        """Mark the point bad and remove it from the map and from every keyframe that sees it."""
        point = self._pt(point)
        point.bad = True
        for kf_id, idx in point.observations.items():
            kf = self.keyframes.get(kf_id)
            if kf is not None and kf.point_ids[idx] == point.id:
                kf.point_ids[idx] = -1
        point.observations.clear()
        if self.points.get(point.id) is point:
            del self.points[point.id]

    @_locked
    def erase_keyframe(self, kf: KeyFrame | int) -> bool:
        """Remove a keyframe (ORB-SLAM's ``SetBadFlag``, simplified); False for a root (no parent) or a bad one.

        Its covisibility edges and point observations go (points left with too
        few observations are erased). Its children are re-attached to the
        spanning tree: repeatedly, the (child, candidate) pair with the most
        shared points is joined, where candidates start as the erased
        keyframe's parent and grow by every re-attached child; children with
        no covisible candidate go to the parent. The pose relative to the
        parent is kept in ``erased_keyframes`` (see :meth:`keyframe_pose`).
        """
        kf = self._kf(kf)
        if kf.bad or kf.id == self.root_id or kf.parent_id not in self.keyframes:
            # A keyframe without a parent anchors its part of the tree (the first keyframe of a map
            # started after tracking was lost): frames tracked against it need its pose.
            return False
        for k in list(kf.connections):
            other = self.keyframes.get(k)
            if other is not None:
                other.erase_connection(kf.id)
            kf.erase_connection(k)
        for pid in kf.point_ids[kf.point_ids >= 0].tolist():
            if pid in self.points:
                self.erase_observation(kf, pid)

        parent = self.keyframes.get(kf.parent_id)
        candidates = {parent.id} if parent is not None else set()
        children = {c for c in kf.children if c in self.keyframes and not self.keyframes[c].bad}
        while children and candidates:
            best: tuple[int, int, int] | None = None  # (weight, child, candidate)
            for c in sorted(children):
                for cand, w in sorted(self.keyframes[c].connections.items()):
                    if cand in candidates and (best is None or w > best[0]):
                        best = (w, c, cand)
            if best is None:
                break
            _, c, cand = best
            self._set_parent(self.keyframes[c], cand)
            candidates.add(c)
            children.discard(c)
        for c in children:
            self._set_parent(self.keyframes[c], parent.id if parent is not None else -1)
        if parent is not None:
            parent.children.discard(kf.id)
            kf.T_c_parent = kf.T_c_w @ parent.T_w_c
            self.erased_keyframes[kf.id] = (parent.id, kf.T_c_parent)
        kf.children.clear()
        self._remove_keyframe(kf)
        return True

    def _remove_keyframe(self, kf: KeyFrame) -> None:
        """The last step of erasing or discarding: loop edges to it go, it is marked bad and leaves the map."""
        for k in kf.loop_edges:
            if k in self.keyframes:
                self.keyframes[k].loop_edges.discard(kf.id)
        kf.bad = True
        del self.keyframes[kf.id]

    @_locked
    def discard_keyframe(self, kf: KeyFrame | int) -> None:
        """Undo the creation of a keyframe that local mapping never took (its queue was full or stopped).

        Unlike :meth:`erase_keyframe` nothing of it is kept: the points created from it are erased,
        its observations of older points are dropped (those points keep the observations they had
        before, even if that is one), its covisibility edges and its spanning-tree link go, and no
        pose is kept for it (no frame may have been recorded against it). A keyframe that already
        has children cannot be discarded.
        """
        kf = self._kf(kf)
        if kf.bad or self.keyframes.get(kf.id) is not kf:
            raise ValueError(f"{kf!r} is not a good keyframe of this map")
        if any(c in self.keyframes for c in kf.children):
            raise ValueError(f"{kf!r} has children: local mapping has used it, erase it instead")
        for k in list(kf.connections):
            other = self.keyframes.get(k)
            if other is not None:
                other.erase_connection(kf.id)
            kf.erase_connection(k)
        rerefer = []
        for i, pid in zip(*kf.matched()):
            p = self.points.get(int(pid))
            kf.point_ids[i] = -1
            if p is None:
                continue
            if p.first_kf_id == kf.id:
                self.erase_point(p)
                continue
            p.observations.pop(kf.id, None)
            if p.ref_kf_id == kf.id:
                p.ref_kf_id = next(iter(p.observations), -1)
                rerefer.append(p.id)
        if rerefer:
            self.refresh_points(np.array(rerefer, np.int64))
        parent = self.keyframes.get(kf.parent_id)
        if parent is not None:
            parent.children.discard(kf.id)
        kf.parent_id = -1
        kf.children.clear()
        self._remove_keyframe(kf)
        self.origins.discard(kf.id)
        if kf.id == self.root_id:
            self.root_id = min(self.origins) if self.origins else (min(self.keyframes) if self.keyframes else -1)
            if self.root_id >= 0:
                self.origins.add(self.root_id)

    def _set_parent(self, child: KeyFrame, parent_id: int) -> None:
        old = self.keyframes.get(child.parent_id)
        if old is not None:
            old.children.discard(child.id)
        child.parent_id = parent_id
        if parent_id >= 0:
            self.keyframes[parent_id].children.add(child.id)

    @_locked
    def replace_point(self, old: MapPoint | int, new: MapPoint | int) -> MapPoint:
        """Fuse duplicate ``old`` into ``new``: ``new`` takes over the observations and counters.

        A keyframe that already sees ``new`` just drops its ``old`` keypoint
        link. ``old`` is erased with ``replaced_by = new.id``; its id still
        resolves through :meth:`resolve_point_id`. Returns ``new``.
        """
        old, new = self._pt(old), self._pt(new)
        if old is new:
            return new
        if new.bad:
            raise ValueError(f"cannot fuse into bad point {new!r}")
        for kf_id, idx in old.observations.items():
            kf = self.keyframes.get(kf_id)
            if kf is None:
                continue
            if kf_id in new.observations:
                kf.point_ids[idx] = -1
            else:
                kf.point_ids[idx] = new.id
                new.add_observation(kf_id, idx)
        new.n_visible += old.n_visible
        new.n_found += old.n_found
        old.observations.clear()
        old.replaced_by = new.id
        self.replaced[old.id] = new.id
        self.erase_point(old)
        self.refresh_points(np.array([new.id]))
        return new

    @_locked
    def resolve_point_id(self, point_id: int) -> int:
        """The id of the live point ``point_id`` now is (following fusions), or -1 if it was erased."""
        pid = int(point_id)
        for _ in range(len(self.replaced) + 1):
            if pid in self.points:
                return pid
            pid = self.replaced.get(pid, -1)
            if pid < 0:
                return -1
        return -1

    @_locked
    def observation_table(self, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Every observation of points ``ids`` by a keyframe in the map, as flat arrays.

        Returns ``(row, kf, kp)``: the index into ``ids`` of the observed point, the
        keyframe id and the keypoint index, grouped by point in ``ids`` order.
        Bad or unknown ids contribute nothing.
        """
        keyframes, points = self.keyframes, self.points
        row, kf, kp = [], [], []
        for r, pid in enumerate(np.asarray(ids, dtype=np.int64).reshape(-1).tolist()):
            p = points.get(pid)
            if p is None or p.bad:
                continue
            for k, i in p.observations.items():
                if k in keyframes:
                    row.append(r)
                    kf.append(k)
                    kp.append(i)
        return np.array(row, np.int64), np.array(kf, np.int64), np.array(kp, np.int64)

    @_locked
    def refresh_points(self, ids: np.ndarray, descriptors: bool = True) -> None:
        """Recompute the mean viewing direction, the scale-invariance distance range and (with
        ``descriptors``) the distinctive descriptor of points ``ids`` from their observations.

        ORB-SLAM's rules: the normal is the mean of the unit rays from the observing keyframes'
        centres; ``max = |X - C_ref| * f^level`` with ``level`` the octave of the reference
        keyframe's keypoint (the first observation takes over when the reference keyframe is
        gone), ``min = max / f^(n_levels - 1)``; the descriptor is the observation descriptor with
        the least median Hamming distance to the others (:func:`distinctive_index`). Vectorised over
        the points: local mapping refreshes hundreds per keyframe. Bad or unknown ids are skipped.
        """
        ids = np.unique(np.asarray(ids, dtype=np.int64).reshape(-1))
        ids = ids[self.valid_mask(ids)]
        if len(ids) == 0:
            return
        keyframes, points = self.keyframes, self.points
        # One row per observation (in each point's observation order) of a keyframe still in the map.
        obs_pt, obs_kf, obs_kp, ref_obs, rows = [], [], [], [], []
        for pid in ids.tolist():
            p = points[pid]
            start, ref = len(obs_kf), -1
            for k, i in p.observations.items():
                if k in keyframes:
                    if k == p.ref_kf_id:
                        ref = len(obs_kf)
                    obs_kf.append(k)
                    obs_kp.append(i)
            if len(obs_kf) == start:
                continue  # no keyframe left: nothing to recompute (as the per-point method)
            if ref < 0:  # the reference keyframe is gone: the first observation takes over
                ref = start
                p.ref_kf_id = obs_kf[start]
            obs_pt.extend([len(rows)] * (len(obs_kf) - start))
            ref_obs.append(ref)
            rows.append(pid)
        if not rows:
            return
        rows = np.array(rows, np.int64)
        obs_pt, obs_kp, ref_obs = np.array(obs_pt, np.int64), np.array(obs_kp, np.int64), np.array(ref_obs, np.int64)
        kf_ids = np.array(obs_kf, np.int64)
        uniq, kf_of_obs = np.unique(kf_ids, return_inverse=True)
        kfs = [keyframes[int(k)] for k in uniq]
        centers = np.array([kf.center for kf in kfs])
        a = self._arrays
        dirs = a.position[rows][obs_pt] - centers[kf_of_obs]
        norms = np.sqrt(np.einsum("ij,ij->i", dirs, dirs))
        unit = dirs / np.maximum(norms, 1e-12)[:, None]
        mean = np.zeros((len(rows), 3))
        np.add.at(mean, obs_pt, unit)
        a.normal[rows] = mean / np.maximum(np.linalg.norm(mean, axis=1), 1e-12)[:, None]
        octave = np.empty(len(kf_ids), np.int64)
        desc = np.empty((len(kf_ids), a.descriptor.shape[1]), np.uint8) if descriptors else None
        for j, kf in enumerate(kfs):  # per keyframe, one fancy index into its features
            sel = np.flatnonzero(kf_of_obs == j)
            octave[sel] = kf.features.octave[obs_kp[sel]]
            if descriptors:
                desc[sel] = kf.features.desc[obs_kp[sel]]
        max_d = norms[ref_obs] * self.scale_factor ** octave[ref_obs]
        a.distance[rows, 1] = max_d
        a.distance[rows, 0] = max_d / self.scale_factor ** (self.n_levels - 1)
        if descriptors:
            first = np.searchsorted(obs_pt, np.arange(len(rows)))  # observations are grouped by point
            count = np.diff(np.append(first, len(obs_pt)))
            a.descriptor[rows] = desc[first + distinctive_index(desc, first, count)]

    @_locked
    def update_point(self, point: MapPoint | int) -> None:
        """Recompute a point's distinctive descriptor, normal and distance range after its observations changed."""
        self.refresh_points(np.array([self._pt(point).id]))

    # ----------------------------------------------- local bundle adjustment
    @_locked
    def local_window(self, kf: KeyFrame | int, n_covisible: int = 20, max_fixed: int = 30) -> LocalWindow:
        """Keyframes, points and fixed keyframes of a local BA around ``kf``.

        Local keyframes: ``kf`` and its ``n_covisible`` best covisibles. Local
        points: the good points they see. Fixed keyframes: the other keyframes
        seeing local points, the ``max_fixed`` with the most of them.
        """
        kf = self._kf(kf)
        local = [kf.id] + [k for k in kf.covisibles(n_covisible) if k in self.keyframes]
        ids = np.unique(np.concatenate([self.keyframes[k].point_ids for k in local]))
        ids = ids[ids >= 0]
        ids = ids[self._arrays.valid[ids]]
        local_set = set(local)
        counts: dict[int, int] = {}
        points = self.points
        for pid in ids.tolist():
            for k in points[pid].observations:
                if k not in local_set:
                    counts[k] = counts.get(k, 0) + 1
        ranked = sorted((kv for kv in counts.items() if kv[0] in self.keyframes), key=lambda kv: (-kv[1], kv[0]))
        return LocalWindow(local, ids.astype(np.int64), [k for k, _ in ranked[:max_fixed]])

    # ------------------------------------------------- stacked point numbers
    def _rows(self, ids: np.ndarray) -> np.ndarray:
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        if ids.size and ids.min() < 0:
            raise ValueError("negative point id (-1 means no point): select point_ids >= 0 first")
        return ids

    @_locked
    def points_array(self, ids: np.ndarray) -> np.ndarray:
        """(P, 3) world positions of points ``ids``. Rows of erased points hold stale values: see :meth:`valid_mask`."""
        return self._arrays.position[self._rows(ids)]

    positions_of = points_array

    @_locked
    def descriptors_of(self, ids: np.ndarray) -> np.ndarray:
        """(P, 32) uint8 distinctive descriptors of points ``ids``."""
        return self._arrays.descriptor[self._rows(ids)]

    @_locked
    def normals_of(self, ids: np.ndarray) -> np.ndarray:
        """(P, 3) unit mean viewing directions of points ``ids``."""
        return self._arrays.normal[self._rows(ids)]

    @_locked
    def distance_ranges_of(self, ids: np.ndarray) -> np.ndarray:
        """(P, 2) scale-invariance range ``[min_distance, max_distance]`` in metres of points ``ids``."""
        return self._arrays.distance[self._rows(ids)]

    @_locked
    def valid_mask(self, ids: np.ndarray) -> np.ndarray:
        """(P,) bool: which of ``ids`` are good points of this map."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        ok = (ids >= 0) & (ids < self._arrays.capacity)
        out = np.zeros(ids.shape[0], dtype=bool)
        out[ok] = self._arrays.valid[ids[ok]]
        return out

    @_locked
    def set_positions(self, ids: np.ndarray, positions: np.ndarray) -> None:
        """Write (P, 3) world positions of points ``ids`` (e.g. after bundle adjustment)."""
        self._arrays.position[self._rows(ids)] = np.asarray(positions, dtype=np.float64).reshape(-1, 3)

    @_locked
    def count_visible(self, ids: np.ndarray, n: int = 1) -> None:
        """Add ``n`` to ``n_visible`` of points ``ids`` (predicted inside a frame's frustum)."""
        np.add.at(self._arrays.counts[:, 0], self._rows(ids), n)

    @_locked
    def count_found(self, ids: np.ndarray, n: int = 1) -> None:
        """Add ``n`` to ``n_found`` of points ``ids`` (matched in a frame)."""
        np.add.at(self._arrays.counts[:, 1], self._rows(ids), n)

    # ----------------------------------------------------------- queries
    @_locked
    def keyframe_ids(self) -> list[int]:
        """Ids of the keyframes, ascending (a snapshot: safe to iterate without the lock)."""
        return sorted(self.keyframes)

    @_locked
    def point_ids(self) -> np.ndarray:
        """(P,) int64 ids of the points, ascending (a snapshot)."""
        return np.array(sorted(self.points), dtype=np.int64)

    @_locked
    def keyframe_pose(self, kf_id: int) -> np.ndarray:
        """``T_c_w`` of keyframe ``kf_id``, also for an erased one (through its parents, as when erased)."""
        T = np.eye(4)
        k = int(kf_id)
        for _ in range(len(self.erased_keyframes) + 1):
            if k in self.keyframes:
                return T @ self.keyframes[k].T_c_w
            if k not in self.erased_keyframes:
                break
            k, T_c_p = self.erased_keyframes[k]
            T = T @ T_c_p
        raise KeyError(f"keyframe {kf_id} is not in the map and its pose cannot be recovered")

    @_locked
    def keyframe_trajectory(self) -> Trajectory:
        """``T_w_c`` of the good keyframes, ordered by timestamp."""
        kfs = sorted((k for k in self.keyframes.values() if not k.bad), key=lambda k: (k.timestamp, k.id))
        return Trajectory(np.array([k.timestamp for k in kfs]), np.array([k.T_w_c for k in kfs]).reshape(-1, 4, 4))

    @_locked
    def reset(self) -> None:
        """Forget everything (ids restart at 0); settings and camera stay."""
        log.info("map reset: dropping %d keyframes and %d points", len(self.keyframes), len(self.points))
        for p in self.points.values():
            p.bad = True
        for kf in self.keyframes.values():
            kf.bad = True
        self._init_state()

    @_locked
    def stats(self) -> dict:
        """Counts for logs: keyframes, points, observations, covisibility edges, ..."""
        n_obs = sum(len(p.observations) for p in self.points.values())
        return {
            "keyframes": len(self.keyframes),
            "points": len(self.points),
            "observations": n_obs,
            "mean_observations": n_obs / len(self.points) if self.points else 0.0,
            "covisibility_edges": sum(len(k.connections) for k in self.keyframes.values()) // 2,
            "loop_edges": sum(len(k.loop_edges) for k in self.keyframes.values()) // 2,
            "erased_keyframes": len(self.erased_keyframes),
            "fused_points": len(self.replaced),
            "next_kf_id": self.next_kf_id,
            "next_point_id": self.next_point_id,
        }

    @_locked
    def check_consistency(self, spanning_tree: bool = True) -> list[str]:
        """Broken invariants, as messages (empty when the map is consistent); for tests and debugging.

        Points and keyframes agree on every observation, no point is observed by a keyframe missing
        from the map, covisibility edges are mirrored with the same weight, parent and children agree,
        no bad keyframe or point is kept, and the point arrays' valid rows are the map's points. With
        ``spanning_tree`` (maps built by tracking and local mapping; not hand-made ones that never
        ran :meth:`KeyFrame.update_connections`) every keyframe but the first of a map
        (:attr:`origins`) has a parent.
        """
        problems = []
        if self.keyframes and self.root_id not in self.keyframes:
            problems.append(f"root keyframe {self.root_id} is not in the map")
        for pid, p in self.points.items():
            if p.id != pid or p.bad:
                problems.append(f"point {pid}: id {p.id} / bad {p.bad}")
            if p.observations and p.ref_kf_id not in p.observations:
                problems.append(f"point {pid}: reference keyframe {p.ref_kf_id} does not observe it")
            for k, i in p.observations.items():
                kf = self.keyframes.get(k)
                if kf is None:
                    problems.append(f"point {pid}: observed by missing keyframe {k}")
                elif kf.point_ids[i] != pid:
                    problems.append(f"point {pid}: keyframe {k} keypoint {i} holds {kf.point_ids[i]}")
        for k, kf in self.keyframes.items():
            for i, pid in zip(*kf.matched()):
                p = self.points.get(int(pid))
                if p is None or p.observations.get(k) != i:
                    problems.append(f"keyframe {k} keypoint {i}: point {pid} missing or not observed back")
            for o, w in kf.connections.items():
                other = self.keyframes.get(o)
                if other is None or other.connections.get(k) != w:
                    problems.append(f"keyframe {k}: covisibility edge to {o} (weight {w}) not mirrored")
            if kf.bad or kf.id != k:
                problems.append(f"keyframe {k}: id {kf.id} / bad {kf.bad}")
            if k in kf.connections:
                problems.append(f"keyframe {k}: covisibility edge to itself")
            if spanning_tree and kf.parent_id < 0 and k not in self.origins:
                problems.append(f"keyframe {k}: no parent, and it does not start a map")
            if kf.parent_id >= 0 and (kf.parent_id not in self.keyframes or k not in self.keyframes[kf.parent_id].children):
                problems.append(f"keyframe {k}: parent {kf.parent_id} missing or does not list it as child")
            for c in kf.children:
                if c not in self.keyframes or self.keyframes[c].parent_id != k:
                    problems.append(f"keyframe {k}: child {c} missing or has another parent")
        live = np.flatnonzero(self._arrays.valid)
        if set(live.tolist()) != set(self.points):
            problems.append("valid rows of the point arrays differ from the points in the map")
        return problems
