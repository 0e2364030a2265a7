"""A frames socket's messages into the tick's ring: the daemon's work for every frame.

At tens of thousands of frames a second this is most of the daemon's CPU, so the usual
message takes a short path and anything else the full one, with the same outcome:

* **the usual message**: two parts, the topic ``frame``, a payload in the form our
  encoders give (:func:`robot_daemon.wire.decode.usual_frame`). :meth:`FrameIntake.take`
  receives, decodes and queues it inline, in one loop over the socket;
* **anything else** (another topic, one part or three, a payload in any other form or
  invalid) goes to :meth:`FrameIntake.message`: the envelope's checks, then
  :func:`robot_daemon.wire.decode_frame_raw`'s full checks, which give the reason a
  payload is refused. A message of many parts is received and bounded as
  :class:`robot_daemon.serve.receive.Receiver` does it.

Either way an accepted frame is counted, its ``seq`` tracked
(:class:`robot_daemon.serve.stats.SeqTracker`), its endpoint and source marked heard
(:class:`robot_daemon.serve.liveness.Liveness`) and the frame queued in the ring
(:class:`robot_daemon.serve.batch.PendingFrames`); a refused one is counted by reason and
logged at a bounded rate (the daemon's ``reject``).

Measured in process (``scripts/bench_frame_path.py``: 50,000 frames queued on an inproc
socket, then drained), per frame from the socket to the ring: 5.5 us with every message
on the full path, 4.9 us with the short one; of that, receiving the two parts
(``zmq.Frame``) takes 2.0.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import zmq

from robot_daemon import wire
from robot_daemon.errors import WireError
from robot_daemon.serve.batch import PendingFrames
from robot_daemon.serve.liveness import Liveness
from robot_daemon.serve.receive import Receiver
from robot_daemon.serve.report import Counters
from robot_daemon.serve.stats import SeqTracker
from robot_daemon.wire.decode import USUAL_MAX_D, usual_frame

_NOBLOCK: Final = int(zmq.NOBLOCK)

#: Counts and logs a refused frame: ``reject(reason, message, now_ns)``.
Reject = Callable[[str, str, int], None]


class FrameIntake(Receiver):
    """Reads the frames socket of ``endpoint`` into ``pending``; see the module docstring.

    A :class:`~robot_daemon.serve.receive.Receiver` whose handler is :meth:`message`,
    with :meth:`take` receiving the usual message itself.
    """

    def __init__(
        self, sock: zmq.Socket[bytes], endpoint: int, pending: PendingFrames,
        counters: Counters, seqs: SeqTracker, liveness: Liveness, reject: Reject,
    ) -> None:
        super().__init__(sock, self.message)
        self.endpoint = endpoint
        self._pending = pending
        self._counters = counters
        self._seqs = seqs
        self._liveness = liveness
        self._reject = reject

    def take(self, parts: int, keep_going: Callable[[], bool] | None = None) -> bool:
        """:meth:`Receiver.take`: up to ``parts`` parts; False once the queue is empty."""
        if self._count or keep_going is not None or self._pending.d > USUAL_MAX_D:
            # A message cut off by the last drain, a caller that may stop between
            # messages, or frames too wide for the usual form (the short path would unpack
            # each twice): the Receiver's path, part by part, through message().
            return super().take(parts, keep_going)
        # Runs for every frame: everything it uses is a local.
        recv, now = self.sock.recv, time.monotonic_ns
        usual, d, add = usual_frame, self._pending.d, self._pending.add
        counters, observe = self._counters, self._seqs.observe
        heard, endpoint = self._liveness.heard, self.endpoint
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
                self.message([part.bytes], 1)
                continue
            topic = part.bytes
            try:  # libzmq hands a message over whole: its second part is there already
                part = recv(_NOBLOCK, copy=False)
            except zmq.Again:  # never seen; the next drain would finish the message
                self._parts, self._count = [topic], 1
                return False
            parts -= 2
            payload = part.bytes
            if part.more:  # three parts or more: the Receiver bounds and finishes it
                self._parts, self._count = [topic, payload], 2
                del part
                return super().take(parts) if parts else True
            frame = usual(payload, d) if topic == wire.TOPIC_FRAME else None
            if frame is None:
                self.message([topic, payload], 2)
                continue
            # message()'s last lines, inline: a call would cost 0.1 us a frame.
            now_ns = now()
            counters.frames_in += 1
            counters.frames_accepted += 1
            seq, _, _, src = frame
            observe(src, seq, now_ns)
            heard(endpoint, src, now_ns)
            counters.frames_dropped += add(frame, now_ns)
        # One part left (after a message of one part): the Receiver's way, which keeps the
        # first part of a longer message for the next take.
        return super().take(parts) if parts > 0 else True

    def message(self, parts: list[bytes], count: int) -> None:
        """One message of ``count`` parts, of which ``parts`` holds the first (at most 2):
        check, decode, count, queue for the tick (the full path; see the module)."""
        now_ns = time.monotonic_ns()
        self._counters.frames_in += 1
        if count != 2 or parts[0] != wire.TOPIC_FRAME:
            self._reject("bad_envelope", f"expected [b'frame', payload], got {count} "
                         f"part(s) with topic {parts[0][:16]!r}", now_ns)
            return
        try:  # the ring's d is the model's: a reload keeps d
            frame = wire.decode_frame_raw(parts[1], self._pending.d)
        except WireError as exc:
            self._reject(exc.reason, str(exc), now_ns)
            return
        self._counters.frames_accepted += 1
        self._seqs.observe(frame.src, frame.seq, now_ns)
        self._liveness.heard(self.endpoint, frame.src, now_ns)
        # Keep the newest (the planner wants the present) and count the oldest dropped.
        self._counters.frames_dropped += self._pending.add(frame, now_ns)
