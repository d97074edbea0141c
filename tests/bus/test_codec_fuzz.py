"""Whatever a peer sends, the decoder answers with a message or ``BusMessageError``, never another exception."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, example, given, settings

from slam.bus.codec import PROTOCOL_VERSION, BusMessageError, Message, decode
from tests.bus.fuzz import messages


def _frames(**changes) -> list[bytes]:
    h = {"v": PROTOCOL_VERSION, "topic": "t", "type": "x", "seq": 0, "stamp": 0.0, "meta": {}, "arrays": []}
    h.update(changes)
    return [b"t", json.dumps(h).encode()]


def _array(shape, dtype="|u1") -> list[dict]:
    return [{"name": "a", "dtype": dtype, "shape": shape}]


@pytest.mark.parametrize("frames, reason", [
    (_frames(arrays=_array([0, 10**20])) + [b""], "bad_shape"),  # numpy: "Maximum allowed dimension exceeded"
    (_frames(arrays=_array([0, 2**40, 2**40], "<f8")) + [b""], "bad_shape"),  # numpy: "array is too big"
    (_frames(arrays=_array([10**400])) + [b""], "bad_shape"),
    (_frames(arrays=_array([-1])) + [b""], "bad_shape"),
    (_frames(topic="\udcff"), "bad_topic"),  # a lone surrogate: .encode() raised
    (_frames(type="\ud800") , "bad_field"),
    (_frames(arrays=[{"name": "\udcff", "dtype": "|u1", "shape": [1]}]) + [b"x"], "bad_arrays"),
    (_frames(seq=10**30), "bad_field"),
    (_frames(seq=-1), "bad_field"),
    (_frames(stamp=10**400), "bad_field"),  # an integer too large for a float
    ([b"t", b'{"v": 1' + b"0" * 5000 + b"}"], "bad_json"),  # more digits than Python converts to an int
    ([b"t", b"[" * 60_000], "bad_json"),  # nesting deeper than the parser's recursion
    ([b"t", b"\xff\xfe"], "bad_json"),
    ([b"t", b"[1, 2]"], "bad_header"),
    (_frames(arrays=_array([2])) + [b"ab", b"cd"], "buffer_count"),
])
def test_known_malformed_headers_are_bus_message_errors(frames, reason):
    with pytest.raises(BusMessageError) as e:
        decode(frames)
    assert e.value.reason == reason
    assert len(str(e.value)) < 400  # the text is logged and reported: bounded whatever the message


@settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
@example([b"t", json.dumps({"v": 1, "topic": "t", "type": "x", "seq": 0, "stamp": 0.0, "meta": {},
                            "arrays": [{"name": "a", "dtype": "|u1", "shape": [0, 10**20]}]}).encode(), b""])
def test_decoder_answers_any_frames_with_a_message_or_a_bus_message_error(frames):
    try:
        msg = decode(frames, max_bytes=1 << 20)
    except BusMessageError as e:
        assert e.reason and isinstance(e.reason, str)
        return
    assert isinstance(msg, Message)
    msg.topic.encode()  # what is accepted can be sent back (the server answers on the request's topic)
    assert 0 <= msg.seq < 2**63
