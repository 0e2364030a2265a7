"""Decoding frames many at a time (wire.layout.usual_frames) gives what usual_frame gives.

Each test compares ``usual_frames(payloads, d)`` with ``usual_frame`` on each payload alone,
on streams a publisher sends (seq crossing the widths of msgpack's integers, several
sources, ``src`` names of one length) with payloads one step off the layout mixed in,
bytes corrupted in place (the length kept, so that they meet the layout's check), and the
fuzzers of test_wire.
"""

from __future__ import annotations

import math
from typing import Any
from unittest import mock

import msgpack
import numpy as np
from hypothesis import example, given
from hypothesis import strategies as st

from robot_daemon.wire import layout
from robot_daemon.wire.decode import USUAL_MAX_D, usual_frame
from robot_daemon.wire.layout import BULK_MIN, usual_frames

from .test_wire import FUZZ, corrupted_bytes, mutated_maps

D = 16
INT64_MAX = 2**63 - 1
#: Where msgpack's encoding of an unsigned integer changes width, and the ends of int64.
SEQ_EDGES = [0, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, INT64_MAX - 64]


def _payload(seq: int, src: str | None, d: int = D, **changes: Any) -> bytes:
    obj: dict[str, Any] = {"seq": seq, "t": 1.7e9 + seq / 64,
                           "x": np.linspace(-1, 1, d, dtype="<f4").tobytes()}
    if src is not None:
        obj["src"] = src
    obj.update(changes)
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def _agree(payloads: list[bytes], d: int = D) -> list[Any]:
    """Assert that usual_frames gives usual_frame's frame for each payload; return them."""
    together = usual_frames(payloads, d)
    alone = [usual_frame(p, d) for p in payloads]
    assert [f is None for f in together] == [f is None for f in alone]
    assert together == alone
    return together


def _corrupt(payload: bytes, at: int, value: int) -> bytes:
    """``payload`` with one byte set: the length kept, so the layout's check sees it."""
    out = bytearray(payload)
    out[at % len(out)] = value
    return bytes(out)


def test_a_stream_decodes_together_as_each_alone() -> None:
    payloads = [_payload(seq, "lidar") for seq in range(130, 430)]
    with mock.patch.object(layout, "usual_frame", wraps=usual_frame) as alone:
        frames = _agree(payloads)
    assert all(frames)
    # One usual_frame for the first payload of each of the two lengths (seq 130..255 is
    # a uint 8, 256.. a uint 16): the others were decoded together.
    assert alone.call_count == 2


def test_odd_payloads_among_the_usual_ones_are_decoded_alone() -> None:
    nan = np.full(D, np.nan, "<f4").tobytes()
    payloads = [_payload(seq, "cam") for seq in range(200)]
    payloads[3] = _payload(3, "cam", x=nan)  # same length, a NaN: refused
    payloads[5] = _payload(5, "cam", t=math.inf)  # same length, t infinite: refused
    payloads[7] = _payload(7, "cam", x=nan[:8])  # shorter: another length
    payloads[9] = _pack_reordered(9)  # the keys in another order: same length
    payloads[11] = _payload(11, "cxm")  # another src of the same length
    payloads[13] = _corrupt(payloads[13], 1, 0xA4)  # the key "seq" broken
    payloads[15] = b"\xc1"
    frames = _agree(payloads)
    assert [i for i, f in enumerate(frames) if f is None] == [3, 5, 7, 13, 15]


def _pack_reordered(seq: int) -> bytes:
    out: bytes = msgpack.packb({"t": 1.0, "x": np.ones(D, "<f4").tobytes(), "seq": seq,
                                "src": "cam"})
    return out


def test_many_sources_of_one_length_are_each_decoded_together() -> None:
    payloads = [_payload(seq, f"robot-{seq % 3}") for seq in range(300, 600)]
    with mock.patch.object(layout, "usual_frame", wraps=usual_frame) as alone:
        _agree(payloads)
    assert alone.call_count == 3  # the first of each source's layout


def test_seq_of_every_width_and_the_end_of_int64() -> None:
    for edge in SEQ_EDGES:
        _agree([_payload(edge + k, None) for k in range(64)])
    top = [_payload(INT64_MAX, "a")] * BULK_MIN
    # The same layout with the uint 64 above int64's range: refused, as usual_frame does.
    over = _corrupt(top[0], 6, 0x80)
    assert usual_frame(over, D) is None
    assert _agree([*top, over])[-1] is None


def test_few_payloads_or_wide_frames_are_decoded_alone() -> None:
    wide = USUAL_MAX_D + 1
    for payloads, d in (([_payload(k, None) for k in range(BULK_MIN - 1)], D),
                        ([_payload(k, None, d=wide) for k in range(64)], wide)):
        with mock.patch.object(layout, "_same_length") as together:
            _agree(payloads, d)
        together.assert_not_called()


def test_the_widest_usual_frame_uses_bin_16() -> None:
    assert all(_agree([_payload(k, "s", d=USUAL_MAX_D) for k in range(40)], USUAL_MAX_D))


def test_usual_frame_is_what_the_layout_is_checked_against() -> None:
    """With usual_frame refusing everything, nothing is decoded together."""
    payloads = [_payload(k, None) for k in range(64)]
    with mock.patch.object(layout, "usual_frame", return_value=None):
        assert usual_frames(payloads, D) == [None] * 64


def test_a_src_that_is_not_printable_is_refused_in_bulk_as_alone() -> None:
    """The layout keeps the first payload's src for all that share its bytes: the check
    of that first one (usual_frame) must hold for them all, and a byte changed in place
    must take the payload out of the layout."""
    hostile = [_payload(seq, "\x1b]0;PWNED\x07\x1b[2J") for seq in range(64)]
    with mock.patch.object(layout, "layout", wraps=layout.layout) as built:
        assert _agree(hostile) == [None] * 64
    built.assert_not_called()  # no layout from a refused first payload
    payloads = [_payload(seq, "lidar") for seq in range(64)]
    at = payloads[0].index(b"lidar")
    payloads[40] = _corrupt(payloads[40], at + 2, 0x1B)  # "li\x1bar": same length
    frames = _agree(payloads)
    assert [i for i, f in enumerate(frames) if f is None] == [40]


streams = st.builds(
    lambda seq, srcs, n: [_payload(seq + k, srcs[k % len(srcs)]) for k in range(n)],
    st.sampled_from(SEQ_EDGES) | st.integers(0, INT64_MAX - 300),
    st.lists(st.none() | st.sampled_from(["a", "b", "ab", "é", "lidar", "r" * 40, "\x1b[2J",
                                          "a\u202eb", "l\u2028"]),
             min_size=1, max_size=3),
    st.integers(BULK_MIN, 3 * BULK_MIN),
)
# One change in place: (index into the stream, byte position, new value).
edits = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 200), st.integers(0, 255)),
                 max_size=6)
others = st.lists(mutated_maps() | corrupted_bytes(), max_size=6)


@FUZZ
@given(stream=streams, edits=edits, others=others, at=st.integers(0, 300))
@example(stream=[_payload(k, "a") for k in range(40)], edits=[(0, 9, 0x41)], others=[],
         at=0)  # the first payload refused: the layout comes from none
def test_a_fuzzed_stream_decodes_together_as_each_alone(
    stream: list[bytes], edits: list[tuple[int, int, int]], others: list[bytes], at: int,
) -> None:
    for i, pos, value in edits:
        stream[i % len(stream)] = _corrupt(stream[i % len(stream)], pos, value)
    for other in others:
        stream.insert(at % (len(stream) + 1), other)
    _agree(stream)
