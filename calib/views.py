"""Choosing the views to calibrate from: board found, sharp, new, and together covering the image.

Each frame goes through :meth:`ViewCollector.add`: the board is detected, the
frame is skipped when blurry or a near-duplicate of a kept view, and the kept
views' corners fill a coverage grid over the image. :meth:`ViewCollector.enough`
says when a live session has what a good calibration needs (coverage, count,
tilted views). :class:`CoverageWindow` shows progress where there is a screen;
headless runs log it instead.

Blur: the variance of the Laplacian, the usual measure, grows with the number
of edges in view and with image noise, so one threshold cannot serve a board
seen near and far; we measure instead the width of the board's edges in pixels
(contrast over the steepest gradient, after a 1-pixel Gaussian that keeps noise
out), which is the same for a sharp board at any distance (about 3.5 px on our
renders, 8 px under a 3-pixel blur).
"""

from __future__ import annotations

import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field

import cv2
import numpy as np

from calib.boards import Board, Detection, to_gray
from calib.sources import SourceFrame
from slam.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SelectionConfig:
    max_blur_px: float = 6.0  # edges of the board wider than this (pixels) -> frame skipped as blurry
    min_motion: float = 0.02  # mean corner motion below this fraction of the image diagonal -> duplicate
    grid: tuple[int, int] = (8, 6)  # coverage cells across and down the image
    target_coverage: float = 0.7  # fraction of cells a live session must reach
    tilt_deg: float = 20.0  # a view is "tilted" when the board plane is turned at least this far
    min_tilted: int = 3  # tilted views a live session must hold (they fix the focal length)


@dataclass
class View:
    """One kept view: where the board's corners are in the image."""

    name: str
    ids: np.ndarray  # (M,) corner ids into Board.object_points()
    corners: np.ndarray  # (M, 2) float64 pixels
    blur_px: float  # edge width, pixels
    tilt_deg: float  # angle between the board normal and the optical axis (rough: a guessed focal length)


@dataclass
class Candidate:
    """What :meth:`ViewCollector.add` made of a frame: the view (None without a sharp board) and why."""

    view: View | None
    accepted: bool
    reason: str  # "kept", "no board", "blurry (...)", "duplicate of ..."


