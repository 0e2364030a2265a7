"""Inproc PAIR connections for the tests that drain sockets (receive, intake)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import zmq

#: (senders, receivers): sender i is connected to receiver i.
Pairs = tuple[list[zmq.Socket[bytes]], list[zmq.Socket[bytes]]]


@contextlib.contextmanager
def pair_sockets(n: int, name: str) -> Iterator[Pairs]:
    """``n`` inproc PAIR connections at ``inproc://{name}-{i}``, closed at the end."""
    with zmq.Context() as ctx:
        senders: list[zmq.Socket[bytes]] = []
        receivers: list[zmq.Socket[bytes]] = []
        try:
            for i in range(n):
                rx = ctx.socket(zmq.PAIR)
                receivers.append(rx)
                rx.bind(f"inproc://{name}-{i}")
                tx = ctx.socket(zmq.PAIR)
                senders.append(tx)
                tx.connect(f"inproc://{name}-{i}")
            yield senders, receivers
        finally:
            for sock in (*senders, *receivers):
                sock.close(linger=0)
