"""The daemon's bookkeeping: bounded sample windows, per-source sequence gaps, rate limits.

Everything here has a fixed memory bound whatever the input, because the daemon runs for
months: a window keeps at most ``capacity`` samples, the sequence tracker at most
``max_sources`` publishers, the log limiter one entry per rejection reason.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Sequence
from typing import Final

import numpy as np
import numpy.typing as npt

#: A jump in ``seq`` is a plausible loss only if the source could have sent that many
#: frames since its last one: at most MAX_FRAME_RATE_HZ frames a second (20 times a 50 Hz
#: sensor) plus SEQ_GAP_SLACK (ZeroMQ delivers in bursts, so arrival times lag send times:
#: 100 frames are 2 s of a 50 Hz sensor). A 50 Hz sensor that loses every frame of an
#: outage of any length is still counted as loss (50 t < 100 + 1000 t); a larger jump is a
#: publisher that restarted or sends nonsense, counted as a reset: one bad publisher adds at
#: most SEQ_GAP_SLACK per frame plus MAX_FRAME_RATE_HZ per second to ``frames_lost``.
MAX_FRAME_RATE_HZ: Final = 1_000
SEQ_GAP_SLACK: Final = 100


class Window:
    """The most recent ``capacity`` samples of a quantity, for percentiles over a period.

    Samples are float64 in a preallocated ring: adding never allocates, and a burst larger
    than the ring keeps its newest samples.
    """

    def __init__(self, capacity: int) -> None:
        self._ring = np.zeros(capacity, dtype=np.float64)
        self._next = 0
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, value: float) -> None:
        self._ring[self._next] = value
        self._next = (self._next + 1) % self._ring.size
        self._count = min(self._count + 1, self._ring.size)

    def extend(self, values: npt.NDArray[np.float64]) -> None:
        """Add the samples of ``values`` (shape ``(k,)``) in order."""
        end = self._next + values.size
        if end < self._ring.size:  # the usual case, one copy (a tick's latencies)
            self._ring[self._next:end] = values
            self._next = end
            self._count = min(self._count + values.size, self._ring.size)
            return
        values = values[-self._ring.size:]
        end = self._next + values.size
        first = min(end, self._ring.size) - self._next
        self._ring[self._next:self._next + first] = values[:first]
        self._ring[: values.size - first] = values[first:]
        self._next = end % self._ring.size
        self._count = min(self._count + values.size, self._ring.size)

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile (0-100) of the samples; 0.0 when there are none."""
        if self._count == 0:
            return 0.0
        return float(np.percentile(self._ring[: self._count], q))

    def max(self) -> float:
        return float(self._ring[: self._count].max()) if self._count else 0.0

    def clear(self) -> None:
        self._next = self._count = 0


class Histogram:
    """Counts of a quantity in fixed buckets, since the start (never cleared).

    Bucket ``i`` counts the values ``v`` with ``edges[i-1] < v <= edges[i]``; the last
    bucket, one past the edges, counts those above the last edge. Cumulative counts let
    a reader take two readings and pool any span: the share of ticks over a budget over
    an hour, say, which per-period percentiles cannot give.
    """

    def __init__(self, edges: Sequence[float]) -> None:
        if list(edges) != sorted(set(edges)):
            raise ValueError(f"histogram edges must increase strictly, got {edges}")
        self.edges = tuple(edges)
        self.counts = [0] * (len(self.edges) + 1)
        self.sum = 0.0  # of every value added: a Prometheus histogram's _sum

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.edges, value)] += 1
        self.sum += value

    def add_many(self, values: npt.NDArray[np.float64]) -> None:
        """Add every value of ``values`` (k,): one pass, not k bisections."""
        buckets = np.searchsorted(self.edges, values, side="left")
        # bincount: one C loop (np.unique sorts: 19 us against 7 for a tick's 20 values).
        added = np.bincount(buckets, minlength=len(self.counts)).tolist()
        self.counts = [n + k for n, k in zip(self.counts, added, strict=True)]
        self.sum += float(values.sum())


