"""Readers fall back to the camera files shipped in calib/cameras, and cross-check against them."""

import logging

import cv2
import numpy as np
import pytest

from slam.datasets import open_sequence
from slam.datasets.base import packaged_camera
from slam.datasets.video import guess_camera
from slam.errors import DataError

from .test_datasets_euroc import write_euroc
from .test_datasets_kitti import write_kitti


def test_kitti_without_calib_txt_uses_the_published_camera_of_its_group(tmp_path, caplog):
    d = write_kitti(tmp_path, seq="07", stereo=True)
    (d / "calib.txt").unlink()
    with caplog.at_level(logging.WARNING):
        seq = open_sequence(tmp_path)
    ref = packaged_camera("kitti_04-12.yaml")
    cam = seq.camera
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (ref.fx, ref.fy, ref.cx, ref.cy) == (707.0912, 707.0912, 601.8873,
                                                                                   183.1104)
    assert (cam.width, cam.height) == (64, 48)  # the images' size, with a warning that it is not KITTI's
    assert "no calib.txt" in caplog.text and "1226x370" in caplog.text
    assert seq.stereo.baseline == pytest.approx(379.8145 / 707.0912)


@pytest.mark.parametrize("seq_name, fx", [("01", 718.856), ("03", 721.5377)])
def test_kitti_groups(tmp_path, seq_name, fx):
    d = write_kitti(tmp_path, seq=seq_name)
    (d / "calib.txt").unlink()
    assert open_sequence(tmp_path).camera.fx == fx


def test_kitti_without_calib_txt_and_unknown_sequence_is_an_error(tmp_path):
    d = write_kitti(tmp_path, seq="15")
    (d / "calib.txt").unlink()
    with pytest.raises(DataError, match="calib.txt: missing, and '15' is not a KITTI odometry sequence 00-12") as e:
        open_sequence(tmp_path)
    assert e.value.path == d / "calib.txt"


def test_kitti_calib_txt_wins_and_is_cross_checked(kitti_path, tmp_path, caplog):
    with caplog.at_level(logging.INFO):
        open_sequence(kitti_path)
    assert "differ" not in caplog.text  # the shared sample's calib.txt holds the published values
    caplog.clear()
    write_kitti(tmp_path, seq="07")  # P0 = 700/32/24: not KITTI's
    with caplog.at_level(logging.INFO):
        assert open_sequence(tmp_path).camera.fx == 700.0
    assert "differ from KITTI's published ones" in caplog.text


def test_euroc_without_sensor_yaml_uses_the_published_camera(tmp_path, caplog):
    mav0 = write_euroc(tmp_path, n=2, stereo=True)
    for cam in ("cam0", "cam1"):
        (mav0 / cam / "sensor.yaml").unlink()
        for png in (mav0 / cam / "data").glob("*.png"):
            cv2.imwrite(str(png), np.zeros((480, 752), np.uint8))
    with caplog.at_level(logging.WARNING):
        seq = open_sequence(tmp_path)
    assert seq.camera == packaged_camera("euroc_cam0.yaml") and seq.stereo.right == packaged_camera("euroc_cam1.yaml")
    assert seq.stereo.baseline == pytest.approx(0.110, abs=0.001)
    assert "calib/cameras/euroc_cam0.yaml" in caplog.text


def test_euroc_without_sensor_yaml_and_other_images_is_an_error(tmp_path):
    mav0 = write_euroc(tmp_path, n=2)  # 64x48 images
    (mav0 / "cam0" / "sensor.yaml").unlink()
    with pytest.raises(DataError, match="missing, and the images are 64x48, not the 752x480") as e:
        open_sequence(tmp_path)
    assert e.value.path == mav0 / "cam0" / "sensor.yaml"


def test_webcam_default_is_the_guess_for_640x480():
    assert guess_camera(640, 480) == packaged_camera("webcam_default.yaml")
    assert guess_camera(1280, 720).fx == pytest.approx(0.9 * 1280)
