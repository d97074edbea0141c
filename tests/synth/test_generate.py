"""Writing sequences: each layout's files, determinism of the bytes, the CLI, the config loading."""

from __future__ import annotations

import hashlib
import importlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from slam.cli.synth import main as synth_main
from slam.errors import DataError
from slam.geometry import PinholeCamera, inv_pose
from slam.synth import SynthConfig, SynthSequence, generate, preset
from slam.trajectory import read_kitti, read_tum

from .conftest import tiny

N = 4


@pytest.fixture(scope="module")
def small_seq(tiny_scene) -> SynthSequence:
    return SynthSequence(tiny(num_frames=N), scene=tiny_scene)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def _euroc_yaml(path: Path) -> dict:
    text = path.read_text()
    assert text.startswith("%YAML:1.0\n")  # as the real EuRoC files
    return yaml.safe_load(text.split("\n", 1)[1])


def test_native_layout(tmp_path, small_seq):
    out = generate(small_seq.cfg, tmp_path / "seq", progress=False, sequence=small_seq)
    names = {p.name for p in out.iterdir()}
    assert names == {"synth.json", "camera.yaml", "rgb.txt", "depth.txt", "right.txt", "rgb", "depth", "right",
                     "groundtruth.txt", "imu.csv", "imu_groundtruth.csv"}
    meta = json.loads((out / "synth.json").read_text())
    assert meta["format"] == "slam-synth" and meta["version"] == 1 and meta["num_frames"] == N
    assert meta["stereo_baseline_m"] == 0.1 and meta["depth_scale"] == 5000.0
    np.testing.assert_allclose(meta["T_b_c"], small_seq.T_b_c)
    assert meta["imu"]["rate_hz"] == 200.0 and meta["gravity_w"] == [0.0, 0.0, -9.81]
    assert SynthConfig.from_dict(meta["config"]) == small_seq.cfg
    assert PinholeCamera.from_yaml(out / "camera.yaml") == small_seq.camera
    rgb_lines = (out / "rgb.txt").read_text().splitlines()
    assert rgb_lines[0].startswith("#") and rgb_lines[1:] == [f"{t:.6f} rgb/{t:.6f}.png" for t in small_seq.frame_t]
    for kind in ("rgb", "depth", "right"):
        assert len(list((out / kind).glob("*.png"))) == N
    t0 = small_seq.frame_t[1]
    rgb = cv2.imread(str(out / "rgb" / f"{t0:.6f}.png"), cv2.IMREAD_UNCHANGED)
    depth = cv2.imread(str(out / "depth" / f"{t0:.6f}.png"), cv2.IMREAD_UNCHANGED)
    f = small_seq.render_frame(1)
    np.testing.assert_array_equal(rgb[..., ::-1], f.rgb)  # BGR on disk
    assert depth.dtype == np.uint16
    np.testing.assert_array_equal(depth, np.round(f.depth.astype(np.float64) * 5000).astype(np.uint16))
    gt = read_tum(out / "groundtruth.txt")
    np.testing.assert_allclose(gt.timestamps, small_seq.frame_t)
    np.testing.assert_allclose(gt.poses, small_seq.T_w_c, atol=1e-8)
    imu = np.loadtxt(out / "imu.csv", delimiter=",", comments="#")
    assert imu.shape[1] == 7 and imu[0, 0] <= small_seq.frame_ns[0] and imu[-1, 0] >= small_seq.frame_ns[-1]
    header = (out / "imu_groundtruth.csv").read_text().splitlines()[0]
    assert header.startswith("#timestamp") and header.count(",") == 16


def test_tum_layout(tmp_path, small_seq):
    out = generate(small_seq.cfg, tmp_path / "tum", layout="tum", progress=False, sequence=small_seq)
    names = {p.name for p in out.iterdir()}
    assert names == {"camera.yaml", "rgb.txt", "depth.txt", "rgb", "depth", "groundtruth.txt"}
    assert len(read_tum(out / "groundtruth.txt")) == N


