"""decode_labels: the same labels and rejections as decode_label one by one."""

from __future__ import annotations

from collections import Counter
from typing import Any

import msgpack
import numpy as np

from robot_daemon import wire
from robot_daemon.errors import WireError
from robot_daemon.wire.batch import decode_frames, decode_labels


def _label(seq: int, **changes: Any) -> bytes:
    obj: dict[str, Any] = {"seq": seq, "t": 10.0 + seq, "x": np.arange(4, dtype="<f4").tobytes(),
                           "y": bytes([0, 1]), "src": "s"}
    obj.update(changes)
    return msgpack.packb({k: v for k, v in obj.items() if v is not None})


PAYLOADS = [
    _label(0),
    _label(1, x=np.array([1, np.nan, 0, 0], dtype="<f4").tobytes()),  # non_finite
    _label(2, y=bytes([0, 2])),  # bad_label_value
    _label(3, x=[1.0, 2.0, 3.0, 4.0], y=[1, 1]),  # the list forms take the slow path
    _label(4, x=np.zeros(3, dtype="<f4").tobytes()),  # wrong_d
    _label(5, src=None),
    b"\xc1",  # bad_msgpack
    _label(6, extra=1),  # unknown_key
    _label(7, x=np.array([np.inf, 0, 0, 0], dtype="<f4").tobytes(), y=bytes([5, 0])),
    _label(8, src="\x1b]0;PWNED\x07"),  # bad_src
]


def _one_by_one(d: int | None, c: int | None) -> tuple[list[wire.Label], Counter[str]]:
    accepted, rejected = [], Counter[str]()
    for payload in PAYLOADS:
        try:
            label = wire.decode_label(payload, d=d, c=c)
        except WireError as exc:
            rejected[exc.reason] += 1
            continue
        d, c = len(label.x), len(label.y)
        accepted.append(label)
    return accepted, rejected


def test_decode_labels_accepts_and_rejects_as_decode_label() -> None:
    for d, c in ((4, 2), (None, None)):
        batch, d_out, c_out = decode_labels(PAYLOADS, d, c)
        accepted, rejected = _one_by_one(d, c)
        assert (d_out, c_out) == (4, 2)
        assert batch.rejected == rejected
        assert rejected["bad_src"] == 1
        assert batch.seq.tolist() == [label.seq for label in accepted] == [0, 3, 5]
        assert batch.t.tolist() == [label.t for label in accepted]
        assert batch.src == [label.src for label in accepted]
        np.testing.assert_array_equal(batch.X, np.stack([label.x for label in accepted]))
        np.testing.assert_array_equal(batch.Y, np.stack([label.y for label in accepted]))
        assert batch.X.dtype == np.float32
        assert batch.Y.dtype == np.uint8


def test_decode_labels_of_nothing_is_empty() -> None:
    batch, d, c = decode_labels([], 4, 2)
    assert batch.n == 0
    assert batch.X.shape == (0, 4)
    assert batch.Y.shape == (0, 2)
    assert (d, c) == (4, 2)


FRAMES = [
    wire.encode_frame(0, 1.0, np.arange(4, dtype=np.float32), src="a"),
    msgpack.packb({"seq": 1, "t": 2.0, "x": np.array([0, np.inf, 0, 0], "<f4").tobytes()}),
    msgpack.packb({"seq": 2, "t": 3.0, "x": [1.0, 2.0, 3.0, 4.0]}),  # the list form
    msgpack.packb({"seq": 3, "t": 4.0, "x": b"\x00" * 12}),  # wrong_d
    b"\x93",  # bad_msgpack
    wire.encode_frame(4, 5.0, np.ones(4, dtype=np.float32)),
    msgpack.packb({"seq": 5, "t": 6.0, "x": b"\x00" * 16, "src": "cam\x1b[2J"}),  # bad_src
]


def test_decode_frames_accepts_and_rejects_as_decode_frame() -> None:
    for d in (4, None):
        batch, d_out = decode_frames(FRAMES, d)
        accepted, rejected = [], Counter[str]()
        for payload in FRAMES:
            try:
                frame = wire.decode_frame(payload, d=d)
            except WireError as exc:
                rejected[exc.reason] += 1
                continue
            d = len(frame.x)
            accepted.append(frame)
        assert d_out == 4
        assert batch.rejected == rejected
        assert rejected["bad_src"] == 1
        assert batch.seq.tolist() == [f.seq for f in accepted] == [0, 2, 4]
        assert batch.src == [f.src for f in accepted]
        np.testing.assert_array_equal(batch.X, np.stack([f.x for f in accepted]))
