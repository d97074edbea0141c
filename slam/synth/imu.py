"""IMU synthesis from the analytic trajectory: gyro and accelerometer with white noise and random-walk biases.

Model (body = IMU frame):
``gyro = omega_b + b_g + n_g``, ``accel = R_w_b^T (a_w - g_w) + b_a + n_a``,
``n ~ N(0, (density / sqrt(dt))^2)``, ``b_{k+1} = b_k + N(0, (walk * sqrt(dt))^2)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from slam.records import ImuSamples
from slam.synth.config import SynthConfig
from slam.synth.trajectory import LoopTrajectory


@dataclass(frozen=True)
class ImuNoise:
    """Continuous-time noise parameters, units as in EuRoC's sensor.yaml."""

    gyro_noise_density: float = 1.6968e-4  # [rad / s / sqrt(Hz)]
    gyro_random_walk: float = 1.9393e-5  # [rad / s^2 / sqrt(Hz)]
    accel_noise_density: float = 2.0e-3  # [m / s^2 / sqrt(Hz)]
    accel_random_walk: float = 3.0e-3  # [m / s^3 / sqrt(Hz)]
    gyro_bias_init: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [rad/s]
    accel_bias_init: tuple[float, float, float] = (0.0, 0.0, 0.0)  # [m/s^2]

    @classmethod
    def from_config(cls, cfg: SynthConfig) -> ImuNoise:
        return cls(
            cfg.gyro_noise_density, cfg.gyro_random_walk, cfg.accel_noise_density, cfg.accel_random_walk,
            tuple(cfg.gyro_bias_init), tuple(cfg.accel_bias_init),
        )


@dataclass
class ImuData:
    """Synthesised IMU samples with the true body states and biases at the same times.

    ``t``: (K,) seconds (sequence clock); ``t_ns``: (K,) int64 nanoseconds; ``gyro`` [rad/s] and
    ``accel`` [m/s^2] (K, 3) in the body frame; ``bias_gyro``/``bias_accel`` (K, 3) true biases;
    ``p_w``, ``v_w`` (K, 3) and ``R_w_b`` (K, 3, 3) the true body states.
    """

    t: np.ndarray
    t_ns: np.ndarray
    gyro: np.ndarray
    accel: np.ndarray
    bias_gyro: np.ndarray
    bias_accel: np.ndarray
    p_w: np.ndarray
    v_w: np.ndarray
    R_w_b: np.ndarray

    def samples(self) -> ImuSamples:
        return ImuSamples(self.t.copy(), self.gyro.copy(), self.accel.copy())


def synthesize(
    traj: LoopTrajectory,
    t_rel: np.ndarray,
    noise: ImuNoise | None = None,
    rng: np.random.Generator | None = None,
    gravity: float = 9.81,
    t_offset: float = 0.0,
    t_ns: np.ndarray | None = None,
) -> ImuData:
    """IMU measurements at trajectory times ``t_rel`` [s since start] (uniformly spaced).

    ``noise=None`` gives the clean IMU (exact rates and specific force, zero biases).
    Returned times are ``t_offset + t_rel``.
    """
    t_rel = np.asarray(t_rel, dtype=np.float64)
    s = traj.states(t_rel)
    g_w = np.array([0.0, 0.0, -gravity])
    R = s["R_w_b"]
    omega = s["omega_b"]
    f_b = np.einsum("nji,nj->ni", R, s["a_w"] - g_w)  # R^T (a_w - g_w): specific force
    K = t_rel.shape[0]
    bg = np.zeros((K, 3))
    ba = np.zeros((K, 3))
    gyro, accel = omega.copy(), f_b.copy()
    if noise is not None:
        if rng is None:
            raise ValueError("a noisy IMU needs a random generator")
        dt = float(np.median(np.diff(t_rel))) if K > 1 else 1.0
        sd = np.sqrt(dt)
        # bias random walks: b_k = b_0 + sum of steps before k
        steps_g = rng.standard_normal((K, 3)) * (noise.gyro_random_walk * sd)
        steps_a = rng.standard_normal((K, 3)) * (noise.accel_random_walk * sd)
        steps_g[0] = steps_a[0] = 0.0
        bg = np.asarray(noise.gyro_bias_init) + np.cumsum(steps_g, axis=0)
        ba = np.asarray(noise.accel_bias_init) + np.cumsum(steps_a, axis=0)
        gyro += bg + rng.standard_normal((K, 3)) * (noise.gyro_noise_density / sd)
        accel += ba + rng.standard_normal((K, 3)) * (noise.accel_noise_density / sd)
    if t_ns is None:
        t_ns = np.round((t_offset + t_rel) * 1e9).astype(np.int64)
    return ImuData(t_offset + t_rel, np.asarray(t_ns, dtype=np.int64), gyro, accel, bg, ba, s["p_w"], s["v_w"], R)
