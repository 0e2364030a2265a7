"""The daemon's sockets: one SUB per ``frames`` endpoint, connected, and the ``pred`` PUB,
bound, each with the limits that keep what libzmq holds and sends bounded.

Design: docs/architecture.md, "The serving loop".
"""

from __future__ import annotations

from typing import Final

import zmq

from robot_daemon import wire
from robot_daemon.config import DaemonConfig
from robot_daemon.errors import RobotDaemonError

#: Closing the PUB socket waits at most this long for the last messages to leave.
LINGER_MS: Final = 200
#: A message part above this disconnects its publisher (libzmq's only way to refuse it;
#: the daemon connects again, zmq_io.monitor), losing what the sensor sends meanwhile. Below
#: it, a part too large for a frame (64 KiB) is received without a copy (zmq_io.receive) and
#: refused as ``oversized``: one frame lost, not 100 ms of a sensor as at 1 MiB. Memory is
#: bounded by serve.memory, not by this.
MAX_MESSAGE_BYTES: Final = 16 << 20
#: The PUB socket's send high-water mark, in messages per subscriber: 5 s of preds at
#: 20 ms ticks. A subscriber that falls further behind (a stopped `watch`, a hung exporter)
#: loses the excess, and the daemon holds at most this many messages for it: at 10,000,
#: eight stopped subscribers of large preds grew the daemon by 1.5 MB a second, unbounded.
SNDHWM: Final = 250


def open_sockets(
    cfg: DaemonConfig, subs: list[zmq.Socket[bytes]], pub: zmq.Socket[bytes]
) -> None:
    """Set the limits of ``subs`` (one per ``cfg.frames`` endpoint) and ``pub``, connect
    each SUB to its endpoint and bind ``pub`` to ``cfg.pred``.

    Raises:
        RobotDaemonError: an endpoint cannot be connected or bound.
    """
    pub.setsockopt(zmq.SNDHWM, SNDHWM)
    pub.setsockopt(zmq.LINGER, LINGER_MS)
    for sub, endpoint in zip(subs, cfg.frames, strict=True):
        sub.setsockopt(zmq.RCVHWM, cfg.rcvhwm)
        sub.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
        sub.setsockopt(zmq.LINGER, 0)
        sub.subscribe(wire.TOPIC_FRAME)
        try:
            sub.connect(endpoint)
        except zmq.ZMQError as exc:
            raise RobotDaemonError(f"cannot connect to frames {endpoint!r}: {exc}") from None
    try:
        pub.bind(cfg.pred)
    except zmq.ZMQError as exc:
        raise RobotDaemonError(
            f"cannot bind pred {cfg.pred!r}: {exc}; is another daemon running there?"
        ) from None
