"""``slam-run --launch launch/NAME.yaml [SEQUENCE] --out OUT``: run the process graph of a launch file.

The supervisor (:mod:`slam.nodes.supervisor`) starts the source (replay of
SEQUENCE, or the live camera the file names), the SLAM process and, when the
file enables them, a local inference server and the live viewer (rerun; a
recording ``OUT/view.rrd`` unless it opens a window); it restarts those two
if they die and stops everything in order on Ctrl-C, with the map and the
trajectory saved. Outputs are those of in-process replay, in OUT; each
process's log is in ``OUT/logs/``. The progress (frames tracked, state, rate)
is read off the SLAM process's poses (:mod:`slam.cli.pose_progress`).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from slam.cli.pose_progress import sequence_length, start_pose_progress
from slam.errors import DataError
from slam.runner import describe_accounting
from slam.nodes.common import is_off_loopback
from slam.nodes.launch import LaunchSpec, load_launch
from slam.nodes.lifeline import RUN_DIR_PREFIX, claim_run_dir, clean_stale_run_dirs
from slam.nodes.viewer import has_screen, stale_recordings
from slam.nodes.supervisor import ProcessSpec, Supervisor

log = logging.getLogger("slam.run")


def process_specs(spec: LaunchSpec, run_dir: Path, out: Path, sequence: Path | None,
                  log_level: str = "INFO", max_frames: int | None = None) -> list[ProcessSpec]:
    """The command lines of the launch file's processes."""
    py = sys.executable
    common = ["--launch", str(spec.path), "--run-dir", str(run_dir), "--log-level", log_level]
    source = [py, "-m", "slam.nodes.source", *common]
    tracker = [py, "-m", "slam.nodes.tracker", *common, "--out", str(out)]
    if sequence is not None:
        source += ["--sequence", str(sequence)]
        tracker += ["--sequence", str(sequence)]
    if spec.slam.pose_prior:  # the file's, or slam-run --pose-prior's over it
        tracker += ["--pose-prior", str(spec.slam.pose_prior)]
    if max_frames is not None:
        source += ["--max-frames", str(max_frames)]
    specs = [ProcessSpec("slam", tracker, main=True, stop_timeout_s=60.0),
             ProcessSpec("source", source, required=True, stop_timeout_s=5.0)]
    inf = spec.inference
    if inf.enabled:
        argv = [py, "-m", "nets.server", "--bind", spec.endpoint("inference", run_dir), "--device", inf.device,
                "--log-level", log_level]
        if inf.config:
            argv += ["--config", inf.config]
        specs.append(ProcessSpec("inference", argv, restart=inf.restart, stop_timeout_s=5.0))
    view = spec.viewer
    if view.enabled:
        argv = [py, "-m", "slam.nodes.viewer", *common]
        window = view.spawn and has_screen()
        if view.record or not window:
            argv += ["--record", str(viewer_recording(spec, out))]
        if window:
            argv.append("--spawn")
        specs.append(ProcessSpec("viewer", argv, restart=view.restart, stop_timeout_s=10.0))
    return specs


def viewer_recording(spec: LaunchSpec, out: Path) -> Path:
    """Where the viewer records: the launch file's ``record``, else ``OUT/view.rrd``."""
    return Path(spec.viewer.record).expanduser() if spec.viewer.record else out / "view.rrd"


def run_launch(launch: Path, sequence: Path | None, out: Path, log_level: str = "INFO",
               max_frames: int | None = None, on_start: Callable[[Supervisor], None] | None = None,
               progress: bool = True, pose_prior: Path | None = None) -> int:
    """Run the graph; ``on_start(supervisor)`` is called once every process has started (tests use it).

    progress: a progress bar (plain lines off a terminal) of the frames the SLAM process tracked.
    pose_prior: relocalisation's pose prior checkpoint over the launch file's ``slam.pose_prior``; either is
    checked here (PoseNet or VidLoc, by its sidecar: :class:`DataError` naming the file) before anything starts.
    """
    spec = load_launch(launch)
    if pose_prior is not None:
        spec.slam.pose_prior = str(pose_prior)
    if spec.slam.pose_prior:
        from slam.inference.pose_prior import checkpoint_kind

        checkpoint_kind(spec.slam.pose_prior)
    if spec.source.kind == "replay" and sequence is None:
        raise DataError(launch, "this launch file replays a sequence: slam-run --launch FILE SEQUENCE --out OUT")
    out.mkdir(parents=True, exist_ok=True)
    if spec.viewer.enabled:  # a restarted viewer writes view-1.rrd, ...: start from none
        for old in stale_recordings(viewer_recording(spec, out)):
            old.unlink()
    clean_stale_run_dirs()  # what a killed run left (slam.nodes.lifeline)
    with tempfile.TemporaryDirectory(prefix=RUN_DIR_PREFIX) as tmp:
        run_dir = Path(tmp)  # ipc sockets of this run ({run} in the launch file)
        claim_run_dir(run_dir)
        # a source that can read the SLAM process's credit ends only once its whole stream was taken
        sup = Supervisor(process_specs(spec, run_dir, out, sequence, log_level, max_frames), log_dir=out / "logs",
                         wait_main_after_source=not is_off_loopback(spec, "poses"))
        total = sequence_length(sequence, max_frames) if progress else None
        bar = start_pose_progress(spec, run_dir, total, enabled=progress)
        previous = {s: signal.signal(s, sup.request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            code = sup.run(on_start)
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if bar is not None:
                bar.close()
    if code != 0:
        log.error("the process graph failed: %s (logs in %s)", sup.failed, out / "logs")
        return 1
    summary_path = out / "summary.json"
    if not summary_path.is_file():
        log.error("the SLAM process wrote no summary (logs in %s)", out / "logs")
        return 1
    summary = json.loads(summary_path.read_text())
    summary["processes"] = {n: {"starts": c.starts, "exit_codes": c.exit_codes} for n, c in sup.children.items()}
    from slam.outputs import write_summary

    write_summary(out, summary)  # atomic, still naming every file with its checksum
    ev = summary.get("evaluation") or {}
    ate = f", ATE RMSE {ev['ate_rmse_m']:.4f} m ({ev['align']})" if ev else ""
    acc = summary.get("frame_accounting")
    frames = describe_accounting(acc) if acc else f"{summary['frames']} frames"
    stopped = summary.get("stop_reason")
    stopped = f"; stopped: {stopped}" if stopped and stopped != "end of sequence" else ""
    print(f"slam-run: {frames}; {summary['keyframes']} keyframes{ate} through {len(sup.children)} processes"
          f"{stopped}; wrote {out}")
    return 0
