"""View selection: blurry frames and near-duplicates skipped, coverage, clear errors for bad input."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from calib.sources import SourceFrame
from calib.views import SelectionConfig, ViewCollector, draw_coverage, edge_width_px
from slam.errors import DataError

from .synthetic import CHECKERBOARD


def frame(name: str, img: np.ndarray, k: int = 0) -> SourceFrame:
    return SourceFrame(name, k, img)


def test_blurry_frame_is_skipped(pinhole_checkerboard):
    img = pinhole_checkerboard.images[0]
    col = ViewCollector(CHECKERBOARD, "synthetic")
    blurred = cv2.GaussianBlur(img, (0, 0), 3.5)
    assert CHECKERBOARD.detect(blurred) is not None  # still found, but too soft to use
    cand = col.add(frame("soft.png", blurred))
    assert not cand.accepted and cand.reason.startswith("blurry")
    assert col.add(frame("sharp.png", img)).accepted
    assert col.skipped == {"blurry": 1} and [v.name for v in col.views] == ["sharp.png"]


def test_edge_width_is_about_the_same_near_and_far(pinhole_checkerboard):
    """The blur measure does not depend on how large the board appears (unlike the Laplacian's variance)."""
    widths = []
    for img in pinhole_checkerboard.images[:6]:
        det = CHECKERBOARD.detect(img)
        widths.append(edge_width_px(img, det.corners))
    assert max(widths) - min(widths) < 0.5 and max(widths) < SelectionConfig.max_blur_px


def test_near_duplicate_is_skipped_but_a_moved_board_is_kept(pinhole_checkerboard):
    imgs = pinhole_checkerboard.images
    col = ViewCollector(CHECKERBOARD, "synthetic")
    assert col.add(frame("a.png", imgs[0])).accepted
    shifted = np.roll(imgs[0], 3, axis=1)  # 3 px: the same view
    cand = col.add(frame("b.png", shifted))
    assert not cand.accepted and cand.reason == "duplicate of a.png"
    assert col.add(frame("c.png", imgs[1])).accepted
    assert len(col.views) == 2 and col.skipped == {"duplicate": 1}


def test_coverage_and_enough(pinhole_checkerboard):
    col = ViewCollector(CHECKERBOARD, "synthetic", SelectionConfig(target_coverage=0.7, min_tilted=3))
    col.add(frame("v0", pinhole_checkerboard.images[0]))
    first = col.coverage
    assert 0 < first < 0.5 and not col.enough(1)
    for k, img in enumerate(pinhole_checkerboard.images[1:], start=1):
        col.add(frame(f"v{k}", img, k))
    assert col.coverage >= 0.7 and col.n_tilted >= 3
    assert col.enough(10) and not col.enough(100)
    assert "coverage" in col.progress()


def test_mixed_image_sizes_name_the_odd_file(pinhole_checkerboard):
    col = ViewCollector(CHECKERBOARD, "shots/")
    col.add(frame("shots/a.png", pinhole_checkerboard.images[0]))
    with pytest.raises(DataError, match=r"shots/b.png: image is 320x240 but shots/a.png is 640x480") as e:
        col.add(frame("shots/b.png", cv2.resize(pinhole_checkerboard.images[1], (320, 240))))
    assert str(e.value.path) == "shots/b.png"


def test_no_board_anywhere_and_too_few_views_are_clear_errors(pinhole_checkerboard):
    blank = np.full((480, 640), 200, np.uint8)
    col = ViewCollector(CHECKERBOARD, "shots/")
    for k in range(3):
        col.add(frame(f"shots/{k}.png", blank, k))
    with pytest.raises(DataError, match=r"shots/: no checkerboard:9x6:0.03 board found in any of the 3 images"):
        col.require(10)
    for k in range(3):
        col.add(frame(f"shots/v{k}.png", pinhole_checkerboard.images[k], k))
    with pytest.raises(DataError, match=r"too few usable views: 3 found, at least 10 needed .*no board: 3"):
        col.require(10)
    col.require(3)  # enough for a caller asking less


def test_coverage_overlay_draws_without_a_screen(pinhole_checkerboard):
    col = ViewCollector(CHECKERBOARD, "synthetic")
    img = pinhole_checkerboard.images[0]
    cand = col.add(frame("v0", img))
    out = draw_coverage(img, col, cand)
    assert out.shape == (480, 640, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[..., 1], cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)[..., 1])  # tinted / drawn on
