"""The memory bound: the RSS against what serving takes plus what libzmq may hold."""

from __future__ import annotations

import numpy as np
import pytest

from robot_daemon.serve import memory
from robot_daemon.serve.memory import MemoryBound


def test_the_rss_over_the_base_and_the_allowance_is_reported() -> None:
    bound = MemoryBound(held_max=32 << 20)
    try:
        assert bound.rss() is not None
        assert bound.over() is None
        held = np.ones(64 << 20, dtype=np.uint8)  # touched: resident
        excess = bound.over()
        assert excess is not None
        assert 16 << 20 < excess < 48 << 20
        bound.rebase()  # serving takes this now (a larger model)
        assert bound.over() is None
        del held
        assert bound.over() is None  # the base follows the RSS down, never up by itself
        assert bound.base < (bound.rss() or 0) + (8 << 20)
    finally:
        bound.close()


def test_without_proc_nothing_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_proc(*args: object) -> int:
        raise FileNotFoundError("/proc/self/statm")

    monkeypatch.setattr(memory.os, "open", no_proc)
    bound = MemoryBound()
    assert (bound.rss(), bound.over(), bound.base) == (None, None, 0)
    bound.close()
