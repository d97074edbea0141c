import json

import numpy as np
import pytest

from slam.datasets import open_sequence
from slam.datasets.synthetic import SyntheticSequence
from slam.errors import DataError

from .conftest import CAM, write_synthetic


def test_full_sequence(tmp_path):
    ts = write_synthetic(tmp_path)
    seq = open_sequence(tmp_path)
    assert isinstance(seq, SyntheticSequence) and seq.name == "tiny"
    assert seq.modes == ["rgbd", "stereo-inertial", "stereo", "mono-inertial", "mono"]
    assert seq.camera == CAM and len(seq) == 5
    np.testing.assert_allclose(seq.timestamps, ts)
    assert seq.stereo.baseline == pytest.approx(0.1) and seq.stereo.right == CAM
    np.testing.assert_allclose(seq.T_b_c[:3, 3], [0.01, 0.02, 0.03])
    f = seq[2]
    assert f.image.shape == f.right.shape == (48, 64, 3)
    assert not np.array_equal(f.image, f.right)
    assert f.depth[0, 0] == 0.0 and f.depth[10, 10] == pytest.approx(2.0) and f.depth[10, 50] == pytest.approx(1.0)
    # IMU at 200 Hz starting with frame 0: 1 sample up to t0, then 20 per 0.1 s
    assert [len(seq[i].imu) for i in range(5)] == [1, 20, 20, 20, 20]
    np.testing.assert_allclose(f.imu.accel, np.tile([0, 0, 9.81], (20, 1)))
    np.testing.assert_allclose(f.T_w_c_gt[:3, 3], [0.2, 0, 0], atol=1e-9)
    assert len(seq.groundtruth()) == 5


def test_modes_follow_what_is_present(tmp_path):
    write_synthetic(tmp_path / "a", stereo=False, imu=False)
    assert open_sequence(tmp_path / "a").modes == ["rgbd", "mono"]
    write_synthetic(tmp_path / "b", stereo=True, imu=False, depth=False)
    assert open_sequence(tmp_path / "b").modes == ["stereo", "mono"]
    write_synthetic(tmp_path / "c", stereo=False, imu=True, depth=False)
    assert open_sequence(tmp_path / "c").modes == ["mono-inertial", "mono"]


def test_missing_camera_yaml(tmp_path):
    write_synthetic(tmp_path)
    (tmp_path / "camera.yaml").unlink()
    with pytest.raises(DataError, match="camera.yaml"):
        open_sequence(tmp_path)


def test_bad_metadata(tmp_path):
    write_synthetic(tmp_path)
    (tmp_path / "synth.json").write_text('{"format": "slam-synth",\n "version": 1,,}')
    with pytest.raises(DataError, match="not valid JSON") as e:
        open_sequence(tmp_path)
    assert e.value.line == 2
    meta = {"format": "slam-synth", "version": 1, "stereo_baseline_m": None, "T_b_c": [[1, 0], [0, 1]]}
    (tmp_path / "synth.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="T_b_c must be a 4x4"):
        open_sequence(tmp_path)


def test_missing_right_image_is_an_error(tmp_path):
    ts = write_synthetic(tmp_path)
    (tmp_path / "right" / f"{ts[1]:.6f}.png").unlink()
    with pytest.raises(DataError, match="does not exist") as e:
        open_sequence(tmp_path)
    assert e.value.path == tmp_path / "right.txt" and e.value.line == 3


def test_imu_out_of_order(tmp_path):
    write_synthetic(tmp_path)
    lines = (tmp_path / "imu.csv").read_text().splitlines()
    lines[10], lines[11] = lines[11], lines[10]
    (tmp_path / "imu.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match="out of order") as e:
        open_sequence(tmp_path)
    assert e.value.path == tmp_path / "imu.csv" and e.value.line == 12
