"""Monocular map initialisation from two views (essential matrix with USAC MAGSAC, then triangulation).

The first frame with enough features becomes the reference; each later frame
is matched to it until the pair has enough matches, parallax and triangulated
points. The map starts with both as keyframes, refined by a two-keyframe
bundle adjustment and scaled so that the median scene depth is 1.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from slam.geometry import inv_pose, make_pose
from slam.geometry.triangulation import triangulate_dlt
from slam.backbone.optim.local_ba import local_bundle_adjustment
from slam.backbone.frontend.matching import match_descriptors, rotation_consistency

log = logging.getLogger(__name__)


class MonoInitializer:
    def __init__(self, tracker):
        self.tr = tracker
        self.ref = None
        self.tries = 0

    def add(self, cur) -> bool:
        tc = self.tr.tc
        if self.ref is None or self.tries > 30:
            if len(cur.features) >= tc.mono_init_min_matches:
                self.ref, self.tries = cur, 0
            return False
        self.tries += 1
        f1, f2 = self.ref.features, cur.features
        i1, i2 = match_descriptors(f1.desc, f2.desc, max_dist=64, ratio=0.9)
        if len(i1):
            flow = np.linalg.norm(f1.uv_und[i1] - f2.uv_und[i2], axis=1)
            keep = (flow < 150) & rotation_consistency(f1.angle[i1], f2.angle[i2])
            i1, i2 = i1[keep], i2[keep]
        if len(i1) < tc.mono_init_min_matches:
            if len(i1) < tc.mono_init_min_matches // 2:
                self.ref = cur if len(cur.features) >= tc.mono_init_min_matches else None
                self.tries = 0
            return False
        p1, p2 = f1.uv_und[i1], f2.uv_und[i2]
        K = self.tr.K
        E, mask = cv2.findEssentialMat(p1, p2, K, method=cv2.USAC_MAGSAC, prob=0.999, threshold=1.0)
        if E is None or E.shape != (3, 3):
            return False
        n, R, t, mask = cv2.recoverPose(E, p1, p2, K, mask=mask)
        inl = np.nonzero(mask.ravel() > 0)[0]
        if len(inl) < tc.mono_init_min_points:
            return False
        T_c2_c1 = make_pose(R, t.ravel())
        cam = self.tr.camera
        x1 = (p1[inl] - [cam.cx, cam.cy]) / [cam.fx, cam.fy]
        x2 = (p2[inl] - [cam.cx, cam.cy]) / [cam.fx, cam.fy]
        X = triangulate_dlt(np.eye(4), T_c2_c1, x1, x2)
        z1 = X[:, 2]
        z2 = (X @ R.T + t.ravel())[:, 2]
        c2 = -R.T @ t.ravel()
        r1, r2 = X, X - c2
        cos = np.einsum("ij,ij->i", r1, r2) / np.maximum(np.linalg.norm(r1, axis=1) * np.linalg.norm(r2, axis=1), 1e-12)
        par = np.degrees(np.arccos(np.clip(cos, -1, 1)))
        good = (z1 > 0) & (z2 > 0) & np.all(np.isfinite(X), axis=1) & (par > 0.5)
        if good.sum() < tc.mono_init_min_points or np.median(par[good]) < tc.mono_init_min_parallax_deg:
            return False
        return self._create_map(cur, T_c2_c1, i1[inl[good]], i2[inl[good]], X[good])

    def _create_map(self, cur, T_c2_c1, i1, i2, X_c1) -> bool:
        tr = self.tr
        if not tr.mapper_accepts():
            log.info("frame %d: local mapping's queue is full; initialising later", cur.index)
            return False
        ref = self.ref
        T_w_c1 = tr.T_w_c_prior
        T_c1_w = inv_pose(T_w_c1)
        # Scale: median depth 1 in the first camera.
        s = 1.0 / float(np.median(X_c1[:, 2]))
        X_c1 = X_c1 * s
        T_c2_c1 = T_c2_c1.copy()
        T_c2_c1[:3, 3] *= s
        ref.T_c_w = T_c1_w
        cur.T_c_w = T_c2_c1 @ T_c1_w
        X_w = X_c1 @ T_w_c1[:3, :3].T + T_w_c1[:3, 3]
        m = tr.map
        with m.lock:
            kf1 = m.new_keyframe(ref.index, ref.timestamp, ref.T_c_w, ref.features, starts_map=True,
                                 thumbnail=ref.thumbnail())
            kf2 = m.new_keyframe(cur.index, cur.timestamp, cur.T_c_w, cur.features, thumbnail=cur.thumbnail())
            for X, a, b in zip(X_w, i1, i2):
                p = m.new_point(X, kf1, int(a))
                m.associate(kf2, int(b), p)
                ref.point_ids[a] = p.id
                cur.point_ids[b] = p.id
            m.refresh_points(ref.point_ids[ref.point_ids >= 0])
            kf1.update_connections(m)
            kf2.update_connections(m)
        self._refine(kf1, kf2)
        # Tracking continues from the second view (points of both views are in the map).
        cur.T_c_w = kf2.T_c_w.copy()
        cur.point_ids[:] = kf2.point_ids
        if not (tr.insert_keyframe(kf1) and tr.insert_keyframe(kf2)):
            # local mapping cannot take both: the new map goes again, and a later frame tries once more
            tr.discard_keyframes([kf1, kf2], ref, cur)
            return False
        tr._set_reference(kf2, cur)
        log.info("monocular map initialised from frames %d and %d with %d points", ref.index, cur.index, len(X_w))
        return True

    def _refine(self, kf1, kf2) -> None:
        """Two-keyframe BA (first fixed), then drop points flagged as outliers."""
        tr, m = self.tr, self.tr.map
        with m.lock:
            pids = np.array([p for p in kf1.point_ids if p >= 0], np.int64)
            pos = np.array([m.points[int(p)].position for p in pids])
            rows = []
            for p in pids:
                for k, kp in m.points[int(p)].observations.items():
                    rows.append((k, p, kp))
            rows = np.array(rows, np.int64)
            feats = {kf1.id: kf1.features, kf2.id: kf2.features}
            uv = np.array([feats[k].uv_und[i] for k, _, i in rows])
            oc = np.array([feats[k].octave[i] for k, _, i in rows])
        cam = tr.camera
        res = local_bundle_adjustment(
            {kf1.id: kf1.T_c_w, kf2.id: kf2.T_c_w}, {kf1.id}, pids, pos, rows[:, 0], rows[:, 1], uv,
            np.full(len(rows), -1.0), tr.extractor.inv_level_sigma2[oc], cam.fx, cam.fy, cam.cx, cam.cy, 0.0,
            iterations=(10, 10),
        )
        with m.lock:
            kf2.T_c_w = res.poses[kf2.id]
            for pid, X in zip(res.point_ids, res.points_w):
                m.points[int(pid)].position = X
            for j in np.nonzero(res.outlier_obs)[0]:
                p = m.points.get(int(rows[j, 1]))
                if p is not None and not p.bad:
                    m.erase_point(p)
