"""A pose prior for relocalisation: where a lost frame roughly is, when place retrieval finds nothing.

A *pose prior* (PoseNet from one image, or VidLoc from a clip of the last
frames: :mod:`slam.inference.pose_prior`, reached through the inference
client) regresses a camera pose ``T_w_c``. It is
never trusted as the pose: the relocaliser takes the keyframes of the map near
the prior pose as extra candidates (:func:`keyframes_near`) and runs on them the
same matching, PnP and pose optimisation as on place candidates, so only a
pose with enough PnP inliers is accepted and a prior from the wrong place finds
nothing.

Like a :class:`~slam.backbone.loop.place.PlaceDescriber` it never blocks its
caller: :meth:`PosePrior.submit` hands over a thumbnail, :meth:`PosePrior.poll`
returns the answers that are in, each tagged with the caller's key. The
backbone defines only the interface (no bus, no ``nets``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from slam.backbone.map.map import KeyFrame, Map

PRIOR_MAX_DISTANCE_M = 2.0  # keyframes whose centre is within this of the prior position ...
PRIOR_MAX_ANGLE_DEG = 45.0  # ... and whose optical axis is within this of the prior's
PRIOR_CANDIDATES = 5  # the nearest this many are tried


@dataclass(frozen=True)
class PoseAnswer:
    """One answer: the caller's ``key``, the camera pose ``T_w_c`` (4x4, camera -> map world, metres;
    None when it failed) and why it failed."""

    key: Hashable
    T_w_c: np.ndarray | None
    error: str | None = None


class PosePrior(Protocol):
    name: str  # e.g. "posenet", "vidloc"
    clip_len: int  # frames one request looks at: 1 (PoseNet, one image) or a clip's length (VidLoc)

    def submit(self, key: Hashable, thumbnail: np.ndarray | None, earlier: Sequence[np.ndarray] = ()) -> bool:
        """Ask for the pose of one image (``thumbnail``: 120x160x3 uint8 RGB or None); ``earlier``: the
        thumbnails of the frames just before it, oldest first (at most ``clip_len - 1``; a clip prior
        regresses the pose of the newest frame from all of them, a one-image prior ignores them). False
        when the request cannot be taken."""

    def poll(self) -> list[PoseAnswer]:
        """The answers that came back since the last poll (never blocks)."""

    def available(self) -> bool:
        """Whether requests get answers now (False while a server is down)."""

    def close(self) -> None:
        """Release what the prior holds (sockets, threads)."""


class ImmediatePosePrior(ABC):
    """A pose prior that answers as it is asked, from :meth:`pose` (no network: a pose from another source,
    a baseline); the answers wait for the next :meth:`poll` like those of a learned prior."""

    name = "immediate"
    clip_len = 1

    def __init__(self) -> None:
        self._answers: list[PoseAnswer] = []

    @abstractmethod
    def pose(self, key: Hashable, thumbnail: np.ndarray | None, earlier: Sequence[np.ndarray]) -> np.ndarray | None:
        """``T_w_c`` (4x4, camera -> map world, metres) of the frame ``key``, or None when there is none."""

    def submit(self, key: Hashable, thumbnail: np.ndarray | None, earlier: Sequence[np.ndarray] = ()) -> bool:
        T = self.pose(key, thumbnail, earlier)
        self._answers.append(PoseAnswer(key, T, None if T is not None else "no pose"))
        return True

    def poll(self) -> list[PoseAnswer]:
        out, self._answers = self._answers, []
        return out

    def available(self) -> bool:
        return True

    def close(self) -> None:
        pass


def keyframes_near(m: Map, T_w_c: np.ndarray, allowed: Callable[[KeyFrame], bool] = lambda kf: True,
                   max_distance_m: float = PRIOR_MAX_DISTANCE_M, max_angle_deg: float = PRIOR_MAX_ANGLE_DEG,
                   n: int = PRIOR_CANDIDATES) -> list[tuple[KeyFrame, float]]:
    """The good keyframes of ``m`` (for which ``allowed`` holds) near the pose ``T_w_c``: centre within
    ``max_distance_m`` metres and optical axis (camera z in the world) within ``max_angle_deg`` degrees;
    nearest centre first, at most ``n``, each with its distance (m)."""
    T = np.asarray(T_w_c, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return []
    c, z = T[:3, 3], T[:3, 2] / max(float(np.linalg.norm(T[:3, 2])), 1e-12)
    cos_min = math.cos(math.radians(max_angle_deg))
    out = []
    with m.lock:
        for kf in m.keyframes.values():
            if kf.bad or not allowed(kf):
                continue
            d = float(np.linalg.norm(kf.center - c))
            if d <= max_distance_m and float(kf.T_c_w[2, :3] @ z) >= cos_min:  # R_w_c's 3rd column
                out.append((kf, d))
    out.sort(key=lambda e: e[1])
    return out[:n]
