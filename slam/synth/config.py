"""Configuration of the synthetic sequence generator: one dataclass, YAML loading, named presets."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from slam.errors import DataError
from slam.geometry.camera import PinholeCamera


@dataclass
class SynthConfig:
    """Everything that defines a synthetic sequence; the same config and seed give the same bytes."""

    name: str = "synth"  # sequence name written to synth.json
    seed: int = 0  # seeds textures, image/depth noise and IMU noise
    num_frames: int = 600  # camera frames
    fps: float = 30.0  # camera rate [Hz]
    start_time: float = 0.0  # timestamp of frame 0 [s]
    # --- camera (pinhole, no distortion)
    width: int = 640  # image width [px]
    height: int = 480  # image height [px]
    fx: float = 525.0  # focal length [px]
    fy: float = 525.0
    cx: float = 319.5  # principal point [px] (pixel-centre convention)
    cy: float = 239.5
    distortion: tuple[float, ...] = (0.0, 0.0, 0.0, 0.0, 0.0)  # radial-tangential k1 k2 p1 p2 k3 (rendered exactly)
    # --- scene
    texels_per_m: float = 250.0  # texture resolution on every surface [texels / m]
    shape_density: float = 250.0  # random shapes drawn per square metre of surface
    # --- scene variety (all off by default: the fixed 8 x 6 x 3 m room, one texture family, fixed lights)
    room_variety: bool = False  # per-seed room size, corner blocks (L shapes), partitions, boxes/tables/shelves
    texture_variety: bool = False  # per-quad texture family (shapes, stripes, bricks, tiles, noise, blobs)
    distractor: bool = False  # two identical textured panels on opposite walls (repeated-texture trap)
    layout_keepout: tuple[float, float] = (1.7, 1.1)  # objects stay min_clearance_m + 0.2 outside this ellipse [m]
    exposure_gain: float = 1.0  # global image gain of the whole sequence (exposure) [-]
    exposure_jitter: float = 0.0  # per-frame gain factor exp(U(-j, j)) on top [-]
    light_dir_strength: float = 0.0  # directional light: pixel gain 1 + s (n . l) [-]; 0 = off
    light_dir_deg: tuple[float, float] = (45.0, 30.0)  # its azimuth (from +x to +y) and elevation [deg]
    # --- trajectory (ellipse around the room centre, one loop over the sequence)
    loop_period_s: float | None = None  # duration of one loop [s]; None = the sequence duration num_frames / fps
    radius_x: float = 1.7  # ellipse semi-axis along world x [m]
    radius_y: float = 1.1  # ellipse semi-axis along world y [m]
    height_m: float = 1.4  # mean body height above the floor [m]
    height_amp: float = 0.15  # vertical sinusoid amplitude [m]
    speed_mod: float = 0.15  # relative along-track speed modulation (0 = constant speed)
    wobble_amp: float = 0.05  # amplitude of fast small oscillations (x, y; z at half) for IMU excitation [m]
    yaw_offset: float = 0.0  # camera heading relative to the outward radial direction [rad]
    yaw_amp: float = 0.35  # heading oscillation amplitude [rad]
    pitch_mean: float = 0.12  # mean downward tilt [rad] (positive looks down)
    pitch_amp: float = 0.08  # tilt oscillation amplitude [rad]
    roll_amp: float = 0.05  # roll oscillation amplitude [rad]
    min_clearance_m: float = 0.6  # camera/body centres keep at least this distance to every surface [m]
    # --- outputs and noise
    noise: bool = True  # master switch: False = exact depth, clean images, perfect IMU (no noise, no bias)
    image_noise_std: float = 2.0  # Gaussian image noise [8-bit grey levels] (when noise is on)
    depth: bool = True  # render and write depth
    depth_scale: float = 5000.0  # PNG depth units per metre (TUM convention)
    depth_max_range: float = 6.0  # depth beyond this is invalid (0) when noise is on [m]
    depth_min_range: float = 0.4  # depth below this is invalid (0) when noise is on [m]
    depth_sigma_a: float = 0.0012  # axial noise sigma(z) = a + b (z - z0)^2 [m]
    depth_sigma_b: float = 0.0019  # [1/m]
    depth_sigma_z0: float = 0.4  # [m]
    depth_edge_threshold: float = 0.05  # depth jump that marks a discontinuity, relative to z [-]
    depth_edge_dropout: float = 0.6  # probability that a pixel near a discontinuity is missing
    depth_edge_width: int = 2  # half width of the dropout band around discontinuities [px]
    depth_pixel_dropout: float = 0.002  # fraction of random missing pixels
    depth_blobs_per_frame: float = 1.5  # mean number of missing blobs per frame (Poisson)
    depth_blob_radius_px: tuple[float, float] = (3.0, 14.0)  # blob radius range [px]
    stereo: bool = True  # render the right image of a rectified stereo pair
    stereo_baseline: float = 0.1  # right camera = left moved +baseline along its x axis [m]
    imu: bool = True  # synthesise IMU samples
    imu_rate_hz: float = 200.0  # IMU rate [Hz]
    gyro_noise_density: float = 1.6968e-4  # [rad / s / sqrt(Hz)]
    gyro_random_walk: float = 1.9393e-5  # [rad / s^2 / sqrt(Hz)]
    accel_noise_density: float = 2.0e-3  # [m / s^2 / sqrt(Hz)]
    accel_random_walk: float = 3.0e-3  # [m / s^3 / sqrt(Hz)]
    gyro_bias_init: tuple[float, float, float] = (0.002, -0.0015, 0.001)  # true gyro bias at t0 [rad/s]
    accel_bias_init: tuple[float, float, float] = (0.04, -0.03, 0.05)  # true accel bias at t0 [m/s^2]
    gravity: float = 9.81  # magnitude of g_w = (0, 0, -gravity) [m/s^2]
    # --- camera mounting on the body (IMU) frame: body x forward, y left, z up
    T_b_c_translation: tuple[float, float, float] = (0.06, -0.02, 0.03)  # camera centre in the body frame [m]
    T_b_c_rotation_deg: tuple[float, float, float] = (1.5, -2.0, 1.0)  # small extra rotation (rx, ry, rz) [deg]
    png_compression: int = 1  # cv2 PNG compression level 0..9 (1 = fast)
    write_threads: int = 0  # workers rendering and writing frames (0 = one per core; same files with any)

    # ------------------------------------------------------------------ helpers
    def camera(self) -> PinholeCamera:
        """The left/RGB camera."""
        return PinholeCamera(self.width, self.height, self.fx, self.fy, self.cx, self.cy, tuple(self.distortion))

    @property
    def duration(self) -> float:
        """Sequence length [s] (num_frames / fps, the default loop period)."""
        return self.num_frames / self.fps

    @property
    def loop_period(self) -> float:
        return self.duration if self.loop_period_s is None else float(self.loop_period_s)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], base: SynthConfig | None = None, source: str | Path | None = None
    ) -> SynthConfig:
        """A config from ``d`` on top of ``base`` (defaults if None); unknown keys are an error."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - set(fields))
        if unknown:
            raise DataError(source, f"unknown synth config keys: {', '.join(unknown)}")
        cfg = dataclasses.replace(base) if base is not None else cls()
        for k, v in d.items():
            default = getattr(cls(), k)
            if isinstance(default, tuple) and v is not None:
                v = tuple(float(x) for x in v)
            setattr(cfg, k, v)
        cfg.validate(source)
        return cfg

    @classmethod
    def from_yaml(cls, path: str | Path, base: SynthConfig | None = None) -> SynthConfig:
        import yaml

        path = Path(path)
        try:
            d = yaml.safe_load(path.read_text()) or {}
        except OSError as e:
            raise DataError(path, f"cannot read config: {e.strerror}") from None
        except yaml.YAMLError as e:
            raise DataError(path, f"not valid YAML: {e}") from None
        if not isinstance(d, dict):
            raise DataError(path, "synth config must be a YAML mapping")
        return cls.from_dict(d, base=base, source=path)

    def validate(self, source: str | Path | None = None) -> None:
        if self.num_frames < 1 or self.fps <= 0 or self.imu_rate_hz <= 0:
            raise DataError(source, "num_frames, fps and imu_rate_hz must be positive")
        if self.texels_per_m <= 0 or self.depth_scale <= 0:
            raise DataError(source, "texels_per_m and depth_scale must be positive")
        if self.start_time < 0:
            raise DataError(source, "start_time must be >= 0")
        if self.stereo and self.stereo_baseline <= 0:
            raise DataError(source, "stereo_baseline must be positive")
        if self.exposure_gain <= 0 or self.exposure_jitter < 0 or not 0 <= self.light_dir_strength <= 1:
            raise DataError(source, "exposure_gain must be > 0, exposure_jitter >= 0, light_dir_strength in [0, 1]")
        if len(self.layout_keepout) != 2 or min(self.layout_keepout) <= 0:
            raise DataError(source, "layout_keepout must be two positive semi-axes [m]")


