"""The daemon's bounded bookkeeping: windows, histograms, the log rate limiter."""

from __future__ import annotations

import numpy as np
import pytest

from robot_daemon.ratelimit import RateLimiter
from robot_daemon.serve.stats import NO_SRC, Histogram, PerSource, Window


def test_window_percentiles_match_numpy_and_keep_the_newest_samples() -> None:
    w = Window(8)
    assert w.percentile(50) == 0.0
    assert w.max() == 0.0
    assert len(w) == 0
    for v in range(5):
        w.add(float(v))
    assert w.percentile(50) == 2.0
    w.extend(np.arange(5.0, 12.0))  # wraps: keeps 4..11
    assert len(w) == 8
    assert w.percentile(0) == 4.0
    assert w.max() == 11.0
    w.extend(np.arange(100.0, 120.0))  # more than the ring holds
    assert w.percentile(0) == 112.0
    samples = np.random.default_rng(0).random(8)
    w.clear()
    w.extend(samples)
    assert w.percentile(99) == np.percentile(samples, 99)
    w.clear()
    w.extend(samples[:3])  # room left: the one-copy path
    w.extend(samples[3:6])
    assert len(w) == 6
    assert w.percentile(99) == np.percentile(samples[:6], 99)
    w.extend(samples[6:])  # exactly fills the ring, then wraps
    w.add(7.0)
    assert len(w) == 8
    assert w.max() == 7.0
    assert w.percentile(0) == samples[1:].min()


def test_histogram_buckets_include_their_upper_edge() -> None:
    h = Histogram((0.5, 1, 2))
    for v in (0.0, 0.5, 0.50001, 1.0, 1.5, 2.0, 2.5, 1e9):
        h.add(v)
    assert h.counts == [2, 2, 2, 2]  # <= 0.5, (0.5, 1], (1, 2], > 2
    with pytest.raises(ValueError, match="increase strictly"):
        Histogram((1, 1, 2))


def test_rate_limiter_reports_what_it_suppressed() -> None:
    r = RateLimiter(period_ns=10, max_keys=2)
    assert r.allow("a", 0) == 0
    assert r.allow("a", 5) is None
    assert r.allow("a", 9) is None
    assert r.allow("a", 10) == 2
    assert r.allow("b", 0) == 0
    assert r.allow("c", 0) is None  # beyond max_keys: silent, memory bounded


def test_per_source_windows_split_a_tick_by_src_and_stay_bounded() -> None:
    per = PerSource(capacity=4, max_srcs=2)
    per.add(["lidar", "lidar"], np.array([1.0, 3.0]))  # the usual tick: one source
    per.add(["radar", None, "lidar"], np.array([10.0, 20.0, 5.0]))  # None: no room left
    assert per.percentiles((50, 100)) == {"lidar": [3.0, 5.0], "radar": [10.0, 10.0]}
    per.add(["lidar"] * 9, np.arange(9.0))
    assert per.percentiles((0,), scale=2)["lidar"] == [10.0]  # the newest 4: 5..8
    per.clear()  # a new period: radar and lidar keep their places only if they send
    per.add(["lidar"], np.array([1.0]))
    assert per.percentiles((50,)) == {"lidar": [1.0]}
    per.clear()
    per.add([None], np.array([2.0]))  # radar made room for the frames without a src
    assert per.percentiles((50,)) == {NO_SRC: [2.0]}
