"""``slam-run SEQUENCE --out OUT_DIR [--mode ...]``: replay a sequence through the SLAM system.

Relocalise in a saved map: ``slam-run SEQUENCE --map OLD/map.npz --out OUT_DIR`` loads the map
of an earlier run (same camera and feature settings, else refused before anything is written),
relocalises the first frames in it and tracks and maps on in its frame (keyframe and point ids
continue); ``map.npz`` then holds the old and the new keyframes, ``summary.json`` says which file
was loaded and at which frame relocalisation succeeded (``loaded_map``). Replay only.

Process graph: ``slam-run --launch launch/NAME.yaml [SEQUENCE] --out OUT_DIR``
runs the source, the SLAM process and the inference server of a launch file
as separate processes on the ZeroMQ bus (:mod:`slam.cli.launch_run`).

Live: ``slam-run --camera DEVICE_OR_VIDEO [--imu serial[:PORT[:BAUD]]] --out OUT_DIR``
runs on a camera (``0``, ``/dev/video0``, a stream URL or a video file read as a
camera) and, optionally, a serial IMU (:mod:`slam.sensors`; the line protocol is
in :mod:`slam.sensors.imu_protocol`). It stops at the end of a video, on Ctrl-C
or SIGTERM, or when the camera stalls or disappears, and saves the same files.

Place recognition (loop closing, relocalisation): ``--place auto`` (default) uses
NetVLAD when a checkpoint (``--place-checkpoint CKPT``, else
``nets/checkpoints/netvlad.pt`` if present) or a server (``--infer ENDPOINT``, a
running ``slam-infer``) is configured, else ORB-VLAD; ``--place orb-vlad`` or
``netvlad`` forces one. NetVLAD runs in-process by default (the same server
code on an ``inproc://`` endpoint: :mod:`slam.inference`). The log and
``summary.json`` (``place_recognition``) say which describer and why.
``--pose-prior CKPT`` adds a PoseNet or a VidLoc (in-process; the sidecar says
which) as relocalisation's pose prior: when place retrieval fails, the keyframes
near its pose are tried (VidLoc: the pose it regresses for the newest frame of
the clip of the last lost frames; ``slam.backbone.frontend.pose_prior``;
``summary.json``: ``pose_prior``). With ``--launch`` it overrides the launch
file's ``processes.slam.pose_prior``.

Writes ``trajectory.txt`` (TUM, camera-to-world, every tracked frame),
``keyframes.txt``, ``map.npz`` (the map save file) and ``summary.json``
(frames, keyframes, map points, lost frames, per-thread timing, ATE/RPE when
the sequence has ground truth; live: why it stopped, camera and IMU counters).

Replay runs as fast as the machine allows without outrunning local mapping
(before each frame it waits for the mapper to finish the keyframes it has:
:mod:`slam.runner`), so its result is that of a camera slow enough for the
machine; ``--realtime`` delivers frames at their recorded times instead.
Ctrl-C or SIGTERM stops a replay or a live run after the current frame and
saves what was tracked (``stop_reason`` and ``frame_accounting`` in
``summary.json`` say why it stopped and where every frame went).

Exit status: 0 done (also when stopped by Ctrl-C / SIGTERM once tracking ran,
outputs written); 2 bad input (nothing written); 3 live run stopped by a
camera fault (stall, disappearance), outputs written; 4 no frame could be
tracked (outputs written, ``summary.json`` says why in ``failure``); 130
interrupted while starting, or by a second Ctrl-C while saving.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from slam.backbone.config import SlamConfig
from slam.cli import console
from slam.cli.untracked import why_untracked
from slam.errors import DataError
from slam.backbone.system import System
from slam.inference.place import IN_PROCESS, PLACES, PlaceSettings, make_place_describer
from slam.inference.pose_prior import PosePriorFactory, make_pose_prior
from slam.backbone.map.map_io import load_map_for_run
from slam.outputs import (PLOT, evaluate_run, loaded_map_summary, prepare_out_dir, save_empty_run, save_run,
                          write_summary)
from slam.replay import FramePipeline, PipelineItem
from slam.runner import (
    DEFAULT_MAPPING_LAG,
    DEFAULT_MAPPING_LAG_DEPTH,
    RunReport,
    Runner,
    StopRequest,
    default_mapping_lag,
    describe_accounting,
    frame_accounting,
)

log = logging.getLogger("slam.run")

MODES = ("rgbd", "stereo-inertial", "stereo", "mono-inertial", "mono")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-run", description=console.description(__doc__),
                                epilog="exit status: 0 done (or stopped by Ctrl-C/SIGTERM, outputs written), "
                                       "2 bad input, 3 live run stopped by a camera fault (outputs written), "
                                       "4 no frame tracked (summary.json says why), 130 interrupted while starting")
    p.add_argument("sequence", type=Path, nargs="?",
                   help="sequence folder (TUM, KITTI, EuRoC, synthetic) or video file (or --camera for live)")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--mode", choices=MODES, help="sensor mode (default: the richest the sequence offers)")
    p.add_argument("--config", type=Path, help="YAML file with features/tracking/mapping settings")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting, e.g. --set features.n_features=1500 (repeatable)")
    p.add_argument("--realtime", action="store_true",
                   help="frames arrive at their recorded times, as from a camera (drop nothing, wait); without it "
                        "frames come as fast as tracking and local mapping take them")
    p.add_argument("--preload", action="store_true",
                   help="decode all frames into memory first, to time the system as with a camera (no disk decoding)")
    p.add_argument("--sync-mapping", action="store_true",
                   help="run local mapping in the tracking thread after each keyframe: repeatable results, not real time")
    p.add_argument("--plot", action="store_true",
                   help=f"also write {PLOT}: the trajectory against ground truth and its ATE (sequences with one)")
    p.add_argument("--mapping-lag", type=int, default=None, metavar="N",
                   help="replay (not --realtime): frames tracked while local mapping works on the last keyframe "
                        f"before the replay waits for it (default {DEFAULT_MAPPING_LAG} monocular, "
                        f"{DEFAULT_MAPPING_LAG_DEPTH} RGB-D and stereo; 0: as --sync-mapping)")
    p.add_argument("--speed", type=float, default=1.0, metavar="X",
                   help="with --realtime: deliver frames X times faster than recorded (2: a 30 Hz recording at 60 Hz)")
    p.add_argument("--max-frames", type=int, default=None, help="stop after this many frames")
    place = p.add_argument_group("place recognition (loop closing, relocalisation)")
    place.add_argument("--place", choices=PLACES, default="auto",
                       help="auto (default): NetVLAD when --place-checkpoint or an --infer server serving it is given, "
                            "else ORB-VLAD; netvlad: also the shipped nets/checkpoints/netvlad.pt")
    place.add_argument("--place-checkpoint", type=Path, metavar="CKPT",
                       help="NetVLAD checkpoint (with its sidecar NAME.json beside NAME.pt) for in-process inference "
                            "(--place netvlad without it: nets/checkpoints/netvlad.pt)")
    place.add_argument("--infer", default=IN_PROCESS, metavar="ENDPOINT|in-process",
                       help="where NetVLAD runs: in-process (default) or the endpoint of a running slam-infer, "
                            "e.g. ipc:///tmp/slam/infer")
    place.add_argument("--pose-prior", type=Path, metavar="CKPT",
                       help="PoseNet or VidLoc checkpoint (with its sidecar NAME.json beside NAME.pt, which says which; "
                            "slam-train posenet|vidloc --map MAP) run in-process as relocalisation's pose prior: when "
                            "place retrieval fails, the keyframes near its pose (VidLoc: of the newest frame of the "
                            "clip of the last lost frames) are tried (default: none); with --launch: over the launch "
                            "file's processes.slam.pose_prior")
    p.add_argument("--map", type=Path, metavar="OLD/map.npz",
                   help="start in the saved map of an earlier run (same camera and feature settings): relocalise "
                        "in it, then track and map on in its frame (replay only)")
    console.add_arguments(p)
    live = p.add_argument_group("live (instead of SEQUENCE)")
    live.add_argument("--camera", metavar="DEVICE_OR_VIDEO",
                      help="camera index (0), device (/dev/video0), stream URL or video file, read as a live camera")
    live.add_argument("--imu", metavar="serial[:PORT[:BAUD]]",
                      help="IMU on a serial port: 'serial' finds the single USB serial device; default baud 921600")
    live.add_argument("--camera-file", type=Path, help="camera intrinsics (YAML, slam-calib camera output)")
    live.add_argument("--width", type=int, help="frame width to ask of the camera")
    live.add_argument("--height", type=int, help="frame height to ask of the camera")
    live.add_argument("--fps", type=float, help="frame rate to ask of the camera")
    live.add_argument("--stall-timeout", type=float, default=2.0, metavar="S",
                      help="stop (saving everything) when the camera sends no frame for S seconds (default 2)")
    live.add_argument("--imu-time-shift", type=float, default=0.0, metavar="S",
                      help="camera-IMU time shift, t_imu = t_cam + S (Kalibr's timeshift_cam_imu; default 0)")
    p.add_argument("--launch", type=Path, metavar="launch/NAME.yaml",
                   help="run the process graph of a launch file (source, SLAM, inference server as processes "
                        "on the bus); SEQUENCE for a replay launch file")
    args = p.parse_args(argv)
    if args.map is not None and args.launch is not None:
        p.error("--map with --launch: give the map in the launch file (processes.slam.map)")
    if args.map is not None and args.camera is not None:
        p.error("--map: only for a replay of a SEQUENCE (not yet with --camera)")
    if args.launch is not None:
        if args.camera is not None:
            p.error("--camera goes in the launch file (processes.source.camera), not with --launch")
        if args.place != "auto" or args.place_checkpoint is not None or args.infer != IN_PROCESS:
            p.error("--place, --place-checkpoint and --infer go in the launch file (processes.slam.place, "
                    "place_checkpoint; the inference endpoint), not with --launch")
        return args
    if (args.sequence is None) == (args.camera is None):
        p.error("give either a SEQUENCE to replay or --camera DEVICE_OR_VIDEO for a live run")
    if args.camera is None:
        used = [f"--{k.replace('_', '-')}" for k in ("imu", "camera_file", "width", "height", "fps")
                if getattr(args, k) is not None]
        if used:
            p.error(f"{', '.join(used)}: only with --camera (a live run)")
    elif args.preload:
        p.error("--preload is for replaying a sequence, not for --camera")
    return args


def run(args: argparse.Namespace) -> dict:
    from threadpoolctl import threadpool_limits

    # The SLAM threads already fill the cores, and its matrix products are small: BLAS threads
    # for them only add hand-offs (one BLAS thread: 32 -> 28 ms per RGB-D frame on 2 cores).
    with threadpool_limits(limits=1, user_api="blas"):
        return _run_live(args) if args.camera is not None else _run(args)


def _run(args: argparse.Namespace) -> dict:
    """Replay a sequence: as fast as local mapping allows (back-pressure), or at its recorded times."""
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
    console.log_config(log, "config", cfg.to_dict())  # also in summary.json
    seq.use_streams(mode)
    initial_map = None
    if args.map is not None:
        initial_map = load_map_for_run(args.map, seq.camera, cfg.features.scale_factor, cfg.features.n_levels, mode)
    loaded = None if initial_map is None else (len(initial_map.keyframes), len(initial_map.points))
    n = len(seq) if args.max_frames is None else min(len(seq), args.max_frames)
    stop = StopRequest()
    place = make_place_describer(place_settings(args))
    prior = pose_prior(args)
    with StopOnSignal(stop) as signals:  # a signal once tracking runs: stop, save what was tracked
        system = System(seq.camera, mode, cfg, stereo=seq.stereo, threaded=not args.sync_mapping,
                        place_describer=place, initial_map=initial_map, pose_prior=prior)
        wall0 = time.perf_counter()
        bar = _progress(args, n)
        # Frames are decoded ahead and their features extracted one frame ahead, in other threads,
        # while this thread tracks (slam.replay).
        pipe = FramePipeline(seq, system.prepare, n, realtime=args.speed if args.realtime else False,
                             preload=args.preload)
        lag = default_mapping_lag(mode) if args.mapping_lag is None else args.mapping_lag
        runner = Runner(system, stop=stop, back_pressure=not args.realtime, mapping_lag=lag)
        runner.on_result = _show(bar, system, runner)
        signals.graceful = True
        log.info("replaying %d frames%s; Ctrl-C stops and saves what was tracked", n,
                 " at their recorded times" if args.realtime else "")
        try:
            if args.preload:
                log.info("decoding %d frames into memory (--preload)", n)
                pipe.load()
            report = runner.run(pipe)
        finally:
            pipe.close()
            system.shutdown()
            bar.close()
        wall = time.perf_counter() - wall0
        failure = None
        if not system.records and report.stop_reason is None:
            if report.skipped and len(report.skipped) == n:  # say why every frame was skipped (e.g. depth size)
                raise DataError(args.sequence, f"all {n} frames were skipped; frame {report.skipped[0]['index']}: "
                                               f"{report.skipped[0]['reason']}")
            failure = why_untracked(system.results, mode, seq.modes, cfg, seq.groundtruth())
        if report.stop_reason is None:
            report.stop_reason = "end of sequence" if n == len(seq) else f"--max-frames {args.max_frames}"
        if report.processed + len(report.skipped) < n:
            log.info("replay stopped: %s; saving what was tracked", report.stop_reason)
        head = {"sequence": str(args.sequence), "reader": type(seq).__name__, "mode": mode, "failure": failure,
                "place_recognition": place.describe(), "pose_prior": None if prior is None else prior.describe()}
        summary, traj = save_run(args.out, system, head, n, report.skipped, runner.times, wall)
        summary["stop_reason"] = report.stop_reason
        summary["frame_accounting"] = frame_accounting(system, report, n)
        summary["replay"] = {"back_pressure": runner.back_pressure, "mapping_lag": runner.mapping_lag,
                             "realtime_speed": args.speed if args.realtime else None,
                             "mapping_wait_s": report.mapping_wait_s}
        summary["evaluation"] = evaluate_run(seq, traj, mode, plot=args.out / PLOT if args.plot else None)
        if initial_map is not None:
            summary["loaded_map"] = loaded_map_summary(args.map, loaded, system)
        write_summary(args.out, summary)
    return summary


def place_settings(args: argparse.Namespace) -> PlaceSettings:
    """The place-recognition settings of the command line."""
    return PlaceSettings(place=args.place, infer=args.infer,
                         checkpoint=None if args.place_checkpoint is None else str(args.place_checkpoint),
                         server_serves_netvlad=True if args.infer != IN_PROCESS else None)  # --infer: the user says so


def pose_prior(args: argparse.Namespace) -> PosePriorFactory | None:
    """Relocalisation's pose prior of the command line (``--pose-prior CKPT``: PoseNet or VidLoc, in-process), or None."""
    return None if args.pose_prior is None else make_pose_prior(args.pose_prior)


