"""The daemon's pred packed in parts (wire.pred_rows, wire.encode_pred_rows): the same
bytes as encode_pred of the whole, and the same refusals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robot_daemon import wire
from robot_daemon.errors import WireError


def _rows(n: int, c: int = 8, seed: int = 0) -> tuple[list[int], np.ndarray, list[float],
                                                        list[str | None]]:
    rng = np.random.default_rng(seed)
    seq = [int(s) for s in rng.integers(0, 2**63 - 1, n)]
    t = [float(v) for v in rng.uniform(-1e9, 1e9, n)]
    src = [None if i % 3 else "lidar-" + "é" * (i % 7) for i in range(n)]
    return seq, rng.random((n, c)).astype(np.float32), t, src


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 40), min_size=1, max_size=4), c=st.integers(1, 64),
       tick=st.integers(0, 2**63 - 1), t=st.floats(-1e12, 1e12))
def test_parts_pack_to_the_bytes_of_encode_pred(
    sizes: list[int], c: int, tick: int, t: float
) -> None:
    """Split anywhere (fixarray, array16 boundaries included): byte for byte the same."""
    seq, P, t_frame, src = _rows(sum(sizes), c)
    parts, start = [], 0
    for size in sizes:
        end = start + size
        parts.append(wire.pred_rows(seq[start:end], P[start:end], t_frame[start:end],
                                    src[start:end]))
        start = end
    whole = wire.encode_pred(tick, t, seq, P, "v3+12", t_frame=t_frame, src=src)
    assert wire.encode_pred_rows(tick, t, "v3+12", parts) == whole
    pred = wire.decode_pred(whole)
    assert pred.seq.tolist() == seq
    assert np.array_equal(pred.p, P)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda r: ([-1, *r[0][1:]], *r[1:]), "negative_seq"),
    (lambda r: ([True, *r[0][1:]], *r[1:]), "wrong_type"),
    (lambda r: ([1.0, *r[0][1:]], *r[1:]), "wrong_type"),
    (lambda r: (r[0], np.where(np.eye(3, 8, dtype=bool), np.nan, r[1]).astype(np.float32),
                *r[2:]), "non_finite"),
    (lambda r: (r[0], r[1] + np.float32(1.5), *r[2:]), "out_of_range"),
    (lambda r: (r[0], r[1].astype(np.float64), *r[2:]), "wrong_n"),
    (lambda r: (r[0], r[1][:2], *r[2:]), "wrong_n"),
    (lambda r: (r[0], r[1], r[2][:2], r[3]), "wrong_n"),
    (lambda r: ([], r[1][:0], [], []), "wrong_n"),
])
def test_rows_are_refused_as_encode_pred_refuses_them(
    change: Callable[[Any], Any], reason: str
) -> None:
    seq, P, t, src = change(_rows(3))
    with pytest.raises(WireError) as refused:
        wire.pred_rows(seq, P, t, src)
    assert refused.value.reason == reason


def test_the_message_around_the_rows_is_checked() -> None:
    rows = wire.pred_rows(*_rows(2))
    other_c = wire.pred_rows(*_rows(2, c=3))
    for args, reason in [((-1, 0.0, "v", [rows]), "negative_seq"),
                         ((1, float("nan"), "v", [rows]), "non_finite"),
                         ((1, 0.0, 7, [rows]), "wrong_type"),
                         ((1, 0.0, "v", []), "wrong_n"),
                         ((1, 0.0, "v", [rows, other_c]), "wrong_c")]:
        with pytest.raises(WireError) as refused:
            wire.encode_pred_rows(*args)  # type: ignore[arg-type]
        assert refused.value.reason == reason
