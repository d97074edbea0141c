#!/usr/bin/env python3
"""Time the synthetic generator on a preset and record it in benchmarks/results/synth_speed_<preset>.json.

    python benchmarks/synth_speed.py [--preset loop600] [--out /tmp/synth_bench]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import time
from pathlib import Path

from slam.synth import generate, preset

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="loop600")
    p.add_argument("--out", type=Path, default=Path("/tmp/synth_bench"))
    args = p.parse_args()
    cfg = preset(args.preset)
    shutil.rmtree(args.out, ignore_errors=True)
    t0 = time.perf_counter()
    generate(cfg, args.out, progress=False)
    wall = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    result = {
        "preset": args.preset,
        "frames": cfg.num_frames,
        "resolution": [cfg.width, cfg.height],
        "outputs": {"depth": cfg.depth, "stereo": cfg.stereo, "imu": cfg.imu, "noise": cfg.noise},
        "wall_s": round(wall, 1),
        "ms_per_frame": round(1e3 * wall / cfg.num_frames, 1),
        "disk_mb": round(size / 2**20),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "processor": platform.machine()},
        "command": f"python benchmarks/synth_speed.py --preset {args.preset}",
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"synth_speed_{args.preset}.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
