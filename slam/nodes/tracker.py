"""The SLAM process: frames from the bus through tracking and local mapping; poses back onto the bus.

``python -m slam.nodes.tracker --launch FILE --run-dir DIR --out OUT [--sequence SEQ]``
(started by ``slam-run --launch``). A receiver thread takes frames off the
``frames`` endpoint and extracts their features (one frame ahead, as in
replay); the main thread tracks each frame (:class:`slam.runner.Runner`, the
loop in-process replay and live runs use), publishes its pose on ``poses``
(with, for viewers, its keypoints on ``tracking`` and now and then a map
snapshot on ``map``: see :func:`map_snapshot`) and polls the inference
server without ever waiting for it (a server that is down is logged once;
the client reconnects by itself). At the end of the stream, or on SIGTERM /
SIGINT, it stops local mapping and writes the same ``trajectory.txt``,
``keyframes.txt``, ``map.npz`` and ``summary.json`` as in-process replay,
plus the bus and inference statistics and where every frame of the source
went (``frame_accounting``).

Flow control: on ``poses`` it publishes a :class:`~slam.bus.messages.FrameCredit`
after each frame it takes and every ``CREDIT_PERIOD_S`` while it waits: the
frames taken off the bus so far and how many the source may have sent in all
(``CREDIT_WINDOW`` more, far below the socket's queue, so the bus never drops
one). A replay source that is not ``realtime`` sends only against credit and,
like in-process replay, the tracking loop waits for local mapping
(back-pressure): the graph gives what in-process replay gives. Once it has
taken the end of the stream and tracked every frame it says so
(``end_taken``), and the source may go.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import queue
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np

from slam.bus import topics
from slam.bus.codec import BusMessageError
from slam.bus.messages import (
    FrameCredit,
    MapSnapshot,
    PoseEstimate,
    TrackedFeatures,
    frame_credit_message,
    map_snapshot_message,
    message_stereo_rig,
    message_to_frame,
    pose_message,
    tracked_features_message,
)
from slam.bus.pubsub import Publisher, Subscriber
from slam.bus.rpc import RpcClient
from slam.backbone.config import SlamConfig
from slam.backbone.map.map_io import load_map_for_run
from slam.errors import DataError
from slam.nodes.launch import LaunchSpec, load_launch
from slam.backbone.map.map import Map
from slam.inference.place import IN_PROCESS, PlaceDescriberFactory, PlaceSettings, make_place_describer
from slam.inference.pose_prior import PosePriorFactory, checkpoint_kind, make_pose_prior
from slam.nodes.common import bus_curve_server, inference_curve_client, setup_logging
from slam.nodes.lifeline import watch_parent
from slam.nodes.source import END_OF_STREAM
from slam.outputs import FrameTimes, evaluate_run, loaded_map_summary, save_run, write_summary
from slam.backbone.system import System, warm_up_kernels
from slam.backbone.frontend.tracking import FrameResult
from slam.replay import PipelineItem
from slam.runner import RunReport, Runner, StopRequest, default_mapping_lag, describe_accounting, frame_accounting

log = logging.getLogger("slam.nodes.tracker")

MAP_PERIOD_S = 0.5  # a map snapshot for viewers at least this often ...
MAP_MIN_PERIOD_S = 0.1  # ... and after each new keyframe, but never more often than this
MAP_MAX_POINTS = 50_000  # points per snapshot (a bigger map is thinned evenly)
FRAMES_HWM = 64  # frame messages queued on the socket (~2 s of 30 Hz frames, ~130 MB of 640x480 RGB-D)
CREDIT_WINDOW = 4  # frames the source may send beyond those taken: well below FRAMES_HWM, so none is dropped
CREDIT_PERIOD_S = 0.1  # credit again this often while waiting (a source that subscribed late gets it)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-tracker", description=__doc__.splitlines()[0])
    p.add_argument("--launch", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sequence", type=Path, help="the replayed sequence (for the summary and its evaluation)")
    p.add_argument("--mode", help="override the launch file's slam mode")
    p.add_argument("--pose-prior", help="override the launch file's slam.pose_prior (a PoseNet or VidLoc checkpoint)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


class _Receiver(threading.Thread):
    """Owns the SUB socket: frames in, features extracted, queued for tracking in order."""

    def __init__(self, spec: LaunchSpec, run_dir: Path, mode: str | None, stop: threading.Event):
        super().__init__(name="bus-receiver", daemon=True)
        self.run_dir = run_dir
        self.place: PlaceDescriberFactory | None = None
        self.prior: PosePriorFactory | None = None
        # a deep queue rides out a slow keyframe without drops when the source sends without credit (live)
        self.sub = Subscriber(None, spec.endpoint("frames", run_dir), topics=[topics.FRAMES], hwm=FRAMES_HWM)
        self.spec, self.mode, self.stop = spec, mode, stop
        self.items: queue.Queue = queue.Queue(maxsize=4)
        self.system: System | None = None
        self.ready = threading.Event()  # the system exists (first frame seen) or the stream ended
        self.end: dict | None = None
        self.received = 0  # frame messages taken off the socket (rejected ones too)
        self.error: BaseException | None = None
        self.loaded_map: tuple[int, int] | None = None  # keyframes and points of processes.slam.map when loaded

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
        self.place = make_place_describer(place_settings(self.spec, self.run_dir))
        self.prior = pose_prior(self.spec, self.run_dir)
        initial_map = None
        if s.map:  # checked against the camera of the frames: DataError naming the file, before any output
            initial_map = load_map_for_run(s.map, frame.camera, cfg.features.scale_factor, cfg.features.n_levels, mode)
            self.loaded_map = (len(initial_map.keyframes), len(initial_map.points))
        return System(frame.camera, mode, cfg, stereo=rig, threaded=not s.sync_mapping, place_describer=self.place,
                      initial_map=initial_map, pose_prior=self.prior)

    def run(self) -> None:
        try:
            while not self.stop.is_set():
                msg = self.sub.recv(timeout_ms=100)
                if msg is None:
                    continue
                if msg.type == END_OF_STREAM:
                    self.end = dict(msg.meta)
                    break
                self.received += 1
                try:
                    frame = message_to_frame(msg)
                except BusMessageError as e:
                    log.warning("frame message rejected: %s", e)
                    self.sub.stats.rejected += 1
                    continue
                if self.system is None:
                    self.system = self._make_system(frame, message_stereo_rig(msg))
                    self.ready.set()
                prepared = self.system.prepare(frame)
                # same machine: CLOCK_MONOTONIC is shared by the processes; latency counts from the capture
                t_capture = msg.meta.get("t_capture")
                t_arrival = (time.perf_counter() - (time.monotonic() - t_capture)
                             if isinstance(t_capture, float) else None)
                item = PipelineItem(frame.index, frame, prepared, None, t_arrival)
                while not self.stop.is_set():
                    try:
                        self.items.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
        except BaseException as e:  # noqa: BLE001 - reported by the main thread, which saves what it has
            self.error = e
        finally:
            self.ready.set()
            self.items.put(None)


def place_settings(spec: LaunchSpec, run_dir: Path) -> PlaceSettings:
    """Place recognition as the launch file sets it: in-process from ``slam.place_checkpoint``, else from the
    inference endpoint (``auto``: when the local server's config names a NetVLAD model with a checkpoint)."""
    s = spec.slam
    settings = PlaceSettings(place=s.place, checkpoint=s.place_checkpoint, deadline_s=spec.inference.deadline_s,
                             heartbeat_s=spec.inference.heartbeat_s)
    if s.place_checkpoint or "inference" not in spec.endpoints:
        settings.infer = IN_PROCESS
        return settings
    settings.infer = spec.endpoint("inference", run_dir)
    settings.curve = inference_curve_client(spec)
    if spec.inference.enabled:
        settings.server_serves_netvlad = _serves(spec.inference.config, "netvlad")
    return settings


def pose_prior(spec: LaunchSpec, run_dir: Path) -> PosePriorFactory | None:
    """Relocalisation's pose prior as the launch file sets it (``slam.pose_prior``, None: none): in the SLAM
    process, or asked of the inference endpoint (``pose_prior_inference: server``), whose local server, when
    the launch file starts one, must serve the checkpoint's model (else a :class:`DataError` naming the file)."""
    s = spec.slam
    if not s.pose_prior:
        return None
    if s.pose_prior_inference != "server":
        return make_pose_prior(s.pose_prior, deadline_s=spec.inference.deadline_s)
    kind, _ = checkpoint_kind(s.pose_prior)
    if spec.inference.enabled and not _serves(spec.inference.config, kind):
        raise DataError(spec.path, f"processes.slam.pose_prior_inference is server, but the local inference server's "
                                   f"config ({spec.inference.config or 'none'}) serves no {kind} with a checkpoint "
                                   f"(models: [{{model: {kind}, checkpoint: {s.pose_prior}}}])")
    return make_pose_prior(s.pose_prior, infer=spec.endpoint("inference", run_dir), deadline_s=spec.inference.deadline_s,
                           curve=inference_curve_client(spec), heartbeat_s=spec.inference.heartbeat_s)


def _serves(config: str | None, model: str) -> bool:
    """Whether the slam-infer models config at ``config`` names ``model`` with a checkpoint."""
    if not config:
        return False
    import yaml

    try:
        models = (yaml.safe_load(Path(config).read_text()) or {}).get("models") or []
    except (OSError, yaml.YAMLError, AttributeError):
        return False  # slam-infer itself says what is wrong with it
    return any(isinstance(m, dict) and m.get("model") == model and m.get("checkpoint") for m in models)


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


class _Credit:
    """Publishes the flow-control credit on the poses socket (main thread: the socket's owner)."""

    def __init__(self, pub: Publisher, rx: _Receiver):
        self.pub, self.rx = pub, rx
        self.sent_at, self.last = -np.inf, None

    def send(self, end_taken: bool = False, force: bool = False) -> None:
        taken = self.rx.received
        now = time.monotonic()
        if force or (taken, end_taken) != self.last or now - self.sent_at >= CREDIT_PERIOD_S:
            self.pub.publish(frame_credit_message(FrameCredit(taken, taken + CREDIT_WINDOW, end_taken)))
            self.sent_at, self.last = now, (taken, end_taken)


def _bus_items(rx: _Receiver, credit: _Credit, client: RpcClient | None) -> Iterator[PipelineItem]:
    """Frames from the receiver, in order, until the stream ends; credit and inference polls meanwhile."""
    while True:
        credit.send()
        try:
            item = rx.items.get(timeout=CREDIT_PERIOD_S)
        except queue.Empty:
            if client is not None:
                client.poll()
            continue
        if item is None:
            return
        yield item


class _Publish:
    """After each frame: its pose (and, for viewers, its keypoints and now and then a map snapshot)."""

    def __init__(self, pub: Publisher, system: System, client: RpcClient | None, delay_s: float = 0.0):
        self.pub, self.system, self.client, self.delay_s = pub, system, client, delay_s
        self.t_map = -np.inf  # when the last map snapshot went out (time.monotonic)

    def __call__(self, res: FrameResult) -> None:
        pub, system = self.pub, self.system
        T = res.T_w_c if res.T_w_c is not None else np.full((4, 4), np.nan)
        pub.publish(pose_message(PoseEstimate(res.index, res.timestamp, T, res.state.value)))
        feats = tracked_features(system, res)
        if feats is not None:
            pub.publish(tracked_features_message(feats))
        since_map = time.monotonic() - self.t_map
        due = since_map >= MAP_PERIOD_S or (res.is_keyframe and since_map >= MAP_MIN_PERIOD_S)
        if due and system.map.keyframes:
            pub.publish(map_snapshot_message(map_snapshot(system.map, res.index, res.timestamp)))
            self.t_map = time.monotonic()
        if self.client is not None:
            self.client.poll()
        if self.delay_s > 0:
            time.sleep(self.delay_s)


def run(args: argparse.Namespace, spec: LaunchSpec, stop: StopRequest) -> dict:
    pub = Publisher(None, spec.endpoint("poses", args.run_dir), curve=bus_curve_server(spec, "poses"))
    client = None
    if "inference" in spec.endpoints:
        client = RpcClient(None, spec.endpoint("inference", args.run_dir), curve=inference_curve_client(spec),
                           heartbeat_s=spec.inference.heartbeat_s)
    warm_up_kernels()  # before subscribing: the source streams only once we listen, so no backlog builds up
    rx = _Receiver(spec, args.run_dir, args.mode, stop)
    rx.start()
    credit = _Credit(pub, rx)
    # a replay that need not keep a camera's pace waits for local mapping, as in-process replay does
    offline = spec.source.kind == "replay" and not spec.source.realtime
    runner = None
    wall0 = time.perf_counter()
    try:
        items = _bus_items(rx, credit, client)
        first = next(items, None)  # the receiver makes the system on the first frame
        if first is not None:
            runner = Runner(rx.system, stop=stop, back_pressure=offline,
                            mapping_lag=default_mapping_lag(rx.system.mode))
            runner.on_result = _Publish(pub, rx.system, client, spec.slam.frame_delay_s)
            runner.run(itertools.chain([first], items))
        if rx.end is not None and getattr(stop, "reason", None) is None:
            credit.send(end_taken=True, force=True)  # every frame tracked: the source may go
    finally:
        stop.set()
        rx.join(5.0)
        if rx.system is not None:
            rx.system.shutdown()
    if rx.error is not None:
        pub.close()
        raise rx.error
    if rx.system is None:
        pub.close()
        raise DataError(args.sequence or spec.path, "no frame arrived: nothing to track")
    report = runner.report if runner is not None else RunReport()
    end = rx.end
    if getattr(stop, "reason", None):  # this process was told to stop
        stop_reason = stop.reason
    elif end is not None:  # the stream ended: why the source ended it
        stop_reason = "the source was stopped" if end.get("reason") == "stopped" else str(end.get("reason"))
    else:
        stop_reason = "the stream ended without its end message"
    if end is not None:  # the source says what it sent and what it could not read
        report.skipped = list(end.get("skipped", []))
        frames = int(end.get("frames", rx.received)) + len(report.skipped)
    else:  # what the source sent is unknown: count what came
        frames = rx.received
    acc = frame_accounting(rx.system, report, frames, received=rx.received, rejected=rx.sub.stats.rejected)
    if acc["dropped_by_bus"] or acc["not_processed"]:
        log.warning("%s", describe_accounting(acc))
    head = {"sequence": str(args.sequence or spec.source.camera or ""), "reader": "bus", "mode": rx.system.mode,
            "launch": str(spec.path), "place_recognition": rx.place.describe() if rx.place is not None else None,
            "pose_prior": rx.prior.describe() if rx.prior is not None else None}
    times = runner.times if runner is not None else FrameTimes()
    summary, traj = save_run(args.out, rx.system, head, frames, report.skipped, times, time.perf_counter() - wall0)
    summary["stop_reason"] = stop_reason
    summary["frame_accounting"] = acc
    summary["evaluation"] = None
    if rx.loaded_map is not None:
        summary["loaded_map"] = loaded_map_summary(spec.slam.map, rx.loaded_map, rx.system)
    if args.sequence is not None:
        from slam.datasets import open_sequence

        summary["evaluation"] = evaluate_run(open_sequence(args.sequence), traj, rx.system.mode)
    summary["bus"] = {"frames": asdict(rx.sub.stats), "poses": asdict(pub.stats), "end_of_stream": end,
                      "back_pressure": offline}
    if client is not None:
        summary["inference"] = {"endpoint": client.endpoint, **asdict(client.stats), "down_at_end": client.down}
        summary["inference"]["server_rejects"] = client.server_rejects  # what slam-infer refused, as it last said
        client.close()
    rx.sub.close()
    write_summary(args.out, summary)
    credit.send(end_taken=end is not None, force=True)  # again, in case the source missed the first
    pub.close()
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, "slam")
    watch_parent()  # stop if the supervisor is killed (slam.nodes.lifeline)
    stop = StopRequest()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("stop requested: finishing and saving")
        stop.request("interrupted (Ctrl-C)" if signum == signal.SIGINT else "SIGTERM")

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        spec = load_launch(args.launch)
        if args.pose_prior:
            spec.slam.pose_prior = args.pose_prior
        summary = run(args, spec, stop)
    except DataError as e:
        log.error("%s", e)
        return 2
    ev = summary.get("evaluation") or {}
    log.info("%s; %d keyframes%s; stopped: %s; wrote %s", describe_accounting(summary["frame_accounting"]),
             summary["keyframes"], f", ATE RMSE {ev['ate_rmse_m']:.4f} m" if ev else "", summary["stop_reason"],
             args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
