"""Calibration boards: the ``--board`` spec, corner positions on the board, detection, synthetic renders.

Board frame: origin at the first corner (checkerboard: the first inner corner
OpenCV reports; ChArUco: the board's outer top-left corner, as
``cv2.aruco.CharucoBoard``), x along the rows, y down the columns, z into the
board, in metres. A corner's *id* is its index in :meth:`Board.object_points`.

Spec strings (``--board``):

* ``checkerboard:COLSxROWS:SQUARE_M``: COLS x ROWS *inner* corners (OpenCV's
  ``patternSize``), squares SQUARE_M metres wide. Prefer one even and one odd
  count (e.g. 9x6): such a board has no 180 degree symmetry.
* ``charuco:COLSxROWS:SQUARE_M:MARKER_M:DICT``: COLS x ROWS *squares*
  (``cv2.aruco.CharucoBoard``'s size), markers MARKER_M metres wide from the
  ArUco dictionary DICT (e.g. ``DICT_5X5_100``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from slam.geometry.camera import PinholeCamera

KINDS = ("checkerboard", "charuco")
MIN_CHARUCO_CORNERS = 6  # fewer ChArUco corners do not constrain a pose well


class BoardSpecError(ValueError):
    """A ``--board`` string that cannot be parsed or describes an impossible board."""


def aruco_dictionaries() -> dict[str, str]:
    """OpenCV's predefined ArUco dictionaries: upper-case name -> name in ``cv2.aruco`` (``DICT_4X4_50`` ...)."""
    names = (n for n in dir(cv2.aruco) if n.startswith("DICT_") and isinstance(getattr(cv2.aruco, n), int))
    return {n.upper(): n for n in sorted(names, reverse=True)}  # upper-case spellings win where both exist


@dataclass(frozen=True)
class Detection:
    """The corners of a board found in one image: ids into :meth:`Board.object_points` and pixels."""

    ids: np.ndarray  # (M,) int64
    corners: np.ndarray  # (M, 2) float64, pixel coordinates (pixel-centre origin)


