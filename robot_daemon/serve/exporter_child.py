"""``run --metrics``: the Prometheus exporter as a child process of the daemon.

The daemon serves no HTTP itself: :class:`ExporterChild` starts ``robot-daemon metrics``
(:mod:`robot_daemon.serve.exporter`) with the daemon's own Python, connected to the
daemon's ``pred`` endpoint for ``status`` (a wildcard bind reached on loopback), stdin
closed and stderr the daemon's (journald keeps its lines). The serving loop calls
:meth:`ExporterChild.service` between ticks: one comparison, and at most once a second a
``waitpid`` that reaps a child that ended. A child that ended is started again after 1 s,
doubling to 30 s while it keeps ending within 30 s of its start; each restart is counted
and logged (at most one line per 10 s, with the number of the others). A failure to
start (a fork refused) is retried the same way: the daemon serves on without metrics
meanwhile, never with a traceback. The daemon does not wait for the exporter before it
reports ready: serving comes first, and the exporter says itself when it listens.

The exporter runs at nice 19 (the daemon sets it at once, the exporter again itself),
exits once the daemon is gone (a daemon killed with SIGKILL leaves no exporter behind for
long), and, as a child, says a port in use once and tries again, backing off, instead of
exiting.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Final

from robot_daemon.errors import ConfigError
from robot_daemon.ratelimit import REJECT_LOG_PERIOD_NS, RateLimiter

log = logging.getLogger("robot_daemon")

#: The exporter's niceness: on a busy robot the daemon (nice -10 under its unit) and the
#: sensor drivers get the CPU first; a scrape can wait.
EXPORTER_NICE: Final = 19
#: How often :meth:`ExporterChild.service` looks at the child.
CHECK_PERIOD_NS: Final = 1_000_000_000
#: A child that ended is started again after this long, doubling up to BACKOFF_MAX_NS; one
#: that ran at least BACKOFF_MAX_NS before it ended starts the doubling again.
BACKOFF_MIN_NS: Final = 1_000_000_000
BACKOFF_MAX_NS: Final = 30_000_000_000
#: On the way out: SIGTERM, then SIGKILL after this long.
TERM_GRACE_S: Final = 1.0
_WILDCARDS: Final = {"*": "127.0.0.1", "0.0.0.0": "127.0.0.1", "[::]": "[::1]"}


def status_endpoint(pred: str) -> str:
    """Where a process on this machine connects to reach a ``pred`` the daemon binds:
    a wildcard address (``tcp://*:5557``, ``tcp://0.0.0.0:5557``) becomes loopback."""
    if not pred.startswith("tcp://"):
        return pred  # ipc:// (config refuses inproc:// with metrics)
    host, _, port = pred[len("tcp://"):].rpartition(":")
    return f"tcp://{_WILDCARDS.get(host, host)}:{port}"


class ExporterChild:
    """The exporter process: :meth:`start`, :meth:`service` between ticks, :meth:`close`
    (a context manager). ``address`` is the ``metrics`` setting (``[ADDRESS:]PORT``), checked
    by the config; ``remote``: it may bind a non-loopback address."""

    def __init__(self, pred: str, address: str, remote: bool = False) -> None:
        self.endpoint, self.address = status_endpoint(pred), address
        self.command = [sys.executable, "-m", "robot_daemon", "metrics",
                        "--pred", self.endpoint, "--listen", address,
                        "--child-of", str(os.getpid()),
                        *(["--allow-remote-bind"] if remote else [])]
        self.restarts = 0  # children started after the first
        self.proc: subprocess.Popen[bytes] | None = None
        self._started = False
        self._started_ns = 0
        self._next_ns = 0  # the next look at the child, or its next start
        self._backoff_ns = BACKOFF_MIN_NS
        self._log = RateLimiter(REJECT_LOG_PERIOD_NS)

    def start(self, now_ns: int) -> ExporterChild:
        """Start the exporter (without waiting for it to listen).

        Raises:
            ConfigError: prometheus-client is not installed (the exporter needs it).
        """
        if importlib.util.find_spec("prometheus_client") is None:
            raise ConfigError("metrics need the prometheus-client package: pip install "
                              "'robot-daemon[metrics]', or remove the metrics setting")
        self._spawn(now_ns)
        return self

    def service(self, now_ns: int) -> None:
        """Between ticks: once a second, reap a child that ended; start one when due."""
        if now_ns < self._next_ns:
            return
        if self.proc is None:
            self._spawn(now_ns)
            return
        code = self.proc.poll()
        if code is None:
            self._next_ns = now_ns + CHECK_PERIOD_NS
            return
        pid, self.proc = self.proc.pid, None
        if now_ns - self._started_ns >= BACKOFF_MAX_NS:
            self._backoff_ns = BACKOFF_MIN_NS  # it ran a good while: a new fault
        self._retry(now_ns, f"the metrics exporter (pid {pid}) {_ended(code)}; restart "
                    f"{self.restarts + 1}")

    def _spawn(self, now_ns: int) -> None:
        try:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:  # no fork now (EAGAIN, ENOMEM)
            self._retry(now_ns, f"cannot start the metrics exporter ({exc}); next try")
            return
        # At once, not once it has imported what it needs (0.2-0.3 s of CPU, which it would
        # take at the daemon's priority): it is one thread until then, so all of it.
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, self.proc.pid, EXPORTER_NICE)
        self._next_ns = now_ns + CHECK_PERIOD_NS
        self._started_ns = now_ns
        if self._started:  # the line that said it ended stands for its restart
            self.restarts += 1
            log.debug("metrics exporter restarted (pid %d, restart %d)", self.proc.pid,
                      self.restarts)
            return
        self._started = True
        log.info("metrics exporter started (pid %d) for metrics = %s, status from %s",
                 self.proc.pid, self.address, self.endpoint)

    def _retry(self, now_ns: int, what: str) -> None:
        """Start again after the backoff; say so (rate-limited)."""
        delay, self._backoff_ns = self._backoff_ns, min(2 * self._backoff_ns, BACKOFF_MAX_NS)
        self._next_ns = now_ns + delay
        suppressed = self._log.allow("exporter", now_ns)
        if suppressed is not None:
            more = f" ({suppressed} more since the last report)" if suppressed else ""
            log.warning("%s in %g s; serving goes on meanwhile%s", what, delay / 1e9, more)

    def close(self) -> None:
        """Stop the child: SIGTERM, SIGKILL after :data:`TERM_GRACE_S`; reap it."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> ExporterChild:
        return self.start(time.monotonic_ns())

    def __exit__(self, *exc: object) -> None:
        self.close()


def _ended(code: int) -> str:
    """How a child with exit code ``code`` (Popen's: -N for signal N) ended, in words."""
    if code >= 0:
        return f"exited with status {code}"
    try:
        return f"was killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"was killed by signal {-code}"
