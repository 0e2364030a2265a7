"""The daemon's bounded bookkeeping: windows, sequence gaps, the log rate limiter."""

from __future__ import annotations

import numpy as np
import pytest

from robot_daemon.serve.stats import MAX_SEQ_GAP, Histogram, RateLimiter, SeqTracker, Window


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


def test_seq_gaps_count_lost_frames_per_source() -> None:
    t = SeqTracker()
    for seq in (0, 1, 2, 5, 6):
        t.observe("a", seq)
    for seq in (10, 11, 14):
        t.observe("b", seq)
    t.observe(None, 0)
    assert (t.lost, t.resets, len(t)) == (2 + 2, 0, 3)
    t.observe("a", 0)  # publisher restarted
    t.observe("a", 1 + MAX_SEQ_GAP + 2)  # absurd jump: a new counter, not lost frames
    assert (t.lost, t.resets) == (4, 2)


def test_seq_tracker_memory_is_bounded() -> None:
    t = SeqTracker(max_sources=4)
    for i in range(100):
        t.observe(f"src{i}", 0)
    assert len(t) == 4


def test_rate_limiter_reports_what_it_suppressed() -> None:
    r = RateLimiter(period_ns=10, max_keys=2)
    assert r.allow("a", 0) == 0
    assert r.allow("a", 5) is None
    assert r.allow("a", 9) is None
    assert r.allow("a", 10) == 2
    assert r.allow("b", 0) == 0
    assert r.allow("c", 0) is None  # beyond max_keys: silent, memory bounded
