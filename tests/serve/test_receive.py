"""Draining several frame sockets: every message once, each tagged with its socket, in turns."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
import zmq

from robot_daemon.zmq_io.receive import DRAIN_CHUNK, Receiver, drain_each

from .inproc import Pairs, pair_sockets


@pytest.fixture
def pairs() -> Iterator[Pairs]:
    """Two inproc PAIR connections: (senders, receivers)."""
    with pair_sockets(2, "drain") as socks:
        yield socks


def _wait_queued(sock: zmq.Socket[bytes]) -> None:
    assert sock.poll(1000), "nothing arrived"


def _tagging(socks: list[zmq.Socket[bytes]], got: list[tuple[int, bytes]]) -> list[Receiver]:
    """A Receiver per socket that records (socket index, last kept part) per message."""
    return [Receiver(sock, lambda parts, count, i=i: got.append((i, parts[-1])))
            for i, sock in enumerate(socks)]


def test_each_message_once_with_its_socket_and_a_flood_does_not_go_first(
    pairs: Pairs,
) -> None:
    senders, receivers = pairs
    for n in range(100):  # socket 0 floods
        senders[0].send_multipart([b"frame", str(n).encode()])
    for n in range(3):
        senders[1].send_multipart([b"frame", str(n).encode()])
    for rx in receivers:
        _wait_queued(rx)
    got: list[tuple[int, bytes]] = []
    drain_each(_tagging(receivers, got), None)
    assert [m for i, m in got if i == 0] == [str(n).encode() for n in range(100)]
    assert [m for i, m in got if i == 1] == [b"0", b"1", b"2"]
    # Socket 1's messages come in the first round (a chunk is DRAIN_CHUNK parts: half as
    # many two-part messages), not after socket 0's hundred.
    first = DRAIN_CHUNK // 2
    assert [i for i, _ in got[: first + 3]] == [0] * first + [1] * 3


def test_a_deadline_stops_the_drain_after_a_chunk(
    pairs: Pairs,
) -> None:
    senders, receivers = pairs
    for n in range(3 * DRAIN_CHUNK):
        senders[0].send(str(n).encode())
    _wait_queued(receivers[0])
    got: list[tuple[int, bytes]] = []
    tagging = _tagging(receivers, got)
    drain_each(tagging, time.monotonic_ns())
    assert [i for i, _ in got] == [0] * DRAIN_CHUNK  # the rest waits for the next drain
    drain_each(tagging, None)
    assert len(got) == 3 * DRAIN_CHUNK
