#!/usr/bin/env python3
"""Time the synthetic generator on a preset: benchmarks/results/synth_speed_<preset>.{json,md}.

    python benchmarks/synth_speed.py [--preset loop600] [--repeat 3] [--out /tmp/synth_bench]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import fmt, md_header, md_table, meta, summarise, write_results  # noqa: E402

from slam.synth import generate, preset  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="loop600")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--out", type=Path, default=Path("/tmp/synth_bench"))
    args = p.parse_args()
    cfg = preset(args.preset)
    runs = []
    for _ in range(args.repeat):
        shutil.rmtree(args.out, ignore_errors=True)
        t0 = time.perf_counter()
        generate(cfg, args.out, progress=False)
        wall = time.perf_counter() - t0
        size = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
        runs.append({"wall_s": wall, "ms_per_frame": 1e3 * wall / cfg.num_frames, "disk_mb": size / 2**20})
    summ = summarise(runs)
    m = meta(preset=args.preset, frames=cfg.num_frames, resolution=[cfg.width, cfg.height],
             outputs={"depth": cfg.depth, "stereo": cfg.stereo, "imu": cfg.imu, "noise": cfg.noise})
    md = (md_header(f"Synthetic generator speed: preset `{args.preset}`", m, args.repeat) + "\n"
          + md_table(["frames", "resolution", "outputs", "wall s", "ms per frame", "disk MB"], [[
              str(cfg.num_frames), f"{cfg.width}x{cfg.height}",
              ", ".join(k for k, v in m["outputs"].items() if v) or "RGB only",
              fmt(summ["wall_s"]), fmt(summ["ms_per_frame"]), fmt(summ["disk_mb"], 0)]]))
    write_results(f"synth_speed_{args.preset}", m, [{"runs": runs, "summary": summ}], md)
    print(md)


if __name__ == "__main__":
    main()
