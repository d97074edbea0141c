"""The SLAM system: one map, the tracking step per frame and the local mapping thread (ORB-SLAM's System).

    system = System(sequence.camera, "rgbd", SlamConfig(), stereo=sequence.stereo)
    for frame in sequence:
        result = system.process(frame)      # tracking, in the caller's thread
    system.shutdown()                       # drains local mapping and loop closing (and its global BA)
    system.trajectory()                     # T_w_c of every tracked frame, after BA corrections

Each frame's pose is kept relative to its reference keyframe, so corrections
that local BA makes to keyframes carry over to the frames between them. The
tracker computes that relative pose while it holds ``map.update_lock``, so it
uses the keyframe pose the frame was tracked against, not one local BA wrote
back in between.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from slam.backbone.config import SlamConfig
from slam.geometry import PinholeCamera, inv_pose
from slam.backbone.local_mapping import LocalMapper
from slam.backbone.loop.keyframe_database import KeyFrameDatabase
from slam.backbone.loop.loop_closing import LoopCloser
from slam.backbone.frontend.pose_prior import PosePrior
from slam.backbone.loop.place import OrbVladDescriber, PlaceDescriber
from slam.backbone.map.map import Map
from slam.records import Frame, StereoRig
from slam.backbone.frontend.tracking import FrameResult, State, Tracker
from slam.trajectory import Trajectory

log = logging.getLogger(__name__)


@dataclass
class _FrameRecord:
    index: int
    timestamp: float
    ref_kf_id: int
    T_c_ref: np.ndarray  # frame pose relative to its reference keyframe
    map_id: int = 0  # which map (Tracker.map_id): a reset starts a new one, in its own frame


def keypoint_colours(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB of an image (H x W x 3 RGB or H x W grey, uint8) at pixels ``uv`` (distorted, rounded)."""
    h, w = image.shape[:2]
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    u = np.clip(np.rint(uv[:, 0]).astype(np.int64), 0, w - 1)
    v = np.clip(np.rint(uv[:, 1]).astype(np.int64), 0, h - 1)
    c = image[v, u]
    c = np.repeat(c[:, None], 3, axis=1) if c.ndim == 1 else c[:, :3]
    return np.clip(c, 0, 255).astype(np.uint8)


def warm_up_kernels() -> None:
    """Compile (or load from numba's cache) the tracking and local BA kernels now, not during the first frames.

    A cold cache costs several seconds of compilation, which a live camera would see as dropped frames.
    """
    from slam.backbone.frontend import feature_kernel
    from slam.backbone.frontend.features import Features
    from slam.backbone.optim.local_ba import local_bundle_adjustment
    from slam.backbone.frontend.matching import match_by_projection
    from slam.backbone.optim.pose import optimize_pose

    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.uniform(-1, 1, (8, 2)), rng.uniform(2, 4, 8)])
    uv = X[:, :2] / X[:, 2:] * 500 + 320
    for ur, wd in ((-np.ones(8), None), (uv[:, 0] - 20, None), (uv[:, 0] - 20, np.ones(8))):
        optimize_pose(np.eye(4), X, uv, ur, np.ones(8), 500.0, 500.0, 320.0, 240.0, 50.0, inv_sigma2_disp=wd)
    desc = rng.integers(0, 256, (8, 32), dtype=np.uint8)
    f = Features(uv=uv, uv_und=uv, octave=np.zeros(8, np.int32), angle=np.zeros(8, np.float32), desc=desc,
                 depth=np.zeros(8), u_right=-np.ones(8))
    f.build_grid(640, 480)
    match_by_projection(f, uv, desc, 3.0, 0)
    match_by_projection(f, uv, desc, np.full(8, 3.0), np.zeros(8, np.int64), taken=np.zeros(8, bool),
                        proj_ur=uv[:, 0] - 20)
    # feature selection, with the argument types FeatureExtractor.extract passes
    xy = rng.uniform(0, 400, (2, 1200)).astype(np.float32)
    resp = rng.integers(7, 80, 1200).astype(np.float32)
    octv = rng.integers(0, 8, 1200).astype(np.int64)
    feature_kernel.level_stats(resp, octv, 8)
    keep = feature_kernel.distribute(xy[0], xy[1], resp, octv, 1.2 ** -np.arange(8.0), np.full(8, 125, np.int64),
                                     1000, 32.0, 21, 16)
    feature_kernel.place(xy[0], xy[1], octv, keep, 1.2 ** np.arange(8.0), np.ones((8, 2)))
    poses = {0: np.eye(4), 1: np.array([[1, 0, 0, -0.1], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1.0]])}
    for ur, wd in ((-np.ones(16), None), (np.r_[uv[:, 0], uv[:, 0] - 10] - 20, np.ones(16))):
        local_bundle_adjustment(poses, {0}, np.arange(8), X, np.repeat([0, 1], 8), np.tile(np.arange(8), 2),
                                np.vstack([uv, uv - [10, 0]]), ur, np.ones(16), 500.0, 500.0, 320.0, 240.0, 50.0,
                                iterations=(1, 1), obs_inv_sigma2_disp=wd)
    log.debug("tracking kernels ready in %.2f s", time.perf_counter() - t0)


