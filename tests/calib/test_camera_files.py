"""Camera files: ours, OpenCV FileStorage, ROS, EuRoC sensor.yaml; the files shipped in calib/cameras."""

from __future__ import annotations

from importlib import resources

import cv2
import numpy as np
import pytest
import yaml

from calib.camera_files import read_camera_file, write_camera_file
from calib.cli import main
from slam.datasets.base import packaged_camera, packaged_camera_file
from slam.datasets.euroc import euroc_camera, read_sensor_yaml, sensor_T_BS
from slam.datasets.kitti import read_calib
from slam.errors import DataError
from slam.geometry import PinholeCamera

from .synthetic import FISHEYE, PINHOLE


def write_opencv(path, K, D, size, **extra) -> None:
    fs = cv2.FileStorage(str(path), cv2.FILE_STORAGE_WRITE)
    fs.write("image_width", size[0])
    fs.write("image_height", size[1])
    for k, v in extra.items():
        fs.write(k, v)
    fs.write("camera_matrix", K)
    fs.write("distortion_coefficients", np.asarray(D, np.float64).reshape(-1, 1))
    fs.release()


def test_ours_round_trip_with_rms_and_extras(tmp_path):
    p = tmp_path / "cam.yaml"
    write_camera_file(p, FISHEYE, rms_px=0.1234, comment="a comment\nsecond line", extra={"calibration": {"views": 3}})
    text = p.read_text()
    assert text.startswith("# a comment\n# second line\n")
    d = yaml.safe_load(text)
    assert d["model"] == "fisheye" and d["distortion_model"] == "equidistant" and d["rms"] == 0.1234
    assert PinholeCamera.from_yaml(p) == FISHEYE == read_camera_file(p)


@pytest.mark.parametrize("cam", [PINHOLE, FISHEYE], ids=["pinhole", "fisheye"])
def test_opencv_filestorage(tmp_path, cam):
    p = tmp_path / "opencv.yml"
    extra = {"fisheye_model": 1} if cam.model == "fisheye" else {}
    write_opencv(p, cam.K, cam.dist, (cam.width, cam.height), **extra)
    assert p.read_text().startswith("%YAML")
    assert read_camera_file(p) == cam


def test_opencv_4_calibration_sample_file(tmp_path):
    """The file OpenCV 4's calibration sample writes (``%YAML:1.0``, ``!!opencv-matrix``)."""
    p = tmp_path / "out_camera_data.yml"
    p.write_text("%YAML:1.0\n---\ncalibration_time: \"Mon 01 Jan\"\nnr_of_frames: 14\nimage_width: 640\n"
                 "image_height: 480\nboard_width: 9\nboard_height: 6\nsquare_size: 30.\nfisheye_model: 0\n"
                 "camera_matrix: !!opencv-matrix\n   rows: 3\n   cols: 3\n   dt: d\n"
                 "   data: [ 500., 0., 322., 0., 505., 236., 0., 0., 1. ]\n"
                 "distortion_coefficients: !!opencv-matrix\n   rows: 5\n   cols: 1\n   dt: d\n"
                 "   data: [ -0.25, 0.08, 0.001, -0.0005, 0. ]\navg_reprojection_error: 0.21\n")
    assert read_camera_file(p) == PINHOLE


def test_opencv_rational_model_is_refused(tmp_path):
    p = tmp_path / "rational.yml"
    write_opencv(p, PINHOLE.K, [0.1, 0.01, 0, 0, 0, 0.2, 0, 0], (640, 480))
    with pytest.raises(DataError, match="rational.yml: 8 distortion coefficients with non-zero terms"):
        read_camera_file(p)
    write_opencv(p, PINHOLE.K, [*PINHOLE.dist, 0, 0, 0], (640, 480))  # zero extra terms are fine
    assert read_camera_file(p) == PINHOLE


def test_ros_camera_info_yaml(tmp_path):
    p = tmp_path / "ros.yaml"
    p.write_text("image_width: 640\nimage_height: 480\ncamera_name: usb_cam\n"
                 "camera_matrix: {rows: 3, cols: 3, data: [500.0, 0.0, 322.0, 0.0, 505.0, 236.0, 0.0, 0.0, 1.0]}\n"
                 "distortion_model: plumb_bob\n"
                 "distortion_coefficients: {rows: 1, cols: 5, data: [-0.25, 0.08, 0.001, -0.0005, 0.0]}\n")
    assert read_camera_file(p) == PINHOLE


