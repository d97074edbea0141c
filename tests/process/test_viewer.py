"""The live viewer in the process graph: it records what the SLAM process publishes, and it can die without harm."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rerun")

from rerun.chunk import RrdReader

from slam.cli.launch_run import process_specs, run_launch
from slam.nodes.launch import load_launch
from slam.nodes.viewer import free_recording_path, recording_path, stale_recordings
from slam.synth.generate import generate
from tests.conftest import small_demo

N = 90  # 3 s at 30 Hz


@pytest.fixture(scope="module")
def synth_rgbd(tmp_path_factory) -> Path:
    cfg = small_demo(N, imu=False, stereo=False)
    return generate(cfg, tmp_path_factory.mktemp("synth") / "seq", progress=False)


def _launch_file(tmp_path: Path, record: Path | None) -> Path:
    path = tmp_path / "view.yaml"
    viewer = f"{{enabled: true, record: {record}}}" if record else "{enabled: true}"
    path.write_text(
        "description: synthetic RGB-D replay with the viewer recording\n"
        "endpoints:\n  frames: ipc://{run}/frames\n  poses: ipc://{run}/poses\n"
        "processes:\n  source: {kind: replay, realtime: true}\n  slam: {mode: rgbd}\n"
        f"  viewer: {viewer}\n"
    )
    return path


def _check_tracked(out: Path) -> dict:
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == N and s["tracked_frames"] == N and s["lost_frames"] == []
    assert s["bus"]["frames"]["gaps"] == 0
    return s


def _recording(path: Path) -> dict[str, list]:
    """Entity path -> its rows as (frame, {column: value}), in frame order."""
    rows: dict[str, list] = {}
    for chunk in RrdReader(path).stream().to_chunks():
        table = chunk.to_record_batch().to_pylist()
        for row in table:
            rows.setdefault(chunk.entity_path, []).append((row.get("frame"), row))
    for v in rows.values():
        v.sort(key=lambda r: -1 if r[0] is None else r[0])
    return rows


def test_viewer_records_image_features_trajectory_and_map(synth_rgbd, tmp_path):
    out, record = tmp_path / "out", tmp_path / "rec" / "view.rrd"
    assert run_launch(_launch_file(tmp_path, record), synth_rgbd, out) == 0
    s = _check_tracked(out)
    assert s["processes"]["viewer"]["starts"] == 1
    assert "shown:" in (out / "logs" / "viewer.log").read_text()  # stopped cleanly, recording flushed
    assert record.is_file() and record.stat().st_size > 50_000
    rec = _recording(record)
    for entity in ("/world/camera", "/world/camera/image", "/world/camera/image/rgb", "/world/camera/image/features",
                   "/world/trajectory", "/world/map/points", "/world/map/keyframes"):
        assert entity in rec, f"{entity} missing from {sorted(rec)}"
    # one pose per tracked frame from when the viewer joined (nothing waits for a viewer: one slow to start,
    # e.g. on a loaded machine, misses the first poses); the last strip holds every pose it got
    n_poses = len(rec["/world/camera"])
    assert N - 20 <= n_poses <= N
    last_strip = rec["/world/trajectory"][-1][1]["LineStrips3D:strips"][0]
    assert len(last_strip) == n_poses
    # the camera positions are those the SLAM process published, in order: the last is the final camera pose
    final = np.array(rec["/world/camera"][-1][1]["Transform3D:translation"][0])
    np.testing.assert_allclose(last_strip[-1], final, atol=1e-5)
    assert len(rec["/world/camera/image/rgb"]) >= N // 2  # newest frame only: a slow viewer skips some
    feats = rec["/world/camera/image/features"][-1][1]
    assert len(feats["Points2D:positions"]) > 100
    colors = set(feats["Points2D:colors"])
    assert len(colors) == 2  # matched and unmatched
    assert len(rec["/world/map/points"][-1][1]["Points3D:positions"]) > 100


def test_a_killed_viewer_is_restarted_and_slam_is_unaffected(synth_rgbd, tmp_path):
    out = tmp_path / "out"
    killed = []

    def kill_viewer(sup) -> None:
        def run():
            end = time.monotonic() + 20
            while not (out / "view.rrd").exists() and time.monotonic() < end:
                time.sleep(0.05)  # until the viewer records
            proc = sup.children["viewer"].proc
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
        threading.Thread(target=run, daemon=True).start()

    (out).mkdir()
    (out / "view-3.rrd").write_bytes(b"stale")  # a previous run's: removed at the start
    assert run_launch(_launch_file(tmp_path, None), synth_rgbd, out, on_start=kill_viewer) == 0
    s = _check_tracked(out)
    assert killed and s["processes"]["viewer"]["starts"] >= 2
    assert not (out / "view-3.rrd").exists()
    # the first viewer's file is kept (as far as it got); the restarted one records next to it, from where
    # it joined: the trajectory since then and the map (camera images too when frames are still coming
    # by the time it has subscribed to them: not checked, a loaded machine may restart it too late)
    assert (out / "view.rrd").is_file()
    rec = _recording(out / "view-1.rrd")
    for entity in ("/world/trajectory", "/world/camera", "/world/map/points"):
        assert entity in rec, f"{entity} missing from {sorted(rec)}"
    assert 0 < len(rec["/world/trajectory"][-1][1]["LineStrips3D:strips"][0]) < N


def test_recording_names_and_viewer_command_line(tmp_path):
    base = tmp_path / "view.rrd"
    assert free_recording_path(base) == base
    base.write_bytes(b"x")
    recording_path(base, 1).write_bytes(b"x")
    (tmp_path / "view-x.rrd").write_bytes(b"x")
    (tmp_path / "viewer.rrd").write_bytes(b"x")
    assert free_recording_path(base) == tmp_path / "view-2.rrd"
    assert stale_recordings(base) == [tmp_path / "view-1.rrd", base]
    spec = load_launch(_launch_file(tmp_path, None))
    argv = {p.name: p.argv for p in process_specs(spec, tmp_path / "run", tmp_path / "out", None)}["viewer"]
    assert argv[argv.index("--record") + 1] == str(tmp_path / "out" / "view.rrd")
