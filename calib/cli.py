"""``slam-calib``: calibrate a camera or a stereo pair from views of a board; convert camera files.

    slam-calib camera SOURCE --board checkerboard:9x6:0.025 [--model pinhole|fisheye] [--k3 auto|fix|fit] \
        --out camera.yaml
    slam-calib stereo LEFT RIGHT --board charuco:7x5:0.04:0.03:DICT_5X5_100 --out stereo.yaml
    slam-calib convert sensor.yaml --out camera.yaml

SOURCE is a folder of images, a video file, or a camera (``0``, ``/dev/video0``).
A live camera shows the coverage so far where there is a screen (q ends the
collection; Ctrl-C too) and stops by itself once ``--max-views`` views cover
the image with enough tilt. The highest radial term (pinhole k3, fisheye k4) is
fitted only when the views reach the image corners (``--k3 auto``); the camera
file and the log give the coverage of each image region. Exit status 2 on bad
input, 1 when calibration fails.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from calib.boards import Board, BoardSpecError
from calib.camera_files import read_camera_file, write_camera_file
from calib.intrinsics import OUTLIER_FACTOR, TOP_TERM_MODES, Calibration, CalibrationError, calibrate
from calib.sources import FrameSource, open_source
from calib.stereo import (
    StereoCalibration,
    calibrate_stereo,
    collect_pairs,
    write_stereo_file,
)
from calib.views import (
    CoverageWindow,
    SelectionConfig,
    ViewCollector,
    draw_coverage,
    has_screen,
)
from slam.errors import DataError

log = logging.getLogger("calib.cli")

EXIT_FAILED, EXIT_BAD_INPUT = 1, 2


def board_arg(spec: str) -> Board:
    try:
        return Board.parse(spec)
    except BoardSpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-calib", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(q: argparse.ArgumentParser) -> None:
        q.add_argument("--board", type=board_arg, required=True, metavar="SPEC",
                       help="checkerboard:COLSxROWS:SQUARE_M (inner corners, metres) or "
                            "charuco:COLSxROWS:SQUARE_M:MARKER_M:DICT (squares, metres, e.g. DICT_5X5_100)")
        q.add_argument("--model", choices=("pinhole", "fisheye"), default="pinhole",
                       help="pinhole with radial-tangential distortion (default) or fisheye (equidistant)")
        q.add_argument("--out", type=Path, required=True, help="YAML file to write")
        q.add_argument("--min-views", type=int, default=10, help="fewer usable views is an error (default 10)")
        q.add_argument("--max-views", type=int, default=30,
                       help="a video or camera stops once this many views cover the image (default 30)")
        q.add_argument("--every", type=int, default=1, metavar="N", help="use every N-th frame (default 1)")
        q.add_argument("--max-blur", type=float, default=SelectionConfig.max_blur_px, metavar="PX",
                       help="skip frames whose board edges are wider than this, pixels (default %(default)s)")
        q.add_argument("--outlier-factor", type=float, default=OUTLIER_FACTOR,
                       help="drop views whose RMS exceeds this many times the median (default %(default)s)")
        q.add_argument("--k3", choices=TOP_TERM_MODES, default="auto", dest="top_term",
                       help="the highest radial term (pinhole k3, fisheye k4): fitted only when the views reach "
                            "the image corners (auto, the default), held at 0 (fix), or always fitted (fit)")
        q.add_argument("--fix-k3", action="store_const", const="fix", dest="top_term", help="same as --k3 fix")
        q.add_argument("--show", action=argparse.BooleanOptionalAction, default=None,
                       help="show the coverage window (default: for a live camera when there is a screen)")
        q.add_argument("--log-level", default="INFO")

    cam = sub.add_parser("camera", help="intrinsics of one camera")
    cam.add_argument("source", help="folder of images, video file, or camera (0, /dev/video0)")
    common(cam)
    st = sub.add_parser("stereo", help="intrinsics of both cameras, their relative pose and the rectification")
    st.add_argument("left", help="left camera's folder, video or device (pairs: same or sorted file names, "
                                 "or frame index)")
    st.add_argument("right", help="right camera's folder, video or device")
    common(st)
    cv = sub.add_parser("convert", help="an OpenCV, ROS or EuRoC camera file to ours")
    cv.add_argument("input", type=Path, help="camera file to read")
    cv.add_argument("--out", type=Path, required=True, help="our YAML camera file to write")
    cv.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


# -------------------------------------------------------------------- camera
def collect(source: FrameSource, collector: ViewCollector, args: argparse.Namespace) -> None:
    """Feed ``source`` to ``collector`` until it ends, the user stops, or a stream has enough views."""
    show = args.show if args.show is not None else source.live
    window = CoverageWindow() if show and has_screen() else None
    if show and window is None:
        log.info("no screen (or an OpenCV build without GUI): coverage is logged instead of shown")
    try:
        for frame in source:
            cand = collector.add(frame)
            if cand.accepted:
                log.info("%s: kept; %s", frame.name, collector.progress())
            else:
                log.debug("%s: %s", frame.name, cand.reason)
            if window is not None and not window.show(draw_coverage(frame.image, collector, cand)):
                break
            if source.kind != "folder" and collector.enough(args.max_views):
                log.info("enough views: %s", collector.progress())
                break
    except KeyboardInterrupt:
        log.warning("interrupted: calibrating from the %d views kept so far", len(collector.views))
    finally:
        source.close()
        if window is not None:
            window.close()


def _report(cal: Calibration) -> dict:
    return {"views": len(cal.views), "per_view_rms_px": {Path(k).name: v for k, v in cal.per_view().items()},
            "rejected_views": {Path(n).name: round(e, 4) for n, e in cal.rejected},
            cal.top_term: cal.top_term_reason, "region_coverage": cal.coverage.to_dict()}


def log_coverage(cal: Calibration, camera_name: str = "camera") -> None:
    """The coverage of each image region (info) and a warning when the views miss the image corners."""
    rows, cols = cal.coverage.cells.shape
    log.info("%s: image regions (%dx%d) covered by the board, top row first:\n%s", camera_name, cols, rows,
             cal.coverage.table())
    if not cal.coverage.reaches_corners():
        log.warning("%s: the views do not reach the image corners (%s): the distortion there is extrapolated; "
                    "add views with the board near each corner. %s %s", camera_name,
                    ", ".join(cal.coverage.uncovered_corners()), cal.top_term, cal.top_term_reason)
    else:
        log.info("%s: %s %s", camera_name, cal.top_term, cal.top_term_reason)


def run_camera(args: argparse.Namespace) -> Calibration:
    board: Board = args.board
    source = open_source(args.source, args.every)
    collector = ViewCollector(board, source.source, SelectionConfig(max_blur_px=args.max_blur))
    collect(source, collector, args)
    collector.require(args.min_views)
    cal = calibrate(board, collector.views, collector.image_size, args.model, top_term=args.top_term,
                    outlier_factor=args.outlier_factor, min_views=args.min_views)
    for v, e in zip(cal.views, cal.per_view_rms_px):
        log.info("view %s: RMS %.3f px", v.name, e)
    log_coverage(cal)
    extra = {"calibration": {"board": board.spec, "source": str(args.source), **_report(cal),
                             "coverage": round(collector.coverage, 3)}}
    write_camera_file(args.out, cal.camera, rms_px=cal.rms_px, extra=extra,
                      comment=f"slam-calib camera {args.source} --board {board.spec} --model {args.model}")
    return cal


# -------------------------------------------------------------------- stereo
def run_stereo(args: argparse.Namespace) -> StereoCalibration:
    board: Board = args.board
    left, right = open_source(args.left, args.every), open_source(args.right, args.every)
    try:
        lc, rc, pairs = collect_pairs(board, left, right, SelectionConfig(max_blur_px=args.max_blur),
                                      max_pairs=args.max_views)
    finally:
        left.close()
        right.close()
    lc.require(args.min_views)
    rc.require(args.min_views)
    if len(pairs) < args.min_views:
        raise DataError(args.right, f"too few image pairs with the board in both cameras: {len(pairs)} found, "
                                    f"at least {args.min_views} needed")
    st = calibrate_stereo(board, lc.views, rc.views, pairs, lc.image_size, args.model,
                          min_views=args.min_views, top_term=args.top_term)
    log_coverage(st.left, "left camera")
    log_coverage(st.right, "right camera")
    write_stereo_file(args.out, st, comment=f"slam-calib stereo {args.left} {args.right} --board {board.spec} "
                                            f"--model {args.model}\nR, t: left camera frame -> right camera frame "
                                            "(X_right = R X_left + t), metres")
    return st


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "camera":
            cal = run_camera(args)
            c = cal.camera
            print(f"slam-calib: {len(cal.views)} views ({len(cal.rejected)} dropped as outliers), "
                  f"RMS {cal.rms_px:.3f} px; fx {c.fx:.2f} fy {c.fy:.2f} cx {c.cx:.2f} cy {c.cy:.2f}, "
                  f"{c.model} distortion {[round(x, 5) for x in c.dist]}; wrote {args.out}")
        elif args.command == "stereo":
            st = run_stereo(args)
            print(f"slam-calib: {st.n_pairs} pairs, baseline {st.baseline_m:.4f} m, stereo RMS {st.rms_px:.3f} px "
                  f"(left {st.left.rms_px:.3f}, right {st.right.rms_px:.3f}); wrote {args.out}")
        else:
            cam = read_camera_file(args.input)
            write_camera_file(args.out, cam, comment=f"converted from {args.input} by slam-calib convert")
            print(f"slam-calib: wrote {args.out} ({cam.model}, {cam.width}x{cam.height})")
    except DataError as e:
        print(f"slam-calib: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except CalibrationError as e:
        print(f"slam-calib: calibration failed: {e}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as e:
        print(f"slam-calib: error: {e.filename or ''}: {e.strerror}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
