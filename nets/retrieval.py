"""Place retrieval from global descriptors: ground-truth positives from poses, recall@K, and the baselines.

Positives and negatives follow NetVLAD's weak supervision (Arandjelović et al.,
CVPR 2016), with poses instead of GPS: two frames of one world show the same
place when their camera centres are within ``pos_dist_m`` and their optical
axes within ``pos_angle_deg``; they are different places beyond
``neg_dist_m`` or ``neg_angle_deg``; pairs in between are neither.

Recall@K: each frame with a positive in its database is a query; its database
is every other frame of its world except those of its own clip within
``exclude_frames`` frames (its temporal neighbours, which a loop closer must
not count). A query is recalled when a positive is among its K nearest
descriptors. Random retrieval's recall@K is the exact expectation
``1 - C(M-P, K) / C(M, K)`` (M database frames, P positives), not a draw.

The untrained global-descriptor baseline is VLAD over ORB descriptors
(binary descriptors as 0/1 floats, a k-means vocabulary, hard assignment,
intra-normalisation then L2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from nets.train.data import Clip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PlaceThresholds:
    """Same place: within ``pos_dist_m`` and ``pos_angle_deg``; another place: beyond either ``neg_*``."""

    pos_dist_m: float = 2.0
    pos_angle_deg: float = 30.0
    neg_dist_m: float = 10.0
    neg_angle_deg: float = 60.0
    exclude_frames: int = 5  # temporal neighbours of a query (same clip, |i - j| <= this) are not its database


def pose_relations(T_w_c: np.ndarray, th: PlaceThresholds) -> tuple[np.ndarray, np.ndarray]:
    """``(positive, negative)`` (N, N) bool matrices for the poses ``T_w_c`` (N, 4, 4) of one world.

    The viewing angle is the angle between the cameras' optical (z) axes. Frames without a pose
    (NaN) are neither; the diagonal is neither.
    """
    p = T_w_c[:, :3, 3]
    z = T_w_c[:, :3, 2]
    dist = np.linalg.norm(p[:, None] - p[None], axis=-1)
    cos = np.clip(np.einsum("id,jd->ij", z, z), -1.0, 1.0)
    ang = np.degrees(np.arccos(cos))
    valid = np.isfinite(dist) & np.isfinite(ang)
    with np.errstate(invalid="ignore"):
        pos = valid & (dist <= th.pos_dist_m) & (ang <= th.pos_angle_deg)
        neg = valid & ((dist > th.neg_dist_m) | (ang > th.neg_angle_deg))
    np.fill_diagonal(pos, False)
    np.fill_diagonal(neg, False)
    return pos, neg


@dataclass
class World:
    """The frames of one world (all clips sharing its frame), stacked: which clip and frame each row is."""

    name: str
    clip_ids: np.ndarray  # (N,) index into the clip list
    rows: np.ndarray  # (N,) row within its clip
    frame_index: np.ndarray  # (N,) frame number in the source sequence
    T_w_c: np.ndarray  # (N, 4, 4)


def group_worlds(clips: list[Clip]) -> list[World]:
    """Clips grouped by ``world``, in order of first appearance."""
    names = list(dict.fromkeys(c.world for c in clips))
    worlds = []
    for w in names:
        ids = [i for i, c in enumerate(clips) if c.world == w]
        worlds.append(World(
            w, np.concatenate([np.full(len(clips[i]), i) for i in ids]),
            np.concatenate([np.arange(len(clips[i])) for i in ids]),
            np.concatenate([clips[i].frame_index for i in ids]),
            np.concatenate([clips[i].T_w_c for i in ids])))
    return worlds


def database_mask(world: World, th: PlaceThresholds) -> np.ndarray:
    """(N, N) bool: frame j is in the database of query i (not itself, not its temporal neighbour)."""
    same_clip = world.clip_ids[:, None] == world.clip_ids[None]
    near = np.abs(world.frame_index[:, None] - world.frame_index[None]) <= th.exclude_frames
    return ~(same_clip & near)


def _random_recall(m: int, p: int, k: int) -> float:
    """Probability that K frames drawn without replacement from M, P of them positive, include a positive."""
    if p <= 0:
        return 0.0
    if m - p < k:
        return 1.0
    miss = 1.0
    for i in range(k):
        miss *= (m - p - i) / (m - i)
    return 1.0 - miss


def recall_at_k(descriptors: list[np.ndarray], clips: list[Clip], th: PlaceThresholds,
                ks: tuple[int, ...] = (1, 5)) -> dict:
    """Recall@K of ``descriptors`` (one (N_c, D) array per clip, L2-normalised) and of random retrieval.

    Returns ``{"queries": n, "recall@1": r, ..., "random_recall@1": r, ...}`` (fractions, 0..1); with no query
    (no frame has a positive outside its temporal neighbourhood) the recalls are None.
    """
    hits = {k: 0 for k in ks}
    rand = {k: 0.0 for k in ks}
    n_query = 0
    for world in group_worlds(clips):
        d = np.concatenate([descriptors[c][r][None] for c, r in zip(world.clip_ids, world.rows)])
        pos, _ = pose_relations(world.T_w_c, th)
        db = database_mask(world, th)
        pos &= db
        dist = -(d @ d.T)  # unit vectors: ordering by cosine = ordering by Euclidean distance
        for q in np.flatnonzero(pos.any(axis=1)):
            cand = np.flatnonzero(db[q])
            order = cand[np.argsort(dist[q, cand], kind="stable")]
            n_query += 1
            for k in ks:
                hits[k] += bool(pos[q, order[:k]].any())
                rand[k] += _random_recall(len(cand), int(pos[q].sum()), k)
    out: dict = {"queries": n_query}
    for k in ks:
        out[f"recall@{k}"] = hits[k] / n_query if n_query else None
    for k in ks:
        out[f"random_recall@{k}"] = rand[k] / n_query if n_query else None
    return out


def kmeans(x: np.ndarray, k: int, seed: int, iters: int = 25) -> np.ndarray:
    """(k, D) float32 centres of ``x`` (N, D) by Lloyd's k-means from a k-means++ start (seeded, deterministic)."""
    x = np.asarray(x, np.float64)
    if len(x) < k:
        raise ValueError(f"k-means needs at least {k} samples, got {len(x)}")
    rng = np.random.default_rng(seed)
    centres = [x[rng.integers(len(x))]]
    d2 = ((x - centres[0]) ** 2).sum(1)
    for _ in range(1, k):
        p = d2 / d2.sum() if d2.sum() > 0 else np.full(len(x), 1.0 / len(x))
        centres.append(x[rng.choice(len(x), p=p)])
        d2 = np.minimum(d2, ((x - centres[-1]) ** 2).sum(1))
    c = np.stack(centres)
    for _ in range(iters):
        dist = (x**2).sum(1)[:, None] - 2 * x @ c.T + (c**2).sum(1)[None]
        lab = dist.argmin(1)
        new = np.stack([x[lab == j].mean(0) if (lab == j).any() else c[j] for j in range(k)])
        if np.allclose(new, c):
            break
        c = new
    return c.astype(np.float32)