# Named presets: overrides of the defaults. Each fixes its loop period, so changing num_frames
# (``slam-synth --frames N``) renders a part of the loop (or more than one) at the same speed;
# the loop closes exactly when num_frames = loop_period_s * fps.
PRESETS: dict[str, dict[str, Any]] = {
    # everything on, one 10 s loop
    "demo": {"name": "demo", "num_frames": 300, "loop_period_s": 10.0},
    # one 20 s loop
    "loop600": {"name": "loop600", "num_frames": 600, "loop_period_s": 20.0},
    # loop600 with a repeated-texture distractor: the same poster on two opposite walls
    "loop600_distractor": {"name": "loop600_distractor", "num_frames": 600, "loop_period_s": 20.0,
                           "distractor": True},
    # 600 frames along half of the loop600 ellipse (40 s period): the camera never comes back to a place
    "noloop600": {"name": "noloop600", "num_frames": 600, "loop_period_s": 40.0},
    # for tests: small, quick, 4 s loop at 10 Hz
    "tiny": {
        "name": "tiny",
        "num_frames": 40,
        "loop_period_s": 4.0,
        "fps": 10.0,
        "width": 320,
        "height": 240,
        "fx": 262.5,
        "fy": 262.5,
        "cx": 159.5,
        "cy": 119.5,
        "texels_per_m": 100.0,
        "wobble_amp": 0.01,
        "yaw_amp": 0.2,
        "radius_x": 1.3,
        "radius_y": 0.9,
    },
}


def preset(name: str) -> SynthConfig:
    """The named preset (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return SynthConfig.from_dict(PRESETS[name])
