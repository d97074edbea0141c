"""The serial IMU: spec parsing, port discovery, and the reader over a pseudo-terminal with every fault."""

from __future__ import annotations

import logging
import time
from types import SimpleNamespace

import numpy as np
import pytest

from slam.sensors.imu_serial import (
    DEFAULT_BAUD,
    ImuError,
    ImuSpec,
    SerialImu,
    find_serial_port,
    parse_imu_spec,
)

from .conftest import imu_line, wait_for

T0 = 1_000_000_000_000  # IMU clock at the first sample [ns]


# ------------------------------------------------------------------ spec and discovery
@pytest.mark.parametrize("spec,expected", [
    ("serial", ImuSpec(None, DEFAULT_BAUD)),
    ("serial:", ImuSpec(None, DEFAULT_BAUD)),
    ("serial:/dev/ttyUSB0", ImuSpec("/dev/ttyUSB0", DEFAULT_BAUD)),
    ("serial:/dev/ttyUSB0:115200", ImuSpec("/dev/ttyUSB0", 115200)),
    ("serial:/dev/ttyACM1:", ImuSpec("/dev/ttyACM1", DEFAULT_BAUD)),
    ("serial:COM3:921600", ImuSpec("COM3", 921600)),
    ("serial:/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0",
     ImuSpec("/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0", DEFAULT_BAUD)),
    ("serial:/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0:57600",
     ImuSpec("/dev/serial/by-path/pci-0000:00:14.0-usb-0:1:1.0-port0", 57600)),
])
def test_parse_imu_spec(spec, expected):
    assert parse_imu_spec(spec) == expected


@pytest.mark.parametrize("spec", ["usb", "serial:/dev/ttyUSB0:0", "bluetooth:/dev/rfcomm0"])
def test_bad_imu_spec(spec):
    with pytest.raises(ImuError, match="serial"):
        parse_imu_spec(spec)


def port(device, vid=None, description="n/a"):
    return SimpleNamespace(device=device, vid=vid, description=description, hwid="n/a")


def test_find_serial_port_picks_the_single_usb_device():
    ports = [port("/dev/ttyS0"), port("/dev/ttyS1"), port("/dev/ttyACM0", description="Arduino Uno")]
    assert find_serial_port(ports) == "/dev/ttyACM0"
    assert find_serial_port([port("/dev/ttyS0"), port("/dev/ttyAMA0", vid=0x0403)]) == "/dev/ttyAMA0"  # by vendor id


def test_find_serial_port_none_or_several_is_a_clear_error(monkeypatch):
    with pytest.raises(ImuError, match=r"no USB serial device found \(serial ports: /dev/ttyS0\)"):
        find_serial_port([port("/dev/ttyS0")])
    with pytest.raises(ImuError) as e:
        find_serial_port([port("/dev/ttyUSB0", 0x0403, "FT232R"), port("/dev/ttyACM0", 0x2341, "Arduino Uno")])
    msg = str(e.value)
    assert "2 USB serial devices" in msg and "/dev/ttyUSB0 (FT232R)" in msg and "/dev/ttyACM0 (Arduino Uno)" in msg
    assert "--imu serial:PORT" in msg
    # no list given: pyserial's comports()
    from serial.tools import list_ports

    monkeypatch.setattr(list_ports, "comports", lambda: [port("/dev/ttyUSB3", 0x10C4)])
    assert find_serial_port() == "/dev/ttyUSB3"
    assert ImuSpec(None).resolve() == ("/dev/ttyUSB3", DEFAULT_BAUD)


def test_missing_port_is_a_clear_error(tmp_path):
    with pytest.raises(ImuError) as e:
        SerialImu(str(tmp_path / "ttyUSB9")).start()
    assert str(e.value).startswith(str(tmp_path / "ttyUSB9")) and "cannot open" in str(e.value)


