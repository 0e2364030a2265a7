"""Connections libzmq gave up on: notice them, connect again, count them, tell once.

A :class:`ConnectionWatch` sits on a connecting socket's monitor, takes an endpoint that
libzmq dropped without retrying (a part above ``MAXMSGSIZE``, a malformed stream, a failed
handshake) as given up, and connects it again after a delay; each reconnect is counted by
endpoint and reason and logged at a bounded rate. Without it such a sensor would go blind
for good.

Design: docs/architecture.md, "Reconnecting what libzmq gave up".
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import zmq
from zmq.utils.monitor import recv_monitor_message

from robot_daemon.ratelimit import REJECT_LOG_PERIOD_NS, RateLimiter

log = logging.getLogger("robot_daemon.zmq_io.monitor")

#: Handshake failures, by the name ``status`` counts them under.
HANDSHAKE_FAILURES: Final[dict[int, str]] = {
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "no_detail",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol",  # e.g. plain text against CURVE
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "auth",  # a key not in curve_allow
}
#: A disconnect that libzmq does not follow by a retry of its own: a protocol error (a
#: part above MAXMSGSIZE, a malformed stream).
DROPPED: Final = "protocol_error"
#: The daemon dropped the connection itself: libzmq held too much of a message still
#: arriving on it (robot_daemon.serve.memory).
HELD: Final = "message_held"
_EVENTS: Final = (zmq.EVENT_DISCONNECTED | zmq.EVENT_CONNECT_RETRIED
                  | zmq.EVENT_HANDSHAKE_SUCCEEDED | sum(HANDSHAKE_FAILURES))
#: The log tells each reconnect after a dropped connection (one line per event), at most
#: one a second per endpoint, and a failed handshake (a refused key retries once a second)
#: at most once per REJECT_LOG_PERIOD_NS per endpoint; a line counts those it stood for.
RECONNECT_LOG_PERIOD_NS: Final = 1_000_000_000
RETRY_LOG_PERIOD_NS: Final = REJECT_LOG_PERIOD_NS
#: The frame socket's delay: libzmq's own retry follows a disconnect within a millisecond
#: (measured), so 20 ms tell the two apart, and a sensor whose connection libzmq dropped
#: loses about a tick of frames (at 100 ms: 18,192 of 19,999 frames of a 2,000 frames/s
#: sensor that sent a 3 MB frame every 30 ms); the frames lost are counted from its seq.
FRAMES_RECONNECT_DELAY_NS: Final = 20_000_000


@dataclass
class _Link:
    """One endpoint's state between a failure and the reconnect that answers it."""

    reason: str | None = None  # why it went down, until it is up again
    reconnect_at: int | None = None  # when the daemon connects again (monotonic ns)