@dataclass(frozen=True)
class Board:
    kind: str  # "checkerboard" or "charuco"
    cols: int  # checkerboard: inner corners along x; charuco: squares along x
    rows: int  # checkerboard: inner corners along y; charuco: squares along y
    square_m: float  # side of one square, metres
    marker_m: float = 0.0  # charuco: side of one marker, metres
    dictionary: str = ""  # charuco: ArUco dictionary name, e.g. "DICT_5X5_100"

    # ------------------------------------------------------------------ spec
    @classmethod
    def parse(cls, spec: str) -> Board:
        """A board from its spec string (module docstring); :class:`BoardSpecError` says what is wrong."""
        usage = ("expected checkerboard:COLSxROWS:SQUARE_M (inner corners, e.g. checkerboard:9x6:0.025) or "
                 "charuco:COLSxROWS:SQUARE_M:MARKER_M:DICT (squares, e.g. charuco:7x5:0.04:0.03:DICT_5X5_100)")
        parts = spec.strip().split(":")
        kind = parts[0].lower()
        n_parts = {"checkerboard": 3, "chessboard": 3, "charuco": 5}.get(kind)
        if n_parts is None or len(parts) != n_parts:
            raise BoardSpecError(f"bad board {spec!r}: {usage}")
        try:
            cols, rows = (int(x) for x in parts[1].lower().split("x"))
            square = float(parts[2])
            marker = float(parts[3]) if kind == "charuco" else 0.0
        except ValueError:
            raise BoardSpecError(f"bad board {spec!r}: {usage}") from None
        dictionary = ""
        if kind == "charuco":
            dictionary = parts[4].upper()
            dictionary = dictionary if dictionary.startswith("DICT_") else "DICT_" + dictionary
            dictionary = aruco_dictionaries().get(dictionary, dictionary)
        board = cls("charuco" if kind == "charuco" else "checkerboard", cols, rows, square, marker, dictionary)
        board._validate(spec)
        return board

    def _validate(self, spec: str) -> None:
        what = "inner corners" if self.kind == "checkerboard" else "squares"
        if self.cols < 2 or self.rows < 2 or self.cols * self.rows < 6:
            raise BoardSpecError(f"bad board {spec!r}: {self.cols}x{self.rows} {what} is too small")
        if not (np.isfinite(self.square_m) and self.square_m > 0):
            raise BoardSpecError(f"bad board {spec!r}: the square size must be a positive number of metres")
        if self.kind == "charuco":
            if not (0 < self.marker_m < self.square_m):
                raise BoardSpecError(f"bad board {spec!r}: the marker size must be positive and below the square size")
            if self.dictionary not in aruco_dictionaries().values():
                raise BoardSpecError(f"bad board {spec!r}: unknown ArUco dictionary {self.dictionary!r} "
                                     f"(one of {', '.join(sorted(aruco_dictionaries()))})")
            size = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, self.dictionary)).bytesList.shape[0]
            if (self.cols * self.rows) // 2 > size:
                raise BoardSpecError(f"bad board {spec!r}: {self.cols}x{self.rows} squares need "
                                     f"{(self.cols * self.rows) // 2} markers, {self.dictionary} has {size}")

    @property
    def spec(self) -> str:
        """The spec string of this board (inverse of :meth:`parse`)."""
        if self.kind == "checkerboard":
            return f"checkerboard:{self.cols}x{self.rows}:{self.square_m:g}"
        return f"charuco:{self.cols}x{self.rows}:{self.square_m:g}:{self.marker_m:g}:{self.dictionary}"

    # --------------------------------------------------------------- geometry
    @property
    def n_corners(self) -> int:
        return self.cols * self.rows if self.kind == "checkerboard" else (self.cols - 1) * (self.rows - 1)

    @property
    def min_corners(self) -> int:
        """Corners a detection needs to count: the whole checkerboard; part of a ChArUco board."""
        return self.n_corners if self.kind == "checkerboard" else max(MIN_CHARUCO_CORNERS, self.n_corners // 4)

    def object_points(self) -> np.ndarray:
        """(n_corners, 3) float64 corner positions in the board frame, metres (z = 0), indexed by id."""
        if self.kind == "charuco":
            return np.asarray(self._charuco().getChessboardCorners(), np.float64).reshape(-1, 3)
        j, i = np.mgrid[0 : self.rows, 0 : self.cols]
        xy = np.stack([i.ravel(), j.ravel()], axis=1) * self.square_m
        return np.hstack([xy, np.zeros((xy.shape[0], 1))])

    def _charuco(self) -> cv2.aruco.CharucoBoard:
        return _charuco_board(self.cols, self.rows, self.square_m, self.marker_m, self.dictionary)

    # -------------------------------------------------------------- detection
    def detect(self, image: np.ndarray) -> Detection | None:
        """The board's corners in ``image`` (uint8 grey or BGR), sub-pixel; None when not (enough of it) found."""
        gray = to_gray(image)
        if self.kind == "checkerboard":
            corners = _find_checkerboard(gray, (self.cols, self.rows))
            return None if corners is None else Detection(np.arange(self.n_corners), corners)
        corners, ids, _, _ = _charuco_detector(self).detectBoard(gray)
        if ids is None or len(ids) < self.min_corners:
            return None
        return Detection(ids.reshape(-1).astype(np.int64), corners.reshape(-1, 2).astype(np.float64))

    # -------------------------------------------------------------- rendering
    def texture(self, px_per_square: int = 64, margin_px: int = 48) -> tuple[np.ndarray, np.ndarray]:
        """A printable image of the board (uint8 grey, white margin) and the 3x3 map from board metres
        (x, y, 1) to its pixel coordinates (pixel-centre origin)."""
        s = int(px_per_square)
        if self.kind == "charuco":
            size = (self.cols * s + 2 * margin_px, self.rows * s + 2 * margin_px)
            img = self._charuco().generateImage(size, marginSize=margin_px, borderBits=1)
            origin = margin_px - 0.5  # the board's outer corner
        else:
            nx, ny = self.cols + 1, self.rows + 1
            img = np.full((ny * s + 2 * margin_px, nx * s + 2 * margin_px), 255, np.uint8)
            for r in range(ny):
                for c in range(nx):
                    if (r + c) % 2 == 1:  # top-left square white: OpenCV then reports corners in id order
                        y0, x0 = margin_px + r * s, margin_px + c * s
                        img[y0 : y0 + s, x0 : x0 + s] = 0
            origin = margin_px + s - 0.5  # the first inner corner
        k = s / self.square_m
        return img, np.array([[k, 0.0, origin], [0.0, k, origin], [0.0, 0.0, 1.0]])


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 single-channel view of a grey, BGR or BGRA image."""
    if image.ndim == 2:
        return image
    code = cv2.COLOR_BGRA2GRAY if image.shape[2] == 4 else cv2.COLOR_BGR2GRAY
    return cv2.cvtColor(image, code)


def _find_checkerboard(gray: np.ndarray, size: tuple[int, int]) -> np.ndarray | None:
    """(cols*rows, 2) sub-pixel inner corners, row by row, in a colour-fixed order; None if not all found.

    OpenCV's classic detector (fast, also on images without a board), then the
    sector-based one (finds more tilted or blurred boards); both refined by
    ``cornerSubPix`` (more accurate than either alone on our renders).
    """
    flags = cv2.CALIB_CB_ADAPTIVE_THRESH | cv2.CALIB_CB_NORMALIZE_IMAGE | cv2.CALIB_CB_FAST_CHECK
    found, corners = cv2.findChessboardCorners(gray, size, flags=flags)
    if not found:
        found, corners = cv2.findChessboardCornersSB(gray, size, flags=cv2.CALIB_CB_NORMALIZE_IMAGE)
    if not found or corners is None:
        return None
    corners = corners.reshape(-1, 1, 2).astype(np.float32)
    grid = corners.reshape(size[1], size[0], 2)
    spacing = min(np.linalg.norm(np.diff(grid, axis=0), axis=2).min(), np.linalg.norm(np.diff(grid, axis=1), axis=2).min())
    half = int(np.clip(round(0.3 * spacing), 2, 10))  # the window must not reach the neighbouring corners
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-3)
    corners = cv2.cornerSubPix(gray, corners, (half, half), (-1, -1), crit).reshape(-1, 2).astype(np.float64)
    return _fix_orientation(gray, corners, size)


def _fix_orientation(gray: np.ndarray, corners: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Order the corners so the square between the first four is white (it is in :meth:`Board.texture`).

    Detectors may report a board turned by 180 degrees; when ``cols + rows`` is odd
    the first and last squares differ in colour, which fixes the order (needed so
    both cameras of a stereo pair number the corners alike). Symmetric boards are left as found.
    """
    cols, rows = size
    if (cols + rows) % 2 == 0:
        return corners
    n = cols * rows
    first = corners[[0, 1, cols, cols + 1]].mean(axis=0)
    last = corners[[n - 1, n - 2, n - 1 - cols, n - 2 - cols]].mean(axis=0)

    def shade(p: np.ndarray) -> float:
        return float(cv2.getRectSubPix(gray, (3, 3), (float(p[0]), float(p[1]))).mean())

    return corners[::-1].copy() if shade(first) < shade(last) else corners


@functools.lru_cache(maxsize=4)
def _charuco_board(cols: int, rows: int, square: float, marker: float, dictionary: str) -> cv2.aruco.CharucoBoard:
    d = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, dictionary))
    return cv2.aruco.CharucoBoard((cols, rows), square, marker, d)


