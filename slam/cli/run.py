"""``slam-run SEQUENCE --out OUT_DIR [--mode ...]``: replay a sequence through the SLAM system.

Writes ``trajectory.txt`` (TUM, camera-to-world, every tracked frame),
``keyframes.txt``, ``map.npz`` (the map save file) and ``summary.json``
(frames, keyframes, map points, lost frames, per-thread timing, ATE/RPE when
the sequence has ground truth).
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

from slam.config import SlamConfig
from slam.errors import DataError
from slam.replay import FramePipeline
from slam.system import System
from slam.tracking import State
from slam.trajectory import Trajectory, write_tum

log = logging.getLogger("slam.run")

MODES = ("rgbd", "stereo-inertial", "stereo", "mono-inertial", "mono")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-run", description=__doc__.splitlines()[0])
    p.add_argument("sequence", type=Path, help="sequence folder (TUM, KITTI, EuRoC, synthetic) or video file")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mode", choices=MODES, help="sensor mode (default: the richest the sequence offers)")
    p.add_argument("--config", type=Path, help="YAML file with features/tracking/mapping settings")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set features.n_features=1500 (repeatable)")
    p.add_argument("--realtime", action="store_true",
                   help="frames arrive at their recorded times, as from a camera (drop nothing, wait)")
    p.add_argument("--preload", action="store_true",
                   help="decode all frames into memory first, to time the system as with a camera (no disk decoding)")
    p.add_argument("--sync-mapping", action="store_true",
                   help="run local mapping in the tracking thread after each keyframe: repeatable results, not real time")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    p.add_argument("--log-level", default="INFO")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def run(args: argparse.Namespace) -> dict:
    from threadpoolctl import threadpool_limits

    # The SLAM threads already fill the cores, and its matrix products are small: BLAS threads
    # for them only add hand-offs (one BLAS thread: 32 -> 28 ms per RGB-D frame on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        return _run(args)


def _run(args: argparse.Namespace) -> dict:
    from slam.datasets import open_sequence

    cfg = SlamConfig.from_yaml(args.config) if args.config else SlamConfig()
    cfg.override(args.overrides)
    seq = open_sequence(args.sequence)
    mode = args.mode or seq.modes[0]
    if mode not in seq.modes:
        raise DataError(args.sequence, f"mode {mode!r} is not available here; this sequence offers {seq.modes}")
    if mode.endswith("-inertial"):
        log.warning("mode %s: the IMU is not fused yet (visual-inertial comes later); tracking visually", mode)
    log.info("sequence %s: %d frames, reader %s, mode %s", seq.name, len(seq), type(seq).__name__, mode)
    log.info("config: %s", json.dumps(cfg.to_dict()))
    seq.use_streams(mode)
    system = System(seq.camera, mode, cfg, stereo=seq.stereo, threaded=not args.sync_mapping)

    n = len(seq) if args.max_frames is None else min(len(seq), args.max_frames)
    skipped, track_ms, latency_ms = [], [], []
    interval_ms: list[float] = []  # wall time between consecutive poses: the sustained rate
    wall0 = time.perf_counter()
    bar = tqdm(total=n, desc="slam-run", unit="frame", disable=args.no_progress, file=sys.stderr)
    # Frames are decoded ahead and their features extracted one frame ahead, in other threads,
    # while this thread tracks (slam.replay).
    pipe = FramePipeline(seq, system.prepare, n, realtime=args.realtime, preload=args.preload)
    if args.preload:
        log.info("decoding %d frames into memory (--preload)", n)
        pipe.load()
    t_last = time.perf_counter()
    try:
        for item in pipe:
            bar.update()
            if item.error is not None:
                log.warning("skipping frame %d: %s", item.index, item.error)
                skipped.append({"index": item.index, "reason": str(item.error)})
                continue
            res = system.process(item.frame, item.prepared)
            now = time.perf_counter()
            track_ms.append(res.timings_ms["total"])
            latency_ms.append((now - item.t_arrival) * 1e3)
            interval_ms.append((now - t_last) * 1e3)
            t_last = now
            bar.set_postfix(fps=f"{1e3 / max(np.mean(interval_ms[-30:]), 1e-9):.0f}", state=res.state.value,
                            kf=len(system.map.keyframes), refresh=False)
    finally:
        pipe.close()
        system.shutdown()
        bar.close()
    wall = time.perf_counter() - wall0
    if not system.records:
        raise DataError(args.sequence, "no frame could be tracked")
    return _write_outputs(args, seq, system, mode, n, skipped, track_ms, interval_ms, latency_ms, wall)


def _write_outputs(args, seq, system: System, mode: str, n: int, skipped: list, track_ms: list,
                   interval_ms: list, latency_ms: list, wall: float) -> dict:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    traj = system.trajectory()
    write_tum(out / "trajectory.txt", traj)
    write_tum(out / "keyframes.txt", system.keyframe_trajectory())
    system.map.save(out / "map.npz")
    ms = np.array(track_ms)
    lost = system.lost_frames()
    states = [r.state for r in system.results]
    summary = {
        "sequence": str(args.sequence),
        "reader": type(seq).__name__,
        "mode": mode,
        "frames": n,
        "tracked_frames": len(system.records),
        "lost_frames": lost,
        "initialising_frames": int(sum(s == State.NOT_INITIALIZED for s in states)),
        "skipped_frames": skipped,
        "keyframes": int(sum(not k.bad for k in system.map.keyframes.values())),
        "map_points": int(sum(not p.bad for p in system.map.points.values())),
        "timing_ms": {
            "frame_interval": _stats(np.array(interval_ms)),
            # arrival of a frame (its recorded time with --realtime, else when decoded) to its pose
            "latency": _stats(np.array(latency_ms)),
            "tracking": _stats(ms),
            "tracking_steps": {k: _stats(np.array([r.timings_ms.get(k, np.nan) for r in system.results]))
                               for k in ("features", "motion", "local_map", "keyframe")},
            "local_mapping_per_keyframe": _stats(np.array(system.mapper.timings_ms)),
            "local_ba": _stats(np.array(system.mapper.ba_ms)),
            "local_mapping_steps": {k: _stats(np.array(v)) for k, v in system.mapper.step_ms.items()},
        },
        # Sustained rate: poses out per second (prefetched feature extraction overlaps tracking).
        "tracking_fps": float(1e3 / np.median(interval_ms)) if len(interval_ms) else None,
        "wall_s": wall,
        "outputs": ["trajectory.txt", "keyframes.txt", "map.npz", "summary.json"],
        "config": system.cfg.to_dict(),
    }
    summary["evaluation"] = _evaluate(seq, traj, mode)
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary


def _stats(ms: np.ndarray) -> dict | None:
    ms = ms[np.isfinite(ms)] if len(ms) else ms
    if len(ms) == 0:
        return None
    return {"median": float(np.median(ms)), "p95": float(np.percentile(ms, 95)), "max": float(ms.max()), "n": len(ms)}


def _evaluate(seq, traj: Trajectory, mode: str) -> dict | None:
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s: %(message)s")
    try:
        summary = run(args)
    except DataError as e:
        print(f"slam-run: error: {e}", file=sys.stderr)
        return 2
    ev = summary["evaluation"]
    msg = (f"{summary['frames']} frames, {len(summary['lost_frames'])} lost, {summary['keyframes']} keyframes, "
           f"{summary['map_points']} points, tracking {summary['tracking_fps']:.1f} fps (median)")
    if ev:
        msg += f", ATE RMSE {ev['ate_rmse_m']:.4f} m ({ev['align']})"
    print(f"slam-run: {msg}; wrote {args.out}/trajectory.txt and summary.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
