"""Stereo calibration: each camera's intrinsics, then the right camera's pose and the rectification.

Conventions: ``R``, ``t`` take a point from the left camera frame to the right
one, ``X_right = R @ X_left + t`` (OpenCV's ``stereoCalibrate``; metres), so
the baseline is ``|t|`` and the right camera's pose in the left frame is
``T_left_right = inv([R | t])`` (what :class:`slam.records.StereoRig` calls
``T_l_r``). Rectification (``cv2.stereoRectify``, zero disparity at infinity):
``R1``/``R2`` rotate each camera into the rectified frame, ``P1``/``P2`` are the
3x4 projections of the rectified cameras (``P2[0, 3] = -fx' * baseline``), ``Q``
maps (u, v, disparity, 1) to 3-D.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from calib.boards import Board
from calib.intrinsics import Calibration, CalibrationError, calibrate, fisheye_flag
from calib.sources import FrameSource, paired_frames
from calib.views import SelectionConfig, View, ViewCollector, motion_px
from slam.errors import DataError

log = logging.getLogger(__name__)

_CRITERIA = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-10)


@dataclass
class StereoCalibration:
    left: Calibration
    right: Calibration
    R: np.ndarray  # (3, 3) left -> right rotation
    t: np.ndarray  # (3,) left -> right translation, metres
    rms_px: float  # reprojection RMS of the stereo optimisation (both images), pixels
    n_pairs: int
    rectification: dict[str, np.ndarray]  # R1, R2 (3x3), P1, P2 (3x4), Q (4x4)

    @property
    def baseline_m(self) -> float:
        return float(np.linalg.norm(self.t))

    @property
    def T_left_right(self) -> np.ndarray:
        """4x4 pose of the right camera in the left camera frame."""
        T = np.eye(4)
        T[:3, :3] = self.R.T
        T[:3, 3] = -self.R.T @ self.t
        return T


def collect_pairs(board: Board, left: FrameSource, right: FrameSource, cfg: SelectionConfig | None = None,
                  max_pairs: int | None = None) -> tuple[ViewCollector, ViewCollector, list[tuple[View, View]]]:
    """Per-camera views (each camera's own good views, for its intrinsics) and the pairs where both
    cameras saw the board sharply at the same time (near-duplicate pairs, judged on the left, skipped).

    Videos and cameras stop at ``max_pairs`` pairs (and on Ctrl-C); folders are read to the end.
    """
    cfg = cfg or SelectionConfig()
    lc, rc = ViewCollector(board, left.source, cfg), ViewCollector(board, right.source, cfg)
    pairs: list[tuple[View, View]] = []
    stop = None if left.kind == "folder" else max_pairs
    try:
        for fl, fr in paired_frames(left, right):
            lc.check_size(fl)
            rc.check_size(fr)
            if lc.image_size != rc.image_size:
                (wl, hl), (wr, hr) = lc.image_size, rc.image_size
                raise DataError(fr.name, f"image is {wr}x{hr} but the left camera's ({lc.first_name}) are "
                                         f"{wl}x{hl}; a stereo pair must share one resolution")
            cl, cr = lc.add(fl), rc.add(fr)
            if cl.view is None or cr.view is None:
                continue
            diag = float(np.hypot(*lc.image_size))
            if all(motion_px(cl.view, pl) >= cfg.min_motion * diag for pl, _ in pairs):
                pairs.append((cl.view, cr.view))
                log.info("pair %s + %s kept (%d pairs)", fl.name, fr.name, len(pairs))
            if stop is not None and len(pairs) >= stop:
                break
    except KeyboardInterrupt:
        log.warning("interrupted: calibrating from the %d pairs kept so far", len(pairs))
    return lc, rc, pairs


def _common(board: Board, vl: View, vr: View) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Board points and both cameras' pixels of the corners both views hold."""
    ids, il, ir = np.intersect1d(vl.ids, vr.ids, return_indices=True)
    cl, cr = vl.corners[il], vr.corners[ir]
    # a symmetric checkerboard's corners may be numbered from opposite ends in the two images:
    # the right camera sees nearly the same picture, so the first-to-last direction must agree
    symmetric = board.kind == "checkerboard" and (board.cols + board.rows) % 2 == 0
    if symmetric and np.dot(cl[-1] - cl[0], cr[-1] - cr[0]) < 0:
        cr = cr[::-1]
    return board.object_points()[ids], cl, cr


def calibrate_stereo(board: Board, left_views: list[View], right_views: list[View], pairs: list[tuple[View, View]],
                     size: tuple[int, int], model: str = "pinhole", *, min_views: int = 10,
                     min_pairs: int = 5, top_term: str = "auto") -> StereoCalibration:
    """Intrinsics of each camera from its views, then ``R``, ``t`` with them fixed, then rectification.
    ``top_term``: as :func:`calib.intrinsics.calibrate`, for each camera on its own views."""
    left = calibrate(board, left_views, size, model, top_term=top_term, min_views=min_views)
    right = calibrate(board, right_views, size, model, top_term=top_term, min_views=min_views)
    outliers = {name for name, _ in left.rejected} | {name for name, _ in right.rejected}
    used = [(vl, vr) for vl, vr in pairs if vl.name not in outliers and vr.name not in outliers]
    data = [_common(board, vl, vr) for vl, vr in used]
    data = [d for d in data if len(d[0]) >= board.min_corners]
    if len(data) < min_pairs:
        raise CalibrationError(f"only {len(data)} usable image pairs with the board in both cameras "
                               f"(at least {min_pairs} needed)")
    obj = [d[0].reshape(1, -1, 3) for d in data]
    img_l = [d[1].reshape(1, -1, 2) for d in data]
    img_r = [d[2].reshape(1, -1, 2) for d in data]
    cl, cr = left.camera, right.camera
    Dl, Dr = np.array(cl.dist), np.array(cr.dist)
    try:
        if model == "fisheye":
            out = cv2.fisheye.stereoCalibrate(obj, img_l, img_r, cl.K, Dl, cr.K, Dr, size,
                                              flags=fisheye_flag("CALIB_FIX_INTRINSIC"), criteria=_CRITERIA)
            rms, R, t = out[0], out[5], out[6]
            rect = cv2.fisheye.stereoRectify(cl.K, Dl, cr.K, Dr, size, R, t, cv2.CALIB_ZERO_DISPARITY,
                                             balance=0.0, fov_scale=1.0)
        else:
            as32 = [[a.reshape(-1, 1, a.shape[-1]).astype(np.float32) for a in arrs] for arrs in (obj, img_l, img_r)]
            out = cv2.stereoCalibrate(*as32, cl.K, Dl, cr.K, Dr, size, flags=cv2.CALIB_FIX_INTRINSIC,
                                      criteria=_CRITERIA)
            rms, R, t = out[0], out[5], out[6]
            rect = cv2.stereoRectify(cl.K, Dl, cr.K, Dr, size, R, t, flags=cv2.CALIB_ZERO_DISPARITY, alpha=0)
    except cv2.error as e:
        raise CalibrationError(f"OpenCV stereo calibration failed on {len(data)} pairs: {str(e).strip()}") from None
    names = ("R1", "R2", "P1", "P2", "Q")
    return StereoCalibration(left, right, np.asarray(R, np.float64), np.asarray(t, np.float64).reshape(3),
                             float(rms), len(data), {k: np.asarray(v, np.float64) for k, v in zip(names, rect)})


def _rows(a: np.ndarray, digits: int = 9) -> list:
    return np.round(np.asarray(a, np.float64), digits).tolist()


def _camera(cal: Calibration) -> dict:
    return {**cal.camera.to_dict(), "rms": round(cal.rms_px, 5), cal.top_term: cal.top_term_reason,
            "region_coverage": cal.coverage.to_dict()}


def write_stereo_file(path: str | Path, st: StereoCalibration, *, comment: str = "") -> None:
    """The stereo YAML: both cameras (our camera-file keys), ``R``, ``t`` (metres), baseline, rectification."""
    d = {
        "left": _camera(st.left),
        "right": _camera(st.right),
        "R": _rows(st.R),
        "t": _rows(st.t),
        "baseline_m": round(st.baseline_m, 6),
        "T_left_right": _rows(st.T_left_right),
        "rms": round(st.rms_px, 5),
        "pairs": st.n_pairs,
        "rectification": {k: _rows(v, 6) for k, v in st.rectification.items()},
    }
    head = "".join(f"# {line}\n" for line in comment.splitlines())
    Path(path).write_text(head + yaml.safe_dump(d, sort_keys=False, default_flow_style=None, width=120))
