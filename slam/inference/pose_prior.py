"""PoseNet and VidLoc as relocalisation's pose prior, through the inference client (in-process or ``slam-infer``).

:class:`PoseNetPrior` and :class:`VidLocPrior` are
pose priors (:class:`~slam.backbone.frontend.pose_prior.PosePrior`): ``submit`` sends a
lost frame's thumbnail (PoseNet: a ``pose`` request) or the clip of the last
``clip_len`` lost frames ending with it (VidLoc: a ``pose_clip`` request),
resized to the network's input size when that is known here, and returns at
once; ``poll`` maps the answers (``T_w_c``, 4x4, camera -> the map's world
frame the network was trained in, metres; VidLoc's for the clip's newest
frame) back to the caller's keys. What goes wrong becomes an answer, never an
exception: an error answer, a timeout, an untrained model, a malformed pose
give ``PoseAnswer(key, None, why)``.

:func:`make_pose_prior` builds the factory ``System(pose_prior=...)`` takes
(``slam-run --pose-prior CKPT``, a launch file's ``processes.slam.pose_prior``):
the checkpoint's sidecar says PoseNet or VidLoc; in-process it is loaded and
asked once at start, so a checkpoint of another model, or one that cannot
answer a pose, is a :class:`~slam.errors.DataError` naming the file before any
frame is tracked.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from slam.backbone.frontend.pose_prior import PoseAnswer, PosePrior
from slam.backbone.loop.place import THUMBNAIL_WH
from slam.bus import topics
from slam.bus.keys import CurveClient
from slam.errors import DataError
from slam.inference.client import InferenceClient
from slam.inference.place import IN_PROCESS
from slam.inference.requests import ImageRequests, read_sidecar, sidecar_input_size, untrained

log = logging.getLogger(__name__)

TASK = "pose"  # PoseNet: one image -> T_w_c (4, 4)
CLIP_TASK = "pose_clip"  # VidLoc: a clip (T, H, W, 3) -> T_w_c (T, 4, 4)
NAMES = {"posenet": "PoseNet", "vidloc": "VidLoc"}


def check_pose(T: Any) -> tuple[np.ndarray | None, str | None]:
    """``T`` as a (4, 4) float64 rigid transform, or why it is not one (shape, non-finite, not a rotation)."""
    if T is None:
        return None, "answer without T_w_c"
    T = np.asarray(T, np.float64)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return None, f"T_w_c of shape {T.shape}, expected a finite 4x4"
    R = T[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-3) or np.linalg.det(R) < 0:
        return None, "T_w_c's rotation is not a rotation"
    return T, None


class PoseRequests(ImageRequests):
    """What the pose priors share: answers as :class:`PoseAnswer`, the pose of the newest frame checked.

    ``input_wh``: the network's input (width, height), thumbnails are resized to it before sending (None:
    the server resizes); ``deadline_s``: seconds until a request counts as timed out."""

    clip_len = 1
    topic, log = topics.RELOC, log

    def poll(self) -> list[PoseAnswer]:
        """The answers since the last poll: poses and failures (``T_w_c`` None, with why)."""
        return [PoseAnswer(key, T, why) for key, T, why, _ in self.answers()]

    def convert(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[np.ndarray | None, str | None]:
        why = untrained(meta, self.client.where, self.name, "as a pose prior")
        if why is not None:
            return None, why
        T = arrays.get("T_w_c")
        if T is not None and self.clip_len > 1:  # a clip's poses (T, 4, 4): the newest frame's is the prior
            T = np.asarray(T)
            if T.ndim != 3 or len(T) == 0:
                return None, f"clip poses of shape {T.shape}, expected (T, 4, 4)"
            T = T[-1]
        return check_pose(T)


class PoseNetPrior(PoseRequests):
    """Pose priors from a PoseNet answering ``pose`` requests (one image) through ``client`` (owned: closed
    by :meth:`close`)."""

    name = "posenet"
    task, label = TASK, "posenet prior"

    def submit(self, key: Hashable, thumbnail: np.ndarray | None, earlier: Sequence[np.ndarray] = ()) -> bool:
        """Send ``thumbnail`` (H x W x 3 uint8 RGB; ``earlier`` frames are not used by PoseNet); False when
        there is none or the client's backlog is full."""
        return self.send(key, thumbnail)