def _progress(args: argparse.Namespace, total: int | None) -> console.Progress:
    return console.progress(total, "slam-run", disable=args.no_progress)


def _show(bar: console.Progress, system: System, runner: Runner):
    """Progress after each frame: rate, tracking state, keyframes."""
    def show(res) -> None:
        bar.update()
        bar.set_postfix(fps=f"{runner.times.fps():.0f}", state=res.state.value, kf=len(system.map.keyframes),
                        refresh=False)
    return show


# ---------------------------------------------------------------------------- signals
class StopOnSignal:
    """Once ``graceful``, the first Ctrl-C or SIGTERM stops after the current frame (outputs are saved).

    Before that (while starting) and on a second signal: KeyboardInterrupt, as usual.
    """

    def __init__(self, stop: StopRequest, on_stop=None):
        self.stop, self.on_stop, self._old = stop, on_stop, {}
        self.graceful = False

    @property
    def reason(self) -> str | None:
        return self.stop.reason

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        first = self.stop.reason is None
        self.stop.request("interrupted (Ctrl-C)" if signum == signal.SIGINT else "SIGTERM")
        if not (self.graceful and first):
            raise KeyboardInterrupt
        if self.on_stop is not None:
            self.on_stop()

    def __exit__(self, *exc) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# ---------------------------------------------------------------------------- live
