"""The frames intake: its short path for the usual message changes nothing.

Every stream is drained twice, from two sockets fed the same messages: once by
:class:`FrameIntake` (the usual message held, then decoded with the others held; the full
path for the rest) and once by a plain :class:`Receiver` that hands every message to
:meth:`FrameIntake.message` (the full path alone, as the daemon did before the short
path). Everything the daemon keeps of a frame must be the same: the counters, each
rejection's reason and message, the queued frames, the seq tracking and the liveness.
"""

from __future__ import annotations

import random
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

import msgpack
import numpy as np
import pytest
import zmq
from hypothesis import example, given
from hypothesis import strategies as st

from robot_daemon import wire
from robot_daemon.serve import intake as intake_module
from robot_daemon.serve.batch import PendingFrames
from robot_daemon.serve.intake import HOLD_BYTES, HOLD_MAX, Arrivals, FrameIntake
from robot_daemon.serve.liveness import Liveness
from robot_daemon.serve.report import Counters
from robot_daemon.serve.sequence import SeqTracker
from robot_daemon.wire import layout
from robot_daemon.wire.decode import USUAL_MAX_D
from robot_daemon.zmq_io.receive import DRAIN_CHUNK, Receiver, drain_each

from ..wire.test_wire import FUZZ, corrupted_bytes, mutated_maps
from .inproc import Pairs, pair_sockets

D = 16
X = np.linspace(-2.0, 3.0, D, dtype="<f4").tobytes()


@dataclass
class Taken:
    """What one drain left behind."""

    counters: Counters = field(default_factory=Counters)
    rejects: list[tuple[str, str]] = field(default_factory=list)
    seqs: SeqTracker = field(default_factory=SeqTracker)
    liveness: Liveness = field(default_factory=lambda: Liveness(["ep"], 10**9, 0))
    pending: PendingFrames = field(default_factory=lambda: PendingFrames(8, D))

    def __post_init__(self) -> None:
        self.arrivals = Arrivals(
            self.pending, self.counters, self.seqs, self.liveness,
            lambda reason, message, now_ns: self.rejects.append((reason, message)))

    def intake(self, sock: zmq.Socket[bytes], endpoint: int = 0) -> FrameIntake:
        return FrameIntake(sock, endpoint, self.arrivals)

    def outcome(self) -> tuple[Any, ...]:
        batch = self.pending.take()
        return (self.counters, self.rejects, self.seqs.lost, self.seqs.resets, self.seqs.out_of_seq,
                sorted(self.seqs._by_src._streams, key=str), sorted(self.liveness._src_ns),
                self.liveness._endpoint_ns[0] is not None,
                batch.X.tobytes(), batch.seq, batch.t, batch.src)


@pytest.fixture(scope="module")
def pairs() -> Iterator[Pairs]:
    """Two inproc PAIR connections, (senders, receivers), fed the same messages."""
    with pair_sockets(2, "intake") as socks:
        yield socks


def _both(
    pairs: Pairs,
    messages: list[list[bytes]],
) -> tuple[tuple[Any, ...], tuple[Any, ...]]:
    """The outcome of the short path and of the full path alone over ``messages``."""
    senders, receivers = pairs
    for rx in receivers:  # what a failed example left
        while rx.poll(0):
            rx.recv_multipart()
    for tx in senders:
        for message in messages:
            tx.send_multipart(message)
    for rx in receivers:
        if messages:
            assert rx.poll(1000), "nothing arrived"
    short, full = Taken(), Taken()
    drain_each([short.intake(receivers[0])], None)
    plain = full.intake(receivers[1])
    drain_each([Receiver(receivers[1], plain.message)], None)
    for rx in receivers:
        assert not rx.poll(0), "a message was left in the queue"
    return short.outcome(), full.outcome()


