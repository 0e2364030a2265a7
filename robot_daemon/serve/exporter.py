"""``robot-daemon metrics``: the Prometheus exporter, a process of its own beside the daemon.

It subscribes to a daemon's ``pred`` endpoint for ``status`` only and serves the newest
one as Prometheus text on ``http://ADDRESS:PORT/metrics`` (:mod:`robot_daemon.serve.metrics`),
with ``robot_daemon_status_age_seconds`` to alert on. It is a process of its own, at nice
19, so that a flood of HTTP clients costs the daemon one subscriber and nothing else; its
HTTP side (:class:`ScrapeServer`) is one asyncio loop, bounded by :class:`Limits`.

Design: docs/architecture.md, "The metrics exporter".
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import zmq
import zmq.asyncio

from robot_daemon import exits, wire
from robot_daemon.config import check_endpoint
from robot_daemon.errors import ConfigError, WireError
from robot_daemon.printable import printable
from robot_daemon.ratelimit import REJECT_LOG_PERIOD_NS, RateLimiter
from robot_daemon.serve.exporter_child import EXPORTER_NICE
from robot_daemon.serve.metrics import ExporterCounts, Exposition

log = logging.getLogger("robot_daemon.exporter")

#: Connections waiting to be accepted (the kernel holds them: no fd, no memory of ours).
BACKLOG: Final = 128
#: The daemon publishes one ``status`` a second: a few queued are plenty.
STATUS_RCVHWM: Final = 16
#: While it runs as the daemon's child: how often it checks that its parent is alive.
PARENT_CHECK_S: Final = 1.0
#: A port in use (a child of the daemon): the exporter tries again after 1 s, doubling to 30.
BIND_RETRY_S: Final = (1.0, 30.0)
#: After an error response: read and discard at most this much, this long, before
#: closing, so that the client reads the response instead of a reset.
LINGER_BYTES: Final = 65_536
LINGER_S: Final = 1.0
#: After accept() failed for want of an fd or buffer: wait this long (the backlog holds
#: the connections meanwhile).
ACCEPT_PAUSE_S: Final = 0.5
#: The request line quoted in the log, at most this many characters.
QUOTE_CHARS: Final = 80
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"
METRICS_PATH: Final = "/metrics"
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found",
                   405: "Method Not Allowed", 431: "Request Header Fields Too Large"}


@dataclass(frozen=True)
class Limits:
    """What one exporter gives its HTTP clients at most (the module docstring's bounds)."""

    connections: int = 64
    accept_rate: float = 100.0  # connections accepted per second, sustained
    accept_burst: int = 100  # and at once
    request_timeout_s: float = 5.0
    send_timeout_s: float = 5.0
    head_bytes: int = 8192
    headers: int = 100


class Exporter:
    """The newest ``status`` and the exporter's own counts, as the text of a scrape.

    Times are passed in (monotonic ns), so that tests need no clock. ``daemon_pid``: the
    daemon's pid when the exporter is its child (see :class:`Exposition`).
    """

    def __init__(self, now_ns: int, daemon_pid: int | None = None) -> None:
        self.counts = ExporterCounts(now_ns)
        self._exposition = Exposition(self.counts, daemon_pid)
        self._log = RateLimiter(REJECT_LOG_PERIOD_NS)

    def update(self, parts: Sequence[bytes], now_ns: int) -> None:
        """Take one message of the status subscription; a bad one is counted and logged,
        and the newest good one served on."""
        try:
            if len(parts) != 2 or parts[0] != wire.TOPIC_STATUS:
                raise WireError("bad_envelope", f"a message of {len(parts)} part(s), "
                                "not [b'status', payload]")
            self._exposition.update(wire.decode_status(parts[1]))
        except WireError as exc:
            self.counts.statuses["rejected"] += 1
            suppressed = self._log.allow(exc.reason, now_ns)
            if suppressed is not None:
                more = f" ({suppressed} more since the last report)" if suppressed else ""
                log.warning("status rejected, the newest good one is served on: %s%s",
                            quote(str(exc)), more)
            return
        self.counts.statuses["accepted"] += 1
        self.counts.received_ns = now_ns

    def render(self, now_ns: int) -> bytes:
        """The text a scrape at ``now_ns`` returns."""
        return self._exposition.render(now_ns)


def quote(text: str, limit: int = QUOTE_CHARS) -> str:
    """``text`` cut to ``limit`` characters, control characters escaped
    (:func:`robot_daemon.printable.printable`): what a client sends reaches the log."""
    return printable(text[:limit]) + ("..." if len(text) > limit else "")


# ---- HTTP ---------------------------------------------------------------------------------


class _Refusal(Exception):
    """A request answered with an error ``code``; ``why`` goes to the log."""

    def __init__(self, code: int, why: str, line: str = "") -> None:
        super().__init__(why)
        self.code, self.why, self.line = code, why, line


class ScrapeServer:
    """The bounded HTTP/1.1 server for ``/metrics`` (the module docstring); one asyncio
    task per connection, one request per connection."""

    def __init__(self, exporter: Exporter, limits: Limits | None = None) -> None:
        self.exporter = exporter
        self.limits = limits or Limits()
        self.open = 0  # connections being served
        self.port = 0
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._served: set[asyncio.Task[None]] = set()  # held: the loop keeps weak refs
        self._tokens = _Bucket(self.limits.accept_rate, self.limits.accept_burst)
        self._log = RateLimiter(REJECT_LOG_PERIOD_NS)

    async def start(self, host: str, port: int) -> None:
        """Listen on ``host:port`` (0: a free port, then in :attr:`port`).

        Raises:
            OSError: the address cannot be bound (in use, not ours).
        """
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=BACKLOG)
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._accepting = asyncio.create_task(self._accept(self._listener))

    async def close(self) -> None:
        """Stop listening; the connections being served are cancelled with the loop."""
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self._listener is not None:
            self._listener.close()

    async def _accept(self, listener: socket.socket) -> None:
        """Accept one connection at a time, at most ``limits.accept_rate`` a second (the
        others wait in the kernel's backlog, then the kernel refuses them: a flood costs
        us no CPU beyond the rate); one over ``limits.connections`` open is reset at
        once, so that a flood holds no more than that many fds here, and the one being
        reset (an accept comes before the reset)."""
        loop = asyncio.get_running_loop()
        while True:
            if wait_s := self._tokens.wait_s(time.monotonic_ns()):
                await asyncio.sleep(wait_s)
                continue
            try:
                conn, address = await loop.sock_accept(listener)
            except OSError as exc:  # EMFILE, ENOBUFS: none now; the backlog holds them
                self._drop("accept_error", f"cannot accept: {exc.strerror or exc}")
                await asyncio.sleep(ACCEPT_PAUSE_S)
                continue
            self._tokens.take()
            peer = f"{address[0]}:{address[1]}"
            if self.open >= self.limits.connections:
                self._refuse_connection(conn, "limit", f"refused a connection from {peer}: "
                                        f"{self.limits.connections} open already")
            else:
                self.open += 1
                task = asyncio.create_task(self._connection(conn, peer))
                self._served.add(task)
                task.add_done_callback(self._served.discard)
            await asyncio.sleep(0)  # an accept that never blocks must not keep the loop

    def _refuse_connection(self, conn: socket.socket, reason: str, message: str) -> None:
        with contextlib.suppress(OSError):  # a peer gone already: closed all the same
            # A reset, not a FIN: nothing of it is kept, not even in TIME_WAIT.
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()
        self._drop(reason, message)

    async def _connection(self, conn: socket.socket, peer: str) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_connection(sock=conn,
                                                           limit=self.limits.head_bytes)
            await self._serve(reader, writer, peer)
        except (OSError, asyncio.IncompleteReadError):
            pass  # the client went away: nothing to answer, nothing to tell
        finally:
            self.open -= 1
            if writer is None:
                conn.close()
            else:
                # After a close with nothing left to send, a no-op; else it drops what
                # the client did not take: the fd is free either way.
                writer.transport.abort()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     peer: str) -> None:
        try:
            async with asyncio.timeout(self.limits.request_timeout_s):
                head = await reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            self._drop("timeout", f"closed a connection from {peer}: no complete request "
                       f"within {self.limits.request_timeout_s:g} s")
            return
        except asyncio.LimitOverrunError:
            start = await reader.read(QUOTE_CHARS)  # buffered already: no wait
            await self._refuse(reader, writer, peer, _Refusal(
                431, f"request head over {self.limits.head_bytes} bytes",
                quote(start.split(b"\r\n", 1)[0].decode("latin-1"))))
            return
        try:
            head_request = self._parse(head)
        except _Refusal as refusal:
            await self._refuse(reader, writer, peer, refusal)
            return
        self.exporter.counts.requests[200] += 1
        body = self.exporter.render(time.monotonic_ns())
        await self._send(writer, 200, body, head_only=head_request)
        writer.close()

    def _parse(self, head: bytes) -> bool:
        """Check a request head; whether it is a ``HEAD`` (else a ``GET``) of /metrics."""
        lines = head.decode("latin-1").split("\r\n")[:-2]  # the head ends in an empty line
        request_line, headers = lines[0], lines[1:]
        line = quote(request_line)
        if len(headers) > self.limits.headers:
            raise _Refusal(431, f"{len(headers)} headers, over {self.limits.headers}", line)
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            raise _Refusal(400, "not an HTTP/1.x request line", line)
        method, target, _ = parts
        if method not in ("GET", "HEAD"):
            raise _Refusal(405, f"method {quote(method, 16)}", line)
        if target.split("?", 1)[0] != METRICS_PATH:
            raise _Refusal(404, "not /metrics", line)
        return method == "HEAD"

    async def _refuse(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      peer: str, refusal: _Refusal) -> None:
        """Answer ``refusal.code``, log it (rate-limited), then close politely."""
        self.exporter.counts.requests[refusal.code] += 1
        suppressed = self._log.allow(refusal.code, time.monotonic_ns())
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            quoted = f': "{refusal.line}"' if refusal.line else ""
            level = logging.INFO if refusal.code in (404, 405) else logging.WARNING
            log.log(level, "answered %d to %s: %s%s%s", refusal.code, peer, refusal.why,
                    quoted, more)
        body = f"{refusal.code} {_REASONS[refusal.code]}: {refusal.why}\n".encode()
        extra = "Allow: GET, HEAD\r\n" if refusal.code == 405 else ""
        await self._send(writer, refusal.code, body, extra_headers=extra)
        # Unread request bytes would turn our close into a reset that can destroy the
        # response before the client reads it: half-close, discard a bounded amount.
        if writer.can_write_eof():
            writer.write_eof()
        with contextlib.suppress(TimeoutError, OSError):
            async with asyncio.timeout(LINGER_S):
                discarded = 0
                while discarded < LINGER_BYTES and (chunk := await reader.read(4096)):
                    discarded += len(chunk)
        writer.close()

    async def _send(self, writer: asyncio.StreamWriter, code: int, body: bytes,
                    head_only: bool = False, extra_headers: str = "") -> None:
        """Write one response; a client that does not take it in time is cut off."""
        head = (f"HTTP/1.1 {code} {_REASONS[code]}\r\n"
                f"Content-Type: {CONTENT_TYPE if code == 200 else 'text/plain'}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra_headers}\r\n")
        writer.transport.set_write_buffer_limits(high=0)  # drain() waits for all of it
        writer.write(head.encode("latin-1") + (b"" if head_only else body))
        try:
            async with asyncio.timeout(self.limits.send_timeout_s):
                await writer.drain()
        except TimeoutError:
            self._drop("timeout", "cut off a client that did not take its response "
                       f"within {self.limits.send_timeout_s:g} s")

    def _drop(self, reason: str, message: str) -> None:
        self.exporter.counts.dropped[reason] += 1
        suppressed = self._log.allow(reason, time.monotonic_ns())
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("%s%s", message, more)


