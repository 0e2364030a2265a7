"""Where the tick grid falls against the frames: a phase lock (``tick_phase = "auto"``).

A frame waits for the next deadline of the fixed 20 ms grid; with a 50 Hz sensor the wait
is the same every frame, set by when the daemon and the sensor happened to start: 0.5 ms
in one run, 19 ms in the next. :class:`PhaseLock` watches how long each source's frames
wait (deadline minus arrival) and moves the grid so that the deadlines fall just after
the frames, by a margin that covers their jitter. The interval never changes; a move
shifts the deadlines after it, at most half an interval at a time, so two ticks are never
closer than half an interval, and a frame is still answered by exactly one tick.

Several sources: the placement that gives the worst source the shortest typical wait
(each source's latest frames at least a margin before the deadline). Sources without a
stable phase (more than one frame a tick, or a spread of arrivals over a quarter of the
interval: bursts, high rates) are left out: a move neither helps nor hurts them on
average. With no stable source the grid stays where it is.
Design: docs/architecture.md, "The tick's timing".
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

#: Ticks of waits a decision looks at (1 s at 20 ms), and the least a source needs in it.
WINDOW_TICKS: Final = 50
MIN_FRAMES: Final = 20
#: Ticks between two decisions once a window is full.
DECIDE_EVERY: Final = 25
#: The least margin between a source's latest frames and the deadline; the margin is
#: this plus twice how much later than the median its latest frames come (1st percentile
#: of the waits).
MIN_MARGIN_NS: Final = 500_000
#: A move must shorten the worst source's typical wait by this much (a source whose
#: latest frames came closer to the deadline than half its margin, a sensor's clock
#: drifting towards missing its tick, counts a whole interval): hysteresis, so that the
#: grid does not wander.
MIN_GAIN_NS: Final = 1_000_000
#: A source is stable when its arrivals spread over at most this share of the interval.
MAX_SPREAD: Final = 0.25


class _Source:
    """A stable source's waits: its latest frames' (1st percentile), its typical one
    (median), and the margin its spread asks for, all in ns."""

    __slots__ = ("latest", "margin", "typical")

    def __init__(self, latest: int, typical: int, margin: int) -> None:
        self.latest, self.typical, self.margin = latest, typical, margin


class PhaseLock:
    """Per source, the waits of its frames; :meth:`shift` says how far to move the grid.

    ``interval_ns``: the tick interval. ``enabled``: False for ``tick_phase = "fixed"``:
    nothing is recorded, and :meth:`shift` always says 0.
    """

    def __init__(self, interval_ns: int, enabled: bool) -> None:
        self.interval_ns = interval_ns
        self.enabled = enabled
        self.moves = 0
        self.offset_ns = 0  # the grid against where it started, mod the interval
        #: A source has a phase to lock to: the loop then reads frames as they come up to
        #: the deadline, so that their arrival is not stamped late (serve.daemon._wait).
        self.locked = False
        self._waits: defaultdict[str | None, deque[npt.NDArray[np.int64]]] = defaultdict(
            lambda: deque(maxlen=WINDOW_TICKS))
        self._ticks = 0  # ticks recorded since the last move (or the start)

    def observe(self, deadline_ns: int, arrival_ns: npt.NDArray[np.int64],
                src: Sequence[str | None]) -> None:
        """The frames one tick served: ``arrival_ns`` (n,) when each arrived, ``src``
        (n,) its source."""
        if not self.enabled:
            return
        self._ticks += 1
        for window in self._waits.values():
            window.append(_NONE)  # every source's window counts the ticks, silent or not
        if not len(arrival_ns):
            return
        waits = deadline_ns - arrival_ns
        first = src[0]
        if all(s == first for s in src):  # the usual tick: one source
            self._record(first, waits)
            return
        for key in set(src):
            self._record(key, waits[[s == key for s in src]])

    def _record(self, key: str | None, waits: npt.NDArray[np.int64]) -> None:
        window = self._waits[key]
        if window and window[-1] is _NONE:
            window[-1] = waits
        else:
            window.append(waits)

    def shift(self) -> int:
        """How far to move the next deadlines earlier (ns; negative: later), within
        (-interval/2, interval/2]; 0 when the grid stays. Called after each tick."""
        if not self.enabled or self._ticks < WINDOW_TICKS or self._ticks % DECIDE_EVERY:
            return 0
        sources = self._stable()
        self.locked = bool(sources)
        if not sources:
            return 0
        # Where it is, a source is too close only within half its margin: hysteresis.
        now_cost = self._cost(sources, 0, lambda s: s.margin // 2)
        best, best_cost = 0, now_cost
        for source in sources:
            move = source.latest - source.margin
            cost = self._cost(sources, move, lambda s: s.margin)
            if cost < best_cost:
                best, best_cost = move, cost
        if best == 0 or now_cost - best_cost < MIN_GAIN_NS:
            return 0
        half = self.interval_ns // 2
        move = (best + half) % self.interval_ns - half
        if move == -half:
            move = half
        self.moves += 1
        self.offset_ns = (self.offset_ns - move) % self.interval_ns
        self._waits.clear()  # waits against the old grid
        self._ticks = 0
        return move

    def _cost(self, sources: list[_Source], move: int,
              need: Callable[[_Source], int]) -> int:
        """The worst source's typical wait once the grid moved ``move`` earlier; a source
        whose latest frames would then come within ``need(source)`` of the deadline counts
        a whole interval more (they risk the next tick)."""
        worst = 0
        for s in sources:
            latest = (s.latest - move) % self.interval_ns
            wait = latest + (s.typical - s.latest)
            if latest < need(s):
                wait += self.interval_ns
            worst = max(worst, wait)
        return worst

    def _stable(self) -> list[_Source]:
        """The sources with a phase to lock to; the silent ones are forgotten."""
        stable: list[_Source] = []
        for key, window in list(self._waits.items()):
            ticks = [w for w in window if w is not _NONE]
            if not ticks:
                del self._waits[key]
                continue
            waits = np.concatenate(ticks)
            if len(waits) < MIN_FRAMES or len(waits) > 1.5 * len(window):
                continue  # too few, or more than one a tick: no phase
            latest, low, median, high = (
                int(v) for v in np.percentile(waits, [1, 5, 50, 95]))
            if high - low > MAX_SPREAD * self.interval_ns or latest < 0:
                continue  # bursts, or frames already late: nothing to place
            # The margin covers how much later than usual the late ones come (a sender's
            # scheduling hiccups): a frame past its deadline waits a whole tick more.
            margin = min(MIN_MARGIN_NS + 2 * (median - latest), self.interval_ns // 4)
            stable.append(_Source(latest, median, margin))
        return stable

    def status(self) -> dict[str, object]:
        """The ``status`` keys: the grid's offset and how often it moved."""
        return {"tick_offset_ms": self.offset_ns / 1e6, "tick_moves": self.moves}


#: A tick in which a source sent nothing.
_NONE: Final = np.zeros(0, dtype=np.int64)
