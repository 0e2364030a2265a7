"""Decoding many ``label`` (or ``frame``) payloads at once, as
:func:`~robot_daemon.wire.decode_label` (or ``decode_frame``) would one by one, into
arrays (the offline jobs on whole bags).

:func:`decode_labels` accepts and rejects exactly the payloads that ``decode_label`` with
the same ``d`` and ``c`` does, with the same reasons (:func:`decode_frames` likewise):
the map, its keys, ``seq``, ``t`` and ``src`` go through the same checks, and only the
two per-value checks of ``x`` (finite) and ``y`` (0 or 1) run once over the whole batch
instead of once per payload.
A row that fails them is decoded again one by one, so that its reason is the one
``decode_label`` gives. Anything but the common form (``x`` and ``y`` as ``bin`` of the
expected length) also takes the one-by-one path.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from robot_daemon.errors import WireError
from robot_daemon.wire.checks import int_field
from robot_daemon.wire.decode import (
    _check_keys,
    _src_field,
    _time_field,
    _unpack_map,
    decode_frame,
    decode_label,
)
from robot_daemon.wire.messages import (
    F32,
    FRAME_KEYS,
    FRAME_LIMITS,
    FRAME_REQUIRED,
    LABEL_KEYS,
    LABEL_REQUIRED,
    U8,
)


@dataclass(eq=False)
class LabelBatch:
    """Labels decoded from many payloads, in payload order.

    seq : (n,) int64; t : (n,) float64; X : (n, d) float32; Y : (n, c) uint8;
    src : n names (``None`` where a label had none); ``rejected`` counts the refused
    payloads by :class:`~robot_daemon.errors.WireError` reason.
    """

    seq: NDArray[np.int64]
    t: NDArray[np.float64]
    X: NDArray[np.float32]
    Y: NDArray[np.uint8]
    src: list[str | None]
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def n(self) -> int:
        return len(self.seq)


class _Rows:
    """The accepted rows so far, the readings and labels as raw bytes."""

    def __init__(self) -> None:
        self.seq: list[int] = []
        self.t: list[float] = []
        self.x = bytearray()
        self.y = bytearray()
        self.src: list[str | None] = []
        self.payloads: list[bytes] = []

    def add(self, seq: int, t: float, x: bytes, y: bytes, src: str | None, payload: bytes) -> None:
        self.seq.append(seq)
        self.t.append(t)
        self.x += x
        self.y += y
        self.src.append(src)
        self.payloads.append(payload)


def decode_labels(
    payloads: Iterable[bytes], d: int | None = None, c: int | None = None
) -> tuple[LabelBatch, int | None, int | None]:
    """Decode ``payloads`` as ``decode_label(p, d, c)`` would; return the batch, d and c.

    Where ``d`` or ``c`` is ``None``, the first valid label fixes it for the rest (as
    :func:`~robot_daemon.offline.train.read_labelled` does); the returned ``d`` and ``c``
    are the ones in force at the end.
    """
    rows = _Rows()
    rejected: Counter[str] = Counter()
    for payload in payloads:
        if d is None or c is None:
            d, c = _one_by_one(payload, d, c, rows, rejected)
            continue
        try:
            if not _fast(payload, d, c, rows):
                _one_by_one(payload, d, c, rows, rejected)
        except WireError as exc:
            rejected[exc.reason] += 1
    return _finish(rows, d, c, rejected), d, c


def _fast(payload: bytes, d: int, c: int, rows: _Rows) -> bool:
    """Add a label in the common form; ``False`` for any other form (raise if invalid)."""
    obj = _unpack_map(payload, FRAME_LIMITS, "label")
    _check_keys(obj, LABEL_REQUIRED, LABEL_KEYS, "label")
    x, y = obj["x"], obj["y"]
    if type(x) is not bytes or len(x) != 4 * d or type(y) is not bytes or len(y) != c:
        return False
    rows.add(int_field(obj["seq"], "seq", "negative_seq"), _time_field(obj["t"]), x, y,
             _src_field(obj), payload)
    return True


def _one_by_one(
    payload: bytes, d: int | None, c: int | None, rows: _Rows, rejected: Counter[str]
) -> tuple[int | None, int | None]:
    try:
        label = decode_label(payload, d=d, c=c)
    except WireError as exc:
        rejected[exc.reason] += 1
        return d, c
    rows.add(label.seq, label.t, label.x.tobytes(), label.y.tobytes(), label.src, payload)
    return len(label.x), len(label.y)


def _finish(rows: _Rows, d: int | None, c: int | None, rejected: Counter[str]) -> LabelBatch:
    n = len(rows.seq)
    X = np.frombuffer(bytes(rows.x), dtype=F32).reshape(n, d or 0)
    Y = np.frombuffer(bytes(rows.y), dtype=U8).reshape(n, c or 0)
    # The per-value checks of the fast rows, over the whole batch at once. A float32 sum
    # of finite values can overflow, so the check is on each value.
    bad = np.asarray(~np.isfinite(X).all(axis=1) | (Y > 1).any(axis=1), dtype=bool)
    keep = ~bad
    for i in np.flatnonzero(bad):
        try:
            decode_label(rows.payloads[i], d=d, c=c)
        except WireError as exc:
            rejected[exc.reason] += 1
            continue
        keep[i] = True  # pragma: no cover - the fast checks refuse only what decode_label does
    return LabelBatch(
        seq=np.asarray(rows.seq, dtype=np.int64)[keep],
        t=np.asarray(rows.t, dtype=np.float64)[keep],
        X=X if keep.all() else X[keep],
        Y=Y if keep.all() else Y[keep],
        src=[s for s, k in zip(rows.src, keep, strict=True) if k],
        rejected=rejected,
    )


@dataclass(eq=False)
class FrameBatch:
    """Frames decoded from many payloads, in payload order.

    seq : (n,) int64; t : (n,) float64; X : (n, d) float32; src : n names (or ``None``);
    ``rejected`` counts the refused payloads by reason.
    """

    seq: NDArray[np.int64]
    t: NDArray[np.float64]
    X: NDArray[np.float32]
    src: list[str | None]
    rejected: Counter[str] = field(default_factory=Counter)

    @property
    def n(self) -> int:
        return len(self.seq)


def decode_frames(
    payloads: Iterable[bytes], d: int | None = None
) -> tuple[FrameBatch, int | None]:
    """Decode ``payloads`` as ``decode_frame(p, d)`` would; return the batch and d.

    Where ``d`` is ``None``, the first valid frame fixes it for the rest.
    """
    rows = _Rows()
    rejected: Counter[str] = Counter()
    for payload in payloads:
        try:
            if d is None or not _fast_frame(payload, d, rows):
                frame = decode_frame(payload, d=d)
                d = len(frame.x)
                rows.add(frame.seq, frame.t, frame.x.tobytes(), b"", frame.src, payload)
        except WireError as exc:
            rejected[exc.reason] += 1
    n = len(rows.seq)
    X = np.frombuffer(bytes(rows.x), dtype=F32).reshape(n, d or 0)
    bad = np.flatnonzero(~np.isfinite(X).all(axis=1))
    keep = np.ones(n, dtype=bool)
    for i in bad:
        try:
            decode_frame(rows.payloads[i], d=d)
        except WireError as exc:
            rejected[exc.reason] += 1
            keep[i] = False
    batch = FrameBatch(
        seq=np.asarray(rows.seq, dtype=np.int64)[keep],
        t=np.asarray(rows.t, dtype=np.float64)[keep],
        X=X if keep.all() else X[keep],
        src=[s for s, k in zip(rows.src, keep, strict=True) if k],
        rejected=rejected,
    )
    return batch, d


def _fast_frame(payload: bytes, d: int, rows: _Rows) -> bool:
    """Add a frame whose x is ``bin`` of d floats; ``False`` for any other form."""
    obj = _unpack_map(payload, FRAME_LIMITS, "frame")
    _check_keys(obj, FRAME_REQUIRED, FRAME_KEYS, "frame")
    x = obj["x"]
    if type(x) is not bytes or len(x) != 4 * d:
        return False
    rows.add(int_field(obj["seq"], "seq", "negative_seq"), _time_field(obj["t"]), x, b"",
             _src_field(obj), payload)
    return True
