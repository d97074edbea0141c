"""The real process graph of a launch file (source, SLAM, inference server) over ipc, against in-process replay."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from slam.cli.launch_run import run_launch
from slam.cli.run import main as slam_run
from slam.synth import SynthSequence
from slam.synth.generate import generate
from slam.trajectory import Trajectory
from tests.accuracy import assert_run_beats_trivial, check_bound, trivial_over_offsets
from tests.conftest import small_demo
from tests.sensors.conftest import PtyDevice
from tests.sensors.test_live import imu_writer

N = 120  # 4 s at 30 Hz


@pytest.fixture(scope="module")
def synth_rgbd(tmp_path_factory) -> Path:
    """120 frames of the demo trajectory at 320x240 (RGB-D and stereo, native layout)."""
    cfg = small_demo(N, imu=False)
    return generate(cfg, tmp_path_factory.mktemp("synth") / "seq", progress=False)


def _launch_file(tmp_path: Path, inference: bool = True, mode: str = "rgbd", realtime: bool = True,
                 slam: str = "") -> Path:
    path = tmp_path / "graph.yaml"
    path.write_text(
        f"description: synthetic {mode} replay over ipc\n"
        "endpoints:\n  frames: ipc://{run}/frames\n  poses: ipc://{run}/poses\n  inference: ipc://{run}/infer\n"
        f"processes:\n  source: {{kind: replay, realtime: {str(realtime).lower()}}}\n"
        f"  slam: {{mode: {mode}{slam}}}\n"
        f"  inference: {{enabled: {str(inference).lower()}, device: cpu, restart: true, heartbeat_s: 0.2}}\n"
    )
    return path


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _check_complete(out: Path) -> dict:
    s = _summary(out)
    for name in ("trajectory.txt", "keyframes.txt", "map.npz"):
        assert (out / name).is_file()
    # every frame crossed the bus and was tracked: none dropped, none lost
    assert s["frames"] == N and s["tracked_frames"] == N and s["lost_frames"] == []
    assert s["bus"]["frames"]["rejected"] == 0 and s["bus"]["frames"]["gaps"] == 0
    assert s["bus"]["end_of_stream"]["reason"] == "end of sequence"
    return s


@pytest.mark.parametrize("mode", ["rgbd", "stereo"])
def test_graph_over_ipc_matches_in_process_replay(synth_rgbd, tmp_path, mode):
    ref_out, out = tmp_path / "in_process", tmp_path / "graph"
    assert slam_run([str(synth_rgbd), "--out", str(ref_out), "--mode", mode, "--realtime", "--no-progress"]) == 0
    assert run_launch(_launch_file(tmp_path, mode=mode), synth_rgbd, out) == 0
    s = _check_complete(out)
    _check_accounted(s)
    ate, ate_ref = s["evaluation"]["ate_rmse_m"], _summary(ref_out)["evaluation"]["ate_rmse_m"]
    assert s["mode"] == mode
    print(f"\n  {mode}: ATE graph {1e3 * ate:.2f} mm vs in-process {1e3 * ate_ref:.2f} mm; latency "
          f"{s['timing_ms']['latency']['median']:.1f} ms median")
    assert ate < ate_ref + 0.003
    print(" ", assert_run_beats_trivial(synth_rgbd, out, "se3", bound=0.02))
    assert s["processes"]["inference"]["starts"] == 1 and s["inference"]["heartbeats"] >= 2
    assert s["inference"]["server_rejects"]["rejected"] == 0  # the server's own count, reported with heartbeats


def _check_accounted(s: dict, n: int = N) -> dict:
    """Every frame the source sent is accounted for, and none went missing: all tracked."""
    acc = s["frame_accounting"]
    assert sum(v for k, v in acc.items() if k != "frames") == acc["frames"] == n
    assert acc["dropped_by_bus"] == 0 and acc["not_processed"] == 0 and acc["tracked"] == n
    return acc


N_SLOW = 60


def test_slow_slam_process_gets_every_frame_of_a_replay(synth_rgbd, tmp_path):
    """A replay (not realtime) into a SLAM process slower than the source (0.2 s more per frame).

    Credit holds the source back, so nothing is dropped or left in flight, and the run does not stop
    before the SLAM process took the last frame (the old source sent all 60 frames at once and ended;
    the supervisor's 10 s drain time then cut the SLAM process off ~30 frames short). Mapping runs
    synchronously on both sides, so the graph must give what in-process replay gives.
    """
    ref_out, out = tmp_path / "in_process", tmp_path / "graph"
    assert slam_run([str(synth_rgbd), "--out", str(ref_out), "--mode", "rgbd", "--sync-mapping", "--max-frames",
                     str(N_SLOW), "--no-progress"]) == 0
    launch = _launch_file(tmp_path, inference=False, realtime=False, slam=", sync_mapping: true, frame_delay_s: 0.2")
    assert run_launch(launch, synth_rgbd, out, max_frames=N_SLOW) == 0
    s = _summary(out)
    _check_accounted(s, N_SLOW)
    assert s["stop_reason"] == "end of sequence" and s["bus"]["back_pressure"]
    assert s["bus"]["frames"]["gaps"] == 0 and s["bus"]["end_of_stream"]["dropped"] == 0
    ate, ate_ref = s["evaluation"]["ate_rmse_m"], _summary(ref_out)["evaluation"]["ate_rmse_m"]
    print(f"\n  slow SLAM process: ATE graph {1e3 * ate:.2f} mm vs in-process {1e3 * ate_ref:.2f} mm")
    assert abs(ate - ate_ref) <= 0.15 * ate_ref


def test_tracking_goes_on_while_the_inference_server_is_killed_and_restarted(synth_rgbd, tmp_path):
    out = tmp_path / "graph"
    killed = []

    def kill_inference(sup) -> None:
        """Once the SLAM process tracks, kill the inference server (SIGKILL: no goodbye)."""
        def run():
            log, end = out / "logs" / "slam.log", time.monotonic() + 60
            while time.monotonic() < end and not (log.is_file() and "first frame" in log.read_text()):
                time.sleep(0.1)
            time.sleep(0.5)
            proc = sup.children["inference"].proc
            if proc is not None and proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
                killed.append(proc.pid)
        threading.Thread(target=run, daemon=True).start()

    assert run_launch(_launch_file(tmp_path), synth_rgbd, out, on_start=kill_inference) == 0
    s = _check_complete(out)
    assert_run_beats_trivial(synth_rgbd, out, "se3", bound=0.02)
    # killed, restarted by the supervisor, and answering again by the end; no model is loaded yet,
    # so the traffic is the client's heartbeats: missed while the server was dead, answered around it
    assert killed and s["processes"]["inference"]["starts"] >= 2
    inf = s["inference"]
    assert inf["heartbeat_misses"] >= 1 and inf["heartbeats"] >= 2 and not inf["down_at_end"]


def test_graph_stops_in_order_and_saves_on_request(synth_rgbd, tmp_path):
    """Ctrl-C (here: the supervisor's stop request) mid-run: the SLAM process saves what it tracked."""
    out = tmp_path / "graph"

    def stop_soon(sup) -> None:
        """Once the SLAM process tracks (its log says so), stop the graph a second later."""
        def run():
            log, end = out / "logs" / "slam.log", time.monotonic() + 60
            while time.monotonic() < end and not (log.is_file() and "first frame" in log.read_text()):
                time.sleep(0.1)
            time.sleep(1.0)
            sup.request_stop()
        threading.Thread(target=run, daemon=True).start()

    assert run_launch(_launch_file(tmp_path, inference=False), synth_rgbd, out, on_start=stop_soon) == 0
    s = _summary(out)
    assert 0 < s["tracked_frames"] < N
    assert s["bus"]["end_of_stream"]["reason"] == "stopped"
    acc = s["frame_accounting"]  # the frames sent before the stop, all accounted for
    assert sum(v for k, v in acc.items() if k != "frames") == acc["frames"] == s["frames"]
    traj = np.loadtxt(out / "trajectory.txt")
    assert len(traj) == s["tracked_frames"]


def test_replay_launch_file_without_a_sequence_is_a_clear_error(tmp_path, capsys):
    assert slam_run(["--launch", str(_launch_file(tmp_path)), "--out", str(tmp_path / "o")]) == 2
    assert "replays a sequence" in capsys.readouterr().err


def test_slam_process_relocalises_in_the_map_of_its_launch_file(synth_rgbd, tmp_path):
    """processes.slam.map, as slam-run --map: the graph starts in a saved map; one of another camera is refused."""
    first = tmp_path / "first"
    assert slam_run([str(synth_rgbd), "--out", str(first), "--mode", "rgbd", "--max-frames", "40",
                     "--sync-mapping", "--no-progress"]) == 0
    n_kf = _summary(first)["keyframes"]
    out = tmp_path / "graph"
    assert run_launch(_launch_file(tmp_path, inference=False, slam=f", map: {first / 'map.npz'}"), synth_rgbd, out) == 0
    s = _summary(out)
    assert s["loaded_map"]["file"] == str(first / "map.npz") and s["loaded_map"]["keyframes"] == n_kf
    assert s["loaded_map"]["relocalized_at_frame"] == 0 and s["lost_frames"] == [] and s["tracked_frames"] == N
    # tracked in the first run's frame: its first pose is the first run's first pose, not a fresh identity
    t0, t1 = np.loadtxt(first / "trajectory.txt")[0], np.loadtxt(out / "trajectory.txt")[0]
    assert np.linalg.norm(t1[1:4] - t0[1:4]) < 0.01
    # a map file of another camera: the SLAM process refuses it, naming the file; no outputs
    other = tmp_path / "other.npz"
    from slam.backbone.map.map_io import load_map, save_map

    m = load_map(first / "map.npz")
    m.camera = dataclasses.replace(m.camera, fx=m.camera.fx * 1.1)
    save_map(m, other)
    bad = tmp_path / "bad"
    assert run_launch(_launch_file(tmp_path, inference=False, slam=f", map: {other}"), synth_rgbd, bad) != 0
    assert not (bad / "summary.json").exists() and not (bad / "map.npz").exists()
    logs = "".join(p.read_text() for p in (bad / "logs").glob("*"))
    assert str(other) in logs and "camera fx" in logs


N_VIDEO = 60  # 2 s of the demo trajectory at 30 fps


@pytest.fixture
def pty_device():
    dev = PtyDevice()
    yield dev
    dev.close()


def _ate_unknown_start(traj: np.ndarray, gt_positions: np.ndarray, fps: float) -> tuple[float, int]:
    """Sim(3) ATE of TUM rows whose clock is the host's: frame = round((t - t_first) fps) + k, k searched.

    A live camera's frames carry host times, not the video's, so the first tracked frame's index is
    the unknown; every hypothesis is scored and the best one kept (a wrong one is far off).
    """
    from slam.geometry.align import umeyama

    steps = np.round((traj[:, 0] - traj[0, 0]) * fps).astype(int)
    best = (np.inf, -1)
    for k in range(len(gt_positions) - steps[-1]):
        gt = gt_positions[steps + k]
        s, R, t = umeyama(traj[:, 1:4], gt, with_scale=True)
        err = gt - (s * traj[:, 1:4] @ R.T + t)
        best = min(best, (float(np.sqrt(np.mean(np.sum(err**2, axis=1)))), k))
    return best


def _video(tmp_path: Path) -> Path:
    """The demo trajectory (320x240, 30 fps) as an MJPG .avi with its camera file next to it."""
    cfg = small_demo(N_VIDEO, imu=False, depth=False, stereo=False)
    seq = SynthSequence(cfg)
    path = tmp_path / "room.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), cfg.fps, (cfg.width, cfg.height))
    for i in range(N_VIDEO):
        writer.write(cv2.cvtColor(seq.render_frame(i).rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    seq.camera.to_yaml(path.with_suffix(".yaml"))
    np.save(tmp_path / "gt_poses.npy", seq.T_w_c[:N_VIDEO])
    return path


def test_live_graph_on_a_video_file_and_a_pty_imu(tmp_path, pty_device):
    """The live launch path: a video file read as a camera and an IMU on a pseudo-terminal, over ipc."""
    video = _video(tmp_path)
    launch = tmp_path / "live.yaml"
    launch.write_text(
        "description: video file as camera + serial IMU on a pty\n"
        "endpoints:\n  frames: ipc://{run}/frames\n  poses: ipc://{run}/poses\n"
        f"processes:\n  source: {{kind: camera, camera: {video}, imu: 'serial:{pty_device.name}:921600'}}\n"
        "  slam: {mode: mono}\n"
    )
    stop = threading.Event()
    imu_writer(pty_device, stop)
    try:
        assert run_launch(launch, None, tmp_path / "out") == 0
    finally:
        stop.set()
    s = _summary(tmp_path / "out")
    sensors = s["bus"]["end_of_stream"]["sensors"]
    assert s["bus"]["end_of_stream"]["reason"] == "end of video"
    assert s["frames"] == N_VIDEO and sensors["camera"]["frames"] == N_VIDEO
    assert s["tracked_frames"] >= N_VIDEO // 2 and s["keyframes"] >= 2
    # as well as in-process replay of the same video
    assert slam_run([str(video), "--out", str(tmp_path / "ref"), "--realtime", "--no-progress"]) == 0
    ref = _summary(tmp_path / "ref")
    gt_poses = np.load(tmp_path / "gt_poses.npy")
    gt = gt_poses[:, :3, 3]
    traj = np.loadtxt(tmp_path / "out" / "trajectory.txt")
    ate, k = _ate_unknown_start(traj, gt, fps=30.0)
    ate_ref, _ = _ate_unknown_start(np.loadtxt(tmp_path / "ref" / "trajectory.txt"), gt, fps=30.0)
    print(f"\n  lost frames: graph {len(s['lost_frames'])}, in-process {len(ref['lost_frames'])}; "
          f"ATE graph {1e3 * ate:.1f} mm (first tracked frame {k}), in-process {1e3 * ate_ref:.1f} mm")
    assert len(s["lost_frames"]) <= len(ref["lost_frames"]) + 4
    # trivial answers on the same frames, with the same searched start
    steps = np.round((traj[:, 0] - traj[0, 0]) * 30.0).astype(int)
    trivial = trivial_over_offsets(Trajectory(np.arange(N_VIDEO) / 30.0, gt_poses), steps, "sim3")
    print(" ", check_bound(ate, 0.04, trivial, len(traj), margin=2.0))  # runs spread 8-38 mm
    imu = sensors["imu"]
    # 200 Hz over the video's 2 s, attached to the frames that carried them; nothing garbled
    assert imu["samples"] >= 300 and imu["attached_to_frames"] >= 250 and imu["garbage"] == 0


def test_ctrl_c_on_slam_run_launch_saves_everything(synth_rgbd, tmp_path):
    """SIGINT to ``slam-run --launch`` (what Ctrl-C sends): exit 0, the map and the trajectory saved."""
    import subprocess
    import sys

    out = tmp_path / "graph"
    proc = subprocess.Popen([sys.executable, "-m", "slam.cli.run", "--launch", str(_launch_file(tmp_path)),
                             str(synth_rgbd), "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    traj_started = False
    while time.monotonic() < deadline and not traj_started:  # wait until the SLAM process tracks
        time.sleep(0.5)
        log = out / "logs" / "slam.log"
        traj_started = log.is_file() and "first frame" in log.read_text()
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    s = _summary(out)
    assert 0 < s["tracked_frames"] < N and (out / "map.npz").is_file()
    assert len(np.loadtxt(out / "trajectory.txt")) == s["tracked_frames"]
