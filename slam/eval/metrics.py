"""Trajectory alignment, absolute trajectory error (ATE) and relative pose error (RPE).

Conventions follow evo (``evo_ape``/``evo_rpe``), so numbers agree to rounding:

* alignment: Umeyama on the positions of the associated poses; the aligned
  estimate is ``[R_a R_i | s R_a p_i + t_a]`` (rotations stay rotations);
* ATE: ``|p_est_i - p_gt_i|`` in metres after alignment (evo's APE, translation part);
* RPE: for consecutive pose pairs ``(i, j)`` picked on the estimate,
  ``E = inv(inv(gt_i) gt_j) inv(est_i) est_j``; translation error ``|t(E)|`` in
  metres and rotation error ``angle(R(E))`` in degrees.

Inputs are associated trajectories (same length, pose ``k`` of one matches
pose ``k`` of the other); see :mod:`slam.eval.associate`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from slam.eval.common import EvalError, Statistics
from slam.geometry.align import umeyama
from slam.geometry.se3 import inv_pose
from slam.geometry.so3 import rotation_angle
from slam.trajectory import Trajectory

AlignMethod = Literal["se3", "sim3", "none"]
DeltaUnit = Literal["f", "m", "s"]
ALIGN_METHODS: tuple[str, ...] = ("se3", "sim3", "none")
DELTA_UNITS: tuple[str, ...] = ("f", "m", "s")
# Slack when comparing elapsed time with a delta in seconds, so that stamps
# 0.1 s apart make a 0.5 s pair after 5 steps despite rounding.
TIME_EPS = 1e-9


def _check_pair(gt: Trajectory, est: Trajectory) -> None:
    if len(gt) != len(est):
        raise ValueError(f"trajectories must be associated first ({len(gt)} vs {len(est)} poses)")


def rotation_angle_deg(R: np.ndarray) -> np.ndarray:
    """Angle in degrees, in [0, 180], of a rotation matrix or (N, 3, 3) stack."""
    return np.degrees(rotation_angle(R))


def align_trajectory(
    gt: Trajectory, est: Trajectory, method: AlignMethod = "se3"
) -> tuple[Trajectory, float, np.ndarray]:
    """Align ``est`` onto ``gt`` (associated) by least squares on positions.

    Returns ``(aligned_est, scale, T)`` with ``T = [[s R, t], [0, 1]]`` the 4x4
    similarity mapping estimate world to ground-truth world (identity for
    ``"none"``; ``s = 1`` for ``"se3"``). Raises :class:`EvalError` for fewer
    than 3 poses or a degenerate (collinear) set.
    """
    _check_pair(gt, est)
    if method not in ALIGN_METHODS:
        raise ValueError(f"unknown alignment {method!r}; expected one of {ALIGN_METHODS}")
    if method == "none":
        return Trajectory(est.timestamps.copy(), est.poses.copy()), 1.0, np.eye(4)
    if len(est) < 3:
        raise EvalError(f"{method} alignment needs at least 3 matched poses, got {len(est)}; use --align none "
                        "or a larger --max-diff")
    try:
        s, R, t = umeyama(est.positions, gt.positions, with_scale=(method == "sim3"))
    except ValueError as e:
        raise EvalError(f"{method} alignment failed: {e}") from None
    poses = est.poses.copy()
    poses[:, :3, :3] = R @ est.poses[:, :3, :3]
    poses[:, :3, 3] = (s * est.positions) @ R.T + t
    T = np.eye(4)
    T[:3, :3] = s * R
    T[:3, 3] = t
    return Trajectory(est.timestamps.copy(), poses), float(s), T


def ate_errors(gt: Trajectory, est: Trajectory) -> np.ndarray:
    """Per-pose position error in metres, ``|p_est - p_gt|`` (associated, already aligned)."""
    _check_pair(gt, est)
    return np.linalg.norm(est.positions - gt.positions, axis=1)


def ate(gt: Trajectory, est: Trajectory) -> Statistics:
    """Absolute trajectory error statistics in metres (associated, already aligned)."""
    return Statistics.from_errors(ate_errors(gt, est))


def rpe_pairs(est: Trajectory, delta: float, unit: DeltaUnit = "f") -> list[tuple[int, int]]:
    """Consecutive index pairs ``(i, j)`` spaced by ``delta`` along ``est`` (evo's rule).

    ``"f"``: every ``delta`` frames (integer); ``"m"``: the next pose once the
    path travelled since the last one reaches ``delta`` metres; ``"s"``: the
    next pose once ``delta`` seconds have elapsed since the last one.
    """
    n = len(est)
    if delta <= 0:
        raise EvalError(f"delta must be positive, got {delta}")
    if unit == "f":
        if float(delta) != int(delta):
            raise EvalError(f"delta in frames must be an integer, got {delta}")
        ids = list(range(0, n, int(delta)))
    elif unit == "m":
        steps = np.linalg.norm(np.diff(est.positions, axis=0), axis=1)
        ids, travelled = [0], 0.0
        for i, d in enumerate(steps.tolist(), start=1):
            travelled += d
            if travelled >= delta:
                ids.append(i)
                travelled = 0.0
    elif unit == "s":
        ids, t0 = [0], est.timestamps[0] if n else 0.0
        for i in range(1, n):
            if est.timestamps[i] - t0 >= delta - TIME_EPS:
                ids.append(i)
                t0 = est.timestamps[i]
    else:
        raise ValueError(f"unknown delta unit {unit!r}; expected one of {DELTA_UNITS}")
    return list(zip(ids, ids[1:]))


def rpe_errors(
    gt: Trajectory, est: Trajectory, delta: float = 1, unit: DeltaUnit = "f"
) -> tuple[list[tuple[int, int]], np.ndarray, np.ndarray]:
    """Pairs, translation errors (metres) and rotation errors (degrees) of the RPE."""
    _check_pair(gt, est)
    pairs = rpe_pairs(est, delta, unit)
    if not pairs:
        raise EvalError(f"delta = {delta} ({unit}) gives no pose pair among {len(est)} matched poses; "
                        "try a smaller --delta")
    i, j = np.array(pairs).T
    gt_rel = inv_pose(gt.poses[i]) @ gt.poses[j]
    est_rel = inv_pose(est.poses[i]) @ est.poses[j]
    E = inv_pose(gt_rel) @ est_rel
    return pairs, np.linalg.norm(E[:, :3, 3], axis=1), rotation_angle_deg(E[:, :3, :3])


def rpe(gt: Trajectory, est: Trajectory, delta: float = 1, unit: DeltaUnit = "f") -> tuple[Statistics, Statistics]:
    """RPE statistics: ``(translation in metres, rotation in degrees)``."""
    _, et, er = rpe_errors(gt, est, delta, unit)
    return Statistics.from_errors(et), Statistics.from_errors(er)
