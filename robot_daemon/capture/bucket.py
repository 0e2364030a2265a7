"""The capture's rate limit: a token bucket, so that one long uncertain stretch (a robot
parked next to something the model cannot make out) does not fill the disk bound with
near-identical frames.

Design: docs/architecture.md, "Capture".
"""

from __future__ import annotations


class TokenBucket:
    """``rate_per_s`` frames a second on average, ``burst`` at once after a quiet spell.

    The bucket holds up to ``burst`` tokens, refilled at ``rate_per_s``; a frame takes
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
