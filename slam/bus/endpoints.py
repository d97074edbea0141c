"""Bus endpoints as the launch file writes them, and the rules for binding them.

* ``inproc://NAME``: stages in one process (threads sharing a ``zmq.Context``).
* ``ipc:///path/to/socket``: processes on one machine (a Unix socket file).
* ``tcp://HOST:PORT``: across machines. Binding is allowed on loopback only
  (``127.0.0.1``, ``localhost``, ``[::1]``, ``lo``) unless the socket has CURVE server
  keys: otherwise anybody on the network could inject frames or read the camera.
  ``PORT`` may be ``*`` when binding (the system picks one).
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

TRANSPORTS = ("inproc", "ipc", "tcp")
IPC_PATH_MAX = 107  # sun_path of a Unix socket address, less the terminating NUL
LOOPBACK_NAMES = ("localhost", "lo", "lo0")


class EndpointError(ValueError):
    """An endpoint string that is malformed or may not be used this way."""


class InsecureBindError(EndpointError):
    """Binding a TCP endpoint reachable from other machines without CURVE keys."""


@dataclass(frozen=True)
class Endpoint:
    """A parsed endpoint: ``transport`` and, by transport, ``host``/``port`` (tcp) or ``path`` (ipc, inproc)."""

    url: str
    transport: str
    host: str = ""
    port: str = ""
    path: str = ""

    @property
    def is_loopback(self) -> bool:
        """Reachable from this machine only (inproc and ipc always are)."""
        return self.transport != "tcp" or is_loopback_host(self.host)


def is_loopback_host(host: str) -> bool:
    """True for ``localhost``, the loopback interface and 127.0.0.0/8 or ::1 addresses."""
    h = host.strip("[]").lower()
    if h in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(h).is_loopback
    except ValueError:
        return False  # "*", an interface name like eth0, a host name: assume reachable from outside


def parse_endpoint(url: str) -> Endpoint:
    """Split and check an endpoint string; raises ``EndpointError`` with what is wrong."""
    if not isinstance(url, str) or "://" not in url:
        raise EndpointError(f"endpoint {url!r} is not TRANSPORT://ADDRESS (transports: {', '.join(TRANSPORTS)})")
    transport, address = url.split("://", 1)
    if transport not in TRANSPORTS:
        raise EndpointError(f"endpoint {url!r}: transport {transport!r} not one of {TRANSPORTS}")
    if not address:
        raise EndpointError(f"endpoint {url!r} has no address")
    if transport == "inproc":
        return Endpoint(url, transport, path=address)
    if transport == "ipc":
        if len(address.encode()) > IPC_PATH_MAX:
            raise EndpointError(f"endpoint {url!r}: ipc path longer than {IPC_PATH_MAX} bytes (a Unix socket limit)")
        return Endpoint(url, transport, path=address)
    host, sep, port = address.rpartition(":")
    if not sep or not host or ";" in address:
        raise EndpointError(f"endpoint {url!r}: expected tcp://HOST:PORT")
    if port != "*" and not (port.isdigit() and 0 < int(port) < 65536):
        raise EndpointError(f"endpoint {url!r}: port {port!r} is not 1..65535 or *")
    return Endpoint(url, transport, host=host, port=port)


def check_bind(url: str, curve: bool) -> Endpoint:
    """Check that ``url`` may be bound; for ipc, create the socket file's directory (mode 0700 when new).

    ``curve``: the socket has CURVE server keys. Without them a tcp endpoint must be loopback.
    """
    ep = parse_endpoint(url)
    if ep.transport == "tcp" and not curve and not ep.is_loopback:
        raise InsecureBindError(
            f"refusing to bind {url} without CURVE keys: other machines could inject frames or read the camera. "
            f"Bind tcp://127.0.0.1:{ep.port}, or generate keys with `slam-keys DIR` and give the server its secret "
            "key and a folder of allowed client public keys."
        )
    if ep.transport == "ipc" and not ep.path.startswith("@") and ep.path != "*":
        parent = Path(ep.path).parent
        if not parent.is_dir():
            try:
                os.makedirs(parent, mode=0o700, exist_ok=True)
            except OSError as e:
                raise EndpointError(f"endpoint {url}: cannot create {parent}: {e.strerror}") from None
        check_ipc_folder(url, parent)
    return ep


def check_ipc_folder(url: str, folder: Path) -> None:
    """Refuse a socket folder others could write to: whoever can create or replace the socket file
    there can take the traffic (or the camera) of this endpoint."""
    st = folder.stat()
    if st.st_uid != os.getuid():
        raise EndpointError(f"endpoint {url}: folder {folder} belongs to uid {st.st_uid}, not to this user "
                            f"({os.getuid()}): its owner could replace the socket; use a folder of your own")
    if st.st_mode & 0o022:
        raise EndpointError(f"endpoint {url}: folder {folder} is writable by others (mode {st.st_mode & 0o777:o}): "
                            f"they could replace the socket; use a folder of your own (chmod go-w, or a new one)")


def check_connect(url: str) -> Endpoint:
    """Check that ``url`` is a valid endpoint to connect to."""
    ep = parse_endpoint(url)
    if ep.port == "*":
        raise EndpointError(f"endpoint {url}: cannot connect to port *")
    return ep
