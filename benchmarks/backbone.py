#!/usr/bin/env python3
"""Accuracy and speed of the SLAM backbone on the shared clips and on synthetic sequences.

    python benchmarks/backbone.py [--synth-dir /tmp/slam_bench] [--only NAME ...]

Runs ``slam-run`` on each case, scores it with ``slam.eval`` and writes
benchmarks/results/backbone.json and backbone.md (ATE, RPE, lost frames,
tracking time per frame: median and 95th percentile, local BA time).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

from slam.cli.run import main as slam_run
from slam.datasets import data_root
from slam.synth import generate, preset

RESULTS = Path(__file__).resolve().parent / "results"


def cases(synth_dir: Path) -> list[tuple[str, Path, str, list[str]]]:
    """(name, sequence, mode, extra slam-run arguments)."""
    shared = data_root()
    kitti = shared / "kitti_odometry_seq07_first160"
    return [
        ("tum_fr1_desk_9 (rgbd)", shared / "tum_rgbd_fr1_desk_9frames", "rgbd", []),
        # --realtime: frames arrive at their recorded times (KITTI: 10 Hz), as from the camera.
        ("kitti07_160 (mono, 10 Hz camera rate)", kitti, "mono", ["--realtime"]),
        ("kitti07_160 (mono, as fast as possible)", kitti, "mono", []),
        # Local mapping after every keyframe in the tracking thread: what the algorithm does when
        # mapping always keeps up (not real time).
        ("kitti07_160 (mono, sync-mapping)", kitti, "mono", ["--sync-mapping"]),
        ("synth_demo_300 (rgbd)", synth_dir / "demo", "rgbd", []),
        ("synth_demo_300 (stereo)", synth_dir / "demo", "stereo", []),
        ("synth_demo_300 (mono)", synth_dir / "demo", "mono", []),
        ("synth_loop600 (rgbd, PNG replay)", synth_dir / "loop600", "rgbd", []),
        # --preload: frames decoded into memory first, as a camera delivers them (PNG decoding of these
        # noisy frames costs ~25 ms of CPU per frame, as much as tracking and mapping together).
        ("synth_loop600 (rgbd, frames in memory)", synth_dir / "loop600", "rgbd", ["--preload"]),
        ("synth_loop600 (rgbd, frames in memory, 30 Hz camera rate)", synth_dir / "loop600", "rgbd",
         ["--preload", "--realtime"]),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--synth-dir", type=Path, default=Path(os.environ.get("SLAM_BENCH_DATA", "/tmp/slam_bench")))
    p.add_argument("--only", nargs="*", help="substrings of case names to run")
    p.add_argument("--table-only", action="store_true", help="rewrite backbone.md from backbone.json, run nothing")
    args = p.parse_args()
    if args.table_only:
        d = json.loads((RESULTS / "backbone.json").read_text())
        write_table(d["meta"], d["results"])
        return
    for name in ("demo", "loop600"):
        if not (args.synth_dir / name / "synth.json").is_file():
            generate(preset(name), args.synth_dir / name, progress=False)
    # With --only, the other cases keep their last results.
    old = RESULTS / "backbone.json"
    rows = json.loads(old.read_text())["results"] if args.only and old.is_file() else []
    for name, path, mode, extra in cases(args.synth_dir):
        if args.only and not any(o in name for o in args.only):
            continue
        out = args.synth_dir / "runs" / name.replace(" ", "_").replace("(", "").replace(")", "").replace(",", "")
        t0 = time.perf_counter()
        rc = slam_run([str(path), "--out", str(out), "--mode", mode, "--no-progress", "--log-level", "WARNING", *extra])
        wall = time.perf_counter() - t0
        s = json.loads((out / "summary.json").read_text()) if rc == 0 else {}
        ev = s.get("evaluation") or {}
        t = s.get("timing_ms", {})
        rows = [r for r in rows if r["case"] != name]  # a rerun replaces the case's old row
        rows.append({
            "case": name, "frames": s.get("frames"), "tracked": s.get("tracked_frames"),
            "lost": len(s.get("lost_frames", [])), "keyframes": s.get("keyframes"), "points": s.get("map_points"),
            "ate_rmse_m": ev.get("ate_rmse_m"), "align": ev.get("align"), "path_m": ev.get("path_length_m"),
            "rpe_trans_rmse_m": ev.get("rpe_trans_rmse_m"), "rpe_rot_rmse_deg": ev.get("rpe_rot_rmse_deg"),
            "frame_interval_ms_median": (t.get("frame_interval") or {}).get("median"),
            "frame_interval_ms_p95": (t.get("frame_interval") or {}).get("p95"),
            "latency_ms_median": (t.get("latency") or {}).get("median"),
            "latency_ms_p95": (t.get("latency") or {}).get("p95"),
            "local_mapping_ms_median": (t.get("local_mapping_per_keyframe") or {}).get("median"),
            "tracking_ms_median": (t.get("tracking") or {}).get("median"),
            "tracking_ms_p95": (t.get("tracking") or {}).get("p95"),
            "local_ba_ms_median": (t.get("local_ba") or {}).get("median"),
            "steps_ms_median": {k: (v or {}).get("median") for k, v in (t.get("tracking_steps") or {}).items()},
            "mapping_steps_ms_median": {k: (v or {}).get("median")
                                        for k, v in (t.get("local_mapping_steps") or {}).items()},
            "wall_s": round(wall, 1),
        })
        print(json.dumps(rows[-1]))
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
            "command": "python benchmarks/backbone.py", "date": time.strftime("%Y-%m-%d")}
    (RESULTS / "backbone.json").write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")
    write_table(meta, rows)


LEGEND = """Columns (milliseconds; 2 cores shared by every thread of the process):

