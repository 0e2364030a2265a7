"""The systemd notify protocol, spoken directly: no libsystemd, no extra package.

A service of ``Type=notify`` tells systemd how it is doing by sending datagrams of
newline-separated ``KEY=VALUE`` lines to the ``AF_UNIX`` socket named in
``$NOTIFY_SOCKET`` (sd_notify(3)): ``READY=1`` once it serves, ``STATUS=...`` for
``systemctl status``, ``RELOADING=1`` / ``READY=1`` around a reload, ``STOPPING=1`` on
the way out, and ``WATCHDOG=1`` at least every ``$WATCHDOG_USEC`` microseconds when the
unit sets ``WatchdogSec=`` (systemd kills and restarts a service that stops sending it).
An address starting with ``@`` is in Linux's abstract namespace: the ``@`` stands for a
leading NUL byte.

Without ``$NOTIFY_SOCKET`` (not under systemd, or in tests) every call is a no-op.
Notification failures are logged once and never stop the daemon: serving predictions
matters more than telling systemd about it.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping

from robot_daemon.printable import printable

log = logging.getLogger(__name__)


class Notifier:
    """Sends notify messages to ``$NOTIFY_SOCKET``; a no-op when it is not set.

    Use as a context manager (or call :meth:`close`) so that the socket is closed.
    """

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self.watchdog_ns = _watchdog_ns(env)
        self._sock: socket.socket | None = None
        self._failed = False
        if self.address is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        """Whether messages go anywhere."""
        return self._sock is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` as one datagram; ``True`` if it was sent."""
        if self._sock is None or self.address is None:
            return False
        try:
            self._sock.sendto("\n".join(lines).encode(), self.address)
        except OSError as exc:
            if not self._failed:  # once: a missing manager must not flood the log
                log.warning("systemd notify to %r failed: %s", self.address, exc)
                self._failed = True
            return False
        return True

    def ready(self, status: str | None = None) -> bool:
        """``READY=1``: start-up finished (or a reload did)."""
        return self.send("READY=1", *_status(status))

    def status(self, status: str) -> bool:
        """``STATUS=...``: one line shown by ``systemctl status``."""
        return self.send(*_status(status))

    def reloading(self) -> bool:
        """``RELOADING=1`` with the monotonic time systemd expects since v253."""
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}")

    def stopping(self) -> bool:
        """``STOPPING=1``: shutting down."""
        return self.send("STOPPING=1")

    def watchdog(self) -> bool:
        """``WATCHDOG=1``: the loop is alive. Only sent when the watchdog is enabled."""
        return self.watchdog_ns is not None and self.send("WATCHDOG=1")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _status(status: str | None) -> list[str]:
    # A newline would start a new assignment, and `systemctl status` shows the line on a
    # terminal: every character that is not printable escaped (a model file's name).
    return [] if status is None else ["STATUS=" + printable(status.replace("\n", " "))]


def _address(value: str) -> str | None:
    """The socket address of ``$NOTIFY_SOCKET``: a path, or '\\0name' for '@name'."""
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # unset, or a form this daemon does not speak (vsock: not on a robot)


def _watchdog_ns(env: Mapping[str, str]) -> int | None:
    """The watchdog timeout in ns when it applies to this process, else ``None``.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for: a child that
    inherited the environment must not answer for its parent.
    """
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = env.get("WATCHDOG_PID")
    if usec <= 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return usec * 1000
