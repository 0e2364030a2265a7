"""Rate limits: at most one log line per key and period, and a token bucket.

A daemon that runs for months logs what goes wrong, but not once per bad message: a
flood of rejected frames, labels or scrapes would fill the journal. Serving, online
learning, the connection watch and the metrics exporter all tell their rejections through
a :class:`RateLimiter`, whose memory is bounded by ``max_keys`` whatever the input.
:class:`TokenBucket` bounds what a flood makes the daemon do: the frames the capture
keeps, the labels read for it.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Final

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


class TokenBucket:
    """``rate_per_s`` events a second on average, ``burst`` at once after a quiet spell:
    the capture's frames (one long uncertain stretch must not fill the disk bound with
    near-identical frames), the labels read for the capture alone.

    The bucket holds up to ``burst`` tokens, refilled at ``rate_per_s``; an event takes
    one. Times are integer ns on the caller's monotonic clock. Not thread-safe: the tick
    thread alone calls it.
    """

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self.rate_per_ns = rate_per_s / 1e9
        self.burst = burst
        self.tokens = burst  # a start is a quiet spell: the first burst passes
        self._last_ns: int | None = None

    def take(self, n: int, now_ns: int) -> int:
        """Take up to ``n`` tokens at ``now_ns``; how many were taken."""
        if self._last_ns is not None and now_ns > self._last_ns:
            self.tokens = min(self.burst,
                              self.tokens + (now_ns - self._last_ns) * self.rate_per_ns)
        if self._last_ns is None or now_ns > self._last_ns:
            self._last_ns = now_ns  # a clock that stepped back refills nothing
        taken = min(n, int(self.tokens))
        self.tokens -= taken
        return taken
