"""slam-run --launch shows the graph's progress, read off the SLAM process's poses, as in-process replay does."""

from __future__ import annotations

import json
import logging
import re

from slam.cli import run as cli_run
from slam.cli.launch_run import run_launch
from slam.cli.pose_progress import start_pose_progress
from slam.nodes.launch import load_launch

# RGB-D replay paced by credit (nothing dropped), no inference server: the cheapest graph
GRAPH = ("endpoints:\n  frames: ipc://{run}/frames\n  poses: ipc://{run}/poses\n  inference: ipc://{run}/infer\n"
         "processes:\n  source: {kind: replay, realtime: false}\n  slam: {mode: rgbd}\n"
         "  inference: {enabled: false}\n")
LINE = re.compile(r"^slam-run: (\d+)/(\d+) frames \(.*/s\) fps=\d+ state=(\w+)$")


def test_launch_replay_progress_counts_every_frame_the_slam_process_tracked(tum_path, tmp_path, caplog):
    """Off a terminal the bar is a plain line at the end: N/TOTAL frames with the tracking state and rate."""
    launch, out = tmp_path / "graph.yaml", tmp_path / "out"
    launch.write_text(GRAPH)
    with caplog.at_level(logging.INFO, logger="slam.progress"):
        assert run_launch(launch, tum_path, out) == 0
    lines = [r.getMessage() for r in caplog.records if r.name == "slam.progress"]
    assert lines, "no progress from the launch run"
    m = LINE.match(lines[-1])
    assert m, lines[-1]
    acc = json.loads((out / "summary.json").read_text())["frame_accounting"]
    processed = acc["tracked"] + acc["lost"] + acc["initialising"]  # one pose message per frame processed
    assert acc["frames"] == 9 and acc["tracked"] >= 8
    assert int(m[1]) == processed and int(m[2]) == 9
    assert m[3] == "tracking"


def test_no_progress_flag_and_curve_protected_poses_show_none(tmp_path, monkeypatch):
    """--no-progress reaches the graph; a poses endpoint off loopback (CURVE) is not subscribed to."""
    seen = {}
    monkeypatch.setattr("slam.cli.launch_run.run_launch", lambda *a, **kw: seen.update(kw) or 0)
    launch = tmp_path / "graph.yaml"
    launch.write_text(GRAPH)
    assert cli_run.main(["--launch", str(launch), str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert seen["progress"] is False
    assert cli_run.main(["--launch", str(launch), str(tmp_path), "--out", str(tmp_path / "o2")]) == 0
    assert seen["progress"] is True
    assert start_pose_progress(load_launch(launch), tmp_path, 9, enabled=False) is None
    curve = tmp_path / "curve.yaml"
    curve.write_text(GRAPH.replace("ipc://{run}/poses", "tcp://0.0.0.0:5601"))
    assert start_pose_progress(load_launch(curve), tmp_path, 9) is None
