import numpy as np

from slam.backbone.frontend.local_map import project_visible
from slam.geometry import inv_pose, make_pose
from slam.geometry.camera import PinholeCamera

K = np.array([[500.0, 0, 320.0], [0, 500.0, 240.0], [0, 0, 1]])
CAM = PinholeCamera(640, 480, 500.0, 500.0, 320.0, 240.0)


def test_projection_closed_form_and_visibility_tests():
    T_c_w = inv_pose(make_pose(np.eye(3), [0.0, 0.0, -1.0]))  # camera 1 m behind the world origin
    P = np.array([
        [0.0, 0.0, 1.0],  # 2 m ahead, on the axis
        [0.2, -0.1, 1.0],  # off axis
        [0.0, 0.0, -3.0],  # behind the camera
        [5.0, 0.0, 1.0],  # outside the image
        [0.0, 0.0, 1.0],  # seen from behind its normal
        [0.0, 0.0, 1.0],  # too close for its scale range
    ])
    n = np.array([[0, 0, 1.0]] * 4 + [[0, 0, -1.0], [0, 0, 1.0]])
    dmax = np.array([2.0 * 1.2**3, 4.0, 4.0, 4.0, 4.0, 50.0])
    dmin = dmax / 1.2**7
    pr = project_visible(T_c_w, P, n, dmin, dmax, CAM, bf=40.0, scale_factor=1.2, n_levels=8)
    assert pr.idx.tolist() == [0, 1]
    np.testing.assert_allclose(pr.uv, [[320.0, 240.0], [370.0, 215.0]])
    np.testing.assert_allclose(pr.u_right, [320.0 - 20.0, 370.0 - 20.0])
    # max distance = 2 m * 1.2^3 seen from 2 m: predicted at level 3 (ORB-SLAM's rule)
    assert pr.level[0] == 3


def test_without_scale_and_normal_tests_and_mono():
    P = np.array([[0.0, 0.0, 2.0], [0.0, 0.0, 100.0]])
    pr = project_visible(np.eye(4), P, None, None, None, CAM, bf=0.0, scale_factor=1.2, n_levels=8)
    assert pr.idx.tolist() == [0, 1] and np.all(pr.level == -1) and np.all(pr.u_right == -1)
