"""How much of each image region the calibration views cover, and whether they reach the image corners.

A lens model is only measured where the board was seen: the highest radial
term (``k3`` of the radial-tangential model, ``k4`` of the equidistant one)
mostly bends the image corners, and fitted from views that stay inside the
centre it extrapolates badly there (on renders over the centre half of a
640x480 plumb-bob lens: 12 to 970 px wrong at the image corners with ``k3``
fitted, 2 to 6 px with ``k3`` held at 0). ROS's camera calibrator fits only
``k1, k2`` by default; we fit the top term when the views reach all four image
corners and hold it at 0 otherwise (``--k3 auto``).

Coverage of a region: the fraction of its area inside the convex hull of some
view's detected corners (the part of the image where the lens was measured),
on a ``GRID`` of regions (rows top to bottom, columns left to right).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from calib.views import View

GRID = (4, 4)  # regions across and down the image; a corner region is 1/16 of the image
# each corner region must be covered this much for the top term to be fitted: views spread over the whole
# image with the board fully in view cover 20-35% of them, views over the centre half under 5%
MIN_CORNER_COVERAGE = 0.15
_RASTER = 4  # the coverage mask is drawn at 1/_RASTER of the image resolution
CORNERS = {"top-left": (0, 0), "top-right": (0, -1), "bottom-left": (-1, 0), "bottom-right": (-1, -1)}


@dataclass(frozen=True)
class Coverage:
    cells: np.ndarray  # (rows, cols) fraction of each region inside some view's corner hull, 0..1

    def corner_fractions(self) -> dict[str, float]:
        """Coverage of the four corner regions, by name (``top-left``, ...)."""
        return {name: float(self.cells[rc]) for name, rc in CORNERS.items()}

    def uncovered_corners(self, min_fraction: float = MIN_CORNER_COVERAGE) -> list[str]:
        """Names of the corner regions covered less than ``min_fraction``."""
        return [name for name, f in self.corner_fractions().items() if f < min_fraction]

    def reaches_corners(self, min_fraction: float = MIN_CORNER_COVERAGE) -> bool:
        return not self.uncovered_corners(min_fraction)

    def to_dict(self) -> dict:
        """For the camera file: the grid and each region's covered fraction (rows top to bottom)."""
        rows, cols = self.cells.shape
        return {"grid": f"{cols}x{rows}", "regions": np.round(self.cells, 2).tolist()}

    def table(self) -> str:
        """The regions as lines of percentages, top row first (for the log)."""
        return "\n".join(" ".join(f"{100 * f:4.0f}%" for f in row) for row in self.cells)


def region_coverage(views: list[View], size: tuple[int, int], grid: tuple[int, int] = GRID) -> Coverage:
    """Coverage of a ``grid`` (cols, rows) of regions of an image of ``size`` (width, height) by ``views``."""
    w, h = size
    gx, gy = grid
    mw, mh = max(gx, -(-w // _RASTER)), max(gy, -(-h // _RASTER))
    mask = np.zeros((mh, mw), np.uint8)
    scale = np.array([mw / w, mh / h])
    for v in views:
        if len(v.corners) >= 3:
            hull = cv2.convexHull(((v.corners + 0.5) * scale).astype(np.float32))
            cv2.fillConvexPoly(mask, np.round(hull * 16).astype(np.int32), 1, cv2.LINE_8, shift=4)
    xs = np.linspace(0, mw, gx + 1).round().astype(int)
    ys = np.linspace(0, mh, gy + 1).round().astype(int)
    cells = np.array([[mask[ys[r]:ys[r + 1], xs[c]:xs[c + 1]].mean() for c in range(gx)] for r in range(gy)])
    return Coverage(cells)
