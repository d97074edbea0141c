import numpy as np
import pytest

from slam.errors import DataError
from slam.geometry import make_pose, so3_exp, rotation_angle
from slam.trajectory import Trajectory, interpolate_poses, read_kitti, read_tum, write_kitti, write_tum


def random_traj(n=20, seed=0):
    rng = np.random.default_rng(seed)
    poses = np.stack([make_pose(so3_exp(rng.normal(size=3)), rng.normal(size=3)) for _ in range(n)])
    return Trajectory(np.arange(n) * 0.1 + 1000.0, poses)


def test_tum_round_trip(tmp_path):
    tr = random_traj()
    write_tum(tmp_path / "t.txt", tr)
    back = read_tum(tmp_path / "t.txt")
    np.testing.assert_allclose(back.timestamps, tr.timestamps, atol=1e-6)
    np.testing.assert_allclose(back.poses, tr.poses, atol=1e-8)


def test_kitti_round_trip(tmp_path):
    tr = random_traj()
    write_kitti(tmp_path / "k.txt", tr)
    back = read_kitti(tmp_path / "k.txt", timestamps=tr.timestamps)
    np.testing.assert_allclose(back.poses, tr.poses, atol=1e-8)
    assert read_kitti(tmp_path / "k.txt").timestamps[-1] == len(tr) - 1


@pytest.mark.parametrize(
    "content,pattern",
    [
        ("1 0 0 0 0 0 0 1\n2 0 0 0 0 0 1\n", r"t.txt:2: expected 8 columns"),
        ("# c\n1 0 0 0 0 0 0 1\n2 0 nan 0 0 0 0 1\n", r"t.txt:3: non-finite"),
        ("1 0 0 0 0 0 0 1\n1 0 0 0 0 0 0 1\n", r"t.txt:2: timestamp 1.0 is duplicated"),
        ("2 0 0 0 0 0 0 1\n1 0 0 0 0 0 0 1\n", r"t.txt:2: timestamp 1.0 is out of order"),
        ("1 0 0 0 0 0 0 2\n", r"t.txt:1: quaternion norm"),
        ("1 0 0 x 0 0 0 1\n", r"t.txt:1: not a number"),
        ("# only a comment\n", r"t.txt: trajectory file holds no poses"),
    ],
)
def test_tum_errors_name_file_and_line(tmp_path, content, pattern):
    (tmp_path / "t.txt").write_text(content)
    with pytest.raises(DataError, match=pattern):
        read_tum(tmp_path / "t.txt")


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nope.txt: file is missing"):
        read_tum(tmp_path / "nope.txt")


def test_interpolation_closed_form():
    T0 = make_pose(np.eye(3), [0, 0, 0])
    T1 = make_pose(so3_exp(np.array([0, 0, 1.0])), [2, 0, 0])
    tr = Trajectory(np.array([0.0, 1.0]), np.stack([T0, T1]))
    poses, ok = interpolate_poses(tr, np.array([0.25, 1.0, -0.1, 1.5]))
    assert ok.tolist() == [True, True, False, False]
    np.testing.assert_allclose(poses[0][:3, 3], [0.5, 0, 0])
    assert rotation_angle(poses[0][:3, :3]) == pytest.approx(0.25)
    np.testing.assert_allclose(poses[1], T1)
    _, ok = interpolate_poses(tr, np.array([0.5]), max_gap=0.5)
    assert not ok[0]


def test_path_length_and_relative():
    tr = Trajectory(np.arange(3.0), np.stack([make_pose(np.eye(3), [x, 0, 0]) for x in (1.0, 2.0, 4.0)]))
    assert tr.path_length() == pytest.approx(3.0)
    np.testing.assert_allclose(tr.relative_to_first().positions[:, 0], [0, 1, 3])
