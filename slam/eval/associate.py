"""Timestamp association of two trajectories, with evo's conventions (``evo.core.sync``).

* The trajectory with fewer poses drives the matching (the estimate when both
  have as many), so none of its poses is lost; each of its stamps takes the
  nearest stamp of the other within ``max_diff`` seconds (ties go to the
  earlier stamp). A stamp of the longer trajectory may be matched twice.
* ``t_offset`` (seconds) is added to the estimate's stamps before matching
  (evo's ``--t_offset``); the returned trajectories keep their own stamps.
"""

from __future__ import annotations

import numpy as np

from slam.eval.common import EvalError
from slam.trajectory import Trajectory


def match_stamps(short: np.ndarray, long: np.ndarray, max_diff: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(i_short, i_long)``: each ``short`` stamp with its nearest ``long`` stamp within ``max_diff``.

    Both arrays are in seconds; ``long`` must be sorted (non-decreasing).
    """
    short = np.asarray(short, dtype=np.float64).reshape(-1)
    long = np.asarray(long, dtype=np.float64).reshape(-1)
    if long.size == 0 or short.size == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    if np.any(np.diff(long) < 0):
        raise ValueError("match_stamps: the stamps of the longer trajectory are not sorted")
    in_range = (short >= long[0] - max_diff) & (short <= long[-1] + max_diff)
    j = np.minimum(np.searchsorted(long, short, side="right"), long.size - 1)
    diff_ub = long[j] - short  # to the stamp at or after (clamped to the last stamp)
    diff_lb = np.where(j > 0, short - long[np.maximum(j - 1, 0)], np.inf)
    take_ub = (diff_ub <= max_diff) & (diff_ub < diff_lb)
    take_lb = ~take_ub & (diff_lb <= max_diff) & (diff_lb <= diff_ub)
    ok = in_range & (take_ub | take_lb)
    best = np.where(take_ub, j, j - 1)
    return np.nonzero(ok)[0], best[ok].astype(int)


def associate(
    gt_stamps: np.ndarray, est_stamps: np.ndarray, max_diff: float = 0.01, t_offset: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """Matching indices ``(i_gt, i_est)`` of two stamp arrays (seconds), in the order of the shorter one."""
    gt_stamps = np.asarray(gt_stamps, dtype=np.float64).reshape(-1)
    est_stamps = np.asarray(est_stamps, dtype=np.float64).reshape(-1)
    if est_stamps.size > gt_stamps.size:  # the ground truth drives
        i_gt, i_est = match_stamps(gt_stamps, est_stamps + t_offset, max_diff)
    else:  # the estimate drives; the offset moves the other side
        i_est, i_gt = match_stamps(est_stamps, gt_stamps + (-t_offset), max_diff)
    return i_gt, i_est


def associate_trajectories(
    gt: Trajectory, est: Trajectory, max_diff: float = 0.01, t_offset: float = 0.0
) -> tuple[Trajectory, Trajectory]:
    """The matched sub-trajectories ``(gt_m, est_m)`` of equal length; raises :class:`EvalError` if none match."""
    i_gt, i_est = associate(gt.timestamps, est.timestamps, max_diff, t_offset)
    if i_gt.size == 0:
        def span(t: np.ndarray) -> str:
            return f"{t[0]:.6f}..{t[-1]:.6f} s" if t.size else "empty"

        raise EvalError(
            f"no matching timestamps between ground truth ({span(gt.timestamps)}) and estimate "
            f"({span(est.timestamps + t_offset)}) within max diff {max_diff} s; "
            "try a larger --max-diff or a --t-offset"
        )
    return gt.subset(i_gt), est.subset(i_est)