class System:
    """Tracking (in the caller's thread), local mapping and loop closing (threads), one map.

    ``place_describer``: makes the loop closer's place describer (None: :class:`OrbVladDescriber`);
    ``system.places`` is the keyframe database of their descriptors, shared with relocalisation.
    ``threaded=False`` runs local mapping and loop closing inside :meth:`process` (deterministic).
    """

    def __init__(self, camera: PinholeCamera, mode: str, cfg: SlamConfig | None = None,
                 stereo: StereoRig | None = None, threaded: bool = True,
                 place_describer: Callable[[], PlaceDescriber] | None = None, initial_map: Map | None = None,
                 pose_prior: Callable[[], PosePrior] | None = None):
        """``place_describer``: a factory of place describers (None: ORB-VLAD), one per consumer.
        ``initial_map``: a loaded map (``slam-run --map``, checked against this camera and config by the
        caller): the first frames relocalise in it, then tracking and mapping go on in its frame.
        ``pose_prior``: makes the tracker's pose prior (e.g. PoseNet), asked when relocalisation's place
        retrieval fails (None: no prior)."""
        self.cfg = cfg or SlamConfig()
        self.place_describer_factory = place_describer  # loop closing and relocalisation each call it for their own
        self.mode = mode
        self.camera = camera
        self.map = initial_map if initial_map is not None else Map(
            camera, scale_factor=self.cfg.features.scale_factor, n_levels=self.cfg.features.n_levels)
        self.threaded = threaded
        if threaded and mode.startswith("mono") and self.cfg.mapping.max_queue < 2:
            # the two keyframes of a monocular map go to local mapping together
            raise ValueError(f"mapping.max_queue = {self.cfg.mapping.max_queue}: monocular needs at least 2")
        self.tracker = Tracker(camera, mode, self.map, self.cfg, stereo=stereo,
                               insert_keyframe=self._insert_keyframe, mapper_idle=self._mapper_idle,
                               mapper_accepts=self._mapper_accepts,
                               place_describer=place_describer() if place_describer is not None else None,
                               pose_prior=pose_prior() if pose_prior is not None else None)
        self.mapper = LocalMapper(self.map, camera, mode, self.cfg, self.tracker.extractor, self.tracker.bf,
                                  self.tracker.disp_inv_sigma2)
        describer = (place_describer or OrbVladDescriber)()
        self.places = KeyFrameDatabase(describer.dim)
        # loop.enabled=false: no loop detection, but keyframes still get descriptors (relocalisation);
        # loop.monocular=false: monocular maps detect no loops (LoopConfig)
        detect = self.cfg.loop.enabled and (self.cfg.loop.monocular or not mode.startswith("mono"))
        if self.cfg.loop.enabled and not detect:
            log.info("loop closing off for a monocular map (loop.monocular=false)")
        self.loop_closer = LoopCloser(self.map, camera, mode, self.cfg, self.places, describer,
                                      self.tracker.extractor, self.tracker.bf, self.tracker.disp_inv_sigma2,
                                      pause_mapping=self._pause_mapping, resume_mapping=self._resume_mapping,
                                      threaded=threaded, detect=detect)
        self.mapper.keyframe_done = self.loop_closer.insert
        if self.tracker.relocalizer.describer.dim != describer.dim:
            raise ValueError(f"place describers of {self.tracker.relocalizer.describer.dim} and {describer.dim} values")
        self.tracker.relocalizer.places = self.places  # relocalisation queries the loop closer's database
        warm_up_kernels()
        if threaded:
            self.mapper.start()
            self.loop_closer.start()
        self.records: list[_FrameRecord] = []
        self.results: list[FrameResult] = []
        self.keyframe_maps: dict[int, int] = {}  # keyframe id -> map id
        # keyframe id -> (N, 3) uint8 RGB of its keypoints, sampled from the frame's image (keyframes keep no image)
        self.keyframe_colours: dict[int, np.ndarray] = {}
        if initial_map is not None:
            self.keyframe_maps = self.tracker.start_in_loaded_map()

    def _insert_keyframe(self, kf) -> bool:
        if self.threaded:
            return self.mapper.insert(kf)
        self.mapper.process(kf)  # single-threaded (tests, debugging): map synchronously
        return True

    def _pause_mapping(self) -> bool:
        return self.mapper.pause() if self.threaded else True

    def _resume_mapping(self) -> None:
        if self.threaded:
            self.mapper.resume()

    def _mapper_idle(self) -> bool:
        return self.mapper.idle() if self.threaded else True

    def _mapper_accepts(self) -> bool:
        return self.mapper.accepts_keyframes() if self.threaded else True

    def prepare(self, frame: Frame):
        """Feature extraction for ``frame`` (thread-safe to run one frame ahead of :meth:`process`)."""
        return self.tracker.prepare(frame)

    def process(self, frame: Frame, prepared=None) -> FrameResult:
        res = self.tracker.track(frame, prepared)
        self.results.append(res)
        if res.state == State.OK and res.T_c_ref is not None:
            self.records.append(_FrameRecord(frame.index, frame.timestamp, res.ref_kf_id, res.T_c_ref,
                                             self.tracker.map_id))
        self._note_new_keyframes(frame)
        return res

    def _note_new_keyframes(self, frame: Frame) -> None:
        """Map id of the keyframes this frame's tracking created, and the colour of their keypoints."""
        # No map lock: only this thread creates keyframes (ids 0, 1, 2, ...), and local mapping may hold
        # the lock for a whole BA, which would stall tracking here.
        for kf_id in range(len(self.keyframe_maps), self.map.next_kf_id):
            self.keyframe_maps[kf_id] = self.tracker.map_id
            kf = self.map.keyframes.get(kf_id)
            if kf is not None and kf.frame_index == frame.index and frame.image is not None:
                self.keyframe_colours[kf_id] = keypoint_colours(frame.image, kf.features.uv)

    def wait_for_mapping(self, max_backlog: int = 0, timeout: float | None = None) -> bool:
        """Block until local mapping has at most ``max_backlog`` keyframes queued or in work.

        Offline replay's back-pressure (``slam.runner``). True at once with synchronous mapping;
        False on timeout or when the mapping thread is not running.
        """
        return self.mapper.wait_backlog(max_backlog, timeout) if self.threaded else True

    def shutdown(self) -> None:
        """Finish the queued keyframes (local mapping, then loop closing and a running global BA) and stop."""
        if self.threaded:
            self.mapper.wait_backlog(0, 60.0)
        self.loop_closer.stop(drain=True)
        self.loop_closer.describer.close()
        if self.tracker.relocalizer.prior is not None:
            self.tracker.relocalizer.prior.close()
        if self.threaded:
            self.mapper.stop(drain=True)

    # ---------------------------------------------------------------- outputs
    def trajectory(self) -> Trajectory:
        """``T_w_c`` of every tracked frame, through its reference keyframe's current pose."""
        stamps, poses, lost = [], [], 0
        with self.map.lock:
            for r in self.records:
                try:
                    T_w_ref = self._kf_T_w_c(r.ref_kf_id)
                except KeyError:  # its keyframe's pose is gone (a map bug): leave the frame out, say so
                    lost += 1
                    continue
                stamps.append(r.timestamp)
                poses.append(T_w_ref @ inv_pose(r.T_c_ref))
        if lost:
            log.error("%d tracked frames left out of the trajectory: their reference keyframe's pose is lost", lost)
        return Trajectory(np.array(stamps), np.array(poses).reshape(-1, 4, 4))

    def _kf_T_w_c(self, kf_id: int) -> np.ndarray:
        """Current pose of a keyframe; a culled one follows its parent by the relative pose it had."""
        return inv_pose(self.map.keyframe_pose(kf_id))

    def keyframe_trajectory(self) -> Trajectory:
        return self.map.keyframe_trajectory()

    def lost_frames(self) -> list[int]:
        """Frames on which tracking failed (also those after which a new map was started at once);
        not the frames before a map was initialised."""
        return [r.index for r in self.results if r.state == State.LOST]
