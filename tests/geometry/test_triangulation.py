import numpy as np

from slam.geometry import inv_pose, make_pose, parallax_deg, reprojection_error, so3_exp, transform_points, triangulate_dlt


def test_triangulation_recovers_points_exactly():
    rng = np.random.default_rng(0)
    X = rng.uniform([-2, -2, 3], [2, 2, 8], size=(100, 3))
    T_w_c1 = np.eye(4)
    T_w_c2 = make_pose(so3_exp(np.array([0.02, -0.1, 0.01])), [0.5, 0.05, 0.1])
    T_c1_w, T_c2_w = inv_pose(T_w_c1), inv_pose(T_w_c2)
    p1, p2 = transform_points(T_c1_w, X), transform_points(T_c2_w, X)
    x1, x2 = p1[:, :2] / p1[:, 2:], p2[:, :2] / p2[:, 2:]
    Xt = triangulate_dlt(T_c1_w, T_c2_w, x1, x2)
    np.testing.assert_allclose(Xt, X, atol=1e-9)
    assert np.all(reprojection_error(T_c2_w, Xt, x2) < 1e-12)
    par = parallax_deg(T_w_c1[:3, 3], T_w_c2[:3, 3], X)
    assert np.all(par > 0) and np.all(par < 15)


def test_point_midway_has_closed_form_parallax():
    C1, C2 = np.zeros(3), np.array([2.0, 0.0, 0.0])
    X = np.array([[1.0, 0.0, 1.0]])
    np.testing.assert_allclose(parallax_deg(C1, C2, X), [90.0])
