"""What the processes of a launch file share: logging, CURVE keys for their endpoints."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from slam.bus.endpoints import parse_endpoint
from slam.bus.keys import (
    CurveClient,
    CurveServer,
    KeyFileError,
    curve_client,
    curve_server,
)
from slam.errors import DataError
from slam.nodes.launch import LaunchSpec


def setup_logging(level: str, node: str) -> None:
    """Log lines carry the process name, since several processes share one terminal."""
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO),
                        format=f"%(levelname)s [{node}] %(name)s: %(message)s")


def _path(p: str) -> Path:
    return Path(os.path.expanduser(p))


def _off_loopback(spec: LaunchSpec, endpoint: str) -> str | None:
    """The endpoint's address when it is tcp reachable from other machines, else None."""
    url = spec.endpoints.get(endpoint, "")
    return None if not url or parse_endpoint(url.replace("{run}", "/tmp")).is_loopback else url


def is_off_loopback(spec: LaunchSpec, endpoint: str) -> bool:
    """Whether ``endpoint`` is tcp reachable from other machines (bound with CURVE keys)."""
    return _off_loopback(spec, endpoint) is not None


def _load(spec: LaunchSpec, load, other_key: str, what: str):
    """``load(curve.secret, curve.<other_key>)``, with errors naming the launch file."""
    secret, other = spec.curve.secret, getattr(spec.curve, other_key)
    if not (secret and other):
        raise DataError(spec.path, f"{what}: curve.secret and curve.{other_key} are required (keys from slam-keys)")
    try:
        return load(_path(secret), _path(other))
    except KeyFileError as e:
        raise DataError(spec.path, str(e)) from None


def bus_curve_server(spec: LaunchSpec, endpoint: str) -> CurveServer | None:
    """CURVE server keys for binding ``endpoint`` when it is tcp off loopback (None otherwise)."""
    url = _off_loopback(spec, endpoint)
    if url is None:
        return None
    return _load(spec, curve_server, "clients", f"endpoint {endpoint} ({url}) is reachable from other machines")


def inference_curve_client(spec: LaunchSpec) -> CurveClient | None:
    """CURVE client keys for a tcp inference endpoint off loopback (None otherwise)."""
    url = _off_loopback(spec, "inference")
    if url is None:
        return None
    return _load(spec, curve_client, "server_public", f"inference endpoint {url} is on another machine")