class _Bucket:
    """A token bucket: ``rate`` tokens a second, at most ``burst`` saved."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self.tokens = float(burst)
        self.last_ns: int | None = None

    def wait_s(self, now_ns: int) -> float:
        """Seconds until a token is there (0: one is)."""
        if self.last_ns is not None:
            self.tokens = min(self.burst, self.tokens + (now_ns - self.last_ns) * self.rate / 1e9)
        self.last_ns = now_ns
        return 0.0 if self.tokens >= 1 else (1 - self.tokens) / self.rate

    def take(self) -> None:
        """Spend a token (:meth:`wait_s` said there is one)."""
        self.tokens -= 1


# ---- the process --------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What ``robot-daemon metrics`` was given.

    pred : the daemon's ``pred`` endpoint, to connect to (tcp:// or ipc://).
    host, port : where to serve ``/metrics`` (port 0: a free one, logged).
    parent : the daemon's pid when running as its child: the exporter exits once that
        process is gone, retries a port in use instead of exiting, and serves that
        process's ``process_*``.
    limits : the HTTP bounds.
    """

    pred: str
    host: str
    port: int
    parent: int | None = None
    limits: Limits = Limits()

    def __post_init__(self) -> None:
        check_endpoint(self.pred, "pred")
        if self.pred.startswith("inproc://"):
            raise ConfigError(f"pred {self.pred!r} exists only inside its process; give the "
                              "daemon's tcp:// or ipc:// endpoint")


