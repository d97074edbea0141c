"""A pytest plugin that breaks the tracker, to check that the accuracy tests fail on a tracker that does nothing useful.

    BROKEN_TRACKER=line SLAM_DATA=../shared/data PYTHONPATH=$PWD \
        python3 -m pytest -p tests.broken_tracker tests/backbone/test_system.py tests/cli/test_run.py

Modes (nothing is patched without ``BROKEN_TRACKER``):

* ``cv``: motion-only BA is skipped, every frame keeps the constant-velocity prediction;
* ``identity``: every frame is put at the map's origin;
* ``line`` / ``cvgt`` / ``still``: the tracker runs, but its trajectory is replaced by a trivial answer built from
  the ground truth of the frames it tracked (straight line at constant speed, plus 0.3 mm of noise since exactly
  collinear positions cannot be aligned; constant-velocity extrapolation of the first two poses; a still camera at the
  centroid, also with the noise).

In-process runs only (``System``, ``slam-run`` without ``--launch``); the processes of a launch file are not patched.
"""

from __future__ import annotations

import os

import numpy as np

from slam.backbone.frontend import tracking
from slam.geometry import inv_pose

MODE = os.environ.get("BROKEN_TRACKER", "")


def _optimize(self, cur, rounds=4):
    """Motion-only BA replaced: keep the prediction (cv) or put the camera at the map origin (identity)."""
    self._drop_bad_points(cur)
    if MODE == "identity":
        cur.T_c_w = inv_pose(self.T_w_c_prior)
    cur.outlier[:] = False
    return int(np.count_nonzero(cur.point_ids >= 0))


if MODE in ("cv", "identity"):
    tracking.Tracker._optimize = _optimize


# BROKEN_TRACKER=line|cvgt|still: a "tracker" that keeps the real one's frames but outputs a trivial answer
# built from the frames' ground truth (straight line at constant speed, constant-velocity extrapolation of the
# first two poses, a camera that never moves): what a tracker that does nothing useful would report.
if MODE in ("line", "cvgt", "still"):
    from slam.backbone import system as _system
    from slam.eval import baselines
    from slam.trajectory import Trajectory

    _process, _trajectory = _system.System.process, _system.System.trajectory

    def process(self, frame, *a, **k):
        if frame.T_w_c_gt is not None:
            self.__dict__.setdefault("_gt_by_t", {})[round(frame.timestamp, 6)] = frame.T_w_c_gt
        return _process(self, frame, *a, **k)

    def trajectory(self):
        real = _trajectory(self)
        gt = self.__dict__.get("_gt_by_t", {})
        keep = [i for i, t in enumerate(real.timestamps) if round(t, 6) in gt]
        g = Trajectory(real.timestamps[keep], np.stack([gt[round(t, 6)] for t in real.timestamps[keep]]))
        fake = {"line": lambda: baselines.straight_line(g, "lsq"), "cvgt": lambda: baselines.constant_velocity(g),
                "still": lambda: baselines.stationary(g)}[MODE]()
        if MODE in ("line", "still"):  # 0.3 mm of noise: collinear or equal positions cannot be aligned at all
            fake.poses[:, :3, 3] += np.random.default_rng(0).normal(0.0, 3e-4, (len(fake), 3))
        return fake.transformed(T_left=inv_pose(g.poses[0]))  # in the tracker's world (first pose ~ identity)

    _system.System.process, _system.System.trajectory = process, trajectory