def test_euroc_layout(tmp_path, small_seq):
    out = generate(small_seq.cfg, tmp_path / "euroc", layout="euroc", progress=False, sequence=small_seq)
    mav = out / "mav0"
    for cam in ("cam0", "cam1"):
        csv = (mav / cam / "data.csv").read_text().splitlines()
        assert csv[0] == "#timestamp [ns],filename" and len(csv) == N + 1
        assert csv[1] == f"{small_seq.frame_ns[0]},{small_seq.frame_ns[0]}.png"
        img = cv2.imread(str(mav / cam / "data" / f"{small_seq.frame_ns[2]}.png"), cv2.IMREAD_UNCHANGED)
        assert img.ndim == 2 and img.shape == (small_seq.camera.height, small_seq.camera.width)
    s0, s1 = _euroc_yaml(mav / "cam0" / "sensor.yaml"), _euroc_yaml(mav / "cam1" / "sensor.yaml")
    c = small_seq.camera
    assert s0["intrinsics"] == [c.fx, c.fy, c.cx, c.cy] and s0["resolution"] == [c.width, c.height]
    assert s0["camera_model"] == "pinhole" and s0["distortion_model"] == "radial-tangential"
    assert s0["distortion_coefficients"] == [0, 0, 0, 0] and s0["rate_hz"] == small_seq.cfg.fps
    T0 = np.array(s0["T_BS"]["data"]).reshape(4, 4)
    T1 = np.array(s1["T_BS"]["data"]).reshape(4, 4)
    np.testing.assert_allclose(T0, small_seq.T_b_c, atol=1e-10)
    np.testing.assert_allclose((inv_pose(T0) @ T1)[:3, 3], [0.1, 0, 0], atol=1e-10)
    imu = _euroc_yaml(mav / "imu0" / "sensor.yaml")
    assert imu["gyroscope_noise_density"] == pytest.approx(1.6968e-4) and imu["rate_hz"] == 200
    assert imu["accelerometer_random_walk"] == pytest.approx(3.0e-3)
    assert (mav / "imu0" / "data.csv").read_text().startswith("#timestamp [ns],w_RS_S_x [rad s^-1]")
    gt = np.loadtxt(mav / "state_groundtruth_estimate0" / "data.csv", delimiter=",", comments="#")
    assert gt.shape[1] == 17
    np.testing.assert_allclose(np.linalg.norm(gt[:, 4:8], axis=1), 1.0, atol=1e-9)  # q_w x y z
    assert not (out / "rgb").exists()


def test_kitti_layout(tmp_path, small_seq):
    out = generate(small_seq.cfg, tmp_path / "kitti", layout="kitti", progress=False, sequence=small_seq)
    s = out / "sequences" / "00"
    assert sorted(p.name for p in (s / "image_0").iterdir()) == [f"{i:06d}.png" for i in range(N)]
    assert len(list((s / "image_1").iterdir())) == N
    assert cv2.imread(str(s / "image_0" / "000000.png"), cv2.IMREAD_UNCHANGED).ndim == 2
    calib = {ln.split(":")[0]: np.array(ln.split(":")[1].split(), float).reshape(3, 4)
             for ln in (s / "calib.txt").read_text().splitlines()}
    assert set(calib) == {"P0", "P1", "P2", "P3"}
    c = small_seq.camera
    np.testing.assert_allclose(calib["P0"][:, :3], c.K)
    assert calib["P1"][0, 3] == pytest.approx(-c.fx * 0.1)
    times = np.loadtxt(s / "times.txt")
    np.testing.assert_allclose(times, small_seq.frame_t, atol=1e-9)
    poses = read_kitti(out / "poses" / "00.txt")
    np.testing.assert_allclose(poses.poses[0], np.eye(4), atol=1e-9)
    np.testing.assert_allclose(poses.poses, inv_pose(small_seq.T_w_c[0]) @ small_seq.T_w_c, atol=1e-8)


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    cfg = tiny(num_frames=3)
    a = _digest(generate(cfg, tmp_path / "a", progress=False))
    b = _digest(generate(cfg, tmp_path / "b", progress=False))
    assert a == b
    c = _digest(generate(tiny(num_frames=3, seed=1), tmp_path / "c", progress=False))
    assert c.keys() == a.keys()
    for k in a:
        if k.startswith(("rgb/", "right/", "depth/")) or k in ("imu.csv", "imu_groundtruth.csv"):
            assert a[k] != c[k], k
    assert a["groundtruth.txt"] == c["groundtruth.txt"]  # the seed changes textures and noise, not the path


