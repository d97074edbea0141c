"""IMU: clean samples integrate back to the trajectory; noise statistics match the configured densities."""

from __future__ import annotations

import numpy as np
import pytest

from slam.geometry import rotation_angle, so3_exp
from slam.synth import SynthSequence, preset


@pytest.fixture(scope="module")
def seq() -> SynthSequence:
    return SynthSequence(preset("loop600"))  # the scene is built lazily: no rendering here


def integrate(imu, k0: int, k1: int, g: float):
    """Integrate gyro/accel from sample k0 to k1 with the true initial state (midpoint on SO(3))."""
    R, p, v = imu.R_w_b[k0].copy(), imu.p_w[k0].copy(), imu.v_w[k0].copy()
    g_w = np.array([0.0, 0.0, -g])
    for k in range(k0, k1):
        dt = imu.t[k + 1] - imu.t[k]
        R1 = R @ so3_exp(0.5 * (imu.gyro[k] + imu.gyro[k + 1]) * dt)
        a0 = R @ imu.accel[k] + g_w
        a1 = R1 @ imu.accel[k + 1] + g_w
        p = p + v * dt + dt * dt / 6.0 * (2.0 * a0 + a1)  # exact for linearly varying acceleration
        v = v + 0.5 * dt * (a0 + a1)
        R = R1
    return R, p, v


def test_clean_imu_reproduces_trajectory(seq):
    imu = seq.imu(clean=True)
    assert np.all(imu.bias_gyro == 0) and np.all(imu.bias_accel == 0)
    k0, k1 = 100, 100 + int(6.0 * seq.cfg.imu_rate_hz)  # 6 s
    R, p, v = integrate(imu, k0, k1, seq.cfg.gravity)
    assert np.linalg.norm(p - imu.p_w[k1]) < 0.02
    assert np.linalg.norm(v - imu.v_w[k1]) < 0.01
    assert np.rad2deg(rotation_angle(R.T @ imu.R_w_b[k1])) < 0.1


def test_imu_at_rest_measures_gravity_reaction(seq):
    """Specific force = R^T (a - g): at t0 its world-frame version minus a_w is +g up."""
    imu = seq.imu(clean=True)
    s = seq.trajectory.state(0.0)
    np.testing.assert_allclose(imu.R_w_b[0] @ imu.accel[0] - s.a_w, [0, 0, seq.cfg.gravity], atol=1e-9)
    np.testing.assert_allclose(imu.gyro[0], s.omega_b, atol=1e-12)


def test_imu_covers_frames(seq):
    imu = seq.imu()
    assert imu.t_ns[0] <= seq.frame_ns[0] and imu.t_ns[-1] >= seq.frame_ns[-1]
    np.testing.assert_array_equal(np.diff(imu.t_ns), 5_000_000)


def test_noise_statistics_match_densities(seq):
    c = seq.cfg
    clean, noisy = seq.imu(clean=True), seq.imu(clean=False)
    dt = 1.0 / c.imu_rate_hz
    n_g = noisy.gyro - clean.gyro - noisy.bias_gyro
    n_a = noisy.accel - clean.accel - noisy.bias_accel
    np.testing.assert_allclose(n_g.std(axis=0), c.gyro_noise_density / np.sqrt(dt), rtol=0.05)
    np.testing.assert_allclose(n_a.std(axis=0), c.accel_noise_density / np.sqrt(dt), rtol=0.05)
    sigma_g = c.gyro_noise_density / np.sqrt(dt)
    np.testing.assert_allclose(n_g.mean(axis=0), 0, atol=4 * sigma_g / np.sqrt(len(n_g)))
    np.testing.assert_allclose(np.diff(noisy.bias_gyro, axis=0).std(), c.gyro_random_walk * np.sqrt(dt), rtol=0.05)
    np.testing.assert_allclose(np.diff(noisy.bias_accel, axis=0).std(), c.accel_random_walk * np.sqrt(dt), rtol=0.05)
    np.testing.assert_allclose(noisy.bias_gyro[0], c.gyro_bias_init)
    np.testing.assert_allclose(noisy.bias_accel[0], c.accel_bias_init)
    # deterministic for the seed
    again = seq.imu(clean=False)
    np.testing.assert_array_equal(again.gyro, noisy.gyro)
