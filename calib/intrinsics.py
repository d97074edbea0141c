"""Camera intrinsics from board views: OpenCV's calibration, per-view errors, outlier views dropped.

``pinhole``: ``cv2.calibrateCamera`` (fx, fy, cx, cy, k1 k2 p1 p2 k3; no skew).
``fisheye``: ``cv2.fisheye.calibrate`` (fx, fy, cx, cy, equidistant k1..k4; skew fixed at 0).
Both match :class:`~slam.geometry.camera.PinholeCamera`'s models, so the
per-view errors are computed with it (an independent check of the conversion).

The highest radial term (pinhole ``k3``, fisheye ``k4``) is held at 0 unless the
views reach the image corners (``top_term="auto"``, see :mod:`calib.coverage`),
or always (``"fix"``), or fitted always (``"fit"``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from calib.boards import Board
from calib.coverage import MIN_CORNER_COVERAGE, Coverage, region_coverage
from calib.views import View
from slam.geometry.camera import PinholeCamera

log = logging.getLogger(__name__)

OUTLIER_FACTOR = 3.0  # a view whose RMS exceeds this many times the median RMS is an outlier ...
OUTLIER_FLOOR_PX = 0.3  # ... unless its RMS is below this (sub-pixel views are never dropped)
MAX_ROUNDS = 5
_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)
TOP_TERM_MODES = ("auto", "fix", "fit")


class CalibrationError(RuntimeError):
    """OpenCV's optimiser failed (too few, degenerate or inconsistent views)."""


@dataclass
class Calibration:
    camera: PinholeCamera
    rms_px: float  # reprojection RMS over all corners of the used views, pixels
    views: list[View]  # the views used, after outlier rejection
    per_view_rms_px: np.ndarray  # (len(views),) RMS of each used view, pixels
    rejected: list[tuple[str, float]]  # (view name, its RMS in pixels when dropped)
    T_c_b: list[np.ndarray]  # 4x4 board -> camera pose of each used view (metres)
    coverage: Coverage  # of the used views, per image region
    top_term_fixed: bool  # the highest radial term (pinhole k3, fisheye k4) was held at 0
    top_term_reason: str  # why, e.g. "auto: the views do not reach the image corners (top-left 3%, ...)"

    @property
    def top_term(self) -> str:
        """Name of the highest radial term of the model: ``k3`` (pinhole) or ``k4`` (fisheye)."""
        return top_term_name(self.camera.model)

    def per_view(self) -> dict[str, float]:
        return {v.name: round(float(e), 4) for v, e in zip(self.views, self.per_view_rms_px)}


def fisheye_flag(name: str) -> int:
    """A ``cv2.fisheye`` flag: in ``cv2.fisheye`` up to OpenCV 4.x, in ``cv2`` from 5.0 (values differ)."""
    value = getattr(cv2.fisheye, name, None)
    return int(getattr(cv2, name) if value is None else value)


def top_term_name(model: str) -> str:
    return "k4" if model == "fisheye" else "k3"


def decide_top_term(mode: str, coverage: Coverage) -> tuple[bool, str]:
    """Whether to hold the highest radial term at 0 (``mode`` "auto", "fix" or "fit") and why."""
    if mode not in TOP_TERM_MODES:
        raise ValueError(f"top_term must be one of {TOP_TERM_MODES}, got {mode!r}")
    short = {n: f for n, f in coverage.corner_fractions().items() if f < MIN_CORNER_COVERAGE}
    where = ", ".join(f"{n} {100 * f:.0f}%" for n, f in short.items())
    if mode == "fix":
        return True, "fixed at 0 (asked)"
    if mode == "fit":
        return False, "fitted (asked)" + (f"; the views do not reach the image corners ({where})" if short else "")
    if short:
        return True, (f"fixed at 0 (auto): the views do not reach the image corners ({where} of the corner "
                      f"regions covered, {100 * MIN_CORNER_COVERAGE:.0f}% needed)")
    return False, "fitted (auto): the views reach all four image corners"


