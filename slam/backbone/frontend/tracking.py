"""The tracking thread's work, one call per frame (ORB-SLAM's Tracking, in named steps).

``Tracker.track(frame)`` reads like the algorithm:

1. extract ORB features (and their depth: RGB-D map or stereo matching);
2. initialise a map if there is none (depth: one frame; mono: two views);
3. predict the pose with a constant-velocity model and match the last frame's
   points by projection (fall back to descriptor matching with the reference keyframe);
4. optimise the pose (g2o, motion only) and drop outliers;
5. project the local map (covisible keyframes' points), match and optimise again;
6. decide whether the frame becomes a keyframe and hand it to local mapping.

While lost, step 3 is relocalisation in the map (:mod:`~slam.backbone.frontend.relocalization`,
``tracking.relocalization``); tracking then goes on in the same map. A new map is started
only after ``tracking.reloc_max_frames`` frames with keypoints on which it failed (black or
featureless frames do not count), or at once when the map is too young (two keyframes).
A loaded map (``slam-run --map``) is relocalised in the same way before any map is started.

It never waits on local mapping: keyframes go into a queue, and when the queue
is full the keyframe is postponed to a later frame. That is decided before the
keyframe is created (:mod:`~slam.backbone.frontend.keyframe_decision`); should
the queue still refuse it, the keyframe is discarded from the map again.

Steps 2-6 and the pose relative to the reference keyframe are done holding
``map.update_lock``, which local BA takes only to write its result back: a frame
is tracked and recorded against one version of the keyframe poses and point positions.
Meanwhile the tracking thread takes precedence on ``map.lock``: when local mapping
holds it, tracking gets it at the end of that chunk of work.
"""

from __future__ import annotations

import enum
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter

import cv2
import numpy as np

from slam.backbone.config import SlamConfig
from slam.backbone.frontend.features import FeatureExtractor, Features, set_depth_from_map
from slam.backbone.frontend.keyframe_decision import KeyframeEvidence, decide_keyframe
from slam.backbone.frontend.stereo import match_stereo
from slam.geometry import PinholeCamera, inv_pose, normalize_pose, se3_exp, se3_log
from slam.backbone.frontend.local_map import gather_points, project_visible
from slam.backbone.frontend.relocalization import Relocalizer, loaded_map_ids, map_root
from slam.backbone.loop.place import thumbnail
from slam.backbone.map.map import KeyFrame, Map
from slam.backbone.frontend.matching import match_by_projection, match_descriptors, rotation_consistency
from slam.backbone.optim.pose import optimize_pose
from slam.records import Frame, StereoRig

log = logging.getLogger(__name__)


class State(enum.Enum):
    NOT_INITIALIZED = "initialising"
    OK = "tracking"
    LOST = "lost"


@dataclass
class TrackedFrame:
    """A frame as the tracker keeps it: features, their map points and the estimated pose."""

    index: int
    timestamp: float
    features: Features
    T_c_w: np.ndarray
    point_ids: np.ndarray  # (N,) int64, -1 = no map point
    outlier: np.ndarray  # (N,) bool
    image_gray: np.ndarray | None = None
    prepare_ms: float = 0.0  # time spent extracting the features
    image: np.ndarray | None = None  # the frame's image (a reference, not a copy): a keyframe's thumbnail

    def thumbnail(self) -> np.ndarray | None:
        return None if self.image is None else thumbnail(self.image)

    def matched(self) -> np.ndarray:
        return np.nonzero((self.point_ids >= 0) & ~self.outlier)[0]


@dataclass
class FrameResult:
    """What ``track`` reports for one frame.

    ``state`` is ``LOST`` for a frame whose tracking failed, even when the tracker
    started a new map in the same step (its next frames then report ``NOT_INITIALIZED``).
    ``ref_kf_id`` and ``T_c_ref`` (the frame's pose relative to that keyframe, taken
    with the keyframe pose the frame was tracked against) are set for tracked frames.
    ``timings_ms["lock_wait"]``: time blocked on the map's locks during the frame.
    """

    index: int
    timestamp: float
    state: State
    T_w_c: np.ndarray | None
    n_matches: int
    is_keyframe: bool
    timings_ms: dict[str, float] = field(default_factory=dict)
    ref_kf_id: int = -1
    T_c_ref: np.ndarray | None = None


