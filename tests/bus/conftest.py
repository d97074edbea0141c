"""Fixtures for the bus tests: a private zmq context, short ipc paths, and delivery with a timeout."""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import zmq

from slam.bus import Message, Publisher, Subscriber


@pytest.fixture
def ctx() -> Iterator[zmq.Context]:
    c = zmq.Context()
    yield c
    c.destroy(linger=0)


@pytest.fixture
def ipc_dir() -> Iterator[Path]:
    """A fresh folder with a short path (Unix socket paths are limited to 107 bytes; tmp_path can be longer)."""
    d = Path(tempfile.mkdtemp(prefix="bus-", dir="/tmp"))
    yield d
    shutil.rmtree(d, ignore_errors=True)


def sample_message(topic: str = "frames", n: int = 8) -> Message:
    rng = np.random.default_rng(n)
    arrays = {"image": rng.integers(0, 255, (n, n, 3), dtype=np.uint8), "depth": rng.random((n, n), dtype=np.float32)}
    return Message(topic, "test", 0, 12.5, {"n": n}, arrays)


def deliver(pub: Publisher, sub: Subscriber, msg: Message, timeout_s: float = 3.0) -> Message:
    """Publish ``msg`` until ``sub`` gets a message (a new subscription takes a moment to reach the publisher)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        pub.publish(msg)
        got = sub.recv(20)
        if got is not None:
            return got
    raise AssertionError(f"nothing received on {sub.endpoint} within {timeout_s} s")
