"""Place descriptors of keyframes and frames: the interface loop closing and relocalisation ask through.

A *describer* turns a keyframe (or a lost frame) into one global descriptor,
a float32 D-vector compared by cosine similarity in the
:class:`~slam.backbone.loop.keyframe_database.KeyFrameDatabase`. It never
blocks its caller: :meth:`PlaceDescriber.submit` hands over a request (the
frame's thumbnail and its ORB features) and :meth:`PlaceDescriber.poll`
returns the answers that are in, in any order, each tagged with the caller's
key. A describer serves one consumer (loop closing and tracking each own
theirs), so answers are never taken by the wrong thread.

Two kinds:

* :class:`OrbVladDescriber`: hard-assignment VLAD over the keyframe's own
  ORB descriptors (256 bits as 0/1 floats) with a vocabulary fitted offline
  (``orb_vocabulary.npz`` beside this module, made by
  ``scripts/build_orb_vocabulary.py``). Needs no image and no network: the
  backbone's place recogniser when no learned model is configured, and the
  untrained baseline NetVLAD is measured against.
* a learned NetVLAD reached through the inference client (in-process or
  ``slam-infer`` over the bus, the same code path): added where the runtime
  wires the inference client; it takes the ``thumbnail``.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from slam.errors import DataError

log = logging.getLogger(__name__)

THUMBNAIL_WH = (160, 120)  # (width, height) of the keyframe images kept for learned models
VOCABULARY_FILE = Path(__file__).with_name("orb_vocabulary.npz")


def thumbnail(image: np.ndarray) -> np.ndarray:
    """The (120, 160, 3) uint8 RGB thumbnail of an H x W x 3 RGB or H x W grey uint8 image (area resampling)."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[:, :, None], 3, axis=2)
    elif img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ValueError(f"thumbnail: image of shape {img.shape} is neither grey nor RGB")
    img = np.ascontiguousarray(img[:, :, :3])
    if img.dtype != np.uint8:
        img = np.clip(img, 0, 255).astype(np.uint8)
    return cv2.resize(img, THUMBNAIL_WH, interpolation=cv2.INTER_AREA)


@dataclass(frozen=True)
class PlaceAnswer:
    """One answer: the caller's ``key``, the unit descriptor (None when it failed) and why it failed."""

    key: Hashable
    descriptor: np.ndarray | None
    error: str | None = None
    late: bool = False


class PlaceDescriber(Protocol):
    name: str  # e.g. "orb-vlad", "netvlad"
    dim: int  # descriptor length

    def submit(self, key: Hashable, thumbnail: np.ndarray | None, descriptors: np.ndarray) -> bool:
        """Ask for the descriptor of one image (``thumbnail``: 120x160x3 uint8 RGB or None;
        ``descriptors``: its (N, 32) uint8 ORB descriptors). False when the request cannot be taken."""

    def poll(self) -> list[PlaceAnswer]:
        """The answers that came back since the last poll (never blocks)."""

    def available(self) -> bool:
        """Whether requests get answers now (False while a server is down)."""

    def close(self) -> None:
        """Release what the describer holds (sockets, threads)."""


# ------------------------------------------------------------------ VLAD over ORB
def unpack_bits(descriptors: np.ndarray) -> np.ndarray:
    """(N, 32) uint8 ORB descriptors -> (N, 256) float32 of 0/1."""
    d = np.asarray(descriptors, dtype=np.uint8).reshape(-1, 32)
    return np.unpackbits(d, axis=1).astype(np.float32)