class Tracker:
    def __init__(self, camera: PinholeCamera, mode: str, slam_map: Map, cfg: SlamConfig,
                 stereo: StereoRig | None = None, insert_keyframe=None, mapper_idle=lambda: True,
                 rgbd_virtual_baseline: float = 0.08, mapper_accepts=lambda: True, place_describer=None,
                 pose_prior=None):
        self.camera = camera
        self.ideal_camera = camera.undistorted()  # the pinhole model of undistorted keypoints (uv_und)
        self.K = camera.K
        self.mode = mode.replace("-inertial", "")
        self.mono = self.mode == "mono"
        self.map = slam_map
        self.cfg = cfg
        self.tc = cfg.tracking
        self.extractor = FeatureExtractor(cfg.features, camera)
        self.stereo = stereo
        if self.mode == "stereo":
            if stereo is None:
                raise ValueError("stereo mode needs a stereo rig")
            self.bf = camera.fx * stereo.baseline
            self.right_extractor = FeatureExtractor(cfg.features, stereo.right)
        elif self.mode == "rgbd":
            # ORB-SLAM2 treats RGB-D as stereo with a virtual baseline (for the u_right measurement).
            self.bf = camera.fx * rgbd_virtual_baseline
        else:
            self.bf = 0.0
        # RGB-D: the depth term is the disparity error bf (1/z_pred - 1/z_meas), weighted by the depth
        # sensor's noise sigma_z = k z^2, which is a constant sigma_d = bf k in disparity. (ORB-SLAM2
        # gives it the keypoint's pixel weight, which makes depth nearly uninformative at a few metres.)
        self.disp_inv_sigma2 = 1.0 / (self.bf * self.tc.depth_noise_k) ** 2 if self.mode == "rgbd" else None
        self.close_depth = self.tc.close_depth_factor * self.bf / camera.fx if self.bf > 0 else np.inf
        self.insert_keyframe = insert_keyframe or (lambda kf: True)
        self.mapper_idle = mapper_idle
        self.mapper_accepts = mapper_accepts  # would ``insert_keyframe`` take a keyframe now (queue not full)
        self.state = State.NOT_INITIALIZED
        self.last: TrackedFrame | None = None  # the last frame tracked OK
        self.current: TrackedFrame | None = None  # the frame of the latest ``track`` call, whatever its state (viewers)
        self.velocity: np.ndarray | None = None  # T_c_w(k) @ T_w_c(k-1)
        self.ref_kf: KeyFrame | None = None
        self.last_kf_index = -1
        self.n_lost = 0
        self.pending_keyframe = False
        self.mono_init = None  # set lazily (slam.backbone.frontend.initializer)
        self.local_kf_ids: list[int] = []
        self.T_w_c_prior = np.eye(4)  # where a new map starts (continuity after a reset)
        self.map_id = 0  # the map being built: +1 at each reset that leaves a map behind (until maps merge)
        # ---- relocalisation (slam.backbone.frontend.relocalization)
        # its own describer, never loop closing's; ``pose_prior`` (a PosePrior or None): asked when retrieval fails
        self.relocalizer = Relocalizer(self, place_describer, pose_prior)
        self.n_reloc_failed = 0  # frames with keypoints on which relocalisation failed since the loss
        self.reloc_pending = False  # a loaded map: relocalise in it before starting a map of our own
        self.map_origin: int | None = None  # first keyframe of the map tracked now (relocalisation stays in it)
        self.origin_map_ids: dict[int, int] = {}  # first keyframe of each map -> map id
        self.relocalizations: list[dict] = []  # frame, keyframe, inliers of each relocalisation
        self._last_ref: tuple[int, np.ndarray] | None = None  # the last frame's (reference keyframe id, T_c_ref)
        self._corrections_seen = slam_map.corrections  # Map.corrections when the last frame was tracked

    # ================================================================ per frame
    def prepare(self, frame: Frame) -> TrackedFrame:
        """Step 1 alone (features and their depth), so a caller can run it ahead in another thread.

        Frames must be prepared in order: the extractor adapts its FAST threshold frame to frame.
        """
        return self._make_frame(frame)

    def track(self, frame: Frame, prepared: TrackedFrame | None = None) -> FrameResult:
        t = {}
        t0 = time.perf_counter()
        cur = prepared if prepared is not None else self._make_frame(frame)
        self.current = cur
        t["features"] = _ms(t0) if prepared is None else prepared.prepare_ms
        m = self.map
        waited = m.update_lock.waited_s() + m.lock.waited_s()
        # One map version for the whole frame (module docstring); precedence on the map lock over local
        # mapping, which holds it for chunks of work (slam.backbone.map.fair_lock).
        with m.update_lock, m.lock.priority():
            if m.corrections != self._corrections_seen:
                self._follow_map_corrections()
            is_kf = failed = False
            if self.state == State.NOT_INITIALIZED and not self.reloc_pending:
                ok = self._initialize(cur, frame)
                self.state = State.OK if ok else State.NOT_INITIALIZED
                is_kf = ok
                if ok:
                    self._on_map_started()
            else:
                # lost, or a loaded map not relocalised in yet: relocalisation instead of the motion model
                relocalising = self.state != State.OK and (self.reloc_pending or self.tc.relocalization)
                t1 = time.perf_counter()
                ok = self._relocalize(cur) if relocalising else self._track_motion_or_reference(cur)
                t["relocalization" if relocalising else "motion"] = _ms(t1)
                t1 = time.perf_counter()
                ok = ok and self._track_local_map(cur)
                t["local_map"] = _ms(t1)
                if ok:
                    if relocalising:
                        self._on_relocalized(cur)
                    self.state, self.n_lost = State.OK, 0
                    t1 = time.perf_counter()
                    is_kf = self._maybe_insert_keyframe(cur)
                    t["keyframe"] = _ms(t1)
                    if is_kf and m.corrections != self._corrections_seen:
                        # synchronous mapping closed a loop on this very keyframe: the frame is the keyframe
                        cur.T_c_w = self.ref_kf.T_c_w.copy()
                        self._corrections_seen = m.corrections
                elif self.state == State.NOT_INITIALIZED:  # a loaded map: not relocalised yet
                    self._on_not_relocalized(cur, relocalising and self.relocalizer.attempted)
                else:
                    failed = True
                    self._on_lost(cur, relocalising and self.relocalizer.attempted)
            ref_id, T_c_ref = -1, None
            if self.state == State.OK:
                if self.last is not None and self.last.T_c_w is not None:
                    self.velocity = self._velocity(cur.T_c_w @ inv_pose(self.last.T_c_w))
                self.last = cur
                if self.ref_kf is not None:
                    ref_id, T_c_ref = self.ref_kf.id, cur.T_c_w @ self.ref_kf.T_w_c
                    self._last_ref = (ref_id, T_c_ref)
        t["lock_wait"] = 1e3 * (m.update_lock.waited_s() + m.lock.waited_s() - waited)
        t["total"] = _ms(t0)
        T_w_c = inv_pose(cur.T_c_w) if self.state == State.OK else None
        state = State.LOST if failed else self.state  # lost, even if a new map was started at once
        return FrameResult(cur.index, cur.timestamp, state, T_w_c, len(cur.matched()), is_kf, t, ref_id, T_c_ref)

    # ============================================================ the steps
    def _make_frame(self, frame: Frame) -> TrackedFrame:
        t0 = time.perf_counter()
        gray = _gray(frame.image)
        feats = self.extractor.extract(gray)
        if self.mode == "rgbd" and frame.depth is not None:
            set_depth_from_map(feats, frame.depth, self.bf)
        elif self.mode == "rgbd":
            log.warning("frame %d has no depth: tracked monocularly", frame.index)
        elif self.mode == "stereo" and frame.right is not None:
            right_gray = _gray(frame.right)
            right = self.right_extractor.extract(right_gray)
            match_stereo(feats, right, self.camera, self.bf, left_image=gray, right_image=right_gray,
                         scale_factor=self.extractor.scale_factor)
        n = len(feats)
        return TrackedFrame(frame.index, frame.timestamp, feats, None, np.full(n, -1, np.int64),
                            np.zeros(n, bool), gray if self.mono else None, _ms(t0), frame.image)

    def _initialize(self, cur: TrackedFrame, frame: Frame) -> bool:
        if self.mono:
            from slam.backbone.frontend.initializer import MonoInitializer

            if self.mono_init is None:
                self.mono_init = MonoInitializer(self)
            return self.mono_init.add(cur)
        has_depth = cur.features.depth > 0
        if has_depth.sum() < self.tc.min_init_features:
            log.info("frame %d: %d keypoints with depth, need %d to initialise", cur.index, int(has_depth.sum()),
                     self.tc.min_init_features)
            return False
        if not self.mapper_accepts():
            log.info("frame %d: local mapping's queue is full; initialising later", cur.index)
            return False
        cur.T_c_w = inv_pose(self.T_w_c_prior)
        with self.map.lock:
            kf = self.map.new_keyframe(cur.index, cur.timestamp, cur.T_c_w, cur.features, starts_map=True,
                                       thumbnail=cur.thumbnail())
            idx = np.nonzero(has_depth)[0]
            cur.point_ids[idx] = self.map.new_points(self._backproject(cur, idx), kf, idx)
            kf.update_connections(self.map)
        if not self.insert_keyframe(kf):
            self.discard_keyframes([kf], cur)
            return False
        log.info("map initialised at frame %d with %d points", cur.index, int(has_depth.sum()))
        self._set_reference(kf, cur)
        return True

    def _track_motion_or_reference(self, cur: TrackedFrame) -> bool:
        last = self.last
        if self.velocity is not None:
            cur.T_c_w = self.velocity @ last.T_c_w
            n = self._match_last_frame(cur, self.tc.motion_radius_px)
            if n < self.tc.min_matches_motion:
                cur.point_ids[:] = -1
                n = self._match_last_frame(cur, 2 * self.tc.motion_radius_px)
            if (n >= self.tc.min_matches_motion
                    and self._optimize(cur, self.tc.motion_opt_rounds) >= self.tc.min_inliers_motion):
                return True
        # Reference keyframe: descriptor matching against its map points.
        cur.T_c_w = last.T_c_w.copy()
        cur.point_ids[:] = -1
        kf = self.ref_kf
        kf_ids = kf.point_ids
        has = np.nonzero(kf_ids >= 0)[0]
        if len(has) < self.tc.ref_min_points:
            return False
        i_kf, i_cur = match_descriptors(kf.features.desc[has], cur.features.desc, ratio=self.tc.ref_match_ratio)
        cur.point_ids[i_cur] = kf_ids[has[i_kf]]
        self._drop_bad_points(cur)
        if len(cur.matched()) < self.tc.ref_min_matches:
            return False
        return self._optimize(cur, self.tc.motion_opt_rounds) >= self.tc.min_inliers_motion

    def _match_last_frame(self, cur: TrackedFrame, radius: float) -> int:
        last = self.last
        idx = last.matched()
        pts = self._positions(last.point_ids[idx])
        good = ~np.isnan(pts[:, 0])
        idx, pts = idx[good], pts[good]
        if len(idx) == 0:
            return 0
        proj = project_visible(cur.T_c_w, pts, None, None, None, self.ideal_camera, self.bf,
                               self.extractor.scale_factor, self.extractor.n_levels)
        src = idx[proj.idx]
        scale = self.extractor.scale_factors[last.features.octave[src]]
        p_i, k_i = match_by_projection(
            cur.features, proj.uv, last.features.desc[src], radius * scale,
            last.features.octave[src], proj_ur=proj.u_right if self.bf > 0 else None,
            max_dist=self.tc.motion_max_hamming,
        )
        # Keep the matches whose orientation change agrees with the dominant ones (ORB-SLAM's check).
        keep = rotation_consistency(last.features.angle[src[p_i]], cur.features.angle[k_i])
        p_i, k_i = p_i[keep], k_i[keep]
        cur.point_ids[k_i] = last.point_ids[src[p_i]]
        return len(k_i)

    def _track_local_map(self, cur: TrackedFrame) -> bool:
        m = self.map
        with m.lock:
            pts = gather_points(m, self._local_keyframes(cur), cur.point_ids)
        if pts is None:
            return len(cur.matched()) >= self.tc.min_inliers
        pids, desc = pts.ids, pts.descriptors
        proj = project_visible(cur.T_c_w, pts.positions, pts.normals, pts.min_dist, pts.max_dist, self.ideal_camera,
                               self.bf, self.extractor.scale_factor, self.extractor.n_levels)
        m.count_visible(pids[proj.idx])
        radius = np.where(proj.view_cos > 0.998, self.tc.local_radius_frontal, self.tc.local_radius_oblique)
        radius = radius * self.tc.local_radius_px / 3.0
        radius = radius * self.extractor.scale_factors[proj.level]
        taken = cur.point_ids >= 0
        p_i, k_i = match_by_projection(cur.features, proj.uv, desc[proj.idx], radius, proj.level,
                                       taken=taken, proj_ur=proj.u_right if self.bf > 0 else None)
        cur.point_ids[k_i] = pids[proj.idx[p_i]]
        n = self._optimize(cur)
        found = cur.point_ids[cur.matched()]
        m.count_found(found[m.valid_mask(found)])
        return n >= self.tc.min_inliers

    def _optimize(self, cur: TrackedFrame, rounds: int = 4) -> int:
        """Motion-only BA on the current matches; outliers are unmatched. Returns the inlier count."""
        self._drop_bad_points(cur)
        idx = np.nonzero(cur.point_ids >= 0)[0]
        if len(idx) < 3:
            return 0
        pts = self._positions(cur.point_ids[idx])
        f = cur.features
        res = optimize_pose(
            cur.T_c_w, pts, f.uv_und[idx], f.u_right[idx], self.extractor.inv_level_sigma2[f.octave[idx]],
            self.camera.fx, self.camera.fy, self.camera.cx, self.camera.cy, self.bf,
            inv_sigma2_disp=self._disp_weights(len(idx)), rounds=rounds,
        )
        cur.T_c_w = res.T_c_w
        cur.point_ids[idx[~res.inliers]] = -1
        cur.outlier[:] = False
        return int(res.n_inliers)

    # ======================================================== keyframes
    def _maybe_insert_keyframe(self, cur: TrackedFrame) -> bool:
        """Decide (before creating anything), create the keyframe, hand it to local mapping."""
        if not decide_keyframe(self._keyframe_evidence(cur), self.tc).insert:
            return False
        kf = self._create_keyframe(cur)
        if self.insert_keyframe(kf):
            self._set_reference(kf, cur)
            return True
        # Refused after all (local mapping stopped or filled up meanwhile): leave no trace of it.
        self.discard_keyframes([kf], cur)
        return False

    def _keyframe_evidence(self, cur: TrackedFrame) -> KeyframeEvidence:
        n_kfs = len(self.map.keyframes)
        # Points of the reference keyframe seen by at least ``kf_ref_min_obs`` keyframes (1 while the
        # map is one keyframe). ORB-SLAM asks for 3; here a new keyframe's many fresh depth points
        # have one observation, so 3 leaves too few to compare with and keyframes come too rarely.
        ref_tracked = self.ref_kf.tracked_points(1 if n_kfs == 1 else self.tc.kf_ref_min_obs)
        n_close_tracked = n_close_untracked = 0
        if not self.mono:
            close = (cur.features.depth > 0) & (cur.features.depth < self.close_depth)
            n_close_tracked = int(np.sum(close & (cur.point_ids >= 0)))
            n_close_untracked = int(np.sum(close & (cur.point_ids < 0)))
        return KeyframeEvidence(
            frames_since_kf=cur.index - self.last_kf_index, n_tracked=len(cur.matched()), ref_tracked=ref_tracked,
            n_close_tracked=n_close_tracked, n_close_untracked=n_close_untracked,
            mapper_accepts=self.mapper_accepts(), mapper_idle=self.mapper_idle(), mono=self.mono,
        )

    def _create_keyframe(self, cur: TrackedFrame) -> KeyFrame:
        """The frame as a keyframe in the map, with its tracked points and (stereo/RGB-D) new close points."""
        with self.map.lock:
            kf = self.map.new_keyframe(cur.index, cur.timestamp, cur.T_c_w, cur.features, thumbnail=cur.thumbnail())
            for i in cur.matched():
                p = self.map.points.get(int(cur.point_ids[i]))
                if p is not None and not p.bad:
                    self.map.associate(kf, int(i), p)
            if not self.mono:
                self._add_close_points(cur, kf)
        return kf

    def discard_keyframes(self, kfs: list[KeyFrame], *frames: TrackedFrame) -> None:
        """Take keyframes local mapping refused out of the map again (newest first), and unmatch
        ``frames`` from the points that go with them."""
        with self.map.lock:
            for kf in sorted(kfs, key=lambda k: k.id, reverse=True):
                if not kf.bad:
                    self.map.discard_keyframe(kf)
                    log.info("keyframe %d (frame %d) refused by local mapping: discarded", kf.id, kf.frame_index)
            for f in frames:
                has = f.point_ids >= 0
                f.point_ids[has & ~self.map.valid_mask(f.point_ids)] = -1

    def _add_close_points(self, cur: TrackedFrame, kf: KeyFrame) -> None:
        """Stereo/RGB-D: new points from depth for untracked keypoints, closest first (ORB-SLAM2)."""
        d = cur.features.depth
        cand = np.nonzero((d > 0) & (cur.point_ids < 0) & (kf.point_ids < 0))[0]
        cand = cand[np.argsort(d[cand])]
        # All close points, and at least new_points_min of the nearest ones even if they are far.
        n = max(int(np.sum(d[cand] <= self.close_depth)), min(self.tc.new_points_min, len(cand)))
        cand = cand[:n]
        if len(cand):
            cur.point_ids[cand] = self.map.new_points(self._backproject(cur, cand), kf, cand)

    def _set_reference(self, kf: KeyFrame, cur: TrackedFrame) -> None:
        self.ref_kf = kf
        self.last_kf_index = cur.index

    def _local_keyframes(self, cur: TrackedFrame) -> list[KeyFrame]:
        """Keyframes sharing points with the frame, plus their best covisibles (bounded)."""
        # Votes: one per observation of the frame's good points, counted in C (Counter over the chained
        # observation dicts), in the order of the plain double loop (ties keep that order below).
        ids = cur.point_ids[cur.point_ids >= 0]
        ids = ids[self.map.valid_mask(ids)].tolist()
        votes = Counter(chain.from_iterable(map(_observations, filter(None, map(self.map.points.get, ids)))))
        ranked = sorted(votes, key=votes.get, reverse=True)
        chosen = [k for k in ranked if k in self.map.keyframes and not self.map.keyframes[k].bad]
        chosen = chosen[: self.tc.max_local_keyframes]
        seen = set(chosen)
        for k in list(chosen):
            if len(seen) >= self.tc.max_local_keyframes:
                break
            for c in self.map.keyframes[k].covisibles(self.tc.local_covisibles_per_kf):
                if c not in seen and len(seen) < self.tc.max_local_keyframes:
                    seen.add(c)
                    chosen.append(c)
        if chosen:
            best = self.map.keyframes[chosen[0]]
            if best is not self.ref_kf and votes:
                self.ref_kf = best
        self.local_kf_ids = chosen
        return [self.map.keyframes[k] for k in chosen if k in self.map.keyframes]

    def _follow_map_corrections(self) -> None:
        """Loop closing or global BA moved the map: put the last frame where its reference keyframe is now.

        ORB-SLAM re-expresses the last frame through its reference keyframe every frame (UpdateLastFrame);
        here only after a correction of the whole map (``Map.corrections``), which local BA's small moves
        are not. The velocity is relative and stays valid.
        """
        self._corrections_seen = self.map.corrections
        if self.last is None or self._last_ref is None:
            return
        ref_id, T_c_ref = self._last_ref
        try:
            self.last.T_c_w = T_c_ref @ self.map.keyframe_pose(ref_id)
        except KeyError:
            log.warning("the last frame's reference keyframe %d is gone: its pose is not corrected", ref_id)

    # ============================================================ lost, relocalisation
    def _on_lost(self, cur: TrackedFrame, tried: bool) -> None:
        """A frame not tracked (``tried``: relocalisation was attempted on it, with keypoints, and failed)."""
        self.state = State.LOST
        self.n_lost += 1
        if self.n_lost == 1:
            self.n_reloc_failed = 0
            log.warning("tracking lost at frame %d%s", cur.index,
                        "; relocalising from the next frame" if self.tc.relocalization else "")
        self.n_reloc_failed += int(tried)
        if len(self.map.keyframes) <= 2:  # too young to relocalise in: a new map at once
            self.reset(keep_prior=True)
        elif not self.tc.relocalization:
            if self.n_lost >= self.tc.lost_frames_reset:
                self.reset(keep_prior=True)
        elif self.n_reloc_failed >= self.tc.reloc_max_frames:
            log.warning("relocalisation failed on %d frames with keypoints since tracking was lost (%d lost "
                        "frames): giving up on this map", self.n_reloc_failed, self.n_lost)
            self.reset(keep_prior=True)

    def _relocalize(self, cur: TrackedFrame) -> bool:
        """Relocalisation in the current map (any part of a loaded map not relocalised in yet)."""
        origin = self.map_origin
        return self.relocalizer.relocalize(cur, lambda kf: origin is None or map_root(self.map, kf.id) == origin)

    def _on_relocalized(self, cur: TrackedFrame) -> None:
        """Tracking goes on in the map relocalised in: its frame, its keyframes (no velocity across the gap)."""
        r = self.relocalizer.last
        with self.map.lock:
            root = map_root(self.map, r.kf_id)
        if root != self.map_origin:  # a loaded map: the part relocalised in
            self.map_origin, self.map_id = root, self.origin_map_ids.get(root, self.map_id)
        lost_for, loaded = self.n_lost, self.reloc_pending
        self.reloc_pending, self.n_reloc_failed = False, 0
        self.last = self.velocity = None
        self.last_kf_index = cur.index
        if self.ref_kf is None or self.ref_kf.bad:
            self.ref_kf = self.map.keyframes[r.kf_id]
        n = len(cur.matched())
        self.relocalizations.append({"frame": cur.index, "keyframe": r.kf_id, "inliers": r.n_inliers,
                                     "local_map_inliers": n, "map": self.map_id, "lost_frames": lost_for,
                                     "loaded_map": loaded, "source": r.source})
        log.info("relocalised at frame %d against keyframe %d, %d inliers (%d with the local map), map %d%s",
                 cur.index, r.kf_id, r.n_inliers, n, self.map_id,
                 " (the loaded map)" if loaded else f", after {lost_for} lost frames")

    def _on_not_relocalized(self, cur: TrackedFrame, tried: bool) -> None:
        """A frame of a loaded map's start that did not relocalise; after enough, a map of our own starts."""
        self.n_reloc_failed += int(tried)
        if self.n_reloc_failed >= self.tc.reloc_max_frames:
            self.reloc_pending = False
            self.map_id, self.map_origin = self._next_map_id(), None
            log.warning("no relocalisation in the loaded map on %d frames with keypoints: starting a new map "
                        "(map %d, in a frame of its own)", self.n_reloc_failed, self.map_id)

    def start_in_loaded_map(self) -> dict[int, int]:
        """The map handed to the tracker was loaded: relocalise the first frames in it. Returns the map id of
        each of its keyframe ids (parts of the map that were separate maps keep separate ids)."""
        origins, kf_maps = loaded_map_ids(self.map)
        self.origin_map_ids.update(origins)
        self.reloc_pending = bool(self.map.keyframes)
        self.map_id, self.map_origin, self.n_reloc_failed = 0, None, 0
        log.info("loaded map: %d keyframes, %d points in %d part(s); relocalising the first frames in it",
                 len(self.map.keyframes), len(self.map.points), len(origins))
        return kf_maps

    def _on_map_started(self) -> None:
        with self.map.lock:
            self.map_origin = map_root(self.map, self.ref_kf.id)
        self.origin_map_ids[self.map_origin] = self.map_id

    def _next_map_id(self) -> int:
        return max(self.map_id, *self.origin_map_ids.values()) + 1 if self.origin_map_ids else self.map_id + 1

    def reset(self, keep_prior: bool = True) -> None:
        """Start a new map (the next frames initialise it) where the camera was last known to be."""
        if keep_prior and self.last is not None and self.last.T_c_w is not None:
            self.T_w_c_prior = inv_pose(self.last.T_c_w)
        log.warning("starting a new map (previous: %d keyframes)", len(self.map.keyframes))
        if self.ref_kf is not None:  # repeated resets while still lost start no further map
            self.map_id = self._next_map_id()
        self.map_origin = None
        self.state = State.NOT_INITIALIZED
        self.last = None
        self.velocity = None
        self.ref_kf = None
        self.mono_init = None

    # ============================================================ helpers
    def _positions(self, point_ids: np.ndarray) -> np.ndarray:
        """World positions of map points (NaN rows for erased ones)."""
        ids = np.asarray(point_ids, np.int64)
        out = np.full((len(ids), 3), np.nan)
        ok = self.map.valid_mask(ids)
        if ok.any():
            out[ok] = self.map.points_array(ids[ok])
        return out

    def _drop_bad_points(self, cur: TrackedFrame) -> None:
        """Follow fused points to their survivor; unmatch erased ones."""
        idx = np.nonzero(cur.point_ids >= 0)[0]
        ids = cur.point_ids[idx]
        bad = ~self.map.valid_mask(ids)
        for i in idx[bad]:
            cur.point_ids[i] = self.map.resolve_point_id(int(cur.point_ids[i]))

    def _velocity(self, T_cur_last: np.ndarray) -> np.ndarray:
        """The motion predicted for the next frame: ORB-SLAM's constant velocity, scaled by ``tracking.velocity_gain``.

        The product is projected back onto SE(3): fed back frame after frame, the
        rounding drift of its rotation block otherwise doubles every frame, and after
        ~40 frames the pose's "rotation" had det 1.01 and tracking diverged.
        """
        g = self.tc.velocity_gain
        if g == 1.0:
            return normalize_pose(T_cur_last)
        if g == 0.0:
            return np.eye(4)
        return se3_exp(g * se3_log(T_cur_last))

    def _disp_weights(self, n: int) -> np.ndarray | None:
        return None if self.disp_inv_sigma2 is None else np.full(n, self.disp_inv_sigma2)

    def _backproject(self, cur: TrackedFrame, idx: np.ndarray) -> np.ndarray:
        """World points of keypoints ``idx`` from their depth (metres) at the frame's pose."""
        f = cur.features
        z = f.depth[idx]
        Pc = self.ideal_camera.unproject(f.uv_und[idx], z)
        T_w_c = inv_pose(cur.T_c_w)
        return Pc @ T_w_c[:3, :3].T + T_w_c[:3, 3]


_observations = attrgetter("observations")


def _gray(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1e3
