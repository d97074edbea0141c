import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slam.datasets.textfiles import column_floats, ns_to_s, read_rows
from slam.errors import DataError


@given(st.integers(0, 2_000_000_000), st.integers(0, 999_999))
def test_ns_to_s_matches_decimal_seconds(sec, usec):
    """Frame times written as '%.6f' seconds and IMU times in ns must compare exactly."""
    assert ns_to_s(np.array([sec * 10**9 + usec * 1000]))[0] == float(f"{sec}.{usec:06d}")


def test_read_rows_and_numbers(tmp_path):
    p = tmp_path / "a.csv"
    p.write_text("# header\n\n1, 2.5, 3\n4 5 6\n")
    rows, lines = read_rows(p, 3)
    assert lines == [3, 4]
    np.testing.assert_array_equal(column_floats(p, rows, lines, slice(0, 3)), [[1, 2.5, 3], [4, 5, 6]])
    p.write_text("1 2 3\n4 inf 6\n")
    rows, lines = read_rows(p, 3)
    with pytest.raises(DataError, match="non-finite") as e:
        column_floats(p, rows, lines, slice(0, 3))
    assert e.value.line == 2


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(DataError, match="missing"):
        read_rows(tmp_path / "nope.txt", 2)
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DataError, match="not a text file"):
        read_rows(tmp_path / "b.txt", 2)
