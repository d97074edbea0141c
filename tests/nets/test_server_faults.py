"""slam-infer under hostile traffic: malformed requests are counted and reported, never fatal; bounded memory."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq
from hypothesis import HealthCheck, example, given, settings

from slam.bus.rpc import RpcClient
from tests.bus.fuzz import messages

TOY = "tests.nets.toy_models"
LIMIT_MB = 8


class LiveServer:
    def __init__(self, proc: subprocess.Popen, endpoint: str, log: Path):
        self.proc, self.endpoint, self.log = proc, endpoint, log

    def peak_rss_kb(self) -> int:
        """The server's peak resident memory so far (VmHWM), kB."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        raise AssertionError("no VmHWM in /proc")

    def rejects(self, reason: str | None = None, timeout_s: float = 30.0) -> dict:
        """What the server reports having rejected, from heartbeat answers (asserts it answers), once
        ``reason`` is among them (messages from another connection may still be on their way)."""
        end = time.monotonic() + timeout_s
        with RpcClient(None, self.endpoint, heartbeat_s=0.05, heartbeat_timeout_s=5.0) as client:
            while True:
                assert self.proc.poll() is None, f"slam-infer died: {self.log.read_text()[-2000:]}"
                assert time.monotonic() < end, f"slam-infer does not answer, or reports {client.server_rejects}"
                client.poll()
                got = client.server_rejects
                if got is not None and (reason is None or reason in got["reject_reasons"]):
                    return got
                time.sleep(0.02)


@pytest.fixture
def server() -> Iterator[LiveServer]:
    d = Path(tempfile.mkdtemp(prefix="infer-", dir="/tmp"))  # short: ipc paths are limited to 107 bytes
    cfg = d / "models.yaml"
    cfg.write_text(f"max_message_mb: {LIMIT_MB}\nmodels:\n  - model: '{TOY}:BrightnessDepth'\n")
    log = d / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "nets.server", "--bind", f"ipc://{d}/infer", "--device", "cpu",
                                 "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    srv = LiveServer(proc, f"ipc://{d}/infer", log)
    try:
        srv.rejects()  # up and answering
        yield srv
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def raw(server) -> Iterator[zmq.Socket]:
    """A DEALER that sends whatever frames a test gives it."""
    ctx = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.linger = 0
    sock.connect(server.endpoint)
    yield sock
    ctx.destroy(linger=0)


def _send(sock: zmq.Socket, frames: list) -> None:
    sock.send_multipart(frames, copy=False)
    while sock.poll(0):  # answers to the odd request that is valid: read and drop
        sock.recv_multipart()


def test_fuzzed_requests_never_stop_the_server(server, raw):
    """One malformed header used to kill slam-infer (numpy's ValueError on a [0, 10**20] shape)."""
    t0 = time.monotonic()

    @settings(max_examples=150, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(messages())
    @example([b"infer", json.dumps({"v": 1, "topic": "infer", "type": "depth", "seq": 1, "stamp": 0.0, "meta": {},
                                    "arrays": [{"name": "image", "dtype": "|u1", "shape": [0, 10**20]}]}).encode(), b""])
    def send(frames):
        _send(raw, frames)

    send()
    rejects = server.rejects()
    assert rejects["rejected"] > 50 and rejects["reject_reasons"], rejects  # counted, and reported to clients
    assert time.monotonic() - t0 < 120
    assert server.proc.poll() is None


def test_message_of_many_parts_is_dropped_part_by_part(server, raw):
    """400k empty parts: received as one list they cost ~200 B of Python objects each, on top of libzmq's 64 B."""
    before = server.peak_rss_kb()
    n = 400_000
    for _ in range(n):
        raw.send(b"", zmq.SNDMORE)
    raw.send(b"")
    rejects = server.rejects("too_many_frames", 60.0)
    assert rejects["reject_reasons"]["too_many_frames"] == 1, rejects
    grown_mb = (server.peak_rss_kb() - before) / 1024
    libzmq_mb = n * 64 / 2**20  # the message as libzmq holds it before the first part can be read (~24 MB)
    assert grown_mb < 2 * libzmq_mb, f"peak grew {grown_mb:.0f} MB for {n} empty parts"


def test_oversized_multipart_message_is_rejected_without_a_copy(server, raw):
    """20 parts of 4 MB against an 8 MB limit (ZeroMQ's MAXMSGSIZE bounds one part only).

    libzmq delivers a multipart message only when all of it has arrived, so the server holds it
    once (80 MB) whatever it does; what it must not do is hold it twice or keep it.
    """
    part = bytes(4 * 2**20)
    before = server.peak_rss_kb()
    raw.send_multipart([b"infer", b"{}", *[part] * 20], copy=False)
    rejects = server.rejects("oversized")
    assert rejects["reject_reasons"]["oversized"] == 1, rejects
    grown_mb = (server.peak_rss_kb() - before) / 1024
    assert grown_mb < 1.5 * 80, f"peak grew {grown_mb:.0f} MB for an 80 MB message"


def test_second_server_on_the_same_path_is_refused(server):
    r = subprocess.run([sys.executable, "-m", "nets.server", "--bind", server.endpoint, "--device", "cpu"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "another process serves it" in r.stderr, r.stderr
    assert server.rejects() is not None  # the first one still answers
