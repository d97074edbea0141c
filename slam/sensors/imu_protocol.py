"""The IMU serial line protocol: one ASCII line per sample, EuRoC's ``imu0`` column order.

Protocol
--------
Each sample is one line of ASCII text ending in ``\\n`` (``\\r\\n`` and a lone ``\\r``
also end a line)::

    t_ns,gx,gy,gz,ax,ay,az

=========  ==================================================================
field      meaning
=========  ==================================================================
``t_ns``   sample time on the IMU's own clock, integer nanoseconds (>= 0).
           A number with a decimal point (``12.345000``) is read as seconds.
           Only differences matter: the clock is aligned to the host's.
``gx..gz`` angular rate about the IMU's x, y, z axes [rad/s]
``ax..az`` specific force along x, y, z [m/s^2] (at rest: +9.81 up)
=========  ==================================================================

* Separators: a comma, a semicolon or whitespace (spaces, tabs), with any
  spaces around them; one trailing separator is allowed. An empty field
  (``1,,2``) is an error.
* Numbers: anything Python's ``float()`` reads (``-1.5``, ``2e-3``); ``t_ns``
  an integer (or decimal seconds, see above). ``nan`` and ``inf`` are errors.
* Lines starting with ``#`` (after spaces) are comments and blank lines are
  ignored: a device may print a banner or a header such as EuRoC's
  ``#timestamp [ns],w_RS_S_x [rad s^-1],...``.
* Lines are at most 256 bytes; a longer run of bytes without a line end is
  dropped up to the next line end and counted as garbage.
* Timestamps must increase: a sample whose time is not after the previous
  one is dropped and counted (``out_of_order``). A run of 50 such samples that
  increase among themselves is taken as the device restarting its clock.
  A gap longer than max(5 median sample periods, 50 ms) is a dropout:
  counted, its length summed and logged once.
* Send a line end (or a ``#`` comment line) when the stream starts: the
  reader discards everything up to the first line end after it opens the
  port, since it may join a stream mid-line.
* Rate: any; 100-1000 Hz is typical. At 200 Hz with 6 decimals a line is
  ~70 bytes, 14 kB/s: more than 115200 baud carries, hence the default
  921600 baud (USB CDC-ACM devices ignore the baud rate).

Example, an Arduino-style sketch printing one sample (``micros()`` followed by
``000`` is nanoseconds without 64-bit arithmetic, which AVR's ``print`` lacks)::

    Serial.print(micros()); Serial.print("000,");                            // t_ns
    Serial.print(gx, 6); Serial.print(','); Serial.print(gy, 6); Serial.print(',');
    Serial.print(gz, 6); Serial.print(','); Serial.print(ax, 6); Serial.print(',');
    Serial.print(ay, 6); Serial.print(','); Serial.println(az, 6);          // ends in "\r\n"

which sends, e.g.::

    1403715273262142976,-0.099134701,0.14032447,0.02094395,8.1476011,-0.37592983,-2.4026093

``micros()`` wraps after 71.6 minutes; the reader takes that as a restarted
clock (above) and loses about 50 samples.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

FIELDS = ("t_ns", "gx", "gy", "gz", "ax", "ay", "az")
MAX_LINE_BYTES = 256
_SPLIT = re.compile(r"\s*[,;]\s*|\s+")
_MAX_T_NS = 2**63 - 1


class ImuLineError(ValueError):
    """A line that is not a sample; ``reason`` says why (without the line itself)."""

    def __init__(self, reason: str, line: str = ""):
        self.reason = reason
        self.line = line
        super().__init__(f"{reason}: {line[:80]!r}" if line else reason)


@dataclass(frozen=True, slots=True)
class ImuSample:
    """One IMU sample on the sensor clock: ``t_ns`` integer ns, ``gyro`` rad/s, ``accel`` m/s^2 (IMU frame)."""

    t_ns: int
    gyro: tuple[float, float, float]
    accel: tuple[float, float, float]


def parse_imu_line(line: bytes | str) -> ImuSample | None:
    """The sample on ``line``; None for a blank or ``#`` comment line; :class:`ImuLineError` otherwise."""
    if isinstance(line, bytes | bytearray):
        try:
            line = bytes(line).decode("ascii")
        except UnicodeDecodeError:
            raise ImuLineError("not ASCII text", bytes(line).decode("ascii", "replace")) from None
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    if "\x00" in text:
        raise ImuLineError("NUL byte in line", text)
    body = text[:-1].rstrip() if text[-1] in ",;" else text
    fields = _SPLIT.split(body)
    if len(fields) != len(FIELDS):
        raise ImuLineError(f"expected {len(FIELDS)} fields {','.join(FIELDS)}, got {len(fields)}", text)
    t_ns = _parse_time(fields[0], text)
    values = []
    for name, s in zip(FIELDS[1:], fields[1:]):
        if not s:
            raise ImuLineError(f"field {name} is empty", text)
        try:
            v = float(s)
        except ValueError:
            raise ImuLineError(f"field {name} is not a number ({s[:20]!r})", text) from None
        if not math.isfinite(v):
            raise ImuLineError(f"field {name} is not finite ({s})", text)
        values.append(v)
    return ImuSample(t_ns, (values[0], values[1], values[2]), (values[3], values[4], values[5]))


def _parse_time(s: str, text: str) -> int:
    """Integer nanoseconds, or seconds when written with a decimal point."""
    if not s:
        raise ImuLineError("field t_ns is empty", text)
    try:
        if "." in s:
            sec = float(s)
            if not math.isfinite(sec):
                raise ValueError
            t_ns = round(sec * 1e9)
        else:
            t_ns = int(s)
    except (ValueError, OverflowError):
        raise ImuLineError(f"field t_ns is not integer nanoseconds or decimal seconds ({s[:24]!r})", text) from None
    if not 0 <= t_ns <= _MAX_T_NS:
        raise ImuLineError(f"field t_ns out of range ({s[:24]})", text)
    return t_ns
