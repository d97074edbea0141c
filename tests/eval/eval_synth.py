"""Synthetic trajectories for the evaluation tests: smooth 3D motion, noise, drift, similarity transforms.

Imported relatively (`from .eval_synth import ...`): tests/eval is a package, like tests/datasets.
"""

from __future__ import annotations

import numpy as np

from slam.geometry import make_pose, so3_exp
from slam.trajectory import Trajectory


def smooth_trajectory(t: np.ndarray) -> Trajectory:
    """A curvy 3D path (tens of metres) with smoothly turning orientation, at stamps ``t`` (s)."""
    t = np.asarray(t, dtype=np.float64)
    pos = np.stack([4.0 * np.cos(0.3 * t) + 0.8 * t, 3.0 * np.sin(0.4 * t), 0.5 * np.sin(0.7 * t)], axis=1)
    poses = np.stack([
        make_pose(so3_exp(np.array([0.2 * np.sin(0.5 * tk), 0.1 * np.cos(0.3 * tk), 0.35 * tk])), p)
        for tk, p in zip(t, pos)
    ])
    return Trajectory(t, poses)


def perturb(traj: Trajectory, rng: np.random.Generator, pos_sigma: float = 0.03, rot_sigma: float = 0.01,
            drift: float = 0.01) -> Trajectory:
    """Noise (m, rad) on every pose plus a slow drift (m per s along a fixed direction)."""
    poses = traj.poses.copy()
    dt = traj.timestamps - traj.timestamps[0]
    poses[:, :3, 3] += rng.normal(0.0, pos_sigma, (len(traj), 3)) + drift * dt[:, None] * np.array([1.0, -0.5, 0.3])
    for k in range(len(traj)):
        poses[k, :3, :3] = poses[k, :3, :3] @ so3_exp(rng.normal(0.0, rot_sigma, 3))
    return Trajectory(traj.timestamps.copy(), poses)


def similarity(traj: Trajectory, R: np.ndarray, t: np.ndarray, s: float) -> Trajectory:
    """``traj`` seen in another world frame with another scale: poses ``[R R_i | s R p_i + t]``."""
    poses = traj.poses.copy()
    poses[:, :3, :3] = R @ traj.poses[:, :3, :3]
    poses[:, :3, 3] = s * traj.positions @ R.T + t
    return Trajectory(traj.timestamps.copy(), poses)