# ------------------------------------------------------------------ reader over a pty
def test_faults_over_a_pty_are_counted_and_samples_kept(pty_device, caplog):
    """200 Hz lines with garbage, a partial line, a line split over two writes, stamps out of order, a 1 s dropout."""
    imu = SerialImu(pty_device.name).start()
    try:
        with caplog.at_level(logging.WARNING, logger="slam.sensors.imu_serial"):
            pty_device.write(b"# IMU v1.2 ready\n")  # the reader skips to the first line end after opening
            t = pty_device.send_samples(T0, 100)  # 0.5 s
            pty_device.write(b"hello world\n" + b"\x00\xff\xfe\x01\n" + b"1,2,3,4,5,6,7,8\n"
                             + imu_line(t)[:-2].replace(b"-0.2", b"nan") + b"\n" + b"x" * 300 + b"\n")
            pty_device.write(b"1500000000,0.1,0.2\n")  # a truncated sample
            split = imu_line(t, gyro=(1.0, 2.0, 3.0))
            pty_device.write(split[:20])
            time.sleep(0.05)
            pty_device.write(split[20:])
            pty_device.write(imu_line(t - 10_000_000) + imu_line(t))  # back in time, then a duplicate
            time.sleep(1.0)  # the dropout, on the IMU clock as on the host's
            t_end = pty_device.send_samples(t + 1_000_000_000, 20)
            assert wait_for(lambda: imu.stats().samples == 121)
        st = imu.stats()
        assert (st.samples, st.garbage, st.partial, st.out_of_order, st.dropouts) == (121, 5, 1, 2, 1)
        assert st.lines == 100 + 5 + 1 + 1 + 2 + 20
        assert st.dropout_s == pytest.approx(1.0, abs=0.01) and st.rate_hz == pytest.approx(200.0)
        assert st.disconnects == 0 and st.clock_resets == 0 and imu.alive
        # one warning for the first bad line, one for the dropout
        assert "line 101 is not a sample" in caplog.text and "hello world" in caplog.text
        assert caplog.text.count("dropout of 1.00") == 1
        assert sum("not a sample" in r.message for r in caplog.records) == 1

        batch = imu.take_until(time.monotonic() + 1.0)
        assert len(batch) == 121 and np.all(np.diff(batch.t) > 0)
        np.testing.assert_allclose(np.diff(batch.t[:100]), 0.005, atol=1e-9)  # IMU-clock spacing kept
        np.testing.assert_allclose(batch.gyro[100], [1.0, 2.0, 3.0])  # the split line
        np.testing.assert_allclose(batch.accel, np.tile([0, 0, 9.81], (121, 1)))
        assert batch.t[101] - batch.t[100] == pytest.approx(1.0)
        assert batch.t[-1] == pytest.approx(batch.t[0] + (t_end - T0 - 5_000_000) / 1e9)
        assert batch.t[-1] <= time.monotonic()  # host clock: no sample from the future
        assert len(imu.take_until(time.monotonic() + 1.0)) == 0  # each sample handed out once
        assert len(imu.samples_between(batch.t[9], batch.t[19])) == 10  # (t0, t1]
    finally:
        imu.close()


def test_unplugged_port_marks_imu_dead_without_raising(pty_device, caplog):
    imu = SerialImu(pty_device.name, reopen_s=0.1).start()
    try:
        pty_device.write(b"\n")
        pty_device.send_samples(T0, 20)
        assert wait_for(lambda: imu.stats().samples == 20)
        with caplog.at_level(logging.ERROR, logger="slam.sensors.imu_serial"):
            pty_device.unplug()
            assert wait_for(lambda: not imu.alive)
            time.sleep(0.35)  # a few failed reopen attempts: logged once
        st = imu.stats()
        assert st.disconnects == 1 and st.reconnects == 0 and "SerialException" in st.last_error
        assert len(caplog.records) == 1 and "disconnected" in caplog.text and "visual-only" in caplog.text
        assert len(imu.take_until(time.monotonic())) == 20  # what came before is still there
        assert not imu.wait_until(time.monotonic() + 10.0, timeout=5.0)  # returns at once: the IMU is dead
    finally:
        t = time.monotonic()
        imu.close()
        assert time.monotonic() - t < 1.0 and not imu._thread.is_alive()


# ------------------------------------------------------------------ reader over a plain stream
class ChunkStream:
    """A byte stream handing out queued chunks, then b"" (or an error)."""

    name = "fake-imu"

    def __init__(self, chunks, fail_at_end=False):
        self.chunks, self.fail_at_end = list(chunks), fail_at_end

    def read(self, n=1):
        if self.chunks:
            return self.chunks.pop(0)
        if self.fail_at_end:
            raise OSError(5, "Input/output error")
        return b""


def test_restarted_device_clock_is_taken_up_again():
    before = b"".join(imu_line(T0 + k * 5_000_000) for k in range(60))
    after = b"".join(imu_line(1_000_000 + k * 5_000_000) for k in range(60))  # clock back near 0
    imu = SerialImu(stream=ChunkStream([b"\n", before, after])).start()
    try:
        assert wait_for(lambda: imu.stats().samples == 120)
        st = imu.stats()
        assert st.clock_resets == 1 and st.out_of_order == 0 and st.dropouts == 0
        batch = imu.take_until(time.monotonic() + 1.0)
        assert len(batch) == 60 and np.all(np.diff(batch.t) > 0)  # the new epoch only (the ring restarts)
    finally:
        imu.close()


