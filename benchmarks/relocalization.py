#!/usr/bin/env python3
"""Relocalisation: a lost tracker brought back after 2 s of black frames, and a second pass with ``--map``.

    python benchmarks/relocalization.py [--repeat 3] [--synth-dir /tmp/slam_bench]

* **black frames**: the demo room at 640x480, 30 Hz, on a slow loop (40 s) so that the camera comes back
  to texture where the map was built, 0.45 m further on: 45 textured frames, 60 black (2 s), 45 textured,
  tracked as ``slam-run`` replays (threaded local mapping, back-pressure). Figures: frames from texture
  returning to the first tracked frame, the position error of the frames after it (in the alignment of the
  frames before the loss, SE3, no realignment) and the number of maps; the same with
  ``tracking.relocalization=false`` (a new map at the last pose), the trivial alternative.
* **--map**: ``slam-run`` over the synthetic ``demo`` sequence (300 frames, 10 s loop) saves its map; a
  second run over frames 100-299 with ``--map`` relocalises in it. Figure: its ATE in the first run's frame
  (against the ground truth aligned to the first run, no alignment of its own), and the same without ``--map``.

Writes ``results/relocalization.{json,md}`` whole.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import check, fmt, md_header, md_table, meta, summarise, write_results  # noqa: E402
from slam.backbone.config import SlamConfig  # noqa: E402
from slam.backbone.frontend.tracking import State  # noqa: E402
from slam.backbone.system import System  # noqa: E402
from slam.cli.run import main as slam_run  # noqa: E402
from slam.datasets import open_sequence  # noqa: E402
from slam.eval import compute  # noqa: E402
from slam.records import Frame  # noqa: E402
from slam.replay import PipelineItem  # noqa: E402
from slam.runner import Runner, default_mapping_lag  # noqa: E402
from slam.synth import SynthSequence, generate, preset  # noqa: E402
from slam.trajectory import Trajectory, read_tum  # noqa: E402

BEFORE, BLACK, AFTER = 45, 60, 45
MAP_LATER = 100  # the --map pass starts at this frame


# ------------------------------------------------------------------ black frames
def black_frames() -> tuple:
    cfg = dataclasses.replace(preset("demo"), num_frames=BEFORE + BLACK + AFTER, loop_period_s=40.0, imu=False,
                              stereo=False)
    seq = SynthSequence(cfg)
    frames = []
    for i in range(len(seq)):
        if BEFORE <= i < BEFORE + BLACK:
            img, depth = np.zeros((cfg.height, cfg.width, 3), np.uint8), np.zeros((cfg.height, cfg.width), np.float32)
        else:
            f = seq.render_frame(i)
            img, depth = f.rgb, f.depth
        frames.append(Frame(index=i, timestamp=float(seq.frame_us[i]) / 1e6, image=img, camera=seq.camera,
                            depth=depth, T_w_c_gt=seq.T_w_c[i].copy()))
    return seq.camera, frames


def run_black(camera, frames, relocalization: bool) -> dict:
    cfg = SlamConfig()
    cfg.tracking.relocalization = relocalization
    system = System(camera, "rgbd", cfg)
    runner = Runner(system, back_pressure=True, mapping_lag=default_mapping_lag("rgbd"))
    t0 = time.perf_counter()
    try:
        runner.run(PipelineItem(f.index, f, None, None, None) for f in frames)
    finally:
        system.shutdown()
    states = [r.state for r in system.results]
    back = next((i for i in range(BEFORE + BLACK, len(frames)) if states[i] == State.OK), None)
    traj = system.trajectory()
    gt = Trajectory(np.array([f.timestamp for f in frames]), np.stack([f.T_w_c_gt for f in frames]))
    t_loss = frames[BEFORE].timestamp
    T = compute(gt.subset(gt.timestamps < t_loss), traj.subset(traj.timestamps < t_loss), "se3").T_align
    after = traj.subset(traj.timestamps > t_loss)
    idx = np.searchsorted(gt.timestamps, after.timestamps - 1e-9)
    err = np.linalg.norm(after.positions @ T[:3, :3].T + T[:3, 3] - gt.positions[idx], axis=1)
    reloc = system.tracker.relocalizations[0] if system.tracker.relocalizations else {}
    reloc_ms = [r.timings_ms["relocalization"] for r in system.results if "relocalization" in r.timings_ms
                and r.index >= BEFORE + BLACK]
    return {"frames_to_recover": None if back is None else back - BEFORE - BLACK,
            "error_after_max_m": float(err.max()) if len(err) else None,
            "error_after_median_m": float(np.median(err)) if len(err) else None,
            "error_first_m": float(err[0]) if len(err) else None,
            "maps": len({r.map_id for r in system.records}), "inliers": reloc.get("inliers"),
            "reloc_ms_success_frame": reloc_ms[-1] if reloc_ms else None,
            "wall_s": time.perf_counter() - t0}


# ------------------------------------------------------------------ --map
def later_part(seq: Path, dest: Path, start: int) -> Path:
    dest.mkdir(parents=True)
    for name in ("camera.yaml", "synth.json", "groundtruth.txt"):
        shutil.copy(seq / name, dest / name)
    for name in ("rgb", "depth"):
        (dest / name).symlink_to(seq / name)
        lines = (seq / f"{name}.txt").read_text().splitlines(keepends=True)
        (dest / f"{name}.txt").write_text("".join(lines[:1] + lines[1 + start:]))
    return dest


def ate_in_frame_of(seq: Path, run1: Path, run2: Path) -> float:
    gt = open_sequence(seq).groundtruth()
    T = compute(gt, read_tum(run1 / "trajectory.txt"), "se3").T_align
    est = read_tum(run2 / "trajectory.txt")
    idx = np.searchsorted(gt.timestamps, est.timestamps - 1e-6)
    p = est.positions @ T[:3, :3].T + T[:3, 3]
    return float(np.sqrt(np.mean(np.sum((p - gt.positions[idx]) ** 2, axis=1))))


def run_map(seq: Path, later: Path, tmp: Path, i: int) -> dict:
    run1, run2, plain = tmp / f"run1_{i}", tmp / f"run2_{i}", tmp / f"plain_{i}"
    common = ["--mode", "rgbd", "--no-progress", "--log-level", "WARNING"]
    slam_run([str(seq), "--out", str(run1), *common])
    t0 = time.perf_counter()
    rc = slam_run([str(later), "--out", str(run2), "--map", str(run1 / "map.npz"), *common])
    wall = time.perf_counter() - t0
    slam_run([str(later), "--out", str(plain), *common])
    s1 = json.loads((run1 / "summary.json").read_text())
    s = json.loads((run2 / "summary.json").read_text())
    return {"rc": rc, "first_run_ate_m": s1["evaluation"]["ate_rmse_m"],
            "ate_in_first_frame_m": ate_in_frame_of(seq, run1, run2),
            "ate_without_map_m": ate_in_frame_of(seq, run1, plain),
            "relocalized_at_frame": s["loaded_map"]["relocalized_at_frame"], "lost": len(s["lost_frames"]),
            "keyframes_loaded": s["loaded_map"]["keyframes"], "keyframes_after": s["keyframes"], "wall_s": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--synth-dir", type=Path, default=Path("/tmp/slam_bench"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    m = meta()
    camera, frames = black_frames()
    black = [run_black(camera, frames, True) for _ in range(args.repeat)]
    plain = [run_black(camera, frames, False)]
    demo = args.synth_dir / "demo"
    if not (demo / "synth.json").is_file():
        generate(preset("demo"), demo, progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        later = later_part(demo, Path(tmp) / "demo_later", MAP_LATER)
        maps = [run_map(demo, later, Path(tmp), i) for i in range(args.repeat)]
    cases = [{"name": "black frames (relocalisation)", "runs": black, "summary": summarise(black)},
             {"name": "black frames (relocalisation off: new map)", "runs": plain, "summary": summarise(plain)},
             {"name": "--map second pass", "runs": maps, "summary": summarise(maps)}]
    b, p, mp = (c["summary"] for c in cases)
    rows = [
        ["black frames, relocalisation", fmt(b["frames_to_recover"], 0), fmt(b["inliers"], 0),
         fmt(b["error_first_m"], 4), fmt(b["error_after_max_m"], 4), fmt(b["maps"], 0)],
        ["black frames, relocalisation off (new map)", fmt(p["frames_to_recover"], 0), "-",
         fmt(p["error_first_m"], 4), fmt(p["error_after_max_m"], 4), fmt(p["maps"], 0)],
    ]
    worst_back = max(r["frames_to_recover"] if r["frames_to_recover"] is not None else 1 << 30 for r in black)
    worst_err = max(r["error_after_max_m"] if r["error_after_max_m"] is not None else np.inf for r in black)
    worst_map = max(r["ate_in_first_frame_m"] for r in maps)
    md = md_header("Relocalisation", m, args.repeat) + "\n" + __doc__.split("\n\n", 2)[2].rsplit("\n\n", 1)[0] + "\n\n"
    md += md_table(["case", "frames to recover", "inliers", "error first frame (m)", "error after, max (m)", "maps"],
                   rows)
    md += "\n\n" + md_table(["--map pass over demo frames 100-299", "first run ATE (m)", "ATE in its frame (m)",
                             "without --map (m)", "relocalised at frame", "keyframes loaded / after"],
                            [["demo 300, rgbd", fmt(mp["first_run_ate_m"], 4), fmt(mp["ate_in_first_frame_m"], 4),
                              fmt(mp["ate_without_map_m"], 4), fmt(mp["relocalized_at_frame"], 0),
                              f"{fmt(mp['keyframes_loaded'], 0)} / {fmt(mp['keyframes_after'], 0)}"]])
    md += "\n\n## Targets\n\n" + md_table(["target", "", "figures"], [
        check("back on track within 10 frames of texture returning (every run)", worst_back < 10,
              f"worst {worst_back} frames"),
        check("pose error after relocalisation <= 5 cm (every run)", worst_err <= 0.05, f"worst {worst_err:.4f} m"),
        check("--map pass: ATE in the old map's frame <= 1 cm (every run)", worst_map <= 0.01,
              f"worst {worst_map:.4f} m"),
    ])
    write_results("relocalization", m, cases, md)
    print(md)


if __name__ == "__main__":
    main()
