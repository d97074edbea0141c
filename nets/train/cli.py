"""``slam-train`` and ``slam-eval-model``: train any registered model, evaluate a checkpoint against baselines.

    slam-train netvlad --synth-seeds 0-5 --val-synth-seeds 6-7 --out nets/checkpoints/netvlad.pt --epochs 8
    slam-train netvlad --data ../shared/data/kitti_odometry_seq07_first160 --out /tmp/nv.pt --size tiny --resume
    slam-eval-model netvlad nets/checkpoints/netvlad.pt --synth-seeds 8-9 --json /tmp/eval.json

``--data`` takes any sequence folder the readers open (each its own world);
``--synth-seeds`` renders tiny synthetic rooms (two traversals each) into
``--cache`` once and reuses them; ``--map`` reads the keyframes of saved SLAM
maps. ``--holdout`` keeps frames of the same scenes out of training for the
evaluation (per-scene models: PoseNet, VidLoc):

    slam-train posenet --synth-seeds 0 --holdout traversal:b --out /tmp/posenet.pt
    slam-train posenet --map run/map.npz --holdout every:5 --out /tmp/posenet.pt
    slam-eval-model posenet /tmp/posenet.pt --synth-seeds 0 --holdout traversal:b
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from nets.base import ModelError
from nets.registry import create
from nets.train.data import (HOLDOUT_HELP, Clip, default_cache_dir, load_clip, load_map_clip, parse_seeds,
                             split_holdout, synth_clips)
from nets.train.trainable import SIZES, TrainableModel
from slam.errors import DataError

log = logging.getLogger("nets.train")


def _data_args(p: argparse.ArgumentParser, prefix: str = "") -> None:
    p.add_argument(f"--{prefix}data", nargs="+", default=[], metavar="SEQ", help="sequence folders (any reader)")
    p.add_argument(f"--{prefix}synth-seeds", metavar="SEEDS", help="synthetic rooms, e.g. 0-7 or 1,3,5")
    if not prefix:
        p.add_argument("--map", nargs="+", default=[], metavar="MAP",
                       help="saved SLAM maps (map.npz): their keyframes' thumbnails and poses")
        p.add_argument("--holdout", metavar="SPEC", help=HOLDOUT_HELP)


def load_clips(data: list[str], seeds: str | None, size_wh: tuple[int, int], cache: Path,
               with_depth: bool = False, maps: list[str] | None = None) -> list[Clip]:
    clips = [load_clip(p, size_wh, with_depth=with_depth) for p in data]
    if maps:
        if with_depth:
            raise ModelError("--map: saved maps keep keyframe images but no depth; this model needs depth")
        clips += [load_map_clip(p, size_wh) for p in maps]
    if seeds:
        clips += synth_clips(parse_seeds(seeds), cache, size_wh, with_depth=with_depth)
    return clips


def _setup_logging(level: str) -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO),
                        format="%(levelname)s %(name)s: %(message)s")


def train_main(argv: list[str] | None = None) -> int:
    from nets.train.loop import TrainSettings, build_model, train

    p = argparse.ArgumentParser(prog="slam-train", description=__doc__.splitlines()[0])
    p.add_argument("model", help="registered model name (nets/models/) or package.module:Class")
    _data_args(p)
    _data_args(p, "val-")
    p.add_argument("--out", required=True, type=Path, help="checkpoint file (.pt); .json and .state beside it")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", choices=SIZES, default="small")
    p.add_argument("--conf", default="{}", help="JSON settings over the size's conf, e.g. '{\"lr\": 3e-4}'")
    p.add_argument("--resume", action="store_true", help="continue from OUT.state when it exists")
    p.add_argument("--cache", type=Path, default=default_cache_dir(), help="synthetic render cache")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-eval", action="store_true", help="skip the evaluation against the baselines at the end")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    _setup_logging(args.log_level)
    command = shlex.join(["slam-train", *(sys.argv[1:] if argv is None else argv)])
    try:
        conf = json.loads(args.conf)
        settings = TrainSettings(epochs=args.epochs, seed=args.seed, device=args.device, size=args.size,
                                 conf=conf, resume=args.resume, progress=not args.no_progress, command=command,
                                 evaluate=not args.no_eval)
        probe = build_model(args.model, TrainSettings(size=args.size, conf=conf), "cpu")
        size, depth = probe.input_size, probe.needs_depth
        clips = load_clips(args.data, args.synth_seeds, size, args.cache, depth, args.map)
        if not clips:
            raise ModelError("no training data: give --data SEQ..., --synth-seeds and/or --map")
        val = load_clips(args.val_data, args.val_synth_seeds, size, args.cache, depth)
        if args.holdout:
            clips, held = split_holdout(clips, args.holdout)
            val = held + val
        sidecar = train(args.model, clips, args.out, settings, val_clips=val or None)
    except (ModelError, DataError, ValueError) as e:
        print(f"slam-train: error: {e}", file=sys.stderr)
        return 2
    print(format_metrics(sidecar["metrics"]))
    print(f"wrote {args.out} (+ .json, .state)")
    return 0


def format_metrics(m: dict | None) -> str:
    """A small text table of ``{"method": {"recall@1": x, ...}}`` entries (other keys as lines above)."""
    if not m:
        return "no metrics"
    lines = [f"{k}: {v}" for k, v in m.items() if not isinstance(v, dict)]
    rows = {k: v for k, v in m.items() if isinstance(v, dict) and v and all(
        isinstance(x, (int, float, type(None))) for x in v.values())
        and any("recall" in c or "@" in c or "median" in c for c in v)}
    cols = list(dict.fromkeys(c for v in rows.values() for c in v))
    width = {c: max(12, len(c) + 2) for c in cols}
    lines.append(f"{'':20s}" + "".join(f"{c:>{width[c]}s}" for c in cols))
    for k, v in rows.items():
        lines.append(f"{k:20s}" + "".join(f"{'-' if v.get(c) is None else format(v[c], '.3f'):>{width[c]}s}"
                                          for c in cols))
    return "\n".join(lines)


def eval_main(argv: list[str] | None = None) -> int:
    from nets.base import load_checkpoint

    p = argparse.ArgumentParser(prog="slam-eval-model", description="Evaluate a checkpoint against its baselines.")
    p.add_argument("model")
    p.add_argument("checkpoint", type=Path)
    _data_args(p)
    _data_args(p, "fit-")
    p.add_argument("--json", type=Path, help="write the metrics here (default: CHECKPOINT.eval.json)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--cache", type=Path, default=default_cache_dir())
    p.add_argument("--seed", type=int, default=0, help="seeds the baselines (untrained weights, vocabularies)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    _setup_logging(args.log_level)
    try:
        from nets.base import resolve_device

        device = resolve_device(args.device)
        _, sidecar = load_checkpoint(args.checkpoint)
        model = create(args.model, sidecar.get("conf") or {}, device)
        if not isinstance(model, TrainableModel):
            raise ModelError(f"model {args.model!r} has no evaluation (not a TrainableModel)")
        model.load_weights(args.checkpoint)
        model.net.eval()
        size, depth = model.input_size, model.needs_depth
        clips = load_clips(args.data, args.synth_seeds, size, args.cache, depth, args.map)
        if not clips:
            raise ModelError("no evaluation data: give --data SEQ..., --synth-seeds and/or --map")
        fit = load_clips(args.fit_data, args.fit_synth_seeds, size, args.cache, depth)
        if args.holdout:  # evaluate on the held-out frames; the rest is what the model (and baselines) fit on
            rest, clips = split_holdout(clips, args.holdout)
            fit = rest + fit
        fit = fit or None
        metrics = model.evaluate(clips, fit_clips=fit, seed=args.seed)
    except (ModelError, DataError, ValueError) as e:
        print(f"slam-eval-model: error: {e}", file=sys.stderr)
        return 2
    out = args.json or args.checkpoint.with_suffix(args.checkpoint.suffix + ".eval.json")
    record = {"model": args.model, "checkpoint": str(args.checkpoint), "command": shlex.join(
        ["slam-eval-model", *(sys.argv[1:] if argv is None else argv)]),
        "data": [{"name": c.name, "source": c.source, "world": c.world, "frames": len(c)} for c in clips],
        "metrics": metrics}
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(format_metrics(metrics))
    print(f"wrote {out}")
    return 0
