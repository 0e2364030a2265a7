"""The frames waiting for the next tick: a ring of ``max_batch`` slots that keeps the newest.

A frame goes into its slot as it arrives, as decoded (its fields,
:data:`robot_daemon.wire.messages.FrameFields`: its readings still the payload's float32
bytes), and the tick assembles the batch from
the slots in a few C-level passes (``zip``, ``bytes.join``, one ``np.frombuffer``). Per
frame, adding and taking cost 0.16 us each, where copying each frame's readings into a
row of a NumPy array and its fields into lists as it arrived cost 0.44 us: at the
highest rates, per-frame work between ticks is what limits the daemon. When more than
``max_batch`` frames arrive before a tick, the oldest are overwritten and counted: the rule of
:func:`robot_daemon.offline.replay.newest`, applied as frames arrive so that memory stays bounded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from robot_daemon import wire
from robot_daemon.errors import WireError
from robot_daemon.wire.messages import FrameFields

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Batch:
    """The frames one tick answers, oldest first.

    X : ndarray (n, d) float32, the readings (read-only: the frames' own bytes).
    seq, t, src : the frames' sequence numbers, sensor times and sources, length n.
    arrival_ns : ndarray (n,) int64, when each frame was received (monotonic ns).
    """

    X: npt.NDArray[np.float32]
    seq: list[int]
    t: list[float]
    src: list[str | None]
    arrival_ns: npt.NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.seq)


class PendingFrames:
    """At most ``max_batch`` frames of width ``d``; adding to a full one drops the oldest."""

    def __init__(self, max_batch: int, d: int) -> None:
        self.max_batch = max_batch
        self.d = d
        self._frames: list[FrameFields | None] = [None] * max_batch
        self._arrival = [0] * max_batch
        self._count = 0  # frames added since the last take, dropped ones included

    def __len__(self) -> int:
        return min(self._count, self.max_batch)

    def add(self, frame: FrameFields, arrival_ns: int) -> bool:
        """Store ``frame`` (its ``x`` of ``4 d`` bytes); ``True`` if the oldest pending
        frame was dropped for it."""
        i = self._count % self.max_batch
        self._frames[i] = frame
        self._arrival[i] = arrival_ns
        self._count += 1
        return self._count > self.max_batch

    def add_many(self, frames: Sequence[FrameFields], arrival_ns: Sequence[int]) -> int:
        """:meth:`add` of each frame in turn (``arrival_ns`` of the same length): how many
        pending frames were dropped for them."""
        before, size = self._count, self.max_batch
        skip = max(0, len(frames) - size)  # only the newest max_batch can stay
        self._count += skip
        frames, arrival_ns = frames[skip:], arrival_ns[skip:]
        i = self._count % size
        head = min(len(frames), size - i)  # up to the end of the ring, then from its start
        self._frames[i:i + head] = frames[:head]
        self._arrival[i:i + head] = arrival_ns[:head]
        self._frames[:len(frames) - head] = frames[head:]
        self._arrival[:len(frames) - head] = arrival_ns[head:]
        self._count += len(frames)
        return max(0, self._count - size) - max(0, before - size)

    def take(self, limit: int | None = None) -> Batch:
        """The pending frames, oldest first: all of them (the ring is empty afterwards), or
        the oldest ``limit``, the newer rest staying pending in order."""
        n = len(self)
        frames, arrival = self._frames[:n], self._arrival[:n]
        if self._count > self.max_batch:  # wrapped: the oldest kept frame is after the newest
            k = self._count % self.max_batch
            frames, arrival = _rotate(frames, k), _rotate(arrival, k)
        self._count = 0
        if limit is not None and limit < n:  # the rest back at the ring's start, in order
            self._frames[:n - limit], self._arrival[:n - limit] = frames[limit:], arrival[limit:]
            self._count, n = n - limit, limit
            frames, arrival = frames[:n], arrival[:n]
        seq, t, x, src = zip(*frames, strict=True) if n else ((), (), (), ())
        X = np.frombuffer(b"".join(x), dtype="<f4").reshape(n, self.d)  # the wire's byte order
        return Batch(X, list(seq), list(t), list(src), np.array(arrival, dtype=np.int64))


def _rotate(values: list[T], k: int) -> list[T]:
    return values[k:] + values[:k]


def encode_answers(tick: int, wall: float, batch: Batch, P: npt.NDArray[np.floating],
                   version: str) -> tuple[bytes | None, int]:
    """The ``pred`` payload answering ``batch`` with probabilities ``P`` (n, c) from
    model ``version``, and how many frames it left out: those the model answered with NaN
    (None when that is all of them)."""
    seq, t, src = batch.seq, batch.t, batch.src
    try:
        return wire.encode_pred(tick, wall, seq, P, version, t_frame=t, src=src), 0
    except WireError:
        # Readings at the edge of float32 can overflow the forward pass. Rare: so the
        # check runs only when the encoder refused, and the other frames are answered.
        keep = np.flatnonzero(np.isfinite(P).all(axis=1))
        if keep.size == 0:
            return None, len(batch)
        payload = wire.encode_pred(
            tick, wall, [seq[i] for i in keep], P[keep], version,
            t_frame=[t[i] for i in keep], src=[src[i] for i in keep])
        return payload, len(batch) - keep.size
