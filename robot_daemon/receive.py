"""Draining a ZeroMQ socket between ticks without letting a flood delay the next tick.

The daemon's frame socket and the online label socket are read the same way: every
waiting message, without blocking, looking at the clock every :data:`DRAIN_CHUNK`
messages so that a burst cannot run past the deadline of the next tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

import zmq

#: Messages received between two looks at the clock.
DRAIN_CHUNK: Final = 64


def drain(
    sock: zmq.Socket[bytes],
    until_ns: int,
    handle: Callable[[list[bytes]], None],
    keep_going: Callable[[], bool] | None = None,
) -> None:
    """Pass each waiting multipart message to ``handle`` until the queue is empty,
    ``time.monotonic_ns()`` reaches ``until_ns`` or ``keep_going()`` turns false."""
    while True:
        for _ in range(DRAIN_CHUNK):
            if keep_going is not None and not keep_going():
                return
            try:
                parts = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            handle(parts)
        if time.monotonic_ns() >= until_ns:
            return