def _frame(seq: int, src: str | None = None, **changes: Any) -> bytes:
    obj: dict[str, Any] = {"seq": seq, "t": 0.5 + seq, "x": X}
    if src is not None:
        obj["src"] = src
    obj.update(changes)
    out: bytes = msgpack.packb(obj, use_bin_type=True)
    return out


def test_the_usual_and_the_unusual_come_out_the_same(
    pairs: Pairs,
) -> None:
    nan = np.full(D, np.nan, "<f4").tobytes()
    messages = [
        [wire.TOPIC_FRAME, _frame(1)],
        [wire.TOPIC_FRAME, _frame(2, "lidar")],
        [wire.TOPIC_FRAME, _frame(3, x=np.ones(D).tolist())],  # x as an array: full path
        [wire.TOPIC_FRAME, _frame(4, x=nan)],  # non_finite
        [wire.TOPIC_FRAME, _frame(5, x=X[:8])],  # wrong_d
        [wire.TOPIC_FRAME, b"\xc1"],  # bad_msgpack
        [b"framex", _frame(6)],  # bad_envelope: the topic
        [wire.TOPIC_FRAME],  # one part
        [wire.TOPIC_FRAME, _frame(7), b"more"],  # three parts
        [wire.TOPIC_FRAME, *([b"p"] * (3 * DRAIN_CHUNK))],  # many, over several chunks
        [wire.TOPIC_FRAME, _frame(9, "lidar")],  # a gap in lidar's seq
        [wire.TOPIC_FRAME, _frame(10**6)],  # an implausible jump: out of sequence
        *([wire.TOPIC_FRAME, _frame(20 + k)] for k in range(12)),  # the ring (8) drops 4
    ]
    short, full = _both(pairs, messages)
    assert short == full
    counters, rejects = short[0], short[1]
    assert (counters.frames_in, counters.frames_accepted, counters.frames_dropped) == (
        len(messages), 17, 9)
    assert [reason for reason, _ in rejects] == [
        "non_finite", "wrong_d", "bad_msgpack"] + ["bad_envelope"] * 4
    # One counter across no src and lidar (it fits better than one per src): lost 4 to 8
    # and 10 to 19 (refused, or never sent), once 20 and 21 went on. Out of sequence: the
    # jump, a stray frame.
    assert (short[2], short[3], short[4]) == (15, 0, 1)


message_parts = st.one_of(
    st.builds(lambda seq, src: [wire.TOPIC_FRAME, _frame(seq, src)],
              st.integers(0, 40), st.none() | st.sampled_from(["a", "b"])),
    st.builds(lambda p: [wire.TOPIC_FRAME, p], mutated_maps() | corrupted_bytes()),
    st.lists(st.sampled_from([wire.TOPIC_FRAME, b"", b"frame2", _frame(1)]), min_size=1,
             max_size=5),
)


@FUZZ
@given(messages=st.lists(message_parts, max_size=30))
def test_a_fuzzed_stream_comes_out_the_same(
    pairs: Pairs,
    messages: list[list[bytes]],
) -> None:
    short, full = _both(pairs, messages)
    assert short == full


def test_the_usual_frames_take_the_short_path(
    pairs: Pairs,
) -> None:
    senders, receivers = pairs
    for seq in range(3 * DRAIN_CHUNK):
        senders[0].send_multipart([wire.TOPIC_FRAME, _frame(seq, "cam" if seq % 2 else None)])
    assert receivers[0].poll(1000)
    taken = Taken(pending=PendingFrames(1024, D))
    with mock.patch.object(wire, "decode_frame_raw", side_effect=AssertionError("full path")):
        drain_each([taken.intake(receivers[0])], None)
    assert taken.counters.frames_accepted == 3 * DRAIN_CHUNK
    assert taken.pending.take().seq == list(range(3 * DRAIN_CHUNK))


@dataclass
class _Part:
    bytes: bytes
    more: bool

    def __len__(self) -> int:
        return len(self.bytes)


