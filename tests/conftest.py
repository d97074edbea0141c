"""Fixtures shared by all tests: the real sample recordings in ../shared/data (or $SLAM_DATA)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from slam.datasets import data_root
from slam.synth import SynthConfig, preset


def small_demo(num_frames: int, **overrides) -> SynthConfig:
    """The demo trajectory at 320x240 (same field of view): quick to render and tracked in every mode."""
    return dataclasses.replace(preset("demo"), num_frames=num_frames, width=320, height=240, fx=262.5, fy=262.5,
                               cx=159.5, cy=119.5, **overrides)


def shared(name: str) -> Path:
    """A folder of the shared data, or skip the test when it is not here."""
    p = data_root() / name
    if not p.is_dir():
        pytest.skip(f"shared recording {p} not available")
    return p


@pytest.fixture(scope="session")
def tum_path() -> Path:
    return shared("tum_rgbd_fr1_desk_9frames")


@pytest.fixture(scope="session")
def kitti_path() -> Path:
    return shared("kitti_odometry_seq07_first160")


@pytest.fixture(scope="session")
def euroc_path() -> Path:
    return shared("euroc_V1_01_easy_micro")


@pytest.fixture(scope="session")
def synth640():
    """A 640x480, 30 fps synthetic sequence (noisy images) and its noise-free twin (exact depth), sharing one scene."""
    import dataclasses

    from slam.synth import SynthSequence, preset

    cfg = dataclasses.replace(preset("tiny"), width=640, height=480, fx=525.0, fy=525.0, cx=319.5, cy=239.5,
                              num_frames=10, fps=30.0)
    seq = SynthSequence(cfg)
    return seq, SynthSequence(dataclasses.replace(cfg, noise=False), scene=seq.scene)


def timed(fn, n: int = 15):
    """Result of ``fn()`` and its min / median time in ms over ``n`` runs after a warm-up (printed, never asserted)."""
    import time

    import numpy as np

    fn()
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return out, 1e3 * min(ts), 1e3 * float(np.median(ts))
