"""Requests with deadlines: answers in time, late answers, errors, and a server killed and restarted."""

from __future__ import annotations

import json
import logging
import multiprocessing
import time

import numpy as np
import pytest
import zmq

from slam.bus import Message, RpcClient, RpcResult, RpcServer
from tests.bus._server import echo, serve

REQUEST = Message("depth", "depth_request", stamp=3.0, meta={"frame": 1}, arrays={"x": np.arange(4.0)})


def submit(client: RpcClient, msg: Message = REQUEST, deadline_s: float = 1.0, timeout_s: float = 2.0) -> int:
    """Submit until the request is queued (a fresh connection takes a moment)."""
    end = time.monotonic() + timeout_s
    while (rid := client.submit(msg, deadline_s)) is None:
        assert time.monotonic() < end, "could not queue a request"
        time.sleep(0.005)
    return rid


def results(client: RpcClient, until, timeout_s: float = 2.0) -> list[RpcResult]:
    """Poll until ``until(all results so far)`` holds."""
    out: list[RpcResult] = []
    end = time.monotonic() + timeout_s
    while not until(out):
        assert time.monotonic() < end, f"gave up waiting; got {out}"
        t0 = time.perf_counter()
        out += client.poll()
        assert time.perf_counter() - t0 < 0.05  # poll never waits
        time.sleep(0.002)
    return out


@pytest.fixture
def server(ctx):
    srv = RpcServer(ctx, "inproc://infer", name="depth", version="2", models=["monodepth"])
    yield srv
    srv.close()


def test_answer_within_deadline(ctx, server):
    server.start(echo)
    with RpcClient(ctx, "inproc://infer") as client:
        rid = submit(client)
        (r,) = results(client, lambda out: out)
        assert r.ok and r.request_id == rid and not r.late and r.error is None
        assert r.stamp == 3.0 and r.type == "depth_request" and 0 <= r.latency_s < 1.0
        np.testing.assert_array_equal(r.reply.arrays["x"], 2 * np.arange(4.0))
        assert r.reply.meta["frame"] == 1 and r.reply.meta["server"] == {"name": "depth", "version": "2", "rejected": 0,
                                                                        "reject_reasons": {}, "last_reject": ""}
        assert client.stats.answered == 1 and client.in_flight == 0


def test_heartbeat_reports_the_server(ctx, server):
    server.start(echo)
    with RpcClient(ctx, "inproc://infer", heartbeat_s=0.01) as client:
        results(client, lambda out: client.server_info is not None)
        assert client.server_info == {"name": "depth", "version": "2", "models": ["monodepth"], "rejected": 0,
                                      "reject_reasons": {}, "last_reject": ""}


def test_slow_answer_times_out_once_then_comes_late(ctx, server):
    def slow(req: Message) -> Message:
        time.sleep(0.2)
        return echo(req)

    server.start(slow)
    with RpcClient(ctx, "inproc://infer", heartbeat_s=10) as client:
        t0 = time.perf_counter()
        rid = submit(client, deadline_s=0.05)
        assert time.perf_counter() - t0 < 0.005
        out = results(client, lambda out: any(r.reply is not None for r in out))
        assert [(r.request_id, r.timed_out, r.late, r.reply is None) for r in out] == [(rid, True, False, True), (rid, False, True, False)]
        assert out[1].latency_s > 0.15 and not out[1].ok
        assert client.stats.timeouts == 1 and client.stats.late == 1 and client.stats.answered == 0


def test_a_slow_server_is_late_but_not_down(ctx, server, caplog):
    """Answers after their deadline keep the server 'up': no down/back log flapping."""
    caplog.set_level(logging.INFO, logger="slam.bus.rpc")

    def slow(req: Message) -> Message:
        time.sleep(0.05)
        return echo(req)

    server.start(slow)
    with RpcClient(ctx, "inproc://infer", down_after_s=0.3) as client:
        submit(client, deadline_s=0.01)
        out: list[RpcResult] = []
        end = time.monotonic() + 0.5
        while time.monotonic() < end:
            client.submit(REQUEST, 0.01)
            out += client.poll()
            time.sleep(0.01)
        assert client.stats.late > 5 and client.stats.timeouts > 5
        assert not client.down and not caplog.records


