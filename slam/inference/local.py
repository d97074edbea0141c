"""In-process inference: ``nets.server``'s service behind an ``RpcServer`` on ``inproc://``, in a thread.

The SLAM process then asks its models exactly as it asks ``slam-infer``
(:class:`~slam.inference.client.InferenceClient` over an ``RpcClient``): the
same request and answer messages, batching, error answers and deadlines;
only the transport differs. This module is the one place the SLAM process
imports ``nets`` (and with it torch), and only when a learned model is
configured.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any

from slam.errors import DataError

log = logging.getLogger(__name__)

_ids = itertools.count(1)


def checkpoint_config(checkpoint: str | Path) -> dict[str, Any]:
    """A ``slam-infer`` models config serving the checkpoint at ``checkpoint`` with the architecture its
    sidecar records (``NAME.json`` beside ``NAME.pt``: model, architecture). A missing or unreadable sidecar is left for
    the loader to report (it names the file)."""
    path = Path(checkpoint)
    entry: dict[str, Any] = {"model": "netvlad", "checkpoint": str(path)}
    try:
        from nets.base import sidecar_path

        sidecar = json.loads(sidecar_path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return {"models": [entry]}
    if isinstance(sidecar, dict):
        if isinstance(sidecar.get("model"), str):
            entry["model"] = sidecar["model"]
        arch = sidecar.get("architecture")
        if isinstance(arch, dict):
            entry["conf"] = {k: v for k, v in arch.items() if k not in ("model", "version")}
    return {"models": [entry]}


class LocalInferenceServer:
    """The models of ``config`` (a ``slam-infer`` models config: ``{"models": [{model, checkpoint, conf}]}``)
    answering on an ``inproc://`` endpoint while at least one client holds it (:meth:`acquire`).

    ``cpu_threads``: the most CPU threads torch may use in this process (None: torch's default, every core).
    The models load here, at once: a bad config or a checkpoint made for another architecture is a
    :class:`~slam.errors.DataError` naming the file before the run starts. The serving thread starts with the
    first :meth:`acquire` and stops after the last :meth:`release`.
    """

    def __init__(self, config: dict[str, Any], device: str = "cpu", source: str = "in-process models",
                 max_batch: int = 8, cpu_threads: int | None = 1):
        import torch

        from nets.base import ModelError, resolve_device
        from nets.server import ConfigError, InferenceService, load_models

        try:
            self.device = resolve_device(device)
            if self.device == "cpu" and cpu_threads is not None and torch.get_num_threads() > cpu_threads:
                # torch's pool would take every core; tracking and local mapping need theirs (process-wide)
                torch.set_num_threads(cpu_threads)
            self.service = InferenceService(load_models(config, self.device, source))
        except (ConfigError, ModelError) as e:
            raise DataError(None, str(e)) from None
        self.models = self.service.models  # task -> nets.base.BaseModel
        self.max_batch = max_batch
        self.endpoint = ""  # while serving: inproc://slam-infer-PID-N (a new N each start: libzmq frees a name late)
        self._lock = threading.Lock()
        self._users = 0
        self._server = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        log.info("in-process inference (%s): %s", self.device,
                 ", ".join(self.service.model_names()) or "no models")

    def acquire(self) -> str:
        """Start serving (if not yet) for one more client; the endpoint to connect to."""
        from slam.bus.rpc import RpcServer

        with self._lock:
            if self._thread is None:
                self.endpoint = f"inproc://slam-infer-{os.getpid()}-{next(_ids)}"
                # bound here, before any client connects; from now on only the serving thread uses the socket
                self._server = RpcServer(None, self.endpoint, name="in-process", version="0",
                                         models=self.service.model_names())
                self._stop.clear()
                self._thread = threading.Thread(target=self._serve, args=(self._server,),
                                                name="inference-in-process", daemon=True)
                self._thread.start()
            self._users += 1
            return self.endpoint

    def release(self) -> None:
        """One client less; the last one stops the serving thread (the models stay loaded)."""
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users or self._thread is None:
                return
            self._stop.set()
            self._thread.join()
            self._thread = None
            self._server.close()
            self._server = None

    @property
    def serving(self) -> bool:
        return self._thread is not None

    def _serve(self, server) -> None:
        while not self._stop.is_set():
            server.serve_batch(self.service.handle_batch, max_batch=self.max_batch, timeout_ms=50)


def serve_checkpoint(checkpoint: str | Path, task: str, what: str, device: str = "cpu"):
    """An in-process server of ``checkpoint`` and its model for ``task``: ``(server, model)``.

    A checkpoint whose model answers another task is a :class:`DataError` naming the file (``what`` says
    what the caller wanted, e.g. "a place descriptor").
    """
    local = LocalInferenceServer(checkpoint_config(checkpoint), device, source=str(checkpoint))
    model = local.models.get(task)
    if model is None:
        tasks = ", ".join(f"{m.name} ({t})" for t, m in local.models.items())
        raise DataError(checkpoint, f"a checkpoint of {tasks}, not of {what} (task {task!r})")
    return local, model
