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
from slam.launch import LaunchSpec


def setup_logging(level: str, node: str) -> None:
    """Log lines carry the process name, since several processes share one terminal."""
    logging.basicConfig(level=getattr(logging, str(level).upper(), logging.INFO),
                        format=f"%(levelname)s [{node}] %(name)s: %(message)s")


def _path(p: str) -> Path:
    return Path(os.path.expanduser(p))


def bus_curve_server(spec: LaunchSpec, endpoint: str) -> CurveServer | None:
    """CURVE server keys for binding ``endpoint`` when it is tcp off loopback (None otherwise)."""
    url = spec.endpoints.get(endpoint, "")
    if parse_endpoint(url.replace("{run}", "/tmp")).is_loopback:
        return None
    if not (spec.curve.secret and spec.curve.clients):
        raise DataError(spec.path, f"endpoint {endpoint} ({url}) is reachable from other machines: "
                                   "curve.secret and curve.clients are required (keys from slam-keys)")
    try:
        return curve_server(_path(spec.curve.secret), _path(spec.curve.clients))
    except KeyFileError as e:
        raise DataError(spec.path, str(e)) from None


def inference_curve_client(spec: LaunchSpec) -> CurveClient | None:
    """CURVE client keys for a tcp inference endpoint off loopback (None otherwise)."""
    url = spec.endpoints.get("inference", "")
    if not url or parse_endpoint(url.replace("{run}", "/tmp")).is_loopback:
        return None
    if not (spec.curve.secret and spec.curve.server_public):
        raise DataError(spec.path, f"inference endpoint {url} is on another machine: curve.secret and "
                                   "curve.server_public are required (keys from slam-keys)")
    try:
        return curve_client(_path(spec.curve.secret), _path(spec.curve.server_public))
    except KeyFileError as e:
        raise DataError(spec.path, str(e)) from None