#: No frame's ``src`` (those are str or None): SeqTracker's newest source before any frame.
_NO_SOURCE: Final = object()


class SeqTracker:
    """Frames lost between publishers and the daemon, from gaps in each source's ``seq``.

    A source is a frame's ``src`` (``None`` for publishers that send none). A ``seq`` that
    goes backwards or jumps further than the source could have sent since its last frame
    (:func:`plausible_gap`) is a publisher that restarted with a new counter: it is counted
    as a reset and tracking starts again from it.
    """

    def __init__(self, max_sources: int = 1024) -> None:
        self._last: dict[str | None, tuple[int, int]] = {}  # src -> (seq, when, in ns)
        self._newest: object = _NO_SOURCE  # the last key of _last: the latest source seen
        self._max_sources = max_sources
        self.lost = 0
        self.resets = 0

    def __len__(self) -> int:
        return len(self._last)

    def observe(self, src: str | None, seq: int, now_ns: int) -> None:
        """Account for frame ``seq`` of ``src``, received at ``now_ns`` (monotonic)."""
        if src == self._newest:  # the usual case: the same source as the frame before
            last: tuple[int, int] | None = self._last[src]  # last already: updated in place
        else:
            last = self._last.pop(src, None)  # re-inserted below: dict order = recency
            self._newest = src
            if last is None and len(self._last) >= self._max_sources:
                # Forget the source heard from least recently; memory stays bounded even
                # when a broken publisher invents a new src for every frame.
                del self._last[next(iter(self._last))]
        if last is not None and (gap := seq - last[0] - 1):  # none: the next seq, no loss
            if 0 <= gap <= plausible_gap(now_ns - last[1]):
                self.lost += gap
            else:
                self.resets += 1
        self._last[src] = (seq, now_ns)

    def observe_run(self, src: str | None, seqs: Sequence[int],
                    arrival_ns: Sequence[int]) -> None:
        """:meth:`observe` of frames of ``src`` in turn (``seqs`` and ``arrival_ns`` of one
        length, at least 1); the usual run, each ``seq`` the one after the last, at once."""
        self.observe(src, seqs[0], arrival_ns[0])
        k = len(seqs)
        if k > 1 and seqs[-1] - seqs[0] == k - 1 and list(seqs) == list(
                range(seqs[0], seqs[0] + k)):
            # Each further frame is the newest source's next seq: no gap, the last replaced.
            self._last[src] = (seqs[-1], arrival_ns[-1])
            return
        for seq, now_ns in zip(seqs[1:], arrival_ns[1:], strict=True):
            self.observe(src, seq, now_ns)


def plausible_gap(elapsed_ns: int) -> int:
    """The most frames a source can have lost in ``elapsed_ns`` since its last frame."""
    return SEQ_GAP_SLACK + max(0, elapsed_ns) * MAX_FRAME_RATE_HZ // 1_000_000_000


#: How often the log may repeat one rejection reason (the count of the others follows).
REJECT_LOG_PERIOD_NS: Final = 10_000_000_000


class RateLimiter:
    """At most one event per key every ``period_ns``; counts what it suppressed."""

    def __init__(self, period_ns: int, max_keys: int = 64) -> None:
        self._period_ns = period_ns
        self._max_keys = max_keys
        self._next_ns: dict[Hashable, int] = {}
        self._suppressed: dict[Hashable, int] = {}

    def allow(self, key: Hashable, now_ns: int) -> int | None:
        """``None`` to stay quiet, else how many events of ``key`` were suppressed before."""
        if now_ns < self._next_ns.get(key, now_ns):
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return None
        if key not in self._next_ns and len(self._next_ns) >= self._max_keys:
            return None
        self._next_ns[key] = now_ns + self._period_ns
        return self._suppressed.pop(key, 0)
