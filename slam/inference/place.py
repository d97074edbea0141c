"""NetVLAD place descriptors through the inference client, and the choice between NetVLAD and ORB-VLAD.

:class:`NetVladDescriber` is a :class:`~slam.backbone.loop.place.PlaceDescriber`:
``submit`` sends a keyframe's thumbnail (resized to the network's input size
when that is known here) as a ``descriptor`` request and returns at once;
``poll`` maps the answers back to the caller's keys. What goes wrong becomes
an answer, never an exception: an error answer, a request that timed out, a
model without a checkpoint all give ``PlaceAnswer(key, None, why)`` and make
``available()`` False (logged once; True again when the server answers). An
answer that comes after its deadline is still delivered, flagged ``late``
(so a key that timed out may get a second, late answer).

:func:`make_place_describer` turns the run's :class:`PlaceSettings` into a
factory (each consumer, loop closing and relocalisation, calls it for its
own describer) and logs which describer it is and why, e.g.
``place recognition: ORB-VLAD (no NetVLAD checkpoint)``. A NetVLAD without a
checkpoint is never used for place recognition: in-process it is not even
loaded, and a server answering with untrained weights is refused.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from slam.backbone.loop.place import THUMBNAIL_WH, OrbVladDescriber, PlaceAnswer, PlaceDescriber, load_vocabulary
from slam.bus import topics
from slam.bus.keys import CurveClient
from slam.errors import DataError
from slam.inference.client import InferenceClient
from slam.inference.requests import ImageRequests, sidecar_input_size, untrained

log = logging.getLogger(__name__)

PLACES = ("auto", "orb-vlad", "netvlad")
IN_PROCESS = "in-process"
TASK = "descriptor"
# where slam-train's NetVLAD checkpoint is committed when there is one (nets/checkpoints/, DESIGN.md)
DEFAULT_CHECKPOINT = Path(__file__).resolve().parents[2] / "nets" / "checkpoints" / "netvlad.pt"


@dataclass
class PlaceSettings:
    """How the run describes places (``slam-run --place ... --place-checkpoint ... --infer ...``)."""

    # auto: NetVLAD when a checkpoint is given or a server serves one, else ORB-VLAD; or force one. The shipped
    # checkpoint (trained on synthetic rooms only) is used by "netvlad", not by "auto": on the real KITTI clip
    # it retrieves worse than ORB-VLAD (benchmarks/results/netvlad.md)
    place: str = "auto"
    checkpoint: str | None = None  # NetVLAD checkpoint (+ .json sidecar); default: nets/checkpoints/netvlad.pt
    infer: str = IN_PROCESS  # "in-process", or the endpoint of a slam-infer serving NetVLAD (ipc://, tcp://)
    server_serves_netvlad: bool | None = None  # infer at an endpoint: it serves a trained NetVLAD (None: unknown)
    deadline_s: float = 0.5  # a descriptor not back by then is reported as timed out (a late one still comes)
    probe_s: float = 10.0  # at start: how long to wait for the first descriptor (a server starting up)
    device: str = "cpu"  # in-process: where the network runs (auto, cpu, cuda)
    heartbeat_s: float = 1.0  # a silent server is asked whether it is there this often
    curve: CurveClient | None = None  # keys for a tcp endpoint on another machine


class NetVladDescriber(ImageRequests):
    """Place descriptors from a NetVLAD model answering ``descriptor`` requests through ``client``.

    ``dim``: descriptor length (answers of another length are errors); ``input_wh``: the network's input
    (width, height), thumbnails are resized to it before sending (None: sent as they are, the server
    resizes); ``deadline_s``: seconds until a request counts as timed out. Owns ``client`` (closed by
    :meth:`close`).
    """

    name = "netvlad"
    task, topic, label, log = TASK, topics.DESCRIPTORS, "netvlad", log

    def __init__(self, client: InferenceClient, dim: int, input_wh: tuple[int, int] | None = None,
                 deadline_s: float = 0.5):
        super().__init__(client, input_wh, deadline_s)
        self.dim = int(dim)

    def submit(self, key: Hashable, thumbnail: np.ndarray | None, descriptors: np.ndarray) -> bool:
        """Send ``thumbnail`` (H x W x 3 uint8 RGB) for description; False when there is none or the client's
        backlog is full (a server gone for a while). ``descriptors`` (ORB) are not used by NetVLAD."""
        return self.send(key, thumbnail)

    def poll(self) -> list[PlaceAnswer]:
        """The answers since the last poll: descriptors (in time or ``late``) and failures (descriptor None)."""
        return [PlaceAnswer(key, d, why, late=late) for key, d, why, late in self.answers()]

    def convert(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> tuple[np.ndarray | None, str | None]:
        """The answer's descriptor, or why it cannot be used for place recognition."""
        why = untrained(meta, self.client.where, "descriptor", "for place recognition")
        if why is not None:
            return None, why
        d = arrays.get("descriptor")
        if d is None:
            return None, "answer without a descriptor"
        d = np.asarray(d, np.float32).reshape(-1)
        if d.shape[0] != self.dim:
            return None, f"descriptor of {d.shape[0]} values, expected {self.dim}"
        n = float(np.linalg.norm(d))
        if not np.isfinite(n) or n == 0.0:
            return None, "descriptor zero or not finite"
        return d / n, None


