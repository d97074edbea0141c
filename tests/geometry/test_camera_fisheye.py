"""The fisheye (equidistant) model of PinholeCamera against OpenCV's cv2.fisheye, and its camera files."""

import cv2
import numpy as np
import pytest
import yaml

from slam.errors import DataError
from slam.geometry import PinholeCamera

FISHEYE = PinholeCamera(640, 480, 300.0, 302.0, 318.0, 243.0, (0.04, -0.02, 0.01, -0.002), model="fisheye")


def test_projection_matches_opencv():
    rng = np.random.default_rng(0)
    P = rng.uniform([-2.0, -1.5, 0.3], [2.0, 1.5, 2.0], size=(200, 3))
    uv, ok = FISHEYE.project(P)
    ref, _ = cv2.fisheye.projectPoints(P.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), FISHEYE.K,
                                       np.array(FISHEYE.dist))
    assert ok.all()
    np.testing.assert_allclose(uv, ref.reshape(-1, 2), atol=1e-9)


def test_closed_form_with_k_zero():
    """Equidistant with k = 0: the image radius is f * theta."""
    cam = PinholeCamera(100, 100, 50.0, 50.0, 49.5, 49.5, model="fisheye")
    assert cam.has_distortion  # r = f theta is not r = f tan(theta)
    uv, _ = cam.project(np.array([[1.0, 0.0, 1.0]]))  # 45 degrees off axis
    np.testing.assert_allclose(uv, [[49.5 + 50.0 * np.pi / 4, 49.5]])
    np.testing.assert_allclose(cam.project(np.array([[0.0, 0.0, 3.0]]))[0], [[49.5, 49.5]])


def test_undistortion_inverts_and_matches_opencv():
    u, v = np.meshgrid(np.linspace(0, 639, 31), np.linspace(0, 479, 23))
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    xn = FISHEYE.pixel_to_normalized(uv)
    np.testing.assert_allclose(FISHEYE.normalized_to_pixel(xn), uv, atol=1e-8)
    crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-14)
    ref = cv2.fisheye.undistortPoints(uv.reshape(1, -1, 2), FISHEYE.K, np.array(FISHEYE.dist), criteria=crit)
    np.testing.assert_allclose(xn, ref.reshape(-1, 2), atol=1e-6)


def test_undistort_image_and_undistorted_camera():
    und = FISHEYE.undistorted()
    assert und.model == "pinhole" and not und.has_distortion and und.K.tolist() == FISHEYE.K.tolist()
    img = np.zeros((480, 640), np.uint8)
    img[98:103, 98:103] = 255  # a dot near the corner moves outwards when the fisheye is undone
    out = FISHEYE.undistort_image(img)
    target = FISHEYE.undistort_points(np.array([[100.0, 100.0]]))[0]
    ys, xs = np.nonzero(out > 128)
    assert target[0] < 100 and abs(xs.mean() - target[0]) < 1.0 and abs(ys.mean() - target[1]) < 1.0


def test_yaml_round_trip_and_model_names(tmp_path):
    p = tmp_path / "fe.yaml"
    FISHEYE.to_yaml(p)
    d = yaml.safe_load(p.read_text())
    assert d["model"] == "fisheye" and d["distortion_model"] == "equidistant" and len(d["distortion"]) == 4
    assert PinholeCamera.from_yaml(p) == FISHEYE
    # Kalibr's spelling (pinhole camera, equidistant distortion) is the same model; rms is optional
    d.update(model="pinhole", distortion_model="equidistant", rms=0.3)
    assert PinholeCamera.from_dict(d) == FISHEYE
    with pytest.raises(DataError, match="'omni'"):
        PinholeCamera.from_dict({**d, "model": "omni"}, source="x.yaml")
    with pytest.raises(ValueError, match="at most 4 terms"):
        PinholeCamera(640, 480, 300, 300, 320, 240, (0.1, 0, 0, 0, 0.2), model="fisheye")


def test_existing_radtan_files_still_read():
    d = {"model": "pinhole", "width": 640, "height": 480, "fx": 517.3, "fy": 516.5, "cx": 318.6, "cy": 255.3,
         "distortion_model": "radtan", "distortion": [0.2624, -0.9531, -0.0054, 0.0026, 1.1633]}
    cam = PinholeCamera.from_dict(d)
    assert cam.model == "pinhole" and cam.to_dict() == {**d, "distortion": d["distortion"]}
