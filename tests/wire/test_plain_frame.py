"""decode_frame_raw's fast path for the common frame agrees with the full checks.

The fast path (``wire.decode._plain_frame``) may only accept what the full checks accept,
with the same result; anything else goes to the full checks, so that every payload is
refused for the same reason. Each test compares ``decode_frame_raw`` with the fast path
against ``decode_frame_raw`` with it switched off, on valid payloads, on payloads one
step away from the common form, and on the fuzzers of test_wire.
"""

from __future__ import annotations

import math
from typing import Any
from unittest import mock

import msgpack
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_daemon import wire
from robot_daemon.errors import WireError
from robot_daemon.wire import decode

from .test_wire import FUZZ, corrupted_bytes, mutated_maps

D = 16
INT64_MAX = 2**63 - 1
ONES = np.ones(D, "<f4").tobytes()

Outcome = tuple[Any, ...]


def _outcome(payload: Any, d: int | None) -> Outcome:
    """The frame's fields and their types, or the rejection's reason and message."""
    try:
        frame = wire.decode_frame_raw(payload, d)
    except WireError as exc:
        return ("rejected", exc.reason, str(exc))
    return (*frame, *map(type, frame))


def _agree(payload: Any, d: int | None = D) -> Outcome:
    """Assert the fast path changes nothing for ``payload``; return the outcome."""
    fast = _outcome(payload, d)
    with mock.patch.object(decode, "_plain_frame", return_value=None):
        full = _outcome(payload, d)
    assert fast == full
    return fast


def _pack(obj: Any) -> bytes:
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _map16(obj: dict[str, Any]) -> bytes:
    """``obj`` packed with a map16 header where msgpack would write a fixmap."""
    return b"\xde" + len(obj).to_bytes(2, "big") + _pack(obj)[1:]


SPECIAL_F32 = st.sampled_from([0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF,
                               0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x80000000, 0x00800000])
F32_BITS = st.integers(0, 2**32 - 1) | SPECIAL_F32
FINITE_F32 = st.floats(width=32, allow_nan=False, allow_infinity=False)

# One step away from the common form, field by field: (field, value drawn in its place).
NEAR: dict[str, st.SearchStrategy[Any]] = {
    "seq": st.sampled_from([-1, INT64_MAX + 1, 2**64 - 1, True, False, 7.0, None, "7", b"7"]),
    "t": st.sampled_from([12, -3, True, None, "12.5", b"", math.nan, math.inf, -math.inf]),
    "src": st.sampled_from([None, 5, b"lidar", "", "é" * 64, "é" * 65, "r" * 300, ["a"],
                            "\x1b[2J", "lidar\u202e", "a\nb", "\x9b"]),
    "y": st.just(b"\x01"),
    "sq": st.integers(0, 3),
}
SHAPES = ("nan lane", "short", "long", "cut", "list", "str", "nil", "empty")
FORMS = ("map16", "repeat", "trailing", "truncated", "drop")


