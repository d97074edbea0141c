"""Launch files (``launch/*.yaml``): which processes run, their endpoints and their settings.

A launch file describes one process graph::

    description: TUM RGB-D replay through the process graph on one machine
    endpoints:                      # every arrow between processes (see DESIGN.md)
      frames: ipc://{run}/frames    # source -> slam: frames (+ IMU), end of stream
      poses: ipc://{run}/poses      # slam -> viewers, other consumers: poses per frame
      inference: ipc://{run}/infer  # slam -> inference server: requests (ROUTER/DEALER)
    curve:                          # only for tcp endpoints off loopback (keys from slam-keys)
      secret: ~/.config/slam/keys/robot.key_secret
      server_public: ~/.config/slam/keys/gpu.key   # a remote inference server's public key
      clients: ~/.config/slam/keys/allowed/        # who may connect to frames/poses bound off loopback
    processes:
      source: {kind: replay, realtime: true}          # or kind: camera, camera: /dev/video0, imu: serial
      slam: {mode: rgbd, config: null, set: [], place: auto, place_checkpoint: null, map: null,  # map: OLD/map.npz to relocalise in (slam-run --map)
             pose_prior: null, pose_prior_inference: in-process}  # pose_prior: a PoseNet/VidLoc checkpoint (slam-run --pose-prior)
      inference: {enabled: true, device: auto, config: null, restart: true}
      viewer: {enabled: false, record: null, spawn: false}   # live view (rerun): see slam.nodes.viewer

Place recognition (``slam.place``): NetVLAD runs in the SLAM process when
``place_checkpoint`` is given; otherwise it is asked of the inference server
(``endpoints.inference``): with ``place: auto`` when the local server's
``config`` names a NetVLAD model with a checkpoint, always with ``place:
netvlad`` (e.g. a server on another host). Otherwise ORB-VLAD, and the log
says why.

Relocalisation's pose prior (``slam.pose_prior``, as ``slam-run --pose-prior``,
which overrides it): a PoseNet or VidLoc checkpoint (the sidecar says which),
run in the SLAM process (``pose_prior_inference: in-process``, the default) or
asked of the inference server (``server``; a local server's ``config`` must
serve that model with a checkpoint, else the run is refused naming the file).

``{run}`` is replaced by a fresh per-run folder (ipc sockets live there), so
two runs never share sockets. Endpoints choose the deployment: ``ipc://`` on
one machine, ``tcp://`` across machines (an inference server on a GPU box);
the code is the same. Unknown keys are errors that name the file.

``viewer`` (off unless enabled; the live launch files enable it) starts
``slam.nodes.viewer``, restarted when it dies, which shows the camera image
with its tracked features, the trajectory and the map in rerun: in a rerun
window when ``spawn: true`` and there is a screen, else saved to a recording,
``record: PATH`` (always saved there when given; default ``OUT/view.rrd``;
open it with ``rerun OUT/view.rrd``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from slam.errors import DataError

ENDPOINT_NAMES = ("frames", "poses", "inference")
SOURCE_KINDS = ("replay", "camera")
PRIOR_INFERENCE = ("in-process", "server")  # where slam.pose_prior runs


@dataclass
class SourceSpec:
    kind: str = "replay"  # "replay": the sequence given on the command line; "camera": a live camera
    realtime: bool = True  # frames at their recorded times (replay; a video file given as camera)
    preload: bool = False  # replay: decode every frame into memory first, to time the graph as with a camera
    camera: str | None = None  # camera: device (0, /dev/video0) or video file
    imu: str | None = None  # camera: "serial[:PORT[:BAUD]]", or None
    width: int | None = None
    height: int | None = None
    fps: float | None = None
    camera_file: str | None = None  # camera: YAML camera file (slam-calib); else the shipped default
    mode: str | None = None  # replay: which streams to send (default: the slam process's mode)


@dataclass
class SlamSpec:
    mode: str | None = None  # rgbd, stereo, mono (default: the richest the sequence offers)
    config: str | None = None  # YAML with features/tracking/mapping settings
    set: list[str] = field(default_factory=list)  # SECTION.KEY=VALUE overrides
    sync_mapping: bool = False  # local mapping in the tracking thread (repeatable, slower): slam-run --sync-mapping
    map: str | None = None  # a saved map.npz to relocalise in and map on, as slam-run --map (same camera, features)
    frame_delay_s: float = 0.0  # sleep this long after each frame, as a slower machine would (tests, benchmarks)
    place: str = "auto"  # place recognition: auto, orb-vlad, netvlad (slam.inference.place)
    place_checkpoint: str | None = None  # NetVLAD in the SLAM process from this checkpoint (else: the inference server)
    pose_prior: str | None = None  # relocalisation's pose prior: a PoseNet or VidLoc checkpoint (its sidecar says which)
    pose_prior_inference: str = "in-process"  # where it runs: in-process, or "server" (endpoints.inference serves it)


@dataclass
class InferenceSpec:
    enabled: bool = False  # start a local slam-infer (False: none, or one runs on another host)
    device: str = "auto"
    config: str | None = None  # slam-infer model configuration (YAML)
    restart: bool = True  # restart it when it dies
    deadline_s: float = 0.5  # a request not answered by then is late (applied later or dropped)
    heartbeat_s: float = 1.0  # the SLAM process asks whether the server is there after this much silence


@dataclass
class ViewerSpec:
    enabled: bool = False  # start slam.nodes.viewer (needs the ``viewer`` extra: rerun-sdk)
    record: str | None = None  # save the view to this .rrd file (default: OUT/view.rrd when not spawned)
    spawn: bool = False  # open a rerun viewer window (when there is a screen; else it records)
    restart: bool = True  # restart it when it dies


@dataclass
class CurveSpec:
    secret: str | None = None  # this host's secret key file (slam-keys)
    server_public: str | None = None  # the inference server's public key file (for tcp inference)
    clients: str | None = None  # folder of public keys allowed to connect to what this host binds off loopback


@dataclass
class LaunchSpec:
    path: Path
    description: str
    endpoints: dict[str, str]
    source: SourceSpec
    slam: SlamSpec
    inference: InferenceSpec
    curve: CurveSpec
    viewer: ViewerSpec = field(default_factory=ViewerSpec)

    def endpoint(self, name: str, run_dir: Path) -> str:
        return self.endpoints[name].replace("{run}", str(run_dir))


_SECTIONS = {"source": SourceSpec, "slam": SlamSpec, "inference": InferenceSpec, "viewer": ViewerSpec}


def _fill(cls, values: Any, path: Path, where: str):
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise DataError(path, f"{where} must be a mapping, got {type(values).__name__}")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise DataError(path, f"unknown key(s) {unknown} in {where} (have: {', '.join(sorted(known))})")
    return cls(**values)


def load_launch(path: str | Path) -> LaunchSpec:
    """Read and check a launch file; :class:`DataError` names the file and the problem."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise DataError(path, "no such launch file") from None
    except yaml.YAMLError as e:
        raise DataError(path, f"not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise DataError(path, "a launch file is a mapping with endpoints and processes")
    unknown = sorted(set(data) - {"description", "endpoints", "processes", "curve"})
    if unknown:
        raise DataError(path, f"unknown top-level key(s) {unknown} (have: description, endpoints, processes, curve)")
    endpoints = data.get("endpoints") or {}
    if not isinstance(endpoints, dict) or set(endpoints) - set(ENDPOINT_NAMES):
        raise DataError(path, f"endpoints must map some of {ENDPOINT_NAMES} to addresses, got {endpoints!r}")
    missing = [n for n in ("frames", "poses") if n not in endpoints]
    if missing:
        raise DataError(path, f"endpoints {missing} missing")
    for name, url in endpoints.items():
        if not isinstance(url, str) or "://" not in url:
            raise DataError(path, f"endpoint {name}: {url!r} is not an address such as ipc://{{run}}/{name}")
    procs = data.get("processes") or {}
    if not isinstance(procs, dict):
        raise DataError(path, "processes must be a mapping")
    unknown = sorted(set(procs) - set(_SECTIONS))
    if unknown:
        raise DataError(path, f"unknown process(es) {unknown} (have: {', '.join(_SECTIONS)})")
    try:
        spec = LaunchSpec(
            path=path,
            description=str(data.get("description", "")),
            endpoints={k: str(v) for k, v in endpoints.items()},
            source=_fill(SourceSpec, procs.get("source"), path, "processes.source"),
            slam=_fill(SlamSpec, procs.get("slam"), path, "processes.slam"),
            inference=_fill(InferenceSpec, procs.get("inference"), path, "processes.inference"),
            curve=_fill(CurveSpec, data.get("curve"), path, "curve"),
            viewer=_fill(ViewerSpec, procs.get("viewer"), path, "processes.viewer"),
        )
    except TypeError as e:
        raise DataError(path, str(e)) from None
    if spec.source.kind not in SOURCE_KINDS:
        raise DataError(path, f"processes.source.kind must be one of {SOURCE_KINDS}, got {spec.source.kind!r}")
    if spec.source.kind == "camera" and not spec.source.camera:
        raise DataError(path, "processes.source: kind camera needs camera: DEVICE_OR_VIDEO")
    if spec.slam.pose_prior_inference not in PRIOR_INFERENCE:
        raise DataError(path, f"processes.slam.pose_prior_inference must be one of {PRIOR_INFERENCE}, "
                              f"got {spec.slam.pose_prior_inference!r}")
    if spec.slam.pose_prior_inference == "server" and "inference" not in spec.endpoints:
        raise DataError(path, "processes.slam.pose_prior_inference is server but endpoints.inference is missing")
    if spec.inference.enabled and "inference" not in spec.endpoints:
        raise DataError(path, "processes.inference is enabled but endpoints.inference is missing")
    return spec
