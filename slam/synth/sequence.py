"""A synthetic sequence in memory: timestamps, ground-truth poses, rendered (noisy) frames and IMU.

Clocks: frame ``i`` is at ``start_time + i / fps`` rounded to the microsecond; IMU sample ``k``
at ``start_time + k / rate_hz`` rounded to the nanosecond. Trajectory times are seconds since
``start_time``. Random streams are keyed by ``(seed, stream, index)`` so any frame can be
rendered alone, in any order or thread, with the same result.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from slam.geometry.se3 import make_pose
from slam.records import Frame, ImuSamples
from slam.synth.config import SynthConfig
from slam.synth.imu import ImuData, ImuNoise, synthesize
from slam.synth.noise import DepthNoise, apply_depth_noise, apply_image_noise
from slam.synth.render import SyntheticScene
from slam.synth.scene import DEFAULT_LAYOUT, RoomLayout, clearance, make_layout
from slam.synth.trajectory import LoopTrajectory

log = logging.getLogger(__name__)

_STREAM_FRAME = 2
_STREAM_IMU = 3
_STREAM_EXPOSURE = 4


def scene_layout(cfg: SynthConfig) -> RoomLayout:
    """The room of ``cfg``: per seed with ``room_variety`` and/or ``distractor``, else the default room."""
    if not cfg.room_variety and not cfg.distractor:
        return DEFAULT_LAYOUT
    return make_layout(cfg.seed, variety=cfg.room_variety, distractor=cfg.distractor,
                       keepout=tuple(cfg.layout_keepout), margin=cfg.min_clearance_m + 0.2)


def light_direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit world vector towards a light at ``azimuth_deg`` (from +x towards +y) and ``elevation_deg`` (up)."""
    az, el = np.radians(azimuth_deg), np.radians(elevation_deg)
    return np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])


@dataclass
class SynthFrame:
    """One rendered frame: RGB (H, W, 3) uint8, z-depth (H, W) float32 m (0 = invalid), right RGB."""

    index: int
    t_us: int  # timestamp [integer microseconds]
    rgb: np.ndarray
    depth: np.ndarray | None
    right: np.ndarray | None
    T_w_c: np.ndarray  # (4, 4) ground-truth left camera pose

    @property
    def t(self) -> float:
        return self.t_us / 1e6

    @property
    def t_ns(self) -> int:
        return self.t_us * 1000


def apply_gain(rgb: np.ndarray, gain: float) -> np.ndarray:
    """``rgb`` (uint8) times ``gain``, rounded and clipped to 0..255 (a global exposure change)."""
    return np.clip(rgb.astype(np.float32) * np.float32(gain) + 0.5, 0, 255).astype(np.uint8)


