"""The source process: frames from a recorded sequence (replay) or a live camera (+ IMU) onto the bus.

``python -m slam.nodes.source --launch FILE --run-dir DIR [--sequence SEQ]``
(started by ``slam-run --launch``). It publishes each frame on the
``frames`` endpoint as it becomes available (replay: at its recorded time
with ``realtime``, as a camera would), then an end-of-stream message whose
meta says why the stream ended, how many frames it sent and which could not
be read. SIGTERM or SIGINT ends the stream early, the same way.

Flow control: the SLAM process publishes its credit on the ``poses``
endpoint (:class:`~slam.bus.messages.FrameCredit`). A replay that is not
``realtime`` sends a frame only while it has credit, so the bus never drops
one and the graph replays as in-process replay does; a camera (and a
``realtime`` replay) sends at its own pace and the SLAM process counts what
the bus dropped. Every source, once its stream ended, re-sends the end of the
stream until the SLAM process says it took it (``end_taken``) and only then
exits: the supervisor then knows nothing is left in flight and lets the SLAM
process finish, however long that takes. Where the SLAM process's ``poses``
endpoint is CURVE-protected (tcp off loopback) the source cannot read the
credit; it then streams without it and exits after the end of the stream.
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
from slam.bus.codec import BusMessageError, Message
from slam.bus.messages import frame_message, message_to_frame_credit
from slam.bus.pubsub import Publisher, Subscriber
from slam.errors import DataError
from slam.nodes.launch import LaunchSpec, load_launch
from slam.nodes.common import bus_curve_server, is_off_loopback, setup_logging
from slam.nodes.lifeline import watch_parent

log = logging.getLogger("slam.nodes.source")

END_OF_STREAM = "end_of_stream"  # message type on the frames topic; meta: reason, frames, skipped
SUBSCRIBER_WAIT_S = 30.0  # streaming starts once the SLAM process listens; it has this long to start
END_RESEND_S = 1.0  # the end of the stream again this often until the SLAM process says it took it
END_WAIT_STOPPED_S = 2.0  # when told to stop, wait at most this long for that


class Credit:
    """The SLAM process's flow-control credit, read off its ``poses`` endpoint (this thread's socket)."""

    def __init__(self, endpoint: str | None):
        # endpoint None: no credit can be read (CURVE-protected poses); every wait returns at once
        self.sub = Subscriber(None, endpoint, topics=[topics.CREDIT]) if endpoint else None
        self.taken, self.granted, self.end_taken = 0, 0, False

    def poll(self, timeout_ms: int) -> None:
        msg = self.sub.recv(timeout_ms=timeout_ms)
        while msg is not None:
            try:
                c = message_to_frame_credit(msg)
            except BusMessageError as e:
                self.sub.stats.reject(e, self.sub.endpoint, log)
            else:  # cumulative counts: the largest seen is the latest
                self.taken, self.granted = max(self.taken, c.taken), max(self.granted, c.granted)
                self.end_taken = self.end_taken or c.end_taken
            msg = self.sub.recv(timeout_ms=0)

    def wait_for_frame(self, sent: int, stop: threading.Event) -> bool:
        """Block until the SLAM process allows frame number ``sent`` (0-based); False when stopped."""
        if self.sub is None:
            return not stop.is_set()
        while self.granted <= sent:
            if stop.is_set():
                return False
            self.poll(50)
        return True

    def close(self) -> None:
        if self.sub is not None:
            self.sub.close()


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


def _replay(spec: LaunchSpec, args: argparse.Namespace, pub: Publisher, stop: threading.Event,
            credit: Credit) -> dict:
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
    paced = not spec.source.realtime  # against credit: never more frames in flight than the SLAM process allows
    with FramePipeline(seq, lambda f: None, n, realtime=spec.source.realtime, preload=spec.source.preload) as pipe:
        if spec.source.preload:
            log.info("decoding %d frames into memory (preload)", n)
            pipe.load()
        for item in pipe:
            if stop.is_set():
                return {"reason": "stopped", "frames": sent, "skipped": skipped}
            if paced and not credit.wait_for_frame(sent, stop):
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
    credit = Credit(None if is_off_loopback(spec, "poses") else spec.endpoint("poses", args.run_dir))
    if credit.sub is None:
        log.warning("the SLAM process's poses endpoint is CURVE-protected: streaming without flow control")
    try:
        if not pub.wait_for_subscribers(1, SUBSCRIBER_WAIT_S, stop):
            log.error("no SLAM process subscribed to %s within %.0f s", pub.endpoint, SUBSCRIBER_WAIT_S)
            return 1
        try:
            if spec.source.kind == "replay":
                end = _replay(spec, args, pub, stop, credit)
            else:  # a camera does not wait for credit: frames the SLAM process cannot take are dropped
                end = _camera(spec, args, pub, stop)
        except DataError as e:
            log.error("%s", e)
            end = {"reason": f"error: {e}", "frames": 0, "skipped": []}
        end["dropped"] = pub.stats.dropped  # frames the socket refused (a SLAM process that fell behind)
        log.info("stream ended (%s) after %d frames", end["reason"], end["frames"])
        if not _end_stream(pub, credit, end, stop):
            log.warning("the SLAM process did not confirm the end of the stream")
        return 0 if not end["reason"].startswith("error") else 1
    finally:
        credit.close()
        pub.close()


def _end_stream(pub: Publisher, credit: Credit, end: dict, stop: threading.Event) -> bool:
    """Send the end of the stream until the SLAM process says it took it; False if it did not.

    Unbounded unless stopped (then ``END_WAIT_STOPPED_S``): the SLAM process may have many frames to
    track before it takes the end, and the supervisor stops this process if the SLAM process dies.
    """
    msg = Message(topics.FRAMES, END_OF_STREAM, 0, time.time(), end)
    if credit.sub is None:
        pub.publish(msg)
        time.sleep(0.2)  # let the last messages leave before the socket closes (linger 0)
        return False
    t_stop = None
    while not credit.end_taken:
        pub.publish(msg)
        t_next = time.monotonic() + END_RESEND_S
        while not credit.end_taken and time.monotonic() < t_next:
            credit.poll(50)
            if stop.is_set():
                t_stop = t_stop or time.monotonic()
                if time.monotonic() - t_stop > END_WAIT_STOPPED_S:
                    return False
    return True


if __name__ == "__main__":
    sys.exit(main())
