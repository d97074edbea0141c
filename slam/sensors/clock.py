"""Aligning a sensor's own clock to the host's monotonic clock from arrival times.

Every message has a sensor time ``t_s`` (IMU counter, camera driver stamp) and
a host arrival time ``a`` (``time.monotonic()`` when it was read). Transport
only ever delays, so ``a - t_s = offset + delay`` with ``delay >= d_min``; the
smallest ``a - t_s`` over a sliding window is the lower envelope
``offset + d_min``, robust to jitter and bursts (a few fast messages suffice),
and the window lets it follow clock drift (error up to ``drift * window_s``).

The minimal transport delay ``d_min`` cannot be observed this way; it stays in
the estimate as a constant, like the exposure-to-read delay of a camera. A
calibrated time offset (e.g. Kalibr's camera-IMU ``timeshift``) is added with
``extra_offset_s``.
"""

from __future__ import annotations

import threading
from collections import deque


class ClockAligner:
    """Maps sensor seconds to host seconds: ``host = sensor + offset + extra_offset_s``.

    ``offset`` is the minimum of ``arrival - sensor`` over the last ``window_s`` seconds
    of sensor time. Thread-safe (one writer, any readers).
    """

    def __init__(self, window_s: float = 10.0, extra_offset_s: float = 0.0):
        if window_s <= 0:
            raise ValueError("window_s must be positive")
        self.window_s = float(window_s)
        self.extra_offset_s = float(extra_offset_s)
        self._win: deque[tuple[float, float]] = deque()  # (sensor_t, arrival - sensor_t), increasing 2nd
        self._last_t: float | None = None
        self._lock = threading.Lock()
        self.n = 0

    def add(self, sensor_t: float, arrival_t: float) -> None:
        """One observation: a message stamped ``sensor_t`` [s] arrived at host time ``arrival_t`` [s]."""
        d = arrival_t - sensor_t
        with self._lock:
            if self._last_t is not None and sensor_t < self._last_t:  # the sensor clock went back: start over
                self._win.clear()
            self._last_t = sensor_t
            # monotonic deque: the front is the minimum of the window
            while self._win and self._win[-1][1] >= d:
                self._win.pop()
            self._win.append((sensor_t, d))
            while self._win[0][0] < sensor_t - self.window_s:
                self._win.popleft()
            self.n += 1

    def reset(self) -> None:
        with self._lock:
            self._win.clear()
            self._last_t = None
            self.n = 0

    @property
    def ready(self) -> bool:
        return bool(self._win)

    @property
    def offset(self) -> float:
        """Current ``host - sensor`` [s], extra offset included; raises if nothing was added yet."""
        with self._lock:
            if not self._win:
                raise RuntimeError("ClockAligner: no observation yet")
            return self._win[0][1] + self.extra_offset_s

    def to_host(self, sensor_t: float) -> float:
        return sensor_t + self.offset

    def to_sensor(self, host_t: float) -> float:
        return host_t - self.offset
