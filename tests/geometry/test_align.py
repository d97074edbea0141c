import numpy as np
import pytest

from slam.geometry import make_pose, so3_exp, transform_points, umeyama, umeyama_transform


@pytest.mark.parametrize("with_scale,scale", [(False, 1.0), (True, 0.37), (True, 4.0)])
def test_umeyama_recovers_known_transform(with_scale, scale):
    rng = np.random.default_rng(1)
    src = rng.uniform(-5, 5, size=(50, 3))
    R = so3_exp(np.array([0.4, -1.1, 2.5]))
    t = np.array([3.0, -2.0, 0.5])
    dst = scale * src @ R.T + t
    s, R_est, t_est = umeyama(src, dst, with_scale=with_scale)
    assert s == pytest.approx(scale, rel=1e-12)
    np.testing.assert_allclose(R_est, R, atol=1e-12)
    np.testing.assert_allclose(t_est, t, atol=1e-10)
    np.testing.assert_allclose(transform_points(umeyama_transform(src, dst, with_scale), src), dst, atol=1e-10)


def test_umeyama_is_least_squares_with_noise():
    rng = np.random.default_rng(2)
    src = rng.uniform(-5, 5, size=(200, 3))
    T = make_pose(so3_exp(np.array([0.1, 0.2, 0.3])), [1, 2, 3])
    dst = transform_points(T, src) + 0.01 * rng.standard_normal(src.shape)
    s, R, t = umeyama(src, dst)
    best = np.sum((dst - (src @ R.T + t)) ** 2)
    # Any small perturbation of the optimum is worse.
    for k in range(20):
        dR = so3_exp(1e-3 * rng.standard_normal(3))
        dt = 1e-3 * rng.standard_normal(3)
        assert np.sum((dst - (src @ (dR @ R).T + t + dt)) ** 2) > best


def test_umeyama_handles_reflection_case_and_rejects_degenerate():
    rng = np.random.default_rng(3)
    src = rng.standard_normal((30, 3))
    dst = src * np.array([1, 1, -1])  # a mirror image: the best rotation must still have det +1
    _, R, _ = umeyama(src, dst)
    assert np.linalg.det(R) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3"):
        umeyama(src[:2], dst[:2])
    with pytest.raises(ValueError, match="degenerate"):
        umeyama(np.ones((5, 3)), np.ones((5, 3)))
