"""KITTI odometry segment errors (devkit ``evaluate_odometry.cpp``), with lengths for short clips.

For every ``step``-th first frame and every length ``L``, the segment ends at the
first frame whose ground-truth path distance from the first frame exceeds ``L``
metres. Its error pose is ``inv(inv(est_i) est_j) inv(gt_i) gt_j``; the segment
contributes ``|t(E)| / L`` and ``angle(R(E)) / L``. The averages over all
segments are reported as ``t_rel`` in percent and ``r_rel`` in degrees per 100 m.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from slam.eval.common import EvalError
from slam.eval.metrics import rotation_angle_deg
from slam.geometry.se3 import inv_pose
from slam.trajectory import Trajectory

KITTI_LENGTHS: tuple[float, ...] = (100.0, 200.0, 300.0, 400.0, 500.0, 600.0, 700.0, 800.0)


@dataclass
class KittiErrors:
    """Segment errors: ``t_rel`` (%), ``r_rel`` (deg / 100 m), over ``n_segments`` segments."""

    t_rel: float
    r_rel: float
    n_segments: int
    lengths: list[float]  # lengths (m) that gave at least one segment
    auto_lengths: bool  # True when the standard 100..800 m did not fit and shorter ones were chosen
    step: int
    per_length: dict[float, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "t_rel": self.t_rel,
            "r_rel": self.r_rel,
            "n_segments": self.n_segments,
            "lengths": self.lengths,
            "auto_lengths": self.auto_lengths,
            "step": self.step,
            "per_length": {f"{k:g}": v for k, v in self.per_length.items()},
        }


def path_distances(positions: np.ndarray) -> np.ndarray:
    """Cumulative path distance (m) at each position, starting at 0."""
    steps = np.linalg.norm(np.diff(np.asarray(positions, dtype=np.float64), axis=0), axis=1)
    return np.concatenate([[0.0], np.cumsum(steps)])


def auto_segment_lengths(path_length: float, count: int = 8) -> list[float]:
    """``count`` evenly spaced lengths (m) up to at most 80 % of ``path_length``.

    The spacing is the largest ``m * 10^k`` (``m`` in 1..9) not above
    ``0.8 * path_length / count``, so lengths are round numbers (e.g. 90.6 m ->
    9, 18, ..., 72 m).
    """
    target = 0.8 * path_length / count
    if not (target > 0 and math.isfinite(target)):
        return []
    k = math.floor(math.log10(target))
    m = math.floor(target / 10.0**k + 1e-9)
    step = m * 10.0**k
    return [round(step * i, 10) for i in range(1, count + 1)]


def _segments(dist: np.ndarray, lengths: Sequence[float], step: int) -> list[tuple[int, int, float]]:
    """``(first, last, length)`` of every devkit segment."""
    out = []
    for first in range(0, len(dist), step):
        for L in lengths:
            beyond = np.nonzero(dist[first:] > dist[first] + L)[0]
            if beyond.size:
                out.append((first, first + int(beyond[0]), float(L)))
    return out


def kitti_segment_errors(
    gt: Trajectory, est: Trajectory, lengths: Sequence[float] | None = None, step: int = 10
) -> KittiErrors:
    """KITTI relative errors of associated ``est`` against ``gt`` (path distances from ``gt``).

    ``lengths=None``: the standard 100..800 m, or :func:`auto_segment_lengths`
    of the ground-truth path when none of those fits. Raises :class:`EvalError`
    when no segment exists.
    """
    if len(gt) != len(est):
        raise ValueError(f"trajectories must be associated first ({len(gt)} vs {len(est)} poses)")
    dist = path_distances(gt.positions)
    auto = False
    segs = _segments(dist, KITTI_LENGTHS if lengths is None else lengths, step)
    if not segs and lengths is None:
        auto = True
        segs = _segments(dist, auto_segment_lengths(float(dist[-1])), step)
    if not segs:
        raise EvalError(f"no KITTI segment fits the {dist[-1]:.3f} m ground-truth path "
                        f"(lengths {list(lengths) if lengths is not None else 'auto'})")
    i, j, L = (np.array(v) for v in zip(*segs))
    E = inv_pose(inv_pose(est.poses[i]) @ est.poses[j]) @ (inv_pose(gt.poses[i]) @ gt.poses[j])
    t_err = np.linalg.norm(E[:, :3, 3], axis=1) / L
    r_err = rotation_angle_deg(E[:, :3, :3]) / L
    used = sorted(set(L.tolist()))
    per_length = {
        u: {"t_rel": 100.0 * float(np.mean(t_err[L == u])), "r_rel": 100.0 * float(np.mean(r_err[L == u])),
            "n": int(np.sum(L == u))}
        for u in used
    }
    return KittiErrors(
        t_rel=100.0 * float(np.mean(t_err)),
        r_rel=100.0 * float(np.mean(r_err)),
        n_segments=len(segs),
        lengths=used,
        auto_lengths=auto,
        step=step,
        per_length=per_length,
    )