class _Stuttering:
    """A socket whose queue runs dry in the middle of a message (libzmq never does)."""

    def __init__(self, *rounds: list[_Part]) -> None:
        self.rounds = [list(r) for r in rounds]

    def recv(self, flags: int, copy: bool) -> _Part:
        if not self.rounds[0]:
            self.rounds.pop(0)
            raise zmq.Again()
        return self.rounds[0].pop(0)


def test_a_message_cut_off_after_its_first_part_is_finished_by_the_next_drain() -> None:
    sock = _Stuttering([_Part(wire.TOPIC_FRAME, True)], [_Part(_frame(5), False)], [])
    taken = Taken()
    intake = taken.intake(sock)  # type: ignore[arg-type]
    assert not intake.take(DRAIN_CHUNK)
    intake.flush()
    assert taken.counters.frames_in == 0
    assert not intake.take(DRAIN_CHUNK)
    intake.flush()
    assert (taken.counters.frames_in, taken.counters.frames_accepted) == (1, 1)
    assert taken.pending.take().seq == [5]


class _Counting:
    """A socket that counts the parts each take receives and the zmq.Frames alive at once
    (a part is up to MAXMSGSIZE: the Receiver holds one, and keeps MAX_PARTS as bytes)."""

    def __init__(self, sock: zmq.Socket[bytes]) -> None:
        self.sock = sock
        self.received = 0
        self.alive: list[weakref.ref[zmq.Frame]] = []
        self.most_alive = 0

    def recv(self, flags: int, copy: bool) -> zmq.Frame:
        self.most_alive = max(self.most_alive, sum(r() is not None for r in self.alive))
        part = self.sock.recv(flags, copy=copy)
        self.received += 1
        self.alive.append(weakref.ref(part))
        return part


@pytest.fixture(scope="module")
def quads() -> Iterator[Pairs]:
    """Four inproc PAIR connections: two endpoints for each path."""
    with pair_sockets(4, "intake-quad") as socks:
        yield socks


endpoint_stream = st.lists(st.one_of(
    st.builds(lambda seq: [wire.TOPIC_FRAME, _frame(seq)], st.integers(0, 40)),
    st.lists(st.sampled_from([wire.TOPIC_FRAME, b"", _frame(1)]), min_size=1, max_size=4),
    st.integers(3, 2 * DRAIN_CHUNK + 1).map(lambda n: [wire.TOPIC_FRAME] + [b"p"] * (n - 1)),
), max_size=20)


@FUZZ
@given(streams=st.tuples(endpoint_stream, endpoint_stream),
       turns=st.lists(st.integers(0, 1), max_size=12))
# A message of one part leaves one part of a take: the next frame is cut off there.
@example(streams=([[wire.TOPIC_FRAME]] + [[wire.TOPIC_FRAME, _frame(k)] for k in range(8)],
                  [[wire.TOPIC_FRAME, _frame(k, "b")] for k in range(8)]), turns=[])
@example(streams=([[wire.TOPIC_FRAME]] + [[wire.TOPIC_FRAME, _frame(k)] for k in range(8)],
                  []), turns=[0])
# A message of three parts with two parts of a take left.
@example(streams=([[wire.TOPIC_FRAME, _frame(k)] for k in range(7)]
                  + [[wire.TOPIC_FRAME, _frame(7), b""]], [[wire.TOPIC_FRAME, b"\xc1"]]),
         turns=[])