class SynthSequence:
    """Ground truth and rendering of the sequence described by ``cfg`` (the scene is built on demand)."""

    def __init__(self, cfg: SynthConfig, scene: SyntheticScene | None = None):
        cfg.validate()
        self.cfg = cfg
        self.camera = cfg.camera()
        self.trajectory = LoopTrajectory(cfg)
        self.T_b_c = self.trajectory.T_b_c
        self.T_l_r = make_pose(np.eye(3), [cfg.stereo_baseline, 0.0, 0.0])  # right camera in the left one
        self._scene = scene
        self.start_us = round(cfg.start_time * 1e6)
        offs = np.array([round(i * 1e6 / cfg.fps) for i in range(cfg.num_frames)], dtype=np.int64)
        self.frame_us = self.start_us + offs
        self.frame_ns = self.frame_us * 1000
        self.frame_t = self.frame_us / 1e6  # [s]
        self.frame_t_rel = offs / 1e6  # [s since start]
        self.T_w_c = self.trajectory.poses_w_c(self.frame_t_rel)
        # IMU clock: covers [first frame, last frame]
        n_imu = math.ceil(self.frame_t_rel[-1] * cfg.imu_rate_hz - 1e-9) + 1
        imu_offs = np.array([round(k * 1e9 / cfg.imu_rate_hz) for k in range(n_imu)], dtype=np.int64)
        self.imu_ns = self.start_us * 1000 + imu_offs
        self.imu_t_rel = imu_offs / 1e9

    # ---------------------------------------------------------------- pieces
    @property
    def scene(self) -> SyntheticScene:
        if self._scene is None:
            c = self.cfg
            layout = scene_layout(c)
            self._scene = SyntheticScene(c.seed, c.texels_per_m, c.shape_density,
                                         layout=None if layout is DEFAULT_LAYOUT else layout,
                                         texture_families=c.texture_variety)
        return self._scene

    @property
    def layout(self) -> RoomLayout:
        """The room the scene was built from (the scene's own when one was passed in)."""
        lay = getattr(self._scene, "layout", None) if self._scene is not None else None
        return lay if lay is not None else scene_layout(self.cfg)

    def exposure(self, i: int) -> float:
        """Global gain of frame ``i``: ``exposure_gain`` times a per-frame log-uniform factor in
        ``exp(+-exposure_jitter)`` (seeded per frame)."""
        c = self.cfg
        gain = float(c.exposure_gain)
        if c.exposure_jitter > 0.0:
            rng = np.random.default_rng([int(c.seed), _STREAM_EXPOSURE, int(i)])
            gain *= float(np.exp(rng.uniform(-c.exposure_jitter, c.exposure_jitter)))
        return gain

    def __len__(self) -> int:
        return self.cfg.num_frames

    def min_clearance(self) -> float:
        """Smallest distance [m] from the camera/body centres to any surface over the IMU-rate trajectory."""
        T_w_b = self.trajectory.poses_w_b(self.imu_t_rel)
        T_w_c = T_w_b @ self.T_b_c
        pts = [T_w_b[:, :3, 3], T_w_c[:, :3, 3]]
        if self.cfg.stereo:
            pts.append((T_w_c @ self.T_l_r)[:, :3, 3])
        return float(clearance(np.concatenate(pts), self.layout).min())

    def motion_summary(self) -> dict[str, float]:
        """Peak body speed [m/s], angular rate [deg/s] and acceleration [m/s^2], and per-frame motion."""
        st = self.trajectory.states(self.imu_t_rel)
        speed = float(np.linalg.norm(st["v_w"], axis=1).max())
        rate = float(np.rad2deg(np.linalg.norm(st["omega_b"], axis=1).max()))
        return {"max_speed_mps": speed, "max_rate_dps": rate,
                "max_accel_mps2": float(np.linalg.norm(st["a_w"], axis=1).max()),
                "max_step_m": speed / self.cfg.fps, "max_turn_deg": rate / self.cfg.fps}

    def render_frame(self, i: int, with_depth: bool | None = None, with_right: bool | None = None) -> SynthFrame:
        """Render frame ``i`` with the configured noise (depth/right as configured unless overridden)."""
        cfg = self.cfg
        with_depth = cfg.depth if with_depth is None else with_depth
        with_right = cfg.stereo if with_right is None else with_right
        T = self.T_w_c[i]
        light = {}
        if cfg.light_dir_strength > 0.0:
            light = {"light_dir_w": light_direction(*cfg.light_dir_deg), "light_strength": cfg.light_dir_strength}
        rgb, depth = self.scene.render(T, self.camera, with_depth=with_depth, **light)
        right = self.scene.render(T @ self.T_l_r, self.camera, with_depth=False, **light)[0] if with_right else None
        gain = self.exposure(i)
        if gain != 1.0:
            rgb = apply_gain(rgb, gain)
            right = apply_gain(right, gain) if right is not None else None
        if cfg.noise:
            rng = np.random.default_rng([int(cfg.seed), _STREAM_FRAME, int(i)])
            rgb = apply_image_noise(rgb, cfg.image_noise_std, rng)
            if right is not None:
                right = apply_image_noise(right, cfg.image_noise_std, rng)
            if depth is not None:
                depth = apply_depth_noise(depth, DepthNoise.from_config(cfg), rng)
        return SynthFrame(i, int(self.frame_us[i]), rgb, depth, right, T.copy())

    def imu(self, clean: bool | None = None) -> ImuData:
        """IMU samples over the sequence (noisy with biases if ``cfg.noise``, unless ``clean``)."""
        clean = (not self.cfg.noise) if clean is None else clean
        noise = None if clean else ImuNoise.from_config(self.cfg)
        rng = np.random.default_rng([int(self.cfg.seed), _STREAM_IMU])
        return synthesize(self.trajectory, self.imu_t_rel, noise, rng, self.cfg.gravity,
                          t_offset=self.start_us / 1e6, t_ns=self.imu_ns)

    def body_states_at_imu_rate(self) -> ImuData:
        """True body states at the IMU clock (zero biases), e.g. for ground truth when the IMU is off."""
        return self.imu(clean=True)

    def metadata(self) -> dict:
        """Contents of ``synth.json``."""
        c = self.cfg
        imu = None
        if c.imu:
            imu = {"rate_hz": c.imu_rate_hz, "gyro_noise_density": c.gyro_noise_density,
                   "gyro_random_walk": c.gyro_random_walk, "accel_noise_density": c.accel_noise_density,
                   "accel_random_walk": c.accel_random_walk}
        return {
            "format": "slam-synth", "version": 1, "name": c.name, "seed": c.seed, "num_frames": c.num_frames,
            "fps": c.fps, "depth_scale": c.depth_scale,
            "stereo_baseline_m": c.stereo_baseline if c.stereo else None,
            "T_b_c": self.T_b_c.tolist(), "gravity_w": [0.0, 0.0, -c.gravity], "imu": imu,
            "config": c.to_dict(),
        }

    def frames(self) -> Iterator[Frame]:
        """The sequence as reader-style :class:`slam.records.Frame` records (IMU since the previous frame)."""
        imu = self.imu().samples() if self.cfg.imu else None
        prev = -np.inf
        for i in range(len(self)):
            f = self.render_frame(i)
            batch = imu.between(prev, f.t) if imu is not None else ImuSamples()
            prev = f.t
            yield Frame(index=i, timestamp=f.t, image=f.rgb, camera=self.camera, depth=f.depth, right=f.right,
                        imu=batch, T_w_c_gt=f.T_w_c, source=f"synth:{self.cfg.name}:{i}")