class ConnectionWatch:
    """Watches the connections of one connecting socket; reconnects what libzmq gave up.

    ``what`` names the peers in the log ("frames publisher"). ``delay_ns``: how long after a
    failure the endpoint is connected again if libzmq has not started to by then.
    """

    def __init__(self, sock: zmq.Socket[bytes], endpoints: Sequence[str], what: str,
                 delay_ns: int) -> None:
        self.sock = sock
        self.what = what
        self.delay_ns = delay_ns
        self.monitor: zmq.Socket[bytes] = sock.get_monitor_socket(_EVENTS)
        self._links = {endpoint: _Link() for endpoint in endpoints}
        self._reconnect_log = RateLimiter(RECONNECT_LOG_PERIOD_NS)
        self._retry_log = RateLimiter(RETRY_LOG_PERIOD_NS)
        self._next_ns: int | None = None  # the earliest reconnect_at
        self.reconnects: dict[str, Counter[str]] = {}  # endpoint -> reason -> count
        self.handshakes = 0
        self.handshakes_failed: Counter[str] = Counter()

    def close(self) -> None:
        """Stop monitoring (before the socket closes)."""
        with contextlib.suppress(zmq.ZMQError):
            self.sock.disable_monitor()
        self.monitor.close(linger=0)

    # ---------------------------------------------------------------- events

    def on_events(self, now_ns: int) -> None:
        """Read every waiting monitor event (call when the poller says the monitor is readable)."""
        while self.monitor.poll(0):
            message = recv_monitor_message(self.monitor)
            endpoint = self._endpoint(message["endpoint"])
            if endpoint is not None:
                self._on_event(int(message["event"]), endpoint, now_ns)

    def _on_event(self, event: int, endpoint: str, now_ns: int) -> None:
        link = self._links[endpoint]
        if event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
            self.handshakes += 1
            link.reason, link.reconnect_at = None, None
        elif event in HANDSHAKE_FAILURES:
            self.handshakes_failed[HANDSHAKE_FAILURES[event]] += 1
            link.reason = f"handshake_{HANDSHAKE_FAILURES[event]}"
            with contextlib.suppress(zmq.ZMQError):  # no retry before delay_ns is over
                self.sock.disconnect(endpoint)
            self._schedule(link, now_ns)
        elif event == zmq.EVENT_DISCONNECTED:
            link.reason = link.reason or DROPPED
            self._schedule(link, now_ns)
        elif event == zmq.EVENT_CONNECT_RETRIED and link.reason == DROPPED:
            # libzmq connects again by itself (the publisher went away): leave it be.
            link.reason, link.reconnect_at = None, None
            self._next_ns = self._earliest()

    def _schedule(self, link: _Link, now_ns: int) -> None:
        if link.reconnect_at is None:
            link.reconnect_at = now_ns + self.delay_ns
            self._next_ns = self._earliest()

    def _earliest(self) -> int | None:
        due = [link.reconnect_at for link in self._links.values() if link.reconnect_at]
        return min(due) if due else None

    def _endpoint(self, raw: bytes) -> str | None:
        """The configured endpoint an event names. libzmq names a ``tcp://HOST:PORT``
        endpoint by its resolved address after a retry, so a tcp port that only one
        endpoint uses identifies it too."""
        name = raw.decode("utf-8", "replace")
        if name in self._links:
            return name
        if name.startswith("tcp://"):
            port = name.rpartition(":")[2]
            same = [ep for ep in self._links if ep.startswith("tcp://")
                    and ep.rpartition(":")[2] == port]
            if len(same) == 1:
                return same[0]
        log.debug("monitor event for an endpoint not configured: %s", name)
        return None

    # ---------------------------------------------------------------- reconnecting

    def service(self, now_ns: int) -> None:
        """Connect again the endpoints whose time has come (one comparison otherwise)."""
        if self._next_ns is None or now_ns < self._next_ns:
            return
        self.on_events(now_ns)  # a retry of libzmq's own may wait there unread
        for endpoint, link in self._links.items():
            if link.reconnect_at is not None and now_ns >= link.reconnect_at:
                self._reconnect(endpoint, link)
        self._next_ns = self._earliest()

    def drop(self, endpoint: str, why: str) -> None:
        """Drop ``endpoint``'s connection and make it again now, counted as
        :data:`HELD` and logged with ``why``: libzmq frees what it held of it."""
        link = self._links[endpoint]
        link.reason = HELD
        self._reconnect(endpoint, link, why)
        self._next_ns = self._earliest()

    def _reconnect(self, endpoint: str, link: _Link, why: str = "") -> None:
        reason = link.reason or DROPPED
        link.reason, link.reconnect_at = None, None
        with contextlib.suppress(zmq.ZMQError):  # already gone if libzmq terminated it
            self.sock.disconnect(endpoint)
        try:
            self.sock.connect(endpoint)
        except zmq.ZMQError as exc:  # cannot happen for an endpoint that connected once
            log.error("%s at %s: cannot connect again: %s", self.what, endpoint, exc)
            return
        self.reconnects.setdefault(endpoint, Counter())[reason] += 1
        if reason == HELD:
            self._tell(self._reconnect_log, endpoint, f"{why}: connection dropped and made"
                       " again (libzmq frees what it held of it)")
        elif reason == DROPPED:
            self._tell(self._reconnect_log, endpoint, "libzmq dropped the connection (a "
                       "message part above the size limit, or a malformed stream) and does "
                       "not reconnect after that: connected again")
        else:
            self._tell(self._retry_log, endpoint, f"handshake failed ({_why(reason)});"
                       f" connected again {self.delay_ns / 1e9:g} s later")

    def _tell(self, limiter: RateLimiter, endpoint: str, message: str) -> None:
        """A WARNING about ``endpoint`` unless ``limiter`` holds it back (then counted)."""
        suppressed = limiter.allow(endpoint, time.monotonic_ns())
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("%s at %s: %s%s", self.what, endpoint, message, more)

    def status(self) -> dict[str, dict[str, int]]:
        """``{endpoint: {reason: reconnects}}`` of the endpoints the daemon reconnected."""
        return {endpoint: dict(reasons) for endpoint, reasons in self.reconnects.items()}


def _why(reason: str) -> str:
    """What a failed handshake means, for the log."""
    return {
        "handshake_auth": "auth: its CURVE key is not in curve_allow",
        "handshake_protocol": "protocol: e.g. a plain-text peer against CURVE, replayed bytes",
    }.get(reason, "no detail")


@contextlib.contextmanager
def watch(sock: zmq.Socket[bytes], endpoints: Sequence[str], what: str,
          delay_ns: int) -> Iterator[ConnectionWatch]:
    """A :class:`ConnectionWatch` on ``sock`` (start it before connecting), closed after."""
    connections = ConnectionWatch(sock, endpoints, what, delay_ns)
    try:
        yield connections
    finally:
        connections.close()


class Watches:
    """The daemon's watched sockets together: one poller hook, one status map."""

    def __init__(self) -> None:
        self._all: list[ConnectionWatch] = []

    def add(self, connections: ConnectionWatch, poller: zmq.Poller) -> None:
        self._all.append(connections)
        poller.register(connections.monitor, zmq.POLLIN)

    def on_events(self, events: Iterable[Any], now_ns: int) -> None:
        """Read the monitors among ``events`` (the sockets a poll returned)."""
        for connections in self._all:
            if connections.monitor in events:
                connections.on_events(now_ns)

    def service(self, now_ns: int) -> None:
        for connections in self._all:
            connections.service(now_ns)

    def status(self) -> dict[str, dict[str, int]]:
        """``reconnects`` in ``status``: every watched endpoint the daemon reconnected."""
        merged: dict[str, dict[str, int]] = {}
        for connections in self._all:
            for endpoint, reasons in connections.status().items():
                into = merged.setdefault(endpoint, {})
                for reason, count in reasons.items():
                    into[reason] = into.get(reason, 0) + count
        return merged