def run(options: Options) -> int:
    """Serve until SIGTERM or SIGINT (or the parent's end); the exit code (0, or 130
    after SIGINT).

    Raises:
        ConfigError: the address cannot be served (not as a child) or ``pred`` not
            connected.
    """
    renice()  # before any thread exists: libzmq's I/O thread inherits it
    return asyncio.run(_main(options))


def renice() -> None:
    """Lower this process's CPU priority to :data:`EXPORTER_NICE` (needs no privilege)."""
    with contextlib.suppress(OSError):  # a sandbox may refuse: serve at the same priority
        os.setpriority(os.PRIO_PROCESS, 0, EXPORTER_NICE)


async def _main(options: Options) -> int:
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(_loop_error)
    stop = asyncio.Event()
    stopped_by: list[int] = []  # the first stop signal: SIGINT exits 130, as every command

    def stopping(signum: int) -> None:
        stopped_by.append(signum)
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping, signum)
    # A SIGHUP (a `kill -HUP` meant for the daemon, its process group's) ended the exporter:
    # it has nothing to reload.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    exporter = Exporter(time.monotonic_ns(), options.parent)
    server = ScrapeServer(exporter, options.limits)
    if options.parent is None:
        await _listen(server, options)  # fail now, with the reason: exit 2
    with zmq.asyncio.Context() as ctx, ctx.socket(zmq.SUB) as sub:
        try:
            _connect(sub, options.pred)
        except ConfigError:
            await server.close()
            raise
        tasks = [asyncio.create_task(_subscribe(sub, exporter))]
        if options.parent is not None:
            tasks += [asyncio.create_task(_listen_retrying(server, options, stop)),
                      asyncio.create_task(_watch_parent(options.parent, stop))]
        try:
            await stop.wait()
        finally:
            await server.close()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    log.info("stopped")
    return exits.after_clean_stop(stopped_by[0] if stopped_by else None)


