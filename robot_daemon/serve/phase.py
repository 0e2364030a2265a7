"""Where the tick grid falls against the frames: a phase lock (``tick_phase = "auto"``).

A frame waits for the next deadline of the fixed 20 ms grid; with a 50 Hz sensor the wait
is the same every frame, set by when the daemon and the sensor happened to start: 0.5 ms
in one run, 19 ms in the next. :class:`PhaseLock` watches how long each source's frames
wait (deadline minus arrival) and does two things:

- It places the grid: moves the deadlines to fall a margin (a quarter interval, 5 ms)
  after the latest frames of the sources with a stable phase. The interval never
  changes; a move shifts the deadlines after it, at most half an interval at a time.
- It lets a tick go out before its deadline (:meth:`ready`) once every such source has
  sent its frame for it, as a dynamic batcher sends a full batch: the typical frame
  waits for nothing, and the deadline is only the latest a frame waits. So the margin
  can be wide, for the late frames, at no cost to the usual ones.

Two ticks are never closer than half an interval, and a frame is answered by exactly one
tick. Several sources: the placement that gives the worst source the shortest typical
wait at its deadline; a tick waits for the sources whose frames fall in the half interval
before it. Sources without a stable phase (more than one frame a tick, or a spread of
arrivals over a quarter of the interval: bursts, high rates) are left out: a move neither
helps nor hurts them on average. With no stable source the grid stays where it is and
every tick waits for its deadline, as with ``fixed``.
Design: docs/architecture.md, "The tick's timing".
"""

from __future__ import annotations

from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

from robot_daemon.serve.stats import Rows, rows_by_source

#: Ticks of waits a decision looks at (1 s at 20 ms), and the least a source needs in it.
WINDOW_TICKS: Final = 50
MIN_FRAMES: Final = 20
#: Ticks between two decisions once a window is full.
DECIDE_EVERY: Final = 25
#: The margin between a source's latest frames (1st percentile of the waits) and the
#: deadline, as a share of the interval: how much later than its latest a frame may come
#: and still make its tick. Wide, because a tick goes out as its frames come (:meth:`ready`).
MARGIN: Final = 0.25
#: A move must shorten the worst source's typical wait by this much (a source whose
#: latest frames came closer to the deadline than half the margin, a sensor's clock
#: drifting towards missing its tick, counts a whole interval): hysteresis, so that the
#: grid does not wander.
MIN_GAIN_NS: Final = 1_000_000
#: The loop reads frames as they come from this long before the locked sources'
#: earliest frames (:attr:`PhaseLock.watch_ns`).
WATCH_EARLY_NS: Final = 1_000_000
#: A source is stable when its arrivals spread over at most this share of the interval.
MAX_SPREAD: Final = 0.25
#: Sources watched at once (the first seen; a silent one makes room at the next
#: decision): a decision's work and memory stay bounded whatever names frames carry.
MAX_SOURCES: Final = 16
#: Names seen in one tick only, remembered until they come again (the oldest forgotten).
SEEN_ONCE: Final = 1024


