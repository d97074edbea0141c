"""An IMU on a serial port (pyserial): a reader thread, the line protocol, a ring buffer in host time.

    imu = SerialImu(*parse_imu_spec("serial:/dev/ttyUSB0:921600").resolve())
    imu.start()                               # opens the port now: a bad port is a clear error here
    batch = imu.take_until(frame.timestamp)   # samples since the last call, host-clock seconds
    imu.stats()                               # lines, samples, garbage, dropouts, ...
    imu.close()

The line protocol is in :mod:`slam.sensors.imu_protocol`. Bad lines are
counted and the first of them logged; the stream goes on. Sample times come
from the IMU's clock, mapped to ``time.monotonic()`` by a
:class:`~slam.sensors.clock.ClockAligner` (the camera's clock). When the port
fails (unplugged), the reader says so once, marks the IMU not ``alive`` and
tries to reopen it every ``reopen_s``: the caller keeps tracking visually.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from slam.errors import DataError
from slam.records import ImuSamples
from slam.sensors.clock import ClockAligner
from slam.sensors.imu_protocol import (
    MAX_LINE_BYTES,
    ImuLineError,
    ImuSample,
    parse_imu_line,
)

log = logging.getLogger(__name__)

#: 200 Hz lines of ~70 bytes need more than 115200 baud; USB CDC-ACM devices ignore the rate.
DEFAULT_BAUD = 921600
CLOCK_RESET_RUN = 50  # this many consecutive back-in-time samples that increase among themselves: a restarted clock
# a sample whose time is this much (plus twice the host time elapsed) ahead of the previous one is not a
# dropout but a jump of the IMU clock: a bogus stamp, dropped, or a clock set forward (CLOCK_RESET_RUN samples)
JUMP_SLACK_S = 2.0
DROPOUT_LOG_EVERY_S = 10.0  # after the first dropout warning, at most one per this many seconds (with a count)
_USB_NAME = re.compile(r"^(ttyUSB\d+|ttyACM\d+|cu\.usb.*|tty\.usb.*)$")


class ImuError(DataError):
    """The IMU cannot be found or opened; the message starts with the port (or spec)."""


class ByteStream(Protocol):
    def read(self, size: int = 1) -> bytes: ...


# --------------------------------------------------------------------- spec
@dataclass(frozen=True)
class ImuSpec:
    """``--imu serial[:PORT[:BAUD]]``: the port (None: find the single USB serial device) and baud rate."""

    port: str | None = None
    baud: int = DEFAULT_BAUD

    def resolve(self) -> tuple[str, int]:
        """(port, baud), finding the port when the spec names none."""
        return (self.port or find_serial_port()), self.baud


def parse_imu_spec(spec: str) -> ImuSpec:
    """``serial``, ``serial:/dev/ttyUSB0`` or ``serial:/dev/ttyUSB0:921600`` (ports may hold colons)."""
    kind, _, rest = spec.partition(":")
    if kind != "serial":
        raise ImuError(spec, "unknown IMU spec; use serial, serial:PORT or serial:PORT:BAUD "
                             "(e.g. serial:/dev/ttyUSB0:921600)")
    port, baud = rest, DEFAULT_BAUD
    head, sep, tail = rest.rpartition(":")
    if sep and tail.isdigit():
        port, baud = head, int(tail)
    elif sep and not tail:
        port = head
    if baud <= 0:
        raise ImuError(spec, f"baud rate must be positive, got {baud}")
    return ImuSpec(port or None, baud)


def _describe(p: Any) -> str:
    extra = ", ".join(x for x in (getattr(p, "description", None), getattr(p, "hwid", None)) if x and x != "n/a")
    return f"{p.device} ({extra})" if extra else str(p.device)


def find_serial_port(ports: list | None = None) -> str:
    """The device of the single USB serial port (USB vendor id, or a ttyUSB*/ttyACM* name).

    ``ports``: ``serial.tools.list_ports.comports()`` results (looked up when None).
    Raises :class:`ImuError` listing what was seen when there is none or several.
    """
    if ports is None:
        from serial.tools import list_ports

        ports = list(list_ports.comports())
    usb = [p for p in ports if getattr(p, "vid", None) is not None or _USB_NAME.match(os.path.basename(p.device))]
    if len(usb) == 1:
        return usb[0].device
    if not usb:
        seen = ", ".join(_describe(p) for p in ports) or "none"
        raise ImuError("serial", f"no USB serial device found (serial ports: {seen}); "
                                 "plug the IMU in or name it: --imu serial:/dev/ttyUSB0")
    raise ImuError("serial", f"{len(usb)} USB serial devices: {'; '.join(_describe(p) for p in usb)}; "
                             "name one: --imu serial:PORT[:BAUD]")


# --------------------------------------------------------------------- stats
@dataclass
class ImuStats:
    lines: int = 0  # non-blank lines received (comments included)
    samples: int = 0  # samples accepted into the buffer
    comments: int = 0
    garbage: int = 0  # lines that are not samples: wrong field count, not numbers, not ASCII, too long
    partial: int = 0  # truncated samples (too few numeric fields) and the first line after (re)opening
    out_of_order: int = 0  # samples not after the previous one (duplicates included): dropped
    clock_resets: int = 0  # the IMU clock went back and stayed back (device restarted)
    dropouts: int = 0  # gaps in the sample times longer than max(5 median periods, 50 ms)
    dropout_s: float = 0.0  # their total length
    time_jumps: int = 0  # samples stamped far ahead of what the host clock allows (a bogus time): dropped
    disconnects: int = 0  # the port failed (unplugged)
    reconnects: int = 0
    rate_hz: float | None = None  # median sample rate
    last_error: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------- ring buffer
class _Ring:
    """The last ``capacity`` samples, contiguous for searchsorted (each sample written twice)."""

    def __init__(self, capacity: int):
        self.cap = int(capacity)
        self.t_ns = np.zeros(2 * self.cap, np.int64)
        self.data = np.zeros((2 * self.cap, 6))
        self.n = 0  # samples ever written (since the last clear)

    def append(self, s: ImuSample) -> None:
        i = self.n % self.cap
        row = s.gyro + s.accel
        self.t_ns[i] = self.t_ns[i + self.cap] = s.t_ns
        self.data[i] = self.data[i + self.cap] = row
        self.n += 1

    def clear(self) -> None:
        self.n = 0

    def window(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_ns, data) of the buffered samples, oldest first (views)."""
        if self.n <= self.cap:
            return self.t_ns[: self.n], self.data[: self.n]
        start = self.n % self.cap
        return self.t_ns[start : start + self.cap], self.data[start : start + self.cap]


