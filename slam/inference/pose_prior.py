"""PoseNet as relocalisation's pose prior, through the inference client (in-process or ``slam-infer``).

:class:`PoseNetPrior` is a :class:`~slam.backbone.frontend.pose_prior.PosePrior`:
``submit`` sends a lost frame's thumbnail (resized to the network's input size
when that is known here) as a ``pose`` request and returns at once; ``poll``
maps the answers (``T_w_c``, 4x4, camera -> the map's world frame the PoseNet
was trained in, metres) back to the caller's keys. What goes wrong becomes an
answer, never an exception: an error answer, a timeout, an untrained model,
a malformed pose give ``PoseAnswer(key, None, why)``.

:func:`make_pose_prior` builds the factory ``System(pose_prior=...)`` takes
(``slam-run --pose-prior CKPT``): the checkpoint is loaded and asked once at
start, so a checkpoint of another model, or one that cannot answer a pose, is
a :class:`~slam.errors.DataError` naming the file before any frame is tracked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

import numpy as np

from slam.backbone.frontend.pose_prior import PoseAnswer, PosePrior
from slam.backbone.loop.place import THUMBNAIL_WH
from slam.bus import topics
from slam.errors import DataError
from slam.inference.client import InferenceClient
from slam.inference.place import IN_PROCESS
from slam.inference.requests import ImageRequests, untrained

log = logging.getLogger(__name__)

TASK = "pose"


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


class PoseNetPrior(ImageRequests):
    """Pose priors from a PoseNet answering ``pose`` requests through ``client`` (owned: closed by
    :meth:`close`). ``input_wh``: the network's input (width, height), thumbnails are resized to it before
    sending (None: the server resizes); ``deadline_s``: seconds until a request counts as timed out."""

    name = "posenet"
    task, topic, label, log = TASK, topics.RELOC, "posenet prior", log

    def submit(self, key: Hashable, thumbnail: np.ndarray | None) -> bool:
        """Send ``thumbnail`` (H x W x 3 uint8 RGB); False when there is none or the client's backlog is full."""
        return self.send(key, thumbnail)

    def poll(self) -> list[PoseAnswer]:
        """The answers since the last poll: poses and failures (``T_w_c`` None, with why)."""
        return [PoseAnswer(key, T, why) for key, T, why, _ in self.answers()]

    def convert(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[np.ndarray | None, str | None]:
        why = untrained(meta, self.client.where, "pose", "as a pose prior")
        if why is not None:
            return None, why
        return check_pose(arrays.get("T_w_c"))


class PosePriorFactory:
    """``factory()`` -> a new pose prior; ``describe()`` says which, where, from which checkpoint."""

    def __init__(self, make: Callable[[], PosePrior], where: str, checkpoint: str | None):
        self._make, self.where, self.checkpoint = make, where, checkpoint

    def __call__(self) -> PosePrior:
        return self._make()

    def describe(self) -> dict[str, Any]:
        return {"prior": "posenet", "inference": self.where, "checkpoint": self.checkpoint}


def make_pose_prior(checkpoint: str | Path | None, infer: str = IN_PROCESS, device: str = "cpu",
                    deadline_s: float = 0.5, probe_s: float = 10.0) -> PosePriorFactory:
    """The PoseNet pose-prior factory: in-process from ``checkpoint`` (loaded and asked once now), or the
    ``slam-infer`` at ``infer`` (``checkpoint``, if given, only for its sidecar's input size: not needed).

    Raises :class:`~slam.errors.DataError` naming the file for a missing checkpoint, one of another model
    (no ``pose`` task) or architecture, or one whose network does not answer a 4x4 pose.
    """
    if infer != IN_PROCESS:
        from slam.bus.endpoints import EndpointError, check_connect

        try:
            check_connect(infer)
        except EndpointError as e:
            raise DataError(None, f"pose prior inference endpoint: {e} (or in-process)") from None
        log.info("relocalisation pose prior: PoseNet (inference server at %s)", infer)
        return PosePriorFactory(lambda: PoseNetPrior(InferenceClient.connect(infer, name="posenet"), None,
                                                     deadline_s), infer, None if checkpoint is None else str(checkpoint))
    if checkpoint is None or not Path(checkpoint).is_file():
        raise DataError(checkpoint, "no such PoseNet checkpoint")
    from slam.inference.local import serve_checkpoint

    local, model = serve_checkpoint(checkpoint, TASK, "a pose regressor", device)
    input_wh = getattr(model, "input_size", None)

    def make() -> PoseNetPrior:
        return PoseNetPrior(InferenceClient.in_process(local, name="posenet"), input_wh, deadline_s)

    why = _probe(make(), probe_s)
    if why is not None:
        raise DataError(checkpoint, f"PoseNet cannot give a pose prior: {why}")
    log.info("relocalisation pose prior: PoseNet (checkpoint %s, in-process, input %s)", checkpoint, input_wh)
    return PosePriorFactory(make, IN_PROCESS, str(checkpoint))


def _probe(prior: PoseNetPrior, timeout_s: float) -> str | None:
    """Ask ``prior`` (closed after) for the pose of a grey thumbnail: None when a usable pose came, else why."""
    grey = np.full((THUMBNAIL_WH[1], THUMBNAIL_WH[0], 3), 128, np.uint8)
    end = time.monotonic() + timeout_s
    try:
        if not prior.submit("probe", grey):
            return "the request could not be sent"
        while time.monotonic() < end:
            for a in prior.poll():
                if a.T_w_c is not None or not (a.error or "").startswith("no answer within"):
                    return a.error
            time.sleep(0.01)
        return f"no answer within {timeout_s:g} s"
    finally:
        prior.close()
