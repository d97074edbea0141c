import cv2
import numpy as np
import pytest

from slam.datasets.images import image_size, read_depth, read_rgb
from slam.errors import CorruptFrameError


def test_colour_png_comes_back_rgb(tmp_path):
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 0] = 200  # red
    cv2.imwrite(str(tmp_path / "a.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    out = read_rgb(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (4, 5, 3)
    assert (out[..., 0] == 200).all() and (out[..., 1:] == 0).all()
    assert image_size(tmp_path / "a.png") == (5, 4)


def test_grayscale_replicated_to_three_channels(tmp_path):
    g = np.arange(20, dtype=np.uint8).reshape(4, 5)
    cv2.imwrite(str(tmp_path / "g.png"), g)
    out = read_rgb(tmp_path / "g.png")
    assert out.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], g)


def test_depth_to_metres_zero_invalid(tmp_path):
    d = np.array([[0, 5000], [5383, 65535]], np.uint16)
    cv2.imwrite(str(tmp_path / "d.png"), d)
    out = read_depth(tmp_path / "d.png")
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [[0.0, 1.0], [1.0766, 13.107]], rtol=1e-6)


def test_eight_bit_depth_rejected(tmp_path):
    cv2.imwrite(str(tmp_path / "d8.png"), np.zeros((4, 4), np.uint8))
    with pytest.raises(CorruptFrameError, match="16-bit"):
        read_depth(tmp_path / "d8.png")


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "missing"])
def test_bad_image_files_raise_corrupt_frame_naming_the_file(tmp_path, damage):
    ok, buf = cv2.imencode(".png", np.full((30, 40, 3), 7, np.uint8))
    data = buf.tobytes()
    p = tmp_path / "bad.png"
    if damage == "truncated":
        p.write_bytes(data[: len(data) // 2])
    elif damage == "garbage":
        p.write_bytes(b"this is not a png" * 10)
    elif damage == "empty":
        p.write_bytes(b"")
    with pytest.raises(CorruptFrameError) as e:
        read_rgb(p)
    assert e.value.path == p and str(p) in str(e.value)
