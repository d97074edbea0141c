"""Rendered calibration views, made once per session (rendering is the slow part of these tests)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest

from calib.boards import Board
from slam.geometry import PinholeCamera, make_pose, so3_exp

from .synthetic import CHARUCO, CHECKERBOARD, FISHEYE, PINHOLE, board_poses, render

# the right camera of the stereo rig: its own intrinsics, 0.12 m right of the left one, turned 1.5 deg
PINHOLE_RIGHT = PinholeCamera(640, 480, 496.0, 498.0, 317.0, 241.0, (-0.22, 0.06, -0.0008, 0.0006, 0.0))
T_L_R = make_pose(so3_exp(np.radians([0.3, 1.5, -0.4])), [0.12, 0.003, -0.002])


@dataclass
class Rendered:
    board: Board
    camera: PinholeCamera
    poses: list[np.ndarray]  # board -> camera
    images: list[np.ndarray]


def _render_set(board: Board, camera: PinholeCamera, n: int, seed: int, **kw) -> Rendered:
    poses = board_poses(board, camera, n, seed, **kw)
    rng = np.random.default_rng(seed + 100)
    return Rendered(board, camera, poses, [render(board, camera, T, rng) for T in poses])


@pytest.fixture(scope="session")
def pinhole_checkerboard() -> Rendered:
    return _render_set(CHECKERBOARD, PINHOLE, 14, seed=1)


@pytest.fixture(scope="session")
def pinhole_charuco() -> Rendered:
    return _render_set(CHARUCO, PINHOLE, 14, seed=2)


@pytest.fixture(scope="session")
def fisheye_checkerboard() -> Rendered:
    # a wide lens: the board comes closer to fill the image
    return _render_set(CHECKERBOARD, FISHEYE, 13, seed=1, depth_m=(0.2, 0.35))


@pytest.fixture(scope="session")
def fisheye_charuco() -> Rendered:
    return _render_set(CHARUCO, FISHEYE, 13, seed=2, depth_m=(0.2, 0.3))


# views over the centre half of the image (board corners inside 15-85% of the width and height), the board
# farther away to fit: they do not reach the image corners
CENTRE = (0.15, 0.15, 0.85, 0.85)


@pytest.fixture(scope="session")
def pinhole_centre() -> Rendered:
    return _render_set(CHECKERBOARD, PINHOLE, 14, seed=0, within=CENTRE, depth_m=(0.56, 0.84))


@pytest.fixture(scope="session")
def fisheye_centre() -> Rendered:
    return _render_set(CHECKERBOARD, FISHEYE, 14, seed=0, within=CENTRE, depth_m=(0.28, 0.49))


@pytest.fixture(scope="session")
def stereo_pair() -> tuple[Rendered, Rendered]:
    """Left and right views of the same board poses (the board in full view of both cameras)."""
    T_r_l = np.linalg.inv(T_L_R)
    left = board_poses(CHECKERBOARD, PINHOLE, 13, seed=3, others=((PINHOLE_RIGHT, T_r_l),))
    right = [T_r_l @ T for T in left]
    rng = np.random.default_rng(7)
    return (Rendered(CHECKERBOARD, PINHOLE, left, [render(CHECKERBOARD, PINHOLE, T, rng) for T in left]),
            Rendered(CHECKERBOARD, PINHOLE_RIGHT, right, [render(CHECKERBOARD, PINHOLE_RIGHT, T, rng) for T in right]))
