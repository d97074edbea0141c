"""Relocalisation: a lost frame's pose found again in the map (ORB-SLAM's ``Tracking::Relocalization``).

``Relocalizer.relocalize(frame)`` reads like the algorithm:

1. describe the frame (its place descriptor, through the tracker's own describer:
   :class:`~slam.backbone.loop.place.PlaceDescriber`, submit/poll; ORB-VLAD answers at
   once, a learned describer later: the candidates of the latest answer are used);
2. candidates: the keyframes of the current map most similar to it in the place
   database shared with loop closing (``System.places``); keyframes it has no
   descriptor for yet (a loaded map, loop closing off) are described here first;
3. per candidate, best first: match the frame's descriptors with the candidate's
   map points (ratio test, rotation consistency), PnP with RANSAC (USAC MAGSAC,
   :func:`pnp_usac`), pose optimisation; too few inliers: search more by
   projecting the points of the candidate and its covisible keyframes, optimise
   again (ORB-SLAM: a wide, then a narrow window);
4. accept the first candidate with ``tracking.reloc_min_inliers`` inliers (ORB-SLAM: 50);
5. when every place candidate failed (or none came) and a pose prior is configured
   (:class:`~slam.backbone.frontend.pose_prior.PosePrior`, e.g. PoseNet or VidLoc; submit/poll like
   the describer): the frame's thumbnail goes to it (with those of the lost frames just before it,
   up to the prior's ``clip_len``: a clip of consecutive frames, begun anew after a gap), and with
   its latest answer (at most
   ``MAX_ANSWER_AGE_FRAMES`` frames old) the keyframes near the prior pose
   (:func:`~slam.backbone.frontend.pose_prior.keyframes_near`) are tried as in step 3, so a prior
   is only ever accepted through the PnP inliers it leads to.

The tracker then tracks its local map in the same frame and goes on in the same map.
A frame with fewer keypoints than the inlier bound cannot relocalise and is not an
attempt (``attempted`` False): black frames never count towards giving up.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from slam.backbone.frontend.local_map import gather_points, project_visible
from slam.backbone.frontend.matching import TH_HIGH, match_by_projection, match_descriptors, rotation_consistency
from slam.backbone.frontend.pose_prior import PosePrior, keyframes_near
from slam.backbone.loop.keyframe_database import KeyFrameDatabase
from slam.backbone.loop.place import OrbVladDescriber, PlaceDescriber
from slam.backbone.map.map import KeyFrame, Map

if TYPE_CHECKING:
    from slam.backbone.frontend.tracking import TrackedFrame, Tracker

log = logging.getLogger(__name__)

MIN_PNP_MATCHES = 15  # descriptor matches a candidate needs before PnP (ORB-SLAM)
MIN_OPTIMIZED_INLIERS = 10  # after the first pose optimisation, below this the candidate is dropped (ORB-SLAM)
WIDE_SEARCH = (10.0, TH_HIGH)  # guided search: window (px, x scale factor) and Hamming distance (ORB-SLAM)
NARROW_SEARCH = (3.0, 64)  # ... the second, narrower one, for 30..49 inliers
MAX_ANSWER_AGE_FRAMES = 15  # a late place answer is used for frames at most this much newer (0.5 s at 30 Hz)


# ------------------------------------------------------------------ PnP
def pnp_usac(X_w: np.ndarray, uv: np.ndarray, K: np.ndarray, threshold_px: float = 4.0, iterations: int = 300,
             confidence: float = 0.999) -> tuple[np.ndarray, np.ndarray] | None:
    """Camera pose from 3D-2D matches with outliers: OpenCV's USAC MAGSAC++ PnP.

    ``X_w`` (N, 3) world points (metres), ``uv`` (N, 2) undistorted pixels of the pinhole ``K``.
    Returns ``(T_c_w, inliers)`` (4x4 world -> camera, (N,) bool) or None when no pose is found
    (fewer than 6 matches, or RANSAC failed). MAGSAC's ``threshold_px`` is the largest
    reprojection error an inlier may have.
    """
    X = np.ascontiguousarray(X_w, np.float64).reshape(-1, 3)
    x = np.ascontiguousarray(uv, np.float64).reshape(-1, 2)
    if len(X) < 6 or len(X) != len(x):
        return None
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(X, x, np.asarray(K, np.float64), None,
                                                 iterationsCount=int(iterations), reprojectionError=float(threshold_px),
                                                 confidence=float(confidence), flags=cv2.USAC_MAGSAC)
    except cv2.error as e:  # degenerate samples (collinear points): no pose, not a crash
        log.debug("PnP failed: %s", e)
        return None
    if not ok or inl is None or len(inl) == 0:
        return None
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.ravel()
    mask = np.zeros(len(X), bool)
    mask[np.asarray(inl).ravel()] = True
    return T, mask


# ------------------------------------------------------------------ maps of a Map
def map_root(m: Map, kf_id: int) -> int:
    """The keyframe that started the map ``kf_id`` belongs to (followed up the spanning tree; erased
    keyframes through the parent they had). Call with ``m.lock`` held."""
    seen = set()
    k = int(kf_id)
    while k not in seen:
        seen.add(k)
        kf = m.keyframes.get(k)
        parent = kf.parent_id if kf is not None else m.erased_keyframes.get(k, (-1, None))[0]
        if parent < 0:
            return k
        k = int(parent)
    return k  # a cycle (a broken tree): the keyframe where it closed


def loaded_map_ids(m: Map) -> tuple[dict[int, int], dict[int, int]]:
    """Map ids of a loaded map's parts: ``(origin kf id -> map id, kf id -> map id)`` for every keyframe id
    below ``m.next_kf_id`` (erased ones through their parents; ids of discarded keyframes: 0). Parts are
    numbered by their first keyframe's id."""
    with m.lock:
        roots = {k: map_root(m, k) for k in range(m.next_kf_id) if k in m.keyframes or k in m.erased_keyframes}
        origins = sorted({r for r in roots.values() if r in m.keyframes})
        ids = {o: i for i, o in enumerate(origins)}
        return ids, {k: ids.get(roots.get(k, -1), 0) for k in range(m.next_kf_id)}


