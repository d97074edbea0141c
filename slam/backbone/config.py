"""Configuration of the SLAM system: one small dataclass per component, loadable from YAML.

``SlamConfig.from_yaml(path)`` reads a file such as::

    features: {n_features: 1200}
    tracking: {kf_max_frames: 20}

and ``SlamConfig.override(["tracking.kf_max_frames=10", ...])`` applies
command-line overrides. Unknown keys are errors, so a typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from slam.errors import DataError
from slam.backbone.frontend.features import FeatureConfig


@dataclass
class TrackingConfig:
    min_init_features: int = 500  # stereo/RGB-D: keypoints with depth needed to start a map
    close_depth_factor: float = 40.0  # "close" points: depth < factor * baseline (ORB-SLAM's ThDepth)
    velocity_gain: float = 1.0  # motion prediction: 1 = constant velocity (ORB-SLAM), 0 = the last pose
    motion_radius_px: float = 15.0  # search window of the motion-model projection (x scale factor)
    motion_max_hamming: int = 100  # descriptor distance accepted when matching the last frame
    local_radius_px: float = 3.0  # search window when projecting the local map
    min_matches_motion: int = 20  # below this the motion-model search is retried wider
    motion_opt_rounds: int = 4  # outlier rounds of the pose optimisation on the last frame's matches (then the local map's: 4)
    min_inliers: int = 30  # inliers after the local-map optimisation to count as tracked
    max_local_keyframes: int = 40  # covisible keyframes whose points form the local map
    kf_max_frames: int = 30  # a keyframe at least every this many frames (about 1 s)
    kf_min_frames: int = 0  # ... and never more often than this
    kf_tracked_ratio: float = 0.5  # insert when tracked points fall below this share of the reference KF's (ORB-SLAM: 0.75)
    kf_tracked_ratio_mono: float = 0.9
    kf_ref_min_obs: int = 1  # reference keyframe points counted for that share: those seen by this many keyframes
    new_points_min: int = 100  # stereo/RGB-D keyframes add at least this many close points from depth
    depth_noise_k: float = 0.003  # RGB-D depth noise sigma = k * z^2 metres (Kinect v1 ~0.0016); weights the depth term
    lost_frames_reset: int = 5  # relocalization off: after this many lost frames a new map is started
    relocalization: bool = True  # while lost, relocalise in the map each frame (ORB-SLAM) before starting a new one
    reloc_max_frames: int = 30  # a new map after this many frames with keypoints on which relocalisation failed
    reloc_min_inliers: int = 50  # inliers that accept a relocalised pose (ORB-SLAM: 50)
    reloc_candidates: int = 10  # keyframes tried, most similar place descriptors first
    reloc_match_ratio: float = 0.75  # frame-to-candidate descriptor matching: nearest / second-nearest ratio
    reloc_pnp_threshold_px: float = 4.0  # PnP RANSAC (USAC MAGSAC): largest reprojection error of an inlier
    mono_init_min_matches: int = 100
    mono_init_min_parallax_deg: float = 1.0
    mono_init_min_points: int = 50
    min_inliers_motion: int = 10  # inliers after optimising on the last frame's / reference keyframe's matches
    ref_min_points: int = 10  # reference keyframe: map points it needs for descriptor matching
    ref_match_ratio: float = 0.7  # ... nearest / second-nearest descriptor distance ratio
    ref_min_matches: int = 15  # ... matches needed before optimising
    local_radius_frontal: float = 2.5  # local-map search window factor when the point is seen head-on (ORB-SLAM)
    local_radius_oblique: float = 4.0  # ... otherwise (view cosine <= 0.998)
    local_covisibles_per_kf: int = 10  # best covisible keyframes of each local keyframe added to the local map
    kf_weak_tracking_ratio: float = 0.25  # stereo/RGB-D keyframe when tracked < this share of the reference KF's
    kf_min_tracked: int = 15  # a keyframe needs more tracked points than this
    kf_close_tracked_max: int = 100  # stereo/RGB-D: "needs close points" when fewer close points are tracked ...
    kf_close_untracked_min: int = 70  # ... and more than this many close keypoints are untracked (ORB-SLAM)


@dataclass
class MappingConfig:
    covisible_triangulation: int = 10  # neighbours used to triangulate new points (stereo/RGB-D)
    covisible_triangulation_mono: int = 20  # ... monocular
    covisible_fuse: int = 10  # neighbours whose points are fused with a new keyframe's (stereo/RGB-D)
    covisible_fuse_mono: int = 20  # ... monocular
    fuse_radius_px: float = 3.0  # search window of fusion (x scale factor of the point's level)
    fuse_max_hamming: int = 50  # descriptor distance accepted by fusion
    min_baseline_depth_ratio_mono: float = 0.01  # monocular triangulation: baseline / median depth at least this
    max_parallax_cos: float = 0.9998  # new points need rays less parallel than this (about 1.1 deg)
    scale_consistency_factor: float = 1.5  # new points: distance ratio within this x the level ratio (x scale factor)
    cull_min_obs: int = 3  # recent points seen by fewer keyframes after 2 keyframes are culled (stereo/RGB-D)
    cull_min_obs_mono: int = 2  # ... monocular
    cull_keyframe_min_obs: int = 3  # keyframe culling: a point is redundant when this many others see it
    local_ba_covisible: int = 8  # keyframes optimised by local BA besides the new one (bounded window)
    local_ba_fixed_max: int = 10  # fixed border keyframes in local BA
    local_ba_backend: str = "native"  # "native" (compiled Schur-complement LM, slam.backbone.optim.ba_kernel) or "g2o": same optimum
    local_ba_iterations: tuple[int, int] = (5, 5)  # robust, then without outliers (ORB-SLAM2: 5 + 10, ORB-SLAM3: 10 in one phase)
    cull_found_ratio: float = 0.25  # recent points found in fewer of the frames they should be seen in are culled
    cull_redundant_ratio: float = 0.9  # a keyframe whose points are this redundant is culled
    max_queue: int = 3  # tracking waits to insert keyframes (never blocks) when the queue is this long


@dataclass
class LoopConfig:
    enabled: bool = True  # the loop-closing thread (place recognition, verification, correction, global BA)
    # monocular maps (Sim3 loops) too; false turns them off alone. Mono, median of 3 (benchmarks/results/backbone.md):
    # synthetic demo ATE 0.61 cm with, 1.53 cm without; loop600_s0 0.64 cm with (0.61-0.74), 0.63 cm without
    # (0.45-0.75); KITTI 07 clip 0.31 m (no loop found)
    monocular: bool = True
    min_keyframes_between: int = 10  # no loop within this many keyframes of the map's start or the last loop (ORB-SLAM)
    candidates: int = 10  # best database answers considered per keyframe
    candidate_ratio: float = 0.75  # ... kept when scoring at least this share of the best
    min_consistency: int = 3  # a candidate group must come back for this many more keyframes (ORB-SLAM: 3)
    match_ratio: float = 0.75  # verification: descriptor matching, nearest / second nearest distance
    match_max_hamming: int = 50  # ... distance accepted (ORB-SLAM's TH_LOW)
    min_matches: int = 20  # descriptor matches needed to try a candidate's transform
    min_inliers: int = 20  # RANSAC + refinement inliers to accept the transform (ORB-SLAM: 20)
    min_projected_matches: int = 40  # guided matches of the loop group's points to accept the loop (ORB-SLAM: 40)
    projection_radius_px: float = 10.0  # guided matching search window (x scale factor of the level; ORB-SLAM: 10)
    # monocular verification (see verification.py): the similarity's rotation held to the uncorrected pose's by a
    # prior of this standard deviation (0: none), and the guided matching also started from the uncorrected pose.
    # loop600_s0 mono, 3 runs: verified rotation 8.5-10 deg off the truth -> 4.2-4.4, ATE 1.2-1.5 cm -> 0.55-0.62 cm
    mono_rotation_prior_deg: float = 0.3
    mono_odometry_hypothesis: bool = True
    refine_group: int = 10  # stereo/RGB-D: covisibles of the current keyframe whose matches refine the loop pose
    fuse_radius_px: float = 4.0  # loop fusion search window (ORB-SLAM: 4)
    # a verified correction turning the keyframe more than this is taken as false (monocular too: the poster on
    # two walls of loop600_distractor closed a 175 deg loop in a mono map and ATE went to 113 cm)
    max_rotation_deg: float = 30.0
    max_translation_m: float = 1.0  # stereo/RGB-D: ... and one that moves the camera more than this
    essential_graph_iterations: int = 20  # g2o Levenberg iterations (ORB-SLAM: 20)
    thread_nice: int = 10  # the loop-closing and global-BA threads run this much nicer (Linux): busy cores serve tracking first
    global_ba: bool = True  # a global bundle adjustment after each loop, in its own thread
    global_ba_iterations: tuple[int, int] = (5, 5)  # robust, then without outliers (ORB-SLAM: 10 robust)
    # monocular maps: the Sim3 correction leaves the map further from the optimum (a loop transform from one
    # place's few matches is a few degrees off: rotation and sideways shift look alike), so the global BA needs
    # more iterations to converge. Measured on the synthetic demo: ATE 3-4 cm after (5, 5), 0.6 cm after (10, 20)
    global_ba_iterations_mono: tuple[int, int] = (10, 20)


_CHOICES = {("MappingConfig", "local_ba_backend"): ("native", "g2o")}  # settings with a fixed set of values


@dataclass
class SlamConfig:
    features: FeatureConfig = field(default_factory=FeatureConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    loop: LoopConfig = field(default_factory=LoopConfig)

    @classmethod
    def from_dict(cls, d: dict, source: str | Path | None = None) -> "SlamConfig":
        cfg = cls()
        for section, values in (d or {}).items():
            if not hasattr(cfg, section) or not isinstance(values, dict):
                raise DataError(source, f"unknown config section {section!r} (have: features, tracking, mapping, loop)")
            sub = getattr(cfg, section)
            for key, value in values.items():
                _set(sub, key, value, source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path) -> "SlamConfig":
        try:
            d = yaml.safe_load(Path(path).read_text())
        except OSError as e:
            raise DataError(path, f"cannot read config: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise DataError(path, f"not valid YAML: {e}") from None
        return cls.from_dict(d, source=path)

    def override(self, assignments: list[str]) -> "SlamConfig":
        """Apply ``section.key=value`` strings (values parsed as YAML scalars)."""
        for a in assignments:
            if "=" not in a or "." not in a.split("=", 1)[0]:
                raise DataError(None, f"override {a!r} is not of the form section.key=value")
            path, value = a.split("=", 1)
            section, key = path.split(".", 1)
            if not hasattr(self, section):
                raise DataError(None, f"unknown config section {section!r} in {a!r}")
            _set(getattr(self, section), key, yaml.safe_load(value), None)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _set(obj: object, key: str, value: object, source: str | Path | None) -> None:
    names = {f.name: f for f in dataclasses.fields(obj)}
    if key not in names:
        close = difflib.get_close_matches(key, names, n=3, cutoff=0.6)
        valid = close + sorted(set(names) - set(close))  # the closest first, then the rest
        hint = f"did you mean {close[0]}? " if close else ""
        raise DataError(source, f"unknown setting {type(obj).__name__}.{key}; {hint}valid keys: {', '.join(valid)}")
    current = getattr(obj, key)
    if isinstance(current, tuple):
        value = tuple(value)
    elif isinstance(current, bool):
        value = bool(value)
    elif isinstance(current, (int, float)) and not isinstance(value, (int, float)):
        raise DataError(source, f"{type(obj).__name__}.{key} must be a number, got {value!r}")
    elif isinstance(current, float):
        value = float(value)
    choices = _CHOICES.get((type(obj).__name__, key))
    if choices is not None and value not in choices:
        raise DataError(source, f"{type(obj).__name__}.{key} must be one of {', '.join(choices)}, got {value!r}")
    setattr(obj, key, value)
