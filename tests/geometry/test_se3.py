import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

from slam.geometry import (
    hat,
    inv_pose,
    make_pose,
    se3_exp,
    se3_log,
    sim3_exp,
    sim3_inverse,
    sim3_log,
    sim3_scale,
    so3_exp,
    transform_points,
)

vec = lambda n, lo=-2.0, hi=2.0: st.lists(st.floats(lo, hi, allow_nan=False), min_size=n, max_size=n).map(np.array)


def se3_generator(xi):
    G = np.zeros((4, 4))
    G[:3, :3] = hat(xi[3:])
    G[:3, 3] = xi[:3]
    return G


def sim3_generator(zeta):
    G = se3_generator(zeta[:6])
    G[:3, :3] += zeta[6] * np.eye(3)
    return G


@given(vec(6))
@settings(max_examples=150, deadline=None)
def test_se3_exp_matches_expm_and_log_inverts(xi):
    T = se3_exp(xi)
    np.testing.assert_allclose(T, expm(se3_generator(xi)), atol=1e-10)
    if np.linalg.norm(xi[3:]) < np.pi - 1e-6:
        np.testing.assert_allclose(se3_log(T), xi, atol=1e-9)


@given(vec(6), st.floats(-1.5, 1.5))
@settings(max_examples=150, deadline=None)
def test_sim3_exp_matches_expm_and_log_inverts(xi, sigma):
    zeta = np.concatenate([xi, [sigma]])
    S = sim3_exp(zeta)
    np.testing.assert_allclose(S, expm(sim3_generator(zeta)), atol=1e-9)
    assert sim3_scale(S) == pytest.approx(np.exp(sigma))
    if np.linalg.norm(xi[3:]) < np.pi - 1e-6:
        np.testing.assert_allclose(sim3_log(S), zeta, atol=1e-8)


@pytest.mark.parametrize("theta,sigma", [(0.0, 0.0), (1e-9, 0.0), (0.0, 1e-9), (1e-7, 1e-7), (1e-6, 0.3), (0.5, 1e-13)])
def test_sim3_exp_small_angle_and_scale_series(theta, sigma):
    zeta = np.array([0.3, -0.2, 0.5, theta, 0.0, 0.0, sigma])
    np.testing.assert_allclose(sim3_exp(zeta), expm(sim3_generator(zeta)), atol=1e-12)


def test_inverse_and_transform_points():
    rng = np.random.default_rng(0)
    T = make_pose(so3_exp(np.array([0.3, -0.4, 1.0])), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(inv_pose(T) @ T, np.eye(4), atol=1e-14)
    stack = np.stack([T, np.linalg.inv(T)])
    np.testing.assert_allclose(inv_pose(stack), np.linalg.inv(stack), atol=1e-12)
    P = rng.standard_normal((10, 3))
    np.testing.assert_allclose(transform_points(inv_pose(T), transform_points(T, P)), P, atol=1e-12)
    S = make_pose(so3_exp(np.array([0.1, 0.2, 0.3])), [1, -1, 2], scale=2.5)
    np.testing.assert_allclose(sim3_inverse(S) @ S, np.eye(4), atol=1e-12)
