"""The highest radial term (pinhole k3, fisheye k4) held at 0 unless the views reach the image corners, and
the coverage of each image region reported (camera file, log)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml

from calib.cli import main
from calib.coverage import MIN_CORNER_COVERAGE, region_coverage
from calib.intrinsics import calibrate
from slam.geometry import PinholeCamera

from .synthetic import corner_undistortion_error_px, write_images
from .test_intrinsics import collect


def no_lens(camera: PinholeCamera) -> PinholeCamera:
    """The trivial answer: the true focal lengths and centre, no distortion."""
    return PinholeCamera(camera.width, camera.height, camera.fx, camera.fy, camera.cx, camera.cy)


def test_region_coverage_of_centre_and_full_views(pinhole_centre, pinhole_checkerboard):
    centre = region_coverage(collect(pinhole_centre).views, (640, 480))
    full = region_coverage(collect(pinhole_checkerboard).views, (640, 480))
    assert centre.cells.shape == full.cells.shape == (4, 4)
    # the middle four regions are covered by both; the corner regions only by views spread over the image
    assert centre.cells[1:3, 1:3].min() > 0.95 and full.cells[1:3, 1:3].min() > 0.95
    assert max(centre.corner_fractions().values()) < 0.05 and not centre.reaches_corners()
    assert set(centre.uncovered_corners()) == {"top-left", "top-right", "bottom-left", "bottom-right"}
    assert min(full.corner_fractions().values()) > MIN_CORNER_COVERAGE and full.reaches_corners()
    d = centre.to_dict()
    assert d["grid"] == "4x4" and len(d["regions"]) == 4 and all(len(r) == 4 for r in d["regions"])


def test_views_over_the_centre_hold_k3_at_zero(pinhole_centre):
    r = pinhole_centre
    col = collect(r)
    cal = calibrate(r.board, col.views, col.image_size, "pinhole")
    assert cal.top_term == "k3" and cal.top_term_fixed and cal.camera.dist[4] == 0.0
    assert "do not reach the image corners" in cal.top_term_reason
    err = corner_undistortion_error_px(r.camera, cal.camera)
    trivial = corner_undistortion_error_px(r.camera, no_lens(r.camera))  # 61 px
    fitted = calibrate(r.board, col.views, col.image_size, "pinhole", top_term="fit")
    err_fitted = corner_undistortion_error_px(r.camera, fitted.camera)  # 12 px: k3 extrapolates
    assert not fitted.top_term_fixed and fitted.camera.dist[4] != 0.0
    assert err < 5.0 and err < 0.1 * trivial and err < 0.5 * err_fitted, (err, err_fitted, trivial)


def test_views_reaching_the_corners_fit_k3(pinhole_checkerboard):
    r = pinhole_checkerboard
    col = collect(r)
    cal = calibrate(r.board, col.views, col.image_size, "pinhole")
    assert not cal.top_term_fixed and cal.camera.dist[4] != 0.0
    assert cal.top_term_reason.startswith("fitted (auto)")
    # the data reach far enough out for k3 to stay tame at the corners (2 px; 61 px without a lens model)
    assert corner_undistortion_error_px(r.camera, cal.camera) < 0.05 * corner_undistortion_error_px(
        r.camera, no_lens(r.camera))
    fixed = calibrate(r.board, col.views, col.image_size, "pinhole", top_term="fix")
    assert fixed.top_term_fixed and fixed.camera.dist[4] == 0.0 and fixed.top_term_reason == "fixed at 0 (asked)"
    with pytest.raises(ValueError, match="top_term"):
        calibrate(r.board, col.views, col.image_size, "pinhole", top_term="maybe")


def test_fisheye_views_over_the_centre_hold_k4_at_zero(fisheye_centre):
    r = fisheye_centre
    col = collect(r)
    cal = calibrate(r.board, col.views, col.image_size, "fisheye")
    assert cal.top_term == "k4" and cal.top_term_fixed and cal.camera.dist[3] == 0.0
    err = corner_undistortion_error_px(r.camera, cal.camera)  # 11 px (the true k4 is -0.002, not 0)
    trivial = corner_undistortion_error_px(r.camera, no_lens(r.camera))  # 496 px
    fitted = calibrate(r.board, col.views, col.image_size, "fisheye", top_term="fit")
    err_fitted = corner_undistortion_error_px(r.camera, fitted.camera)  # over 700 px
    assert err < 0.05 * trivial and err < 0.1 * err_fitted, (err, err_fitted, trivial)


def test_cli_reports_coverage_and_warns_about_the_corners(pinhole_centre, tmp_path, capsys, caplog):
    write_images(tmp_path / "shots", pinhole_centre.images)
    out = tmp_path / "camera.yaml"
    args = ["camera", str(tmp_path / "shots"), "--board", "checkerboard:9x6:0.03", "--min-views", "8"]
    with caplog.at_level(logging.INFO, logger="calib.cli"):
        assert main([*args, "--out", str(out)]) == 0, capsys.readouterr().err
    d = yaml.safe_load(out.read_text())
    assert d["distortion"][4] == 0.0 and d["calibration"]["k3"].startswith("fixed at 0 (auto)")
    regions = np.array(d["calibration"]["region_coverage"]["regions"])
    assert regions.shape == (4, 4) and regions[1:3, 1:3].min() > 0.95 and regions[0, 0] < 0.05
    warnings = [rec.getMessage() for rec in caplog.records if rec.levelno == logging.WARNING]
    assert any("do not reach the image corners (top-left, top-right, bottom-left, bottom-right)" in w
               for w in warnings), warnings
    assert any("image regions (4x4) covered" in rec.getMessage() for rec in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="calib.cli"):
        assert main([*args, "--k3", "fit", "--out", str(out)]) == 0
    d = yaml.safe_load(out.read_text())
    assert d["distortion"][4] != 0.0 and d["calibration"]["k3"].startswith("fitted (asked)")
    assert any("k3 fitted (asked); the views do not reach" in rec.getMessage() for rec in caplog.records
               if rec.levelno == logging.WARNING)