def _run_live(args: argparse.Namespace) -> dict:
    """Track frames of a live camera (and IMU) until the source ends, stalls, vanishes or is stopped."""
    from slam.sensors import open_live_source

    cfg = SlamConfig.from_yaml(args.config) if args.config else SlamConfig()
    cfg.override(args.overrides)
    mode = args.mode or ("mono-inertial" if args.imu else "mono")
    if mode not in ("mono", "mono-inertial") or (mode == "mono-inertial" and not args.imu):
        raise DataError(args.camera, f"mode {mode!r} is not available live; a camera offers 'mono' "
                                     "('mono-inertial' with --imu)")
    source = open_live_source(args.camera, imu=args.imu, width=args.width, height=args.height, fps=args.fps,
                              camera_file=args.camera_file, realtime=args.realtime,
                              stall_timeout_s=args.stall_timeout, imu_time_shift_s=args.imu_time_shift)
    if mode == "mono-inertial":
        log.warning("mode %s: the IMU is not fused yet (visual-inertial comes later); tracking visually, "
                    "IMU samples attached to frames and counted", mode)
    console.log_config(log, "config", cfg.to_dict())  # also in summary.json
    place = make_place_describer(place_settings(args))
    prior = pose_prior(args)
    system, runner, stop = None, None, StopRequest()
    wall0 = time.perf_counter()
    bar = _progress(args, args.max_frames)
    frames = source.frames()  # ends at the end of a video, on a signal, or on a camera fault (source.fault)
    with StopOnSignal(stop, on_stop=source.stop) as signals:
        try:
            source.start()
            if source.fault is None:
                system = System(source.camera.camera, mode, cfg, threaded=not args.sync_mapping,
                                place_describer=place, pose_prior=prior)
                runner = Runner(system, stop=stop, max_frames=args.max_frames)
                runner.on_result = _show(bar, system, runner)
                runner.times.t_last = time.perf_counter()
                signals.graceful = True
                runner.run(_live_items(frames, host_clock=not source.camera.file_times))
        except KeyboardInterrupt:
            stop.request("interrupted (Ctrl-C)")
        finally:
            signals.graceful = False
            frames.close()
            source.close()
            if system is not None:
                system.shutdown()
            bar.close()
    fault = source.fault
    report = runner.report if runner is not None else RunReport()
    stop_reason = str(fault) if fault else (stop.reason or report.stop_reason or source.end_reason)
    log.info("live run stopped: %s; saving what was tracked", stop_reason)
    sensor_stats = source.stats()
    del sensor_stats["end_reason"]
    live = {"stop_reason": stop_reason, **sensor_stats}
    head = {"sequence": str(args.camera), "reader": "LiveCamera", "mode": mode, "place_recognition": place.describe()}
    wall = time.perf_counter() - wall0
    if system is None:  # no first frame: nothing to track, still say what happened
        return save_empty_run(args.out, head, live, wall)
    if not system.records:
        log.warning("no frame could be tracked; writing empty trajectories")
    n = report.processed
    summary, _ = save_run(args.out, system, head, n, report.skipped, runner.times, wall)
    summary["stop_reason"] = stop_reason
    summary["frame_accounting"] = frame_accounting(system, report, n)
    summary["evaluation"] = None
    summary["live"] = live
    write_summary(args.out, summary)
    return summary


