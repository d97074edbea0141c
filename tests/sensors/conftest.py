"""Helpers for the sensor tests: a pseudo-terminal standing in for a serial IMU, video files, fake captures."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest


def imu_line(t_ns: int, gyro=(0.1, -0.2, 0.3), accel=(0.0, 0.0, 9.81)) -> bytes:
    return (",".join([str(t_ns), *(f"{v:.6f}" for v in (*gyro, *accel))]) + "\r\n").encode()


class PtyDevice:
    """The device end of a pseudo-terminal: the code under test opens ``name`` like a serial port."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        self.open = True

    def write(self, data: bytes) -> None:
        os.write(self.master, data)

    def send_samples(self, t0_ns: int, n: int, period_s: float = 0.005, batch: int = 5) -> int:
        """``n`` samples ``period_s`` apart on the IMU clock, written in real time ``batch`` at a time; next t_ns."""
        for k in range(0, n, batch):
            self.write(b"".join(imu_line(t0_ns + round((k + j) * period_s * 1e9)) for j in range(min(batch, n - k))))
            time.sleep(batch * period_s)
        return t0_ns + round(n * period_s * 1e9)

    def unplug(self) -> None:
        if self.open:
            os.close(self.master)
            self.open = False

    def close(self) -> None:
        self.unplug()
        os.close(self.slave)


@pytest.fixture
def pty_device():
    dev = PtyDevice()
    yield dev
    dev.close()


def wait_for(cond, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def bar_image(i: int, w: int = 64, h: int = 48) -> np.ndarray:
    """A random texture (BGR) with a bright bar at column 2 * i, to tell frames apart."""
    img = np.random.default_rng(i).integers(0, 64, (h, w, 3), dtype=np.uint8)
    img[:, 2 * i : 2 * i + 2] = 255
    return img


def bar_index(rgb: np.ndarray) -> int:
    return int(np.argmax(rgb.mean(axis=(0, 2)))) // 2


def write_video(path: Path, n: int = 30, fps: float = 30.0) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (64, 48))
    assert writer.isOpened()
    for i in range(n):
        writer.write(bar_image(i))
    writer.release()
    return path


class FakeCapture:
    """A VideoCapture stand-in: ``frames`` frames, then ``after``: "stall" (read blocks, as V4L2 does,
    until ``release_block`` is set), "fail" (read returns False: unplugged) or "end"."""

    def __init__(self, frames: int = 5, after: str = "stall", images=None, period_s: float = 0.01):
        self.n, self.after, self.images, self.period_s = frames, after, images, period_s
        self.i = 0
        self.release_block = threading.Event()
        self.released = False
        self.reads = 0

    def isOpened(self) -> bool:
        return True

    def read(self):
        self.reads += 1
        if self.i < self.n:
            time.sleep(self.period_s)
            img = self.images[self.i % len(self.images)] if self.images is not None else bar_image(self.i)
            self.i += 1
            return True, img
        if self.after == "stall":
            self.release_block.wait(30.0)
        return False, None

    def get(self, prop: int) -> float:
        return 0.0

    def set(self, prop: int, value: float) -> bool:
        return False

    def release(self) -> None:
        self.released = True
