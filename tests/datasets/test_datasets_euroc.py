from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.datasets import open_sequence
from slam.datasets.euroc import EurocSequence
from slam.errors import DataError
from slam.geometry import make_pose, quat_to_rot

from .conftest import texture, write_imu_csv

T0_NS = 1_000_000_000_000  # 1000 s
DT_NS = 50_000_000  # 20 Hz


def sensor_yaml(T_BS: np.ndarray) -> str:
    data = ", ".join(f"{v:.12g}" for v in T_BS.reshape(-1))
    return (f"%YAML:1.0\nsensor_type: camera\nT_BS:\n  cols: 4\n  rows: 4\n  data: [{data}]\n"
            "rate_hz: 20\nresolution: [64, 48]\ncamera_model: pinhole\nintrinsics: [50.0, 51.0, 31.5, 23.5]\n"
            "distortion_model: radial-tangential\ndistortion_coefficients: [-0.1, 0.01, 0.0, 0.0]\n")


def write_euroc(root: Path, n: int = 4, stereo: bool = False, gt_csv: bool = True) -> Path:
    """A tiny ASL-format folder; cam0 is rotated 90 deg about z in the body frame, cam1 0.1 m to its right."""
    mav0 = root / "mav0"
    T_B_c0 = make_pose(quat_to_rot(np.array([0, 0, np.sqrt(0.5), np.sqrt(0.5)])), [0.1, 0, 0])
    T_B_c1 = T_B_c0 @ make_pose(np.eye(3), [0.1, 0, 0])
    for cam, T in (("cam0", T_B_c0), ("cam1", T_B_c1)) if stereo else (("cam0", T_B_c0),):
        (mav0 / cam / "data").mkdir(parents=True)
        rows = ["#timestamp [ns],filename"]
        for i in range(n):
            ns = T0_NS + i * DT_NS
            cv2.imwrite(str(mav0 / cam / "data" / f"{ns}.png"), texture(i, channels=1))
            rows.append(f"{ns},{ns}.png")
        (mav0 / cam / "data.csv").write_text("\n".join(rows) + "\n")
        (mav0 / cam / "sensor.yaml").write_text(sensor_yaml(T))
    (mav0 / "imu0").mkdir()
    write_imu_csv(mav0 / "imu0" / "data.csv", 999.9, 1000.0 + n * 0.05)
    if gt_csv:
        d = mav0 / "state_groundtruth_estimate0"
        d.mkdir()
        rows = ["#timestamp, p_RS_R_x [m], p_RS_R_y [m], p_RS_R_z [m], q_RS_w [], q_RS_x [], q_RS_y [], q_RS_z []"]
        for k in range(-2, 2 * n + 2):  # 40 Hz, body moves along x, rotated 90 deg about x (w first!)
            rows.append(f"{T0_NS + k * DT_NS // 2},{0.01 * k},0,0,{np.sqrt(0.5)},{np.sqrt(0.5)},0,0")
        (d / "data.csv").write_text("\n".join(rows) + "\n")
    return mav0


# ------------------------------------------------------------ shared recording
@pytest.fixture(scope="module")
def v101(euroc_path):
    return open_sequence(euroc_path)