# ------------------------------------------------------------------ relocaliser
@dataclass
class Relocalization:
    """A successful relocalisation: the keyframe it was found against and the inliers of its pose."""

    kf_id: int
    n_inliers: int
    score: float  # place similarity of the keyframe to the frame (pose prior: its distance to the prior, m)
    source: str = "place"  # "place": a place candidate; "prior": a keyframe near the pose prior's answer


class Relocalizer:
    """Relocalises the frames of one tracker (see the module docstring); runs in the tracking thread."""

    def __init__(self, tracker: Tracker, describer: PlaceDescriber | None = None, prior: PosePrior | None = None):
        self.tracker = tracker
        self.tc = tracker.tc
        self.describer: PlaceDescriber = describer if describer is not None else OrbVladDescriber()
        self.prior = prior  # asked only when the place candidates fail (None: no prior)
        self._latest_prior: tuple[int, np.ndarray] | None = None  # (frame index, T_w_c) of the latest prior answer
        # (frame index, thumbnail) of the lost frames just sent to the prior, consecutive, oldest first: the
        # earlier frames of a clip prior's next clip (none kept for a one-image prior)
        self._earlier: deque[tuple[int, np.ndarray]] = deque(maxlen=max(0, int(getattr(prior, "clip_len", 1)) - 1))
        self.places: KeyFrameDatabase | None = None  # System.places (shared with loop closing); own one if unset
        self._asked: set[int] = set()  # keyframes whose descriptor was requested here
        self._latest: tuple[int, np.ndarray] | None = None  # (frame index, descriptor) of the latest frame answer
        self.attempted = False  # the last call had enough keypoints to try (a failure then counts)
        self.last: Relocalization | None = None

    @property
    def database(self) -> KeyFrameDatabase:
        if self.places is None:
            self.places = KeyFrameDatabase(self.describer.dim)
        if self.places.dim != self.describer.dim:
            raise ValueError(f"relocalisation: the place database holds {self.places.dim}-D descriptors, the "
                             f"tracker's describer {self.describer.name!r} gives {self.describer.dim}-D")
        return self.places

    # ------------------------------------------------------------ per frame
    def relocalize(self, cur: TrackedFrame, allowed: Callable[[KeyFrame], bool] = lambda kf: True) -> bool:
        """Find ``cur``'s pose against keyframes for which ``allowed`` holds; on success ``cur.T_c_w`` and
        ``cur.point_ids`` are set (inliers only) and :attr:`last` says against which keyframe."""
        self.last = None
        self.attempted = len(cur.features) >= self.tc.reloc_min_inliers
        cur.point_ids[:] = -1
        cur.outlier[:] = False
        if not self.attempted:
            return False
        desc = self._describe(cur)
        cands = [] if desc is None else self._candidates(desc, allowed)
        for kf, score in cands:
            n = self._try_candidate(cur, kf)
            if n >= self.tc.reloc_min_inliers:
                self.last = Relocalization(kf.id, n, score)
                return True
        n_prior = 0
        if self.prior is not None:  # retrieval failed: keyframes near the pose prior's answer
            tried = {kf.id for kf, _ in cands}
            prior_cands = [(kf, d) for kf, d in self._prior_candidates(cur, allowed) if kf.id not in tried]
            n_prior = len(prior_cands)
            for kf, dist in prior_cands:
                n = self._try_candidate(cur, kf)
                if n >= self.tc.reloc_min_inliers:
                    self.last = Relocalization(kf.id, n, dist, source="prior")
                    log.info("frame %d: place retrieval failed (%d candidates); the pose prior (%s) gave the "
                             "relocalisation: keyframe %d, %.2f m from the prior pose, %d inliers", cur.index,
                             len(cands), self.prior.name, kf.id, dist, n)
                    return True
        cur.point_ids[:] = -1
        cur.outlier[:] = False
        log.debug("frame %d: relocalisation failed against %d place and %d prior candidates", cur.index, len(cands),
                  n_prior)
        return False

    def _prior_candidates(self, cur: TrackedFrame,
                          allowed: Callable[[KeyFrame], bool]) -> list[tuple[KeyFrame, float]]:
        """Ask the prior about ``cur``; the keyframes near its latest answer (none when that is older than
        ``MAX_ANSWER_AGE_FRAMES`` frames: an answer of an earlier loss is not used)."""
        thumbnail = cur.thumbnail()
        if self._earlier and self._earlier[-1][0] != cur.index - 1:  # a gap (frames not attempted, a new loss)
            self._earlier.clear()
        self.prior.submit(("frame", cur.index), thumbnail, [t for _, t in self._earlier])
        if thumbnail is not None:
            self._earlier.append((cur.index, thumbnail))
        for ans in self.prior.poll():
            _, ident = ans.key
            if ans.T_w_c is None:
                log.debug("no pose prior for frame %d: %s", ident, ans.error)
            elif self._latest_prior is None or ident >= self._latest_prior[0]:
                self._latest_prior = (ident, np.asarray(ans.T_w_c, np.float64))
        if self._latest_prior is None or not 0 <= cur.index - self._latest_prior[0] <= MAX_ANSWER_AGE_FRAMES:
            return []
        if self._latest_prior[0] != cur.index:
            log.debug("frame %d: pose prior of frame %d (answers late)", cur.index, self._latest_prior[0])
        return keyframes_near(self.tracker.map, self._latest_prior[1], allowed)

    def _describe(self, cur: TrackedFrame) -> np.ndarray | None:
        """The descriptor of the latest frame answered (this one when the describer is synchronous)."""
        self._top_up()
        self.describer.submit(("frame", cur.index), cur.thumbnail(), cur.features.desc)
        self._collect()
        if self._latest is None or cur.index - self._latest[0] > MAX_ANSWER_AGE_FRAMES:
            return None  # no answer yet, or only one from an earlier loss
        if self._latest[0] != cur.index:
            log.debug("frame %d: place candidates of frame %d (describer answers late)", cur.index, self._latest[0])
        return self._latest[1]

    def _top_up(self) -> None:
        """Ask for the descriptors of keyframes the database lacks (a loaded map's, or loop closing off)."""
        db, m = self.database, self.tracker.map
        with m.lock:
            missing = [kf for k, kf in m.keyframes.items() if not kf.bad and k not in self._asked and k not in db]
        for kf in missing:
            if self.describer.submit(("kf", kf.id), kf.thumbnail, kf.features.desc):
                self._asked.add(kf.id)

    def _collect(self) -> None:
        db = self.database
        for ans in self.describer.poll():
            kind, ident = ans.key
            if ans.descriptor is None:
                log.debug("no place descriptor for %s %d: %s", kind, ident, ans.error)
                continue
            if kind == "kf":
                kf = self.tracker.map.keyframes.get(ident)
                if kf is not None and not kf.bad:
                    db.add(ident, ans.descriptor)
            elif self._latest is None or ident >= self._latest[0]:
                self._latest = (ident, ans.descriptor)

    def _candidates(self, desc: np.ndarray, allowed: Callable[[KeyFrame], bool]) -> list[tuple[KeyFrame, float]]:
        m = self.tracker.map
        out = []
        with m.lock:
            for k, score in self.database.query(desc, k=len(self.database)):
                kf = m.keyframes.get(k)
                if kf is not None and not kf.bad and allowed(kf):
                    out.append((kf, score))
                    if len(out) >= self.tc.reloc_candidates:
                        break
        return out

    # ------------------------------------------------------------ one candidate
    def _try_candidate(self, cur: TrackedFrame, kf: KeyFrame) -> int:
        """Inliers of ``cur``'s pose found against ``kf`` (0 when it fails early)."""
        tr, m = self.tracker, self.tracker.map
        cur.point_ids[:] = -1
        cur.outlier[:] = False
        with m.lock:
            has = np.nonzero((kf.point_ids >= 0) & m.valid_mask(kf.point_ids))[0]
            if len(has) < MIN_PNP_MATCHES:
                return 0
            i_kf, i_cur = match_descriptors(kf.features.desc[has], cur.features.desc, ratio=self.tc.reloc_match_ratio)
            keep = rotation_consistency(kf.features.angle[has[i_kf]], cur.features.angle[i_cur])
            i_kf, i_cur = i_kf[keep], i_cur[keep]
            if len(i_kf) < MIN_PNP_MATCHES:
                return 0
            pids = kf.point_ids[has[i_kf]]
            X = m.points_array(pids)
        res = pnp_usac(X, cur.features.uv_und[i_cur], tr.ideal_camera.K, self.tc.reloc_pnp_threshold_px)
        if res is None or res[1].sum() < MIN_OPTIMIZED_INLIERS:
            return 0
        cur.T_c_w, inl = res
        cur.point_ids[i_cur[inl]] = pids[inl]
        n = tr._optimize(cur)
        if n < MIN_OPTIMIZED_INLIERS:
            return n
        for radius, max_dist in (WIDE_SEARCH, NARROW_SEARCH):
            if n >= self.tc.reloc_min_inliers or (radius == NARROW_SEARCH[0] and n < 30):
                break
            if self._search_by_projection(cur, kf, radius, max_dist):
                n = tr._optimize(cur)
        return n

    def _search_by_projection(self, cur: TrackedFrame, kf: KeyFrame, radius_px: float, max_dist: int) -> int:
        """More matches: the points of ``kf`` and its best covisibles projected at ``cur``'s pose. Returns the count."""
        tr, m = self.tracker, self.tracker.map
        with m.lock:
            kfs = [kf] + [m.keyframes[c] for c in kf.covisibles(self.tc.local_covisibles_per_kf) if c in m.keyframes]
            pts = gather_points(m, [k for k in kfs if not k.bad], cur.point_ids[cur.point_ids >= 0])
        if pts is None:
            return 0
        proj = project_visible(cur.T_c_w, pts.positions, pts.normals, pts.min_dist, pts.max_dist, tr.ideal_camera,
                               tr.bf, tr.extractor.scale_factor, tr.extractor.n_levels)
        if len(proj.idx) == 0:
            return 0
        radius = radius_px * tr.extractor.scale_factors[proj.level]
        p_i, k_i = match_by_projection(cur.features, proj.uv, pts.descriptors[proj.idx], radius, proj.level,
                                       max_dist=max_dist, taken=cur.point_ids >= 0,
                                       proj_ur=proj.u_right if tr.bf > 0 else None)
        cur.point_ids[k_i] = pts.ids[proj.idx[p_i]]
        return len(k_i)
