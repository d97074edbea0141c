"""Map points: a 3D landmark in world coordinates with its keyframe observations.

The numbers tracking reads for hundreds of points every frame (position,
viewing direction, scale-invariance distances, descriptor, visibility counters)
live in :class:`PointArrays`, one stacked array per quantity indexed by point
id, so the map can gather them with one fancy index. A :class:`MapPoint` is a
handle on its row plus the topology (observations, reference keyframe), which
stays in Python dicts.
"""

from __future__ import annotations

import math

import numpy as np

DESCRIPTOR_BYTES = 32

# bits set in each byte value, for Hamming distances of binary descriptors
_POPCOUNT = np.array([i.bit_count() for i in range(256)], dtype=np.uint8)


def most_distinctive(desc: np.ndarray) -> int:
    """Index of the descriptor with the least median Hamming distance to all of them (ORB-SLAM).

    The median of row ``i`` is taken over all N distances, the zero distance
    to itself included, as the lower median ``sorted(row)[(N - 1) // 2]``;
    ties go to the lowest index.
    """
    if len(desc) == 0:
        raise ValueError("most_distinctive needs at least one descriptor")
    return int(distinctive_index(np.asarray(desc, np.uint8), np.zeros(1, np.int64), np.array([len(desc)]))[0])


def distinctive_index(desc: np.ndarray, first: np.ndarray, count: np.ndarray) -> np.ndarray:
    """:func:`most_distinctive` of many groups at once.

    Group ``g`` is ``desc[first[g] : first[g] + count[g]]``; returns, per group,
    the index within it of its descriptor with the least lower-median Hamming
    distance to the group (ties: the lowest index). Groups of the same size are
    done together as one (G, n, n) array.
    """
    first, count = np.asarray(first, np.int64), np.asarray(count, np.int64)
    if np.any(count < 1):
        raise ValueError("distinctive_index: every group needs at least one descriptor")
    out = np.zeros(len(first), np.int64)  # groups of 1 or 2: the first
    for n in np.unique(count[count > 2]).tolist():
        g = np.flatnonzero(count == n)
        d = desc[first[g][:, None] + np.arange(n)]  # (G, n, 32)
        dist = _POPCOUNT[d[:, :, None, :] ^ d[:, None, :, :]].sum(axis=-1, dtype=np.int32)  # (G, n, n)
        med = np.sort(dist, axis=2)[:, :, (n - 1) // 2]
        out[g] = np.argmin(med, axis=1)
    return out


def predict_levels(max_distance: np.ndarray, distance: np.ndarray, scale_factor: float, n_levels: int) -> np.ndarray:
    """Pyramid level at which points seen from ``distance`` metres should be detected (vectorised).

    ``ceil(log(max_distance / distance) / log(scale_factor))`` clipped to
    ``[0, n_levels - 1]``: a point seen from closer than when it was created
    appears larger, i.e. at a coarser level. (A 1e-9 slack in the ceiling
    keeps the creation distance at the creation level despite rounding.)
    """
    ratio = np.asarray(max_distance, dtype=np.float64) / np.maximum(np.asarray(distance, dtype=np.float64), 1e-12)
    level = np.ceil(np.log(np.maximum(ratio, 1e-300)) / math.log(scale_factor) - 1e-9)
    return np.clip(level, 0, n_levels - 1).astype(np.int32)


class PointArrays:
    """Per-point quantities stacked in arrays; row ``i`` belongs to the point with id ``i``.

    Ids are handed out densely by the map and never reused, so a row is never
    recycled: the row of an erased point keeps its last values with
    ``valid = False``. Arrays grow by doubling; code that keeps a view of a row
    across an ``add_point`` may read an outdated copy, so take a copy or hold
    the map lock.
    """

    def __init__(self, capacity: int = 1024):
        capacity = max(int(capacity), 1)
        self.position = np.full((capacity, 3), np.nan)  # world frame, metres
        self.normal = np.zeros((capacity, 3))  # unit mean viewing direction (point - camera centre)
        self.descriptor = np.zeros((capacity, DESCRIPTOR_BYTES), dtype=np.uint8)
        self.distance = np.zeros((capacity, 2))  # min, max scale-invariance distance, metres
        self.counts = np.zeros((capacity, 2), dtype=np.int64)  # n_visible, n_found
        self.valid = np.zeros(capacity, dtype=bool)  # in use and not bad

    @property
    def capacity(self) -> int:
        return int(self.valid.shape[0])

    def reserve(self, n: int) -> None:
        """Make room for rows ``0 .. n-1`` (doubling, so appends are amortised O(1))."""
        cap = self.capacity
        if n <= cap:
            return
        while cap < n:
            cap *= 2
        for name, fill in (("position", np.nan), ("normal", 0), ("descriptor", 0), ("distance", 0), ("counts", 0), ("valid", False)):
            old = getattr(self, name)
            new = np.full((cap,) + old.shape[1:], fill, dtype=old.dtype)
            new[: old.shape[0]] = old
            setattr(self, name, new)


class _Row:
    """Attribute of a :class:`MapPoint` stored in its row of a :class:`PointArrays` (column ``col`` if given)."""

    def __init__(self, array: str, col: int | None = None, cast: type | None = None):
        self.array, self.col, self.cast = array, col, cast

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, p: MapPoint | None, owner: type | None = None):
        if p is None:
            return self
        a = getattr(p._arrays, self.array)
        if self.col is None:
            return a[p._row]  # a view: in-place edits reach the map
        return self.cast(a[p._row, self.col])

    def __set__(self, p: MapPoint, value) -> None:
        a = getattr(p._arrays, self.array)
        if self.col is None:
            a[p._row] = value
        else:
            a[p._row, self.col] = value


