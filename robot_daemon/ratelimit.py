"""At most one log line per key and period, counting the lines it held back.

A daemon that runs for months logs what goes wrong, but not once per bad message: a
flood of rejected frames, labels or scrapes would fill the journal. Serving, online
learning, the connection watch and the metrics exporter all tell their rejections through
a :class:`RateLimiter`, whose memory is bounded by ``max_keys`` whatever the input.
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