class VidLocPrior(PoseRequests):
    """Pose priors from a VidLoc answering ``pose_clip`` requests through ``client`` (owned): each request is
    the clip of the newest ``clip_len`` lost frames (fewer at the start of a loss), the prior the pose VidLoc
    regresses for its newest frame."""

    name = "vidloc"
    task, label = CLIP_TASK, "vidloc prior"

    def __init__(self, client: InferenceClient, input_wh: tuple[int, int] | None = None, deadline_s: float = 0.5,
                 clip_len: int = 8):
        super().__init__(client, input_wh, deadline_s)
        self.clip_len = max(1, int(clip_len))

    def submit(self, key: Hashable, thumbnail: np.ndarray | None, earlier: Sequence[np.ndarray] = ()) -> bool:
        """Send the clip ``earlier[-(clip_len - 1):] + [thumbnail]`` (H x W x 3 uint8 RGB each, one size);
        False when there is no thumbnail or the client's backlog is full. A malformed earlier frame, or one
        of another size, shortens the clip to the frames after it."""
        newest = self.prepare(thumbnail)
        if newest is None:
            return False
        clip = [newest]
        earlier = list(earlier)
        for t in reversed(earlier[max(0, len(earlier) - self.clip_len + 1):]):
            img = self.prepare(t)
            if img is None or img.shape != newest.shape:
                break
            clip.append(img)
        return self.request(key, {"images": np.stack(clip[::-1])})


# the pose-regression models a prior can be made of: sidecar model name -> (task, prior class)
KINDS: dict[str, tuple[str, type[PoseRequests]]] = {"posenet": (TASK, PoseNetPrior), "vidloc": (CLIP_TASK, VidLocPrior)}


class PosePriorFactory:
    """``factory()`` -> a new pose prior; ``describe()`` says which, where, from which checkpoint."""

    def __init__(self, make: Callable[[], PosePrior], where: str, checkpoint: str | None, kind: str = "posenet",
                 clip_len: int = 1):
        self._make, self.where, self.checkpoint = make, where, checkpoint
        self.kind, self.clip_len = kind, clip_len

    def __call__(self) -> PosePrior:
        return self._make()

    def describe(self) -> dict[str, Any]:
        out = {"prior": self.kind, "inference": self.where, "checkpoint": self.checkpoint}
        if self.kind == "vidloc":
            out["clip_len"] = self.clip_len
        return out


def checkpoint_kind(checkpoint: str | Path) -> tuple[str, int]:
    """Which pose prior a checkpoint makes, from its sidecar: ``(model name, clip length)`` (1 for PoseNet).

    Raises :class:`~slam.errors.DataError` naming the file for a missing checkpoint or sidecar, or a
    checkpoint of a model that regresses no pose (e.g. NetVLAD)."""
    if not Path(checkpoint).is_file():
        raise DataError(checkpoint, "no such PoseNet or VidLoc checkpoint")
    side = read_sidecar(checkpoint)
    model = side.get("model")
    if model not in KINDS:
        task = side.get("task")
        raise DataError(checkpoint, f"a checkpoint of {model!r}{f' ({task})' if task else ''}, not of a pose "
                                    f"regressor ({' or '.join(KINDS)}): cannot be relocalisation's pose prior")
    conf = side.get("conf") if isinstance(side.get("conf"), dict) else {}
    if model != "vidloc":
        return model, 1
    clip_len = conf.get("clip_len")
    if not isinstance(clip_len, int) or clip_len < 1:
        raise DataError(checkpoint, f"the sidecar's conf.clip_len is {clip_len!r}: a VidLoc checkpoint records "
                                    "the clip length it was trained on (>= 1)")
    return model, clip_len


