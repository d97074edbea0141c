"""Synthetic calibration data: board poses spread over the image with tilt, rendered through a known camera."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from calib.boards import Board, render_view
from slam.geometry import PinholeCamera
from slam.geometry.so3 import so3_exp

# 640x480 cameras with known intrinsics: a plumb-bob lens with clear barrel distortion, and a fisheye
PINHOLE = PinholeCamera(640, 480, 500.0, 505.0, 322.0, 236.0, (-0.25, 0.08, 0.001, -0.0005, 0.0))
FISHEYE = PinholeCamera(640, 480, 300.0, 302.0, 318.0, 243.0, (0.04, -0.02, 0.01, -0.002), model="fisheye")
CHECKERBOARD = Board.parse("checkerboard:9x6:0.03")
CHARUCO = Board.parse("charuco:8x6:0.035:0.021:DICT_4X4_50")


def board_poses(board: Board, camera: PinholeCamera, n: int, seed: int = 0, depth_m: tuple[float, float] = (0.4, 0.6),
                margin_px: float = 12.0, others: tuple[tuple[PinholeCamera, np.ndarray], ...] = (),
                within: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> list[np.ndarray]:
    """``n`` board -> camera poses (4x4) with every corner inside the image (and inside each of ``others``:
    (camera, T_other_this) pairs), board centres spread over a 4x3 grid of the image, tilted 10-40 degrees.

    ``within``: (left, top, right, bottom) fractions of the image that hold the board centres and corners
    (the whole image by default)."""
    x0, y0, x1, y1 = within
    box = (x0 * camera.width, y0 * camera.height, x1 * camera.width, y1 * camera.height)
    rng = np.random.default_rng(seed)
    obj = board.object_points()
    centre = obj.mean(axis=0)
    cells = [((i + 0.5) / 4, (j + 0.5) / 3) for j in range(3) for i in range(4)]
    poses: list[np.ndarray] = []
    for _ in range(5000):
        if len(poses) == n:
            return poses
        fu, fv = cells[len(poses) % len(cells)]
        u = (x0 + (x1 - x0) * (0.15 + 0.7 * fu + rng.uniform(-0.08, 0.08))) * camera.width
        v = (y0 + (y1 - y0) * (0.15 + 0.7 * fv + rng.uniform(-0.08, 0.08))) * camera.height
        axis = rng.normal(size=2)
        axis = np.array([*axis / np.linalg.norm(axis), 0.0])
        R = so3_exp(axis * np.radians(rng.uniform(10, 40))) @ so3_exp(np.array([0, 0, rng.uniform(-0.4, 0.4)]))
        ray = np.append(camera.pixel_to_normalized(np.array([u, v])), 1.0)
        T = np.eye(4)
        T[:3, :3] = R
        T[:3, 3] = ray * rng.uniform(*depth_m) - R @ centre
        if (all(_sees_all(cam, T_o @ T, obj, margin_px) for cam, T_o in ((camera, np.eye(4)), *others))
                and _inside(camera, T, obj, box)):
            poses.append(T)
    raise AssertionError("cannot place the board")


def _sees_all(camera: PinholeCamera, T_c_b: np.ndarray, obj: np.ndarray, margin_px: float) -> bool:
    uv, front = camera.project(obj @ T_c_b[:3, :3].T + T_c_b[:3, 3])
    return bool(front.all() and camera.in_image(uv, margin_px).all())


def _inside(camera: PinholeCamera, T_c_b: np.ndarray, obj: np.ndarray, box: tuple[float, ...]) -> bool:
    uv, _ = camera.project(obj @ T_c_b[:3, :3].T + T_c_b[:3, 3])
    return bool(((uv >= box[:2]) & (uv <= box[2:])).all())


def corner_undistortion_error_px(true: PinholeCamera, est: PinholeCamera) -> float:
    """Largest difference (pixels, at the true focal length) between the rays the two cameras give the four
    image corner pixels (where a lens model fitted from central views extrapolates)."""
    w, h = true.width, true.height
    uv = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    return float(true.fx * np.abs(est.pixel_to_normalized(uv) - true.pixel_to_normalized(uv)).max())


def render(board: Board, camera: PinholeCamera, T_c_b: np.ndarray, rng: np.random.Generator, blur: float = 0.7,
           noise: float = 2.0) -> np.ndarray:
    """A rendered view with mild optical blur (Gaussian sigma, pixels) and sensor noise (grey levels)."""
    img = render_view(board, camera, T_c_b).astype(np.float32)
    if blur > 0:
        img = cv2.GaussianBlur(img, (0, 0), blur)
    img += rng.normal(0.0, noise, img.shape).astype(np.float32)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def write_images(folder: Path, images: list[np.ndarray], prefix: str = "view") -> list[Path]:
    """``images`` as ``folder/<prefix>_NN.png``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{prefix}_{k:02d}.png" for k in range(len(images))]
    for p, img in zip(paths, images):
        cv2.imwrite(str(p), img)
    return paths


def distortion_error_px(true: PinholeCamera, est: PinholeCamera, corners: np.ndarray) -> float:
    """Largest difference (pixels, at the true focal length) between the two cameras' distortion of the rays
    of a grid of pixels inside the convex hull of ``corners`` (where the views constrain the lens)."""
    hull = cv2.convexHull(corners.astype(np.float32))
    u, v = np.meshgrid(np.linspace(0, true.width - 1, 33), np.linspace(0, true.height - 1, 25))
    uv = np.stack([u.ravel(), v.ravel()], axis=1)
    inside = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), False) >= 0 for x, y in uv])
    assert inside.mean() > 0.4, "the views cover too little of the image to judge the distortion"
    rays = true.pixel_to_normalized(uv[inside])
    return float(true.fx * np.abs(est.distort_normalized(rays) - true.distort_normalized(rays)).max())
