"""Fixtures shared by all tests: the real sample recordings in ../shared/data (or $SLAM_DATA)."""

from __future__ import annotations

from pathlib import Path

import pytest

from slam.datasets import data_root


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