def _near_x(x: bytes, shape: str, data: st.DataObject) -> Any:
    if shape == "nan lane":
        i = data.draw(st.integers(0, len(x) // 4 - 1))
        bits = data.draw(SPECIAL_F32).to_bytes(4, "little")
        return x[:4 * i] + bits + x[4 * i + 4:]
    return {"short": x[:-4], "long": x + x[:4], "cut": x[:-data.draw(st.integers(1, 3))],
            "list": np.frombuffer(x, "<f4").tolist(), "str": "x", "nil": None,
            "empty": b""}[shape]


@st.composite
def near_frames(draw: st.DrawFn) -> bytes:
    """A frame our encoder could send (d = 16), or one to three steps away from one."""
    data = draw(st.data())
    x = np.array(draw(st.lists(FINITE_F32, min_size=D, max_size=D)), "<f4").tobytes()
    obj: dict[str, Any] = {"seq": draw(st.integers(0, INT64_MAX)),
                           "t": draw(st.floats(allow_nan=False, allow_infinity=False)), "x": x}
    if draw(st.booleans()):
        obj["src"] = draw(st.text(max_size=64))
    form = "plain"
    for _ in range(draw(st.integers(0, 3))):
        step = draw(st.sampled_from([*NEAR, "x", "form"]))
        if step == "x":
            obj["x"] = _near_x(x, draw(st.sampled_from(SHAPES)), data)
        elif step == "form":
            form = draw(st.sampled_from(FORMS))
        else:
            obj[step] = draw(NEAR[step])
    if form == "drop":
        del obj[draw(st.sampled_from(sorted(obj)))]
    packed = _pack(obj)
    if form == "map16":
        return _map16(obj)
    if form == "repeat":  # the header counts one entry more than the map holds
        key = draw(st.sampled_from(sorted(obj)))
        return bytes([packed[0] + 1]) + packed[1:] + _pack(key) + _pack(obj[key])
    if form == "trailing":
        return packed + b"\x00"
    return packed[:-1] if form == "truncated" else packed


def test_the_common_frames_take_the_fast_path() -> None:
    for d in (1, 3, 16, 64):
        x = np.linspace(-1e30, 3e38, d, dtype=np.float32)
        for src in (None, "lidar-front", "é" * 64):
            payload = wire.encode_frame(2**63 - 1, 1.7e9, x, src=src)
            obj = msgpack.unpackb(payload)
            assert decode._plain_frame(obj, payload[0], d) is not None
            assert _agree(payload, d)[:4] == (2**63 - 1, 1.7e9, x.tobytes(), src)


@pytest.mark.parametrize(
    "payload",
    [
        _pack({"seq": 1, "t": 1.0, "x": ONES, "src": None}),
        _pack({"seq": 1, "t": 1, "x": ONES}),
        _pack({"seq": 1, "t": 1.0, "x": np.ones(D, "<f4").tolist()}),
        _pack({"seq": 1, "t": 1.0, "x": ONES, "sq": 2}),
        _pack({"seq": True, "t": 1.0, "x": ONES}),
        _pack({"seq": 2**63, "t": 1.0, "x": ONES}),
        _pack({"seq": 1, "t": math.inf, "x": ONES}),
        _pack({"seq": 1, "t": 1.0, "x": np.full(D, np.nan, "<f4").tobytes()}),
        _pack({"seq": 1, "t": 1.0, "x": np.ones(D - 1, "<f4").tobytes()}),
        _map16({"seq": 1, "t": 1.0, "x": ONES}),
        b"\x84" + _pack({"seq": 1, "t": 1.0, "x": ONES})[1:] + b"\xa1t\x01",
    ],
    ids=["nil-src", "int-t", "array-x", "unknown-key", "bool-seq", "big-seq", "inf-t", "nan-x",
         "short-x", "map16", "repeated-key"],
)
def test_every_other_form_gets_the_full_checks(payload: bytes) -> None:
    """(A src over its limit never reaches the fast path: unpacking refuses it.)"""
    obj = msgpack.unpackb(payload, strict_map_key=False)
    assert decode._plain_frame(obj, payload[0], D) is None
    _agree(payload)


def test_no_d_or_a_wide_frame_gets_the_full_checks() -> None:
    for d in (None, 65, 300):
        payload = wire.encode_frame(1, 0.5, np.ones(d or D, dtype=np.float32))
        obj = msgpack.unpackb(payload)
        assert decode._plain_frame(obj, payload[0], d) is None
        _agree(payload, d)


@settings(max_examples=2000, deadline=None)
@given(payload=near_frames(), d=st.sampled_from([D, D, D, 15, 17, None]))
def test_frames_near_the_common_form_decode_as_without_the_fast_path(
    payload: bytes, d: int | None
) -> None:
    _agree(payload, d)


@FUZZ
@given(payload=corrupted_bytes() | mutated_maps() | st.binary(max_size=120))
def test_fuzzed_payloads_decode_as_without_the_fast_path(payload: bytes) -> None:
    _agree(payload)
    _agree(payload, 3)


def _usual_agrees(payload: bytes, d: int) -> None:
    """usual_frame (the daemon's short path) returns decode_frame_raw's frame, or None."""
    frame = decode.usual_frame(payload, d)
    if frame is not None:
        assert _outcome(payload, d) == (*frame, *map(type, frame))


@settings(max_examples=1000, deadline=None)
@given(payload=near_frames() | corrupted_bytes() | mutated_maps(),
       d=st.sampled_from([D, D, 15, 17]))
def test_the_short_path_gives_a_frame_only_as_the_full_checks_would(
    payload: bytes, d: int
) -> None:
    _usual_agrees(payload, d)


def test_the_short_path_takes_the_usual_frames_and_leaves_the_rest() -> None:
    usual = _pack({"seq": 3, "t": 1.5, "x": ONES, "src": "cam"})
    assert decode.usual_frame(usual, D) == wire.decode_frame_raw(usual, D)
    nan = np.full(D, np.nan, "<f4").tobytes()
    for other in (_map16({"seq": 3, "t": 1.5, "x": ONES}), _pack({"seq": 3, "t": 1.5, "x": nan}),
                  b"\xc1", b"", _pack({"seq": 3, "t": 1.5, "x": ONES, "y": 1}),
                  _pack({"seq": 3, "t": 1.5, "x": b"x" * 100_000})):
        assert decode.usual_frame(other, D) is None


@settings(max_examples=1000, deadline=None)
@given(lanes=st.lists(F32_BITS, min_size=1, max_size=80))
def test_the_integer_finiteness_check_agrees_with_numpy(lanes: list[int]) -> None:
    raw = b"".join(v.to_bytes(4, "little") for v in lanes)
    expected = bool(np.isfinite(np.frombuffer(raw, dtype="<f4")).all())
    assert decode._f32_bytes_finite(raw, len(lanes)) is expected


@pytest.mark.parametrize("n", [1, 2, 16, 63, 64])
def test_a_non_finite_value_is_found_in_every_position(n: int) -> None:
    for bits in (0x7F800000, 0xFF800000, 0x7FC00000, 0x7F800001, 0xFFFFFFFF):
        for i in range(n):
            lanes = [0x7F7FFFFF] * n  # the largest finite float32, next to each
            lanes[i] = bits
            raw = b"".join(v.to_bytes(4, "little") for v in lanes)
            assert not decode._f32_bytes_finite(raw, n)
        assert decode._f32_bytes_finite(b"\xff\xff\x7f\xff" * n, n)  # -3.4e38, finite


@pytest.mark.parametrize("obj", [[1, 2, 3], {"a": 1}, {"seq": 1, "t": 1.0, "x": ONES}])
def test_a_view_of_rows_is_read_as_its_bytes(obj: Any) -> None:
    """A 2-D memoryview of bytes decodes as its bytes: indexed as it is, it would give
    rows (memoryview raises NotImplementedError), not the map header's first byte."""
    payload = _pack(obj)
    rows = memoryview(payload).cast("B", shape=[1, len(payload)])
    assert _outcome(rows, D) == _outcome(payload, D) == _agree(payload)
