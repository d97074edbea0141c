"""Images sent to one task of a model through the inference client, answers mapped back to the caller's keys.

The bookkeeping that every learned input of the SLAM process shares (NetVLAD
descriptors, PoseNet and VidLoc pose priors): a thumbnail (or a clip of them) is checked, resized to the
network's input when that is known here (else the server resizes it by the
same rule), sent without waiting; answers come back through :meth:`answers`
as ``(key, value, why, late)``: a value, or None with why (error answer,
timeout, untrained model, a malformed result). A timed-out request stays
known for a while, so a late answer still reaches its key. A subclass names
the ``task`` and bus ``topic`` and turns an answer into its value
(:meth:`convert`).
"""

from __future__ import annotations

import json
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import cv2
import numpy as np

from slam.errors import DataError
from slam.inference.client import InferenceClient


def resize_thumbnail(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """``image`` (H, W, 3) uint8 at ``size_wh`` = (width, height): area filter when shrinking, bilinear
    when growing (the rule ``nets.train.data.resize_image`` applies on the server, so either side may do it)."""
    if (image.shape[1], image.shape[0]) == tuple(size_wh):
        return image
    shrink = image.shape[1] > size_wh[0]
    return cv2.resize(image, tuple(size_wh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def untrained(meta: dict[str, Any], where: str, what: str, use: str) -> str | None:
    """Why an answer of a model without a checkpoint is not used (None: the model is trained)."""
    model = meta.get("model") if isinstance(meta.get("model"), dict) else {}
    if model.get("trained", False):
        return None
    return f"the {model.get('name', what)} model at {where} has no checkpoint (untrained weights): not used {use}"


def read_sidecar(checkpoint: str | Path) -> dict[str, Any]:
    """The JSON sidecar of ``checkpoint`` (``NAME.json`` beside ``NAME.pt``); :class:`DataError` naming the
    sidecar when it is missing, not JSON or not an object."""
    from nets.base import sidecar_path

    side = sidecar_path(checkpoint)
    try:
        info = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(side, f"cannot read the checkpoint's sidecar: {e}") from None
    if not isinstance(info, dict):
        raise DataError(side, "the checkpoint's sidecar is not a JSON object")
    return info


def sidecar_input_size(checkpoint: str | Path) -> tuple[int, int]:
    """(width, height) a checkpoint's network takes, from its sidecar (``input_size`` or ``architecture``)."""
    info = read_sidecar(checkpoint)
    arch = info.get("architecture")
    wh = info.get("input_size")
    if wh is None and isinstance(arch, dict):
        wh = [arch.get("image_width"), arch.get("image_height")]
    try:
        w, h = (int(v) for v in wh)
    except (TypeError, ValueError):
        from nets.base import sidecar_path

        raise DataError(sidecar_path(checkpoint), "the sidecar records no input size (input_size or "
                                                  "architecture.image_width, image_height)") from None
    return w, h


class ImageRequests(ABC):
    """Requests of one ``task`` through ``client`` (owned: closed by :meth:`close`); see the module docstring.

    ``input_wh``: the network's input (width, height) or None; ``deadline_s``: seconds until a request
    counts as timed out.
    """

    task: ClassVar[str]
    topic: ClassVar[str]
    label: ClassVar[str]  # names the model in log lines
    log: ClassVar[logging.Logger]

    def __init__(self, client: InferenceClient, input_wh: tuple[int, int] | None = None, deadline_s: float = 0.5):
        self.client = client
        self.input_wh = None if input_wh is None else (int(input_wh[0]), int(input_wh[1]))
        self.deadline_s = deadline_s
        self._keys: dict[int, tuple[Hashable, float]] = {}  # request id -> (key, forget after: monotonic s)
        self._refused: str | None = None  # why the last answer was refused (untrained model, bad result)
        self._logged: set[str] = set()

    @abstractmethod
    def convert(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[Any, str | None]:
        """An answer's value, or None and why it cannot be used."""

    def send(self, key: Hashable, thumbnail: np.ndarray | None) -> bool:
        """Send ``thumbnail`` (H x W x 3 uint8 RGB) as ``image``; False when there is none, it is malformed,
        or the client's backlog is full (a server gone for a while)."""
        img = self.prepare(thumbnail)
        return img is not None and self.request(key, {"image": img})

    def prepare(self, thumbnail: np.ndarray | None) -> np.ndarray | None:
        """``thumbnail`` checked (H x W x 3 uint8 RGB, else None, logged once) and resized to the network's
        input when that is known here."""
        if thumbnail is None:
            return None
        img = np.asarray(thumbnail)
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            self.log_once(f"thumbnail of shape {img.shape} {img.dtype}, not H x W x 3 uint8: not sent")
            return None
        if self.input_wh is not None:
            img = resize_thumbnail(img, self.input_wh)
        return np.ascontiguousarray(img)

    def request(self, key: Hashable, arrays: dict[str, np.ndarray]) -> bool:
        """Submit ``arrays`` (a request of :attr:`task`) for ``key``; False when the client's backlog is full."""
        rid = self.client.submit(self.task, arrays, self.deadline_s, topic=self.topic)
        if rid is None:
            return False
        self._keys[rid] = (key, time.monotonic() + self.deadline_s + self.client.keep_late_s + 1.0)
        return True

    def answers(self) -> Iterator[tuple[Hashable, Any, str | None, bool]]:
        """``(key, value or None, why, late)`` of each answer since the last call (never blocks)."""
        for r in self.client.poll():
            entry = self._keys.get(r.request_id)
            if entry is None:
                continue
            key = entry[0]
            if r.timed_out:  # kept: a late answer may follow
                yield key, None, f"no answer within {self.deadline_s:.2f} s", False
                continue
            del self._keys[r.request_id]
            if r.error is not None:
                yield key, None, r.error, r.late
                continue
            value, why = self.convert(r.reply.meta, r.reply.arrays)
            self._refused = why
            if why is not None:
                self.log_once(why)
            yield key, value, why, r.late
        now = time.monotonic()
        for rid in [rid for rid, (_, forget) in self._keys.items() if now > forget]:
            del self._keys[rid]

    def log_once(self, why: str) -> None:
        if why not in self._logged:
            self._logged.add(why)
            self.log.error("%s (%s): %s", self.label, self.client.where, why)

    @property
    def in_flight(self) -> int:
        """Requests taken and neither answered nor timed out."""
        return self.client.waiting

    def available(self) -> bool:
        """Whether usable answers come now: the server answers and its answers can be used."""
        return self.client.available() and self._refused is None

    def close(self) -> None:
        self.client.close()
