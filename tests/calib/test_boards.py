"""Board specs, corner positions, detection accuracy and corner numbering on renders."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calib.boards import Board, BoardSpecError, render_view
from slam.geometry import make_pose, so3_exp

from .synthetic import CHARUCO, CHECKERBOARD, PINHOLE


def test_parse_checkerboard_and_charuco():
    b = Board.parse("checkerboard:9x6:0.025")
    assert (b.kind, b.cols, b.rows, b.square_m, b.n_corners) == ("checkerboard", 9, 6, 0.025, 54)
    assert Board.parse(b.spec) == b
    c = Board.parse("charuco:7x5:0.04:0.03:5x5_100")
    assert (c.kind, c.cols, c.rows, c.marker_m, c.dictionary) == ("charuco", 7, 5, 0.03, "DICT_5X5_100")
    assert c.n_corners == 24 and Board.parse(c.spec) == c


@pytest.mark.parametrize("spec, message", [
    ("checkerboard:9x6", "expected checkerboard:COLSxROWS:SQUARE_M"),
    ("checkerboard:9by6:0.02", "expected"),
    ("circles:4x11:0.02", "expected"),
    ("checkerboard:1x6:0.02", "too small"),
    ("checkerboard:9x6:-0.02", "positive"),
    ("charuco:7x5:0.04:0.05:DICT_5X5_100", "marker size"),
    ("charuco:7x5:0.04:0.03:DICT_9X9_7", "unknown ArUco dictionary"),
    ("charuco:20x20:0.04:0.03:DICT_4X4_50", "need 200 markers"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(BoardSpecError, match=message) as e:
        Board.parse(spec)
    assert repr(spec) in str(e.value)


def test_object_points_are_a_metric_grid():
    obj = CHECKERBOARD.object_points()
    assert obj.shape == (54, 3) and np.all(obj[:, 2] == 0)
    np.testing.assert_allclose(obj[1] - obj[0], [0.03, 0, 0])
    np.testing.assert_allclose(obj[9] - obj[0], [0, 0.03, 0])
    ch = CHARUCO.object_points()
    assert ch.shape == (35, 3)
    np.testing.assert_allclose(ch[0], [0.035, 0.035, 0], atol=1e-7)  # one square in from the outer corner
    np.testing.assert_allclose(ch[1] - ch[0], [0.035, 0, 0], atol=1e-7)


@pytest.mark.parametrize("board", [CHECKERBOARD, CHARUCO], ids=["checkerboard", "charuco"])
@pytest.mark.parametrize("roll_deg", [0.0, 95.0, 180.0, -120.0])
def test_detection_is_subpixel_and_numbers_corners_by_the_board(board, roll_deg):
    """Corners land within 0.25 px of the true projection and keep their ids however the board is turned."""
    obj = board.object_points()
    R = so3_exp(np.radians([20.0, -15.0, 0.0])) @ so3_exp(np.array([0, 0, np.radians(roll_deg)]))
    T = make_pose(R, [0.0, 0.0, 0.5] - R @ obj.mean(axis=0))
    img = cv2.GaussianBlur(render_view(board, PINHOLE, T), (0, 0), 0.7)
    det = board.detect(img)
    assert det is not None and len(det.ids) >= 0.8 * board.n_corners
    uv, _ = PINHOLE.project(obj[det.ids] @ T[:3, :3].T + T[:3, 3])
    err = np.linalg.norm(det.corners - uv, axis=1)
    assert np.sqrt((err**2).mean()) < 0.12 and err.max() < 0.3


def test_nothing_detected_in_an_image_without_a_board():
    rng = np.random.default_rng(0)
    noise = cv2.GaussianBlur(rng.integers(0, 256, (240, 320), dtype=np.uint8), (0, 0), 2)
    assert CHECKERBOARD.detect(noise) is None
    assert CHARUCO.detect(np.full((240, 320, 3), 128, np.uint8)) is None


def test_texture_map_puts_corners_on_square_corners():
    img, A = CHECKERBOARD.texture(px_per_square=40, margin_px=20)
    u, v, _ = A @ np.array([0.0, 0.0, 1.0])
    # the first inner corner sits between pixels 59 and 60 (pixel centres) of the 40-pixel squares
    assert (u, v) == (59.5, 59.5)
    assert img[59, 59] == 255 and img[60, 60] == 255 and img[59, 60] == 0 and img[60, 59] == 0
