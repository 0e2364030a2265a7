"""The frames sockets' messages into the tick's ring: the daemon's work for every frame.

:class:`FrameIntake` reads one frames socket; the usual message (two parts, topic
``frame``) is held in the :class:`Arrivals` that all frames sockets share and decoded with
the others held, many at a time; anything else takes the full checks of
:func:`robot_daemon.wire.decode_frame_raw`. Either way an accepted frame is counted, its
``seq`` tracked, its source marked heard and the frame queued for the tick, and a refused
one is counted by reason: this is most of the daemon's CPU at high rates.

Design: docs/architecture.md, "Frame intake".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from itertools import groupby
from typing import Final, cast

import zmq

from robot_daemon import wire
from robot_daemon.errors import WireError
from robot_daemon.serve.batch import PendingFrames
from robot_daemon.serve.liveness import Liveness
from robot_daemon.serve.report import Counters
from robot_daemon.serve.sequence import SeqTracker
from robot_daemon.wire.decode import USUAL_MAX_D
from robot_daemon.wire.layout import BULK_MIN, usual_frames
from robot_daemon.wire.messages import FrameFields
from robot_daemon.zmq_io.receive import COPY_MAX, Part, Receiver, kept

_NOBLOCK: Final = int(zmq.NOBLOCK)

#: Counts and logs a refused frame: ``reject(reason, message, now_ns)``.
Reject = Callable[[str, str, int], None]

#: Usual messages held before a flush: it bounds what a drain runs past its deadline
#: (a flush of 256 frames takes about 0.2 ms) and, with HOLD_BYTES, what is held.
HOLD_MAX: Final = 256
#: The longest payload held: a frame in the usual form is at most 549 bytes (d = 64, a
#: ``src`` of MAX_SRC_LEN bytes). A longer one takes the full path at once, so that at
#: most HOLD_MAX x HOLD_BYTES (256 KiB) is held whatever arrives.
HOLD_BYTES: Final = 1024


class Arrivals:
    """The frames of every frames socket on their way into ``pending``: the usual
    messages held until :meth:`flush`, in the order they arrived; see the module."""

    def __init__(
        self, pending: PendingFrames, counters: Counters, seqs: SeqTracker,
        liveness: Liveness, reject: Reject,
    ) -> None:
        self.pending = pending
        self._counters = counters
        self._seqs = seqs
        self._liveness = liveness
        self._reject = reject
        #: The usual messages held: (payload, time received in monotonic ns, endpoint).
        self.held: list[tuple[bytes, int, int]] = []

    def flush(self) -> None:
        """Decode the held payloads together and account for each frame, in order."""
        if not self.held:
            return
        held = self.held.copy()
        self.held.clear()  # in place: a take holds on to its append method
        if len(held) < BULK_MIN:  # a few (low rates): one at a time costs less
            for payload, now_ns, endpoint in held:
                self.message(endpoint, [wire.TOPIC_FRAME, payload], 2, now_ns)
            return
        payloads, arrival_ns, endpoints = zip(*held, strict=True)
        frames = usual_frames(payloads, self.pending.d)
        start = 0
        if None in frames:  # rare: the full path for those, in their place
            for i, frame in enumerate(frames):
                if frame is None:
                    self._accept(frames[start:i], arrival_ns[start:i], endpoints[start:i])
                    self.message(endpoints[i], [wire.TOPIC_FRAME, payloads[i]], 2,
                                 arrival_ns[i])
                    start = i + 1
        self._accept(frames[start:], arrival_ns[start:], endpoints[start:])

    def _accept(self, frames: Sequence[FrameFields | None], arrival_ns: Sequence[int],
                endpoints: Sequence[int]) -> None:
        """Count, track, mark heard and queue ``frames`` (none of them None), received
        from ``endpoints`` at ``arrival_ns``: what :meth:`message` does for each, a run of
        frames of one endpoint and source at a time."""
        n = len(frames)
        if not n:
            return
        valid = cast("Sequence[FrameFields]", frames)
        self._counters.frames_in += n
        self._counters.frames_accepted += n
        seqs, srcs = [f[0] for f in valid], [f[3] for f in valid]
        start = 0
        for (endpoint, src), run in groupby(zip(endpoints, srcs, strict=True)):
            end = start + len(list(run))
            self._seqs.observe_run(endpoint, src, seqs[start:end])
            self._liveness.heard(endpoint, src, arrival_ns[end - 1], end - start)
            start = end
        # Keep the newest (the planner wants the present) and count the oldest dropped.
        self._counters.frames_dropped += self.pending.add_many(valid, arrival_ns)

    def message(self, endpoint: int, parts: list[Part], count: int, now_ns: int) -> None:
        """One message of ``count`` parts from ``endpoint``, received at ``now_ns``, of
        which ``parts`` holds the first (at most 2): check, decode, count, queue for the
        tick (the full path; see the module). Call :meth:`flush` first."""
        self._counters.frames_in += 1
        if count != 2 or parts[0] != wire.TOPIC_FRAME:
            self._reject("bad_envelope", f"expected [b'frame', payload], got {count} "
                         f"part(s) with topic {bytes(parts[0][:16])!r}", now_ns)
            return
        try:  # the ring's d is the model's: a reload keeps d
            frame = wire.decode_frame_raw(parts[1], self.pending.d)
        except WireError as exc:
            self._reject(exc.reason, str(exc), now_ns)
            return
        self._counters.frames_accepted += 1
        self._seqs.observe(endpoint, frame.src, frame.seq)
        self._liveness.heard(endpoint, frame.src, now_ns)
        # Keep the newest (the planner wants the present) and count the oldest dropped.
        self._counters.frames_dropped += self.pending.add(frame, now_ns)


class FrameIntake(Receiver):
    """Reads the frames socket of ``endpoint`` into ``arrivals``; see the module docstring.

    A :class:`~robot_daemon.zmq_io.receive.Receiver` whose handler is :meth:`message`,
    with :meth:`take` receiving the usual message itself.
    """

    def __init__(self, sock: zmq.Socket[bytes], endpoint: int, arrivals: Arrivals) -> None:
        super().__init__(sock, self.message)
        self.endpoint = endpoint
        self.arrivals = arrivals

    def take(self, parts: int, keep_going: Callable[[], bool] | None = None) -> bool:
        """:meth:`Receiver.take`: up to ``parts`` parts; False once the queue is empty.
        The usual messages are held: :meth:`flush` (which the drains call) accounts for
        them."""
        arrivals = self.arrivals
        if self._count or keep_going is not None or arrivals.pending.d > USUAL_MAX_D:
            # A message cut off by the last drain, a caller that may stop between
            # messages, or frames too wide for the usual form: the Receiver's path, part
            # by part, through message().
            return super().take(parts, keep_going)
        if len(arrivals.held) + parts // 2 > HOLD_MAX:
            # This take holds up to parts / 2 more (two parts a frame): at most HOLD_MAX
            # held at any time (the drains' takes are of DRAIN_CHUNK parts, far below
            # 2 HOLD_MAX). What is held when a drain ends, the drain flushes.
            arrivals.flush()
        # Runs for every frame: everything it uses is a local.
        recv, now, endpoint, hold = self.sock.recv, time.monotonic_ns, self.endpoint, (
            arrivals.held.append)
        # As many parts as the Receiver would take, no more: a message that the budget cuts
        # off is finished by the next take, after the other sockets' turns (drain_each). One
        # zmq.Frame alive at a time, as in Receiver.take: a part is up to MAXMSGSIZE.
        while parts > 1:
            try:
                part = recv(_NOBLOCK, copy=False)
            except zmq.Again:
                return False
            if not part.more:
                parts -= 1
                self.message([kept(part)], 1)
                continue
            # A topic of 16 MiB is not copied either (receive.kept, inline: every frame).
            topic = part.bytes if len(part) <= COPY_MAX else part.buffer
            try:  # libzmq hands a message over whole: its second part is there already
                part = recv(_NOBLOCK, copy=False)
            except zmq.Again:  # never seen; the next drain would finish the message
                self._parts, self._count = [topic], 1
                return False
            parts -= 2
            if part.more:  # three parts or more: the Receiver bounds and finishes it
                self._parts, self._count = [topic, kept(part)], 2
                del part
                return super().take(parts) if parts else True
            if topic != wire.TOPIC_FRAME or len(part) > HOLD_BYTES:
                self.message([topic, kept(part)], 2)
                continue
            hold((part.bytes, now(), endpoint))
        # One part left (after a message of one part): the Receiver's way, which keeps the
        # first part of a longer message for the next take.
        return super().take(parts) if parts > 0 else True

    def message(self, parts: list[Part], count: int) -> None:
        """The full path for one message (:meth:`Arrivals.message`), after what is held."""
        self.arrivals.flush()
        self.arrivals.message(self.endpoint, parts, count, time.monotonic_ns())

    def flush(self) -> None:
        """Account for the held frames (of every socket: :meth:`Arrivals.flush`)."""
        self.arrivals.flush()
