import logging

import numpy as np
import pytest

from slam.datasets import open_sequence
from slam.datasets.tum import TumSequence, associate
from slam.errors import CorruptFrameError, DataError

from .conftest import CAM, write_tum_like


# ------------------------------------------------------------ shared recording
def test_fr1_desk_sample(tum_path):
    seq = open_sequence(tum_path)
    assert isinstance(seq, TumSequence)
    assert len(seq) == 9 and seq.modes == ["rgbd", "mono"]
    cam = seq.camera
    assert (cam.width, cam.height) == (640, 480)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (517.3, 516.5, 318.6, 255.3)
    assert cam.dist == (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)
    assert seq.stereo is None and seq.imu is None
    assert seq.timestamps[0] == pytest.approx(1305031453.359684)
    assert np.all(np.diff(seq.timestamps) > 0)


def test_fr1_desk_first_frame_depth_and_groundtruth(tum_path):
    f = open_sequence(tum_path)[0]
    assert f.image.shape == (480, 640, 3) and f.image.dtype == np.uint8
    assert f.depth.shape == (480, 640) and f.depth.dtype == np.float32
    valid = f.depth > 0
    assert valid.mean() == pytest.approx(0.83, abs=0.01)
    assert np.median(f.depth[valid]) == pytest.approx(1.0766, abs=1e-3)  # 5383 / 5000
    assert not f.flags and len(f.imu) == 0
    # ground truth: a rigid pose interpolated at the frame time
    T = f.T_w_c_gt
    assert T is not None
    np.testing.assert_allclose(T[:3, :3] @ T[:3, :3].T, np.eye(3), atol=1e-9)
    assert np.linalg.norm(T[:3, 3] - [1.3, 0.6, 1.5]) < 0.5


def test_fr1_desk_groundtruth_covers_every_frame(tum_path):
    seq = open_sequence(tum_path)
    gt = seq.groundtruth()
    assert len(gt) == 9
    np.testing.assert_array_equal(gt.timestamps, seq.timestamps)
    assert 0.01 < gt.path_length() < 0.5  # 0.27 s of hand-held motion


def test_iteration_matches_indexing(tum_path):
    seq = open_sequence(tum_path)
    frames = list(seq)
    assert [f.index for f in frames] == list(range(9))
    np.testing.assert_array_equal(frames[-1].image, seq[-1].image)
    with pytest.raises(IndexError):
        seq[9]


# ------------------------------------------------------------ association
def test_associate_one_to_one_closest_first():
    a = np.array([0.0, 0.030, 0.100])
    b = np.array([0.010, 0.025, 0.300])
    assert associate(a, b, 0.02) == {1: 1, 0: 0}  # 0.030-0.025 chosen first; 0.100 has no partner