def make_pose_prior(checkpoint: str | Path | None, infer: str = IN_PROCESS, device: str = "cpu",
                    deadline_s: float = 0.5, probe_s: float = 10.0, curve: CurveClient | None = None,
                    heartbeat_s: float = 1.0) -> PosePriorFactory:
    """The pose-prior factory of ``checkpoint``: a PoseNet or a VidLoc, as its sidecar says (VidLoc: clips of
    the sidecar's ``clip_len``). In-process (loaded and asked once now), or asked of the ``slam-infer`` at
    ``infer``, which must serve that model (the checkpoint then only gives kind, clip length and input size;
    without one: a PoseNet, the server resizes).

    Raises :class:`~slam.errors.DataError` naming the file for a missing checkpoint, one of another model
    (NetVLAD, ...) or architecture, or one whose network does not answer a 4x4 pose.
    """
    if infer != IN_PROCESS:
        from slam.bus.endpoints import EndpointError, check_connect

        try:
            check_connect(infer)
        except EndpointError as e:
            raise DataError(None, f"pose prior inference endpoint: {e} (or in-process)") from None
        kind, clip_len = ("posenet", 1) if checkpoint is None else checkpoint_kind(checkpoint)
        input_wh = None if checkpoint is None else sidecar_input_size(checkpoint)
        new = _constructor(kind, clip_len)

        def remote() -> PoseRequests:
            client = InferenceClient.connect(infer, name=kind, curve=curve, heartbeat_s=heartbeat_s)
            return new(client, input_wh, deadline_s)

        log.info("relocalisation pose prior: %s (inference server at %s%s)", NAMES[kind], infer,
                 f", clips of {clip_len} frames" if kind == "vidloc" else "")
        return PosePriorFactory(remote, infer, None if checkpoint is None else str(checkpoint), kind, clip_len)
    if checkpoint is None:
        raise DataError(None, "a pose prior in-process needs a PoseNet or VidLoc checkpoint")
    kind, clip_len = checkpoint_kind(checkpoint)
    from slam.inference.local import serve_checkpoint

    local, model = serve_checkpoint(checkpoint, KINDS[kind][0], "a pose regressor", device)
    input_wh = getattr(model, "input_size", None)
    new = _constructor(kind, clip_len)

    def make() -> PoseRequests:
        return new(InferenceClient.in_process(local, name=kind), input_wh, deadline_s)

    why = _probe(make(), probe_s)
    if why is not None:
        raise DataError(checkpoint, f"{NAMES[kind]} cannot give a pose prior: {why}")
    log.info("relocalisation pose prior: %s (checkpoint %s, in-process, input %s%s)", NAMES[kind], checkpoint,
             input_wh, f", clips of {clip_len} frames" if kind == "vidloc" else "")
    return PosePriorFactory(make, IN_PROCESS, str(checkpoint), kind, clip_len)


def _constructor(kind: str, clip_len: int) -> Callable[..., PoseRequests]:
    """``(client, input_wh, deadline_s) -> prior`` of ``kind``."""
    cls = KINDS[kind][1]
    return functools.partial(cls, clip_len=clip_len) if cls is VidLocPrior else cls


def _probe(prior: PoseRequests, timeout_s: float) -> str | None:
    """Ask ``prior`` (closed after) for the pose of a grey thumbnail (a clip of them for a clip prior): None
    when a usable pose came, else why."""
    grey = np.full((THUMBNAIL_WH[1], THUMBNAIL_WH[0], 3), 128, np.uint8)
    end = time.monotonic() + timeout_s
    try:
        if not prior.submit("probe", grey, [grey] * (prior.clip_len - 1)):
            return "the request could not be sent"
        while time.monotonic() < end:
            for a in prior.poll():
                if a.T_w_c is not None or not (a.error or "").startswith("no answer within"):
                    return a.error
            time.sleep(0.01)
        return f"no answer within {timeout_s:g} s"
    finally:
        prior.close()