def test_serve_batch_answers_what_is_waiting_in_one_call(ctx, server):
    calls = []

    def batch(requests: list[Message]) -> list[Message | Exception]:
        calls.append([r.meta["frame"] for r in requests])
        return [ValueError("odd frame") if r.meta["frame"] % 2 else echo(r) for r in requests]

    with RpcClient(ctx, "inproc://infer", heartbeat_s=0.0) as client:
        client.poll()  # queues a heartbeat: answered by the server, not part of the batch
        ids = [submit(client, Message("depth", "depth_request", meta={"frame": i})) for i in range(5)]
        time.sleep(0.05)
        assert server.serve_batch(batch, max_batch=8, timeout_ms=100) == 6
        assert calls == [[0, 1, 2, 3, 4]]
        out = results(client, lambda out: len(out) == 5)
        assert [r.request_id for r in out] == ids
        assert [r.ok for r in out] == [True, False, True, False, True]
        assert "ValueError: odd frame" in out[1].error
        assert client.server_info["models"] == ["monodepth"] and client.stats.heartbeats == 1

        client.heartbeat_s = 60.0
        submit(client, Message("depth", "depth_request", meta={"frame": 0}))
        time.sleep(0.05)
        assert server.serve_batch(lambda requests: [], max_batch=8, timeout_ms=100) >= 1  # a wrong count: errors
        (r,) = results(client, lambda out: out)
        assert "answered 0 of 1" in r.error
    assert server.stats.errors == 3


def test_handler_errors_come_back_as_errors(ctx, server):
    def picky(req: Message) -> Message:
        if req.meta.get("frame") == 2:
            raise ValueError("no depth for frame 2")
        return echo(req)

    server.start(picky)
    with RpcClient(ctx, "inproc://infer") as client:
        submit(client, Message("depth", "depth_request", meta={"frame": 2}))
        submit(client)
        out = results(client, lambda out: len(out) == 2)
        assert "ValueError: no depth for frame 2" in out[0].error and not out[0].ok
        assert out[1].ok
    assert server.stats.errors == 1


def test_malformed_requests_are_rejected_and_the_server_goes_on(ctx, server):
    server.start(echo)
    raw = ctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect("inproc://infer")
    raw.send_multipart([b"garbage"])
    raw.send_multipart([b"depth", b"{bad json"])
    raw.send_multipart([b"depth", b'{"v": 1, "topic": "depth"}'])
    with RpcClient(ctx, "inproc://infer") as client:
        submit(client)
        (r,) = results(client, lambda out: out)
        assert r.ok
    assert raw.poll(50) == 0  # no answer to garbage
    raw.close()
    assert server.stats.rejected == 3 and set(server.stats.reasons) == {"too_few_frames", "bad_json", "missing_field"}


def test_the_server_reports_its_rejections_to_the_client(ctx, server):
    server.start(echo)
    raw = ctx.socket(zmq.DEALER)
    raw.linger = 0
    raw.connect("inproc://infer")
    raw.send_multipart([b"depth", b"{bad json"])
    raw.send_multipart([b"depth", b"{}", *[b""] * 100])  # more parts than a message may have
    with RpcClient(ctx, "inproc://infer", heartbeat_s=0.01) as client:
        results(client, lambda out: (client.server_rejects or {}).get("rejected") == 2)
        assert client.server_rejects["reject_reasons"] == {"bad_json": 1, "too_many_frames": 1}
        assert "too_many_frames" in client.server_rejects["last_reject"] or "bad_json" in client.server_rejects["last_reject"]
    raw.close()