@functools.lru_cache(maxsize=4)
def _charuco_detector(board: Board) -> cv2.aruco.CharucoDetector:
    return cv2.aruco.CharucoDetector(board._charuco())


# ------------------------------------------------------------------ synthetic views (for tests)
@functools.lru_cache(maxsize=4)
def _sample_rays(camera: PinholeCamera, supersample: int) -> np.ndarray:
    """(H*s, W*s, 3) homogeneous undistorted rays ``(x/z, y/z, 1)`` of the sub-pixel sample centres."""
    s = supersample
    u = (np.arange(camera.width * s) + 0.5) / s - 0.5
    v = (np.arange(camera.height * s) + 0.5) / s - 0.5
    uu, vv = np.meshgrid(u, v)
    xn = camera.pixel_to_normalized(np.stack([uu, vv], axis=-1))
    return np.concatenate([xn, np.ones(xn.shape[:2] + (1,))], axis=-1)


def render_view(board: Board, camera: PinholeCamera, T_c_b: np.ndarray, *, background: int = 110,
                px_per_square: int = 64, supersample: int = 2) -> np.ndarray:
    """The image (uint8 grey) ``camera`` takes of ``board`` at pose ``T_c_b`` (board -> camera, metres),
    distortion included: each sample's undistorted ray meets the board plane through the inverse
    homography; 2x2 supersampling against aliasing. Outside the printed sheet: ``background``."""
    tex, A = board.texture(px_per_square)
    H = np.column_stack([T_c_b[:3, 0], T_c_b[:3, 1], T_c_b[:3, 3]])  # board (x, y, 1) -> ray
    M = A @ np.linalg.inv(H)  # ray -> texture pixel (homogeneous)
    rays = _sample_rays(camera, supersample)
    q = rays @ M.T
    w = q[..., 2]
    ok = w > 1e-12  # the ray meets the plane in front of the camera
    ws = np.where(ok, w, 1.0)
    mx = np.where(ok, q[..., 0] / ws, -1e4).astype(np.float32)
    my = np.where(ok, q[..., 1] / ws, -1e4).astype(np.float32)
    img = cv2.remap(tex, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=background)
    if supersample > 1:
        img = cv2.resize(img, (camera.width, camera.height), interpolation=cv2.INTER_AREA)
    return img
