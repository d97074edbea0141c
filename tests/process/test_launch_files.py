"""Launch files: the shipped ones load; mistakes name the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from slam.errors import DataError
from slam.nodes.launch import load_launch

LAUNCH = Path(__file__).resolve().parents[2] / "launch"


@pytest.mark.parametrize("name", ["tum_replay", "kitti_replay", "euroc_replay", "synthetic_replay", "webcam_imu",
                                  "split_inference"])
def test_shipped_launch_files_load(name):
    spec = load_launch(LAUNCH / f"{name}.yaml")
    assert spec.description
    assert spec.endpoint("frames", Path("/tmp/x")).startswith("ipc:///tmp/x/")
    if name == "split_inference":
        assert spec.endpoints["inference"].startswith("tcp://") and not spec.inference.enabled
        assert spec.curve.secret and spec.curve.server_public
    # the live view is on for live use, off for replays (where it would only cost time)
    assert spec.viewer.enabled == (name in ("webcam_imu", "split_inference"))


@pytest.mark.parametrize(
    "text, message",
    [
        ("endpoints: {frames: \"ipc://{run}/f\"}\nprocesses: {}", "endpoints \\['poses'\\] missing"),
        ("endpoints: {frames: ipc://a, poses: ipc://b, camera: ipc://c}", "endpoints must map"),
        ("endpoints: {frames: ipc://a, poses: 5}", "not an address"),
        ("endpoints: {frames: ipc://a, poses: ipc://b}\nprocesses: {gui: {}}", "unknown process"),
        ("endpoints: {frames: ipc://a, poses: ipc://b}\nprocesses: {viewer: {recrod: x.rrd}}", "unknown key.*recrod"),
        ("endpoints: {frames: ipc://a, poses: ipc://b}\nprocesses: {slam: {mod: rgbd}}", "unknown key.*mod"),
        ("endpoints: {frames: ipc://a, poses: ipc://b}\nprocesses: {source: {kind: radio}}", "kind must be one of"),
        ("endpoints: {frames: ipc://a, poses: ipc://b}\nprocesses: {source: {kind: camera}}", "needs camera"),
        ("endpoints: {frames: ipc://a, poses: ipc://b}\nprocesses: {inference: {enabled: true}}",
         "endpoints.inference is missing"),
        ("endpoints: [", "not valid YAML"),
    ],
)
def test_bad_launch_files_name_file_and_problem(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text + "\n")
    with pytest.raises(DataError, match=message) as e:
        load_launch(path)
    assert str(path) in str(e.value)