# ------------------------------------------------------------------ choosing a describer
class PlaceDescriberFactory:
    """``factory()`` -> a new describer for one consumer; ``name`` and ``reason`` say which and why."""

    def __init__(self, name: str, reason: str, make: Callable[[], PlaceDescriber], dim: int,
                 where: str | None = None, checkpoint: str | None = None):
        self.name, self.reason, self._make, self.dim = name, reason, make, dim
        self.where, self.checkpoint = where, checkpoint

    def __call__(self) -> PlaceDescriber:
        return self._make()

    def describe(self) -> dict[str, Any]:
        """For ``summary.json``: describer, why, where it runs, the checkpoint, descriptor length."""
        return {"describer": self.name, "reason": self.reason, "inference": self.where,
                "checkpoint": self.checkpoint, "dim": self.dim}


def _orb_vlad(reason: str, warn: bool = False) -> PlaceDescriberFactory:
    centres, _ = load_vocabulary()
    (log.warning if warn else log.info)("place recognition: ORB-VLAD (%s)", reason)
    return PlaceDescriberFactory("orb-vlad", reason, lambda: OrbVladDescriber(centres), int(centres.size))


def make_place_describer(settings: PlaceSettings | None = None) -> PlaceDescriberFactory:
    """The place describer factory ``settings`` call for (``Callable[[], PlaceDescriber]``), logged with why.

    * ``orb-vlad``: ORB-VLAD.
    * ``infer`` in-process: NetVLAD from ``checkpoint``, loaded now; without one ``netvlad`` takes
      ``nets/checkpoints/netvlad.pt`` (an error when there is none) and ``auto`` gives ORB-VLAD.
    * ``infer`` an endpoint: NetVLAD from that ``slam-infer`` (``auto``: only when ``server_serves_netvlad``).
      If no usable descriptor comes back within ``probe_s`` (server absent, no or untrained
      NetVLAD there) the run goes on with ORB-VLAD and says why.

    Raises :class:`~slam.errors.DataError` (naming the file) for a checkpoint that cannot serve: another
    model or architecture, weights that do not fit, no sidecar.
    """
    s = settings or PlaceSettings()
    if s.place not in PLACES:
        raise DataError(None, f"place recognition {s.place!r}: must be one of {', '.join(PLACES)}")
    if s.place == "orb-vlad":
        return _orb_vlad("asked for")
    if s.infer != IN_PROCESS:
        if s.place == "auto" and not s.server_serves_netvlad:
            known = "is not configured with" if s.server_serves_netvlad is False else "is not known to serve"
            return _orb_vlad(f"the inference server at {s.infer} {known} a trained NetVLAD; place netvlad asks it")
        return _netvlad_at(s)
    ckpt = s.checkpoint
    if ckpt is None and s.place == "netvlad" and DEFAULT_CHECKPOINT.is_file():
        ckpt = str(DEFAULT_CHECKPOINT)
    if ckpt is None:
        if s.place == "netvlad":
            raise DataError(None, "place recognition netvlad needs a NetVLAD checkpoint (--place-checkpoint CKPT; "
                                  f"there is none at {DEFAULT_CHECKPOINT}) or a server (--infer ENDPOINT); "
                                  "an untrained NetVLAD is not used")
        return _orb_vlad("no NetVLAD checkpoint")
    return _netvlad_in_process(s, ckpt)


