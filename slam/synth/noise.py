"""Sensor noise: Kinect-like depth noise and holes, Gaussian image noise. Deterministic given the generator."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from slam.synth.config import SynthConfig


@dataclass(frozen=True)
class DepthNoise:
    """Parameters of the depth noise model (see :class:`SynthConfig` for units)."""

    sigma_a: float = 0.0012  # [m]
    sigma_b: float = 0.0019  # [1/m]
    sigma_z0: float = 0.4  # [m]
    min_range: float = 0.4  # [m]
    max_range: float = 6.0  # [m]
    edge_threshold: float = 0.05  # relative depth jump [-]
    edge_dropout: float = 0.6  # probability
    edge_width: int = 2  # [px]
    pixel_dropout: float = 0.002  # fraction
    blobs_per_frame: float = 1.5  # Poisson mean
    blob_radius_px: tuple[float, float] = (3.0, 14.0)
    depth_scale: float = 5000.0  # quantisation step is 1 / depth_scale [m]

    @classmethod
    def from_config(cls, cfg: SynthConfig) -> DepthNoise:
        return cls(
            cfg.depth_sigma_a, cfg.depth_sigma_b, cfg.depth_sigma_z0, cfg.depth_min_range, cfg.depth_max_range,
            cfg.depth_edge_threshold, cfg.depth_edge_dropout, int(cfg.depth_edge_width), cfg.depth_pixel_dropout,
            cfg.depth_blobs_per_frame, tuple(cfg.depth_blob_radius_px), cfg.depth_scale,
        )

    def sigma(self, z: np.ndarray) -> np.ndarray:
        """Axial noise std [m] at depth ``z`` [m]: ``a + b (z - z0)^2``."""
        return self.sigma_a + self.sigma_b * (z - self.sigma_z0) ** 2


def depth_edges(depth: np.ndarray, rel_threshold: float) -> np.ndarray:
    """Mask of pixels whose 3x3 neighbourhood spans a depth jump larger than ``rel_threshold * z``.

    Invalid pixels (0) count as a jump to their valid neighbours.
    """
    big = np.where(depth > 0, depth, np.float32(1e4)).astype(np.float32)
    k = np.ones((3, 3), np.uint8)
    zmax = cv2.dilate(big, k)
    zmin = cv2.erode(depth.astype(np.float32), k)
    return (depth > 0) & ((zmax - zmin) > rel_threshold * depth)


def apply_depth_noise(depth: np.ndarray, params: DepthNoise, rng: np.random.Generator) -> np.ndarray:
    """Noisy copy of the z-depth image ``depth`` (H, W) float32 metres, 0 = invalid.

    Steps: axial Gaussian noise ``sigma(z)``; quantisation to ``1 / depth_scale``; holes beyond
    the range limits; random dropout in a band around depth discontinuities; random missing
    pixels; a few missing blobs (ellipses).
    """
    z = depth.astype(np.float32)
    valid = z > 0
    h, w = z.shape
    noisy = z + rng.standard_normal(z.shape, dtype=np.float32) * params.sigma(z).astype(np.float32)
    noisy = np.round(noisy * params.depth_scale) / np.float32(params.depth_scale)
    missing = ~valid | (z < params.min_range) | (z > params.max_range)
    band = depth_edges(z, params.edge_threshold)
    if params.edge_width > 0:
        band = cv2.dilate(band.astype(np.uint8), np.ones((2 * params.edge_width + 1,) * 2, np.uint8)) > 0
    missing |= band & (rng.random(z.shape, dtype=np.float32) < params.edge_dropout)
    missing |= rng.random(z.shape, dtype=np.float32) < params.pixel_dropout
    blobs = np.zeros((h, w), np.uint8)
    for _ in range(int(rng.poisson(params.blobs_per_frame))):
        centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        axes = tuple(int(a) for a in rng.uniform(*params.blob_radius_px, 2))
        cv2.ellipse(blobs, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    missing |= blobs > 0
    noisy[missing] = 0.0
    return np.maximum(noisy, 0.0).astype(np.float32)


def apply_image_noise(rgb: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    """``rgb`` (uint8) plus i.i.d. Gaussian noise of ``std`` grey levels, rounded and clipped."""
    if std <= 0:
        return rgb
    n = rng.standard_normal(rgb.shape, dtype=np.float32) * np.float32(std)
    return np.clip(rgb.astype(np.float32) + n + 0.5, 0, 255).astype(np.uint8)