def view_points(board: Board, views: list[View]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Per view: (1, M, 3) board points (metres) and (1, M, 2) pixels, float64, as ``cv2.fisheye`` wants
    them (OpenCV 5.0's fisheye functions fail on (M, 1, C) arrays: opencv/opencv#29692)."""
    obj = board.object_points()
    return ([obj[v.ids].reshape(1, -1, 3).astype(np.float64) for v in views],
            [v.corners.reshape(1, -1, 2).astype(np.float64) for v in views])


def _pose(rvec: np.ndarray, tvec: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(np.asarray(rvec, np.float64).reshape(3))[0]
    T[:3, 3] = np.asarray(tvec, np.float64).reshape(3)
    return T


def reprojection_errors(camera: PinholeCamera, board: Board, views: list[View],
                        T_c_b: list[np.ndarray]) -> list[np.ndarray]:
    """Per view, the (M, 2) pixel residuals ``detected - projected``."""
    obj = board.object_points()
    out = []
    for v, T in zip(views, T_c_b):
        uv, _ = camera.project(obj[v.ids] @ T[:3, :3].T + T[:3, 3])
        out.append(v.corners - uv)
    return out


def _solve(board: Board, views: list[View], size: tuple[int, int], model: str,
           fix_top: bool) -> tuple[PinholeCamera, list[np.ndarray]]:
    obj, img = view_points(board, views)
    w, h = size
    try:
        if model == "fisheye":
            flags = fisheye_flag("CALIB_RECOMPUTE_EXTRINSIC") | fisheye_flag("CALIB_FIX_SKEW")
            flags |= fisheye_flag("CALIB_FIX_K4") if fix_top else 0
            _, K, D, rvecs, tvecs = cv2.fisheye.calibrate(obj, img, (w, h), np.eye(3), np.zeros(4), flags=flags,
                                                          criteria=_CRITERIA)
        else:
            flags = cv2.CALIB_FIX_K3 if fix_top else 0
            _, K, D, rvecs, tvecs = cv2.calibrateCamera([o.reshape(-1, 3).astype(np.float32) for o in obj],
                                                        [i.reshape(-1, 2).astype(np.float32) for i in img],
                                                        (w, h), None, None, flags=flags, criteria=_CRITERIA)
    except cv2.error as e:
        raise CalibrationError(f"OpenCV could not calibrate from {len(views)} views: {str(e).strip()}") from None
    d = np.asarray(D, np.float64).reshape(-1)
    cam = PinholeCamera(w, h, K[0, 0], K[1, 1], K[0, 2], K[1, 2], tuple(d[: 4 if model == "fisheye" else 5]),
                        model=model)
    return cam, [_pose(r, t) for r, t in zip(rvecs, tvecs)]


def calibrate(board: Board, views: list[View], size: tuple[int, int], model: str = "pinhole", *,
              top_term: str = "auto", outlier_factor: float = OUTLIER_FACTOR, min_views: int = 3) -> Calibration:
    """Calibrate ``model`` ("pinhole" or "fisheye") from ``views`` of ``board`` in images of ``size`` (w, h).

    ``top_term``: the highest radial term (pinhole ``k3``, fisheye ``k4``) is held at 0 ("fix"), fitted
    ("fit"), or fitted only when the views reach the four image corners ("auto", decided again after each
    round of outlier rejection).

    Outlier views (RMS above ``outlier_factor`` x the median and above
    ``OUTLIER_FLOOR_PX``) are dropped, worst first and never below ``min_views``,
    and the calibration re-run, until none is left (at most ``MAX_ROUNDS`` rounds).
    """
    if model not in ("pinhole", "fisheye"):
        raise ValueError(f"model must be 'pinhole' or 'fisheye', got {model!r}")
    if len(views) < max(min_views, 3):
        raise ValueError(f"{len(views)} views cannot calibrate a camera (at least {max(min_views, 3)})")
    views = list(views)
    rejected: list[tuple[str, float]] = []
    if top_term not in TOP_TERM_MODES:
        raise ValueError(f"top_term must be one of {TOP_TERM_MODES}, got {top_term!r}")
    for round_ in range(MAX_ROUNDS + 1):
        coverage = region_coverage(views, size)
        fix_top, reason = decide_top_term(top_term, coverage)
        cam, poses = _solve(board, views, size, model, fix_top)
        errors = reprojection_errors(cam, board, views, poses)
        rms = np.array([np.sqrt((e**2).sum(axis=1).mean()) for e in errors])
        if round_ == MAX_ROUNDS:
            break
        limit = max(outlier_factor * float(np.median(rms)), OUTLIER_FLOOR_PX)
        worst = [i for i in np.argsort(-rms) if rms[i] > limit][: max(0, len(views) - min_views)]
        if not worst:
            break
        for i in worst:
            log.info("view %s: reprojection RMS %.3f px > %.3f px (%g x median); dropped", views[i].name,
                     rms[i], limit, outlier_factor)
            rejected.append((views[i].name, float(rms[i])))
        drop = set(worst)
        views = [v for i, v in enumerate(views) if i not in drop]
    all_err = np.concatenate(errors)
    total = float(np.sqrt((all_err**2).sum(axis=1).mean()))
    return Calibration(cam, total, views, rms, rejected, poses, coverage, fix_top, reason)
