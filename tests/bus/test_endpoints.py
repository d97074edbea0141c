"""Endpoint strings and the loopback-unless-CURVE binding rule."""

from __future__ import annotations

import os
import socket
import stat

import pytest

from slam.bus import Publisher, RpcServer
from slam.bus.endpoints import (
    EndpointError,
    InsecureBindError,
    check_bind,
    check_connect,
    parse_endpoint,
)


def test_parse():
    assert parse_endpoint("tcp://127.0.0.1:5555") == parse_endpoint("tcp://127.0.0.1:5555")
    ep = parse_endpoint("tcp://[::1]:7000")
    assert (ep.transport, ep.host, ep.port, ep.is_loopback) == ("tcp", "[::1]", "7000", True)
    assert parse_endpoint("ipc:///tmp/x/y.sock").path == "/tmp/x/y.sock"
    assert parse_endpoint("inproc://frames").is_loopback
    for bad in ["", "frames", "udp://1.2.3.4:5", "tcp://host", "tcp://host:0", "tcp://host:99999", "tcp://:5", "inproc://",
                "ipc:///" + "x" * 200]:
        with pytest.raises(EndpointError):
            parse_endpoint(bad)
    with pytest.raises(EndpointError):
        check_connect("tcp://127.0.0.1:*")


@pytest.mark.parametrize("host", ["*", "0.0.0.0", "192.168.1.20", "eth0", "[::]", "robot.local"])
def test_tcp_bind_off_loopback_needs_curve(host):
    with pytest.raises(InsecureBindError, match="CURVE"):
        check_bind(f"tcp://{host}:5555", curve=False)
    assert check_bind(f"tcp://{host}:5555", curve=True).host == host


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "[::1]", "lo"])
def test_tcp_bind_on_loopback_is_fine(host):
    check_bind(f"tcp://{host}:5555", curve=False)


def test_publisher_refuses_an_open_tcp_bind(ctx):
    with pytest.raises(InsecureBindError):
        Publisher(ctx, "tcp://0.0.0.0:*")


def test_ipc_bind_creates_a_private_folder(ipc_dir, ctx):
    url = f"ipc://{ipc_dir}/a/b/s.sock"
    with Publisher(ctx, url) as pub:
        assert pub.endpoint == url
        assert (ipc_dir / "a" / "b" / "s.sock").exists()
        assert stat.S_IMODE((ipc_dir / "a" / "b").stat().st_mode) & 0o077 == 0


def test_bind_conflict_is_a_clear_error(ctx):
    with Publisher(ctx, "inproc://dup"), pytest.raises(EndpointError, match="cannot bind"):
        Publisher(ctx, "inproc://dup")


def test_second_ipc_server_on_a_path_in_use_is_refused(ipc_dir, ctx):
    """libzmq would replace the socket file and take the first server's new connections without a word."""
    url = f"ipc://{ipc_dir}/infer"
    first = RpcServer(ctx, url)
    try:
        with pytest.raises(EndpointError, match="another process serves it"):
            RpcServer(None, url)  # another context, as another process would be
    finally:
        first.close()
    RpcServer(ctx, url).close()  # free again once the first has closed


def test_a_foreign_listener_on_the_path_is_refused_and_a_stale_file_replaced(ipc_dir, ctx):
    path = ipc_dir / "infer"
    other = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # a server that takes no lock
    other.bind(str(path))
    other.listen()
    try:
        with pytest.raises(EndpointError, match="another process is listening"):
            Publisher(ctx, f"ipc://{path}")
    finally:
        other.close()  # the file stays: what a killed server leaves
    assert path.exists()
    with Publisher(ctx, f"ipc://{path}") as pub:
        assert pub.endpoint == f"ipc://{path}"


def test_ipc_folder_writable_by_others_is_refused(ipc_dir, ctx):
    shared = ipc_dir / "shared"
    shared.mkdir()
    shared.chmod(0o777)
    with pytest.raises(EndpointError, match="writable by others"):
        Publisher(ctx, f"ipc://{shared}/frames")
    shared.chmod(0o700)
    Publisher(ctx, f"ipc://{shared}/frames").close()


def test_ipc_folder_of_another_user_is_refused(ipc_dir, ctx, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: os.stat(ipc_dir).st_uid + 1)  # as if another user ran us
    with pytest.raises(EndpointError, match="belongs to uid"):
        Publisher(ctx, f"ipc://{ipc_dir}/frames")