# --------------------------------------------------------------------- reader
class SerialImu:
    """Reads IMU lines from a serial port in a thread; samples in a ring buffer, times on the host clock.

    port/baud: the device (opened with ``serial.Serial(port, baud, timeout=0.1)``);
    stream: instead, an open object with ``read(n) -> bytes`` (a ``serial.Serial``, for tests);
    clock: maps IMU seconds to ``time.monotonic()`` seconds (its ``extra_offset_s`` is the
    calibrated camera-IMU time offset); buffer_samples: ring size (60 s at 1 kHz);
    reopen_s: retry period after the port fails; silent_s: no sample for this long is logged.
    """

    def __init__(self, port: str | None = None, baud: int = DEFAULT_BAUD, *, stream: ByteStream | None = None,
                 clock: ClockAligner | None = None, buffer_samples: int = 60_000, reopen_s: float = 1.0,
                 silent_s: float = 2.0, max_line: int = MAX_LINE_BYTES):
        if port is None and stream is None:
            raise ValueError("SerialImu needs a port or a stream")
        self.port = port
        self.baud = int(baud)
        self.name = port or getattr(stream, "name", None) or "imu-stream"
        self.clock = clock or ClockAligner()
        self.reopen_s, self.silent_s, self.max_line = reopen_s, silent_s, max_line
        self._stream: Any = stream
        self._owns_stream = stream is None
        self._ring = _Ring(buffer_samples)
        self._stats = ImuStats()
        self._lock = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._buf = bytearray()
        self._resync = True  # drop everything up to the first line end after opening
        self._skip_long = False  # inside an over-long line: drop up to its end
        self._last_t_ns: int | None = None
        self._back_run: list[ImuSample] = []  # consecutive back-in-time samples (a restarted clock?)
        self._jump_run: list[ImuSample] = []  # consecutive samples far ahead (a clock set forward? bogus stamps?)
        self._dropout_logged = -np.inf  # host time of the last dropout warning
        self._dropouts_quiet: list[float] = []  # dropouts since then, not logged one by one
        self._jump_logged = False
        self._gaps: deque[float] = deque(maxlen=200)
        self._median_gap: float | None = None
        self._last_arrival = time.monotonic()
        self._silent_warned = False
        self._garbage_logged = False
        self._epoch = 0  # +1 on each clock reset: cursors of take_until start over
        self._cursor = (-1, -1)  # (epoch, t_ns of the last sample handed out)
        self._latest_host = -np.inf  # host time of the newest sample
        self.alive = False

    # ------------------------------------------------------------ lifecycle
    @property
    def started(self) -> bool:
        return self._thread is not None

    def start(self) -> SerialImu:
        """Open the port (raises :class:`ImuError` naming it) and start the reader thread."""
        if self._thread is not None:
            return self
        if self._stream is None:
            self._stream = self._open()
        self.alive = True
        self._last_arrival = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"imu-{os.path.basename(self.name)}", daemon=True)
        self._thread.start()
        log.info("IMU %s: reading at %d baud", self.name, self.baud)
        return self

    def close(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("IMU %s: reader thread did not stop within %.1f s", self.name, timeout)
        self._close_stream()  # ``alive`` stays as it was last seen, for the stats

    def __enter__(self) -> SerialImu:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _open(self):
        import serial

        try:
            s = serial.Serial(self.port, self.baud, timeout=0.1)
            s.reset_input_buffer()
            return s
        except (serial.SerialException, OSError, ValueError) as e:
            raise ImuError(self.port, f"cannot open the IMU serial port: {e}") from None

    def _close_stream(self) -> None:
        s, self._stream = self._stream, (None if self._owns_stream else self._stream)
        if s is not None and self._owns_stream:
            try:
                s.close()
            except Exception as e:  # noqa: BLE001 - closing a dead port may fail any way it likes
                log.debug("IMU %s: close failed: %s", self.name, e)

    # ------------------------------------------------------------ reader thread
    def _run(self) -> None:
        while not self._stop.is_set():
            if self._stream is None:
                self._try_reopen()
                continue
            try:
                waiting = getattr(self._stream, "in_waiting", 0)
                data = self._stream.read(max(1, min(int(waiting), 4096)))
            except Exception as e:  # noqa: BLE001 - SerialException, OSError, or anything a stream raises
                self._lost(e)
                continue
            now = time.monotonic()
            if data:
                self._feed(data, now)
            elif not self._owns_stream:
                time.sleep(0.01)  # a plain stream at its end returns b"" at once
            self._check_silence(now)

    def _lost(self, e: Exception) -> None:
        with self._lock:
            self._stats.disconnects += 1
            self._stats.last_error = f"{type(e).__name__}: {e}"
            self.alive = False
            self._lock.notify_all()
        log.error("IMU %s disconnected (%s); tracking continues visual-only%s", self.name, e,
                  f", retrying every {self.reopen_s:g} s" if self._owns_stream else "")
        self._close_stream()
        if not self._owns_stream:
            self._stop.set()  # a stream we were given cannot be reopened

    def _try_reopen(self) -> None:
        if self._stop.wait(self.reopen_s):
            return
        try:
            self._stream = self._open()
        except ImuError as e:
            log.debug("%s", e)
            return
        with self._lock:
            self._stats.reconnects += 1
            self._buf.clear()
            self._resync, self._skip_long = True, False
            self.alive = True
        self._last_arrival = time.monotonic()
        log.warning("IMU %s reconnected", self.name)

    def _check_silence(self, now: float) -> None:
        if not self._silent_warned and now - self._last_arrival > self.silent_s:
            self._silent_warned = True
            log.warning("IMU %s: no sample for %.1f s; tracking continues visual-only", self.name, self.silent_s)

    # ------------------------------------------------------------ bytes -> lines -> samples
    def _feed(self, data: bytes, arrival: float) -> None:
        """Split ``data`` (after the partial line kept from before) into lines and handle each."""
        with self._lock:
            buf = self._buf
            buf += data.replace(b"\r", b"\n")
            while (i := buf.find(b"\n")) >= 0:
                line = bytes(buf[:i])
                del buf[: i + 1]
                if self._resync:  # we may have joined the stream mid-line
                    self._resync = False
                    if line.strip() and not line.lstrip().startswith(b"#"):
                        self._stats.partial += 1
                elif self._skip_long:  # the end of an over-long line, counted already
                    self._skip_long = False
                elif len(line) > self.max_line:
                    self._stats.lines += 1
                    self._bad_line(line, f"line longer than {self.max_line} bytes")
                else:
                    self._line(line, arrival)
            if len(buf) > self.max_line:
                buf.clear()
                if self._resync:
                    self._resync = False
                elif not self._skip_long:
                    self._skip_long = True
                    self._stats.lines += 1
                    self._bad_line(None, f"no line end within {self.max_line} bytes")
            self._lock.notify_all()

    def _line(self, line: bytes, arrival: float) -> None:
        if not line.strip():
            return
        st = self._stats
        st.lines += 1
        try:
            s = parse_imu_line(line)
        except ImuLineError as e:
            if 0 < _numeric_fields(line) < 7:
                st.partial += 1
                self._bad_line(line, e.reason, partial=True)
            else:
                self._bad_line(line, e.reason)
            return
        if s is None:
            st.comments += 1
            return
        self._sample(s, arrival)

    def _bad_line(self, line: bytes | None, reason: str, partial: bool = False) -> None:
        st = self._stats
        if not partial:
            st.garbage += 1
        text = "" if line is None else f": {line[:80]!r}"
        st.last_error = f"line {st.lines}: {reason}"
        if not self._garbage_logged:
            self._garbage_logged = True
            log.warning("IMU %s: line %d is not a sample (%s)%s; further bad lines are counted in the stats, "
                        "not logged", self.name, st.lines, reason, text)
        else:
            log.debug("IMU %s: line %d: %s%s", self.name, st.lines, reason, text)

    def _suspect(self, run: list, s: ImuSample, arrival: float) -> None:
        """Hold a sample whose stamp does not follow on; a run of CLOCK_RESET_RUN increasing ones is a clock reset."""
        if run and s.t_ns <= run[-1].t_ns:
            run.clear()
        run.append(s)
        if len(run) >= CLOCK_RESET_RUN:
            self._clock_reset(run, arrival)

    def _sample(self, s: ImuSample, arrival: float) -> None:
        st = self._stats
        if self._last_t_ns is not None and s.t_ns <= self._last_t_ns:
            st.out_of_order += 1
            self._suspect(self._back_run, s, arrival)
            return
        self._back_run.clear()
        if self._is_jump(s, arrival):
            self._suspect(self._jump_run, s, arrival)
            return
        if self._jump_run:  # the clock goes on where it was: those stamps were bogus
            st.time_jumps += len(self._jump_run)
            if not self._jump_logged:
                self._jump_logged = True
                log.warning("IMU %s: dropped %d sample(s) stamped %.3f s ahead of the IMU clock (a bogus time); "
                            "further ones are only counted", self.name, len(self._jump_run),
                            (self._jump_run[0].t_ns - self._last_t_ns) / 1e9)
            self._jump_run.clear()
        self._accept(s, arrival)

    def _is_jump(self, s: ImuSample, arrival: float) -> bool:
        """``s`` is further ahead of the last sample than the host clock can explain (not a dropout)."""
        if self._last_t_ns is None:
            return False
        gap = (s.t_ns - self._last_t_ns) / 1e9
        return gap > JUMP_SLACK_S + 2.0 * max(0.0, arrival - self._last_arrival)

    def _clock_reset(self, run: list[ImuSample], arrival: float) -> None:
        st = self._stats
        step = (run[0].t_ns - self._last_t_ns) / 1e9
        log.warning("IMU %s: its clock %s by %.3f s and stays there (device restarted?); re-aligning",
                    self.name, "went back" if step < 0 else "jumped ahead", abs(step))
        st.clock_resets += 1
        if step < 0:
            st.out_of_order -= len(run)
        self._ring.clear()
        self.clock.reset()
        self._epoch += 1
        self._last_t_ns, self._gaps, self._median_gap = None, deque(maxlen=200), None
        samples = list(run)
        self._back_run.clear()
        self._jump_run.clear()
        for s in samples:
            self._accept(s, arrival)

    def _accept(self, s: ImuSample, arrival: float) -> None:
        st = self._stats
        if self._last_t_ns is not None:
            gap = (s.t_ns - self._last_t_ns) / 1e9
            limit = max(5.0 * self._median_gap, 0.05) if self._median_gap else None
            if limit is not None and gap > limit:
                st.dropouts += 1
                st.dropout_s += gap
                self._log_dropout(gap, s, arrival)
            else:
                self._gaps.append(gap)
                if len(self._gaps) >= 10 and (self._median_gap is None or len(self._gaps) % 20 == 0):
                    self._median_gap = float(np.median(self._gaps))
                    st.rate_hz = 1.0 / self._median_gap if self._median_gap > 0 else None
        self._last_t_ns = s.t_ns
        self.clock.add(s.t_ns / 1e9, arrival)
        self._ring.append(s)
        st.samples += 1
        self._latest_host = self.clock.to_host(s.t_ns / 1e9)
        if self._silent_warned:
            log.warning("IMU %s: samples again after %.1f s", self.name, arrival - self._last_arrival)
            self._silent_warned = False
        self._last_arrival = arrival

    def _log_dropout(self, gap: float, s: ImuSample, arrival: float) -> None:
        """The first dropout, then at most one line per ``DROPOUT_LOG_EVERY_S`` with those not logged since."""
        quiet = self._dropouts_quiet
        if arrival - self._dropout_logged < DROPOUT_LOG_EVERY_S:
            quiet.append(gap)
            return
        since = f"; {len(quiet)} more since the last such warning, {sum(quiet):.3f} s in all" if quiet else ""
        log.warning("IMU %s: dropout of %.3f s (no samples between IMU times %.3f and %.3f s)%s",
                    self.name, gap, self._last_t_ns / 1e9, s.t_ns / 1e9, since)
        self._dropout_logged = arrival
        quiet.clear()

    # ------------------------------------------------------------ consumer API
    def stats(self) -> ImuStats:
        """A copy of the counters."""
        with self._lock:
            return ImuStats(**asdict(self._stats))

    def wait_until(self, t_host: float, timeout: float, max_lag_s: float = 0.1) -> bool:
        """Wait (at most ``timeout`` s) until a sample at or after host time ``t_host`` is in; False if none came.

        Returns at once when the IMU is dead or its newest sample is more than ``max_lag_s`` older than
        ``t_host`` (a dropout: waiting would only slow tracking down).
        """
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._latest_host < t_host:
                left = deadline - time.monotonic()
                if left <= 0 or not self.alive or t_host - self._latest_host > max_lag_s:
                    return False
                self._lock.wait(left)
            return True

    def samples_between(self, t0: float, t1: float) -> ImuSamples:
        """Buffered samples with host time in ``(t0, t1]`` [s, ``time.monotonic()``]."""
        with self._lock:
            if not self.clock.ready:
                return ImuSamples()
            off = self.clock.offset
            t_ns, data = self._ring.window()
            i0, i1 = np.searchsorted(t_ns, [_to_ns(t0 - off), _to_ns(t1 - off)], side="right")
            return _samples(t_ns[i0:i1], data[i0:i1], off)

    def take_until(self, t1: float) -> ImuSamples:
        """The samples after those handed out by the previous call, up to host time ``t1``.

        Each sample is handed out once (the cursor is on the IMU clock, so the host-time offset
        moving between calls neither repeats nor skips one); samples that arrive after their
        time was taken come with the next call, their times before that call's window.
        """
        with self._lock:
            if not self.clock.ready:
                return ImuSamples()
            off = self.clock.offset
            t_ns, data = self._ring.window()
            epoch, cursor = self._cursor
            i0 = int(np.searchsorted(t_ns, cursor, side="right")) if epoch == self._epoch else 0
            i1 = int(np.searchsorted(t_ns, _to_ns(t1 - off), side="right"))
            i1 = max(i0, i1)
            if i1 > i0:
                self._cursor = (self._epoch, int(t_ns[i1 - 1]))
            return _samples(t_ns[i0:i1], data[i0:i1], off)


def _to_ns(t: float) -> int:
    return int(np.rint(t * 1e9)) if np.isfinite(t) else (2**62 if t > 0 else -(2**62))  # nearest: round trips


def _samples(t_ns: np.ndarray, data: np.ndarray, offset: float) -> ImuSamples:
    return ImuSamples(t_ns / 1e9 + offset, data[:, :3].copy(), data[:, 3:].copy())


def _numeric_fields(line: bytes) -> int:
    """The number of fields of ``line`` when all are numbers (a truncated sample rather than garbage), else 0."""
    fields = re.split(rb"\s*[,;]\s*|\s+", line.strip().rstrip(b",;"))
    try:
        for f in fields:
            float(f)
    except ValueError:
        return 0
    return len(fields)