async def _listen(server: ScrapeServer, options: Options) -> None:
    try:
        await server.start(options.host, options.port)
    except OSError as exc:
        # asyncio rewords the error ("error while attempting to bind ..."): say errno's.
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ConfigError(f"cannot serve metrics on {options.host}:{options.port}: "
                          f"{why}") from None
    log.info("Prometheus metrics on http://%s:%d%s", _host(options.host), server.port,
             METRICS_PATH)


async def _listen_retrying(server: ScrapeServer, options: Options, stop: asyncio.Event) -> None:
    """As the daemon's child: a port in use is said once and tried again, backing off."""
    delay, failures = BIND_RETRY_S[0], 0
    while True:
        try:
            await _listen(server, options)
        except ConfigError as exc:
            if failures == 0:
                log.warning("%s; trying again after %g s, then at most every %g s", exc,
                            delay, BIND_RETRY_S[1])
            failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            delay = min(2 * delay, BIND_RETRY_S[1])
            continue
        if failures:
            log.info("serving after %d failed tries", failures)
        return


def _connect(sub: zmq.asyncio.Socket, pred: str) -> None:
    """Subscribe ``sub`` to the ``status`` topic of the daemon at ``pred``; the daemon's
    PUB socket filters, so its ``pred`` messages are never sent here."""
    sub.setsockopt(zmq.LINGER, 0)
    sub.setsockopt(zmq.RCVHWM, STATUS_RCVHWM)
    sub.setsockopt(zmq.MAXMSGSIZE, 2 * wire.MAX_STATUS_BYTES)
    sub.subscribe(wire.TOPIC_STATUS)
    try:
        sub.connect(pred)
    except zmq.ZMQError as exc:
        raise ConfigError(f"cannot connect to pred {pred!r}: {exc}") from None
    log.info("status from %s", pred)


async def _subscribe(sub: zmq.asyncio.Socket, exporter: Exporter) -> None:
    while True:
        parts = await sub.recv_multipart()
        exporter.update(parts, time.monotonic_ns())


async def _watch_parent(parent: int, stop: asyncio.Event) -> None:
    """Stop once ``parent`` is gone (we were handed to another process): a daemon killed
    with SIGKILL must not leave an exporter serving its last status for ever."""
    while os.getppid() == parent:
        await asyncio.sleep(PARENT_CHECK_S)
    log.warning("the daemon (pid %d) is gone: stopping", parent)
    stop.set()


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """asyncio's errors in one line, never a traceback (asyncio's own handler prints one)."""
    exc = context.get("exception")
    what = f"{type(exc).__name__}: {exc}" if exc is not None else ""
    log.error("%s", quote(f"{context.get('message', 'asyncio error')} {what}".strip(), 300))
