"""Draining ZeroMQ sockets between ticks without letting a flood delay the next tick.

A :class:`Receiver` reads one socket's messages without blocking, looking at the clock
every :data:`DRAIN_CHUNK` parts, and keeps at most :data:`MAX_PARTS` parts of a message
(copied only up to :data:`COPY_MAX` bytes); :func:`drain_each` reads several sockets in
turn. The daemon's frame sockets, the online label socket, ``watch`` and the demo read
through it, so that a flood or a message of many parts can neither run past the next
tick's deadline nor grow the daemon's memory.

Design: docs/architecture.md, "Draining sockets".
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final

import zmq

from robot_daemon.wire.messages import MAX_FRAME_BYTES

#: Parts received between two looks at the clock. A look costs under 0.1 us, a frame (two
#: parts) 5 to 10 us in the daemon (receive, decode, validate, queue): 8 frames overshoot a
#: deadline by 0.1 ms at most, where 64 frames of 30 us each once overshot it by 2 ms.
DRAIN_CHUNK: Final = 16
#: Parts kept of each message: a valid frame or label message has two. The daemon holds at
#: most this many parts of ``MAXMSGSIZE`` at once, whatever the shape of a message.
MAX_PARTS: Final = 2
_NOBLOCK: Final = int(zmq.NOBLOCK)

#: Parts longer than this are kept as a view of libzmq's buffer, not copied: the largest
#: valid frame or label payload (wire.MAX_FRAME_BYTES). A copy of 16 MiB takes 1.5-3 ms,
#: where the drains look at the clock every DRAIN_CHUNK parts.
COPY_MAX: Final = MAX_FRAME_BYTES
#: A kept part: its bytes, or a view of libzmq's buffer (longer than COPY_MAX).
Part = bytes | memoryview
#: Called once per message with its first parts (at most MAX_PARTS) and its part count.
Handler = Callable[[list[Part], int], None]


def kept(part: zmq.Frame) -> Part:
    """What is kept of ``part``: its bytes, or a view of its buffer above COPY_MAX bytes."""
    return part.bytes if len(part) <= COPY_MAX else part.buffer


class Receiver:
    """Reads the messages of one socket part by part into ``handle(parts, count)``.

    Keep one per socket for its lifetime: a message cut off by a deadline is finished by
    the next :meth:`drain` (its remaining parts already wait in libzmq).
    """

    def __init__(self, sock: zmq.Socket[bytes], handle: Handler) -> None:
        self.sock = sock
        self._handle = handle
        self._parts: list[Part] = []  # the kept parts of the message being received
        self._count = 0  # parts of it received so far

    def drain(self, until_ns: int | None, keep_going: Callable[[], bool] | None = None) -> None:
        """Pass each waiting message to the handler until the queue is empty,
        ``time.monotonic_ns()`` reaches ``until_ns`` (``None``: no deadline) or
        ``keep_going()`` turns false (asked between messages only); then :meth:`flush`."""
        try:
            while self.take(DRAIN_CHUNK, keep_going):
                if until_ns is not None and time.monotonic_ns() >= until_ns:
                    return
        finally:
            self.flush()

    def take(self, parts: int, keep_going: Callable[[], bool] | None = None) -> bool:
        """Receive up to ``parts`` parts, handling each message they finish; False once
        the queue is empty (or ``keep_going()`` turned false between messages)."""
        # The state lives in locals while the loop runs, written back however it ends: two
        # attribute loads and stores a call instead of several a part.
        recv, handle = self.sock.recv, self._handle
        held, count = self._parts, self._count
        try:
            for _ in range(parts):
                if count == 0 and keep_going is not None and not keep_going():
                    return False
                # A zmq.Frame knows whether more parts follow; asking the socket (RCVMORE,
                # as recv_multipart does) goes through pyzmq's option enum each time:
                # 1 us a part, where a zmq.Frame costs 0.5 us more than a bytes copy.
                try:
                    part = recv(_NOBLOCK, copy=False)
                except zmq.Again:
                    return False
                count += 1
                if count <= MAX_PARTS:
                    held.append(part.bytes if len(part) <= COPY_MAX else part.buffer)
                if not part.more:
                    message, size = held, count
                    held, count = [], 0
                    handle(message, size)
            return True
        finally:
            self._parts, self._count = held, count

    def flush(self) -> None:
        """Hand over what :meth:`take` held back (a subclass's; this one holds nothing).
        The drains call it before they return."""


def drain_each(receivers: Sequence[Receiver], until_ns: int | None) -> None:
    """Drain every receiver's socket, taking up to :data:`DRAIN_CHUNK` parts from each in
    turn, until every queue is empty or ``time.monotonic_ns()`` reaches ``until_ns``
    (``None``: no deadline); then :meth:`Receiver.flush` each, however it ended."""
    waiting = list(receivers)
    try:
        while waiting:
            for receiver in tuple(waiting):
                if not receiver.take(DRAIN_CHUNK):
                    waiting.remove(receiver)
                if until_ns is not None and time.monotonic_ns() >= until_ns:
                    return
    finally:
        for receiver in receivers:
            receiver.flush()


def drain(sock: zmq.Socket[bytes], handle: Handler) -> None:
    """Every message waiting on ``sock``, whole, with no deadline (for a peer we trust)."""
    Receiver(sock, handle).drain(None)
