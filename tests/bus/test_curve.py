"""CURVE: key files, and strangers refused both ways (reading a stream, injecting into one, calling a server)."""

from __future__ import annotations

import stat
import time

import pytest
import zmq

from slam.bus import Message, Publisher, RpcClient, RpcServer, Subscriber
from slam.bus.keys import (
    curve_client,
    curve_server,
    generate_keypair,
    load_keypair,
    load_public_key,
    main,
)
from tests.bus.conftest import deliver

pytestmark = pytest.mark.skipif(not zmq.has("curve"), reason="libzmq without CURVE")


@pytest.fixture
def keys(tmp_path):
    """Server keys with one allowed client ("robot"); a "stranger" key pair that is not allowed."""
    allowed = tmp_path / "clients"
    allowed.mkdir()
    generate_keypair(tmp_path, "server")
    generate_keypair(tmp_path, "stranger")
    generate_keypair(allowed, "robot")
    server = curve_server(tmp_path / "server.key_secret", allowed)
    robot = curve_client(allowed / "robot.key_secret", tmp_path / "server.key")
    stranger = curve_client(tmp_path / "stranger.key_secret", tmp_path / "server.key")
    return server, robot, stranger


def test_key_files(tmp_path, capsys):
    assert main([str(tmp_path / "k"), "--name", "laptop"]) == 0
    assert "laptop.key_secret" in capsys.readouterr().out
    public, secret = tmp_path / "k" / "laptop.key", tmp_path / "k" / "laptop.key_secret"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    pair = load_keypair(secret)
    assert pair.public == load_public_key(public) and len(pair.secret) == 40
    assert "secret=..." in repr(pair) and pair.secret.decode() not in repr(pair)
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == ["laptop.key", "laptop.key_secret"]
    with pytest.raises(FileExistsError):
        generate_keypair(tmp_path / "k", "laptop")
    generate_keypair(tmp_path / "k", "laptop", force=True)
    assert load_keypair(secret).public != pair.public
    with pytest.raises(ValueError, match="no secret key"):
        load_keypair(public)


def test_subscribers_without_an_allowed_key_read_nothing(ctx, keys):
    server, robot, stranger = keys
    with (
        Publisher(ctx, "tcp://127.0.0.1:*", curve=server) as pub,
        Subscriber(ctx, pub.endpoint, curve=robot) as good,
        Subscriber(ctx, pub.endpoint, curve=stranger) as bad,
        Subscriber(ctx, pub.endpoint) as plain,
    ):
        deliver(pub, good, Message("frames", "frame", meta={"secret": "camera"}))
        for _ in range(20):
            pub.publish(Message("frames", "frame"))
            time.sleep(0.005)
        assert good.recv(500) is not None
        assert bad.recv(100) is None and plain.recv(0) is None
        assert bad.stats.received == 0 and plain.stats.received == 0


def test_a_stranger_cannot_inject_into_a_curve_subscriber(ctx, keys):
    server, robot, stranger = keys
    with (
        Subscriber(ctx, "tcp://127.0.0.1:*", bind=True, curve=server) as sub,
        Publisher(ctx, sub.endpoint, bind=False, curve=stranger) as intruder,
        Publisher(ctx, sub.endpoint, bind=False) as plain,
        Publisher(ctx, sub.endpoint, bind=False, curve=robot) as robot_pub,
    ):
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            intruder.publish(Message("frames", "frame", meta={"from": "stranger"}))
            plain.publish(Message("frames", "frame", meta={"from": "plain"}))
            time.sleep(0.01)
        got = deliver(robot_pub, sub, Message("frames", "frame", meta={"from": "robot"}))
        senders = {got.meta["from"]}
        while (msg := sub.recv(50)) is not None:
            senders.add(msg.meta["from"])
        assert senders == {"robot"}
        assert sub.stats.rejected == 0  # refused in the handshake: nothing even reached the decoder


def test_a_curve_rpc_server_refuses_a_stranger(ctx, keys):
    server, robot, stranger = keys
    calls = []

    def handler(req: Message) -> Message:
        calls.append(req.meta["who"])
        return Message(req.topic, "answer")

    with RpcServer(ctx, "tcp://127.0.0.1:*", curve=server) as srv:
        srv.start(handler)
        with RpcClient(ctx, srv.endpoint, curve=stranger) as bad, RpcClient(ctx, srv.endpoint, curve=robot) as good:
            end = time.monotonic() + 3
            answered = False
            while not answered and time.monotonic() < end:
                bad.submit(Message("depth", "depth_request", meta={"who": "stranger"}), 0.05)
                good.submit(Message("depth", "depth_request", meta={"who": "robot"}), 0.05)
                time.sleep(0.01)
                answered = any(r.ok for r in good.poll())
                assert not any(r.reply is not None for r in bad.poll())
            assert answered
        assert set(calls) == {"robot"}

