"""Bus messages on the wire: a JSON header plus raw array buffers, one multipart message.

Frames of one message::

    [topic (utf-8, for SUB prefix filtering), header (JSON, utf-8), buffer 0, buffer 1, ...]

The header carries ``v`` (protocol version), ``topic``, ``type``, ``seq``, ``stamp``
(float seconds), ``meta`` (a JSON object) and ``arrays``: one ``{name, dtype, shape}``
per buffer, in buffer order. Buffers are the arrays' bytes, C order, little-endian.

Decoding is strict and never runs code from the wire: no pickle, no eval, dtypes from
an allow-list of plain numeric types. Arrays are built on the received buffers without
copying (numpy arrays whose memory is the received frame's) and are read-only.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024  # a header is metadata only: shapes, dtypes, a camera, a few numbers
DEFAULT_MAX_MESSAGE_BYTES = 64 * 2**20  # all frames together; a 640x480 RGB-D frame is ~2.1 MB
MAX_ARRAYS = 64
MAX_FRAMES = MAX_ARRAYS + 2  # topic, header, one buffer per array
MAX_NDIM = 8
MAX_SEQ = 2**63 - 1  # sequence numbers and request ids are int64 on the wire
# numpy dtype strings accepted on the wire: bool, integers, floats, complex; little-endian
ALLOWED_DTYPES = frozenset(
    ["|b1", "|u1", "|i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8", "<f2", "<f4", "<f8", "<c8", "<c16"]
)
_DTYPES = {s: np.dtype(s) for s in ALLOWED_DTYPES}
_HEADER_KEYS = ("v", "topic", "type", "seq", "stamp", "meta", "arrays")


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


# built once: json.dumps / json.loads with options build a new encoder / decoder per call
_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


class BusMessageError(ValueError):
    """A message that does not follow the protocol; ``reason`` is a short key for counting."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail = detail[:300]  # the text may quote the wire; it is logged and reported
        super().__init__(f"{reason}: {detail}" if detail else reason)


@dataclass
class Message:
    """One bus message.

    topic: stream or service name (``slam.bus.topics``); type: payload kind (``"frame"``, ...);
    seq: sequence number per topic (publishers assign it) or request id (RPC);
    stamp: float seconds (sensor time for data, the request's stamp for answers);
    meta: JSON-able mapping; arrays: named numpy arrays sent as raw buffers.
    """

    topic: str
    type: str
    seq: int = 0
    stamp: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, np.ndarray] = field(default_factory=dict)


def _wire_array(a: np.ndarray) -> np.ndarray:
    """The array as sent: C-contiguous, little-endian; a view (no copy) when it already is."""
    a = np.asarray(a)
    if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
        a = a.astype(a.dtype.newbyteorder("<"))
    return a if a.flags.c_contiguous else a.copy(order="C")  # (np.ascontiguousarray makes 0-d arrays 1-d)


def encode(msg: Message, seq: int | None = None) -> list[bytes | np.ndarray]:
    """Frames for ``socket.send_multipart(frames, copy=False)``; ``seq`` replaces ``msg.seq`` when given.

    Array buffers are views of the caller's arrays (no copy): do not modify an array
    after publishing it (over ``inproc://`` the receiver sees the very same memory).
    Raises ``BusMessageError`` for what the receiver would refuse (dtype, header size).
    """
    specs, buffers = [], []
    for name, arr in msg.arrays.items():
        a = _wire_array(arr)
        dtype = a.dtype.str
        if dtype not in ALLOWED_DTYPES:
            raise BusMessageError("bad_dtype", f"array {name!r} has dtype {a.dtype} (not a plain numeric type)")
        specs.append({"name": str(name), "dtype": dtype, "shape": [int(n) for n in a.shape]})
        buffers.append(a)  # sent through the buffer protocol: its bytes, without a copy
    header = {
        "v": PROTOCOL_VERSION,
        "topic": msg.topic,
        "type": msg.type,
        "seq": int(msg.seq if seq is None else seq),
        "stamp": float(msg.stamp),
        "meta": msg.meta,
        "arrays": specs,
    }
    try:
        head = _ENCODER.encode(header).encode()
    except (TypeError, ValueError) as e:
        raise BusMessageError("bad_meta", f"header is not JSON-able: {e}") from None
    if len(head) > MAX_HEADER_BYTES:
        raise BusMessageError("header_too_large", f"{len(head)} bytes > {MAX_HEADER_BYTES}")
    return [msg.topic.encode(), head, *buffers]


def _buffer(frame: Any) -> memoryview:
    """The bytes of a received frame (``zmq.Frame``) or of plain bytes, without copying."""
    buf = getattr(frame, "buffer", frame)
    mv = memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_text(x: Any) -> bool:
    """A string that encodes to UTF-8 (JSON escapes can smuggle in lone surrogates, which do not)."""
    if not isinstance(x, str):
        return False
    try:
        x.encode()
    except UnicodeEncodeError:
        return False
    return True