class _Source:
    """A stable source's waits in ns: its latest frames' (1st percentile), its typical
    one (median) and its earliest frames' (99th percentile)."""

    __slots__ = ("earliest", "latest", "typical")

    def __init__(self, latest: int, typical: int, earliest: int) -> None:
        self.latest, self.typical, self.earliest = latest, typical, earliest


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
        #: The sources locked to (None: the frames without a ``src``): once each has sent
        #: its frame, the tick need not wait for its deadline (:meth:`ready`).
        self.expected: tuple[str | None, ...] = ()
        self.ticks_ready = 0  # ticks served before their deadline by :meth:`ready`
        #: How long before a deadline the locked sources' frames may come: from then on
        #: the loop reads frames as they come, not after its rest between drains.
        self.watch_ns = 0
        self._waits: dict[str | None, deque[npt.NDArray[np.int64]]] = {}
        self._seen_once: OrderedDict[str | None, None] = OrderedDict()  # the newest last
        self._ticks = 0  # ticks recorded since the last move (or the start)

    def observe(self, deadline_ns: int, arrival_ns: npt.NDArray[np.int64],
                src: Sequence[str | None], rows: Rows | None = None) -> None:
        """The frames one tick served: ``arrival_ns`` (n,) when each arrived, ``src``
        (n,) its source (``rows``: their :func:`rows_by_source`, if at hand)."""
        if not self.enabled:
            return
        self._ticks += 1
        for window in self._waits.values():
            window.append(_NONE)  # every source's window counts the ticks, silent or not
        if not len(arrival_ns):
            return
        waits = deadline_ns - arrival_ns
        for key, at in (rows_by_source(src) if rows is None else rows).items():
            self._record(key, waits[at])

    def _record(self, key: str | None, waits: npt.NDArray[np.int64]) -> None:
        window = self._waits.get(key)
        if window is None:
            # A source is watched from its second tick on, where there is room: a name
            # seen once (a publisher cycling through names) never takes a sensor's place.
            if key not in self._seen_once or len(self._waits) >= MAX_SOURCES:
                self._seen_once[key] = None
                self._seen_once.move_to_end(key)
                if len(self._seen_once) > SEEN_ONCE:
                    self._seen_once.popitem(last=False)
                return
            del self._seen_once[key]
            window = self._waits[key] = deque([_NONE], maxlen=WINDOW_TICKS)
        if window[-1] is _NONE:
            window[-1] = waits
        else:
            window.append(waits)

    def shift(self) -> int:
        """How far to move the next deadlines earlier (ns; negative: later), within
        (-interval/2, interval/2]; 0 when the grid stays. Called after each tick."""
        if not self.enabled or self._ticks < WINDOW_TICKS or self._ticks % DECIDE_EVERY:
            return 0
        stable = self._stable()
        self.locked = bool(stable)
        move = self._placement(list(stable.values())) if stable else 0
        # The sources a tick waits for: those whose frames then fall in the half
        # interval before the deadline (:meth:`ready` counts no earlier frame); the loop
        # reads frames as they come from the earliest of theirs on (watch_ns before it).
        half = self.interval_ns // 2
        earliest = {key: (s.latest - move) % self.interval_ns + s.earliest - s.latest
                    for key, s in stable.items()}
        self.expected = tuple(key for key, wait in earliest.items() if wait < half)
        self.watch_ns = min(half, max((earliest[key] for key in self.expected), default=0)
                            + WATCH_EARLY_NS)
        if move == 0:
            return 0
        self.moves += 1
        self.offset_ns = (self.offset_ns - move) % self.interval_ns
        for window in self._waits.values():
            window.clear()  # waits against the old grid; each source keeps its place
        self._ticks = 0
        return move

    def _placement(self, sources: list[_Source]) -> int:
        """The move (ns earlier, within (-interval/2, interval/2]) that serves
        ``sources`` best, or 0 where it gains less than MIN_GAIN_NS."""
        # The margin, narrower for a wide source: its earliest frames must still fall in
        # the half interval that :meth:`ready` looks at.
        spread = max(s.earliest - s.latest for s in sources)
        margin = max(MIN_GAIN_NS, min(round(MARGIN * self.interval_ns),
                                      self.interval_ns // 2 - spread - WATCH_EARLY_NS))
        # Where it is, a source is too close only within half the margin: hysteresis.
        now_cost = self._cost(sources, 0, margin // 2)
        best, best_cost = 0, now_cost
        for source in sources:
            move = source.latest - margin
            cost = self._cost(sources, move, margin)
            if cost < best_cost:
                best, best_cost = move, cost
        if best == 0 or now_cost - best_cost < MIN_GAIN_NS:
            return 0
        half = self.interval_ns // 2
        move = (best + half) % self.interval_ns - half
        return half if move == -half else move

    def _cost(self, sources: list[_Source], move: int, need: int) -> int:
        """The worst source's typical wait once the grid moved ``move`` earlier; a source
        whose latest frames would then come within ``need`` of the deadline counts a whole
        interval more (they risk the next tick)."""
        worst = 0
        for s in sources:
            latest = (s.latest - move) % self.interval_ns
            wait = latest + (s.typical - s.latest)
            if latest < need:
                wait += self.interval_ns
            worst = max(worst, wait)
        return worst

    def _stable(self) -> dict[str | None, _Source]:
        """The sources with a phase to lock to; the silent ones are forgotten."""
        stable: dict[str | None, _Source] = {}
        for key, window in list(self._waits.items()):
            ticks = [w for w in window if w is not _NONE]
            if not ticks:
                del self._waits[key]
                continue
            n = sum(len(w) for w in ticks)
            if n < MIN_FRAMES or n > 1.5 * len(window):
                continue  # too few, or more than one a tick: no phase
            waits = np.concatenate(ticks)
            latest, low, median, high, earliest = (int(v) for v in np.percentile(
                _one_arc(waits, self.interval_ns), [1, 5, 50, 95, 99]))
            if high - low > MAX_SPREAD * self.interval_ns:
                continue  # bursts: nothing to place
            stable[key] = _Source(latest, median, earliest)
        return stable

    def ready(self, now_ns: int, deadline_ns: int, last_tick_ns: int,
              heard_since: Callable[[Sequence[str | None], int], bool]) -> bool:
        """Whether the tick due at ``deadline_ns`` may be served at ``now_ns``, before it:
        every locked source sent a frame in the half interval before the deadline and
        since the last tick's drain ended (``heard_since(self.expected, since)``), as a
        dynamic batcher sends a full batch at once. The deadline stays the latest a frame
        waits (the margin covers the late ones), so the typical frame waits for nothing.

        Only frames of this tick's half interval count: a frame that missed the last tick
        must not start this one early, else the tick would go out before this tick's
        frames, and they would wait for the next one, and so on every tick. Never within
        half an interval of the last tick either.
        """
        half = self.interval_ns // 2
        if not (self.locked and now_ns >= deadline_ns - half
                and now_ns >= last_tick_ns + half
                and heard_since(self.expected, max(last_tick_ns, deadline_ns - half))):
            return False
        self.ticks_ready += 1
        return True

    def status(self) -> dict[str, object]:
        """The ``status`` keys: the grid's offset, how often it moved, and how many ticks
        went out before their deadline."""
        return {"tick_offset_ms": self.offset_ns / 1e6, "tick_moves": self.moves,
                "ticks_before_deadline": self.ticks_ready}


def _one_arc(waits: npt.NDArray[np.int64], interval_ns: int) -> npt.NDArray[np.int64]:
    """``waits`` (n,) as one stretch of the circle of phases, sorted: a frame that just
    missed a deadline waited almost a whole interval for the next one; taken modulo the
    interval and cut at the widest gap between the frames, its wait becomes a small
    negative one beside the others (frames straddling a deadline are one phase, not two)."""
    arc = np.sort(waits % interval_ns)
    if len(arc) < 2:
        return arc
    gaps = np.diff(arc)
    widest = int(np.argmax(gaps))
    if gaps[widest] > arc[0] + interval_ns - arc[-1]:  # the widest gap is not the wrap
        arc[widest + 1:] -= interval_ns
    return arc


#: A tick in which a source sent nothing.
_NONE: Final = np.zeros(0, dtype=np.int64)
