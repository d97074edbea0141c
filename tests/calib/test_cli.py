"""``slam-calib camera`` end to end: folder and video sources, the YAML it writes, and its errors."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import yaml

from calib.cli import main
from slam.geometry import PinholeCamera

from .synthetic import write_images


def run(capsys, *args: str) -> tuple[int, str]:
    code = main(["camera", *args, "--log-level", "WARNING"])
    return code, capsys.readouterr().err


def test_camera_from_a_folder_writes_a_loadable_yaml(pinhole_checkerboard, tmp_path, capsys):
    r = pinhole_checkerboard
    shots = tmp_path / "shots"
    write_images(shots, r.images)
    out = tmp_path / "camera.yaml"
    code, err = run(capsys, str(shots), "--board", "checkerboard:9x6:0.03", "--out", str(out))
    assert code == 0, err
    cam = PinholeCamera.from_yaml(out)
    for k in ("fx", "fy", "cx", "cy"):
        assert getattr(cam, k) == pytest.approx(getattr(r.camera, k), rel=0.005)
    d = yaml.safe_load(out.read_text())
    assert {"width", "height", "fx", "fy", "cx", "cy", "model", "distortion", "rms"} <= set(d)
    assert (d["width"], d["height"], d["model"]) == (640, 480, "pinhole") and len(d["distortion"]) == 5
    assert 0 < d["rms"] < 0.2
    per_view = d["calibration"]["per_view_rms_px"]
    assert len(per_view) == d["calibration"]["views"] == len(r.images) and "view_00.png" in per_view
    assert out.read_text().startswith("# slam-calib camera")


def test_fisheye_model_from_the_command_line(fisheye_checkerboard, tmp_path, capsys):
    r = fisheye_checkerboard
    write_images(tmp_path / "shots", r.images)
    out = tmp_path / "fisheye.yaml"
    code, err = run(capsys, str(tmp_path / "shots"), "--board", "checkerboard:9x6:0.03", "--model", "fisheye",
                    "--out", str(out))
    assert code == 0, err
    cam = PinholeCamera.from_yaml(out)
    assert cam.model == "fisheye" and len(cam.dist) == 4
    assert cam.fx == pytest.approx(r.camera.fx, rel=0.005)


def test_camera_from_a_video(pinhole_charuco, tmp_path, capsys):
    """Each view held for three frames of an MJPG video: duplicates are skipped, every view is found."""
    r = pinhole_charuco
    video = tmp_path / "board.avi"
    vw = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 15.0, (640, 480))
    for img in r.images:
        for _ in range(3):
            vw.write(cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
    vw.release()
    out = tmp_path / "camera.yaml"
    code, err = run(capsys, str(video), "--board", "charuco:8x6:0.035:0.021:DICT_4X4_50", "--out", str(out),
                    "--max-views", "100")
    assert code == 0, err
    d = yaml.safe_load(out.read_text())
    # the repeats of a view are skipped as duplicates: each kept view is the first frame of its hold
    names = set(d["calibration"]["per_view_rms_px"])
    assert len(names) == d["calibration"]["views"] >= len(r.images) - 2
    assert names <= {f"board.avi#{3 * k}" for k in range(len(r.images))}
    for k in ("fx", "fy", "cx", "cy"):
        assert d[k] == pytest.approx(getattr(r.camera, k), rel=0.005)


# ------------------------------------------------------------------ bad input
def test_no_board_found(tmp_path, capsys):
    write_images(tmp_path / "shots", [np.full((480, 640), 90 + k, np.uint8) for k in range(4)])
    code, err = run(capsys, str(tmp_path / "shots"), "--board", "checkerboard:9x6:0.03", "--out",
                    str(tmp_path / "c.yaml"))
    assert code == 2
    assert f"{tmp_path / 'shots'}: no checkerboard:9x6:0.03 board found in any of the 4 images" in err
    assert not (tmp_path / "c.yaml").exists()


def test_wrong_board_size_finds_nothing(pinhole_checkerboard, tmp_path, capsys):
    write_images(tmp_path / "shots", pinhole_checkerboard.images[:3])
    code, err = run(capsys, str(tmp_path / "shots"), "--board", "checkerboard:10x7:0.03", "--out",
                    str(tmp_path / "c.yaml"))
    assert code == 2 and "board found in any of the 3 images" in err and "counts inner corners" in err


def test_too_few_views(pinhole_checkerboard, tmp_path, capsys):
    write_images(tmp_path / "shots", pinhole_checkerboard.images[:4])
    code, err = run(capsys, str(tmp_path / "shots"), "--board", "checkerboard:9x6:0.03", "--out",
                    str(tmp_path / "c.yaml"))
    assert code == 2 and "too few usable views: 4 found, at least 10 needed" in err


def test_mixed_image_sizes(pinhole_checkerboard, tmp_path, capsys):
    imgs = list(pinhole_checkerboard.images[:4])
    imgs[2] = cv2.resize(imgs[2], (320, 240))
    paths = write_images(tmp_path / "shots", imgs)
    code, err = run(capsys, str(tmp_path / "shots"), "--board", "checkerboard:9x6:0.03", "--out",
                    str(tmp_path / "c.yaml"))
    assert code == 2 and f"{paths[2]}: image is 320x240 but {paths[0]} is 640x480" in err


def test_unreadable_image(pinhole_checkerboard, tmp_path, capsys):
    paths = write_images(tmp_path / "shots", pinhole_checkerboard.images[:3])
    paths[1].write_bytes(b"\x89PNG broken")
    code, err = run(capsys, str(tmp_path / "shots"), "--board", "checkerboard:9x6:0.03", "--out",
                    str(tmp_path / "c.yaml"))
    assert code == 2 and f"{paths[1]}: cannot read the image" in err


def test_bad_board_spec_and_missing_source(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main(["camera", str(tmp_path), "--board", "checkerboard:9x6", "--out", str(tmp_path / "c.yaml")])
    assert e.value.code == 2
    assert "bad board 'checkerboard:9x6': expected checkerboard:COLSxROWS:SQUARE_M" in capsys.readouterr().err
    code, err = run(capsys, str(tmp_path / "nope"), "--board", "checkerboard:9x6:0.03", "--out",
                    str(tmp_path / "c.yaml"))
    assert code == 2 and f"{tmp_path / 'nope'}: no such folder of images, video file or camera device" in err
