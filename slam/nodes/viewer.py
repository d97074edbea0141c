"""The live view: camera image with tracked features, trajectory and map points, in rerun.

``python -m slam.nodes.viewer --launch FILE --run-dir DIR [--record OUT.rrd] [--spawn]``
(started by ``slam-run --launch`` when the launch file enables ``processes.viewer``).
It subscribes to the ``frames`` endpoint (newest frame only) and to the ``poses``
endpoint: every pose (the trajectory), the newest tracked keypoints and the
newest map snapshot. ``--spawn`` opens a rerun window; ``--record`` saves a
recording (``rerun OUT.rrd`` opens it). Without a screen it can only record.

It is a process of its own and its subscriptions drop what it cannot keep up
with, so it never slows the SLAM process. On SIGTERM / SIGINT it logs the full
trajectory and flushes the recording.

Entities (frames: rerun's ``world`` is the first camera's, x right, y down, z forward)::

    world/camera                 Transform3D  T_w_c of the latest tracked frame
    world/camera/image           Pinhole      intrinsics of the (downscaled) image
    world/camera/image/rgb       EncodedImage JPEG of the camera image
    world/camera/image/features  Points2D     keypoints: matched to map points green, others red
    world/trajectory             LineStrips3D camera positions of the tracked frames so far
    world/map/points             Points3D     map points (a snapshot, at most 50k)
    world/map/keyframes          Points3D     keyframe positions

Timelines: ``frame`` (frame index) and ``stamp`` (sensor time, seconds).
rerun (``rerun-sdk``, the ``viewer`` extra) is imported only when the viewer runs.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from slam.bus import topics
from slam.bus.codec import BusMessageError, Message
from slam.bus.messages import (
    MapSnapshot,
    PoseEstimate,
    TrackedFeatures,
    message_to_frame,
    message_to_map_snapshot,
    message_to_pose,
    message_to_tracked_features,
)
from slam.bus.pubsub import Subscriber
from slam.errors import DataError
from slam.nodes.launch import LaunchSpec, load_launch
from slam.nodes.common import setup_logging
from slam.nodes.lifeline import watch_parent
from slam.records import Frame

log = logging.getLogger("slam.nodes.viewer")

APP_ID = "learned-slam"
MAX_IMAGE_WIDTH_PX = 640  # wider images are downscaled before logging
JPEG_QUALITY = 85
TRAJECTORY_PERIOD_S = 0.5  # the trajectory strip is logged this often (and at the end), not per frame
MAX_TRAJECTORY_POINTS = 20_000  # a longer trajectory is logged thinned (the latest position always kept)
MATCHED_RGB = (40, 220, 40)
UNMATCHED_RGB = (230, 50, 50)
KEYFRAME_RGB = (60, 120, 255)
TRAJECTORY_RGB = (255, 200, 0)


def has_screen() -> bool:
    """An X11 or Wayland display to open a viewer window on."""
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def recording_path(path: Path, n: int) -> Path:
    """Where start ``n`` (0 = first) of the viewer records: ``view.rrd``, ``view-1.rrd``, ``view-2.rrd``, ..."""
    return path if n == 0 else path.with_name(f"{path.stem}-{n}{path.suffix}")


def free_recording_path(path: Path) -> Path:
    """The first of :func:`recording_path` that does not exist: a restarted viewer keeps its predecessor's file."""
    n = 0
    while recording_path(path, n).exists():
        n += 1
    return recording_path(path, n)


