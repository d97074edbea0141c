"""What a run leaves behind: trajectory.txt, keyframes.txt, map.npz and summary.json.

Shared by in-process replay, live runs (``slam-run``) and the SLAM process of
a launch file (``slam.nodes.tracker``), so all of them write the same files.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from slam.backbone.map.map_io import save_map
from slam.backbone.system import System
from slam.backbone.frontend.tracking import State
from slam.trajectory import Trajectory, per_frame_poses, write_kitti, write_tum

log = logging.getLogger(__name__)


@dataclass
class FrameTimes:
    """Per-frame timing of a run (milliseconds), recorded as each pose comes out of the tracker."""

    tracking_ms: list[float] = field(default_factory=list)  # the tracking step alone
    interval_ms: list[float] = field(default_factory=list)  # between consecutive poses: the sustained rate
    latency_ms: list[float] = field(default_factory=list)  # from the frame's arrival / capture to its pose
    t_last: float = field(default_factory=time.perf_counter)

    def add(self, tracking_ms: float, latency_s: float | None) -> None:
        now = time.perf_counter()
        self.tracking_ms.append(tracking_ms)
        self.interval_ms.append((now - self.t_last) * 1e3)
        self.t_last = now
        if latency_s is not None:
            self.latency_ms.append(latency_s * 1e3)

    def fps(self, last: int = 30) -> float:
        """Poses per second over the last ``last`` frames (for a progress bar)."""
        return 1e3 / max(float(np.mean(self.interval_ms[-last:])), 1e-9) if self.interval_ms else 0.0


def save_run(out: Path, system: System, head: dict, n: int, skipped: list, times: FrameTimes,
             wall: float) -> tuple[dict, Trajectory]:
    """Write trajectory.txt, keyframes.txt and map.npz; the summary (``head`` first), not yet written."""
    out.mkdir(parents=True, exist_ok=True)
    traj = system.trajectory()
    write_tum(out / "trajectory.txt", traj)
    write_tum(out / "keyframes.txt", system.keyframe_trajectory())
    save_map(system.map, out / "map.npz")
    kitti = head.get("reader") == "KittiSequence" and len(traj) > 0
    if kitti:  # the KITTI devkit wants one pose per image: a frame without one holds the previous pose
        stamps = dict.fromkeys(range(n), np.nan) | {r.index: r.timestamp for r in system.results}  # NaN: skipped
        write_kitti(out / "trajectory_kitti.txt", per_frame_poses(traj, np.array(list(stamps.values()))))
    interval_ms = times.interval_ms
    lost = system.lost_frames()
    states = [r.state for r in system.results]
    summary = {
        **head,
        "frames": n,
        "tracked_frames": len(system.records),
        "lost_frames": lost,
        "initialising_frames": int(sum(s == State.NOT_INITIALIZED for s in states)),
        "skipped_frames": skipped,
        "keyframes": int(sum(not k.bad for k in system.map.keyframes.values())),
        "map_points": int(sum(not p.bad for p in system.map.points.values())),
        "timing_ms": {
            "frame_interval": stats(np.array(interval_ms)),
            # arrival of a frame (its recorded time with --realtime, else when decoded; live: its
            # capture time) to its pose
            "latency": stats(np.array(times.latency_ms)),
            "tracking": stats(np.array(times.tracking_ms)),
            "tracking_steps": {k: stats(np.array([r.timings_ms.get(k, np.nan) for r in system.results]))
                               for k in ("features", "motion", "local_map", "keyframe")},
            "local_mapping_per_keyframe": stats(np.array(system.mapper.timings_ms)),
            "local_ba": stats(np.array(system.mapper.ba_ms)),
            "local_mapping_steps": {k: stats(np.array(v)) for k, v in system.mapper.step_ms.items()},
        },
        # Sustained rate: poses out per second (prefetched feature extraction overlaps tracking).
        "tracking_fps": float(1e3 / np.median(interval_ms)) if len(interval_ms) else None,
        "wall_s": wall,
        "outputs": ["trajectory.txt", *(["trajectory_kitti.txt"] if kitti else []), "keyframes.txt", "map.npz",
                    "summary.json"],
        "config": system.cfg.to_dict(),
    }
    return summary, traj


def stats(ms: np.ndarray) -> dict | None:
    ms = ms[np.isfinite(ms)] if len(ms) else ms
    if len(ms) == 0:
        return None
    return {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "max": float(ms.max()), "n": len(ms)}


def evaluate_run(seq, traj: Trajectory, mode: str) -> dict | None:
    """ATE/RPE against the sequence's ground truth, when it has one (Sim3 for monocular modes)."""
    from slam.eval import evaluate

    gt = seq.groundtruth()
    if gt is None or len(gt) < 3 or len(traj) < 3:
        return None
    align = "sim3" if mode.startswith("mono") else "se3"
    try:
        res = evaluate(gt, traj, align=align)
    except ValueError as e:
        log.warning("evaluation skipped: %s", e)
        return None
    return {"align": align, "ate_rmse_m": res["ate"]["rmse"], "rpe_trans_rmse_m": res["rpe"]["trans"]["rmse"],
            "rpe_rot_rmse_deg": res["rpe"]["rot"]["rmse"], "scale": res["aligned"]["scale"],
            "path_length_m": float(gt.path_length())}


def save_empty_run(out: Path, head: dict, live: dict, wall: float) -> dict:
    """Outputs of a live run that got no frame: empty trajectories and a summary saying why."""
    out.mkdir(parents=True, exist_ok=True)
    empty = Trajectory(np.zeros(0), np.zeros((0, 4, 4)))
    write_tum(out / "trajectory.txt", empty)
    write_tum(out / "keyframes.txt", empty)
    summary = {**head, "frames": 0, "tracked_frames": 0, "lost_frames": [], "keyframes": 0, "map_points": 0,
               "tracking_fps": None, "wall_s": wall, "outputs": ["trajectory.txt", "keyframes.txt", "summary.json"],
               "evaluation": None, "live": live}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def write_summary(out: Path, summary: dict) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
