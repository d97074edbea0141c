"""Fixtures for the reader tests: the shared sample recordings and tiny hand-built sequences in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np

from slam.geometry import PinholeCamera

CAM = PinholeCamera(64, 48, 50.0, 50.0, 31.5, 23.5)


def texture(seed: int, h: int = 48, w: int = 64, channels: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    shape = (h, w, channels) if channels > 1 else (h, w)
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def write_tum_like(root: Path, n: int = 4, t0: float = 100.0, dt: float = 0.1, depth: bool = True,
                   right: bool = False, gt: bool = True, camera: bool = True) -> np.ndarray:
    """A tiny TUM-layout sequence: rgb/ depth/ (value 5000 = 1 m, left half 2 m) [right/] + lists + groundtruth,
    with ``camera.yaml`` (``CAM``, the images' 64x48) unless ``camera`` is False."""
    root.mkdir(parents=True, exist_ok=True)
    if camera:
        CAM.to_yaml(root / "camera.yaml")
    ts = t0 + dt * np.arange(n)
    lists = {"rgb": ["# timestamp filename"], "depth": ["# timestamp filename"], "right": ["# timestamp filename"]}
    for i, t in enumerate(ts):
        name = f"{t:.6f}.png"
        for kind, on in (("rgb", True), ("depth", depth), ("right", right)):
            if not on:
                continue
            (root / kind).mkdir(exist_ok=True)
            if kind == "depth":
                img = np.full((48, 64), 5000, np.uint16)
                img[:, :32] = 10000
                img[0, 0] = 0
            else:
                img = texture(i if kind == "rgb" else 100 + i)
            cv2.imwrite(str(root / kind / name), img)
            lists[kind].append(f"{t:.6f} {kind}/{name}")
    for kind, on in (("rgb", True), ("depth", depth), ("right", right)):
        if on:
            (root / f"{kind}.txt").write_text("\n".join(lists[kind]) + "\n")
    if gt:
        rows = ["# timestamp tx ty tz qx qy qz qw"]
        for t in np.arange(t0 - 0.05, t0 + dt * n + 0.05, 0.01):
            rows.append(f"{t:.6f} {t - t0:.6f} 0 0 0 0 0 1")
        (root / "groundtruth.txt").write_text("\n".join(rows) + "\n")
    return ts


def write_imu_csv(path: Path, t0: float, t1: float, rate: float = 200.0) -> np.ndarray:
    """EuRoC imu0 columns at ``rate`` Hz from t0 to t1 (inclusive): gyro (0, 0, 0.1), accel (0, 0, 9.81)."""
    ns = np.round(np.arange(t0, t1 + 1e-9, 1.0 / rate) * 1e9).astype(np.int64)
    lines = ["#timestamp [ns],w_RS_S_x [rad s^-1],w_RS_S_y [rad s^-1],w_RS_S_z [rad s^-1],"
             "a_RS_S_x [m s^-2],a_RS_S_y [m s^-2],a_RS_S_z [m s^-2]"]
    lines += [f"{k},0,0,0.1,0,0,9.81" for k in ns]
    path.write_text("\n".join(lines) + "\n")
    return ns


def write_synthetic(root: Path, n: int = 5, stereo: bool = True, imu: bool = True, depth: bool = True) -> np.ndarray:
    """A hand-built sequence in the slam-synth v1 layout (docs/synthetic_layout.md)."""
    ts = write_tum_like(root, n=n, t0=0.0, dt=0.1, depth=depth, right=stereo)
    CAM.to_yaml(root / "camera.yaml")
    T_b_c = np.eye(4)
    T_b_c[:3, 3] = [0.01, 0.02, 0.03]
    meta = {"format": "slam-synth", "version": 1, "name": "tiny", "seed": 0, "num_frames": n, "fps": 10.0,
            "depth_scale": 5000.0, "stereo_baseline_m": 0.1 if stereo else None, "T_b_c": T_b_c.tolist(),
            "gravity_w": [0, 0, -9.81], "imu": {"rate_hz": 200.0} if imu else None, "config": {}}
    (root / "synth.json").write_text(json.dumps(meta))
    if imu:
        write_imu_csv(root / "imu.csv", 0.0, ts[-1])
    return ts