def stale_recordings(path: Path) -> list[Path]:
    """Recordings a previous run left at ``path`` (and its restart siblings); the launcher removes them."""
    pattern = re.compile(re.escape(path.stem) + r"(-\d+)?" + re.escape(path.suffix))
    return sorted(p for p in path.parent.glob(f"{path.stem}*{path.suffix}") if pattern.fullmatch(p.name))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-viewer", description=__doc__.splitlines()[0])
    p.add_argument("--launch", type=Path, required=True)
    p.add_argument("--run-dir", type=Path, required=True)
    p.add_argument("--record", type=Path, help="save the view to this .rrd file (a restart writes NAME-1.rrd, ...)")
    p.add_argument("--spawn", action="store_true", help="open a rerun viewer window (needs a screen)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


class View:
    """Logs bus records to a rerun ``RecordingStream`` as the entities of the module docstring."""

    def __init__(self, rec: Any):
        import rerun as rr

        self.rr, self.rec = rr, rec
        self.positions: list[np.ndarray] = []  # camera centres of the tracked frames, world frame
        self.last_index = -1
        self.t_trajectory = -np.inf
        self.scale = 1.0  # logged image size / camera image size
        self._pinhole: tuple | None = None
        rec.log("world", rr.ViewCoordinates.RDF, static=True)

    def _at(self, frame_index: int, stamp: float) -> None:
        self.rec.set_time("frame", sequence=int(frame_index))
        self.rec.set_time("stamp", duration=float(stamp))

    def frame(self, frame: Frame) -> None:
        """The camera image (JPEG, downscaled to at most MAX_IMAGE_WIDTH_PX) and its pinhole model."""
        rr, cam = self.rr, frame.camera
        image = frame.image
        self.scale = min(1.0, MAX_IMAGE_WIDTH_PX / cam.width)
        if self.scale < 1.0:
            image = cv2.resize(image, (round(cam.width * self.scale), round(cam.height * self.scale)),
                               interpolation=cv2.INTER_AREA)
        self._at(frame.index, frame.timestamp)
        h, w = image.shape[:2]
        pinhole = (w, h, cam.fx, cam.fy, cam.cx, cam.cy)
        if pinhole != self._pinhole:  # it holds until it changes
            s = self.scale
            K = np.array([[cam.fx * s, 0, (cam.cx + 0.5) * s - 0.5], [0, cam.fy * s, (cam.cy + 0.5) * s - 0.5],
                          [0, 0, 1]])
            self.rec.log("world/camera/image", rr.Pinhole(image_from_camera=K, resolution=[w, h],
                                                          camera_xyz=rr.ViewCoordinates.RDF))
            self._pinhole = pinhole
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        ok, jpeg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if ok:
            self.rec.log("world/camera/image/rgb", rr.EncodedImage(contents=jpeg.tobytes(), media_type="image/jpeg"))

    def features(self, t: TrackedFeatures) -> None:
        """Keypoints over the image: matched to map points in green, the others in red."""
        self._at(t.frame_index, t.stamp)
        colors = np.where(t.matched[:, None], np.array(MATCHED_RGB, np.uint8), np.array(UNMATCHED_RGB, np.uint8))
        uv = (t.uv.astype(np.float32) + 0.5) * self.scale - 0.5
        self.rec.log("world/camera/image/features", self.rr.Points2D(uv, colors=colors, radii=2.0))

    def pose(self, p: PoseEstimate) -> None:
        """The camera's pose; its position joins the trajectory (lost frames have none)."""
        T = np.asarray(p.T_w_c)
        if not np.all(np.isfinite(T)):  # the SLAM process sends NaN for frames it did not track
            return
        self._at(p.frame_index, p.stamp)
        self.rec.log("world/camera", self.rr.Transform3D(translation=T[:3, 3], mat3x3=T[:3, :3]))
        self.positions.append(T[:3, 3].copy())
        self.last_index = p.frame_index
        if time.monotonic() - self.t_trajectory >= TRAJECTORY_PERIOD_S:
            self.trajectory()

    def trajectory(self) -> None:
        """The trajectory so far as one line strip (thinned beyond MAX_TRAJECTORY_POINTS)."""
        self.t_trajectory = time.monotonic()
        if not self.positions:
            return
        pts = np.array(self.positions, np.float32)
        if len(pts) > MAX_TRAJECTORY_POINTS:
            step = -(-len(pts) // MAX_TRAJECTORY_POINTS)
            pts = np.concatenate([pts[:-1:step], pts[-1:]])
        self.rec.set_time("frame", sequence=int(self.last_index))
        self.rec.log("world/trajectory", self.rr.LineStrips3D([pts], colors=[TRAJECTORY_RGB]))

    def map(self, m: MapSnapshot) -> None:
        """Map points and keyframe positions of a snapshot (each replaces the previous one)."""
        self._at(m.frame_index, m.stamp)
        self.rec.log("world/map/points", self.rr.Points3D(m.points_w, colors=[(200, 200, 200)], radii=0.01))
        self.rec.log("world/map/keyframes", self.rr.Points3D(m.T_w_c[:, :3, 3], colors=[KEYFRAME_RGB], radii=0.03))


def _show_newest(sub: Subscriber, convert: Callable[[Message], Any], show: Callable[[Any], None]) -> int:
    """Show the newest message waiting on ``sub`` (a conflating subscriber); 1 if one was shown."""
    msg = sub.recv(timeout_ms=0)
    if msg is None:
        return 0
    try:
        record = convert(msg)
    except BusMessageError as e:
        sub.stats.reject(e, sub.endpoint, log)
        return 0
    if record is None:
        return 0
    show(record)
    return 1


def _frame_or_none(msg: Message) -> Frame | None:
    """A frame message's frame; None for the source's end-of-stream message on the same topic."""
    return message_to_frame(msg) if msg.type == topics.FRAME else None


def run(spec: LaunchSpec, run_dir: Path, view: View, stop: threading.Event) -> dict:
    """Show what the bus carries until ``stop``; counts of what was shown."""
    poses_url = spec.endpoint("poses", run_dir)
    poses = Subscriber(None, poses_url, topics=[topics.POSES])  # every pose: the trajectory
    newest = {
        "features": (Subscriber(None, poses_url, topics=[topics.TRACKING], conflate=True),
                     message_to_tracked_features, view.features),
        "maps": (Subscriber(None, poses_url, topics=[topics.MAP], conflate=True), message_to_map_snapshot, view.map),
    }
    shown = {"frames": 0, "poses": 0, "features": 0, "maps": 0}
    try:
        while not stop.is_set():
            msg = poses.recv(timeout_ms=20)  # (the loop's wait)
            while msg is not None:  # every pose, so drain them: each is a trajectory point (and small)
                try:
                    view.pose(message_to_pose(msg))
                    shown["poses"] += 1
                except BusMessageError as e:
                    poses.stats.reject(e, poses.endpoint, log)
                msg = poses.recv(timeout_ms=0)
            if "frames" not in newest and shown["poses"]:
                # frames: subscribed only once the SLAM process publishes, since the source starts streaming as
                # soon as anybody subscribes, and the first subscriber must be the SLAM process (or it misses frames)
                frames = Subscriber(None, spec.endpoint("frames", run_dir), topics=[topics.FRAMES], conflate=True)
                newest["frames"] = (frames, _frame_or_none, view.frame)
            for name, (sub, convert, show) in newest.items():
                shown[name] += _show_newest(sub, convert, show)
    finally:
        view.trajectory()  # the whole trajectory, whenever the viewer stops
        poses.close()
        for sub, _, _ in newest.values():
            sub.close()
    return shown


def open_recording(record: Path | None, spawn: bool) -> Any:
    """A rerun ``RecordingStream`` to a window (``spawn``) and/or a file (``record``, never overwritten)."""
    import rerun as rr

    rec = rr.RecordingStream(APP_ID)
    sinks = []
    if spawn:
        rec.spawn(connect=False)  # starts the rerun viewer app (once per machine; it listens on 9876)
        sinks.append(rr.GrpcSink())
    if record is not None:
        record = free_recording_path(record)
        record.parent.mkdir(parents=True, exist_ok=True)
        sinks.append(rr.FileSink(str(record)))
        log.info("recording the view to %s", record)
    rec.set_sinks(*sinks)
    return rec


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level, "viewer")
    watch_parent()  # stop if the supervisor is killed (slam.nodes.lifeline)
    stop = threading.Event()

    def on_signal(*_: object) -> None:
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    spawn = args.spawn
    if spawn and not has_screen():
        log.warning("no screen (DISPLAY / WAYLAND_DISPLAY unset): no viewer window%s",
                    "" if args.record else "; give --record OUT.rrd to save the view")
        spawn = False
    if not spawn and args.record is None:
        log.error("nothing to show the view on: give --record OUT.rrd (or --spawn with a screen)")
        return 2
    try:
        spec = load_launch(args.launch)
        rec = open_recording(args.record, spawn)
        try:
            shown = run(spec, args.run_dir, View(rec), stop)
        finally:
            rec.flush(timeout_sec=10.0)
            rec.disconnect()
    except DataError as e:
        log.error("%s", e)
        return 2
    log.info("shown: %s", ", ".join(f"{v} {k}" for k, v in shown.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
