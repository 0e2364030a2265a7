"""Which served frames are worth capturing: the triggers of ``run --capture``.

Three triggers are masks over one tick's rows, pure NumPy on arrays the tick already has
(the served probabilities, the thresholds, the shadow's answer, a label's targets), so
that they cost the tick a few vector operations and nothing per frame in Python. The
fourth, ``health``, needs the frames *before* an event: :class:`Recent` keeps the last
few seconds of frames, bounded in time and in count, and says when the seconds after a
health change are over.

Design: docs/architecture.md, "Capture".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from itertools import repeat
from typing import Any, Final, Generic, TypeVar

import numpy as np
from numpy.typing import NDArray

#: The reasons a frame is captured for, one per trigger (the ``capture`` topic's
#: ``reasons``, the keys of ``capture_by_reason``).
UNCERTAIN: Final = "uncertain"
DISAGREE: Final = "disagree"
CONTRADICT: Final = "contradict"
HEALTH: Final = "health"
REASONS: Final = (UNCERTAIN, DISAGREE, CONTRADICT, HEALTH)

#: What :class:`Recent` plans for when it bounds its count: a robot's sensors publish at
#: 50 Hz at most, and a daemon reads a few of them.
RECENT_RATE_HZ: Final = 50
RECENT_SOURCES: Final = 8

T = TypeVar("T")
Mask = NDArray[np.bool_]


def decisions(P: NDArray[np.floating[Any]], thresholds: NDArray[np.floating[Any]]) -> Mask:
    """The thresholded decisions, as the daemon's planner takes them.

    P : (n, c) probabilities. thresholds : (c,) per-class thresholds.
    Returns (n, c) bool: ``P >= thresholds``.
    """
    return np.asarray(P) >= np.asarray(thresholds)


def uncertain(
    P: NDArray[np.floating[Any]], thresholds: NDArray[np.floating[Any]], margin: float
) -> Mask:
    """Frames where some class's served probability is within ``margin`` of its threshold.

    P : (n, c) served probabilities. thresholds : (c,). margin : >= 0, in probability.
    Returns (n,) bool.

    The frames the serving model is least sure of are where a human label or a training
    step moves the decision boundary most (uncertainty sampling).
    """
    near = np.abs(np.asarray(P) - np.asarray(thresholds)) <= margin
    return np.asarray(near.any(axis=1))


def disagree(
    P_serving: NDArray[np.floating[Any]],
    P_shadow: NDArray[np.floating[Any]],
    thresholds: NDArray[np.floating[Any]],
    shadow_thresholds: NDArray[np.floating[Any]] | None = None,
) -> Mask:
    """Frames where the shadow's thresholded decision differs from the serving one in
    some class.

    P_serving, P_shadow : (n, c) probabilities of the same frames. thresholds : (c,), the
    serving model's; shadow_thresholds : (c,), the shadow's (default: the serving
    model's): each model decides as it would in service.
    Returns (n,) bool.
    """
    theirs = thresholds if shadow_thresholds is None else shadow_thresholds
    differ = decisions(P_serving, thresholds) != decisions(P_shadow, theirs)
    return np.asarray(differ.any(axis=1))


def contradicts(
    P_serving: NDArray[np.floating[Any]], Y: NDArray[Any], thresholds: NDArray[np.floating[Any]]
) -> Mask:
    """Labelled frames whose targets differ from the served decision in some class.

    P_serving : (n, c) probabilities. Y : (n, c) targets, 0 or 1 (any integer or bool
    dtype). thresholds : (c,). Returns (n,) bool: the frames the model got wrong.
    """
    wrong = decisions(P_serving, thresholds) != np.asarray(Y).astype(bool)
    return np.asarray(wrong.any(axis=1))


class Recent(Generic[T]):
    """The frames of the last ``window_s`` seconds, for the ``health`` trigger.

    On a health change (a sensor going stale, or back) the frames just before it are worth
    keeping: they show what the robot saw as the sensor failed. The daemon adds each
    tick's frames that no other trigger took (a frame already captured is not captured
    twice), calls :meth:`health_changed` when liveness reports a change and captures what
    it returns, then captures every frame while :meth:`in_window` holds.

    The ring is bounded in time (``window_s``) and in count: ``max_frames`` (by default
    50 Hz x ``window_s`` x 8 sources) keeps a flood of frames from growing it; past it the
    oldest go first. Times are the caller's clock in integer ns (monotonic).
    """

    def __init__(self, window_s: float, max_frames: int | None = None) -> None:
        if not (math.isfinite(window_s) and window_s > 0):
            raise ValueError(f"window_s must be a positive number of seconds, got {window_s}")
        self.window_ns = round(window_s * 1e9)
        if max_frames is None:
            max_frames = math.ceil(RECENT_RATE_HZ * window_s * RECENT_SOURCES)
        if max_frames < 1:
            raise ValueError(f"max_frames must be at least 1, got {max_frames}")
        self.max_frames = max_frames
        self._ring: deque[tuple[int, T]] = deque(maxlen=max_frames)
        self._until_ns: int | None = None

    def __len__(self) -> int:
        return len(self._ring)

    def add(self, frames: Iterable[T], now_ns: int) -> None:
        """Remember ``frames``, received at ``now_ns``; forget what is older than the window."""
        self._ring.extend(zip(repeat(now_ns), frames))  # deque(maxlen) drops the oldest
        self._forget(now_ns)

    def health_changed(self, now_ns: int) -> list[T]:
        """The frames of the last window, oldest first, to capture now; opens the window
        after the change (:meth:`in_window`). Each frame is returned once: the ring is
        emptied, so a second change soon after does not capture the same frames again."""
        self._forget(now_ns)
        frames = [frame for _, frame in self._ring]
        self._ring.clear()
        self._until_ns = now_ns + self.window_ns
        return frames

    def in_window(self, now_ns: int) -> bool:
        """Whether ``now_ns`` is within ``window_s`` after the last health change."""
        if self._until_ns is None:
            return False
        if now_ns < self._until_ns:
            return True
        self._until_ns = None
        return False

    def _forget(self, now_ns: int) -> None:
        oldest = now_ns - self.window_ns
        ring = self._ring
        while ring and ring[0][0] < oldest:
            ring.popleft()
