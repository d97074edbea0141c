"""One call from two trajectories to all the numbers: associate, align, ATE, RPE, KITTI segments."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from slam.eval.associate import associate_trajectories
from slam.eval.common import EvalError, Statistics
from slam.eval.kitti import KittiErrors, kitti_segment_errors
from slam.eval.metrics import AlignMethod, DeltaUnit, align_trajectory, ate_errors, rpe_errors
from slam.trajectory import Trajectory

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Everything :func:`evaluate` computes, arrays included (for plots); :meth:`to_dict` is the JSON."""

    gt: Trajectory  # matched ground truth
    est: Trajectory  # matched estimate, aligned
    align: str
    scale: float
    T_align: np.ndarray  # 4x4 [[s R, t], [0, 1]]: estimate world -> ground-truth world
    ate_errors: np.ndarray  # (M,) metres
    rpe_pairs: list[tuple[int, int]]
    rpe_trans: np.ndarray  # (P,) metres
    rpe_rot: np.ndarray  # (P,) degrees
    delta: float
    delta_unit: str
    kitti: KittiErrors | None
    n_gt: int
    n_est: int
    max_diff: float
    t_offset: float

    def to_dict(self) -> dict:
        return {
            "n_gt": self.n_gt,
            "n_est": self.n_est,
            "matched": len(self.gt),
            "max_diff": self.max_diff,
            "t_offset": self.t_offset,
            "align": self.align,
            "delta": self.delta,
            "delta_unit": self.delta_unit,
            "aligned": {
                "method": self.align,
                "scale": self.scale,
                "rotation": (self.T_align[:3, :3] / self.scale).tolist(),
                "translation": self.T_align[:3, 3].tolist(),
                "T": self.T_align.tolist(),
            },
            "ate": Statistics.from_errors(self.ate_errors).to_dict(),
            "rpe": {
                "delta": self.delta,
                "delta_unit": self.delta_unit,
                "n_pairs": len(self.rpe_pairs),
                "trans": Statistics.from_errors(self.rpe_trans).to_dict(),
                "rot": Statistics.from_errors(self.rpe_rot).to_dict(),
            },
            "kitti": None if self.kitti is None else self.kitti.to_dict(),
        }


def compute(
    gt: Trajectory,
    est: Trajectory,
    align: AlignMethod = "se3",
    delta: float = 1,
    delta_unit: DeltaUnit = "f",
    max_diff: float = 0.01,
    t_offset: float = 0.0,
    kitti_lengths: Sequence[float] | None = None,
    kitti_step: int = 10,
) -> Evaluation:
    """Associate (``max_diff``, ``t_offset`` in seconds), align, and compute ATE, RPE and KITTI errors.

    RPE and KITTI errors use the aligned estimate, as ``evo_rpe -a``/``-as``
    does (the same numbers as unaligned for ``se3``; scale-corrected for ``sim3``).
    """
    gt_m, est_m = associate_trajectories(gt, est, max_diff, t_offset)
    log.info("matched %d of %d ground-truth and %d estimated poses", len(gt_m), len(gt), len(est))
    est_a, scale, T = align_trajectory(gt_m, est_m, align)
    if len(gt_m) < 2:
        raise EvalError(f"only {len(gt_m)} matched pose; RPE needs at least 2 (try a larger --max-diff)")
    pairs, et, er = rpe_errors(gt_m, est_a, delta, delta_unit)
    try:
        kitti = kitti_segment_errors(gt_m, est_a, kitti_lengths, kitti_step)
    except EvalError as e:
        log.warning("KITTI segment errors skipped: %s", e)
        kitti = None
    return Evaluation(
        gt=gt_m, est=est_a, align=align, scale=scale, T_align=T, ate_errors=ate_errors(gt_m, est_a),
        rpe_pairs=pairs, rpe_trans=et, rpe_rot=er, delta=delta, delta_unit=delta_unit, kitti=kitti,
        n_gt=len(gt), n_est=len(est), max_diff=max_diff, t_offset=t_offset,
    )


def errors_after(gt: Trajectory, est: Trajectory, t_split: float, align: AlignMethod = "se3") -> np.ndarray:
    """Position errors (m) of the poses of ``est`` after ``t_split`` (s), in the alignment (``align``) fitted on
    the poses before it: how far a run lands from where its earlier part says it should be (after a loss).
    Each pose is compared with the ground-truth pose at or just after its timestamp."""
    T = compute(gt.subset(gt.timestamps < t_split), est.subset(est.timestamps < t_split), align).T_align
    after = est.subset(est.timestamps > t_split)
    idx = np.searchsorted(gt.timestamps, after.timestamps - 1e-9)
    return np.linalg.norm(after.positions @ T[:3, :3].T + T[:3, 3] - gt.positions[idx], axis=1)


def evaluate(
    gt: Trajectory,
    est: Trajectory,
    align: AlignMethod = "se3",
    delta: float = 1,
    delta_unit: DeltaUnit = "f",
    max_diff: float = 0.01,
    t_offset: float = 0.0,
    kitti_lengths: Sequence[float] | None = None,
    kitti_step: int = 10,
) -> dict:
    """The nested result dictionary (the ``--json`` content) of :func:`compute`.

    Keys: ``matched``, ``align``, ``delta``, ``delta_unit``, ``aligned.{method, scale, T}``,
    ``ate.{rmse, mean, median, std, min, max, sse, n}`` (m), ``rpe.trans.*`` (m),
    ``rpe.rot.*`` (deg), ``kitti.{t_rel (%), r_rel (deg/100 m), lengths (m), ...}`` or None.
    """
    return compute(gt, est, align, delta, delta_unit, max_diff, t_offset, kitti_lengths, kitti_step).to_dict()
