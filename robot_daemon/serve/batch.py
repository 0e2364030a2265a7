"""The frames waiting for the next tick: a preallocated ring that keeps the newest.

Frames are copied into their row of a ``(max_batch, d)`` float32 array as they arrive,
between ticks, so that the tick itself does not assemble the batch (``np.stack`` over
hundreds of small arrays, right when latency matters). When more than ``max_batch``
frames arrive before a tick, the oldest are overwritten and counted: the rule of
:func:`robot_daemon.offline.replay.newest`, applied as frames arrive so that memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from robot_daemon import wire

T = TypeVar("T")


@dataclass(frozen=True, eq=False)
class Batch:
    """The frames one tick answers, oldest first.

    X : ndarray (n, d) float32, the readings (a view into the ring: use before the next add).
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
        self._X = np.empty((max_batch, d), dtype="<f4")  # the wire's byte order
        # The ring as flat bytes: a frame's readings go in as one slice assignment of its
        # payload bytes, about 4x cheaper than assigning a NumPy row.
        self._bytes = self._X.data.cast("B")
        self._width = 4 * d
        self._arrival = np.empty(max_batch, dtype=np.int64)
        self._seq: list[int] = [0] * max_batch
        self._t: list[float] = [0.0] * max_batch
        self._src: list[str | None] = [None] * max_batch
        self._count = 0  # frames added since the last take, dropped ones included

    def __len__(self) -> int:
        return min(self._count, self.max_batch)

    @property
    def d(self) -> int:
        return self._X.shape[1]

    def add(self, frame: wire.RawFrame, arrival_ns: int) -> bool:
        """Store ``frame`` (its ``x`` of ``4 d`` bytes); ``True`` if the oldest pending
        frame was dropped for it."""
        i = self._count % self.max_batch
        start = i * self._width
        self._bytes[start:start + self._width] = frame.x
        self._arrival[i] = arrival_ns
        self._seq[i], self._t[i], self._src[i] = frame.seq, frame.t, frame.src
        self._count += 1
        return self._count > self.max_batch

    def take(self) -> Batch:
        """The pending frames, oldest first; the ring is empty afterwards."""
        n = len(self)
        if self._count <= self.max_batch:
            batch = Batch(self._X[:n], self._seq[:n], self._t[:n], self._src[:n],
                          self._arrival[:n].copy())
        else:  # wrapped: the oldest kept frame sits just after the newest
            k = self._count % self.max_batch
            order = np.r_[k:n, 0:k]
            batch = Batch(self._X[order], _rotate(self._seq, k), _rotate(self._t, k),
                          _rotate(self._src, k), self._arrival[order])
        self._count = 0
        return batch


def _rotate(values: list[T], k: int) -> list[T]:
    return values[k:] + values[:k]