def test_v101_sample(v101):
    seq = v101
    assert isinstance(seq, EurocSequence)
    assert len(seq) == 95 and seq.modes == ["mono-inertial", "mono"]
    cam = seq.camera
    assert (cam.width, cam.height) == (752, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (458.654, 457.296, 367.215, 248.375)
    assert cam.dist[:4] == (-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05)
    assert seq.timestamps[0] == pytest.approx(1403715273.262143, abs=1e-6)
    np.testing.assert_allclose(np.diff(seq.timestamps), 0.05, atol=1e-6)
    assert seq.T_b_c[0, 3] == pytest.approx(-0.0216401454975)


def test_v101_frame_is_grayscale_rgb(v101):
    f = v101[3]
    assert f.image.shape == (480, 752, 3) and f.image.dtype == np.uint8
    assert (f.image[..., 0] == f.image[..., 1]).all()


def test_v101_imu(v101):
    seq = v101
    assert len(seq.imu) == 29120
    counts = [len(seq.imu_for_frame(i)) for i in range(len(seq))]
    assert counts[0] == 1  # the IMU starts with the first image
    assert all(c == 10 for c in counts[1:])  # 200 Hz / 20 Hz
    f = seq[40]
    assert np.all(f.imu.t > seq.timestamps[39]) and np.all(f.imu.t <= seq.timestamps[40])
    # static MAV while the images run: small rotation rate (bias + noise), specific force = gravity
    during = seq.imu.t <= seq.timestamps[-1]
    assert np.linalg.norm(seq.imu.gyro[during], axis=1).mean() < 0.15
    assert np.linalg.norm(seq.imu.accel[during].mean(axis=0)) == pytest.approx(9.8, abs=0.1)


def test_v101_groundtruth_prefers_csv_covering_every_frame(v101):
    seq = v101
    assert seq.groundtruth_file.name == "V1_01_easy.csv"
    gt = seq.groundtruth()
    assert len(gt) == 95
    assert gt.path_length() < 0.05  # standing still, ~2 cm
    # camera pose = body pose @ T_BS of cam0: first row of the csv is exactly at frame 0
    q_wxyz = [0.069433, -0.824237, -0.106942, -0.551702]
    T_w_b = make_pose(quat_to_rot(np.array(q_wxyz[1:] + q_wxyz[:1]) / np.linalg.norm(q_wxyz)),
                      [0.878895, 2.1834, 0.948427])
    np.testing.assert_allclose(seq[0].T_w_c_gt, T_w_b @ seq.T_b_c, atol=1e-9)


def test_v101_original_tum_groundtruth_covers_74_frames(euroc_path, v101):
    seq = open_sequence(euroc_path, groundtruth=euroc_path / "groundtruth" / "V1_01_easy_original.txt")
    assert len(seq.groundtruth()) == 74
    assert seq[20].T_w_c_gt is None and seq[21].T_w_c_gt is not None
    both = v101.groundtruth().poses[21:, :3, 3]
    assert np.abs(both - seq.groundtruth().poses[:, :3, 3]).max() < 0.05  # the two files agree to ~4 cm


# ------------------------------------------------------------ hand-built
def test_stereo_rig_and_groundtruth_quaternion_order(tmp_path):
    mav0 = write_euroc(tmp_path, stereo=True)
    for p in (tmp_path, mav0):
        seq = open_sequence(p)
        assert seq.modes == ["stereo-inertial", "stereo", "mono-inertial", "mono"]
        np.testing.assert_allclose(seq.stereo.T_l_r, make_pose(np.eye(3), [0.1, 0, 0]), atol=1e-9)
        assert seq.stereo.right.fy == 51.0 and seq.camera.dist == (-0.1, 0.01, 0.0, 0.0, 0.0)
        assert seq[2].right.shape == (48, 64, 3)
    T_w_b = make_pose(quat_to_rot(np.array([np.sqrt(0.5), 0, 0, np.sqrt(0.5)])), [0.02, 0, 0])  # frame 1, x-rotation
    np.testing.assert_allclose(seq[1].T_w_c_gt, T_w_b @ seq.T_b_c, atol=1e-9)
    np.testing.assert_allclose(seq.T_b_c[:3, 3], [0.1, 0, 0])
    assert len(seq[0].imu) == 21 and len(seq[1].imu) == 10


def test_groundtruth_folder_tum_file(tmp_path):
    mav0 = write_euroc(tmp_path, gt_csv=False)
    (tmp_path / "groundtruth").mkdir()
    rows = ["# timestamp tx ty tz qx qy qz qw"] + [f"{999.9 + 0.01 * k:.6f} 1 2 3 0 0 0 1" for k in range(30)]
    (tmp_path / "groundtruth" / "gt.txt").write_text("\n".join(rows) + "\n")
    seq = open_sequence(tmp_path)
    assert len(seq.groundtruth()) == 4
    np.testing.assert_allclose(seq[3].T_w_c_gt, make_pose(np.eye(3), [1, 2, 3]) @ seq.T_b_c, atol=1e-9)
    assert seq.groundtruth_file.parent.parent == mav0.parent


def test_no_groundtruth(tmp_path):
    write_euroc(tmp_path, gt_csv=False)
    assert open_sequence(tmp_path).groundtruth() is None


# ------------------------------------------------------------ broken input
def test_imu_bad_number_names_line(tmp_path):
    mav0 = write_euroc(tmp_path)
    p = mav0 / "imu0" / "data.csv"
    lines = p.read_text().splitlines()
    lines[4] = lines[4].replace("9.81", "9.8x1")
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="not a number") as e:
        open_sequence(tmp_path)
    assert e.value.path == p and e.value.line == 5


def test_imu_wrong_column_count(tmp_path):
    mav0 = write_euroc(tmp_path)
    p = mav0 / "imu0" / "data.csv"
    with open(p, "a") as f:
        f.write("2000000000000,1,2,3\n")
    with pytest.raises(DataError, match="expected 7 columns"):
        open_sequence(tmp_path)


def test_camera_timestamps_out_of_order(tmp_path):
    mav0 = write_euroc(tmp_path)
    p = mav0 / "cam0" / "data.csv"
    lines = p.read_text().splitlines()
    lines[1], lines[2] = lines[2], lines[1]
    p.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="out of order") as e:
        open_sequence(tmp_path)
    assert e.value.path == p and e.value.line == 3


def test_groundtruth_nan_and_bad_quaternion(tmp_path):
    mav0 = write_euroc(tmp_path)
    p = mav0 / "state_groundtruth_estimate0" / "data.csv"
    good = p.read_text().splitlines()
    p.write_text("\n".join(good[:3] + [good[3].replace(",0,0,0.7", ",nan,0,0.7")] + good[4:]) + "\n")
    with pytest.raises(DataError, match="non-finite") as e:
        open_sequence(tmp_path)
    assert e.value.path == p and e.value.line == 4
    p.write_text("\n".join(good[:3] + [good[3].rsplit(",", 4)[0] + ",1,1,0,0"] + good[4:]) + "\n")
    with pytest.raises(DataError, match="quaternion norm") as e:
        open_sequence(tmp_path)
    assert e.value.line == 4


def test_bad_sensor_yaml(tmp_path):
    mav0 = write_euroc(tmp_path)
    p = mav0 / "cam0" / "sensor.yaml"
    p.write_text(p.read_text().replace("intrinsics", "intrinsix"))
    with pytest.raises(DataError, match="intrinsics") as e:
        open_sequence(tmp_path)
    assert e.value.path == p


def test_listed_image_missing(tmp_path):
    mav0 = write_euroc(tmp_path)
    next((mav0 / "cam0" / "data").glob("*.png")).unlink()
    with pytest.raises(DataError, match="does not exist") as e:
        open_sequence(tmp_path)
    assert e.value.path == mav0 / "cam0" / "data.csv"