def test_regenerate_replaces_stale_frames(tmp_path, small_seq):
    out = tmp_path / "seq"
    generate(small_seq.cfg, out, progress=False, sequence=small_seq)
    (out / "rgb" / "99.000000.png").write_bytes(b"stale")
    (out / "notes.txt").write_text("mine")
    generate(small_seq.cfg, out, progress=False, sequence=small_seq)
    assert not (out / "rgb" / "99.000000.png").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_cli_and_yaml_config(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("num_frames: 2\nwidth: 160\nheight: 120\nfx: 131.25\nfy: 131.25\ncx: 79.5\ncy: 59.5\n")
    out = tmp_path / "cli"
    rc = synth_main(["--preset", "tiny", "--config", str(cfg_file), "--out", str(out), "--layout", "tum",
                     "--no-noise", "--no-imu", "--seed", "3", "--no-progress", "--log-level", "WARNING"])
    assert rc == 0
    assert len(list((out / "rgb").glob("*.png"))) == 2
    assert PinholeCamera.from_yaml(out / "camera.yaml").width == 160
    bad = tmp_path / "bad.yaml"
    bad.write_text("num_frame: 3\n")
    with pytest.raises(DataError, match="num_frame"):
        SynthConfig.from_yaml(bad)
    assert synth_main(["--config", str(bad), "--out", str(out)]) == 2


def test_presets():
    assert preset("demo").num_frames == 300 and preset("loop600").num_frames == 600
    t = preset("tiny")
    assert (t.width, t.height) == (320, 240) and t.num_frames == 40
    with pytest.raises(KeyError):
        preset("nope")


def test_parallel_rendering_writes_the_same_bytes_as_one_thread(tmp_path, tiny_scene):
    """Frames rendered by several threads at once (the default: one per core) equal a sequential render."""
    one = _digest(generate(tiny(num_frames=6, write_threads=1), tmp_path / "one", progress=False,
                           sequence=SynthSequence(tiny(num_frames=6, write_threads=1), scene=tiny_scene)))
    many = _digest(generate(tiny(num_frames=6, write_threads=3), tmp_path / "many", progress=False))
    one.pop("synth.json")  # it records write_threads
    many.pop("synth.json")
    assert one == many and sum(k.startswith("rgb/") for k in one) == 6
    seq = SynthSequence(tiny(num_frames=6), scene=tiny_scene)
    f = seq.render_frame(4)
    png = sorted((tmp_path / "many" / "rgb").glob("*.png"))[4]
    np.testing.assert_array_equal(cv2.cvtColor(cv2.imread(str(png)), cv2.COLOR_BGR2RGB), f.rgb)


def test_rendering_processes_write_the_same_bytes_as_one_thread(tmp_path, tiny_scene, monkeypatch):
    """A long sequence is rendered by processes (each builds its own scene from the config): same files."""
    gen = importlib.import_module("slam.synth.generate")  # the module (the package exports the function)
    monkeypatch.setattr(gen, "MIN_FRAMES_FOR_PROCESSES", 4)
    monkeypatch.setattr(gen, "CHUNK", 3)
    cfg = tiny(num_frames=8, write_threads=2)
    done: list[int] = []
    procs = _digest(generate(cfg, tmp_path / "procs", progress=done.append))
    one = _digest(generate(cfg, tmp_path / "one", progress=False, sequence=SynthSequence(cfg, scene=tiny_scene)))
    assert procs == one and sum(k.startswith("rgb/") for k in one) == 8 and done == [3, 3, 2]


def test_progress_callback_counts_every_frame(tmp_path, small_seq):
    done: list[int] = []
    generate(small_seq.cfg, tmp_path / "p", progress=done.append, sequence=small_seq)
    assert sum(done) == N
