"""Records passed between readers, sensors and the SLAM threads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from slam.geometry.camera import PinholeCamera


@dataclass
class ImuSamples:
    """A batch of IMU samples in the IMU (body) frame.

    ``t``: (N,) seconds; ``gyro``: (N, 3) rad/s; ``accel``: (N, 3) m/s^2 specific
    force (what an accelerometer measures: gravity reaction included).
    """

    t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    gyro: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    accel: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))

    def __len__(self) -> int:
        return int(self.t.shape[0])

    def between(self, t0: float, t1: float) -> "ImuSamples":
        """Samples with ``t0 < t <= t1`` (the convention for 'since the previous frame')."""
        i0, i1 = np.searchsorted(self.t, [t0, t1], side="right")
        return ImuSamples(self.t[i0:i1], self.gyro[i0:i1], self.accel[i0:i1])


@dataclass
class StereoRig:
    """Rectified or general stereo pair: the right camera and the pose of the right camera in the left one."""

    right: PinholeCamera
    T_l_r: np.ndarray  # 4x4, right camera -> left camera

    @property
    def baseline(self) -> float:
        return float(np.linalg.norm(self.T_l_r[:3, 3]))


@dataclass
class Frame:
    """One camera frame as delivered by a reader or a live sensor.

    image: H x W x 3 uint8 RGB; depth: H x W float32 metres, 0 = invalid;
    T_w_c_gt: ground-truth camera-to-world pose where the dataset has one.
    """

    index: int
    timestamp: float
    image: np.ndarray
    camera: PinholeCamera
    depth: np.ndarray | None = None
    right: np.ndarray | None = None
    imu: ImuSamples = field(default_factory=ImuSamples)
    T_w_c_gt: np.ndarray | None = None
    # e.g. {"depth_missing"}: the dataset should have depth for this frame but it is absent/unreadable
    flags: set[str] = field(default_factory=set)
    source: str = ""  # image path or device, for messages