def vlad(local: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Hard-assignment VLAD (Jégou et al. 2010) with intra-normalisation (Arandjelović & Zisserman 2013).

    ``local`` (N, D) float32 descriptors, ``centres`` (K, D). Each descriptor
    adds its residual to its nearest centre's row; rows are L2-normalised,
    then the flattened (K*D,) vector. Zeros when no descriptor is given.
    """
    k, dim = centres.shape
    v = np.zeros((k, dim), np.float32)
    if len(local):
        c = np.asarray(centres, np.float32)
        x = np.asarray(local, np.float32)
        d2 = (c * c).sum(1)[None, :] - 2.0 * x @ c.T  # |x|^2 is the same for every centre
        lab = d2.argmin(1)
        np.add.at(v, lab, x)
        counts = np.bincount(lab, minlength=k).astype(np.float32)
        v -= counts[:, None] * c
    norms = np.linalg.norm(v, axis=1, keepdims=True)
    v = np.divide(v, norms, out=np.zeros_like(v), where=norms > 1e-12)
    out = v.ravel()
    n = float(np.linalg.norm(out))
    return out / n if n > 0 else out


def kmeans(x: np.ndarray, k: int, seed: int = 0, iters: int = 20) -> np.ndarray:
    """(k, D) float32 centres of ``x`` (N, D) by Lloyd's k-means from a k-means++ start (seeded, deterministic)."""
    x = np.asarray(x, np.float32)
    if len(x) < k:
        raise ValueError(f"k-means needs at least {k} samples, got {len(x)}")
    rng = np.random.default_rng(seed)
    sq = (x * x).sum(1)
    centres = [x[rng.integers(len(x))]]
    d2 = np.maximum(sq - 2 * x @ centres[0] + centres[0] @ centres[0], 0)
    for _ in range(1, k):
        total = float(d2.sum())
        idx = rng.choice(len(x), p=d2 / total) if total > 0 else rng.integers(len(x))
        centres.append(x[idx])
        d2 = np.minimum(d2, np.maximum(sq - 2 * x @ x[idx] + x[idx] @ x[idx], 0))
    c = np.stack(centres)
    for _ in range(iters):
        lab = ((c * c).sum(1)[None] - 2 * x @ c.T).argmin(1)
        sums = np.zeros_like(c)
        np.add.at(sums, lab, x)
        counts = np.bincount(lab, minlength=k)
        new = np.where(counts[:, None] > 0, sums / np.maximum(counts, 1)[:, None], c)
        if np.allclose(new, c):
            break
        c = new.astype(np.float32)
    return c.astype(np.float32)


def load_vocabulary(path: str | Path = VOCABULARY_FILE) -> tuple[np.ndarray, dict]:
    """Centres (K, 256) float32 and the sidecar facts of an ORB vocabulary file; DataError naming it if bad."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            centres = np.asarray(z["centres"], np.float32)
            info = json.loads(str(z["info"][()])) if "info" in z else {}
    except FileNotFoundError:
        raise DataError(path, "ORB vocabulary not found (make it with scripts/build_orb_vocabulary.py)") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is bad data
        raise DataError(path, f"not a readable ORB vocabulary ({type(e).__name__}: {e})") from None
    if centres.ndim != 2 or centres.shape[1] != 256 or len(centres) < 2 or not np.all(np.isfinite(centres)):
        raise DataError(path, f"ORB vocabulary centres of shape {centres.shape}, expected (K >= 2, 256) finite")
    return centres, info


class OrbVladDescriber:
    """VLAD over a keyframe's ORB descriptors: synchronous and cheap (a few ms), answers queue for :meth:`poll`."""

    name = "orb-vlad"

    def __init__(self, centres: np.ndarray | None = None):
        if centres is None:
            centres, info = load_vocabulary()
            log.debug("ORB vocabulary: %d words (%s)", len(centres), info.get("data", "?"))
        self.centres = np.asarray(centres, np.float32)
        self.dim = int(self.centres.size)
        self._answers: deque[PlaceAnswer] = deque()
        self._lock = threading.Lock()

    def describe(self, descriptors: np.ndarray) -> np.ndarray:
        return vlad(unpack_bits(descriptors), self.centres)

    def submit(self, key: Hashable, thumbnail: np.ndarray | None, descriptors: np.ndarray) -> bool:
        d = self.describe(descriptors)
        ans = PlaceAnswer(key, d) if np.any(d) else PlaceAnswer(key, None, "no ORB descriptors")
        with self._lock:
            self._answers.append(ans)
        return True

    def poll(self) -> list[PlaceAnswer]:
        with self._lock:
            out = list(self._answers)
            self._answers.clear()
        return out

    def available(self) -> bool:
        return True

    def close(self) -> None:
        pass
