"""Hypothesis strategies for malformed bus messages: headers and part lists as a hostile peer could send them."""

from __future__ import annotations

import json
import math

from hypothesis import strategies as st

from slam.bus.codec import ALLOWED_DTYPES, PROTOCOL_VERSION

_scalars = (st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats()
            | st.text(max_size=6) | st.sampled_from(["\udcff", "t\ud800x"]))  # lone surrogates survive JSON escapes
json_values = st.recursive(_scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=5), c, max_size=4),
                           max_leaves=16)
_dims = (st.integers(-2, 12) | st.integers(0, 10**30) | st.sampled_from([2**31, 2**62, 2**63, 2**64, 10**20])
         | json_values)
_array_spec = st.fixed_dictionaries({
    "name": st.text(max_size=3) | json_values,
    "dtype": st.sampled_from([*sorted(ALLOWED_DTYPES), "<f16", "O", "|V8", ">f8", "<U4", "float32"]) | json_values,
    "shape": st.lists(_dims, max_size=10) | json_values,
})
_header = st.fixed_dictionaries({
    "v": st.just(PROTOCOL_VERSION) | json_values,
    "topic": st.just("t") | st.text(max_size=3) | st.sampled_from(["\udcff"]) | json_values,
    "type": st.just("depth") | st.just("heartbeat") | json_values,
    "seq": st.integers(0, 10) | st.integers() | st.integers(2**62, 10**40) | json_values,
    "stamp": st.floats() | st.integers() | json_values,
    "meta": st.just({}) | json_values,
    "arrays": st.lists(_array_spec, max_size=4) | json_values,
}).flatmap(lambda h: st.sets(st.sampled_from(sorted(h)), max_size=1).map(
    lambda drop: {k: v for k, v in h.items() if k not in drop}))


def _dumps(obj) -> bytes:
    return json.dumps(obj).encode()  # ensure_ascii: surrogates become \\udcff escapes, valid UTF-8 on the wire


def _part_size(spec) -> int | None:
    """The byte size a spec asks for, when it is small and well-formed enough to compute."""
    try:
        dtype_size = {"|b1": 1, "|u1": 1, "|i1": 1}.get(spec["dtype"], int(spec["dtype"][2:]))
        n = math.prod(int(d) for d in spec["shape"]) * dtype_size
    except Exception:  # noqa: BLE001 - anything odd: no fitting size
        return None
    return n if 0 <= n <= 4096 else None


@st.composite
def messages(draw) -> list[bytes]:
    """The frames of one message: [topic, header, *parts], from near-valid to garbage."""
    kind = draw(st.sampled_from(["header", "header", "header", "json", "bytes", "nested"]))
    h = None
    if kind == "header":
        h = draw(_header)
        head = _dumps(h)
    elif kind == "json":
        head = _dumps(draw(json_values))
    elif kind == "bytes":
        head = draw(st.binary(max_size=64))  # often not UTF-8, not JSON
    else:
        depth = draw(st.integers(1, 200_000))
        head = draw(st.sampled_from([b"[", b'{"a":'])) * depth
    topic = draw(st.just(None) | st.binary(max_size=4))
    if topic is None:
        t = h.get("topic") if isinstance(h, dict) else None
        topic = t.encode("utf-8", "surrogatepass") if isinstance(t, str) else b"t"
    specs = h.get("arrays") if isinstance(h, dict) and isinstance(h.get("arrays"), list) else []
    if draw(st.booleans()):  # parts that fit the header where it can be fitted, so decoding goes deep
        parts = [bytes(_part_size(s) or 0) if isinstance(s, dict) else b"" for s in specs]
    else:
        parts = draw(st.lists(st.binary(max_size=32), max_size=70))
    return [topic, head, *parts]