def test_a_malformed_answer_is_rejected_and_the_client_goes_on(ctx):
    """An answer numpy cannot shape ([0, 10**20]) made RpcClient.poll raise ValueError."""
    fake = ctx.socket(zmq.ROUTER)  # a server that answers every request with the same bad message
    fake.linger = 0
    fake.bind("inproc://fake")
    huge = {"v": 1, "topic": "heartbeat", "type": "heartbeat", "seq": 1, "stamp": 0.0, "meta": {},
            "arrays": [{"name": "a", "dtype": "|u1", "shape": [0, 10**20]}]}
    with RpcClient(ctx, "inproc://fake", heartbeat_s=0.01) as client:
        end = time.monotonic() + 2
        while client.stats.rejected == 0:
            assert time.monotonic() < end, "no answer came back"
            client.poll()
            if fake.poll(10):
                routing_id = fake.recv_multipart()[0]
                fake.send_multipart([routing_id, b"heartbeat", json.dumps(huge).encode(), b""])
        assert client.stats.reasons == {"bad_shape": 1}
    fake.close()


def test_no_server_submit_fails_fast_and_down_is_logged_once(ctx, ipc_dir, caplog):
    caplog.set_level(logging.INFO, logger="slam.bus.rpc")
    with RpcClient(ctx, f"ipc://{ipc_dir}/nobody.sock", miss_limit=3, down_after_s=0.05) as client:
        for _ in range(10):
            t0 = time.perf_counter()
            assert client.submit(REQUEST, 0.05) is None
            assert time.perf_counter() - t0 < 0.005
            client.poll()
            time.sleep(0.01)
        assert client.down and client.stats.unsent == 10
    assert [r.getMessage() for r in caplog.records].count(
        f"inference server down at ipc://{ipc_dir}/nobody.sock; continuing without learned inputs"
    ) == 1


def test_server_killed_mid_run_and_restarted(ipc_dir, caplog):
    """Requests fail or time out without blocking while the server is gone; answers resume when it is back."""
    caplog.set_level(logging.INFO, logger="slam.bus.rpc")
    mp = multiprocessing.get_context("spawn")
    url = f"ipc://{ipc_dir}/infer.sock"

    def start_server() -> multiprocessing.Process:
        ready = mp.Event()
        proc = mp.Process(target=serve, args=(url, ready), daemon=True)
        proc.start()
        assert ready.wait(20), "server process did not start"
        return proc

    ctx = zmq.Context()
    client = RpcClient(ctx, url, miss_limit=3, down_after_s=0.3, heartbeat_s=0.1, heartbeat_timeout_s=0.1)
    submit_s: list[float] = []
    seen: list[RpcResult] = []

    def run(until, timeout_s: float) -> None:
        """Tracking-loop stand-in: one request per 10 ms 'frame', deadline 50 ms, until ``until()``."""
        end = time.monotonic() + timeout_s
        while not until():
            assert time.monotonic() < end, f"gave up: down={client.down} stats={client.stats}"
            t0 = time.perf_counter()
            client.submit(REQUEST, 0.05)
            submit_s.append(time.perf_counter() - t0)
            seen.extend(client.poll())
            time.sleep(0.01)

    proc = start_server()
    try:
        run(lambda: any(r.ok for r in seen), 5)  # (the client may log down/back while the server starts)
        caplog.clear()
        proc.kill()
        proc.join()
        del seen[:]
        run(lambda: client.down, 3)
        ok_while_down = sum(r.ok for r in seen)
        run(lambda: len(seen) > 30 or client.stats.unsent > 30, 3)  # keeps going without a server
        proc = start_server()
        del seen[:]
        run(lambda: any(r.ok for r in seen), 5)
        assert not client.down
    finally:
        proc.kill()
        client.close()
        ctx.destroy(linger=0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages.count(f"inference server down at {url}; continuing without learned inputs") == 1
    assert messages.count(f"inference server back at {url}") == 1
    assert ok_while_down <= 1  # at most an answer already on its way when the server died
    assert client.stats.timeouts + client.stats.unsent > 3
    assert max(submit_s) < 0.005, f"slowest submit {max(submit_s) * 1e3:.1f} ms"
