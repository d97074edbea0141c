"""Endpoint strings and the loopback-unless-CURVE binding rule."""

from __future__ import annotations

import stat

import pytest

from slam.bus import Publisher
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