class MapPoint:
    """A landmark: world position, distinctive descriptor and the keyframes that observe it.

    ``observations`` maps keyframe id -> keypoint index in that keyframe, in
    the order they were added. ``ref_kf_id`` is the keyframe whose octave and
    distance define the scale-invariance range; ``replaced_by`` the id of the
    point it was fused into (-1 if none). Edit points through the
    :class:`~slam.backbone.map.map.Map` (or under ``map.lock``), which keeps the keyframe
    side in step.
    """

    __slots__ = ("_arrays", "_row", "first_kf_id", "id", "observations", "ref_kf_id", "replaced_by")

    position = _Row("position")  # (3,) float64 world frame, metres
    normal = _Row("normal")  # (3,) unit mean viewing direction
    descriptor = _Row("descriptor")  # (32,) uint8
    min_distance = _Row("distance", 0, float)
    max_distance = _Row("distance", 1, float)
    n_visible = _Row("counts", 0, int)  # frames in whose frustum it was predicted
    n_found = _Row("counts", 1, int)  # frames in which it was matched

    def __init__(
        self,
        id: int,
        position: np.ndarray,
        descriptor: np.ndarray | None = None,
        ref_kf_id: int = -1,
        first_kf_id: int | None = None,
        *,
        arrays: PointArrays | None = None,
    ):
        """A new point; with ``arrays`` (the map's) it lives in row ``id`` of them, else in a private row."""
        self.id = int(id)
        self.observations: dict[int, int] = {}
        self.ref_kf_id = int(ref_kf_id)
        self.first_kf_id = self.ref_kf_id if first_kf_id is None else int(first_kf_id)
        self.replaced_by = -1
        if arrays is None:
            self._arrays, self._row = PointArrays(1), 0
        else:
            if self.id < 0:
                raise ValueError("a point in the map's arrays needs its id (>= 0)")
            arrays.reserve(self.id + 1)
            self._arrays, self._row = arrays, self.id
        self.position = np.asarray(position, dtype=np.float64).reshape(3)
        self.descriptor = np.zeros(DESCRIPTOR_BYTES, np.uint8) if descriptor is None else descriptor
        self.normal = 0.0
        self.min_distance = self.max_distance = 0.0
        self.n_visible = self.n_found = 1
        self._arrays.valid[self._row] = True

    def __repr__(self) -> str:
        state = " bad" if self.bad else ""
        return f"MapPoint(id={self.id}, obs={len(self.observations)}, ref_kf={self.ref_kf_id}{state})"

    def bind(self, arrays: PointArrays) -> None:
        """Move this point's numbers into row ``id`` of ``arrays`` (done by ``Map.add_point``)."""
        if arrays is self._arrays:
            return
        arrays.reserve(self.id + 1)
        old, row = self._arrays, self._row
        for name in ("position", "normal", "descriptor", "distance", "counts", "valid"):
            getattr(arrays, name)[self.id] = getattr(old, name)[row]
        self._arrays, self._row = arrays, self.id

    # ------------------------------------------------------------ state
    @property
    def bad(self) -> bool:
        return not bool(self._arrays.valid[self._row])

    @bad.setter
    def bad(self, value: bool) -> None:
        self._arrays.valid[self._row] = not value

    @property
    def found_ratio(self) -> float:
        """Fraction of the frames predicted to see the point that matched it."""
        return self.n_found / max(self.n_visible, 1)

    # ------------------------------------------------------ observations
    def add_observation(self, kf_id: int, kp_idx: int) -> bool:
        """Record that keypoint ``kp_idx`` of keyframe ``kf_id`` sees this point; False if that keyframe already did."""
        if kf_id in self.observations:
            return False
        self.observations[int(kf_id)] = int(kp_idx)
        if self.ref_kf_id < 0:
            self.ref_kf_id = int(kf_id)
        return True

    def erase_observation(self, kf_id: int, min_obs: int = 2) -> bool:
        """Forget keyframe ``kf_id``; returns True when the point has just become bad.

        The point turns bad when fewer than ``min_obs`` observations remain.
        If the reference keyframe is the one removed, the oldest remaining
        observation becomes the reference.
        """
        if self.observations.pop(kf_id, None) is None:
            return False
        if self.ref_kf_id == kf_id:
            self.ref_kf_id = next(iter(self.observations), -1)
        if len(self.observations) < min_obs and not self.bad:
            self.bad = True
            return True
        return False

    # ------------------------------------------------- derived quantities
    # Normal, distance range and distinctive descriptor are recomputed by Map.refresh_points.
    def predict_scale(self, distance: float, scale_factor: float, n_levels: int) -> int:
        """Pyramid level at which the point should appear when seen from ``distance`` metres."""
        return int(predict_levels(self.max_distance, distance, scale_factor, n_levels))
