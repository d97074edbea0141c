"""The source process: frames from a recorded sequence (replay) or a live camera (+ IMU) onto the bus.

``python -m slam.nodes.source --launch FILE --run-dir DIR [--sequence SEQ]``
(started by ``slam-run --launch``). It publishes each frame on the
``frames`` endpoint as it becomes available (replay: at its recorded time
with ``realtime``, as a camera would), then an end-of-stream message whose
meta says why the stream ended and which frames could not be read. SIGTERM
or SIGINT ends the stream early, the same way.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from pathlib import Path

from slam.bus import topics
from slam.bus.codec import Message
from slam.bus.messages import frame_message
from slam.bus.pubsub import Publisher
from slam.errors import DataError
from slam.nodes.launch import LaunchSpec, load_launch
from slam.nodes.common import bus_curve_server, setup_logging
from slam.nodes.lifeline import watch_parent

log = logging.getLogger("slam.nodes.source")

END_OF_STREAM = "end_of_stream"  # message type on the frames topic; meta: reason, frames, skipped
SUBSCRIBER_WAIT_S = 30.0  # streaming starts once the SLAM process listens; it has this long to start


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-source", description=__doc__.splitlines()[0])
    p.add_argument("--launch", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True, help="folder for ipc sockets ({run} in the launch file)")
    p.add_argument("--sequence", type=Path, help="replay: the sequence folder or video")
    p.add_argument("--mode", help="replay: streams to send (rgbd, stereo, mono); default the launch file's")
    p.add_argument("--max-frames", type=int)
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def _stamped(msg: Message, t_capture: float) -> Message:
    """Add the capture time (CLOCK_MONOTONIC, shared by the processes of one machine) for latency."""
    msg.meta["t_capture"] = float(t_capture)
    return msg


def _replay(spec: LaunchSpec, args: argparse.Namespace, pub: Publisher, stop: threading.Event) -> dict:
    from slam.datasets import open_sequence
    from slam.replay import FramePipeline

    if args.sequence is None:
        raise DataError(spec.path, "a replay launch file needs a sequence: slam-run --launch FILE SEQUENCE")
    seq = open_sequence(args.sequence)
    mode = args.mode or spec.source.mode or spec.slam.mode or seq.modes[0]
    if mode not in seq.modes:
        raise DataError(args.sequence, f"mode {mode!r} is not available here; this sequence offers {seq.modes}")
    seq.use_streams(mode)
    rig = seq.stereo if mode.startswith("stereo") else None  # sent with each frame for a stereo SLAM process
    n = len(seq) if args.max_frames is None else min(len(seq), args.max_frames)
    skipped: list[dict] = []
    sent = 0
    with FramePipeline(seq, lambda f: None, n, realtime=spec.source.realtime, preload=spec.source.preload) as pipe:
        if spec.source.preload:
            log.info("decoding %d frames into memory (preload)", n)
            pipe.load()
        for item in pipe:
            if stop.is_set():
                return {"reason": "stopped", "frames": sent, "skipped": skipped}
            if item.error is not None:
                log.warning("skipping frame %d: %s", item.index, item.error)
                skipped.append({"index": item.index, "reason": str(item.error)})
                continue
            # the frame's due time (realtime: its recorded time came; else when it was decoded), as a
            # camera's capture time: a source running late counts in the latency
            t_capture = time.monotonic() - (time.perf_counter() - item.t_arrival)
            if not pub.publish(_stamped(frame_message(item.frame, stereo=rig), t_capture)):
                log.warning("frame %d dropped: the SLAM process is not keeping up", item.index)
            sent += 1
    return {"reason": "end of sequence", "frames": sent, "skipped": skipped}


def _camera(spec: LaunchSpec, args: argparse.Namespace, pub: Publisher, stop: threading.Event) -> dict:
    from slam.sensors.live import open_live_source

    src = spec.source
    sent = 0
    with open_live_source(src.camera, imu=src.imu, width=src.width, height=src.height, fps=src.fps,
                          camera_file=src.camera_file, realtime=src.realtime) as live:
        for frame in live.frames(stop):
            pub.publish(_stamped(frame_message(frame), frame.timestamp))  # live frames: host monotonic time
            sent += 1
            if args.max_frames is not None and sent >= args.max_frames:
                return {"reason": "max frames", "frames": sent, "skipped": [], "sensors": live.stats()}
        return {"reason": live.end_reason or "camera ended", "frames": sent, "skipped": [], "sensors": live.stats()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, "source")
    watch_parent()  # stop if the supervisor is killed (slam.nodes.lifeline)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        spec = load_launch(args.launch)
        pub = Publisher(None, spec.endpoint("frames", args.run_dir), curve=bus_curve_server(spec, "frames"),
                        hwm=64, wait_subscribers=True)
    except DataError as e:
        print(f"slam-source: error: {e}", file=sys.stderr)
        return 2
    try:
        if not pub.wait_for_subscribers(1, SUBSCRIBER_WAIT_S, stop):
            log.error("no SLAM process subscribed to %s within %.0f s", pub.endpoint, SUBSCRIBER_WAIT_S)
            return 1
        try:
            end = (_replay if spec.source.kind == "replay" else _camera)(spec, args, pub, stop)
        except DataError as e:
            log.error("%s", e)
            end = {"reason": f"error: {e}", "frames": 0, "skipped": []}
        log.info("stream ended (%s) after %d frames", end["reason"], end["frames"])
        # PUB drops silently for a subscriber whose queue is full; if this is lost, the supervisor
        # ends the SLAM process after its drain time (SIGTERM: it saves all the same)
        pub.publish(Message(topics.FRAMES, END_OF_STREAM, 0, time.time(), end))
        time.sleep(0.2)  # let the last messages leave before the socket closes (linger 0)
        return 0 if not end["reason"].startswith("error") else 1
    finally:
        pub.close()


if __name__ == "__main__":
    sys.exit(main())
