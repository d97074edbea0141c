"""Keyframes: a camera pose, its features, their map points, and the keyframe's place in the graphs.

Two graphs link keyframes (ORB-SLAM): the covisibility graph, weighted by the
number of map points two keyframes share, and the spanning tree (``parent_id``
/ ``children``), a sparse connected subgraph used by loop closing and for
poses of erased keyframes.
"""

from __future__ import annotations

import contextlib
import weakref
from typing import TYPE_CHECKING

import numpy as np

from slam.backbone.frontend.features import Features
from slam.geometry.se3 import inv_pose

if TYPE_CHECKING:
    from slam.backbone.map.map import Map


class KeyFrame:
    """A keyframe. ``T_c_w`` (4x4 float64) maps world points into this camera.

    ``point_ids[i]`` is the id of the map point seen by keypoint ``i`` (-1
    for none). ``connections`` maps covisible keyframe id -> number of shared
    map points (kept symmetric by :meth:`update_connections`). Edit through
    the :class:`~slam.backbone.map.map.Map` (or under ``map.lock``).
    """

    def __init__(
        self,
        id: int,
        frame_index: int,
        timestamp: float,
        T_c_w: np.ndarray,
        features: Features,
        point_ids: np.ndarray | None = None,
    ):
        self.id = int(id)
        self.frame_index = int(frame_index)
        self.timestamp = float(timestamp)
        self.T_c_w = T_c_w
        self.features = features
        n = len(features)
        if point_ids is None:
            point_ids = np.full(n, -1, dtype=np.int64)
        self.point_ids = np.asarray(point_ids, dtype=np.int64).reshape(-1)
        if self.point_ids.shape[0] != n:
            raise ValueError(f"{self.point_ids.shape[0]} point ids for {n} keypoints")
        self.connections: dict[int, int] = {}
        self._ordered: list[tuple[int, int]] | None = None  # (kf id, weight) best first, rebuilt lazily
        self.parent_id = -1
        self.children: set[int] = set()
        self.loop_edges: set[int] = set()  # keyframes linked by a closed loop (kept by loop closing)
        self.bad = False
        self.T_c_parent: np.ndarray | None = None  # pose relative to the parent, set when erased
        self._map: weakref.ref | None = None  # set by Map.add_keyframe
        # the frame's image, small (120 x 160 x 3 uint8 RGB, slam.backbone.loop.place.thumbnail), for learned
        # place recognition and pose regression; None when the frame had no image or the map file none
        self.thumbnail: np.ndarray | None = None

    def __repr__(self) -> str:
        state = " bad" if self.bad else ""
        return (
            f"KeyFrame(id={self.id}, frame={self.frame_index}, t={self.timestamp:.6f}, "
            f"points={int(np.count_nonzero(self.point_ids >= 0))}/{len(self.point_ids)}, parent={self.parent_id}{state})"
        )

    # -------------------------------------------------------------- pose
    @property
    def T_c_w(self) -> np.ndarray:
        return self._T_c_w

    @T_c_w.setter
    def T_c_w(self, T: np.ndarray) -> None:
        T = np.array(T, dtype=np.float64)
        if T.shape != (4, 4):
            raise ValueError(f"T_c_w must be 4x4, got {T.shape}")
        T.flags.writeable = False  # set a new pose, never edit it in place: the centre is cached
        self._T_c_w = T
        self._center = -T[:3, :3].T @ T[:3, 3]
        self._center.flags.writeable = False

    @property
    def T_w_c(self) -> np.ndarray:
        """Camera-to-world pose."""
        return inv_pose(self._T_c_w)

    @property
    def center(self) -> np.ndarray:
        """Camera centre in the world frame, metres (read-only array)."""
        return self._center

    # ------------------------------------------------------ covisibility
    def add_connection(self, kf_id: int, weight: int) -> None:
        if self.connections.get(kf_id) != weight:
            self.connections[int(kf_id)] = int(weight)
            self._ordered = None

    def erase_connection(self, kf_id: int) -> None:
        if self.connections.pop(kf_id, None) is not None:
            self._ordered = None

    def weight(self, kf_id: int) -> int:
        """Number of map points shared with keyframe ``kf_id`` (0 when not connected)."""
        return self.connections.get(kf_id, 0)

    def covisibles(self, n: int | None = None, min_weight: int = 0) -> list[int]:
        """Ids of connected keyframes, most shared points first (ties: lower id first)."""
        with self._lock():
            ordered = self._ordered
            if ordered is None:
                ordered = self._ordered = sorted(self.connections.items(), key=lambda kv: (-kv[1], kv[0]))
        out = []
        for kf_id, w in ordered:
            if w < min_weight or (n is not None and len(out) >= n):
                break
            out.append(kf_id)
        return out

    def _lock(self):
        """The lock of the map holding this keyframe (a no-op context outside a map)."""
        m = self._map() if self._map is not None else None
        return m.lock if m is not None else contextlib.nullcontext()

    def update_connections(self, map: Map, min_weight: int = 15) -> None:
        """Rebuild this keyframe's covisibility edges from its map points (ORB-SLAM rule).

        Connect to every keyframe sharing at least ``min_weight`` points, or to
        the single best one when none does; both sides are updated and edges
        that no longer hold are removed from both sides. A keyframe without a
        parent takes its best covisible keyframe of lower id as parent (the
        first keyframe stays the root).
        """
        with map.lock:
            if self.bad or map.keyframes.get(self.id) is not self:
                return  # erased or discarded meanwhile: it must not be linked again
            counts: dict[int, int] = {}
            for pid in self.point_ids[self.point_ids >= 0].tolist():
                p = map.points.get(pid)
                if p is None:
                    continue
                for k in p.observations:
                    counts[k] = counts.get(k, 0) + 1
            counts.pop(self.id, None)
            counts = {k: w for k, w in counts.items() if k in map.keyframes and not map.keyframes[k].bad}
            keep = {k: w for k, w in counts.items() if w >= min_weight}
            if not keep and counts:
                best = min(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                keep = {best[0]: best[1]}
            for k in set(self.connections) - set(keep):
                other = map.keyframes.get(k)
                if other is not None:
                    other.erase_connection(self.id)
                self.erase_connection(k)
            for k, w in keep.items():
                self.add_connection(k, w)
                map.keyframes[k].add_connection(self.id, w)
            if self.parent_id < 0:
                lower = [k for k in self.covisibles() if k < self.id]
                if lower:
                    self.parent_id = lower[0]
                    map.keyframes[lower[0]].children.add(self.id)

    # ---------------------------------------------------------- queries
    def tracked_points(self, min_obs: int = 0) -> int:
        """Number of good map points seen by this keyframe that have at least ``min_obs`` observations."""
        ids = self.point_ids[self.point_ids >= 0]
        if min_obs <= 0 and self._map is None:
            return int(ids.shape[0])
        m = self._map() if self._map is not None else None
        if m is None:
            raise RuntimeError(f"keyframe {self.id} is not in a map; tracked_points needs one")
        with m.lock:
            if min_obs <= 1:  # a good point has at least one observation: count them in one go
                return int(np.count_nonzero(m.valid_mask(ids)))
            n = 0
            for pid in ids.tolist():
                p = m.points.get(pid)
                if p is not None and not p.bad and len(p.observations) >= min_obs:
                    n += 1
            return n

    def matched(self) -> tuple[np.ndarray, np.ndarray]:
        """Keypoint indices that have a map point, and those point ids."""
        idx = np.flatnonzero(self.point_ids >= 0)
        return idx, self.point_ids[idx]
