"""The memory bound: the RSS against what serving takes plus what libzmq may hold."""

from __future__ import annotations

import numpy as np
import pytest

from robot_daemon.serve import memory
from robot_daemon.serve.memory import SETTLE_NS, MemoryBound

MB = 1 << 20


def test_the_rss_over_the_base_and_the_allowance_is_reported() -> None:
    bound = MemoryBound(held_max=32 * MB)
    try:
        assert bound.rss() is not None
        assert bound.over(0) is None
        held = np.ones(64 * MB, dtype=np.uint8)  # touched: resident
        rss = bound.over(0)
        assert rss is not None
        assert 16 * MB < rss - bound.bound < 48 * MB
        bound.rebase()  # serving takes this now (a larger model)
        assert bound.over(0) is None
        del held
        assert bound.over(0) is None  # the base follows the RSS down, never up by itself
        assert bound.base < (bound.rss() or 0) + 8 * MB
    finally:
        bound.close()


class _Fake(MemoryBound):
    """An RSS set by the test."""

    def __init__(self) -> None:
        self.now_rss = 100 * MB
        super().__init__(held_max=64 * MB)

    def rss(self) -> int | None:
        return self.now_rss


def test_memory_a_drop_frees_is_the_bound_and_memory_it_does_not_the_new_base() -> None:
    """After a burst the allocator may keep what libzmq freed: then the RSS stays over
    the bound, and a drop at every tick cut a healthy 10 Hz sensor off 21 times a second."""
    bound = _Fake()
    bound.now_rss = 200 * MB
    assert bound.over(0) == 200 * MB  # over: drop
    bound.dropped(0)
    assert bound.over(SETTLE_NS // 2) is None  # settling
    bound.now_rss = 110 * MB  # freed: the bound stands
    assert bound.over(SETTLE_NS) is None
    assert (bound.base, bound.rebased) == (100 * MB, 0)
    bound.now_rss = 200 * MB  # the next message
    assert bound.over(2 * SETTLE_NS) == 200 * MB
    bound.dropped(2 * SETTLE_NS)
    assert bound.over(3 * SETTLE_NS) is None  # still over after the drop: not libzmq's
    assert (bound.base, bound.rebased) == (200 * MB, 1)
    assert bound.over(4 * SETTLE_NS) is None  # and no drop at every tick from then on


def test_without_proc_nothing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(*args: object) -> int:
        raise FileNotFoundError("/proc/self/statm")

    monkeypatch.setattr(memory.os, "open", no_proc)
    bound = MemoryBound()
    assert (bound.rss(), bound.over(0), bound.base) == (None, None, 0)
    bound.close()
