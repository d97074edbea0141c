"""Intrinsics recovered from synthetic renders of a board through cameras with known intrinsics and lenses."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from calib.intrinsics import calibrate
from calib.sources import SourceFrame
from calib.views import View, ViewCollector

from .synthetic import distortion_error_px


def collect(r) -> ViewCollector:
    col = ViewCollector(r.board, "synthetic")
    for k, img in enumerate(r.images):
        col.add(SourceFrame(f"view_{k:02d}", k, img))
    return col


def check_recovered(true, est, corners) -> None:
    for name in ("fx", "fy", "cx", "cy"):
        assert getattr(est, name) == pytest.approx(getattr(true, name), rel=0.005), name
    assert est.model == true.model
    assert distortion_error_px(true, est, corners) < 0.5


@pytest.mark.parametrize("rendered", ["pinhole_checkerboard", "pinhole_charuco", "fisheye_checkerboard",
                                      "fisheye_charuco"])
def test_recovers_intrinsics_and_distortion(rendered, request):
    r = request.getfixturevalue(rendered)
    col = collect(r)
    assert len(col.views) >= 11, col.skipped
    cal = calibrate(r.board, col.views, col.image_size, r.camera.model)
    assert cal.rms_px < 0.2 and cal.per_view_rms_px.max() < 0.3 and not cal.rejected
    check_recovered(r.camera, cal.camera, np.concatenate([v.corners for v in col.views]))
    # the poses too: each used view's board -> camera translation within 1 cm
    by_name = {f"view_{k:02d}": T for k, T in enumerate(r.poses)}
    for v, T in zip(cal.views, cal.T_c_b):
        assert np.linalg.norm(T[:3, 3] - by_name[v.name][:3, 3]) < 0.01


def test_outlier_view_is_dropped_and_the_rest_still_calibrate(pinhole_checkerboard):
    r = pinhole_checkerboard
    col = collect(r)
    views = list(col.views)
    rng = np.random.default_rng(0)
    bad = views[5]
    views[5] = dataclasses.replace(bad, corners=bad.corners + rng.normal(0, 2.0, bad.corners.shape))
    cal = calibrate(r.board, views, col.image_size, "pinhole")
    assert [name for name, _ in cal.rejected] == [bad.name]
    assert cal.rejected[0][1] > 1.0
    assert bad.name not in [v.name for v in cal.views] and len(cal.views) == len(views) - 1
    check_recovered(r.camera, cal.camera, np.concatenate([v.corners for v in cal.views]))


def test_outliers_never_take_the_views_below_the_minimum(pinhole_checkerboard):
    r = pinhole_checkerboard
    col = collect(r)
    views = col.views[:7]
    rng = np.random.default_rng(1)
    for k in (1, 4):  # two views with pixels of corner noise; only one may go
        views[k] = dataclasses.replace(views[k], corners=views[k].corners + rng.normal(0, 4.0, views[k].corners.shape))
    cal = calibrate(r.board, views, col.image_size, "pinhole", min_views=6)
    assert len(cal.views) == 6 and len(cal.rejected) == 1
    assert cal.rejected[0][0] in (views[1].name, views[4].name)


def test_too_few_views_is_refused(pinhole_checkerboard):
    r = pinhole_checkerboard
    views: list[View] = collect(r).views[:2]
    with pytest.raises(ValueError, match="2 views"):
        calibrate(r.board, views, (640, 480))
    with pytest.raises(ValueError, match="model"):
        calibrate(r.board, collect(r).views, (640, 480), "omni")
