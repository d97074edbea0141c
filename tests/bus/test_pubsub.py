"""Streams over inproc, ipc and tcp; bad messages rejected and counted while the subscriber keeps going."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import zmq

from slam.bus import Message, Publisher, Subscriber, encode
from slam.bus import messages as m
from tests.bus.conftest import deliver, sample_message
from tests.bus.test_codec import MALFORMED
from tests.bus.test_messages import assert_frames_equal, make_frame


def endpoint(transport: str, ipc_dir) -> str:
    return {"inproc": "inproc://frames", "ipc": f"ipc://{ipc_dir}/sub/frames.sock", "tcp": "tcp://127.0.0.1:*"}[transport]


@pytest.mark.parametrize("transport", ["inproc", "ipc", "tcp"])
def test_frames_over_each_transport(ctx, ipc_dir, transport):
    frame = make_frame()
    with Publisher(ctx, endpoint(transport, ipc_dir)) as pub, Subscriber(ctx, pub.endpoint, ["frames"]) as sub:
        got = deliver(pub, sub, m.frame_message(frame))
        assert_frames_equal(frame, m.message_to_frame(got))
        for _ in range(3):
            pub.publish(m.frame_message(frame))
        seqs = [got.seq] + [sub.recv(1000).seq for _ in range(3)]
        assert seqs == list(range(seqs[0], seqs[0] + 4))  # per-topic sequence numbers, in order
        assert sub.stats.rejected == 0 and sub.stats.gaps == 0 and sub.stats.received == 4
        assert pub.stats.sent >= 4 and pub.stats.bytes > 4 * frame.image.nbytes


def test_wait_for_subscribers_then_nothing_is_lost(ctx, ipc_dir):
    url = f"ipc://{ipc_dir}/xpub.sock"
    with Publisher(ctx, url, wait_subscribers=True) as pub:
        t0 = time.monotonic()
        assert not pub.wait_for_subscribers(1, timeout_s=0.1)
        assert 0.09 < time.monotonic() - t0 < 0.5
        with Subscriber(ctx, url, ["frames"]) as sub:
            assert pub.wait_for_subscribers(1, timeout_s=2)
            pub.publish(Message("frames", "frame", meta={"first": True}))  # no retry: the subscription is in place
            assert sub.recv(1000).meta == {"first": True}
            assert pub.subscriptions == 1
    with Publisher(ctx, "inproc://plain") as pub, pytest.raises(RuntimeError):
        pub.wait_for_subscribers(1, 0.1)


def test_topics_filter_exactly(ctx):
    with Publisher(ctx, "inproc://t") as pub, Subscriber(ctx, "inproc://t", ["pose"]) as sub:
        deliver(pub, sub, Message("pose", "pose"))
        for _ in range(3):
            pub.publish(Message("poses", "pose"))  # "pose" is a prefix of "poses": not ours
        pub.publish(Message("pose", "pose", meta={"last": True}))
        assert sub.recv(1000).meta == {"last": True}
        assert sub.recv(50) is None
        assert sub.stats.rejected == 0


def test_malformed_messages_are_rejected_counted_and_survived(ctx, ipc_dir):
    """Each kind of bad message is counted by reason; the next good message still arrives."""
    url = f"ipc://{ipc_dir}/bad.sock"
    raw = ctx.socket(zmq.PUB)
    raw.linger = 0
    raw.bind(url)
    with Subscriber(ctx, url, max_bytes=1_000_000) as sub:
        good = sample_message("t")
        probe = [bytes(f) if not isinstance(f, bytes) else f for f in encode(good)]
        deadline = time.monotonic() + 3
        while sub.recv(10) is None:  # wait for the subscription to reach the raw publisher
            raw.send_multipart(probe)
            assert time.monotonic() < deadline
        while sub.recv(20) is not None:
            pass
        received = sub.stats.received
        bad = dict(MALFORMED)
        bad["oversized"] = [b"t", *encode(Message("t", "x", arrays={"a": np.zeros(600_000, np.uint8), "b": np.zeros(600_000, np.uint8)}))[1:]]
        huge = {"v": 1, "topic": "t", "type": "x", "seq": 0, "stamp": 0.0, "meta": {},
                "arrays": [{"name": "a", "dtype": "|u1", "shape": [0, 10**20]}]}
        bad["bad_shape"] = [b"t", json.dumps(huge).encode(), b""]  # numpy's ValueError escaped recv() before
        bad["too_many_frames"] = [b"t", b"{}", *[b""] * 100]
        for frames in bad.values():
            raw.send_multipart(frames)
            raw.send_multipart(probe)
            msg = sub.recv(1000)  # the bad one is skipped, the good one comes
            assert msg is not None and msg.meta == good.meta
        assert sub.stats.rejected == len(bad)
        assert sub.stats.received == received + len(bad)
        assert {"oversized", "bad_json", "bad_shape", "too_many_frames"} <= set(sub.stats.reasons)
    raw.close()


@pytest.mark.parametrize("sub_binds", [False, True])
def test_a_frame_over_max_bytes_does_not_stop_the_stream(ctx, ipc_dir, sub_binds):
    """Connected subscriber: rejected by the codec. Bound subscriber: ZeroMQ drops the sender's
    connection before reading it all, and the sender reconnects by itself."""
    url = f"ipc://{ipc_dir}/big.sock"
    with (
        Subscriber(ctx, url, bind=sub_binds, max_bytes=100_000) as sub,
        Publisher(ctx, url, bind=not sub_binds) as pub,
    ):
        deliver(pub, sub, sample_message("t"))
        pub.publish(Message("t", "x", arrays={"big": np.zeros(200_000, np.uint8)}))
        got = deliver(pub, sub, sample_message("t"))
        assert "big" not in got.arrays
        assert sub.stats.rejected == (0 if sub_binds else 1)


def test_conflate_keeps_the_newest(ctx):
    with Publisher(ctx, "inproc://c") as pub, Subscriber(ctx, "inproc://c", conflate=True) as sub:
        deliver(pub, sub, Message("t", "x"))
        for i in range(5):
            pub.publish(Message("t", "x", meta={"i": i}))
        time.sleep(0.05)
        assert sub.recv(500).meta == {"i": 4}
        assert sub.stats.dropped == 4
        assert sub.recv(0) is None


def test_a_slow_subscriber_loses_messages_but_the_publisher_never_blocks(ctx):
    """PUB drops for a full subscriber queue; the subscriber sees the loss as sequence gaps."""
    with Publisher(ctx, "inproc://slow", hwm=4) as pub, Subscriber(ctx, "inproc://slow", hwm=4) as sub:
        deliver(pub, sub, Message("t", "x"))
        t0 = time.perf_counter()
        for _ in range(200):
            pub.publish(sample_message("t"))
        assert time.perf_counter() - t0 < 1.0
        n = 0
        while sub.recv(50) is not None:
            n += 1
        assert n < 200
        pub.publish(Message("t", "x"))
        assert sub.recv(1000) is not None
        assert sub.stats.gaps == 200 - n  # the next message reveals what was lost


def test_receive_times_out_without_messages(ctx):
    with Subscriber(ctx, "tcp://127.0.0.1:1") as sub:  # nobody there: connect retries in the background
        t0 = time.perf_counter()
        assert sub.recv(50) is None
        assert 0.04 < time.perf_counter() - t0 < 0.5
