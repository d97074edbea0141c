"""Frame sources: folders, video files (MJPG .avi written here), devices, stereo pairing, bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calib.sources import FolderSource, is_device, open_source, paired_frames
from slam.errors import DataError

from .synthetic import write_images


def gradient(k: int, w: int = 64, h: int = 48) -> np.ndarray:
    return np.full((h, w), 10 * k, np.uint8)


def test_folder_in_name_order_with_stride(tmp_path):
    write_images(tmp_path, [gradient(k) for k in range(5)])
    (tmp_path / "notes.txt").write_text("not an image")
    frames = list(open_source(tmp_path))
    assert [f.name for f in frames] == [str(tmp_path / f"view_{k:02d}.png") for k in range(5)]
    assert [int(f.image[0, 0]) for f in frames] == [0, 10, 20, 30, 40]
    assert [f.index for f in open_source(tmp_path, stride=2)] == [0, 2, 4]


def test_video_file_frames_with_stride(tmp_path):
    path = tmp_path / "board.avi"
    vw = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (64, 48))
    assert vw.isOpened()
    for k in range(7):
        vw.write(cv2.cvtColor(gradient(3 * k), cv2.COLOR_GRAY2BGR))
    vw.release()
    src = open_source(path, stride=3)
    assert src.kind == "video" and not src.live
    frames = list(src)
    src.close()
    assert [f.index for f in frames] == [0, 3, 6]
    assert [f.name for f in frames] == [f"{path}#0", f"{path}#3", f"{path}#6"]
    assert frames[1].image.shape == (48, 64, 3)
    assert abs(int(frames[1].image[10, 10, 0]) - 90) <= 3  # JPEG: close to the written grey


def test_bad_sources_are_named(tmp_path):
    with pytest.raises(DataError, match="no such folder of images, video file or camera device") as e:
        open_source(tmp_path / "missing")
    assert e.value.path == tmp_path / "missing"
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images in this folder"):
        open_source(tmp_path / "empty")
    bad = tmp_path / "clip.avi"
    bad.write_bytes(b"not a video at all")
    with pytest.raises(DataError, match="clip.avi: cannot open the video|clip.avi: holds no decodable frames"):
        list(open_source(bad))


def test_unreadable_image_names_the_file(tmp_path):
    write_images(tmp_path, [gradient(k) for k in range(3)])
    broken = tmp_path / "view_01.png"
    broken.write_bytes(broken.read_bytes()[:40])
    it = iter(open_source(tmp_path))
    next(it)
    with pytest.raises(DataError, match="view_01.png: cannot read the image") as e:
        next(it)
    assert e.value.path == broken


def test_device_names():
    assert is_device("0") and is_device("/dev/video2")
    assert not is_device("video0") and not is_device("/dev/sda")


def test_stereo_pairs_by_name_or_sorted_order(tmp_path):
    left, right = tmp_path / "left", tmp_path / "right"
    write_images(left, [gradient(k) for k in range(4)], prefix="img")
    write_images(right, [gradient(k + 10) for k in range(4)], prefix="img")
    pairs = list(paired_frames(open_source(left), open_source(right)))
    assert [(a.image[0, 0], b.image[0, 0]) for a, b in pairs] == [(10 * k, 10 * k + 100) for k in range(4)]
    # different names but as many images: by sorted name
    right2 = tmp_path / "right2"
    write_images(right2, [gradient(k) for k in range(4)], prefix="r")
    assert len(list(paired_frames(open_source(left), open_source(right2)))) == 4
    # different counts: the shared names only
    (right / "img_03.png").unlink()
    pairs = list(paired_frames(open_source(left), open_source(right)))
    assert [a.name.split("/")[-1] for a, _ in pairs] == ["img_00.png", "img_01.png", "img_02.png"]
    # different counts and no shared names: an error naming both
    (right2 / "r_00.png").unlink()
    with pytest.raises(DataError, match="no file names in common"):
        list(paired_frames(open_source(left), open_source(right2)))
    assert isinstance(open_source(left), FolderSource)
