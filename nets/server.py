"""``slam-infer``: the inference server. Loads the models its config names and answers requests over the bus.

    slam-infer --bind ipc:///tmp/slam/infer [--device auto|cpu|cuda] [--config models.yaml]
    slam-infer --bind tcp://0.0.0.0:5555 --curve-secret gpu.key_secret --curve-clients allowed/   # another host

The config::

    max_batch: 8          # requests of one task answered in one forward pass
    max_message_mb: 64    # a request larger than this (all parts together) is rejected
    models:
      - model: depth_cnn                    # a registered name (nets/models/), or package.module:Class
        checkpoint: nets/checkpoints/depth_cnn.pt   # local file + .json sidecar; none: untrained, said so
        conf: {}                            # the model's settings over its default_conf

Requests are bus messages whose ``type`` is a task (``depth``, ``descriptor``,
``pose``, ``pose_clip``, ``odometry``); the answer has the same type, the model's name,
version and checkpoint in ``meta["model"]`` and the server's name and version
in ``meta["server"]``. A ``heartbeat`` request is answered with the server's
name, version and models. Requests that arrive together are batched per task.
A failing request gets an error answer; the server keeps serving. SIGTERM or
SIGINT stops it.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import yaml

from nets.base import BaseModel, ModelError, resolve_device
from nets.registry import create
from slam.bus.codec import DEFAULT_MAX_MESSAGE_BYTES, Message
from slam.bus.keys import KeyFileError, curve_server
from slam.bus.rpc import RpcServer
from slam.nodes.lifeline import watch_parent

log = logging.getLogger("nets.server")

try:
    VERSION = version("learned-slam")
except PackageNotFoundError:  # running from a source tree that is not installed
    VERSION = "0+unknown"


class ConfigError(ValueError):
    """A server config that cannot be used; the message names the file."""


def load_models(config: dict[str, Any], device: str, source: str = "config") -> dict[str, BaseModel]:
    """The models of ``config`` by task, weights loaded; a model without a checkpoint says it is untrained."""
    models: dict[str, BaseModel] = {}
    entries = config.get("models") or []
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: models must be a list of {{model, checkpoint, conf}}")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or "model" not in entry or set(entry) - {"model", "checkpoint", "conf"}:
            raise ConfigError(f"{source}: models[{i}] must have model and may have checkpoint, conf; got {entry!r}")
        try:
            model = create(str(entry["model"]), entry.get("conf") or {}, device)
            if entry.get("checkpoint"):
                model.load_weights(entry["checkpoint"])
            else:
                log.warning("model %s: no checkpoint configured: answering with untrained weights", model.name)
        except ModelError as e:
            raise ConfigError(f"{source}: models[{i}]: {e}") from None
        if model.task in models:
            raise ConfigError(f"{source}: two models answer {model.task!r}: {models[model.task].name} and {model.name}")
        models[model.task] = model
    return models


class InferenceService:
    """Answers batches of requests with the loaded models (the handler of :meth:`RpcServer.serve_batch`)."""

    def __init__(self, models: dict[str, BaseModel]):
        self.models = models
        self.answered = 0

    def model_names(self) -> list[str]:
        return [f"{m.name}@{m.version} ({task})" for task, m in sorted(self.models.items())]

    def handle_batch(self, requests: list[Message]) -> list[Message | Exception]:
        out: list[Message | Exception | None] = [None] * len(requests)
        by_task: dict[str, list[int]] = {}
        for i, r in enumerate(requests):
            if r.type not in self.models:
                have = ", ".join(sorted(self.models)) or "none"
                out[i] = ModelError(f"no model answers {r.type!r} here (tasks: {have})")
                continue
            try:
                self.models[r.type].check_inputs(r.arrays)
            except ModelError as e:
                out[i] = e
                continue
            by_task.setdefault(r.type, []).append(i)
        for task, idx in by_task.items():
            model = self.models[task]
            t0 = time.perf_counter()
            try:
                answers = model.infer([dict(requests[i].arrays) for i in idx])
                if len(answers) != len(idx):
                    raise ModelError(f"model {model.name} answered {len(answers)} of {len(idx)} requests")
            except Exception as e:  # noqa: BLE001 - one bad batch must not stop the server
                for i in idx:
                    out[i] = e
                continue
            ms = (time.perf_counter() - t0) * 1e3
            for i, arrays in zip(idx, answers):
                r = requests[i]
                meta = {"model": model.describe(), "batch": len(idx), "infer_ms": round(ms, 3)}
                out[i] = Message(r.topic, task, r.seq, r.stamp, meta, arrays)
                self.answered += 1
        return out  # type: ignore[return-value]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="slam-infer", description=__doc__.splitlines()[0])
    p.add_argument("--bind", required=True, help="endpoint, e.g. ipc:///tmp/slam/infer or tcp://127.0.0.1:5555")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--config", type=Path, help="YAML naming the models to load (default: none, heartbeats only)")
    p.add_argument("--name", default="slam-infer", help="server name in every reply")
    p.add_argument("--curve-secret", type=Path, help="this server's secret key (slam-keys); required off loopback")
    p.add_argument("--curve-clients", type=Path, help="folder of the public keys allowed to connect")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=getattr(logging, str(args.log_level).upper(), logging.INFO),
                        format="%(levelname)s [inference] %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    watch_parent()  # under a supervisor (slam-run --launch): stop when it is gone
    try:
        device = resolve_device(args.device)
        config: dict[str, Any] = {}
        if args.config is not None:
            try:
                config = yaml.safe_load(args.config.read_text()) or {}
            except (OSError, yaml.YAMLError) as e:
                raise ConfigError(f"{args.config}: cannot read: {e}") from None
            if not isinstance(config, dict) or set(config) - {"models", "max_batch", "max_message_mb"}:
                raise ConfigError(f"{args.config}: expected a mapping with models, max_batch, max_message_mb")
        models = load_models(config, device, str(args.config or "config"))
        curve = None
        if args.curve_secret or args.curve_clients:
            if not (args.curve_secret and args.curve_clients):
                raise ConfigError("--curve-secret and --curve-clients go together")
            curve = curve_server(args.curve_secret, args.curve_clients)
        service = InferenceService(models)
        max_mb = config.get("max_message_mb", DEFAULT_MAX_MESSAGE_BYTES / 2**20)
        if isinstance(max_mb, bool) or not isinstance(max_mb, (int, float)) or not 0 < max_mb <= 2048:
            raise ConfigError(f"{args.config}: max_message_mb must be a number of MB in (0, 2048], not {max_mb!r}")
        server = RpcServer(None, args.bind, name=args.name, version=VERSION, models=service.model_names(),
                           curve=curve, max_bytes=int(max_mb * 2**20))
    except (ConfigError, ModelError, KeyFileError, ValueError) as e:
        print(f"slam-infer: error: {e}", file=sys.stderr)
        return 2
    max_batch = int(config.get("max_batch", 8))
    log.info("serving on %s, device %s, models: %s", server.endpoint, device,
             ", ".join(service.model_names()) or "none (answering heartbeats only)")
    try:
        while not stop.is_set():
            server.serve_batch(service.handle_batch, max_batch=max_batch, timeout_ms=100)
    finally:
        server.close()
        st = server.stats
        log.info("stopped after %d answers; rejected %d messages %s", service.answered, st.rejected, st.reasons or "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