def _check_header(h: Any, topic_frame: memoryview, n_buffers: int, max_bytes: int) -> None:
    if not isinstance(h, dict):
        raise BusMessageError("bad_header", "header is not a JSON object")
    missing = [k for k in _HEADER_KEYS if k not in h]
    if missing:
        raise BusMessageError("missing_field", f"header lacks {missing}")
    if not _is_int(h["v"]) or h["v"] != PROTOCOL_VERSION:
        raise BusMessageError("bad_version", f"protocol version {h['v']!r}, expected {PROTOCOL_VERSION}")
    if not _is_text(h["topic"]) or h["topic"].encode() != topic_frame:
        raise BusMessageError("bad_topic", "header topic differs from the topic frame")
    if not _is_text(h["type"]):
        raise BusMessageError("bad_field", "type is not a UTF-8 string")
    if not _is_int(h["seq"]) or not 0 <= h["seq"] <= MAX_SEQ:
        raise BusMessageError("bad_field", "seq is not an integer in 0..2**63-1")
    if not (_is_int(h["stamp"]) or isinstance(h["stamp"], float)) or not math.isfinite(float(h["stamp"])):
        raise BusMessageError("bad_field", "stamp is not a finite number")
    if not isinstance(h["meta"], dict):
        raise BusMessageError("bad_field", "meta is not a JSON object")
    specs = h["arrays"]
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise BusMessageError("bad_arrays", f"arrays is not a list of at most {MAX_ARRAYS}")
    if len(specs) != n_buffers:
        raise BusMessageError("buffer_count", f"header lists {len(specs)} arrays, message has {n_buffers} buffers")
    names = set()
    for s in specs:
        if not isinstance(s, dict) or not _is_text(s.get("name")) or s["name"] in names:
            raise BusMessageError("bad_arrays", "array entry without a unique string name")
        names.add(s["name"])
        if not isinstance(s.get("dtype"), str) or s["dtype"] not in ALLOWED_DTYPES:
            raise BusMessageError("bad_dtype", f"array {s['name']!r}: dtype {s.get('dtype')!r} not allowed")
        shape = s.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(_is_int(n) and n >= 0 for n in shape):
            raise BusMessageError("bad_shape", f"array {s['name']!r}: shape {str(shape)[:80]}")
        # numpy refuses shapes whose extent overflows its index type even when a zero makes them empty
        # ([0, 10**20]); bound the product of the non-zero extents by what a message may carry
        if math.prod(max(n, 1) for n in shape) * _DTYPES[s["dtype"]].itemsize > max_bytes:
            raise BusMessageError("bad_shape", f"array {s['name']!r}: shape {str(shape)[:80]} exceeds {max_bytes} bytes")


def decode(frames: Sequence[Any], max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> Message:
    """The message of ``frames`` (``recv_multipart(copy=False)``'s ``zmq.Frame`` list, or bytes).

    Arrays are read-only views of the received buffers (zero copy). ``max_bytes`` bounds the
    whole message. Raises ``BusMessageError`` on any deviation from the protocol, and on
    nothing else: whatever the bytes, a receiver only has to handle that one exception.
    """
    try:
        return _decode(frames, max_bytes)
    except BusMessageError:
        raise
    except Exception as e:  # noqa: BLE001 - a check this module lacks must not become a dead receiver
        raise BusMessageError("malformed", f"{type(e).__name__}: {str(e)[:200]}") from None


def _decode(frames: Sequence[Any], max_bytes: int) -> Message:
    if len(frames) < 2:
        raise BusMessageError("too_few_frames", f"{len(frames)} frame(s), need topic and header")
    if len(frames) > MAX_FRAMES:
        raise BusMessageError("too_many_frames", f"{len(frames)} frames")
    bufs = [_buffer(f) for f in frames]
    total = sum(b.nbytes for b in bufs)
    if total > max_bytes:
        raise BusMessageError("oversized", f"{total} bytes > {max_bytes}")
    if bufs[1].nbytes > MAX_HEADER_BYTES:
        raise BusMessageError("header_too_large", f"{bufs[1].nbytes} bytes > {MAX_HEADER_BYTES}")
    try:
        h = _DECODER.decode(str(bufs[1], "utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise BusMessageError("bad_json", str(e)[:200]) from None
    try:
        _check_header(h, bufs[0], len(bufs) - 2, max_bytes)
    except OverflowError:  # an integer too large for a float (stamp)
        raise BusMessageError("bad_field", "number out of range") from None
    arrays = {}
    for s, buf in zip(h["arrays"], bufs[2:]):
        dtype = _DTYPES[s["dtype"]]  # from the allow-list only
        shape = tuple(s["shape"])
        expected = math.prod(shape) * dtype.itemsize
        if buf.nbytes != expected:
            raise BusMessageError("size_mismatch", f"array {s['name']!r}: {buf.nbytes} bytes, shape needs {expected}")
        a = np.ndarray(shape, dtype, buffer=buf)  # a view of the received bytes
        a.flags.writeable = False
        arrays[s["name"]] = a
    return Message(h["topic"], h["type"], h["seq"], float(h["stamp"]), h["meta"], arrays)

