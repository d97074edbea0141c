"""The SLAM process: frames from the bus through tracking and local mapping; poses back onto the bus.

``python -m slam.nodes.tracker --launch FILE --run-dir DIR --out OUT [--sequence SEQ]``
(started by ``slam-run --launch``). A receiver thread takes frames off the
``frames`` endpoint and extracts their features (one frame ahead, as in
replay); the main thread tracks each frame, publishes its pose on ``poses``
(with, for viewers, its keypoints on ``tracking`` and now and then a map
snapshot on ``map``: see :func:`map_snapshot`) and polls the inference
server without ever waiting for it (a server that is down is logged once;
the client reconnects by itself). At the end of the stream, or on SIGTERM /
SIGINT, it stops local mapping and writes the same ``trajectory.txt``,
``keyframes.txt``, ``map.npz`` and ``summary.json`` as in-process replay,
plus the bus and inference statistics.
"""

from __future__ import annotations

import argparse
import logging
import queue
import signal
import sys
import threading
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np

from slam.bus import topics
from slam.bus.codec import BusMessageError
from slam.bus.messages import (
    MapSnapshot,
    PoseEstimate,
    TrackedFeatures,
    map_snapshot_message,
    message_stereo_rig,
    message_to_frame,
    pose_message,
    tracked_features_message,
)
from slam.bus.pubsub import Publisher, Subscriber
from slam.bus.rpc import RpcClient
from slam.backbone.config import SlamConfig
from slam.errors import DataError
from slam.nodes.launch import LaunchSpec, load_launch
from slam.backbone.map.map import Map
from slam.nodes.common import bus_curve_server, inference_curve_client, setup_logging
from slam.nodes.lifeline import watch_parent
from slam.nodes.source import END_OF_STREAM
from slam.outputs import FrameTimes, evaluate_run, save_run, write_summary
from slam.backbone.system import System, warm_up_kernels
from slam.backbone.frontend.tracking import FrameResult

log = logging.getLogger("slam.nodes.tracker")

