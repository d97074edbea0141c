"""The loop-closing thread (ORB-SLAM's LoopClosing): detect a revisited place, verify it, correct the map.

Local mapping hands over each keyframe it has finished (:meth:`LoopCloser.insert`).
Per keyframe, in order:

1. its place descriptor is asked of the describer (:mod:`slam.backbone.loop.place`);
   keyframes wait, in order, until their answer is in. A failed answer skips the
   keyframe; while the describer is unavailable, loop detection pauses (tracking and
   mapping go on) and resumes with the keyframes it kept;
2. candidates from the keyframe database (``System.places``, shared with
   relocalisation): not covisible, not within ``loop.min_keyframes_between`` keyframes,
   scoring at least as well as the keyframe's own neighbours; then the descriptor is
   stored. No detection within that many keyframes of the map's start or the last loop;
3. temporal consistency over consecutive keyframes (:class:`ConsistencyChecker`);
4. geometric verification (:mod:`~slam.backbone.loop.verification`);
5. correction (:mod:`~slam.backbone.loop.correction`): local mapping pauses after its
   keyframe in work, a running global BA is aborted, the current group is corrected
   and fused under the map's locks, the essential graph is optimised without them, the
   result written back under them; ``Map.corrections`` tells tracking to re-express
   its last frame; local mapping resumes;
6. a global bundle adjustment in its own thread (:mod:`~slam.backbone.loop.global_ba`).

With ``detect=False`` (``loop.enabled=false``) only step 1 and the database are kept:
relocalisation still finds keyframes there.

Threaded (``start``) or synchronous (``threaded=False``: :meth:`insert` does all of it
at once, for tests and ``--sync-mapping``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from slam.backbone.config import SlamConfig
from slam.backbone.loop import correction, global_ba
from slam.backbone.loop.keyframe_database import ConsistencyChecker, KeyFrameDatabase
from slam.backbone.loop.place import PlaceDescriber
from slam.backbone.loop.verification import LoopMatch, rigid_of, verify_candidate
from slam.backbone.map.map import KeyFrame, Map
from slam.geometry.se3 import inv_pose, sim3_scale

log = logging.getLogger(__name__)


@dataclass
class LoopRecord:
    """One closed loop, for ``summary.json``: keyframes, the current one's frame, the correction of its pose.

    ``translation_m``: how far the current keyframe's camera centre moved; ``rotation_deg``:
    the angle of its orientation change; ``scale``: the similarity's scale (1 for stereo/RGB-D).
    """

    keyframe: int
    loop_keyframe: int
    frame_index: int  # the current keyframe's frame
    loop_frame_index: int  # the loop keyframe's frame
    inliers: int
    matched_points: int
    translation_m: float
    rotation_deg: float
    scale: float
    fused_points: int
    seconds: float

    def to_dict(self) -> dict:
        d = asdict(self)
        d["correction"] = {"translation_m": d.pop("translation_m"), "rotation_deg": d.pop("rotation_deg"),
                           "scale": d.pop("scale")}
        return d


def pose_change(T_before: np.ndarray, T_after: np.ndarray) -> tuple[float, float]:
    """(camera-centre shift in metres, rotation angle in degrees) between two ``T_c_w``."""
    c0, c1 = inv_pose(T_before)[:3, 3], inv_pose(T_after)[:3, 3]
    R = T_after[:3, :3] @ T_before[:3, :3].T
    ang = np.degrees(np.arccos(np.clip((np.trace(R) - 1.0) / 2.0, -1.0, 1.0)))
    return float(np.linalg.norm(c1 - c0)), float(ang)


def lower_thread_priority(nice: int) -> None:
    """Run the calling thread ``nice`` steps nicer than it is (Linux schedules threads on their own nice value;
    elsewhere, or when refused, nothing changes): when the cores are busy, tracking is served first."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(os.getpriority(os.PRIO_PROCESS, tid) + int(nice), 19))
    except OSError as e:
        log.debug("thread priority unchanged: %s", e)


