"""Opening bus sockets: endpoint checks, CURVE keys and authentication, the options every socket gets."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import socket
import threading
import time
from collections.abc import Sequence

import zmq
from zmq.auth.thread import ThreadAuthenticator

from slam.bus.codec import BusMessageError
from slam.bus.endpoints import Endpoint, EndpointError, check_bind, check_connect
from slam.bus.keys import CurveClient, CurveServer

log = logging.getLogger(__name__)

RECONNECT_IVL_MS = 100  # a restarted peer on the same endpoint is found again within ~0.1 s

Curve = CurveServer | CurveClient | None

# One ZAP authenticator thread per context (ZeroMQ allows one), shared by that context's CURVE
# servers; each allowed-clients folder is its own ZAP domain.
_auth_lock = threading.Lock()
_auths: dict[int, tuple[ThreadAuthenticator, int]] = {}


def _acquire_auth(ctx: zmq.Context, server: CurveServer) -> str:
    """Start (or share) the context's authenticator; the ZAP domain of ``server``'s client folder."""
    path = str(server.clients_dir.resolve())
    domain = "slam-" + hashlib.sha1(path.encode()).hexdigest()[:16]
    with _auth_lock:
        auth, users = _auths.get(id(ctx), (None, 0))
        if auth is None:
            auth = ThreadAuthenticator(ctx, log=log.getChild("zap"))
            auth.start()
        auth.configure_curve(domain=domain, location=path)  # (re)reads the folder's *.key files
        _auths[id(ctx)] = (auth, users + 1)
    return domain


def _release_auth(ctx: zmq.Context) -> None:
    with _auth_lock:
        auth, users = _auths.pop(id(ctx), (None, 0))
        if auth is None:
            return
        if users > 1:
            _auths[id(ctx)] = (auth, users - 1)
        else:
            auth.stop()


def claim_ipc_path(url: str, path: str) -> int:
    """Hold ``path + ".lock"`` (flock) for the socket file ``path``; the lock's file descriptor.

    libzmq binding an ipc path that another process serves replaces the socket file without a
    word and takes its new connections. Refused here: the lock is held (a live server of this
    version), or a plain connect to the socket file succeeds (any other live server). A socket
    file nobody answers on is a stale one (a killed run) and is replaced.
    """
    lock = path + ".lock"
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as e:
        raise EndpointError(f"cannot bind {url}: cannot open {lock}: {e.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        os.close(fd)
        if e.errno in (errno.EWOULDBLOCK, errno.EACCES):
            raise EndpointError(f"cannot bind {url}: another process serves it (it holds {lock}); "
                                "stop it or choose another path") from None
        raise EndpointError(f"cannot bind {url}: cannot lock {lock}: {e.strerror}") from None
    # a listener without the lock: a server that does not take it, or one of ours closing (libzmq closes
    # sockets in its I/O thread, a moment after close()): give the latter a second to go
    end = time.monotonic() + 1.0
    while _listening(path):
        if time.monotonic() > end:
            os.close(fd)
            raise EndpointError(f"cannot bind {url}: another process is listening on {path}; "
                                "stop it or choose another path")
        time.sleep(0.05)
    return fd


def _listening(path: str) -> bool:
    """Someone accepts connections on the Unix socket file ``path``."""
    if not os.path.exists(path):
        return False
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(0.5)
    try:
        probe.connect(path)
    except OSError:
        return False  # refused or not a socket: nobody serves it (a stale file libzmq replaces)
    finally:
        probe.close()
    return True


class BusSocket:
    """A zmq socket bound or connected to endpoints, with linger 0, fast reconnects and optional CURVE.

    ``curve``: ``CurveServer`` keys make this socket the CURVE server (clients must present a key
    from the allowed folder), ``CurveClient`` keys make it a client of such a server. Binding a
    tcp endpoint off loopback requires ``CurveServer`` keys. ``max_bytes`` caps each incoming
    frame at the transport on a bound socket (a peer sending more is disconnected before the
    memory is spent; it reconnects by itself).
    """

    def __init__(
        self,
        ctx: zmq.Context | None,
        kind: int,
        endpoints: str | Sequence[str],
        *,
        bind: bool,
        curve: Curve = None,
        sndhwm: int | None = None,
        rcvhwm: int | None = None,
        max_bytes: int | None = None,
        options: dict[int, int] | None = None,
    ):
        self.ctx = ctx if ctx is not None else zmq.Context.instance()
        urls = [endpoints] if isinstance(endpoints, str) else list(endpoints)
        if not urls:
            raise EndpointError("no endpoint given")
        checked: list[Endpoint] = [check_bind(u, isinstance(curve, CurveServer)) if bind else check_connect(u) for u in urls]
        if isinstance(curve, (CurveServer, CurveClient)) and not zmq.has("curve"):
            raise RuntimeError("CURVE keys given but this libzmq has no CURVE support")
        self.curve = curve
        self.sock = self.ctx.socket(kind)
        self._auth = False
        self._locks: list[int] = []  # ipc path locks held while bound
        self.endpoints: list[str] = []
        try:
            self.sock.setsockopt(zmq.LINGER, 0)
            self.sock.setsockopt(zmq.RECONNECT_IVL, RECONNECT_IVL_MS)
            if sndhwm is not None:
                self.sock.setsockopt(zmq.SNDHWM, sndhwm)
            if rcvhwm is not None:
                self.sock.setsockopt(zmq.RCVHWM, rcvhwm)
            if max_bytes is not None and bind:
                # only where strangers connect to us: libzmq drops the connection of a peer that exceeds it
                # and, on the connecting side, never reconnects (a protocol error), which would end a stream
                self.sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
            for opt, value in (options or {}).items():
                self.sock.setsockopt(opt, value)
            if isinstance(curve, CurveServer):
                self.sock.zap_domain = _acquire_auth(self.ctx, curve).encode()
                self._auth = True
                self.sock.curve_secretkey = curve.keys.secret
                self.sock.curve_publickey = curve.keys.public
                self.sock.curve_server = True
            elif isinstance(curve, CurveClient):
                self.sock.curve_secretkey = curve.keys.secret
                self.sock.curve_publickey = curve.keys.public
                self.sock.curve_serverkey = curve.server_key
            for ep in checked:
                if bind:
                    if ep.transport == "ipc" and not ep.path.startswith("@") and ep.path != "*":
                        self._locks.append(claim_ipc_path(ep.url, ep.path))
                    self.sock.bind(ep.url)
                    self.endpoints.append(self.sock.getsockopt_string(zmq.LAST_ENDPOINT))
                else:
                    if not ep.is_loopback and curve is None:
                        log.warning("connecting to %s without CURVE keys: traffic is readable on the network", ep.url)
                    self.sock.connect(ep.url)
                    self.endpoints.append(ep.url)
        except zmq.ZMQError as e:
            self.close()
            raise EndpointError(f"cannot {'bind' if bind else 'connect'} {urls}: {e}") from None
        except BaseException:
            self.close()
            raise

    def recv_message(self, max_bytes: int, max_frames: int) -> list[zmq.Frame]:
        """The frames of the next message (one is waiting), received part by part (``copy=False``).

        Raises ``BusMessageError`` (``oversized``, ``too_many_frames``) as soon as the parts so far
        exceed ``max_bytes`` together or number more than ``max_frames``, after receiving and
        dropping the rest of the message one part at a time, so that the message's memory is
        freed while it is read and never held as a list (``ZMQ_MAXMSGSIZE`` only bounds one part).
        libzmq itself delivers a multipart message only once all of it has arrived: it holds the
        whole message before the first part can be read; only authenticated peers (an ipc
        folder of this user, CURVE keys) can make it do so.
        """
        sock = self.sock
        frames: list[zmq.Frame] = []
        total = 0
        while True:
            frame = sock.recv(zmq.NOBLOCK, copy=False)
            total += len(frame)
            frames.append(frame)
            if not frame.more:
                return frames
            if total > max_bytes or len(frames) >= max_frames:
                break  # the message goes on past a limit
        n, more = len(frames), True
        frames.clear()  # before draining: these parts are freed now
        while more:  # parts of one message arrive together: the rest is there, no wait
            frame = sock.recv(zmq.NOBLOCK, copy=False)
            total += len(frame)
            n += 1
            more = frame.more
            del frame
        if total > max_bytes:
            raise BusMessageError("oversized", f"{total} bytes in {n} parts > {max_bytes}")
        raise BusMessageError("too_many_frames", f"{n} parts > {max_frames}")

    @property
    def endpoint(self) -> str:
        """The first endpoint, as bound (a ``tcp://...:*`` port resolved)."""
        return self.endpoints[0] if self.endpoints else ""

    def close(self) -> None:
        if not self.sock.closed:
            self.sock.close(linger=0)
        while self._locks:  # after the socket: the next server finds the path free
            os.close(self._locks.pop())
        if self._auth:
            self._auth = False
            _release_auth(self.ctx)
