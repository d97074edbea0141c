import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from slam.errors import DataError
from slam.geometry import PinholeCamera

# TUM freiburg1 (strong distortion) and EuRoC cam0
CAMS = [
    PinholeCamera(640, 480, 517.3, 516.5, 318.6, 255.3, (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    PinholeCamera(752, 480, 458.654, 457.296, 367.215, 248.375, (-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05)),
    PinholeCamera(640, 480, 525.0, 525.0, 319.5, 239.5),
]


def test_project_closed_form_without_distortion():
    cam = CAMS[2]
    uv, ok = cam.project(np.array([[0.0, 0.0, 2.0], [1.0, -0.5, 2.0], [0.0, 0.0, -1.0]]))
    np.testing.assert_allclose(uv[:2], [[319.5, 239.5], [319.5 + 262.5, 239.5 - 131.25]])
    assert ok.tolist() == [True, True, False]


def test_distortion_closed_form_k1_only():
    cam = PinholeCamera(100, 100, 100.0, 100.0, 50.0, 50.0, (0.1,))
    # r^2 = 0.25 -> radial factor 1.025
    np.testing.assert_allclose(cam.distort_normalized(np.array([[0.3, 0.4]])), [[0.3075, 0.41]])


@pytest.mark.parametrize("cam", CAMS)
def test_unproject_inverts_project_over_the_image(cam):
    u, v = np.meshgrid(np.linspace(0, cam.width - 1, 25), np.linspace(0, cam.height - 1, 19))
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    depth = np.linspace(0.5, 8.0, uv.shape[0])
    P = cam.unproject(uv, depth)
    np.testing.assert_allclose(P[:, 2], depth)
    uv2, ok = cam.project(P)
    assert ok.all()
    np.testing.assert_allclose(uv2, uv, atol=1e-8)


@given(st.floats(-0.5, 0.5), st.floats(-0.4, 0.4))
@settings(max_examples=200, deadline=None)
def test_undistort_normalized_round_trip(x, y):
    cam = CAMS[1]
    xn = np.array([[x, y]])
    np.testing.assert_allclose(cam.undistort_normalized(cam.distort_normalized(xn)), xn, atol=1e-10)


def test_undistort_points_matches_opencv():
    import cv2

    cam = CAMS[1]
    rng = np.random.default_rng(0)
    uv = rng.uniform([0, 0], [cam.width, cam.height], size=(100, 2))
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
    ref = cv2.undistortPoints(uv.reshape(-1, 1, 2), cam.K, np.array(cam.dist), None, cam.K, criteria=crit)
    ref = ref.reshape(-1, 2)
    np.testing.assert_allclose(cam.undistort_points(uv), ref, atol=1e-4)


def test_undistort_image_moves_content_where_the_model_says():
    cam = CAMS[1]
    img = np.zeros((cam.height, cam.width), np.uint8)
    # A bright dot at a distorted pixel near the corner must land at its undistorted position.
    uv_d = np.array([[120.0, 80.0]])
    img[78:83, 118:123] = 255
    und = cam.undistort_image(img)
    target = cam.undistort_points(uv_d)[0]
    ys, xs = np.nonzero(und > 128)
    assert abs(xs.mean() - target[0]) < 1.0 and abs(ys.mean() - target[1]) < 1.0


def test_scaled_camera_keeps_rays():
    cam = CAMS[2]
    half = cam.scaled(0.5)
    assert (half.width, half.height) == (320, 240)
    P = np.array([[0.3, -0.2, 2.0]])
    uv, _ = cam.project(P)
    uv2, _ = half.project(P)
    np.testing.assert_allclose((uv2 + 0.5) * 2 - 0.5, uv)


def test_yaml_round_trip_and_errors(tmp_path):
    cam = CAMS[0]
    p = tmp_path / "cam.yaml"
    cam.to_yaml(p)
    assert PinholeCamera.from_yaml(p) == cam
    (tmp_path / "bad.yaml").write_text("width: 640\nheight: 480\nfx: 500\n")
    with pytest.raises(DataError, match=r"bad.yaml.*'fy'"):
        PinholeCamera.from_yaml(tmp_path / "bad.yaml")
    with pytest.raises(DataError, match="missing.yaml"):
        PinholeCamera.from_yaml(tmp_path / "missing.yaml")