def test_euroc_sensor_yaml_equidistant(tmp_path):
    p = tmp_path / "sensor.yaml"
    p.write_text("%YAML:1.0\nsensor_type: camera\nresolution: [640, 480]\ncamera_model: pinhole\n"
                 "intrinsics: [300.0, 302.0, 318.0, 243.0]\ndistortion_model: equidistant\n"
                 "distortion_coefficients: [0.04, -0.02, 0.01, -0.002]\n")
    assert read_camera_file(p) == FISHEYE


def test_unknown_and_broken_files_are_named(tmp_path):
    p = tmp_path / "what.yaml"
    p.write_text("name: not a camera\n")
    with pytest.raises(DataError, match="what.yaml: not a camera file this reader knows"):
        read_camera_file(p)
    p.write_text("model: pinhole\nwidth: 640\nheight: 480\nfx: 500\nfy: 500\ncx: 320\n")
    with pytest.raises(DataError, match="lacks the key 'cy'"):
        read_camera_file(p)
    with pytest.raises(DataError, match="missing.yaml: cannot read"):
        read_camera_file(tmp_path / "missing.yaml")


def test_convert_command(tmp_path, capsys):
    src = tmp_path / "opencv.yml"
    write_opencv(src, PINHOLE.K, PINHOLE.dist, (640, 480))
    out = tmp_path / "ours.yaml"
    assert main(["convert", str(src), "--out", str(out)]) == 0
    assert PinholeCamera.from_yaml(out) == PINHOLE
    assert "converted from" in out.read_text().splitlines()[0]
    assert main(["convert", str(tmp_path / "nope.yml"), "--out", str(out)]) == 2
    assert "nope.yml" in capsys.readouterr().err


# ------------------------------------------------------------------ shipped files
SHIPPED = sorted(p.name for p in resources.files("calib").joinpath("cameras").iterdir() if p.name.endswith(".yaml"))


def test_every_supported_sensor_has_a_camera_file():
    assert SHIPPED == ["euroc_cam0.yaml", "euroc_cam1.yaml", "kitti_00-02.yaml", "kitti_03.yaml",
                       "kitti_04-12.yaml", "tum_fr1.yaml", "tum_fr2.yaml", "tum_fr3.yaml", "webcam_default.yaml"]
    for name in SHIPPED:
        cam = packaged_camera(name)
        assert cam.model == "pinhole" and cam.width > 0


def test_kitti_files_match_calib_txt(kitti_path):
    """Sequence 07's calib.txt (shared sample) holds the published values of the 04-12 group."""
    calib = read_calib(kitti_path / "sequences" / "07" / "calib.txt")
    d = packaged_camera_file("kitti_04-12.yaml")
    P0, P1 = calib["P0"], calib["P1"]
    assert (d["fx"], d["fy"], d["cx"], d["cy"]) == (P0[0, 0], P0[1, 1], P0[0, 2], P0[1, 2])
    assert d["stereo_baseline_m"] == pytest.approx(-P1[0, 3] / P1[0, 0], abs=1e-6)
    for name in ("kitti_00-02.yaml", "kitti_03.yaml"):  # the same rig: the baseline agrees to 0.1 mm
        assert packaged_camera_file(name)["stereo_baseline_m"] == pytest.approx(d["stereo_baseline_m"], abs=1e-4)


def test_euroc_file_matches_sensor_yaml(euroc_path):
    sensor = euroc_path / "mav0" / "cam0" / "sensor.yaml"
    cam, T_BS = euroc_camera(sensor)
    assert packaged_camera("euroc_cam0.yaml") == cam == read_camera_file(sensor)
    np.testing.assert_array_equal(sensor_T_BS(packaged_camera_file("euroc_cam0.yaml"), "euroc_cam0.yaml"), T_BS)
    assert read_sensor_yaml(sensor)["resolution"] == [752, 480]
    # cam1 is about 11 cm to the right of cam0 (EuRoC's stereo baseline)
    T0 = sensor_T_BS(packaged_camera_file("euroc_cam0.yaml"), "cam0")
    T1 = sensor_T_BS(packaged_camera_file("euroc_cam1.yaml"), "cam1")
    T_0_1 = np.linalg.inv(T0) @ T1
    assert np.linalg.norm(T_0_1[:3, 3]) == pytest.approx(0.110, abs=0.001) and T_0_1[0, 3] > 0.109


def test_webcam_default_is_a_centred_guess():
    cam = packaged_camera("webcam_default.yaml")
    assert (cam.width, cam.height, cam.cx, cam.cy) == (640, 480, 319.5, 239.5) and not cam.has_distortion
    hfov = np.degrees(2 * np.arctan(cam.width / 2 / cam.fx))
    assert 55 < hfov < 65
    text = resources.files("calib").joinpath("cameras", "webcam_default.yaml").read_text()
    assert "GUESS" in text and "slam-calib camera" in text
