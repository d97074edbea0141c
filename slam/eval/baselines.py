"""Trivial trajectory estimates, and what they score: the floor any tracker must beat.

An accuracy bound (``ATE < x``) means something only if a tracker that does
nothing useful cannot meet it. Each function here builds such a "tracker" from
the ground truth it is compared with, on the same timestamps, in the
ground-truth world frame:

* :func:`constant_velocity`: the motion between the first two poses, repeated
  (a tracker that never corrects its motion model);
* :func:`straight_line`: constant speed along a straight line, either the
  least-squares line through the positions in time (``"lsq"``, the best one)
  or from the first position to the last (``"ends"``);
* :func:`restart_at_origin`: exact until ``restart``, then a new map anchored
  at the first pose, as after a tracking loss that drops the old map; after
  the restart the camera either tracks the true motion (``"track"``) or stays
  put at the origin (``"stay"``, identity poses);
* :func:`stationary`: a camera that never moves, placed at the centroid of the
  positions (the best place for it).

:func:`trivial_ates` scores them all with a chosen alignment. Each estimate is
already placed where it scores best in the ground-truth frame, so when the
alignment is degenerate (a straight line or a single point cannot be rotated
about itself) the unaligned score stands; otherwise the aligned one does, which
is never worse than unaligned. Poses are ``T_w_c`` (camera to world), 4x4
float64; timestamps in seconds; ATE in metres.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np

from slam.eval.metrics import AlignMethod, align_trajectory, ate_errors
from slam.geometry.se3 import inv_pose, se3_exp, se3_log
from slam.trajectory import Trajectory

log = logging.getLogger(__name__)

LineFit = Literal["lsq", "ends"]
AfterRestart = Literal["track", "stay"]


def _check(gt: Trajectory, at_least: int) -> None:
    if len(gt) < at_least:
        raise ValueError(f"a trivial estimate needs at least {at_least} ground-truth poses, got {len(gt)}")


def constant_velocity(gt: Trajectory) -> Trajectory:
    """The SE(3) motion from pose 0 to pose 1, extrapolated in time to every timestamp.

    ``T_k = T_0 exp(((t_k - t_0) / (t_1 - t_0)) log(T_0^-1 T_1))``: constant body-frame
    twist, so the path is a helix (a straight line when pose 0 and 1 share a rotation).
    """
    _check(gt, 2)
    dt01 = gt.timestamps[1] - gt.timestamps[0]
    if dt01 <= 0:
        raise ValueError(f"first two timestamps must increase, got {gt.timestamps[0]} and {gt.timestamps[1]}")
    xi = se3_log(inv_pose(gt.poses[0]) @ gt.poses[1])
    steps = (gt.timestamps - gt.timestamps[0]) / dt01
    poses = np.stack([gt.poses[0] @ se3_exp(xi * s) for s in steps])
    return Trajectory(gt.timestamps.copy(), poses)


def straight_line(gt: Trajectory, fit: LineFit = "lsq") -> Trajectory:
    """Constant speed along a straight line, with the first pose's rotation throughout.

    ``"lsq"``: positions ``a + b t`` fitted to the ground truth by least squares,
    the best constant-speed line under any alignment (a similarity maps a line
    to another line at another speed; the least-squares line is the best of all
    of them). ``"ends"``: from the first position to the last, in the elapsed time.
    """
    _check(gt, 2)
    t = gt.timestamps - gt.timestamps[0]
    p = gt.positions
    if fit == "lsq":
        A = np.stack([np.ones_like(t), t], axis=1)
        coef, *_ = np.linalg.lstsq(A, p, rcond=None)
        pos = A @ coef
    elif fit == "ends":
        if t[-1] <= 0:
            raise ValueError("timestamps must span a positive time")
        pos = p[0] + (t / t[-1])[:, None] * (p[-1] - p[0])
    else:
        raise ValueError(f"unknown line fit {fit!r}; expected 'lsq' or 'ends'")
    poses = np.tile(gt.poses[0], (len(gt), 1, 1))
    poses[:, :3, 3] = pos
    return Trajectory(gt.timestamps.copy(), poses)


def restart_at_origin(gt: Trajectory, restart: int, after: AfterRestart = "track") -> Trajectory:
    """Exact up to index ``restart``; from there a new map whose origin is the first pose.

    ``"track"``: ``T_k = T_0 T_r^-1 T_k`` for ``k >= r`` (true motion, wrong anchor);
    ``"stay"``: ``T_k = T_0`` (identity in the tracker's own world: lost and still).
    """
    _check(gt, 1)
    if not 0 < restart < len(gt):
        raise ValueError(f"restart index {restart} outside 1..{len(gt) - 1}")
    poses = gt.poses.copy()
    if after == "track":
        poses[restart:] = gt.poses[0] @ inv_pose(gt.poses[restart]) @ gt.poses[restart:]
    elif after == "stay":
        poses[restart:] = gt.poses[0]
    else:
        raise ValueError(f"unknown behaviour after the restart {after!r}; expected 'track' or 'stay'")
    return Trajectory(gt.timestamps.copy(), poses)


def stationary(gt: Trajectory) -> Trajectory:
    """A camera that never moves: the first pose's rotation, at the centroid of the positions."""
    _check(gt, 1)
    poses = np.tile(gt.poses[0], (len(gt), 1, 1))
    poses[:, :3, 3] = gt.positions.mean(axis=0)
    return Trajectory(gt.timestamps.copy(), poses)


def trivial_estimates(gt: Trajectory, restarts: tuple[int, ...] = ()) -> dict[str, Trajectory]:
    """Every trivial estimate of ``gt`` by name; one restart pair per index in ``restarts``."""
    out = {
        "constant_velocity": constant_velocity(gt),
        "line_lsq": straight_line(gt, "lsq"),
        "line_ends": straight_line(gt, "ends"),
        "stationary": stationary(gt),
    }
    for r in restarts:
        out[f"restart_{r}_track"] = restart_at_origin(gt, r, "track")
        out[f"restart_{r}_stay"] = restart_at_origin(gt, r, "stay")
    return out


def ate_rmse(gt: Trajectory, est: Trajectory, align: AlignMethod) -> float:
    """ATE RMSE in metres of ``est`` (associated with ``gt``) after ``align``, or unaligned where better.

    The aligned score is the optimum over all rigid / similarity transforms, the
    identity among them; a degenerate set (collinear or coincident positions)
    cannot be aligned, and its unaligned score is the one that counts.
    """
    best = float(np.sqrt(np.mean(ate_errors(gt, est) ** 2)))
    if align != "none" and len(gt) >= 3:
        try:
            aligned, _, _ = align_trajectory(gt, est, align)
        except ValueError as e:
            log.debug("alignment of a trivial estimate skipped: %s", e)
        else:
            best = min(best, float(np.sqrt(np.mean(ate_errors(gt, aligned) ** 2))))
    return best


def trivial_ates(gt: Trajectory, align: AlignMethod, restarts: tuple[int, ...] = ()) -> dict[str, float]:
    """ATE RMSE (metres) of each :func:`trivial_estimates` entry against ``gt`` with ``align``."""
    return {name: ate_rmse(gt, est, align) for name, est in trivial_estimates(gt, restarts).items()}
