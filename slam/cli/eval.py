"""``slam-eval GT EST``: ATE, RPE and KITTI segment errors of an estimated trajectory against ground truth.

Same association and alignment conventions as ``evo_ape``/``evo_rpe`` (``-a`` = se3,
``-as`` = sim3). Each file's format is its own and found from its column count
(8 = TUM, 12 = KITTI) unless ``--gt-format``/``--est-format`` say it; a KITTI pose
file takes its timestamps from ``--gt-times``/``--est-times``, else from the
``times.txt`` its folder layout points to (``poses/NN.txt`` ->
``sequences/NN/times.txt``), else from its line index (which matches only
another file indexed the same way). Bad input gives a one-line error on stderr
and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

from slam.cli import console
from slam.errors import DataError
from slam.eval.common import EvalError, Statistics
from slam.eval.evaluate import Evaluation, compute
from slam.eval.metrics import ALIGN_METHODS, DELTA_UNITS
from slam.trajectory import (
    FORMATS,
    Trajectory,
    atomic_write_text,
    check_increasing,
    detect_format,
    find_kitti_times,
    parse_tum_rows,
    read_kitti,
    read_tum,
)

log = logging.getLogger("slam.eval.cli")
EXIT_BAD_INPUT = 2
UNIT_NAMES = {"f": "frames", "m": "m", "s": "s"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-eval", description=console.description(__doc__))
    p.add_argument("gt", type=Path, help="ground-truth trajectory file")
    p.add_argument("est", type=Path, help="estimated trajectory file")
    p.add_argument("--gt-format", choices=("auto", *FORMATS), default="auto",
                   help="format of GT: auto (default: 8 columns TUM, 12 KITTI), tum or kitti")
    p.add_argument("--est-format", choices=("auto", *FORMATS), default="auto", help="format of EST (as --gt-format)")
    p.add_argument("--format", choices=FORMATS, help="format of both files (shorthand for the two above)")
    p.add_argument("--align", choices=ALIGN_METHODS, default="se3",
                   help="alignment: se3 (rigid, default), sim3 (with scale, monocular) or none")
    p.add_argument("--delta", type=float, default=1.0, help="RPE pair spacing (default 1)")
    p.add_argument("--delta-unit", choices=DELTA_UNITS, default="f",
                   help="unit of --delta: f frames (default), m metres of path, s seconds")
    p.add_argument("--max-diff", type=float, default=0.01, help="association tolerance in seconds (default 0.01)")
    p.add_argument("--t-offset", type=float, default=0.0, help="seconds added to EST stamps before association")
    p.add_argument("--gt-times", type=Path, help="KITTI GT: timestamps file, one per line (e.g. times.txt)")
    p.add_argument("--est-times", type=Path, help="KITTI EST: timestamps file, one per line")
    p.add_argument("--times", type=Path, help="timestamps file for every KITTI file given no --gt/--est-times")
    p.add_argument("--kitti-lengths", type=float, nargs="+", metavar="M",
                   help="KITTI segment lengths in metres (default 100..800, or automatic for short clips)")
    p.add_argument("--kitti-step", type=int, default=10, help="KITTI: first frame every N frames (default 10)")
    p.add_argument("--json", type=Path, metavar="OUT.json", help="write the results as JSON")
    p.add_argument("--plot", type=Path, metavar="OUT.png", help="write a PNG: top view and error over time")
    console.add_arguments(p, log_level="WARNING", progress=False)
    return p.parse_args(argv)


def read_times(path: Path) -> np.ndarray:
    """Timestamps (s), one per line, strictly increasing."""
    data, lines = parse_tum_rows(path, 1)
    if data.shape[0] == 0:
        raise DataError(path, "timestamps file holds no timestamps")
    check_increasing(path, data[:, 0], lines)
    return data[:, 0]


def open_trajectory(path: Path, fmt: str, times_path: Path | None) -> tuple[Trajectory, str, str]:
    """Read one file in ``fmt`` (``auto``: by column count); returns it, its format and where its stamps come from."""
    if not path.is_file():
        raise DataError(path, "no such file" if not path.exists() else "not a file")
    if fmt == "auto":
        fmt = detect_format(path)
    if fmt == "tum":
        if times_path is not None:
            log.info("%s is a TUM file: its own timestamps are used, not %s", path, times_path)
        return read_tum(path), fmt, "TUM"
    times_path = times_path if times_path is not None else find_kitti_times(path)
    if times_path is None:
        return read_kitti(path, None), fmt, "KITTI, stamps = line index"
    return read_kitti(path, read_times(times_path)), fmt, f"KITTI, stamps from {times_path}"


def _check_stamp_kinds(gt_src: str, est_src: str) -> None:
    """Line-index stamps match only line-index stamps: say so instead of 'no matching timestamps'."""
    gt_idx, est_idx = gt_src.endswith("line index"), est_src.endswith("line index")
    if gt_idx != est_idx:
        which, flag = ("GT", "--gt-times") if gt_idx else ("EST", "--est-times")
        raise EvalError(f"{which} is a KITTI pose file without timestamps and the other file has real ones: "
                        f"give {flag} FILE (e.g. the sequence's times.txt)")


def _row(name: str, s: Statistics, fmt: str = "{:10.6f}") -> str:
    vals = (s.rmse, s.mean, s.median, s.std, s.min, s.max)
    return f"{name:<14}" + "".join(fmt.format(v) for v in vals) + f"{s.n:>8d}"


def format_report(ev: Evaluation, gt_path: Path, est_path: Path, sources: tuple[str, str] | None = None) -> str:
    """The human-readable table printed by the CLI (``sources``: each file's format and where its stamps came from)."""
    d = ev.to_dict()
    unit = UNIT_NAMES[ev.delta_unit]
    lines = [
        f"ground truth : {gt_path} ({ev.n_gt} poses{', ' + sources[0] if sources else ''})",
        f"estimate     : {est_path} ({ev.n_est} poses{', ' + sources[1] if sources else ''})",
        f"matched      : {len(ev.gt)} poses (max diff {ev.max_diff:g} s, t offset {ev.t_offset:g} s)",
        f"alignment    : {ev.align}" + (f" (scale {ev.scale:.6f})" if ev.align == "sim3" else ""),
        f"RPE delta    : {ev.delta:g} {unit}, {len(ev.rpe_pairs)} pairs",
        "",
        f"{'':<14}" + "".join(f"{h:>10}" for h in ("rmse", "mean", "median", "std", "min", "max")) + f"{'n':>8}",
        _row("ATE (m)", Statistics(**d["ate"])),
        _row("RPE t (m)", Statistics(**d["rpe"]["trans"])),
        _row("RPE r (deg)", Statistics(**d["rpe"]["rot"])),
    ]
    if ev.kitti is not None:
        k = ev.kitti
        lens = ", ".join(f"{v:g}" for v in k.lengths)
        lines += ["", f"KITTI        : t_rel {k.t_rel:.4f} %   r_rel {k.r_rel:.4f} deg/100 m   "
                      f"({k.n_segments} segments, lengths {lens} m{' (auto, short path)' if k.auto_lengths else ''})"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> dict:
    """Read, evaluate, print and write; raises DataError / EvalError on bad input."""
    if args.delta_unit == "f" and not float(args.delta).is_integer():
        raise EvalError(f"--delta must be a whole number of frames with --delta-unit f, got {args.delta}")
    delta = int(args.delta) if args.delta_unit == "f" else float(args.delta)
    if args.max_diff < 0:
        raise EvalError(f"--max-diff must be >= 0, got {args.max_diff}")
    gt_fmt = args.format or args.gt_format
    est_fmt = args.format or args.est_format
    gt, gt_fmt, gt_src = open_trajectory(args.gt, gt_fmt, args.gt_times or args.times)
    est, est_fmt, est_src = open_trajectory(args.est, est_fmt, args.est_times or args.times)
    _check_stamp_kinds(gt_src, est_src)
    ev = compute(gt, est, align=args.align, delta=delta, delta_unit=args.delta_unit, max_diff=args.max_diff,
                 t_offset=args.t_offset, kitti_lengths=args.kitti_lengths, kitti_step=args.kitti_step)
    print(format_report(ev, args.gt, args.est, (gt_src, est_src)))
    result = {"gt": str(args.gt), "est": str(args.est), "gt_format": gt_fmt, "est_format": est_fmt,
              **ev.to_dict()}
    if args.json is not None:
        atomic_write_text(args.json, json.dumps(result, indent=2) + "\n")
        print(f"\nwrote {args.json}")
    if args.plot is not None:
        from slam.eval.plot import plot_evaluation

        plot_evaluation(ev, args.plot, title=f"{args.est.name} vs {args.gt.name}: ATE rmse "
                        f"{result['ate']['rmse']:.4g} m ({args.align})")
        print(f"wrote {args.plot}")
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console.setup(args.log_level, args.verbose)
    try:
        run(args)
    except (DataError, EvalError) as e:
        print(f"slam-eval: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        print(f"slam-eval: error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
