import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm

from slam.geometry import (
    hat,
    inv_pose,
    make_pose,
    normalize_pose,
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


def test_normalize_pose_projects_the_rotation_and_keeps_translation():
    T = make_pose(so3_exp(np.array([0.3, -0.4, 1.0])), [1.0, 2.0, 3.0])
    np.testing.assert_allclose(normalize_pose(T), T, atol=1e-14)  # already in SE(3): unchanged
    # A symmetric stretch S = I + eps*D of a rotation R projects back to R exactly (polar decomposition).
    D = np.diag([1.0, -0.5, 0.25])
    bad = T.copy()
    bad[:3, :3] = T[:3, :3] @ (np.eye(3) + 1e-3 * D)
    out = normalize_pose(bad)
    np.testing.assert_allclose(out[:3, :3], T[:3, :3], atol=1e-14)
    np.testing.assert_array_equal(out[:3, 3], T[:3, 3])
    assert abs(np.linalg.det(out[:3, :3]) - 1.0) < 1e-14


def test_constant_velocity_chain_stays_rigid_when_normalised():
    """T_k+1 = (T_k T_k-1^-1) T_k with a transpose inverse doubles a rotation's drift every step."""
    V = make_pose(so3_exp(np.array([0.01, -0.02, 0.03])), [0.05, 0.0, 0.01])
    prev, cur = np.eye(4), V.copy()
    cur[:3, :3] *= 1.0 + 1e-12  # one rounding-sized error
    raw_prev, raw_cur = prev.copy(), cur.copy()
    for _ in range(25):
        raw_prev, raw_cur = raw_cur, (raw_cur @ inv_pose(raw_prev)) @ raw_cur
        prev, cur = cur, normalize_pose(normalize_pose(cur @ inv_pose(prev)) @ cur)
    assert abs(np.linalg.det(raw_cur[:3, :3]) - 1.0) > 1e-3  # the failure this guards against
    assert abs(np.linalg.det(cur[:3, :3]) - 1.0) < 1e-12
