import pytest

import slam.datasets as ds
from slam.datasets import available_readers, detect_reader, open_sequence
from slam.datasets.base import Sequence
from slam.errors import DataError

from .conftest import write_synthetic, write_tum_like


def test_all_readers_registered_in_detection_order():
    assert available_readers()[:5] == ["synthetic", "euroc", "kitti", "tum", "video"]


def test_detects_each_shared_recording(tum_path, kitti_path, euroc_path):
    assert detect_reader(tum_path) == "tum"
    assert detect_reader(kitti_path) == "kitti"
    assert detect_reader(kitti_path / "sequences" / "07") == "kitti"
    assert detect_reader(euroc_path) == "euroc"
    assert detect_reader(euroc_path / "mav0") == "euroc"


def test_synthetic_wins_over_tum(tmp_path):
    write_synthetic(tmp_path / "s")
    write_tum_like(tmp_path / "t")
    assert detect_reader(tmp_path / "s") == "synthetic"
    assert detect_reader(tmp_path / "t") == "tum"


def test_unknown_folder_names_path_and_what_was_looked_for(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataError) as e:
        open_sequence(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg
    for looked_for in ("synth.json", "mav0", "calib.txt", "rgb.txt", ".mp4"):
        assert looked_for in msg


def test_missing_path_and_unknown_kind(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_sequence(tmp_path / "nope")
    with pytest.raises(DataError, match="unknown reader 'bogus'"):
        open_sequence(tmp_path, kind="bogus")


def test_explicit_kind_bypasses_detection(tmp_path):
    write_synthetic(tmp_path)
    seq = open_sequence(tmp_path, kind="tum")  # a synthetic folder is also a valid TUM folder
    assert type(seq).__name__ == "TumSequence" and len(seq) == 5


def test_register_adds_a_reader():
    @ds.register("dummy-test-reader")
    class Dummy(Sequence):
        layout = "never"

        @classmethod
        def detect(cls, path):
            return False

        def _read_frame(self, i):
            raise AssertionError("the dummy reader is never read")

    try:
        assert "dummy-test-reader" in available_readers()
        assert Dummy.kind == "dummy-test-reader"
    finally:
        ds._REGISTRY.pop("dummy-test-reader")


def test_data_root_env_override(monkeypatch, tmp_path):
    monkeypatch.setenv("SLAM_DATA", str(tmp_path))
    assert ds.data_root() == tmp_path
    monkeypatch.delenv("SLAM_DATA")
    assert ds.data_root().parts[-2:] == ("shared", "data")
