"""The wire format: round trips, zero-copy decoding, strict validation."""

from __future__ import annotations

import json
import time
import tracemalloc

import numpy as np
import pytest

from slam.bus.codec import (
    ALLOWED_DTYPES,
    MAX_HEADER_BYTES,
    PROTOCOL_VERSION,
    BusMessageError,
    Message,
    decode,
    encode,
)


def wire(msg: Message) -> list[bytes]:
    """The frames as a receiver gets them (separate byte strings)."""
    return [bytes(f) if not isinstance(f, bytes) else f for f in encode(msg)]


def header(**changes) -> bytes:
    h = {"v": PROTOCOL_VERSION, "topic": "t", "type": "x", "seq": 0, "stamp": 0.0, "meta": {}, "arrays": []}
    h.update(changes)
    return json.dumps(h).encode()


@pytest.mark.parametrize("dtype", sorted(ALLOWED_DTYPES))
def test_round_trip_every_dtype(dtype):
    rng = np.random.default_rng(0)
    a = (rng.random((3, 4, 2)) * 100).astype(dtype)
    back = decode(wire(Message("t", "x", 7, 1.25, {"k": [1, "a"]}, {"a": a})))
    assert back.topic == "t" and back.type == "x" and back.seq == 7 and back.stamp == 1.25 and back.meta == {"k": [1, "a"]}
    assert back.arrays["a"].dtype == np.dtype(dtype) and back.arrays["a"].shape == a.shape
    np.testing.assert_array_equal(back.arrays["a"], a)


def test_round_trip_0d_empty_noncontiguous_bigendian():
    arrays = {
        "scalar": np.array(3.5),
        "flag": np.array(True),
        "empty": np.zeros((0, 3), np.int32),
        "nothing": np.zeros(0, np.uint8),
        "transposed": np.arange(12.0).reshape(3, 4).T,
        "strided": np.arange(20, dtype=np.int16)[::3],
        "big_endian": np.arange(5, dtype=">f8"),
    }
    back = decode(wire(Message("t", "x", arrays=arrays)))
    for name, a in arrays.items():
        assert back.arrays[name].shape == a.shape, name
        np.testing.assert_array_equal(back.arrays[name], a)
    assert back.arrays["big_endian"].dtype == np.dtype("<f8")


def test_decoded_arrays_are_read_only_views_of_the_buffer():
    frames = wire(Message("t", "x", arrays={"a": np.arange(1000, dtype=np.float32)}))
    a = decode(frames).arrays["a"]
    assert not a.flags.writeable and not a.flags.owndata
    assert np.shares_memory(a, np.frombuffer(frames[2], np.uint8))


def test_decoding_50_mb_copies_nothing():
    big = np.ones((2500, 5000), np.float32)  # 50 MB
    frames = wire(Message("t", "x", arrays={"big": big, "img": np.zeros((480, 640, 3), np.uint8)}))
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        msg = decode(frames)
        dt = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000, f"decode allocated {peak} bytes"
    assert dt < 0.05
    assert msg.arrays["big"].shape == (2500, 5000) and np.shares_memory(msg.arrays["big"], np.frombuffer(frames[2], np.uint8))


def test_encode_refuses_object_arrays_and_unjsonable_meta():
    with pytest.raises(BusMessageError, match="bad_dtype"):
        encode(Message("t", "x", arrays={"o": np.array([{}, 1], dtype=object)}))
    with pytest.raises(BusMessageError, match="bad_meta"):
        encode(Message("t", "x", meta={"a": object()}))
    with pytest.raises(BusMessageError, match="bad_meta"):
        encode(Message("t", "x", meta={"a": float("nan")}))


GOOD = np.arange(6, dtype=np.float32).tobytes()
SPEC = {"name": "a", "dtype": "<f4", "shape": [2, 3]}

MALFORMED = {
    "too_few_frames": [b"t"],
    "bad_json": [b"t", b"{not json", GOOD],
    "not_utf8": [b"t", b"\xff\xfe", GOOD],
    "not_an_object": [b"t", b"[1, 2]"],
    "missing_field": [b"t", json.dumps({"v": 1, "topic": "t"}).encode()],
    "wrong_version": [b"t", header(v=99)],
    "topic_mismatch": [b"t", header(topic="other")],
    "seq_not_int": [b"t", header(seq="1")],
    "nan_stamp": [b"t", header(stamp=float("nan"))],
    "huge_stamp": [b"t", header(stamp=10**400)],
    "object_dtype": [b"t", header(arrays=[{**SPEC, "dtype": "|O"}]), GOOD],
    "list_dtype": [b"t", header(arrays=[{**SPEC, "dtype": ["<f4"]}]), GOOD],
    "structured_dtype": [b"t", header(arrays=[{**SPEC, "dtype": "<f4,<i4"}]), GOOD],
    "negative_shape": [b"t", header(arrays=[{**SPEC, "shape": [-2, -3]}]), GOOD],
    "float_shape": [b"t", header(arrays=[{**SPEC, "shape": [2.0, 3]}]), GOOD],
    "size_mismatch": [b"t", header(arrays=[{**SPEC, "shape": [2, 4]}]), GOOD],
    "too_many_buffers": [b"t", header(arrays=[SPEC]), GOOD, GOOD],
    "too_few_buffers": [b"t", header(arrays=[SPEC, {**SPEC, "name": "b"}]), GOOD],
    "duplicate_names": [b"t", header(arrays=[SPEC, SPEC]), GOOD, GOOD],
    "huge_header": [b"t", header(meta={"x": "y" * MAX_HEADER_BYTES})],
}


@pytest.mark.parametrize("name", sorted(MALFORMED))
def test_malformed_messages_are_refused(name):
    with pytest.raises(BusMessageError):
        decode(MALFORMED[name])


def test_oversized_message_is_refused():
    frames = wire(Message("t", "x", arrays={"a": np.zeros(1000, np.float64)}))
    with pytest.raises(BusMessageError, match="oversized"):
        decode(frames, max_bytes=4000)
    assert decode(frames, max_bytes=9000).arrays["a"].shape == (1000,)
