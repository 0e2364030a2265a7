"""Lost frames from each stream's ``seq``: gaps bounded by what a stream delivered,
publisher restarts, and stray frames that hide nothing."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from robot_daemon.serve.sequence import CREDIT_MAX, CREDIT_START, SeqTracker

A, B = ("ep0", "lidar"), ("ep1", "lidar")  # the same src from two publishers


def _feed(t: SeqTracker, key: tuple[str, str | None], seqs: list[int] | range) -> SeqTracker:
    for seq in seqs:
        t.observe(*key, seq)
    return t


def _counts(t: SeqTracker) -> tuple[int, int, int]:
    return t.lost, t.resets, t.out_of_seq


def test_gaps_are_frames_lost_per_stream() -> None:
    t = SeqTracker()
    _feed(t, A, [0, 1, 2, 5, 6])
    _feed(t, B, [10, 11, 14, 15])
    _feed(t, ("ep0", None), [0, 1])
    assert _counts(t) == (2 + 2, 0, 0)
    assert len(t) == 3


def test_two_publishers_with_one_src_are_two_streams() -> None:
    """Interleaved, they used to look like a reset at every frame."""
    t = SeqTracker()
    for i in range(100):
        t.observe(*A, i)
        t.observe(*B, 5000 + i)
    assert _counts(t) == (0, 0, 0)


def test_a_gap_is_counted_once_the_stream_goes_on() -> None:
    t = _feed(SeqTracker(), A, [0, 1, 50])
    assert t.lost == 0  # held open: a stray frame would not be loss
    t.observe(*A, 51)
    assert _counts(t) == (48, 0, 0)


def test_every_other_frame_lost_is_half_lost() -> None:
    """What a full queue drained one slot at a time does: still counted."""
    t = _feed(SeqTracker(), A, range(0, 2000, 2))
    t.observe(*A, 2000)
    assert _counts(t) == (999, 0, 0)


def test_a_publisher_numbering_in_jumps_reports_no_loss() -> None:
    """+101 a frame at 1,000 frames/s once counted 100,000 lost frames a second."""
    t = _feed(SeqTracker(), A, range(0, 101 * 10_000, 101))
    assert t.lost <= CREDIT_START
    assert t.out_of_seq >= 9_980  # all but the first and the gaps its start credit held
    assert t.resets == 0


def test_a_publisher_inventing_src_names_reports_at_most_what_it_delivered_lost() -> None:
    """Seq 0, 1000, 1001 for each of 5,000 new names: 999 lost each, 5 million in all,
    when each stream had its own start credit (attack review)."""
    t = SeqTracker()
    for i in range(5000):
        _feed(t, ("ep0", f"name{i}"), [0, 1000, 1001])
    assert t.lost <= CREDIT_START + 3 * 5000


def test_a_stream_reports_at_most_what_it_delivered_lost() -> None:
    """Pairs of frames 101 apart: each gap goes on forward, but the credit runs out."""
    t = SeqTracker()
    for i in range(5000):
        t.observe(*A, 101 * i)
        t.observe(*A, 101 * i + 1)
    assert t.lost <= CREDIT_START + 10_000


def test_a_stray_frame_with_the_streams_src_hides_no_loss() -> None:
    """A hostile frame whose seq fell used to reset the stream and hide the real losses
    after it (49 of 49)."""
    t = _feed(SeqTracker(), A, range(100))
    t.observe(*A, 3)  # hostile: back
    _feed(t, A, [110, 111])  # 10 lost
    t.observe(*A, 10**12)  # hostile: far ahead
    _feed(t, A, [150, 151])  # 38 lost
    t.observe(*A, 151)  # a duplicate
    _feed(t, A, [153, 154])  # 1 lost
    assert _counts(t) == (10 + 38 + 1, 0, 3)


def test_a_restart_is_a_reset_confirmed_by_the_next_frame() -> None:
    t = _feed(SeqTracker(), A, range(1000))
    _feed(t, A, [0, 1, 2, 4, 5])  # restarted at 0; then frame 3 lost
    assert _counts(t) == (1, 1, 0)
    # A restart whose first frame was lost: 0 is a misfit, 1 fits... nothing yet: 0 is
    # back from 5, and 1 is the one after it: a reset.
    _feed(t, A, [1, 2, 3])
    assert _counts(t) == (1, 2, 0)


def test_a_gap_held_open_is_dropped_when_a_new_numbering_begins() -> None:
    """A hostile frame ahead (within the credit) followed by the real stream: no loss."""
    t = _feed(SeqTracker(), A, range(5001))
    t.observe(*A, 5050)  # hostile, 49 ahead
    _feed(t, A, [5001, 5002, 5003])  # the real stream, taken as a new numbering
    assert _counts(t) == (0, 1, 0)


def test_a_jump_beyond_the_credit_is_a_new_numbering() -> None:
    t = _feed(SeqTracker(), A, range(10))
    _feed(t, A, [10 + CREDIT_START + 20, 10 + CREDIT_START + 21])
    assert _counts(t) == (0, 1, 0)
    # A stream that delivered enough may lose a lot: a publisher cut off for a while.
    _feed(t, B, range(3000))
    _feed(t, B, [5000, 5001])
    assert _counts(t) == (2000, 1, 0)
    assert CREDIT_MAX >= 100_000


def test_memory_is_bounded_and_the_least_recent_stream_forgotten_first() -> None:
    t = SeqTracker(max_streams=2)
    for key, seq in ((A, 0), (B, 0), (A, 1), (A, 2)):  # B is now the least recent
        t.observe(*key, seq)
    t.observe("ep2", "c", 0)  # full: B is forgotten, A kept
    t.observe(*A, 4)
    t.observe(*A, 5)
    assert (t.lost, len(t)) == (1, 2)
    t.observe(*B, 9)  # B starts afresh (no loss counted); c, the least recent, goes
    assert (t.lost, t.resets, len(t)) == (1, 0, 2)
    for i in range(10_000):
        t.observe("ep", f"src{i}", 0)
    assert len(t) == 2


# Runs of one stream's frames: often each the one after the last, sometimes anything.
seq_runs = st.lists(st.tuples(
    st.sampled_from([A, B, ("ep0", None)]),
    st.one_of(st.builds(lambda first, k: list(range(first, first + k)),
                        st.integers(0, 300), st.integers(1, 6)),
              st.lists(st.integers(0, 300), min_size=1, max_size=6))), max_size=12)


@given(runs=seq_runs)
def test_a_run_observed_at_once_is_each_frame_observed_in_turn(
    runs: list[tuple[tuple[str, str | None], list[int]]],
) -> None:
    # Two streams tracked at most: the runs also forget and come back to streams.
    each, many = SeqTracker(max_streams=2), SeqTracker(max_streams=2)
    for key, seqs in runs:
        _feed(each, key, seqs)
        many.observe_run(*key, seqs)
        assert _counts(each) == _counts(many)
        assert _state(each) == _state(many)


def _state(t: SeqTracker) -> list[object]:
    """Everything both ways of numbering hold, to compare two trackers."""
    state: list[object] = []
    for numbering in (t._by_src, t._as_one):
        state += [(k, s.last, s.credit.value, s.pending, s.misfit, s.tally.next)
                  for k, s in numbering._streams.items()]
        state.append(numbering._newest)
    return state


def test_a_publisher_with_one_counter_across_its_src_names_loses_nothing() -> None:
    rng = random.Random(7)
    t = SeqTracker()
    for seq in range(400):  # some frames with a src, some without, one counter
        t.observe("ep", rng.choice(["lidar", None]), seq)
    assert _counts(t) == (0, 0, 0)
    for seq in range(410, 800):  # 10 lost
        t.observe("ep", rng.choice(["lidar", None]), seq)
    assert _counts(t) == (10, 0, 0)


def test_sensors_numbering_their_own_frames_on_one_endpoint_are_followed_each() -> None:
    t = SeqTracker()
    for seq in range(400):  # interleaved, each its own counter; radar loses 1 in 10
        t.observe("ep", "lidar", seq)
        if seq % 10:
            t.observe("ep", "radar", 1000 + seq)
    assert _counts(t)[0] == 39  # 40 lost; the first one lost is radar's first frame
