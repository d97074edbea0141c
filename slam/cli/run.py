"""``slam-run SEQUENCE_DIR --out OUT_DIR [--mode ...]``: replay a sequence and write the trajectory.

Until the keyframe backbone lands, the tracker is :mod:`slam.baseline_vo`, and
every output says so.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from slam.baseline_vo import NAME as TRACKER_NAME
from slam.baseline_vo import BaselineVO
from slam.errors import CorruptFrameError, DataError
from slam.trajectory import Trajectory, write_tum

log = logging.getLogger("slam.run")

MODES = ("rgbd", "stereo-inertial", "stereo", "mono-inertial", "mono")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-run", description=__doc__.splitlines()[0])
    p.add_argument("sequence", type=Path, help="sequence folder (TUM, KITTI, EuRoC, synthetic) or video file")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mode", choices=MODES, help="sensor mode (default: the richest the sequence offers)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from slam.datasets import open_sequence

    seq = open_sequence(args.sequence)
    mode = args.mode or seq.modes[0]
    if mode not in seq.modes:
        raise DataError(args.sequence, f"mode {mode!r} is not available here; this sequence offers {seq.modes}")
    if mode.endswith("-inertial"):
        log.warning("the baseline tracker ignores the IMU in mode %s", mode)
    log.info("sequence %s: %d frames, reader %s, mode %s", seq.name, len(seq), type(seq).__name__, mode)
    log.warning("tracker: %s", TRACKER_NAME)
    vo = BaselineVO(seq.camera, mode, seq.stereo)

    n = len(seq) if args.max_frames is None else min(len(seq), args.max_frames)
    stamps, poses, lost, skipped, times = [], [], [], [], []
    bar = tqdm(range(n), desc="slam-run", unit="frame", disable=args.no_progress, file=sys.stderr)
    for i in bar:
        try:
            frame = seq[i]
        except CorruptFrameError as e:
            log.warning("skipping frame %d: %s", i, e)
            skipped.append({"index": i, "reason": str(e)})
            continue
        if mode == "rgbd" and frame.depth is None:
            log.warning("frame %d has no depth: tracked from the motion model only", i)
        t0 = time.perf_counter()
        T_w_c = vo.track(frame)
        times.append(time.perf_counter() - t0)
        if T_w_c is None:
            lost.append(i)
            T_w_c = vo.T_w_c
        stamps.append(frame.timestamp)
        poses.append(T_w_c)
        bar.set_postfix(fps=f"{1.0 / max(np.mean(times[-20:]), 1e-9):.0f}", lost=len(lost))
    if not poses:
        raise DataError(args.sequence, "no frame could be read")

    args.out.mkdir(parents=True, exist_ok=True)
    traj = Trajectory(np.array(stamps), np.stack(poses))
    write_tum(args.out / "trajectory.txt", traj)
    ms = np.array(times) * 1e3
    summary = {
        "tracker": TRACKER_NAME,
        "sequence": str(args.sequence),
        "reader": type(seq).__name__,
        "mode": mode,
        "frames": n,
        "tracked_frames": len(poses) - len(lost),
        "lost_frames": lost,
        "skipped_frames": skipped,
        "time_per_frame_ms": {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95))},
        "fps": float(1e3 / np.mean(ms)),
        "trajectory": "trajectory.txt",
    }
    summary["evaluation"] = _evaluate(seq, traj, mode)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _evaluate(seq, traj: Trajectory, mode: str) -> dict | None:
    """ATE/RPE against the sequence's ground truth, when it has one (Sim3 for monocular modes)."""
    from slam.eval import evaluate

    gt = seq.groundtruth()
    if gt is None or len(gt) < 3:
        return None
    align = "sim3" if mode.startswith("mono") else "se3"
    try:
        res = evaluate(gt, traj, align=align)
    except ValueError as e:
        log.warning("evaluation skipped: %s", e)
        return None
    return {"align": align, "ate_rmse_m": res["ate"]["rmse"], "rpe_trans_rmse_m": res["rpe"]["trans"]["rmse"],
            "rpe_rot_rmse_deg": res["rpe"]["rot"]["rmse"], "scale": res["aligned"]["scale"]}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except DataError as e:
        print(f"slam-run: error: {e}", file=sys.stderr)
        return 2
    ev = summary["evaluation"]
    msg = f"{summary['frames']} frames, {len(summary['lost_frames'])} lost, {summary['fps']:.1f} fps"
    if ev:
        msg += f", ATE RMSE {ev['ate_rmse_m']:.4f} m ({ev['align']})"
    print(f"slam-run: {msg}; wrote {args.out / 'trajectory.txt'} and summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
