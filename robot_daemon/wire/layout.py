"""Many frame payloads of one byte layout, decoded together: the daemon at high rates.

A frames publisher built on our encoder (:func:`robot_daemon.wire.encode_frame`) sends
payloads that differ only in the bytes of ``seq``, ``t`` and ``x``: the map header, the
keys, the type bytes and ``src`` are the same in every one of its frames of a length.
:func:`usual_frames` decodes the first payload of each length with
:func:`~robot_daemon.wire.decode.usual_frame`, takes the byte layout from it, and decodes
every other payload of that length with NumPy over all of them at once: the bytes outside
``seq``, ``t`` and ``x`` compared with the first's, ``seq`` read as a big-endian integer of
its width, ``t`` as a big-endian float64, ``x`` checked finite as float32. A payload that
differs anywhere else, or whose values fail a check, goes through ``usual_frame`` on its
own. So a payload decodes exactly as ``usual_frame`` would decode it: to the same frame,
or to ``None`` (the full checks of :func:`~robot_daemon.wire.decode_frame_raw` then give
the reason it is refused).

Measured (``scripts/bench_frame_path.py``, d = 16): 256 payloads at once take 0.23 x the
time of ``usual_frame`` on each (0.42 us a payload against 1.9 on a quiet VM); under
:data:`BULK_MIN` payloads the fixed cost of the NumPy calls (about 40 us) outweighs it and
they are decoded one by one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import itemgetter
from typing import Any, Final

import msgpack
import numpy as np
import numpy.typing as npt

from robot_daemon.wire.decode import USUAL_MAX_D, usual_frame
from robot_daemon.wire.messages import INT64_MAX, FrameFields, RawFrame

#: Payloads of one length from which decoding them together beats one by one.
BULK_MIN: Final = 32
#: msgpack's unsigned integer types and their widths in bytes.
_UINT_WIDTH: Final = {0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8}


@dataclass(frozen=True)
class Layout:
    """Where the values of one frame payload lie; the other bytes are fixed.

    seq_at, seq_width : ``seq``'s bytes; width 0: a positive fixint, the byte at
        ``seq_at`` is the value (below 0x80).
    t_at : the 8 bytes of ``t``, a big-endian float64.
    x_at : the ``4 d`` bytes of ``x``, float32 little-endian.
    fixed : ndarray (length,) bool, the bytes that must equal the first payload's.
    src : the ``src`` every payload of the layout carries (its bytes are fixed). It was
        checked once, in the first payload (``usual_frame``: printable, else no layout),
        so the payloads that share the layout need no check of their own.
    """

    seq_at: int
    seq_width: int
    t_at: int
    x_at: int
    fixed: npt.NDArray[np.bool_]
    src: str | None


def layout(payload: bytes, frame: RawFrame) -> Layout | None:
    """The layout of ``payload``, which :func:`usual_frame` decoded to ``frame`` (so its
    ``src`` passed the checks); ``None`` unless it is byte for byte what our encoder gives
    for that frame (keys in its order, the shortest encoding of each value)."""
    seq, t, x, src = frame
    obj: dict[str, object] = {"seq": seq, "t": t, "x": x}
    if src is not None:
        obj["src"] = src
    if msgpack.packb(obj) != payload:
        return None
    # 0x8N, then the key "seq" (a3 73 65 71): the value's first byte is at 5.
    width = 0 if seq < 0x80 else _UINT_WIDTH[payload[5]]
    seq_at = 5 if width == 0 else 6
    t_at = seq_at + max(width, 1) + 3  # after the key "t" (a1 74) and float64's cb
    x_at = t_at + 8 + 2 + (2 if len(x) < 256 else 3)  # the key "x", bin 8 or bin 16
    fixed = np.ones(len(payload), dtype=bool)
    fixed[seq_at:seq_at + max(width, 1)] = False
    fixed[t_at:t_at + 8] = False
    fixed[x_at:x_at + len(x)] = False
    return Layout(seq_at, width, t_at, x_at, fixed, src)


def usual_frames(payloads: Sequence[bytes], d: int) -> list[FrameFields | None]:
    """``[usual_frame(p, d) for p in payloads]``, the payloads of each layout decoded
    together (see the module docstring); a frame as its :data:`FrameFields`, equal to
    ``usual_frame``'s :class:`~robot_daemon.wire.RawFrame` (a NamedTuple each would cost
    0.2 us a frame, a third of the rest)."""
    if len(payloads) < BULK_MIN or d > USUAL_MAX_D:
        return [usual_frame(p, d) for p in payloads]
    lengths = list(map(len, payloads))
    if len(set(lengths)) == 1:  # the usual case: one publisher, or names alike
        return _same_length(payloads, d)
    frames: list[FrameFields | None] = [None] * len(payloads)
    by_length = np.asarray(lengths)
    for length in set(lengths):
        at = np.flatnonzero(by_length == length).tolist()
        for i, frame in zip(at, _same_length([payloads[i] for i in at], d), strict=True):
            frames[i] = frame
    return frames


def _same_length(payloads: Sequence[bytes], d: int) -> list[FrameFields | None]:
    """:func:`usual_frames` of payloads of one length: in rounds, the payloads left that
    have the layout of the first of them; alone once a round decodes too few."""
    rows = np.frombuffer(b"".join(payloads), dtype=np.uint8).reshape(len(payloads), -1)
    left = np.arange(len(payloads))
    frames: list[FrameFields | None] = [None] * len(payloads)
    while len(left) >= BULK_MIN:
        first = usual_frame(payloads[left[0]], d)
        form = None if first is None else layout(payloads[left[0]], first)
        if form is None:
            break
        x_of = itemgetter(slice(form.x_at, form.x_at + 4 * d))
        if len(left) == len(payloads):
            ok, seq, t = _values(rows, form, d)
            if ok.all():  # all of them in one round: the usual case
                return list(zip(seq.tolist(), t.tolist(), map(x_of, payloads),
                                repeat(form.src), strict=False))
        else:
            ok, seq, t = _values(rows[left], form, d)
        done = left[ok].tolist()
        decoded = zip(seq[ok].tolist(), t[ok].tolist(), (x_of(payloads[i]) for i in done),
                      repeat(form.src), strict=False)
        for i, frame in zip(done, decoded, strict=False):
            frames[i] = frame
        left = left[~ok]
        if len(done) < BULK_MIN:  # many layouts, few of each: not worth another round
            break
    for i in left.tolist():
        frames[i] = usual_frame(payloads[i], d)
    return frames


def _values(
    rows: npt.NDArray[np.uint8], form: Layout, d: int
) -> tuple[npt.NDArray[np.bool_], npt.NDArray[np.integer[Any]], npt.NDArray[np.float64]]:
    """Which of ``rows`` (n, length) have ``form`` and valid values: ``ok`` (n,) bool, and
    each row's ``seq`` (n,) and ``t`` (n,), meaningful where ``ok``."""
    ok = (rows[:, form.fixed] == rows[0, form.fixed]).all(axis=1)
    if form.seq_width == 0:
        seq: npt.NDArray[np.integer[Any]] = rows[:, form.seq_at]
        ok &= seq < 0x80
    else:
        seq = _column(rows, form.seq_at, f">u{form.seq_width}")
        if form.seq_width == 8:  # a uint 64 above int64's range is not a seq
            ok &= seq <= INT64_MAX
    t = _column(rows, form.t_at, ">f8")
    ok &= np.isfinite(t)
    ok &= np.isfinite(rows[:, form.x_at:form.x_at + 4 * d].copy().view("<f4")).all(axis=1)
    return ok, seq, t


def _column(rows: npt.NDArray[np.uint8], at: int, dtype: str) -> npt.NDArray[Any]:
    """The value of ``dtype`` at byte ``at`` of each row: ndarray (n,)."""
    width = np.dtype(dtype).itemsize
    return rows[:, at:at + width].copy().view(dtype)[:, 0]