def test_several_sockets_take_the_same_parts_in_the_same_order(
    quads: Pairs,
    streams: tuple[list[list[bytes]], list[list[bytes]]],
    turns: list[int],
) -> None:
    """Each take receives the parts Receiver.take would, whatever the messages: a message
    cut off at the end of a take waits for the other sockets' turns (drain_each, and a
    deadline that ends a drain), and no more of it is held."""
    senders, receivers = quads
    for rx in receivers:  # what a failed example left
        while rx.poll(0):
            rx.recv_multipart()
    for i, messages in enumerate((*streams, *streams)):
        for message in messages:
            senders[i].send_multipart(message)
    for i, rx in enumerate(receivers):
        if streams[i % 2]:
            assert rx.poll(1000), "nothing arrived"
    short, full = (Taken(liveness=Liveness(["ep0", "ep1"], 10**9, 0),
                         pending=PendingFrames(1024, D)) for _ in range(2))
    socks = [_Counting(rx) for rx in receivers]
    log: dict[str, list[bool]] = {"short": [], "full": []}

    short_in = [short.intake(socks[i], i) for i in range(2)]  # type: ignore[arg-type]
    full_in = [full.intake(socks[2 + i], i) for i in range(2)]  # type: ignore[arg-type]
    full_rx = [Receiver(socks[2 + i], full_in[i].message) for i in range(2)]
    # Some takes in a given order (as a deadline leaves them), then drain_each to the end.
    for i in turns:
        before = (socks[i].received, socks[2 + i].received)
        log["short"].append(short_in[i].take(DRAIN_CHUNK))
        log["full"].append(full_rx[i].take(DRAIN_CHUNK))
        assert socks[i].received - before[0] == socks[2 + i].received - before[1]
        short.arrivals.flush()  # as a drain does before it returns
        assert short.counters == full.counters
    drain_each(short_in, None)
    drain_each(full_rx, None)
    assert log["short"] == log["full"]
    assert all((a is None) == (b is None)
               for a, b in zip(short.liveness._endpoint_ns, full.liveness._endpoint_ns,
                               strict=True))
    assert short.outcome() == full.outcome()
    assert [s.most_alive for s in socks[:2]] == [s.most_alive for s in socks[2:]]
    for rx in receivers:
        assert not rx.poll(0), "a message was left in the queue"


def test_frames_too_wide_for_the_usual_form_take_the_full_path_once(
    pairs: Pairs,
) -> None:
    senders, receivers = pairs
    wide = np.ones(USUAL_MAX_D + 1, "<f4").tobytes()
    senders[0].send_multipart([wire.TOPIC_FRAME, _frame(1, x=wide)])
    assert receivers[0].poll(1000)
    taken = Taken(pending=PendingFrames(8, USUAL_MAX_D + 1))
    with mock.patch.object(intake_module, "usual_frames", side_effect=AssertionError("short")):
        drain_each([taken.intake(receivers[0])], None)
    assert taken.counters.frames_accepted == 1


def _long_stream(rng: random.Random, src: str, n: int) -> list[list[bytes]]:
    """``n`` messages of one publisher: its seq crossing msgpack's uint 8 / uint 16 edge,
    a gap now and then, and one odd message in 30 (all decoded alone)."""
    nan = np.full(D, np.nan, "<f4").tobytes()
    odd = [[wire.TOPIC_FRAME, _frame(1, src, x=nan)], [wire.TOPIC_FRAME, b"\xc1"],
           [b"frame2", _frame(2, src)], [wire.TOPIC_FRAME], [wire.TOPIC_FRAME, _frame(3), b""],
           [wire.TOPIC_FRAME, _frame(4, src, x=X[:8])], [wire.TOPIC_FRAME, _frame(5, "x" + src)]]
    messages, seq = [], 200
    for _ in range(n):
        seq += 1 if rng.random() < 0.97 else rng.randint(2, 5)
        messages.append(rng.choice(odd) if rng.random() < 1 / 30
                        else [wire.TOPIC_FRAME, _frame(seq, src)])
    return messages


