import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.linalg import expm
from scipy.spatial.transform import Rotation

from slam.geometry import hat, quat_to_rot, rot_to_quat, rotation_angle, so3_exp, so3_log, vee, project_to_so3

vec3 = st.lists(st.floats(-3.0, 3.0, allow_nan=False), min_size=3, max_size=3).map(np.array)


def test_hat_is_cross_product():
    w, v = np.array([0.3, -1.2, 2.0]), np.array([1.0, 0.5, -0.25])
    np.testing.assert_allclose(hat(w) @ v, np.cross(w, v))
    np.testing.assert_allclose(vee(hat(w)), w)


@given(vec3)
@settings(max_examples=200, deadline=None)
def test_exp_matches_matrix_exponential(w):
    np.testing.assert_allclose(so3_exp(w), expm(hat(w)), atol=1e-12)


def test_exp_closed_form_about_z():
    a = 0.7
    R = so3_exp(np.array([0.0, 0.0, a]))
    np.testing.assert_allclose(R, [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]], atol=1e-15)


@given(vec3)
@settings(max_examples=200, deadline=None)
def test_log_inverts_exp(w):
    theta = np.linalg.norm(w)
    if theta >= np.pi - 1e-9:  # log returns the equivalent vector with angle in [0, pi]
        w = w / theta * (2 * np.pi - theta) * -1 if theta < 2 * np.pi else w
    R = so3_exp(w)
    np.testing.assert_allclose(so3_exp(so3_log(R)), R, atol=1e-10)


@pytest.mark.parametrize("eps", [0.0, 1e-12, 1e-7, 1e-5, 1e-3])
def test_log_near_pi_and_zero(eps):
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    for angle in (np.pi - eps, eps):
        w = so3_log(so3_exp(angle * axis))
        np.testing.assert_allclose(so3_exp(w), so3_exp(angle * axis), atol=1e-9)
        assert abs(np.linalg.norm(w) - angle) < 1e-8


def test_quaternion_tum_order_against_scipy():
    rng = np.random.default_rng(0)
    for q in Rotation.random(50, random_state=1).as_quat():  # scipy is scalar-last, like TUM
        np.testing.assert_allclose(quat_to_rot(q), Rotation.from_quat(q).as_matrix(), atol=1e-12)
        q2 = rot_to_quat(quat_to_rot(q))
        assert q2[3] >= 0
        np.testing.assert_allclose(q2, q if q[3] >= 0 else -q, atol=1e-12)
    assert rng is not None


def test_quaternion_identity_and_half_turns():
    np.testing.assert_allclose(quat_to_rot([0, 0, 0, 1]), np.eye(3))
    for axis in np.eye(3):
        R = so3_exp(np.pi * axis)
        q = rot_to_quat(R)
        np.testing.assert_allclose(np.abs(q[:3]), axis, atol=1e-12)
        np.testing.assert_allclose(quat_to_rot(q), R, atol=1e-12)


def test_rotation_angle_and_projection():
    R = so3_exp(np.array([0.1, 0.2, -0.3]))
    assert rotation_angle(R) == pytest.approx(np.linalg.norm([0.1, 0.2, -0.3]))
    noisy = R + 1e-3 * np.random.default_rng(2).standard_normal((3, 3))
    P = project_to_so3(noisy)
    np.testing.assert_allclose(P @ P.T, np.eye(3), atol=1e-12)
    assert np.linalg.det(P) == pytest.approx(1.0)
    assert rotation_angle(P.T @ R) < 5e-3