def edge_width_px(gray: np.ndarray, corners: np.ndarray) -> float:
    """Width (pixels) of the edges in the board's bounding box: intensity range / steepest gradient."""
    h, w = gray.shape[:2]
    x0, y0 = np.maximum(np.floor(corners.min(axis=0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(axis=0)).astype(int) + 1, [w, h])
    roi = gray[y0:y1, x0:x1].astype(np.float32)
    if roi.shape[0] < 5 or roi.shape[1] < 5:
        return float("inf")
    smooth = cv2.GaussianBlur(roi, (0, 0), 1.0)
    grad = np.hypot(cv2.Sobel(smooth, cv2.CV_32F, 1, 0), cv2.Sobel(smooth, cv2.CV_32F, 0, 1)) / 8.0
    contrast = float(np.percentile(roi, 95) - np.percentile(roi, 5))
    steepest = float(np.percentile(grad, 99))
    return contrast / steepest if steepest > 0 else float("inf")


def board_tilt_deg(board: Board, det: Detection, size: tuple[int, int]) -> float:
    """Rough tilt of the board (degrees) from a guessed camera (focal length 0.9 x width, no distortion)."""
    w, h = size
    K = np.array([[0.9 * w, 0, (w - 1) / 2], [0, 0.9 * w, (h - 1) / 2], [0, 0, 1]])
    obj = board.object_points()[det.ids]
    ok, rvec, _ = cv2.solvePnP(obj, det.corners, K, None, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return 0.0
    R, _ = cv2.Rodrigues(rvec)
    return float(np.degrees(np.arccos(np.clip(abs(R[2, 2]), 0.0, 1.0))))


def motion_px(a: View, b: View) -> float:
    """Mean displacement (pixels) of the corners two views share; inf when they share under half."""
    common, ia, ib = np.intersect1d(a.ids, b.ids, return_indices=True)
    if len(common) < 0.5 * max(len(a.ids), len(b.ids)):
        return float("inf")
    return float(np.linalg.norm(a.corners[ia] - b.corners[ib], axis=1).mean())


@dataclass
class ViewCollector:
    """Keeps the good views of a board from a stream of frames of one camera."""

    board: Board
    source: str  # for error messages
    cfg: SelectionConfig = field(default_factory=SelectionConfig)
    views: list[View] = field(default_factory=list)
    image_size: tuple[int, int] | None = None  # (width, height) of the first frame
    first_name: str = ""
    frames: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> frames

    def __post_init__(self) -> None:
        gx, gy = self.cfg.grid
        self.covered = np.zeros((gy, gx), bool)

    # ------------------------------------------------------------------ intake
    def check_size(self, frame: SourceFrame) -> None:
        """All frames must have the first one's size (one camera at one resolution)."""
        h, w = frame.image.shape[:2]
        if self.image_size is None:
            self.image_size, self.first_name = (w, h), frame.name
        elif (w, h) != self.image_size:
            w0, h0 = self.image_size
            raise DataError(frame.name, f"image is {w}x{h} but {self.first_name} is {w0}x{h0}: all views must "
                                        "come from one camera at one resolution")

    def inspect(self, frame: SourceFrame) -> Candidate:
        """Detect the board and check sharpness and novelty, without keeping the view."""
        self.check_size(frame)
        self.frames += 1
        gray = to_gray(frame.image)
        det = self.board.detect(gray)
        if det is None:
            return Candidate(None, False, "no board")
        blur = edge_width_px(gray, det.corners)
        if blur > self.cfg.max_blur_px:
            return Candidate(None, False, f"blurry (edges {blur:.1f} px wide > {self.cfg.max_blur_px:g})")
        view = View(frame.name, det.ids, det.corners, blur, board_tilt_deg(self.board, det, self.image_size))
        twin = self.duplicate_of(view)
        if twin is not None:
            return Candidate(view, False, f"duplicate of {twin.name}")
        return Candidate(view, True, "kept")

    def add(self, frame: SourceFrame) -> Candidate:
        """Inspect ``frame`` and keep its view when it is good; the skip reasons are counted."""
        cand = self.inspect(frame)
        if cand.accepted:
            self.keep(cand.view)
        else:
            self.skipped[cand.reason.split(" (")[0].split(" of ")[0]] += 1
        return cand

    def keep(self, view: View) -> None:
        self.views.append(view)
        self.covered |= self.cells(view.corners)

    def duplicate_of(self, view: View) -> View | None:
        diag = float(np.hypot(*self.image_size))
        for v in self.views:
            if motion_px(view, v) < self.cfg.min_motion * diag:
                return v
        return None

    def cells(self, corners: np.ndarray) -> np.ndarray:
        """Coverage-grid cells (rows, cols) holding any of ``corners``."""
        gx, gy = self.cfg.grid
        w, h = self.image_size
        cx = np.clip((corners[:, 0] + 0.5) * gx // w, 0, gx - 1).astype(int)
        cy = np.clip((corners[:, 1] + 0.5) * gy // h, 0, gy - 1).astype(int)
        m = np.zeros((gy, gx), bool)
        m[cy, cx] = True
        return m

    # ---------------------------------------------------------------- progress
    @property
    def coverage(self) -> float:
        return float(self.covered.mean())

    @property
    def n_tilted(self) -> int:
        return sum(v.tilt_deg >= self.cfg.tilt_deg for v in self.views)

    def enough(self, n_views: int) -> bool:
        """Whether a live session can stop: ``n_views`` views, the target coverage, enough tilted views."""
        return (len(self.views) >= n_views and self.coverage >= self.cfg.target_coverage
                and self.n_tilted >= self.cfg.min_tilted)

    def progress(self) -> str:
        return (f"{len(self.views)} views, coverage {100 * self.coverage:.0f}% "
                f"(target {100 * self.cfg.target_coverage:.0f}%), {self.n_tilted} tilted >= {self.cfg.tilt_deg:g} deg")

    def require(self, min_views: int) -> None:
        """:class:`DataError` naming the source when fewer than ``min_views`` views were kept."""
        n = len(self.views)
        if n >= min_views:
            return
        skipped = ", ".join(f"{k}: {c}" for k, c in sorted(self.skipped.items())) or "none"
        if self.frames and n == 0 and self.skipped.get("no board", 0) == self.frames:
            raise DataError(self.source, f"no {self.board.spec} board found in any of the {self.frames} images "
                                         "(check --board: a checkerboard's COLSxROWS counts inner corners, "
                                         "a ChArUco board's counts squares)")
        raise DataError(self.source, f"too few usable views: {n} found, at least {min_views} needed "
                                     f"({self.frames} images read; skipped: {skipped})")


# --------------------------------------------------------------------- display
def has_screen() -> bool:
    """Whether a window can be shown: a display on Linux, and an OpenCV build with GUI support."""
    if sys.platform.startswith("linux") and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    try:
        cv2.namedWindow("slam-calib")
    except cv2.error:  # opencv-python-headless: no highgui
        return False
    return True


def draw_coverage(image: np.ndarray, collector: ViewCollector, cand: Candidate | None) -> np.ndarray:
    """BGR copy of ``image`` with the covered cells tinted, the current corners and the progress line."""
    out = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR) if image.ndim == 2 else image[..., :3].copy()
    h, w = out.shape[:2]
    gx, gy = collector.cfg.grid
    tint = out.copy()
    for r, c in zip(*np.nonzero(collector.covered)):
        cv2.rectangle(tint, (c * w // gx, r * h // gy), ((c + 1) * w // gx - 1, (r + 1) * h // gy - 1),
                      (0, 160, 0), -1)
    out = cv2.addWeighted(tint, 0.3, out, 0.7, 0)
    if cand is not None and cand.view is not None:
        color = (0, 255, 0) if cand.accepted else (0, 200, 255)
        for x, y in cand.view.corners:
            cv2.circle(out, (round(float(x)), round(float(y))), 3, color, 1)
    text = collector.progress() + ("" if cand is None else f" | {cand.reason}")
    cv2.putText(out, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3)
    cv2.putText(out, text, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)
    return out


class CoverageWindow:
    """Live coverage display; ``show`` returns False when the user pressed q or Esc."""

    def __init__(self, title: str = "slam-calib"):
        self.title = title

    def show(self, image: np.ndarray) -> bool:
        cv2.imshow(self.title, image)
        return (cv2.waitKey(1) & 0xFF) not in (ord("q"), 27)

    def close(self) -> None:
        cv2.destroyWindow(self.title)
