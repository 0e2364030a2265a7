"""The daemon's bounded bookkeeping: windows, sequence gaps, the log rate limiter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from robot_daemon.serve.stats import (
    MAX_FRAME_RATE_HZ,
    SEQ_GAP_SLACK,
    Histogram,
    RateLimiter,
    SeqTracker,
    Window,
)

S = 1_000_000_000  # ns


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
        t.observe("a", seq, 0)
    for seq in (10, 11, 14):
        t.observe("b", seq, 0)
    t.observe(None, 0, 0)
    assert (t.lost, t.resets, len(t)) == (2 + 2, 0, 3)
    t.observe("a", 0, 0)  # publisher restarted
    t.observe("a", 1 + SEQ_GAP_SLACK + 1, 0)  # more than it could have sent: a new counter
    assert (t.lost, t.resets) == (4, 2)


def test_a_seq_jump_counts_as_loss_only_if_the_source_could_have_sent_that_many() -> None:
    t = SeqTracker()
    t.observe("lidar", 0, 0)
    t.observe("lidar", 1 + SEQ_GAP_SLACK, 0)  # a burst lost in the pipeline
    assert (t.lost, t.resets) == (SEQ_GAP_SLACK, 0)
    # A 50 Hz sensor silent for 60 s whose frames were all lost: loss, however long.
    t.observe("lidar", 1 + SEQ_GAP_SLACK + 3001, 60 * S)
    assert (t.lost, t.resets) == (SEQ_GAP_SLACK + 3000, 0)
    # Ten seconds later, a jump of more than ten seconds at the highest plausible rate.
    before = t.lost
    t.observe("lidar", 10**6, 70 * S)
    assert (t.lost, t.resets) == (before, 1)
    # From the new counter on, gaps are counted again; the bound grows with the silence.
    plausible = SEQ_GAP_SLACK + 2 * MAX_FRAME_RATE_HZ  # after 2 s
    t.observe("lidar", 10**6 + 1 + plausible, 72 * S)
    assert (t.lost, t.resets) == (before + plausible, 1)
    t.observe("lidar", 10**6 + 1 + plausible + 1 + plausible + 1, 74 * S)  # one too many
    assert (t.lost, t.resets) == (before + plausible, 2)


def test_seq_tracker_memory_is_bounded() -> None:
    t = SeqTracker(max_sources=4)
    for i in range(100):
        t.observe(f"src{i}", 0, 0)
    assert len(t) == 4


def test_rate_limiter_reports_what_it_suppressed() -> None:
    r = RateLimiter(period_ns=10, max_keys=2)
    assert r.allow("a", 0) == 0
    assert r.allow("a", 5) is None
    assert r.allow("a", 9) is None
    assert r.allow("a", 10) == 2
    assert r.allow("b", 0) == 0
    assert r.allow("c", 0) is None  # beyond max_keys: silent, memory bounded


def test_the_source_heard_least_recently_is_forgotten_first() -> None:
    t = SeqTracker(max_sources=2)
    for src, seq in (("a", 0), ("b", 0), ("a", 1), ("a", 2)):  # b is now the least recent
        t.observe(src, seq, 0)
    t.observe("c", 0, 0)  # full: b is forgotten, a kept
    t.observe("a", 4, 0)
    assert (t.lost, t.resets, len(t)) == (1, 0, 2)
    t.observe("b", 9, 0)  # b starts afresh (no loss counted); c, the least recent, goes
    t.observe("c", 9, 0)  # so c starts afresh too, not a gap of 8; a goes
    assert (t.lost, t.resets, len(t)) == (1, 0, 2)
    t.observe("c", 11, 0)
    assert (t.lost, t.resets) == (2, 0)


# Runs of one source's frames: each a source and its seqs, often each the one after the last.
seq_runs = st.lists(st.tuples(
    st.sampled_from([None, "a", "b", "c"]),
    st.one_of(st.builds(lambda first, k: list(range(first, first + k)),
                        st.integers(0, 60), st.integers(1, 6)),
              st.lists(st.integers(0, 60), min_size=1, max_size=6))), max_size=8)


@given(runs=seq_runs, gaps_ns=st.lists(st.integers(0, S), min_size=60, max_size=60))
def test_a_run_observed_at_once_is_each_frame_observed_in_turn(
    runs: list[tuple[str | None, list[int]]], gaps_ns: list[int],
) -> None:
    # Two sources tracked at most: the runs also forget and come back to sources.
    each, many = SeqTracker(max_sources=2), SeqTracker(max_sources=2)
    now, clock = 0, iter(gaps_ns * 2)
    for src, seqs in runs:
        arrival = []
        for seq in seqs:
            now += next(clock)
            arrival.append(now)
            each.observe(src, seq, now)
        many.observe_run(src, seqs, arrival)
        assert (each.lost, each.resets, list(each._last.items()), each._newest) == (
            many.lost, many.resets, list(many._last.items()), many._newest)
