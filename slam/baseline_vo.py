"""Frame-to-frame visual odometry: the placeholder tracker of ``slam-run`` until the keyframe backbone lands.

This is deliberately simple and labelled as a baseline everywhere it reports:
ORB features matched between consecutive frames, then

* rgbd / stereo: 3D points of the previous frame (from depth, or from left-right
  matches along rectified rows) and PnP with RANSAC on the current frame;
* mono: essential matrix (USAC MAGSAC) and ``recoverPose``, with the scale of
  each step carried over by the depths of points triangulated in the previous step.

It has no map, no local optimisation and no loop closure, so it drifts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from slam.geometry import PinholeCamera, inv_pose, make_pose
from slam.geometry.triangulation import triangulate_dlt
from slam.records import Frame, StereoRig

log = logging.getLogger(__name__)

NAME = "baseline-vo (frame-to-frame, no map/BA/loop closure; the SLAM backbone replaces it)"


@dataclass
class BaselineConfig:
    n_features: int = 1500  # ORB features per frame
    ratio: float = 0.8  # Lowe ratio test for descriptor matches
    min_inliers: int = 15  # below this a frame is reported lost
    pnp_reproj_px: float = 2.0  # RANSAC threshold for PnP
    essential_px: float = 1.0  # MAGSAC threshold for the essential matrix
    min_flow_px: float = 0.7  # mono: median flow below this counts as no motion
    max_depth_m: float = 40.0


@dataclass
class _Features:
    uv: np.ndarray  # (N, 2) distorted pixels as detected
    uv_und: np.ndarray  # (N, 2) undistorted pixels (same K)
    desc: np.ndarray


class BaselineVO:
    """Feed frames in order; :meth:`track` returns ``T_w_c`` or ``None`` when the frame is lost."""

    def __init__(self, camera: PinholeCamera, mode: str, stereo: StereoRig | None = None, cfg: BaselineConfig | None = None):
        self.cfg = cfg or BaselineConfig()
        self.camera = camera
        self.mode = mode.replace("-inertial", "")
        self.stereo = stereo
        if self.mode == "stereo" and (stereo is None or not _is_rectified(stereo)):
            raise ValueError("the baseline needs a rectified stereo pair for stereo mode; use --mode mono")
        self.orb = cv2.ORB_create(self.cfg.n_features)
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
        self.K = camera.K
        self.T_w_c = np.eye(4)
        self.prev: _Features | None = None
        self.prev_points: np.ndarray | None = None  # (N, 3) camera points of prev features (nan = unknown)
        self.prev_depth_by_kp: dict[int, float] = {}  # mono: depth of prev features from the last step
        self.velocity = np.eye(4)

    # ------------------------------------------------------------------ public
    def track(self, frame: Frame) -> np.ndarray | None:
        feats = self._detect(frame.image)
        if self.prev is None:
            self._keep(frame, feats, {})
            return self.T_w_c.copy()
        m_prev, m_cur = self._match(self.prev.desc, feats.desc)
        if self.mode in ("rgbd", "stereo"):
            T_cur_prev = self._pnp(m_prev, m_cur, feats)
            depth_by_kp: dict[int, float] = {}
        else:
            T_cur_prev, depth_by_kp = self._essential(m_prev, m_cur, feats)
        if T_cur_prev is None:
            # Lost: keep predicting with the last motion; re-anchor on this frame.
            self.T_w_c = self.T_w_c @ inv_pose(self.velocity)
            self._keep(frame, feats, {})
            return None
        self.velocity = T_cur_prev
        self.T_w_c = self.T_w_c @ inv_pose(T_cur_prev)
        self._keep(frame, feats, depth_by_kp)
        return self.T_w_c.copy()

    # ---------------------------------------------------------------- helpers
    def _detect(self, image: np.ndarray) -> _Features:
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        kps, desc = self.orb.detectAndCompute(gray, None)
        uv = np.array([k.pt for k in kps], dtype=np.float64).reshape(-1, 2)
        if desc is None:
            desc = np.zeros((0, 32), np.uint8)
        return _Features(uv, self.camera.undistort_points(uv), desc)

    def _match(self, d1: np.ndarray, d2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if len(d1) < 2 or len(d2) < 2:
            return np.zeros(0, int), np.zeros(0, int)
        pairs = self.matcher.knnMatch(d1, d2, k=2)
        good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < self.cfg.ratio * p[1].distance]
        return np.array([g.queryIdx for g in good], int), np.array([g.trainIdx for g in good], int)

    def _keep(self, frame: Frame, feats: _Features, depth_by_kp: dict[int, float]) -> None:
        self.prev = feats
        self.prev_depth_by_kp = depth_by_kp
        if self.mode == "rgbd":
            self.prev_points = self._points_from_depth(frame, feats)
        elif self.mode == "stereo":
            self.prev_points = self._points_from_stereo(frame, feats)

    def _points_from_depth(self, frame: Frame, feats: _Features) -> np.ndarray:
        pts = np.full((len(feats.uv), 3), np.nan)
        if frame.depth is None or len(feats.uv) == 0:
            return pts
        h, w = frame.depth.shape
        iu = np.clip(np.round(feats.uv[:, 0]).astype(int), 0, w - 1)
        iv = np.clip(np.round(feats.uv[:, 1]).astype(int), 0, h - 1)
        d = frame.depth[iv, iu].astype(np.float64)
        ok = (d > 0.05) & (d < self.cfg.max_depth_m)
        pts[ok] = self.camera.unproject(feats.uv[ok], d[ok])
        return pts

    def _points_from_stereo(self, frame: Frame, feats: _Features) -> np.ndarray:
        pts = np.full((len(feats.uv), 3), np.nan)
        if frame.right is None or len(feats.uv) == 0:
            return pts
        right = self._detect(frame.right)
        m_l, m_r = self._match(feats.desc, right.desc)
        if len(m_l) == 0:
            return pts
        dv = np.abs(feats.uv_und[m_l, 1] - right.uv_und[m_r, 1])
        disp = feats.uv_und[m_l, 0] - right.uv_und[m_r, 0]
        ok = (dv < 1.5) & (disp > 0.5)
        fb = self.camera.fx * self.stereo.baseline
        z = fb / disp[ok]
        keep = z < self.cfg.max_depth_m
        idx = m_l[ok][keep]
        uvn = (feats.uv_und[idx] - [self.camera.cx, self.camera.cy]) / [self.camera.fx, self.camera.fy]
        pts[idx] = np.column_stack([uvn * z[keep, None], z[keep]])
        return pts

    def _pnp(self, m_prev: np.ndarray, m_cur: np.ndarray, feats: _Features) -> np.ndarray | None:
        P = self.prev_points[m_prev]
        ok = np.isfinite(P[:, 0])
        if ok.sum() < self.cfg.min_inliers:
            return None
        obj, img = P[ok], feats.uv_und[m_cur[ok]]
        rvec0, tvec0 = cv2.Rodrigues(self.velocity[:3, :3])[0], self.velocity[:3, 3].reshape(3, 1)
        found, rvec, tvec, inliers = cv2.solvePnPRansac(
            obj, img, self.K, None, rvec0.copy(), tvec0.copy(), useExtrinsicGuess=True,
            iterationsCount=200, reprojectionError=self.cfg.pnp_reproj_px, confidence=0.999,
            flags=cv2.SOLVEPNP_ITERATIVE,
        )
        if not found or inliers is None or len(inliers) < self.cfg.min_inliers:
            return None
        inl = inliers.ravel()
        rvec, tvec = cv2.solvePnPRefineLM(obj[inl], img[inl], self.K, None, rvec, tvec)
        return make_pose(cv2.Rodrigues(rvec)[0], tvec.ravel())

    def _essential(self, m_prev: np.ndarray, m_cur: np.ndarray, feats: _Features) -> tuple[np.ndarray | None, dict]:
        if len(m_prev) < self.cfg.min_inliers:
            return None, {}
        p1, p2 = self.prev.uv_und[m_prev], feats.uv_und[m_cur]
        if np.median(np.linalg.norm(p2 - p1, axis=1)) < self.cfg.min_flow_px:
            # No measurable motion: identity step, keep depths for the next step.
            return np.eye(4), {int(j): self.prev_depth_by_kp[int(i)] for i, j in zip(m_prev, m_cur) if int(i) in self.prev_depth_by_kp}
        E, mask = cv2.findEssentialMat(p1, p2, self.K, method=cv2.USAC_MAGSAC, prob=0.999, threshold=self.cfg.essential_px)
        if E is None or E.shape != (3, 3):
            return None, {}
        n, R, t, mask = cv2.recoverPose(E, p1, p2, self.K, mask=mask)
        inl = mask.ravel() > 0
        if n < self.cfg.min_inliers:
            return None, {}
        T = make_pose(R, t.ravel())  # T_cur_prev with |t| = 1
        # Triangulate the inliers in the previous camera to carry the scale.
        x1 = (p1[inl] - [self.camera.cx, self.camera.cy]) / [self.camera.fx, self.camera.fy]
        x2 = (p2[inl] - [self.camera.cx, self.camera.cy]) / [self.camera.fx, self.camera.fy]
        X = triangulate_dlt(np.eye(4), T, x1, x2)
        z_prev = X[:, 2]
        z_cur = (X @ R.T + t.ravel())[:, 2]
        good = (z_prev > 0) & (z_cur > 0)
        scale = 1.0
        common = [(self.prev_depth_by_kp[int(i)], z) for i, z, g in zip(m_prev[inl], z_prev, good) if g and int(i) in self.prev_depth_by_kp]
        if len(common) >= 8:
            old, new = np.array(common).T
            scale = float(np.median(old / new))
        elif self.prev_depth_by_kp:
            scale = float(np.linalg.norm(self.velocity[:3, 3])) or 1.0
        T[:3, 3] *= scale
        depth_by_kp = {int(j): float(z) * scale for j, z, g in zip(m_cur[inl], z_cur, good) if g}
        return T, depth_by_kp


def _is_rectified(rig: StereoRig) -> bool:
    T = rig.T_l_r
    return bool(np.allclose(T[:3, :3], np.eye(3), atol=1e-6) and abs(T[1, 3]) < 1e-6 and abs(T[2, 3]) < 1e-6 and T[0, 3] > 0)
