"""Stereo calibration on renders of a rig with a known baseline: ``slam-calib stereo`` end to end."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from calib.cli import main
from slam.geometry import PinholeCamera

from .conftest import T_L_R
from .synthetic import write_images


def test_stereo_recovers_baseline_rotation_and_rectifies(stereo_pair, tmp_path, capsys):
    left, right = stereo_pair
    write_images(tmp_path / "left", left.images, prefix="frame")
    write_images(tmp_path / "right", right.images, prefix="frame")
    out = tmp_path / "stereo.yaml"
    code = main(["stereo", str(tmp_path / "left"), str(tmp_path / "right"), "--board", "checkerboard:9x6:0.03",
                 "--out", str(out), "--log-level", "WARNING"])
    assert code == 0, capsys.readouterr().err
    d = yaml.safe_load(out.read_text())
    true_baseline = float(np.linalg.norm(T_L_R[:3, 3]))
    assert d["baseline_m"] == pytest.approx(true_baseline, rel=0.01)
    R, t = np.array(d["R"]), np.array(d["t"])
    T_r_l = np.linalg.inv(T_L_R)
    np.testing.assert_allclose(t, T_r_l[:3, 3], atol=0.002)
    angle = np.degrees(np.arccos(np.clip((np.trace(R @ T_r_l[:3, :3].T) - 1) / 2, -1, 1)))
    assert angle < 0.1
    np.testing.assert_allclose(np.array(d["T_left_right"]), T_L_R, atol=0.002)
    assert d["rms"] < 0.2 and d["pairs"] >= 11
    for side in ("left", "right"):  # each camera's k3 decision and region coverage
        assert d[side]["k3"].startswith(("fixed at 0 (auto)", "fitted (auto)"))
        assert d[side]["region_coverage"]["grid"] == "4x4" and len(d[side]["region_coverage"]["regions"]) == 4
    # each camera's intrinsics, loadable as a camera file
    for side, r in (("left", left), ("right", right)):
        cam = PinholeCamera.from_dict(d[side])
        for k in ("fx", "fy", "cx", "cy"):
            assert getattr(cam, k) == pytest.approx(getattr(r.camera, k), rel=0.005)
    # rectified projections: same focal length and row, the right one shifted by -f * baseline
    P1, P2 = np.array(d["rectification"]["P1"]), np.array(d["rectification"]["P2"])
    assert P1.shape == P2.shape == (3, 4) and P1[1, 2] == pytest.approx(P2[1, 2])
    assert -P2[0, 3] / P2[0, 0] == pytest.approx(true_baseline, rel=0.01)
    # after rectification a corner lies on the same image row in both cameras
    Rl, Rr = (np.array(d["rectification"][k]) for k in ("R1", "R2"))
    cl, cr = (PinholeCamera.from_dict(d[s]) for s in ("left", "right"))
    obj = left.board.object_points()
    T_l_b = left.poses[0]
    Pl = obj @ T_l_b[:3, :3].T + T_l_b[:3, 3]
    Pr = Pl @ T_r_l[:3, :3].T + T_r_l[:3, 3]
    ul = cv2.undistortPoints(cl.project(Pl)[0].reshape(-1, 1, 2), cl.K, np.array(cl.dist), R=Rl, P=P1)
    ur = cv2.undistortPoints(cr.project(Pr)[0].reshape(-1, 1, 2), cr.K, np.array(cr.dist), R=Rr, P=P2)
    assert np.abs(ul[:, 0, 1] - ur[:, 0, 1]).max() < 0.5


def test_stereo_with_mismatched_resolutions_is_refused(stereo_pair, tmp_path, capsys):
    left, right = stereo_pair
    write_images(tmp_path / "left", left.images[:3], prefix="frame")
    write_images(tmp_path / "right", [cv2.resize(im, (320, 240)) for im in right.images[:3]], prefix="frame")
    code = main(["stereo", str(tmp_path / "left"), str(tmp_path / "right"), "--board", "checkerboard:9x6:0.03",
                 "--out", str(tmp_path / "s.yaml"), "--log-level", "WARNING"])
    err = capsys.readouterr().err
    assert code == 2 and "frame_00.png: image is 320x240 but the left camera's" in err


def test_stereo_needs_pairs(stereo_pair, tmp_path, capsys):
    """Plenty of views in each camera, but never at the same time: no pairs, a clear error."""
    left, right = stereo_pair
    blank = np.full((480, 640), 100, np.uint8)
    write_images(tmp_path / "left", list(left.images) + [blank] * 12, prefix="frame")
    write_images(tmp_path / "right", [blank] * 12 + list(right.images[:12]) + [blank], prefix="frame")
    code = main(["stereo", str(tmp_path / "left"), str(tmp_path / "right"), "--board", "checkerboard:9x6:0.03",
                 "--out", str(tmp_path / "s.yaml"), "--log-level", "WARNING"])
    err = capsys.readouterr().err
    assert code == 2 and "too few image pairs with the board in both cameras: 1 found, at least 10 needed" in err
