"""The pending batch: arrival order, the newest kept, memory fixed."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from robot_daemon.offline.replay import newest
from robot_daemon.serve.batch import PendingFrames
from robot_daemon.wire import RawFrame


def _frame(seq: int, d: int = 3) -> RawFrame:
    x = np.full(d, seq, dtype="<f4").tobytes()
    return RawFrame(seq=seq, t=seq / 10, x=x, src=f"s{seq % 2}")


def test_frames_come_out_oldest_first() -> None:
    pending = PendingFrames(max_batch=4, d=3)
    assert not pending
    assert [pending.add(_frame(i), 100 + i) for i in range(3)] == [False] * 3
    batch = pending.take()
    assert batch.seq == [0, 1, 2]
    assert batch.t == [0.0, 0.1, 0.2]
    assert batch.src == ["s0", "s1", "s0"]
    np.testing.assert_array_equal(batch.X[:, 0], [0, 1, 2])
    np.testing.assert_array_equal(batch.arrival_ns, [100, 101, 102])
    assert len(pending) == 0


def test_a_full_batch_keeps_the_newest_like_replay() -> None:
    pending = PendingFrames(max_batch=4, d=3)
    frames = [_frame(i) for i in range(11)]
    dropped = sum(pending.add(f, f.seq) for f in frames)
    kept, expected_dropped = newest(frames, 4)
    batch = pending.take()
    assert dropped == expected_dropped == 7
    assert batch.seq == [f.seq for f in kept] == [7, 8, 9, 10]
    np.testing.assert_array_equal(batch.X[:, 0], [7, 8, 9, 10])
    np.testing.assert_array_equal(batch.arrival_ns, [7, 8, 9, 10])
    pending.add(_frame(20), 20)  # the ring starts over after a take
    assert pending.take().seq == [20]


def test_a_batch_holds_read_only_float32_rows_even_when_empty() -> None:
    pending = PendingFrames(max_batch=4, d=3)
    empty = pending.take()
    assert (empty.X.shape, empty.X.dtype, empty.arrival_ns.shape) == ((0, 3), np.float32, (0,))
    assert (empty.seq, empty.t, empty.src, len(empty)) == ([], [], [], 0)
    pending.add(_frame(5), 7)
    batch = pending.take()
    assert (batch.X.shape, batch.X.dtype, batch.arrival_ns.dtype) == ((1, 3), np.float32, np.int64)
    assert not batch.X.flags.writeable  # the frame's own bytes: a reader copies to write
    np.testing.assert_array_equal(batch.X, [[5, 5, 5]])


@given(max_batch=st.integers(1, 8), before=st.integers(0, 20), k=st.integers(0, 30))
def test_adding_many_at_once_is_adding_each_in_turn(max_batch: int, before: int,
                                                    k: int) -> None:
    each, many = PendingFrames(max_batch, d=3), PendingFrames(max_batch, d=3)
    for seq in range(before):
        each.add(_frame(seq), seq)
        many.add(_frame(seq), seq)
    frames = [_frame(seq) for seq in range(before, before + k)]
    arrival = list(range(before, before + k))
    dropped = sum(each.add(frame, at) for frame, at in zip(frames, arrival, strict=True))
    assert many.add_many(frames, arrival) == dropped
    a, b = each.take(), many.take()
    assert (a.X.tobytes(), a.seq, a.t, a.src, a.arrival_ns.tolist()) == (
        b.X.tobytes(), b.seq, b.t, b.src, b.arrival_ns.tolist())


@given(max_batch=st.integers(1, 8), before=st.integers(0, 20), limit=st.integers(0, 10),
       after=st.integers(0, 20))
def test_taking_the_oldest_leaves_the_rest_pending_as_if_never_taken(
        max_batch: int, before: int, limit: int, after: int) -> None:
    """take(limit) gives the oldest ``limit`` of what take() would give; the rest, and what
    arrives after, come out of the next take() as from a ring that held them alone."""
    ring, alone = PendingFrames(max_batch, d=3), PendingFrames(max_batch, d=3)
    for seq in range(before):
        ring.add(_frame(seq), seq)
    whole = [f.seq for f in newest([_frame(seq) for seq in range(before)], max_batch)[0]]
    first = ring.take(limit)
    assert first.seq == whole[:limit]
    np.testing.assert_array_equal(first.X[:, 0], whole[:limit])
    assert len(ring) == len(whole) - len(first.seq)
    assert not any(alone.add(_frame(seq), seq) for seq in whole[limit:])
    for seq in range(before, before + after):  # the same drops, the oldest first
        assert ring.add(_frame(seq), seq) == alone.add(_frame(seq), seq)
    a, b = ring.take(), alone.take()
    assert (a.X.tobytes(), a.seq, a.arrival_ns.tolist()) == (
        b.X.tobytes(), b.seq, b.arrival_ns.tolist())