class LoopCloser:
    def __init__(self, slam_map: Map, camera, mode: str, cfg: SlamConfig, places: KeyFrameDatabase,
                 describer: PlaceDescriber, extractor, bf: float, disp_inv_sigma2: float | None = None,
                 pause_mapping: Callable[[], bool] = lambda: True, resume_mapping: Callable[[], None] = lambda: None,
                 threaded: bool = True, detect: bool = True):
        self.map = slam_map
        self.ideal_camera = camera.undistorted()
        self.camera = camera
        self.mono = mode.startswith("mono")
        self.cfg = cfg.loop
        self.places = places
        self.describer = describer
        self.inv_level_sigma2 = extractor.inv_level_sigma2
        self.scale_factors = extractor.scale_factors
        self.bf = bf
        self.disp_inv_sigma2 = disp_inv_sigma2
        self.pause_mapping = pause_mapping
        self.resume_mapping = resume_mapping
        self.threaded = threaded
        self.detect = detect  # False (loop.enabled=false): only keep the keyframe database for relocalisation
        self.consistency = ConsistencyChecker(self.cfg.min_consistency)
        self.queue: deque[KeyFrame] = deque()  # finished by local mapping, not yet submitted
        self.pending: deque[KeyFrame] = deque()  # submitted, waiting for their descriptor (in order)
        self.answers: dict[int, object] = {}
        self.in_database: set[int] = set()
        self.last_loop_kf = -1  # no detection until min_keyframes_between after this (or the map's start)
        self.loops: list[LoopRecord] = []
        self.global_ba_runs: list[dict] = []
        self.detect_ms: list[float] = []  # per keyframe: database query, consistency, verification
        self.cond = threading.Condition()
        self.stop_event = threading.Event()
        self.busy = False
        self.thread: threading.Thread | None = None
        self.gba_thread: threading.Thread | None = None
        self.gba_abort = threading.Event()
        self.error: BaseException | None = None
        self._said_unavailable = False

    # ------------------------------------------------------ thread interface
    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="loop-closing", daemon=True)
        self.thread.start()

    def insert(self, kf: KeyFrame) -> None:
        """Take a keyframe local mapping has finished (never blocks in threaded mode)."""
        with self.cond:
            self.queue.append(kf)
            self.cond.notify_all()
        if not self.threaded:
            self.step()

    def idle(self) -> bool:
        """Nothing queued, pending or in work, and no global BA running."""
        with self.cond:
            return not (self.queue or self.pending or self.busy) and not self._gba_running()

    def wait_idle(self, timeout: float | None = 120.0) -> bool:
        """Block until :meth:`idle` (answers that never come: until ``timeout``)."""
        t_end = None if timeout is None else time.monotonic() + timeout
        while True:
            with self.cond:
                done = self.cond.wait_for(
                    lambda: not (self.queue or self.pending or self.busy) or (self.threaded and not self._alive()), 0.05)
            if done and not self._gba_running():
                return True
            if self.threaded and not self._alive():
                return False
            if t_end is not None and time.monotonic() > t_end:
                return False
            if not self.threaded and not done:
                self.step()  # synchronous: answers of an asynchronous describer come in by polling

    def stop(self, drain: bool = True, timeout: float = 120.0) -> None:
        """Finish the queued keyframes and a running global BA (``drain``), then stop the thread."""
        if drain:
            if not self.wait_idle(timeout):
                log.warning("loop closing: not idle after %.0f s; stopping anyway", timeout)
        else:
            self.gba_abort.set()
        with self.cond:
            self.stop_event.set()
            self.cond.notify_all()
        for t in (self.thread, self.gba_thread):
            if t is not None:
                t.join(timeout)

    def _alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive() and not self.stop_event.is_set()

    def _gba_running(self) -> bool:
        return self.gba_thread is not None and self.gba_thread.is_alive()

    def _run(self) -> None:
        lower_thread_priority(self.cfg.thread_nice)
        try:
            while True:
                with self.cond:
                    # waiting for answers: poll now and then; otherwise sleep until a keyframe comes
                    self.cond.wait_for(lambda: self.queue or self.stop_event.is_set(),
                                       0.01 if self.pending else None)
                    if self.stop_event.is_set():
                        return
                    self.busy = True
                try:
                    self.step()
                except Exception as e:  # keep tracking alive; report once
                    log.exception("loop closing failed")
                    self.error = e
                    with self.cond:
                        self.queue.clear()
                        self.pending.clear()
                finally:
                    with self.cond:
                        self.busy = False
                        self.cond.notify_all()
        finally:
            with self.cond:
                self.cond.notify_all()

    # ------------------------------------------------------------- the work
    def step(self) -> None:
        """Submit what is queued, take the answers that are in, and handle the keyframes whose turn it is."""
        if not self.describer.available():
            if not self._said_unavailable:
                log.warning("loop detection paused: place describer %r unavailable (tracking goes on)",
                            self.describer.name)
                self._said_unavailable = True
            return
        if self._said_unavailable:
            log.warning("loop detection resumed: place describer %r available again", self.describer.name)
            self._said_unavailable = False
        while True:
            with self.cond:
                if not self.queue:
                    break
                kf = self.queue[0]
            if not kf.bad and not self.describer.submit(kf.id, kf.thumbnail, kf.features.desc):
                break  # not taken now: try again at the next step
            with self.cond:
                self.queue.popleft()
                if not kf.bad:
                    self.pending.append(kf)
        for ans in self.describer.poll():
            self.answers[ans.key] = ans
        while True:
            with self.cond:
                if not self.pending or self.pending[0].id not in self.answers:
                    break
                kf = self.pending.popleft()
            ans = self.answers.pop(kf.id)
            if ans.descriptor is None:
                log.info("keyframe %d: no place descriptor (%s): skipped by loop detection", kf.id, ans.error)
                continue
            self.handle(kf, np.asarray(ans.descriptor, np.float32))

    def _forget_gone_keyframes(self) -> None:
        """Culled keyframes leave the database (relocalisation and loop detection must not return them)."""
        with self.map.lock:
            gone = [k for k in self.in_database if k not in self.map.keyframes]
        for k in gone:
            self.places.remove(k)
            self.in_database.discard(k)

    def handle(self, kf: KeyFrame, descriptor: np.ndarray) -> LoopRecord | None:
        """Steps 2-6 of the module docstring for one keyframe with its descriptor; the loop closed, if any."""
        t0 = time.perf_counter()
        self._forget_gone_keyframes()
        with self.map.lock:
            if kf.bad or kf.id not in self.map.keyframes:
                return None
            covisible = set(kf.covisibles())
            first = self.last_loop_kf if self.last_loop_kf >= 0 else min(self.map.origins, default=0)
        candidates = []
        if self.detect and kf.id >= first + self.cfg.min_keyframes_between:
            recent = set(range(kf.id - self.cfg.min_keyframes_between + 1, kf.id + 1))
            found = self.places.detect_loop_candidates(kf.id, descriptor, covisible | recent, k=self.cfg.candidates,
                                                       ratio=self.cfg.candidate_ratio)
            candidates = [c for c, _ in found]
        self.places.add(kf.id, descriptor)
        self.in_database.add(kf.id)
        with self.map.lock:
            candidates = [c for c in candidates if c in self.map.keyframes and not self.map.keyframes[c].bad]
            groups = {c: self.map.keyframes[c].covisibles() for c in candidates}
        consistent = self.consistency.update(candidates, groups)
        loop = None
        for c in consistent:
            with self.map.lock:
                cand = self.map.keyframes.get(c)
            if cand is None or cand.bad:
                continue
            loop = verify_candidate(self.map, kf, cand, self.cfg, self.inv_level_sigma2, self.scale_factors,
                                    self.ideal_camera, self.bf, fix_scale=not self.mono,
                                    disp_inv_sigma2=self.disp_inv_sigma2)
            if loop is not None and not self._plausible(kf, loop):
                loop = None
            if loop is not None:
                break
        self.detect_ms.append(1e3 * (time.perf_counter() - t0))
        if loop is None:
            return None
        return self.correct(kf, loop)

    def _plausible(self, kf: KeyFrame, loop: LoopMatch) -> bool:
        """Maps drift little in rotation: a verified loop that would turn the keyframe further than
        ``loop.max_rotation_deg`` is taken as false (a repeated texture elsewhere, e.g. the same poster on two
        walls); stereo/RGB-D maps, metric, also one that would move it more than ``loop.max_translation_m``
        (monocular maps: no metric bound, their scale drifts)."""
        dt, dr = pose_change(kf.T_c_w, rigid_of(loop.S_cw))
        if dr > self.cfg.max_rotation_deg or (not self.mono and dt > self.cfg.max_translation_m):
            log.warning("loop %d -> %d rejected: it would move the keyframe %.2f m / %.1f deg", kf.id,
                        loop.loop_kf_id, dt, dr)
            return False
        return True

    def correct(self, kf: KeyFrame, loop: LoopMatch) -> LoopRecord | None:
        """Step 5 (module docstring), then start the global BA."""
        t0 = time.perf_counter()
        self._abort_global_ba()
        if not self.pause_mapping():
            log.warning("loop %d -> %d: local mapping did not pause in time; loop not corrected", kf.id,
                        loop.loop_kf_id)
            self.resume_mapping()
            return None
        try:
            m = self.map
            with m.update_lock, m.lock:
                if kf.bad or loop.loop_kf_id not in m.keyframes:
                    return None
                T_before = kf.T_c_w.copy()
                snap = correction.correct_and_fuse(m, kf, loop, self.ideal_camera, self.bf, self.scale_factors,
                                                   self.cfg.fuse_radius_px)
                m.corrections += 1  # tracking, near the current keyframe, follows the corrected group now
            res = correction.optimize_snapshot(snap, sim3=self.mono, iterations=self.cfg.essential_graph_iterations)
            with m.update_lock, m.lock:
                correction.write_back(m, snap, res, kf.id)
                kf.loop_edges.add(loop.loop_kf_id)
                m.keyframes[loop.loop_kf_id].loop_edges.add(kf.id)
                m.corrections += 1
                T_after = kf.T_c_w.copy()
        finally:
            self.resume_mapping()
        ids = m.point_ids()
        for start in range(0, len(ids), 200):
            m.refresh_points(ids[start : start + 200], descriptors=False)
        dt, dr = pose_change(T_before, T_after)
        loop_kf = m.keyframes.get(loop.loop_kf_id)
        rec = LoopRecord(kf.id, loop.loop_kf_id, kf.frame_index, loop_kf.frame_index if loop_kf is not None else -1,
                         loop.inliers, loop.matched, dt, dr, float(sim3_scale(loop.S_12)), snap.fused,
                         time.perf_counter() - t0)
        self.loops.append(rec)
        self.last_loop_kf = kf.id
        self.consistency.reset()
        log.warning("loop closed: keyframe %d (frame %d) -> keyframe %d, %d inliers, %d matched points; "
                    "correction %.3f m, %.2f deg, scale %.4f; %d points fused; %.0f ms", kf.id, kf.frame_index,
                    loop.loop_kf_id, loop.inliers, loop.matched, dt, dr, rec.scale, snap.fused, 1e3 * rec.seconds)
        if self.cfg.global_ba:
            self._start_global_ba()
        return rec

    # -------------------------------------------------------------- global BA
    def _abort_global_ba(self) -> None:
        if self._gba_running():
            self.gba_abort.set()
            self.gba_thread.join()

    def _start_global_ba(self) -> None:
        self.gba_abort = threading.Event()
        if self.threaded:
            self.gba_thread = threading.Thread(target=self._global_ba, args=(self.gba_abort,), name="global-ba",
                                               daemon=True)
            self.gba_thread.start()
        else:
            self._global_ba(self.gba_abort)

    def _global_ba(self, abort: threading.Event) -> None:
        if self.threaded:
            lower_thread_priority(self.cfg.thread_nice)
        try:
            out = global_ba.run(self.map, self.camera, self.bf, self.inv_level_sigma2, self.disp_inv_sigma2,
                                self.cfg.global_ba_iterations_mono if self.mono else self.cfg.global_ba_iterations,
                                abort, self.pause_mapping, self.resume_mapping)
        except Exception as e:  # a failed global BA leaves the map as the loop correction made it
            log.exception("global BA failed")
            self.error = e
            return
        self.global_ba_runs.append(out if out is not None else {"aborted": True})

    def summary(self) -> dict:
        """``summary.json``'s ``loop_closing``: the loops, global BA runs and detection time."""
        if not self.detect:
            return {"enabled": False, "describer": self.describer.name, "loops": [],
                    "keyframes_in_database": len(self.places)}
        done = [r for r in self.global_ba_runs if not r.get("aborted")]
        return {
            "enabled": True,
            "describer": self.describer.name,
            "loops": [r.to_dict() for r in self.loops],
            "global_ba": {"runs": len(done), "aborted": len(self.global_ba_runs) - len(done),
                          "seconds": float(sum(r["seconds"] for r in done))},
            "detection_ms_median": float(np.median(self.detect_ms)) if self.detect_ms else None,
            "keyframes_in_database": len(self.places),
        }