@pytest.mark.parametrize("seed", range(3))
def test_long_streams_decoded_together_come_out_the_same(quads: Pairs, seed: int) -> None:
    """Two sockets of more than HOLD_MAX frames each, into a ring that drops: the frames
    held and decoded together (flushed mid-drain and at its end) are accounted for as the
    full path does, in the same order."""
    rng = random.Random(seed)
    # "lidar" and "radar": two publishers whose payloads have one length and two layouts.
    streams = [_long_stream(rng, src, HOLD_MAX + 150) for src in ("lidar", "radar")]
    senders, receivers = quads
    for i, messages in enumerate((*streams, *streams)):
        for message in messages:
            senders[i].send_multipart(message)
    for rx in receivers:
        assert rx.poll(1000), "nothing arrived"
    time.sleep(0.05)  # inproc: every message is queued once the first is
    short, full = (Taken(liveness=Liveness(["ep0", "ep1"], 10**9, 0),
                         pending=PendingFrames(300, D)) for _ in range(2))
    with mock.patch.object(layout, "_same_length", wraps=layout._same_length) as together:
        drain_each([short.intake(receivers[i], i) for i in range(2)], None)
    assert together.call_count >= 2
    plain = [full.intake(receivers[2 + i], i) for i in range(2)]
    drain_each([Receiver(receivers[2 + i], plain[i].message) for i in range(2)], None)
    assert short.outcome() == full.outcome()
    assert short.counters.frames_dropped > 0
    for rx in receivers:
        assert not rx.poll(0), "a message was left in the queue"


def test_a_long_payload_is_not_held(pairs: Pairs) -> None:
    """What is held stays within HOLD_MAX x HOLD_BYTES: a longer payload takes the full
    path as it arrives, after the frames held before it."""
    senders, receivers = pairs
    for message in ([wire.TOPIC_FRAME, _frame(1)], [wire.TOPIC_FRAME, b"\x00" * (HOLD_BYTES + 1)],
                    [wire.TOPIC_FRAME, _frame(2)]):
        senders[0].send_multipart(message)
    assert receivers[0].poll(1000)
    taken = Taken()
    intake = taken.intake(receivers[0])
    assert not intake.take(DRAIN_CHUNK)
    assert (taken.counters.frames_in, taken.counters.frames_accepted) == (2, 1)
    assert [reason for reason, _ in taken.rejects] == ["bad_msgpack"]
    assert len(taken.arrivals.held) == 1  # frame 2, until the flush
    intake.flush()
    assert taken.pending.take().seq == [1, 2]


class _Peak(list[tuple[bytes, int, int]]):
    """The held list, remembering the most it ever held."""

    most = 0

    def append(self, item: tuple[bytes, int, int]) -> None:
        super().append(item)
        self.most = max(self.most, len(self))


def test_no_more_than_hold_max_payloads_are_held_at_any_time(quads: Pairs) -> None:
    """HOLD_MAX x HOLD_BYTES bounds what is held during a take too, not only after it:
    a take that starts with HOLD_MAX - 1 held holds up to DRAIN_CHUNK / 2 more."""
    senders, receivers = quads
    for i in range(2):
        for seq in range(HOLD_MAX + 3 * DRAIN_CHUNK):
            senders[i].send_multipart([wire.TOPIC_FRAME, _frame(seq, str(i))])
        assert receivers[i].poll(1000)
    time.sleep(0.05)  # inproc: every message is queued once the first is
    taken = Taken(liveness=Liveness(["ep0", "ep1"], 10**9, 0), pending=PendingFrames(1024, D))
    taken.arrivals.held = peak = _Peak()
    intakes = [taken.intake(receivers[i], i) for i in range(2)]
    # A few frames first, so that the takes of DRAIN_CHUNK parts (DRAIN_CHUNK / 2 frames)
    # after them reach HOLD_MAX - 1 held, and the next one holds DRAIN_CHUNK / 2 more.
    first = DRAIN_CHUNK // 2 - 1
    for seq in range(first):
        senders[2].send_multipart([wire.TOPIC_FRAME, _frame(seq, "z")])
    assert receivers[2].poll(1000)
    time.sleep(0.05)
    assert taken.intake(receivers[2], 0).take(2 * first)
    drain_each(intakes, None)
    assert taken.counters.frames_accepted == first + 2 * (HOLD_MAX + 3 * DRAIN_CHUNK)
    assert not receivers[2].poll(0)
    assert peak.most <= HOLD_MAX
