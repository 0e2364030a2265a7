"""Connections libzmq gives up on: the premise (libzmq does not reconnect after a protocol
error) and :class:`robot_daemon.zmq_io.monitor.ConnectionWatch` on real sockets, in-process."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
import zmq

from robot_daemon.zmq_io import monitor

MAX_BYTES = 1 << 20


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Pair:
    """A publisher bound on a loopback port, and a SUB connected to it as the daemon's is."""

    def __init__(self, ctx: zmq.Context[zmq.Socket[bytes]], connect_to: str) -> None:
        self.ctx = ctx
        self.port = int(connect_to.rpartition(":")[2])
        self.endpoint = connect_to
        self.pub = self._publisher()
        self.sub = ctx.socket(zmq.SUB)
        self.sub.setsockopt(zmq.MAXMSGSIZE, MAX_BYTES)
        self.sub.setsockopt(zmq.LINGER, 0)
        self.sub.subscribe(b"t")

    def _publisher(self) -> zmq.Socket[bytes]:
        pub = self.ctx.socket(zmq.XPUB)
        pub.setsockopt(zmq.LINGER, 0)
        deadline = time.monotonic() + 5
        while True:  # the port of a closed publisher is released by libzmq's I/O thread
            try:
                pub.bind(f"tcp://127.0.0.1:{self.port}")
                return pub
            except zmq.ZMQError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def subscribed(self, timeout: float) -> bool:
        """Whether the SUB (re)subscribed within ``timeout`` s: it is connected."""
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            if self.pub.poll(max(1, round(left * 1000))) and self.pub.recv() == b"\x01t":
                return True
        return False

    def restart_publisher(self) -> None:
        self.pub.close()
        self.pub = self._publisher()

    def delivered(self, watch: monitor.ConnectionWatch | None = None,
                  seconds: float = 0.5) -> int:
        """Send a message every 10 ms for ``seconds``; how many the SUB received."""
        got = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.pub.send_multipart([b"t", b"ok"])
            time.sleep(0.01)
            if watch is not None:
                watch.on_events(time.monotonic_ns())
                watch.service(time.monotonic_ns())
            while self.sub.poll(0):
                self.sub.recv_multipart()
                got += 1
        return got


@pytest.fixture
def pair() -> Iterator[Pair]:
    with zmq.Context() as ctx:
        p = Pair(ctx, f"tcp://localhost:{_free_port()}")
        try:
            yield p
        finally:
            p.pub.close()
            p.sub.close()


def test_libzmq_never_reconnects_after_a_part_above_maxmsgsize(pair: Pair) -> None:
    """The premise of the monitor: one oversized part ends the connection for good."""
    pair.sub.connect(pair.endpoint)
    assert pair.subscribed(5.0)
    assert pair.delivered(seconds=0.2) > 0
    pair.pub.send_multipart([b"t", b"\x00" * (2 * MAX_BYTES)])
    assert pair.delivered(seconds=1.0) == 0
    assert not pair.subscribed(0.1)


def test_a_watch_reconnects_what_libzmq_gave_up_and_leaves_its_retries_alone(
    pair: Pair,
) -> None:
    """Named by host name (libzmq names its retries by the resolved address), as in a
    config file: a restarted publisher is libzmq's to reconnect, an oversized part ours."""
    with monitor.watch(pair.sub, [pair.endpoint], "test publisher",
                       monitor.FRAMES_RECONNECT_DELAY_NS) as watch:
        pair.sub.connect(pair.endpoint)
        assert pair.subscribed(5.0)
        pair.restart_publisher()
        assert pair.delivered(watch, seconds=1.0) > 0  # libzmq's own retry
        assert watch.status() == {}
        pair.pub.send_multipart([b"t", b"\x00" * (2 * MAX_BYTES)])
        start = time.monotonic()
        while not watch.status() and time.monotonic() - start < 1.0:
            pair.delivered(watch, seconds=0.01)
        assert watch.status() == {pair.endpoint: {"protocol_error": 1}}
        assert time.monotonic() - start < 1.0
        assert pair.delivered(watch, seconds=0.3) > 0
        assert watch.handshakes >= 3  # the first connection, libzmq's retry and ours