MAP_PERIOD_S = 0.5  # a map snapshot for viewers at least this often ...
MAP_MIN_PERIOD_S = 0.1  # ... and after each new keyframe, but never more often than this
MAP_MAX_POINTS = 50_000  # points per snapshot (a bigger map is thinned evenly)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-tracker", description=__doc__.splitlines()[0])
    p.add_argument("--launch", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sequence", type=Path, help="the replayed sequence (for the summary and its evaluation)")
    p.add_argument("--mode", help="override the launch file's slam mode")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


class _Receiver(threading.Thread):
    """Owns the SUB socket: frames in, features extracted, queued for tracking in order."""

    def __init__(self, spec: LaunchSpec, run_dir: Path, mode: str | None, stop: threading.Event):
        super().__init__(name="bus-receiver", daemon=True)
        # a deep queue (~2 s of 30 Hz frames, ~130 MB of 640x480 RGB-D) rides out a slow keyframe without drops
        self.sub = Subscriber(None, spec.endpoint("frames", run_dir), topics=[topics.FRAMES], hwm=64)
        self.spec, self.mode, self.stop = spec, mode, stop
        self.items: queue.Queue = queue.Queue(maxsize=4)
        self.system: System | None = None
        self.ready = threading.Event()  # the system exists (first frame seen) or the stream ended
        self.end: dict | None = None
        self.error: BaseException | None = None

    def _make_system(self, frame, rig) -> System:
        s = self.spec.slam
        cfg = SlamConfig.from_yaml(s.config) if s.config else SlamConfig()
        cfg.override(list(s.set))
        default = "stereo" if rig is not None and frame.right is not None else "rgbd" if frame.depth is not None else "mono"
        mode = self.mode or s.mode or default
        if mode == "rgbd" and frame.depth is None:
            raise DataError(self.spec.path, "slam mode rgbd, but the frames carry no depth")
        if mode.startswith("stereo") and (rig is None or frame.right is None):
            raise DataError(self.spec.path, f"slam mode {mode}, but the frames carry no right image and stereo rig")
        log.info("first frame %d (%dx%d): mode %s", frame.index, frame.camera.width, frame.camera.height, mode)
        return System(frame.camera, mode, cfg, stereo=rig)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msg = self.sub.recv(timeout_ms=100)
                if msg is None:
                    continue
                if msg.type == END_OF_STREAM:
                    self.end = dict(msg.meta)
                    break
                try:
                    frame = message_to_frame(msg)
                except BusMessageError as e:
                    log.warning("frame message rejected: %s", e)
                    self.sub.stats.rejected += 1
                    continue
                t_received = time.monotonic()
                if self.system is None:
                    self.system = self._make_system(frame, message_stereo_rig(msg))
                    self.ready.set()
                prepared = self.system.prepare(frame)
                while not self.stop.is_set():
                    try:
                        self.items.put((frame, prepared, msg.meta.get("t_capture"), t_received), timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # noqa: BLE001 - reported by the main thread, which saves what it has
            self.error = e
        finally:
            self.ready.set()
            self.items.put(None)


def tracked_features(system: System, res: FrameResult) -> TrackedFeatures | None:
    """The keypoints of the frame just tracked and which matched map points (None if none was tracked)."""
    cur = system.tracker.current
    if cur is None or cur.index != res.index:
        return None
    matched = (cur.point_ids >= 0) & ~cur.outlier
    return TrackedFeatures(res.index, res.timestamp, cur.features.uv, matched, res.state.value)


def map_snapshot(slam_map: Map, frame_index: int, stamp: float, max_points: int = MAP_MAX_POINTS) -> MapSnapshot:
    """Positions of the map's points (at most ``max_points``, evenly thinned) and its good keyframes' poses.

    Holds ``map.lock`` only to copy arrays (a few ms for 50k points), so local mapping is barely held up.
    """
    with slam_map.lock:
        n = len(slam_map.points)
        ids = np.fromiter(slam_map.points.keys(), np.int64, n)
        if n > max_points:
            ids = ids[:: -(-n // max_points)]
        points = slam_map.points_array(ids).astype(np.float32)
        kfs = [k for k in slam_map.keyframes.values() if not k.bad]
        kf_ids = np.array([k.id for k in kfs], np.int64)
        T_w_c = np.array([k.T_w_c for k in kfs], np.float64).reshape(-1, 4, 4)
    return MapSnapshot(frame_index, stamp, points, kf_ids, T_w_c, n)


def run(args: argparse.Namespace, spec: LaunchSpec, stop: threading.Event) -> dict:
    pub = Publisher(None, spec.endpoint("poses", args.run_dir), curve=bus_curve_server(spec, "poses"))
    client = None
    if "inference" in spec.endpoints:
        client = RpcClient(None, spec.endpoint("inference", args.run_dir), curve=inference_curve_client(spec),
                           heartbeat_s=spec.inference.heartbeat_s)
    warm_up_kernels()  # before subscribing: the source streams only once we listen, so no backlog builds up
    rx = _Receiver(spec, args.run_dir, args.mode, stop)
    rx.start()
    times = FrameTimes()
    wall0 = time.perf_counter()
    t_map = -np.inf  # when the last map snapshot went out (time.monotonic)
    n = 0
    try:
        while True:
            try:
                item = rx.items.get(timeout=0.1)
            except queue.Empty:
                if client is not None:
                    client.poll()
                continue
            if item is None:
                break
            frame, prepared, t_capture, _ = item
            system = rx.system
            res = system.process(frame, prepared)
            n += 1
            # same machine: CLOCK_MONOTONIC is shared by the processes
            times.add(res.timings_ms["total"], time.monotonic() - t_capture if isinstance(t_capture, float) else None)
            T = res.T_w_c if res.T_w_c is not None else np.full((4, 4), np.nan)
            pub.publish(pose_message(PoseEstimate(res.index, res.timestamp, T, res.state.value)))
            feats = tracked_features(system, res)
            if feats is not None:
                pub.publish(tracked_features_message(feats))
            since_map = time.monotonic() - t_map
            due = since_map >= MAP_PERIOD_S or (res.is_keyframe and since_map >= MAP_MIN_PERIOD_S)
            if due and system.map.keyframes:
                pub.publish(map_snapshot_message(map_snapshot(system.map, res.index, res.timestamp)))
                t_map = time.monotonic()
            if client is not None:
                client.poll()
    finally:
        stop.set()
        rx.join(5.0)
        if rx.system is not None:
            rx.system.shutdown()
        pub.close()
    if rx.error is not None:
        raise rx.error
    if rx.system is None or not rx.system.records:
        raise DataError(args.sequence or spec.path, "no frame could be tracked (no frames arrived, or none tracked)")
    end = rx.end or {"reason": "stopped"}
    head = {"sequence": str(args.sequence or spec.source.camera or ""), "reader": "bus", "mode": rx.system.mode,
            "launch": str(spec.path)}
    summary, traj = save_run(args.out, rx.system, head, n, end.get("skipped", []), times, time.perf_counter() - wall0)
    summary["evaluation"] = None
    if args.sequence is not None:
        from slam.datasets import open_sequence

        summary["evaluation"] = evaluate_run(open_sequence(args.sequence), traj, rx.system.mode)
    summary["bus"] = {"frames": asdict(rx.sub.stats), "poses": asdict(pub.stats), "end_of_stream": end}
    if client is not None:
        summary["inference"] = {"endpoint": client.endpoint, **asdict(client.stats), "down_at_end": client.down}
        summary["inference"]["server_rejects"] = client.server_rejects  # what slam-infer refused, as it last said
        client.close()
    rx.sub.close()
    write_summary(args.out, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, "slam")
    watch_parent()  # stop if the supervisor is killed (slam.nodes.lifeline)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        log.info("stop requested: finishing and saving")
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        spec = load_launch(args.launch)
        summary = run(args, spec, stop)
    except DataError as e:
        log.error("%s", e)
        return 2
    ev = summary.get("evaluation") or {}
    log.info("%d frames, %d lost, %d keyframes%s; wrote %s", summary["frames"], len(summary["lost_frames"]),
             summary["keyframes"], f", ATE RMSE {ev['ate_rmse_m']:.4f} m" if ev else "", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