def _netvlad_in_process(s: PlaceSettings, checkpoint: str) -> PlaceDescriberFactory:
    from slam.inference.local import serve_checkpoint

    if not Path(checkpoint).is_file():
        raise DataError(checkpoint, "no such NetVLAD checkpoint")
    local, model = serve_checkpoint(checkpoint, TASK, "a place descriptor", s.device)
    input_wh = getattr(model, "input_size", None)

    def client() -> InferenceClient:
        return InferenceClient.in_process(local, name="netvlad", heartbeat_s=s.heartbeat_s)

    dim, why = _probe(client(), input_wh, s)
    if why is not None:  # the model loaded but cannot describe a thumbnail: a broken checkpoint
        raise DataError(checkpoint, f"NetVLAD cannot describe a thumbnail: {why}")
    reason = f"checkpoint {checkpoint}, in-process"
    log.info("place recognition: NetVLAD (%s; %d-D descriptors, input %s)", reason, dim, input_wh)
    return PlaceDescriberFactory("netvlad", reason, lambda: NetVladDescriber(client(), dim, input_wh, s.deadline_s),
                                 dim, IN_PROCESS, checkpoint)


def _netvlad_at(s: PlaceSettings) -> PlaceDescriberFactory:
    from slam.bus.endpoints import EndpointError, check_connect

    try:
        check_connect(s.infer)
    except EndpointError as e:
        raise DataError(None, f"inference endpoint: {e} (or in-process)") from None
    input_wh = sidecar_input_size(s.checkpoint) if s.checkpoint else None

    def client() -> InferenceClient:
        return InferenceClient.connect(s.infer, name="netvlad", curve=s.curve, heartbeat_s=s.heartbeat_s)

    dim, why = _probe(client(), input_wh, s)
    if why is not None:
        return _orb_vlad(f"no NetVLAD from the inference server at {s.infer}: {why}", warn=True)
    reason = f"inference server at {s.infer}"
    log.info("place recognition: NetVLAD (%s; %d-D descriptors)", reason, dim)
    return PlaceDescriberFactory("netvlad", reason, lambda: NetVladDescriber(client(), dim, input_wh, s.deadline_s),
                                 dim, s.infer, s.checkpoint)


def _probe(client: InferenceClient, input_wh: tuple[int, int] | None, s: PlaceSettings) -> tuple[int, str | None]:
    """Describe one grey thumbnail through ``client`` (closed after): (descriptor length, None), or (0, why not).

    Blocks up to ``s.probe_s``: at start-up only, before any frame is tracked.
    """
    probe = NetVladDescriber(client, dim=0, input_wh=input_wh, deadline_s=s.probe_s)
    grey = np.full((THUMBNAIL_WH[1], THUMBNAIL_WH[0], 3), 128, np.uint8)
    end = time.monotonic() + s.probe_s
    why = f"no answer within {s.probe_s:g} s"
    try:
        sent = False
        while time.monotonic() < end:
            for r in client.poll():  # the raw answers: the length is what is being learnt
                if r.timed_out:
                    continue
                if r.error is not None:
                    return 0, r.error
                d = r.reply.arrays.get("descriptor")
                probe.dim = 0 if d is None else int(np.asarray(d).size)
                _, why = probe.convert(r.reply.meta, r.reply.arrays)
                return (probe.dim, None) if why is None else (0, why)
            if not sent and client.rpc.server_info is not None:  # the server has answered a heartbeat
                sent = probe.submit("probe", grey, np.zeros((0, 32), np.uint8))
            time.sleep(0.01)
        return 0, why
    finally:
        probe.close()
