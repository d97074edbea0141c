"""The IMU line protocol: every separator style, comments, blank lines, and bad lines with their reasons."""

import pytest

from slam.sensors.imu_protocol import ImuLineError, ImuSample, parse_imu_line

GOOD = ImuSample(1403715273262142976, (-0.0991347, 0.1403244, 0.0209439), (8.1476011, -0.3759298, -2.4026093))
ROW = "1403715273262142976{s}-0.0991347{s}0.1403244{s}0.0209439{s}8.1476011{s}-0.3759298{s}-2.4026093"


@pytest.mark.parametrize("line", [
    ROW.format(s=","),
    ROW.format(s=", "),
    ROW.format(s=" ; "),
    ROW.format(s=";"),
    ROW.format(s=" "),
    ROW.format(s="\t"),
    ROW.format(s="   "),
    "  " + ROW.format(s=",") + "  \r\n",  # Arduino println, padded
    ROW.format(s=",") + ",",  # one trailing separator
    (ROW.format(s=",") + "\n").encode(),  # bytes
])
def test_good_lines(line):
    assert parse_imu_line(line) == GOOD


def test_decimal_seconds_timestamp_and_exponents():
    s = parse_imu_line("12.5,1e-3,0,0,0,0,9.81")
    assert s.t_ns == 12_500_000_000 and s.gyro == (0.001, 0.0, 0.0) and s.accel[2] == 9.81


@pytest.mark.parametrize("line", ["", "   ", "\r\n", "# comment", "  #timestamp [ns],w_RS_S_x [rad s^-1]", b"#x\n"])
def test_comments_and_blank_lines_are_none(line):
    assert parse_imu_line(line) is None


@pytest.mark.parametrize("line,reason", [
    ("1,2,3", "expected 7 fields t_ns,gx,gy,gz,ax,ay,az, got 3"),
    ("1,2,3,4,5,6,7,8", "expected 7 fields t_ns,gx,gy,gz,ax,ay,az, got 8"),
    ("hello world", "expected 7 fields"),
    ("1,0.1,,0.3,0,0,9.81", "field gy is empty"),
    ("1,0.1,abc,0.3,0,0,9.81", "field gy is not a number ('abc')"),
    ("1,0.1,0.2,nan,0,0,9.81", "field gz is not finite (nan)"),
    ("1,0.1,0.2,0.3,inf,0,9.81", "field ax is not finite (inf)"),
    ("1e9,0,0,0,0,0,9.81", "field t_ns is not integer nanoseconds or decimal seconds ('1e9')"),
    ("-5,0,0,0,0,0,9.81", "field t_ns out of range (-5)"),
    ("99999999999999999999,0,0,0,0,0,9.81", "field t_ns out of range"),
    ("nan.,0,0,0,0,0,9.81", "field t_ns is not integer"),
    (b"1,0,0,\xff,0,0,9.81", "not ASCII text"),
    ("1,0,0,0\x00,0,0,9.81", "NUL byte in line"),
])
def test_bad_lines_say_why(line, reason):
    with pytest.raises(ImuLineError) as e:
        parse_imu_line(line)
    assert e.value.reason.startswith(reason)
    assert isinstance(e.value, ValueError)
