"""The daemon's signals: SIGTERM and SIGINT stop it, SIGHUP reloads its model, SIGUSR1
and SIGUSR2 are ignored (said once each): their default action ended the robot's sight,
and log rotation tools send them to whatever a pid file names.

They become flags the serving loop reads between ticks, and a byte on a socket its poller
watches, so that a signal wakes the loop at once instead of at its next timeout.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
from collections.abc import Iterator, Mapping
from types import FrameType
from typing import Any

import zmq

from robot_daemon import exits

log = logging.getLogger("robot_daemon")

#: Signals whose default action would end the daemon and that mean nothing to it.
IGNORED = (signal.SIGUSR1, signal.SIGUSR2)


class Signals:
    """SIGTERM/SIGINT/SIGHUP as flags (SIGUSR1/2 ignored), plus a socket the poller watches
    to wake up at once.

    Python runs signal handlers between bytecodes of the main thread; a blocking poll
    would only notice them at its timeout. :func:`signal.set_wakeup_fd` writes a byte to
    the peer of the socket whose descriptor is :attr:`fd` on every signal, so the poller
    returns immediately; :meth:`woke` reads that byte, else the socket stays readable and
    every later poll returns at once (a busy loop).
    """

    def __init__(self) -> None:
        self.stop = False
        #: The signal that stopped the loop first: SIGINT exits 130, SIGTERM 0.
        self.stopped_by: int | None = None
        self.reload = False
        self._ignored: set[int] = set()  # came, and not said yet
        self._told: set[int] = set()
        self._read_end, self._write_end = socket.socketpair()
        self._read_end.setblocking(False)
        self._write_end.setblocking(False)
        #: What to register in a poller. pyzmq's Poller reports a plain socket by its file
        #: descriptor, whatever object was registered: registered as the number, the
        #: socket is found in the events as it is reported.
        self.fd = self._read_end.fileno()
        self.poller = zmq.Poller()  # signals only: for the waits that leave frames queued
        self.poller.register(self.fd, zmq.POLLIN)
        self._previous_fd = signal.set_wakeup_fd(
            self._write_end.fileno(), warn_on_full_buffer=False
        )
        handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, *IGNORED)
        self._previous = {s: signal.signal(s, self._handle) for s in handled}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum in IGNORED:
            if signum not in self._told:
                self._ignored.add(signum)  # said by woke(), outside the handler
        elif signum == signal.SIGHUP:
            self.reload = True
        else:
            self.stop = True
            if self.stopped_by is None:
                self.stopped_by = signum

    @property
    def exit_code(self) -> int:
        """0 after SIGTERM (systemd's stop), 130 after SIGINT (Ctrl-C), as every command."""
        return exits.after_clean_stop(self.stopped_by)

    def woke(self, events: Mapping[Any, int]) -> None:
        """Read the wake-up bytes if a poll's ``events`` (socket or fd -> events) say
        they are there."""
        if self.fd in events:
            with contextlib.suppress(BlockingIOError):
                while self._read_end.recv(256):
                    pass
        while self._ignored:
            signum = self._ignored.pop()
            self._told.add(signum)
            log.warning("%s ignored: SIGHUP reloads the model, SIGTERM stops the daemon"
                        " (said once)", signal.Signals(signum).name)

    def close(self) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        signal.set_wakeup_fd(self._previous_fd)
        self._read_end.close()
        self._write_end.close()


@contextlib.contextmanager
def caught() -> Iterator[Signals]:
    """SIGTERM, SIGINT and SIGHUP caught as :class:`Signals` for the block; then as before."""
    sigs = Signals()
    try:
        yield sigs
    finally:
        sigs.close()
