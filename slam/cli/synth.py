"""``slam-synth --preset demo --out DIR [--layout native|tum|euroc|kitti]``: render a synthetic sequence.

Config precedence: preset, then ``--config FILE.yaml`` (any SynthConfig fields), then the flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

from slam.cli import console
from slam.errors import DataError
from slam.synth.config import PRESETS, SynthConfig, preset
from slam.synth.generate import LAYOUTS, generate

log = logging.getLogger("slam.synth")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-synth", description=console.description(__doc__))
    p.add_argument("--preset", choices=sorted(PRESETS), default="demo", help="named configuration (default: demo)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--layout", choices=LAYOUTS, default="native", help="folder layout (default: native)")
    p.add_argument("--config", type=Path, help="YAML file with SynthConfig fields overriding the preset")
    p.add_argument("--frames", type=int, help="number of frames")
    p.add_argument("--seed", type=int, help="random seed (textures, noise)")
    p.add_argument("--no-stereo", action="store_true", help="no right image")
    p.add_argument("--no-imu", action="store_true", help="no IMU")
    p.add_argument("--no-depth", action="store_true", help="no depth")
    p.add_argument("--no-noise", action="store_true", help="exact depth, clean images, perfect IMU")
    console.add_arguments(p)
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> SynthConfig:
    cfg = preset(args.preset)
    if args.config is not None:
        cfg = SynthConfig.from_yaml(args.config, base=cfg)
    over: dict = {}
    if args.frames is not None:
        over["num_frames"] = args.frames
    if args.seed is not None:
        over["seed"] = args.seed
    if args.no_stereo:
        over["stereo"] = False
    if args.no_imu:
        over["imu"] = False
    if args.no_depth:
        over["depth"] = False
    if args.no_noise:
        over["noise"] = False
    return SynthConfig.from_dict(over, base=cfg) if over else cfg


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console.setup(args.log_level, args.verbose)
    try:
        cfg = build_config(args)
        console.log_config(log, "config", dataclasses.asdict(cfg))  # also in synth.json
        t0 = time.perf_counter()
        with console.progress(cfg.num_frames, f"slam-synth {cfg.name}", disable=args.no_progress) as bar:
            out = generate(cfg, args.out, layout=args.layout, progress=bar.update)
    except (DataError, KeyError, OSError) as e:
        print(f"slam-synth: error: {e}", file=sys.stderr)
        return 2
    print(f"slam-synth: wrote {cfg.num_frames} frames ({args.layout}) to {out} in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
