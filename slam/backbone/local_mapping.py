"""The local mapping thread: per keyframe, grow and refine the map around it (ORB-SLAM's LocalMapping).

For each keyframe from the queue:

1. attach it: point observations, normals, descriptors, covisibility;
2. cull recently created points that tracking rarely finds;
3. triangulate new points with its covisible keyframes (epipolar search);
4. fuse duplicates between it and its neighbours;
5. local bundle adjustment over a bounded window (g2o), interruptible by a new keyframe;
6. cull keyframes whose points are seen well enough by others.

Tracking only enqueues (``insert``), never waits: a full queue refuses the keyframe.

Locking: work on many points is split into chunks, each under ``map.lock``; the
lock (:class:`~slam.backbone.map.fair_lock.FairRLock`) gives tracking precedence,
so a tracking thread waiting for it gets it at the end of the chunk in progress.
Local BA solves without any lock and takes ``map.update_lock`` (with ``map.lock``)
only to write poses and positions back, between two tracked frames.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from slam.backbone.config import SlamConfig
from slam.geometry.chi2 import CHI2_2DOF_95, CHI2_3DOF_95
from slam.geometry import inv_pose
from slam.geometry.triangulation import triangulate_dlt
from slam.backbone.optim.local_ba import local_bundle_adjustment
from slam.backbone.frontend.local_map import gather_points, project_visible
from slam.backbone.map.map import KeyFrame, Map
from slam.backbone.frontend.matching import match_by_projection, search_epipolar

log = logging.getLogger(__name__)


class LocalMapper:
    def __init__(self, slam_map: Map, camera, mode: str, cfg: SlamConfig, extractor, bf: float,
                 disp_inv_sigma2: float | None = None):
        self.map = slam_map
        self.camera = camera
        self.ideal_camera = camera.undistorted()  # the pinhole model of undistorted keypoints (uv_und)
        self.K = camera.K
        self.mono = mode.startswith("mono")
        self.cfg = cfg.mapping
        # "close" points (reliable depth) for keyframe culling: as tracking's close_depth_factor
        self.close_depth = cfg.tracking.close_depth_factor * bf / camera.fx
        self.ex = extractor
        self.bf = bf
        self.disp_inv_sigma2 = disp_inv_sigma2  # RGB-D: information of the depth (u_right) term
        self.queue: deque[KeyFrame] = deque()
        self.cond = threading.Condition()
        self.abort_ba = threading.Event()
        self.stop_event = threading.Event()
        self.busy = False
        self.recent_points: list[int] = []
        self.timings_ms: list[float] = []  # per keyframe, all steps
        self.ba_ms: list[float] = []
        self.step_ms: dict[str, list[float]] = {}  # per step, for the keyframes that ran it
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # called with each keyframe this thread has finished (loop closing takes it from here)
        self.keyframe_done: Callable[[KeyFrame], None] | None = None
        self._pause_requests = 0  # loop closing / global BA hold local mapping between two keyframes

    # ------------------------------------------------------ thread interface
    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="local-mapping", daemon=True)
        self.thread.start()

    def accepts_keyframes(self) -> bool:
        """Whether :meth:`insert` would take a keyframe now (ORB-SLAM's AcceptKeyFrames): ask before creating one."""
        with self.cond:
            return len(self.queue) < self.cfg.max_queue and not self.stop_event.is_set()

    def insert(self, kf: KeyFrame) -> bool:
        """Queue a keyframe (never blocks); False when the queue is full or the thread stopped."""
        with self.cond:
            if len(self.queue) >= self.cfg.max_queue or self.stop_event.is_set():
                return False
            self.queue.append(kf)
            self.abort_ba.set()
            self.cond.notify_all()
        return True

    def idle(self) -> bool:
        """No keyframe queued and none being processed."""
        with self.cond:
            return not self.busy and not self.queue

    def backlog(self) -> int:
        """Keyframes queued or being processed."""
        with self.cond:
            return len(self.queue) + int(self.busy)

    def wait_backlog(self, max_backlog: int, timeout: float | None = None) -> bool:
        """Block until at most ``max_backlog`` keyframes are queued or in work (offline replay's back-pressure).

        Returns False on timeout, or at once when the thread is not running (nothing would drain the queue).
        """
        with self.cond:
            return self.cond.wait_for(
                lambda: len(self.queue) + int(self.busy) <= max_backlog or not self._alive(), timeout
            ) and len(self.queue) + int(self.busy) <= max_backlog

    def stop(self, drain: bool = True, timeout: float = 60.0) -> None:
        """Finish the queued keyframes (``drain``) and stop the thread."""
        if drain:
            self.wait_backlog(0, timeout)
        with self.cond:
            self.stop_event.set()
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout)

    def _alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and not self.stop_event.is_set()

    def pause(self, timeout: float | None = 30.0) -> bool:
        """Hold the thread between two keyframes (ORB-SLAM's RequestStop): it finishes the keyframe in work
        (its local BA is asked to stop early) and takes no other until :meth:`resume`. Blocks until then;
        False on timeout (the pause still stands: call :meth:`resume`). Pauses nest."""
        with self.cond:
            self._pause_requests += 1
            if self.busy:
                self.abort_ba.set()
            return self.cond.wait_for(lambda: not self.busy or not self._alive(), timeout)

    def resume(self) -> None:
        """Undo one :meth:`pause`."""
        with self.cond:
            self._pause_requests = max(0, self._pause_requests - 1)
            self.cond.notify_all()

    def paused(self) -> bool:
        with self.cond:
            return self._pause_requests > 0 and not self.busy

    def _run(self) -> None:
        try:
            while True:
                with self.cond:
                    self.cond.wait_for(lambda: (self.queue and not self._pause_requests) or self.stop_event.is_set())
                    if self.stop_event.is_set():
                        return
                    kf = self.queue.popleft()
                    self.busy = True
                    self.abort_ba.clear()
                try:
                    self.process(kf)
                except Exception as e:  # keep the system alive; report once
                    log.exception("local mapping failed on keyframe %d", kf.id)
                    self.error = e
                finally:
                    with self.cond:
                        self.busy = False
                        self.cond.notify_all()
        finally:
            with self.cond:  # wake anyone waiting on a thread that is gone
                self.cond.notify_all()

    def _new_keyframe_waiting(self) -> bool:
        """A keyframe is queued: the current one skips its optional steps (ORB-SLAM's CheckNewKeyFrames)."""
        with self.cond:
            return bool(self.queue)

    # ------------------------------------------------------------ the steps
    def process(self, kf: KeyFrame) -> None:
        t0 = time.perf_counter()
        if kf.bad:
            return
        self._timed("attach", self._attach, kf)
        self._timed("cull_points", self._cull_points, kf)
        self._timed("triangulate", self._triangulate, kf)
        if not self._new_keyframe_waiting():
            self._timed("fuse", self._fuse, kf)
        if not self._new_keyframe_waiting() and len(self.map.keyframes) > 2:
            self.ba_ms.append(self._timed("local_ba", self._local_ba, kf))
        if not self._new_keyframe_waiting():
            self._timed("cull_keyframes", self._cull_keyframes, kf)
        self.timings_ms.append((time.perf_counter() - t0) * 1e3)
        if self.keyframe_done is not None and not kf.bad:
            self.keyframe_done(kf)

    def _timed(self, name: str, step, kf: KeyFrame) -> float:
        t0 = time.perf_counter()
        step(kf)
        ms = (time.perf_counter() - t0) * 1e3
        self.step_ms.setdefault(name, []).append(ms)
        return ms

    def _attach(self, kf: KeyFrame) -> None:
        ids = kf.point_ids[kf.point_ids >= 0]
        for chunk in _chunks(ids):  # the lock is released between chunks so tracking never waits long
            with self.map.lock:
                seen = []
                for pid in chunk.tolist():
                    p = self.map.points.get(pid)
                    if p is None or p.bad:
                        continue
                    if p.first_kf_id == kf.id:
                        self.recent_points.append(p.id)
                    if len(p.observations) > 1:  # a new point's normal and descriptor are its creator's
                        seen.append(pid)
                self.map.refresh_points(np.array(seen, np.int64))
        with self.map.lock:
            kf.update_connections(self.map)

    def _cull_points(self, kf: KeyFrame) -> None:
        min_obs = self.cfg.cull_min_obs_mono if self.mono else self.cfg.cull_min_obs
        keep = []
        for chunk in _chunks(self.recent_points):
            with self.map.lock:
                for pid in chunk:
                    p = self.map.points.get(pid)
                    if p is None or p.bad:
                        continue
                    age = kf.id - p.first_kf_id
                    # ORB-SLAM culls at <= min_obs observations; one fewer here (its rule, measured on the
                    # monocular demo, left 30% fewer points and no fewer lost frames)
                    if p.found_ratio < self.cfg.cull_found_ratio or (age >= 2 and len(p.observations) <= min_obs - 1):
                        self.map.erase_point(p)
                    elif age >= 3:
                        continue  # survived its probation
                    else:
                        keep.append(pid)
        self.recent_points = keep

    def _triangulate(self, kf: KeyFrame) -> None:
        n = self.cfg.covisible_triangulation_mono if self.mono else self.cfg.covisible_triangulation
        with self.map.lock:
            neighbours = [self.map.keyframes[i] for i in kf.covisibles(n) if i in self.map.keyframes]
        fx, fy, cx, cy = self.camera.fx, self.camera.fy, self.camera.cx, self.camera.cy
        sigma2 = self.ex.level_sigma2
        created = 0
        for nb in neighbours:
            if self._new_keyframe_waiting() and created > 0:
                break
            if nb.bad:
                continue
            baseline = np.linalg.norm(kf.center - nb.center)
            if not self.mono:
                if baseline < self.bf / fx:
                    continue
            else:
                depths = self._median_depth(nb)
                if depths <= 0 or baseline / depths < self.cfg.min_baseline_depth_ratio_mono:
                    continue
            T_c1_w, T_c2_w = kf.T_c_w, nb.T_c_w
            free1 = np.nonzero(kf.point_ids < 0)[0]
            free2 = np.nonzero(nb.point_ids < 0)[0]
            if len(free1) == 0 or len(free2) == 0:
                continue
            T_c2_c1 = T_c2_w @ inv_pose(T_c1_w)
            i1, i2 = search_epipolar(kf.features, nb.features, T_c2_c1, self.K, free1, free2, sigma2)
            if len(i1) == 0:
                continue
            f1, f2 = kf.features, nb.features
            x1 = (f1.uv_und[i1] - [cx, cy]) / [fx, fy]
            x2 = (f2.uv_und[i2] - [cx, cy]) / [fx, fy]
            X = triangulate_dlt(T_c1_w, T_c2_w, x1, x2)
            ok = self._check_new_points(X, kf, nb, i1, i2)
            with self.map.lock:
                if kf.bad or nb.bad:
                    continue
                new = []
                for X_w, a, b in zip(X[ok], i1[ok].tolist(), i2[ok].tolist()):
                    if kf.point_ids[a] >= 0 or nb.point_ids[b] >= 0:
                        continue
                    p = self.map.new_point(X_w, kf, a, update=False)
                    self.map.associate(nb, b, p)
                    new.append(p.id)
                self.map.refresh_points(np.array(new, np.int64))
                self.recent_points.extend(new)
                created += len(new)
        if created:
            with self.map.lock:
                kf.update_connections(self.map)

    def _check_new_points(self, X: np.ndarray, kf1: KeyFrame, kf2: KeyFrame, i1: np.ndarray, i2: np.ndarray) -> np.ndarray:
        """Positive depth, small reprojection error in both views, parallax and scale consistency."""
        ok = np.all(np.isfinite(X), axis=1)
        ratios = []
        for kf, idx in ((kf1, i1), (kf2, i2)):
            Pc = X @ kf.T_c_w[:3, :3].T + kf.T_c_w[:3, 3]
            uv, in_front = self.ideal_camera.project(Pc)  # keypoints are compared undistorted (uv_und)
            ok &= in_front
            zs = np.where(in_front, Pc[:, 2], 1.0)
            u = uv[:, 0]
            f = kf.features
            e2 = np.sum((uv - f.uv_und[idx]) ** 2, axis=1)
            s2 = self.ex.level_sigma2[f.octave[idx]]
            stereo = f.u_right[idx] >= 0
            if self.bf > 0:
                ur = u - self.bf / zs
                e2 = np.where(stereo, e2 + (ur - f.u_right[idx]) ** 2, e2)
            ok &= e2 < np.where(stereo, CHI2_3DOF_95, CHI2_2DOF_95) * s2
            dist = np.linalg.norm(X - kf.center, axis=1)
            ratios.append((dist, self.ex.scale_factors[f.octave[idx]]))
        (d1, s1), (d2, s2_) = ratios
        ok &= (d1 > 0) & (d2 > 0)
        ratio_dist = d2 / np.maximum(d1, 1e-12)
        ratio_oct = s1 / s2_
        fac = self.cfg.scale_consistency_factor * self.ex.scale_factor
        ok &= (ratio_dist * fac >= ratio_oct) & (ratio_dist <= ratio_oct * fac)
        r1, r2 = X - kf1.center, X - kf2.center
        cos = np.einsum("ij,ij->i", r1, r2) / np.maximum(np.linalg.norm(r1, axis=1) * np.linalg.norm(r2, axis=1), 1e-12)
        ok &= cos < self.cfg.max_parallax_cos
        return ok

    def _fuse(self, kf: KeyFrame) -> None:
        """Project the points of neighbours into ``kf``: add observations or merge duplicates."""
        n = self.cfg.covisible_fuse_mono if self.mono else self.cfg.covisible_fuse
        m = self.map
        with m.lock:
            nbs = [m.keyframes[i] for i in kf.covisibles(n) if i in m.keyframes]
            ps = gather_points(m, nbs, kf.point_ids)
            if ps is None:
                return
            pts = [m.points[int(i)] for i in ps.ids]
        desc = ps.descriptors
        proj = project_visible(kf.T_c_w, ps.positions, ps.normals, ps.min_dist, ps.max_dist, self.ideal_camera,
                               self.bf, self.ex.scale_factor, self.ex.n_levels)
        radius = self.cfg.fuse_radius_px * self.ex.scale_factors[proj.level]
        p_i, k_i = match_by_projection(kf.features, proj.uv, desc[proj.idx], radius, proj.level,
                                       max_dist=self.cfg.fuse_max_hamming,
                                       ratio=1.0, proj_ur=proj.u_right if self.bf > 0 else None)
        pairs = np.column_stack([p_i, k_i])
        for chunk in _chunks(pairs, CHUNK // 4):  # a fusion refreshes its point: dearer than the others
            with self.map.lock:
                if kf.bad:
                    return
                for a, b in chunk.tolist():
                    p = pts[proj.idx[a]]
                    if p.bad:
                        continue
                    existing = int(kf.point_ids[b])
                    if existing >= 0:
                        q = self.map.points.get(existing)
                        if q is None or q.bad or q is p:
                            continue
                        keep, drop = (p, q) if len(p.observations) > len(q.observations) else (q, p)
                        self.map.replace_point(drop, keep)
                    elif kf.id not in p.observations:
                        self.map.associate(kf, int(b), p)
        with self.map.lock:
            touched = {int(kf.point_ids[b]) for b in k_i if kf.point_ids[b] >= 0}
        for chunk in _chunks(np.array(sorted(touched), np.int64)):
            self.map.refresh_points(chunk)
        with self.map.lock:
            kf.update_connections(self.map)

    def _local_ba(self, kf: KeyFrame) -> None:
        with self.map.lock:
            if kf.bad:  # discarded or culled meanwhile
                return
            local_ids, point_ids, fixed_ids = self.map.local_window(kf, self.cfg.local_ba_covisible,
                                                                    self.cfg.local_ba_fixed_max)
            kf_ids = list(local_ids) + list(fixed_ids)
            if len(local_ids) < 2 and not fixed_ids:
                return
            poses = {k: self.map.keyframes[k].T_c_w.copy() for k in kf_ids}
            features = {k: self.map.keyframes[k].features for k in kf_ids}
            pids = point_ids[self.map.valid_mask(point_ids)]
            pos = self.map.points_array(pids)  # only this thread moves points: later chunks agree with them
        row, obs_kf, obs_kp = self._observation_table(pids)
        keep = np.isin(obs_kf, kf_ids)
        if not keep.any():
            return
        obs_kf, obs_kp, obs_pt = obs_kf[keep], obs_kp[keep], pids[row[keep]]
        uv, ur, oc = np.empty((len(obs_kf), 2)), np.empty(len(obs_kf)), np.empty(len(obs_kf), np.int64)
        for k in kf_ids:  # one fancy index per keyframe
            sel = np.flatnonzero(obs_kf == k)
            f, kp = features[k], obs_kp[sel]
            uv[sel], ur[sel], oc[sel] = f.uv_und[kp], f.u_right[kp], f.octave[kp]
        fixed = set(fixed_ids)
        if 0 in poses and len(fixed) == 0:
            fixed.add(min(poses))
        res = local_bundle_adjustment(
            poses, fixed, pids, pos, obs_kf, obs_pt, uv, ur,
            self.ex.inv_level_sigma2[oc], self.camera.fx, self.camera.fy, self.camera.cx, self.camera.cy, self.bf,
            iterations=self.cfg.local_ba_iterations, abort=self.abort_ba, backend=self.cfg.local_ba_backend,
            obs_inv_sigma2_disp=None if self.disp_inv_sigma2 is None else np.full(len(obs_kf), self.disp_inv_sigma2),
        )
        if res is None:
            return
        # The write-back waits for the frame being tracked to be recorded (``update_lock``): a frame
        # is never tracked against some old and some new poses, nor recorded against a moved keyframe.
        with self.map.update_lock, self.map.lock:
            for j in np.nonzero(res.outlier_obs)[0]:
                k, pid = int(obs_kf[j]), int(obs_pt[j])
                p, kfo = self.map.points.get(pid), self.map.keyframes.get(k)
                if p is not None and kfo is not None and k in p.observations:
                    self.map.erase_observation(kfo, p)
            for k in local_ids:
                if k in res.poses and k in self.map.keyframes:
                    self.map.keyframes[k].T_c_w = res.poses[k]
            ok = self.map.valid_mask(res.point_ids)
            self.map.set_positions(res.point_ids[ok], res.points_w[ok])
        for chunk in _chunks(res.point_ids[ok]):
            self.map.refresh_points(chunk, descriptors=False)

    def _cull_keyframes(self, kf: KeyFrame, th_obs: int | None = None) -> None:
        """Erase covisible keyframes whose points are mostly seen by 3+ other keyframes at the same or a finer scale.

        ORB-SLAM's KeyFrameCulling: a point of keyframe K at octave L counts as
        redundant when at least ``th_obs`` other keyframes see it at octave
        ``<= L + 1``; K goes when more than ``cull_redundant_ratio`` of its
        points (stereo/RGB-D: of its close points) are redundant. The
        observations of all candidates' points are read once into flat arrays
        (instead of once per candidate and point), and an erased keyframe's
        observations are struck from them before the next candidate.
        The map lock is taken per keyframe, not for the whole loop, so tracking is never held up long.
        """
        m = self.map
        with m.lock:
            cands = [m.keyframes[k] for k in kf.covisibles() if k in m.keyframes]
            cands = [c for c in cands if not c.bad and c.id != m.root_id]
            if not cands:
                return
            pids = np.unique(np.concatenate([c.point_ids[c.point_ids >= 0] for c in cands]))
        if len(pids) == 0:
            return
        row, okf, okp = self._observation_table(pids)  # (the per-candidate step below re-checks what changed)
        octave = np.empty(len(okp), np.int64)
        for k in np.unique(okf).tolist():
            sel = np.flatnonzero(okf == k)
            f = m.keyframes.get(k)
            octave[sel] = f.features.octave[okp[sel]] if f is not None else np.iinfo(np.int64).max
        alive = np.ones(len(row), bool)
        close_depth = self.close_depth
        th_obs = self.cfg.cull_keyframe_min_obs if th_obs is None else th_obs
        for c in cands:
            if self._new_keyframe_waiting():
                return  # a new keyframe waits: culling can happen later
            idx = np.flatnonzero(c.point_ids >= 0)
            if not self.mono:  # only close points (reliable depth) count for stereo/RGB-D
                d = c.features.depth[idx]
                idx = idx[(d > 0) & (d <= close_depth)]
            with m.lock:
                if c.bad or c.id not in m.keyframes:
                    continue
                ids = c.point_ids[idx]
                good = m.valid_mask(ids)
                idx, ids = idx[good], ids[good]
                if len(ids) == 0:
                    continue
                r = np.searchsorted(pids, ids)
                known = (r < len(pids)) & (pids[np.minimum(r, len(pids) - 1)] == ids)
                # a point of this keyframe at octave L; other keyframes see it at <= L + 1
                level = np.full(len(pids), -10, np.int64)
                level[r[known]] = c.features.octave[idx[known]]
                n_obs = np.bincount(row[alive], minlength=len(pids))
                seen = alive & (okf != c.id) & (octave <= level[row] + 1)
                n_seen = np.bincount(row[seen], minlength=len(pids))
                rk = r[known]
                n_redundant = int(np.sum((n_obs[rk] > th_obs) & (n_seen[rk] >= th_obs)))
                if n_redundant > self.cfg.cull_redundant_ratio * len(ids) and m.erase_keyframe(c):
                    alive &= okf != c.id  # frames tracked against it then follow its parent
                    alive &= m.valid_mask(pids)[row]  # points erased with it

    def _observation_table(self, pids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:meth:`Map.observation_table` of ``pids``, read in chunks under the map lock.

        Between chunks tracking may add observations by a new keyframe (which local mapping has
        not seen yet) but changes nothing else: only this thread erases and fuses points (tracking
        erases only those of a keyframe it discards, which never reached local mapping).
        """
        tables = []
        for start in range(0, len(pids), CHUNK):
            with self.map.lock:
                r, k, i = self.map.observation_table(pids[start : start + CHUNK])
            tables.append((r + start, k, i))
        if not tables:
            return np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64)
        row, kf, kp = (np.concatenate(t) for t in zip(*tables))
        return row, kf, kp

    def _median_depth(self, kf: KeyFrame) -> float:
        ids = kf.point_ids[kf.point_ids >= 0]
        ids = ids[self.map.valid_mask(ids)]
        if len(ids) == 0:
            return -1.0
        Pc = self.map.points_array(ids) @ kf.T_c_w[:3, :3].T + kf.T_c_w[:3, 3]
        return float(np.median(Pc[:, 2]))


CHUNK = 100  # map points handled per hold of the map lock (well under a millisecond of work on an idle machine)


def _chunks(items, size: int = CHUNK):
    """Split work on map points so the map lock is held for about a millisecond at a time.

    The caller takes ``map.lock`` per chunk; a tracking thread waiting for it is handed it
    before the next chunk (:mod:`slam.backbone.map.fair_lock`).
    """
    for i in range(0, len(items), size):
        yield items[i : i + size]
