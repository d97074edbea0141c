"""Images at another size than the camera's: the frame is skipped with a reason naming the file and both sizes
(every reader), and a run whose frames are all skipped says why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.cli.run import main
from slam.datasets import open_sequence
from slam.datasets.base import Sequence
from slam.errors import CorruptFrameError
from slam.records import Frame
from slam.trajectory import read_tum

from .conftest import CAM, texture, write_synthetic
from .test_datasets_euroc import write_euroc
from .test_datasets_kitti import write_kitti


def resize_file(path: Path, size: tuple[int, int]) -> None:
    """Rewrite the image at ``path`` at ``size`` (width, height), keeping its sample type (16-bit depth too)."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(path), cv2.resize(img, size, interpolation=cv2.INTER_NEAREST))


def tum_copy(tum_path: Path, root: Path) -> tuple[list[Path], list[Path]]:
    """The shared 9-frame fr1_desk clip copied under ``root``: (rgb files, depth files), sorted."""
    shutil.copytree(tum_path, root)
    return sorted((root / "rgb").iterdir()), sorted((root / "depth").iterdir())


def reason_of(seq: Sequence, i: int) -> CorruptFrameError:
    with pytest.raises(CorruptFrameError) as e:
        seq[i]
    return e.value


# ------------------------------------------------------------------ TUM (shared clip)
def test_tum_frames_with_wrong_sized_depth_or_rgb_are_refused(tum_path, tmp_path):
    rgb, depth = tum_copy(tum_path, tmp_path / "seq")
    resize_file(depth[2], (320, 240))
    resize_file(rgb[5], (1280, 960))
    seq = open_sequence(tmp_path / "seq")
    e = reason_of(seq, 2)
    assert e.path == depth[2] and str(e) == f"{depth[2]}: depth image is 320x240 but the camera is 640x480"
    e = reason_of(seq, 5)
    assert e.path == rgb[5] and "image is 1280x960 but the camera is 640x480" in str(e)
    for i in (0, 1, 3, 4, 6, 7, 8):
        f = seq[i]
        assert f.image.shape == (480, 640, 3) and f.depth.shape == (480, 640)
    seq.use_streams("mono")  # depth not read in mono: its size does not matter
    assert seq[2].depth is None and seq[2].image.shape == (480, 640, 3)


def test_run_skips_and_reports_wrong_sized_frames(tum_path, tmp_path):
    rgb, depth = tum_copy(tum_path, tmp_path / "seq")
    resize_file(depth[3], (320, 240))
    resize_file(rgb[6], (1280, 960))
    out = tmp_path / "out"
    assert main([str(tmp_path / "seq"), "--out", str(out), "--no-progress"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    skipped = {s["index"]: s["reason"] for s in summary["skipped_frames"]}
    assert skipped == {3: f"{depth[3]}: depth image is 320x240 but the camera is 640x480",
                       6: f"{rgb[6]}: image is 1280x960 but the camera is 640x480"}
    assert len(read_tum(out / "trajectory.txt")) == 7 and summary["lost_frames"] == []


def test_run_with_all_depth_at_another_size_says_so(tum_path, tmp_path, capsys):
    _, depth = tum_copy(tum_path, tmp_path / "seq")
    for p in depth:
        resize_file(p, (320, 240))
    assert main([str(tmp_path / "seq"), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"all 9 frames were skipped; frame 0: {depth[0]}: depth image is 320x240 but the camera is 640x480" in err


# ------------------------------------------------------------------ the other readers
def test_kitti_odd_sized_image_even_the_first(tmp_path):
    d = write_kitti(tmp_path, n=5, stereo=True)
    resize_file(d / "image_0" / "000000.png", (128, 96))
    resize_file(d / "image_1" / "000003.png", (32, 24))
    seq = open_sequence(tmp_path)
    assert (seq.camera.width, seq.camera.height) == (64, 48)  # the size most images have, not the first's
    assert str(reason_of(seq, 0)) == f"{d / 'image_0' / '000000.png'}: image is 128x96 but the camera is 64x48"
    seq.use_streams("stereo")
    assert str(reason_of(seq, 3)) == f"{d / 'image_1' / '000003.png'}: right image is 32x24 but the camera is 64x48"
    assert seq[1].right.shape == (48, 64, 3)
    seq.use_streams("mono")
    assert seq[3].image.shape == (48, 64, 3)  # the right image is not read in mono


def test_euroc_wrong_sized_left_and_right_images(tmp_path):
    mav0 = write_euroc(tmp_path, stereo=True)
    left = sorted((mav0 / "cam0" / "data").iterdir())
    right = sorted((mav0 / "cam1" / "data").iterdir())
    resize_file(left[1], (128, 96))
    resize_file(right[2], (128, 96))
    seq = open_sequence(tmp_path)
    seq.use_streams("stereo")
    assert str(reason_of(seq, 1)) == f"{left[1]}: image is 128x96 but the camera is 64x48"
    assert str(reason_of(seq, 2)) == f"{right[2]}: right image is 128x96 but the camera is 64x48"
    assert seq[0].right.shape == (48, 64, 3) and seq[3].image.shape == (48, 64, 3)


def test_synthetic_wrong_sized_depth_and_right(tmp_path):
    ts = write_synthetic(tmp_path / "s", n=4)
    resize_file(tmp_path / "s" / "depth" / f"{ts[1]:.6f}.png", (32, 24))
    resize_file(tmp_path / "s" / "right" / f"{ts[2]:.6f}.png", (32, 24))
    seq = open_sequence(tmp_path / "s")
    seq.use_streams("rgbd")
    assert "depth image is 32x24 but the camera is 64x48" in str(reason_of(seq, 1))
    seq.use_streams("stereo")
    assert str(reason_of(seq, 2)) == (f"{tmp_path / 's' / 'right' / f'{ts[2]:.6f}.png'}: right image is 32x24 "
                                      "but the camera is 64x48")
    assert seq[1].right.shape == (48, 64, 3)


def test_video_frames_not_at_the_camera_files_size(tmp_path):
    video = tmp_path / "clip.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (128, 96))
    for k in range(3):
        vw.write(texture(k, h=96, w=128))
    vw.release()
    CAM.to_yaml(tmp_path / "clip.yaml")  # a 64x48 camera for a 128x96 video
    seq = open_sequence(video)
    assert str(reason_of(seq, 1)) == f"{video}#1: frame 1 is 128x96 but the camera is 64x48"


class _OddReader(Sequence):
    """A reader that forgets to check its depth size (the base class still does)."""

    def __init__(self) -> None:
        self.root, self.name, self.camera, self.has_depth = Path("odd"), "odd", CAM, True
        self.timestamps = np.array([0.0])

    @classmethod
    def detect(cls, path: Path) -> bool:
        return False

    def _read_frame(self, i: int) -> Frame:
        return Frame(i, 0.0, texture(0), CAM, depth=np.ones((24, 32), np.float32), source="odd/0.png")


def test_base_class_checks_what_a_reader_delivers():
    e = reason_of(_OddReader(), 0)
    assert str(e) == "odd/0.png: depth image of this frame is 32x24 but the camera is 64x48"