# ------------------------------------------------------------ cameras
def test_camera_yaml_overrides(tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg2_xyz"
    write_tum_like(root, camera=False)
    assert open_sequence(root).camera.fx == 520.9  # fr2 from the folder name
    CAM.to_yaml(root / "camera.yaml")
    assert open_sequence(root).camera == CAM


def test_unknown_sensor_falls_back_to_ros_default_with_warning(tmp_path, caplog):
    write_tum_like(tmp_path / "my_sequence", camera=False)
    with caplog.at_level(logging.WARNING, logger="slam.datasets.tum"):
        cam = open_sequence(tmp_path / "my_sequence").camera
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (525.0, 525.0, 319.5, 239.5)
    assert "ROS default" in caplog.text


def test_fr3_has_no_distortion(tmp_path):
    write_tum_like(tmp_path / "fr3_office", camera=False)
    cam = open_sequence(tmp_path / "fr3_office").camera
    assert (cam.fx, cam.fy) == (535.4, 539.2) and not cam.has_distortion


# ------------------------------------------------------------ broken input
def test_missing_depth_file_flags_the_frame(tmp_path, caplog):
    ts = write_tum_like(tmp_path)
    (tmp_path / "depth" / f"{ts[2]:.6f}.png").unlink()
    seq = open_sequence(tmp_path)
    with caplog.at_level(logging.WARNING):
        f = seq[2]
    assert f.depth is None and "depth_missing" in f.flags
    assert "delivered without depth" in caplog.text
    assert seq[1].depth is not None and not seq[1].flags
    np.testing.assert_allclose(seq[1].depth[0, 40], 1.0)
    np.testing.assert_allclose(seq[1].depth[5, 5], 2.0)


def test_corrupt_depth_flags_and_corrupt_rgb_raises(tmp_path):
    ts = write_tum_like(tmp_path)
    (tmp_path / "depth" / f"{ts[0]:.6f}.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    rgb = tmp_path / "rgb" / f"{ts[1]:.6f}.png"
    rgb.write_bytes(rgb.read_bytes()[:100])
    seq = open_sequence(tmp_path)
    assert "depth_missing" in seq[0].flags
    with pytest.raises(CorruptFrameError) as e:
        seq[1]
    assert e.value.path == rgb


def test_rgb_without_depth_partner_is_flagged(tmp_path):
    write_tum_like(tmp_path, n=3)
    lines = (tmp_path / "depth.txt").read_text().splitlines()
    (tmp_path / "depth.txt").write_text("\n".join(lines[:-1]) + "\n")  # drop the last depth
    seq = open_sequence(tmp_path)
    assert "depth_missing" in seq[2].flags and seq[2].depth is None


def test_out_of_order_timestamps_name_file_and_line(tmp_path):
    write_tum_like(tmp_path)
    lines = (tmp_path / "rgb.txt").read_text().splitlines()
    lines[2], lines[3] = lines[3], lines[2]  # lines 3 and 4 of the file
    (tmp_path / "rgb.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="out of order") as e:
        open_sequence(tmp_path)
    assert e.value.path == tmp_path / "rgb.txt" and e.value.line == 4
    assert "rgb.txt:4:" in str(e.value)


def test_duplicated_timestamp(tmp_path):
    write_tum_like(tmp_path)
    lines = (tmp_path / "depth.txt").read_text().splitlines()
    lines[2] = lines[1]
    (tmp_path / "depth.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="duplicated") as e:
        open_sequence(tmp_path)
    assert e.value.path == tmp_path / "depth.txt" and e.value.line == 3


def test_nan_in_groundtruth(tmp_path):
    write_tum_like(tmp_path)
    lines = (tmp_path / "groundtruth.txt").read_text().splitlines()
    lines[5] = lines[5].replace(" 0 0 0 1", " 0 nan 0 1")
    (tmp_path / "groundtruth.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="NaN") as e:
        open_sequence(tmp_path)
    assert e.value.path == tmp_path / "groundtruth.txt" and e.value.line == 6


@pytest.mark.parametrize("bad, match", [("100.0", "expected 2 columns"), ("abc rgb/x.png", "not a number"),
                                        ("nan rgb/x.png", "non-finite")])
def test_malformed_list_line(tmp_path, bad, match):
    write_tum_like(tmp_path)
    with open(tmp_path / "rgb.txt", "a") as f:
        f.write(bad + "\n")
    with pytest.raises(DataError, match=match) as e:
        open_sequence(tmp_path)
    assert e.value.line == 6


def test_listed_image_missing(tmp_path):
    ts = write_tum_like(tmp_path)
    (tmp_path / "rgb" / f"{ts[3]:.6f}.png").unlink()
    with pytest.raises(DataError, match="does not exist") as e:
        open_sequence(tmp_path)
    assert e.value.line == 5


def test_empty_sequence(tmp_path):
    write_tum_like(tmp_path)
    (tmp_path / "rgb.txt").write_text("# timestamp filename\n")
    with pytest.raises(DataError, match="no frames") as e:
        open_sequence(tmp_path)
    assert e.value.path == tmp_path / "rgb.txt"


def test_groundtruth_gap_leaves_frames_without_pose(tmp_path):
    ts = write_tum_like(tmp_path, n=5, dt=0.1)
    rows = (tmp_path / "groundtruth.txt").read_text().splitlines()
    keep = [r for r in rows if r.startswith("#") or not (ts[2] - 0.08 < float(r.split()[0]) < ts[2] + 0.08)]
    (tmp_path / "groundtruth.txt").write_text("\n".join(keep) + "\n")
    seq = open_sequence(tmp_path)
    assert seq[2].T_w_c_gt is None and seq[1].T_w_c_gt is not None
    assert len(seq.groundtruth()) == 4
    np.testing.assert_allclose(seq[3].T_w_c_gt[0, 3], 0.3, atol=1e-6)  # gt x = t - t0


@pytest.mark.parametrize("content", [b"\xff\xfe\x00 not text", b"width: 64\nheight: 48\nfx: .nan\nfy: 50\ncx: 1\ncy: 1\n",
                                     b"width: 64\nheight: 48\nfx: 50\n"])
def test_bad_camera_yaml(tmp_path, content):
    write_tum_like(tmp_path)
    (tmp_path / "camera.yaml").write_bytes(content)
    with pytest.raises(DataError) as e:
        open_sequence(tmp_path)
    assert e.value.path == tmp_path / "camera.yaml"