def test_over_long_line_without_end_is_dropped_up_to_its_end():
    imu = SerialImu(stream=ChunkStream([b"\n", b"y" * 200, b"z" * 200, b"w" * 200, b"tail\n", imu_line(T0)])).start()
    try:
        assert wait_for(lambda: imu.stats().samples == 1)
        st = imu.stats()
        assert (st.garbage, st.lines, st.partial) == (1, 2, 0)
        assert "no line end within 256 bytes" in st.last_error
    finally:
        imu.close()


def test_first_line_after_opening_is_a_resync():
    imu = SerialImu(stream=ChunkStream([b"62,0.5,9.81\n" + imu_line(T0)])).start()
    try:
        assert wait_for(lambda: imu.stats().samples == 1)
        assert imu.stats().partial == 1 and imu.stats().garbage == 0
    finally:
        imu.close()


def test_failing_stream_is_not_fatal():
    imu = SerialImu(stream=ChunkStream([b"\n", imu_line(T0)], fail_at_end=True)).start()
    assert wait_for(lambda: not imu.alive)
    assert imu.stats().disconnects == 1 and imu.stats().samples == 1
    imu.close()


def test_reopens_after_the_port_comes_back(monkeypatch):
    streams = [ChunkStream([b"\n", imu_line(T0)], fail_at_end=True), ChunkStream([b"\n", imu_line(T0 + 10**9)])]
    monkeypatch.setattr(SerialImu, "_open", lambda self: streams.pop(0))
    imu = SerialImu("/dev/ttyFAKE", reopen_s=0.05).start()
    try:
        assert wait_for(lambda: imu.stats().samples == 2 and imu.alive)
        st = imu.stats()
        assert (st.disconnects, st.reconnects) == (1, 1)
    finally:
        imu.close()


def test_ring_buffer_keeps_the_newest_samples():
    lines = b"".join(imu_line(T0 + k * 5_000_000, gyro=(k, 0, 0)) for k in range(120))
    imu = SerialImu(stream=ChunkStream([b"\n", lines]), buffer_samples=50).start()
    try:
        assert wait_for(lambda: imu.stats().samples == 120)
        batch = imu.take_until(time.monotonic() + 1.0)
        np.testing.assert_array_equal(batch.gyro[:, 0], np.arange(70, 120))
        assert np.all(np.diff(batch.t) > 0)
    finally:
        imu.close()


def _run_stream(chunks, n_samples: int) -> SimpleNamespace:
    imu = SerialImu(stream=ChunkStream([b"\n", *chunks])).start()
    try:
        assert wait_for(lambda: imu.stats().samples == n_samples)
        time.sleep(0.05)  # nothing more comes
        return imu.stats()
    finally:
        imu.close()


def test_one_bogus_time_stamp_is_dropped_not_a_dropout(caplog):
    """A stamp 4.6e9 s ahead used to count as a dropout of 4.6e9 s, then turned the clock over (a reset)."""
    before = b"".join(imu_line(T0 + k * 5_000_000) for k in range(60))
    bogus = imu_line(T0 + 4_600_000_000 * 10**9)
    after = b"".join(imu_line(T0 + (60 + k) * 5_000_000) for k in range(60))
    with caplog.at_level(logging.WARNING):
        st = _run_stream([before, bogus, after], 120)
    assert (st.dropouts, st.dropout_s, st.time_jumps, st.clock_resets, st.out_of_order) == (0, 0.0, 1, 0, 0)
    assert "a bogus time" in caplog.text and "dropout" not in caplog.text


def test_clock_set_forward_is_a_reset_not_a_dropout():
    before = b"".join(imu_line(T0 + k * 5_000_000) for k in range(60))
    after = b"".join(imu_line(T0 + 1000 * 10**9 + k * 5_000_000) for k in range(60))  # 1000 s ahead, and on from there
    st = _run_stream([before, after], 120)
    assert (st.clock_resets, st.dropouts, st.dropout_s, st.time_jumps) == (1, 0, 0.0, 0)


def test_dropout_warnings_are_rate_limited_and_counted(caplog):
    steady = [T0 + k * 5_000_000 for k in range(20)]
    flapping = [steady[-1] + k * 100_000_000 for k in range(1, 301)]  # 300 gaps of 0.1 s: each a dropout
    with caplog.at_level(logging.WARNING):
        st = _run_stream([b"".join(imu_line(t) for t in steady + flapping)], 320)
    assert st.dropouts == 300 and st.dropout_s == pytest.approx(30.0)
    assert caplog.text.count("dropout of") == 1  # the first; the rest within DROPOUT_LOG_EVERY_S only counted
