from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.datasets import open_sequence
from slam.datasets.kitti import KittiSequence
from slam.errors import DataError

from .conftest import texture

P0 = "P0: 700 0 32 0 0 700 24 0 0 0 1 0"
P1 = "P1: 700 0 32 -378 0 700 24 0 0 0 1 0"  # baseline 0.54 m


def write_kitti(root: Path, seq: str = "00", n: int = 4, stereo: bool = False, poses: bool = True) -> Path:
    d = root / "sequences" / seq
    for cam in ("image_0", "image_1") if stereo else ("image_0",):
        (d / cam).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(d / cam / f"{i:06d}.png"), texture(i, channels=1))
    (d / "calib.txt").write_text(f"{P0}\n{P1}\n")
    (d / "times.txt").write_text("".join(f"{0.1 * i:.6e}\n" for i in range(n)))
    if poses:
        (root / "poses").mkdir(exist_ok=True)
        (root / "poses" / f"{seq}.txt").write_text("".join(f"1 0 0 0 0 1 0 0 0 0 1 {i} \n" for i in range(n)))
    return d


# ------------------------------------------------------------ shared recording
@pytest.mark.parametrize("sub", ["", "sequences/07"])
def test_seq07_sample(kitti_path, sub):
    seq = open_sequence(kitti_path / sub if sub else kitti_path)
    assert isinstance(seq, KittiSequence)
    assert len(seq) == 160 and seq.modes == ["mono"]
    cam = seq.camera
    assert (cam.width, cam.height) == (1226, 370)
    assert (cam.fx, cam.fy, cam.cx, cam.cy) == (707.0912, 707.0912, 601.8873, 183.1104)
    assert not cam.has_distortion
    assert seq.timestamps[0] == 0.0 and seq.timestamps[-1] == pytest.approx(16.53376, abs=1e-5)
    gt = seq.groundtruth()
    assert len(gt) == 160
    assert gt.path_length() == pytest.approx(90.6, abs=0.5)
    np.testing.assert_allclose(gt.poses[0], np.eye(4), atol=1e-9)


def test_seq07_frames_are_rgb(kitti_path):
    seq = open_sequence(kitti_path)
    f = seq[10]
    assert f.image.shape == (370, 1226, 3) and f.image.dtype == np.uint8
    assert (f.image[..., 0] == f.image[..., 2]).all()  # grayscale replicated
    assert f.depth is None and f.right is None and len(f.imu) == 0
    np.testing.assert_array_equal(f.T_w_c_gt, seq.groundtruth().poses[10])


# ------------------------------------------------------------ layouts
def test_stereo_from_image_1_and_P1(tmp_path):
    write_kitti(tmp_path, stereo=True)
    seq = open_sequence(tmp_path)
    assert seq.modes == ["stereo", "mono"]
    assert seq.stereo.baseline == pytest.approx(0.54)
    np.testing.assert_allclose(seq.stereo.T_l_r[:3, 3], [0.54, 0, 0])
    f = seq[1]
    assert f.right.shape == (48, 64, 3)
    np.testing.assert_allclose(f.T_w_c_gt[:3, 3], [0, 0, 1])


def test_root_with_two_sequences_needs_a_choice(tmp_path):
    write_kitti(tmp_path, "00")
    write_kitti(tmp_path, "01", n=3)
    with pytest.raises(DataError, match="2 sequences"):
        open_sequence(tmp_path)
    assert len(open_sequence(tmp_path, sequence="01")) == 3
    with pytest.raises(DataError, match="no sequence '05'"):
        open_sequence(tmp_path, sequence="05")


def test_without_poses_there_is_no_groundtruth(tmp_path):
    write_kitti(tmp_path, poses=False)
    seq = open_sequence(tmp_path)
    assert seq.groundtruth() is None and seq[0].T_w_c_gt is None


def test_camera_yaml_overrides(tmp_path):
    from .conftest import CAM

    d = write_kitti(tmp_path)
    CAM.to_yaml(d / "camera.yaml")
    assert open_sequence(tmp_path).camera == CAM


# ------------------------------------------------------------ broken input
def test_times_out_of_order(tmp_path):
    d = write_kitti(tmp_path)
    (d / "times.txt").write_text("0.0\n0.2\n0.1\n0.3\n")
    with pytest.raises(DataError, match="out of order") as e:
        open_sequence(tmp_path)
    assert e.value.path == d / "times.txt" and e.value.line == 3


def test_missing_image_names_times_line(tmp_path):
    d = write_kitti(tmp_path)
    (d / "image_0" / "000002.png").unlink()
    with pytest.raises(DataError, match="000002.png") as e:
        open_sequence(tmp_path)
    assert e.value.path == d / "times.txt" and e.value.line == 3


def test_malformed_calib(tmp_path):
    d = write_kitti(tmp_path)
    (d / "calib.txt").write_text(f"{P0}\nP1: 1 2 3\n")
    with pytest.raises(DataError, match="expected 13 columns") as e:
        open_sequence(tmp_path)
    assert e.value.path == d / "calib.txt" and e.value.line == 2


def test_bad_pose_row(tmp_path):
    write_kitti(tmp_path)
    p = tmp_path / "poses" / "00.txt"
    p.write_text(p.read_text().replace(" 1 2 \n", " 1 nan \n"))
    with pytest.raises(DataError) as e:
        open_sequence(tmp_path)
    assert e.value.path == p and e.value.line == 3


def test_empty_times(tmp_path):
    d = write_kitti(tmp_path)
    (d / "times.txt").write_text("")
    with pytest.raises(DataError, match="no frames"):
        open_sequence(tmp_path)


@pytest.mark.parametrize("line,key,bad", [(1, "P0", "P0: 0 0 32 0 0 700 24 0 0 0 1 0"),  # fx = 0
                                          (2, "P1", "P1: 700 0 32 -378 0 -700 24 0 0 0 1 0")])  # fy < 0
def test_calib_with_a_non_positive_focal_length_names_file_and_line(tmp_path, line, key, bad):
    d = write_kitti(tmp_path, stereo=True)
    lines = [P0, P1]
    lines[line - 1] = bad
    (d / "calib.txt").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError) as e:
        open_sequence(tmp_path)
    assert e.value.path == d / "calib.txt" and e.value.line == line
    assert str(e.value).startswith(f"{d / 'calib.txt'}:{line}: {key}: invalid camera (sizes and focal lengths "
                                   "must be positive")