* **pose interval**: wall time between consecutive poses out of the tracker, i.e. the sustained rate
  (1000 / median = frames per second). Without `--realtime` frames come as fast as the pipeline allows.
* **latency**: from a frame's arrival (its recorded time with `--realtime`; else when decoded) to its pose.
* **tracking thread**: the tracking step alone (motion model, local map, keyframe decision), features
  already extracted by the pipeline's feature thread.
* **local mapping ms per KF (BA)**: the local-mapping thread per keyframe, and its local bundle adjustment.
* *PNG replay* decodes the noisy synthetic PNGs during the run (~25 ms of CPU per frame, competing for the
  2 cores); *frames in memory* (`--preload`) decodes them first, as a camera delivers decoded frames.
* *sync-mapping* runs local mapping inside the tracking thread after every keyframe: what the algorithm
  gives when mapping always keeps up (not real time).

Where the time goes, and the profile behind these numbers: `benchmarks/results/backbone_profile.md`.
"""


def write_table(meta: dict, rows: list[dict]) -> None:
    lines = ["| case | frames | tracked | lost | KFs | ATE RMSE (m) | path (m) | pose interval ms median / p95 "
             "| latency ms median / p95 | tracking thread ms median / p95 | local mapping ms per KF (BA) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        f = lambda x, d=4: "-" if x is None else (f"{x:.{d}f}" if isinstance(x, float) else str(x))
        lines.append(f"| {r['case']} | {r['frames']} | {r['tracked']} | {r['lost']} | {r['keyframes']} | "
                     f"{f(r['ate_rmse_m'])} ({r['align']}) | {f(r['path_m'], 1)} | "
                     f"{f(r.get('frame_interval_ms_median'), 1)} / {f(r.get('frame_interval_ms_p95'), 1)} | "
                     f"{f(r.get('latency_ms_median'), 1)} / {f(r.get('latency_ms_p95'), 1)} | "
                     f"{f(r['tracking_ms_median'], 1)} / {f(r['tracking_ms_p95'], 1)} | "
                     f"{f(r.get('local_mapping_ms_median'), 0)} ({f(r['local_ba_ms_median'], 0)}) |")
    (RESULTS / "backbone.md").write_text(
        f"# Backbone benchmark ({meta['date']}, {meta['machine']['cpus']} CPUs)\n\n`{meta['command']}`\n\n"
        + "\n".join(lines) + "\n\n" + LEGEND)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