def vlad(desc: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Hard-assignment VLAD of local descriptors ``desc`` (N, D): residual sums per centre, intra-normalised
    per centre, then L2-normalised; (K*D,) float32 (zeros when there are no descriptors)."""
    k, dim = centres.shape
    v = np.zeros((k, dim), np.float64)
    if len(desc):
        lab = ((desc[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        for j in range(k):
            if (lab == j).any():
                v[j] = (desc[lab == j] - centres[j]).sum(0)
    v /= np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
    v = v.ravel()
    return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)


class OrbVlad:
    """The untrained global descriptor: VLAD over ORB descriptors of each image (256 bits as 0/1 floats).

    ORB runs on the clip images as they are (the model's input size), with a 15-pixel patch and border so
    small images still give features.
    """

    def __init__(self, clusters: int = 32, features: int = 300, seed: int = 0):
        self.clusters, self.seed = clusters, seed
        self.orb = cv2.ORB_create(nfeatures=features, edgeThreshold=15, patchSize=15)
        self.centres: np.ndarray | None = None

    def local(self, image: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        _, des = self.orb.detectAndCompute(grey, None)
        if des is None:
            return np.zeros((0, 256), np.float32)
        return np.unpackbits(des, axis=1).astype(np.float32)

    def fit(self, clips: list[Clip], max_descriptors: int = 5000) -> "OrbVlad":
        """The vocabulary: k-means over ORB descriptors of the frames of ``clips``."""
        des = np.concatenate([self.local(im) for c in clips for im in c.images])
        if len(des) > max_descriptors:
            des = des[np.random.default_rng(self.seed).choice(len(des), max_descriptors, replace=False)]
        self.centres = kmeans(des, self.clusters, self.seed, iters=15)
        return self

    def describe(self, images: np.ndarray) -> np.ndarray:
        if self.centres is None:
            raise RuntimeError("OrbVlad.fit first")
        return np.stack([vlad(self.local(im), self.centres) for im in images])