def _live_items(frames, host_clock: bool = True):
    """A live camera's frames as runner items; latency counts from the capture (host monotonic time).

    A video file's frames keep the file's own times (``host_clock`` False): no capture-to-pose latency then.
    """
    for frame in frames:
        t_arrival = time.perf_counter() - (time.monotonic() - frame.timestamp) if host_clock else None
        yield PipelineItem(frame.index, frame, None, None, t_arrival)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    console.setup(args.log_level, args.verbose)
    try:
        prepare_out_dir(args.out)  # before the run, not after it
    except DataError as e:
        print(f"slam-run: error: {e}", file=sys.stderr)
        return 2
    if args.launch is not None:
        from slam.cli.launch_run import run_launch

        try:
            return run_launch(args.launch, args.sequence, args.out, args.log_level, args.max_frames,
                              progress=not args.no_progress, pose_prior=args.pose_prior)
        except DataError as e:
            print(f"slam-run: error: {e}", file=sys.stderr)
            return 2
    try:
        summary = run(args)
    except DataError as e:
        print(f"slam-run: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # while starting, or a second Ctrl-C while saving
        print("slam-run: interrupted while starting or saving; outputs not (all) written", file=sys.stderr)
        return 130
    if summary.get("failure"):
        print(f"slam-run: no frame could be tracked: {summary['failure']}; wrote {args.out}/summary.json",
              file=sys.stderr)
        return 4
    ev = summary["evaluation"]
    fps = summary["tracking_fps"]
    acc = summary.get("frame_accounting")
    frames = describe_accounting(acc) if acc else f"{summary['frames']} frames"
    msg = (f"{frames}; {summary['keyframes']} keyframes, "
           f"{summary['map_points']} points, tracking " + (f"{fps:.1f} fps (median)" if fps else "- fps"))
    if ev:
        msg += f", ATE RMSE {ev['ate_rmse_m']:.4f} m ({ev['align']})"
    live = summary.get("live")
    stop_reason = summary.get("stop_reason") or (live or {}).get("stop_reason")
    if stop_reason and stop_reason != "end of sequence" and not stop_reason.startswith("--max-frames"):
        msg += f"; stopped: {stop_reason}"
    print(f"slam-run: {msg}; wrote {args.out}/trajectory.txt and summary.json")
    if live and live["fault"]:
        print(f"slam-run: camera fault: {live['stop_reason']} (outputs saved)", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
