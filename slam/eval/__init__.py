"""Trajectory evaluation (ATE, RPE, KITTI segment errors) with evo's conventions.

Pure computation on :class:`slam.trajectory.Trajectory`; files are read by
``slam.trajectory`` and the ``slam-eval`` CLI, plots live in ``slam.eval.plot``.
"""

from slam.eval.associate import associate, associate_trajectories, match_stamps
from slam.eval.common import EvalError, Statistics
from slam.eval.evaluate import Evaluation, compute, errors_after, evaluate
from slam.eval.kitti import KITTI_LENGTHS, KittiErrors, auto_segment_lengths, kitti_segment_errors
from slam.eval.metrics import (
    align_trajectory,
    ate,
    ate_errors,
    rotation_angle_deg,
    rpe,
    rpe_errors,
    rpe_pairs,
)

__all__ = [
    "KITTI_LENGTHS",
    "EvalError",
    "Evaluation",
    "KittiErrors",
    "Statistics",
    "align_trajectory",
    "associate",
    "associate_trajectories",
    "ate",
    "ate_errors",
    "auto_segment_lengths",
    "compute",
    "errors_after",
    "evaluate",
    "kitti_segment_errors",
    "match_stamps",
    "rotation_angle_deg",
    "rpe",
    "rpe_errors",
    "rpe_pairs",
]
