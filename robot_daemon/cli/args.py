"""Argument types and signal handling shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import threading
from collections.abc import Callable, Iterator
from typing import TypeAlias

from robot_daemon import exits

# A string: argparse's class is generic only to the type checker.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def help_handler(parser: argparse.ArgumentParser) -> Callable[[argparse.Namespace], int]:
    """The handler of a bare command or group (``robot-daemon``, ``robot-daemon bag``):
    print its help, which lists its commands, and exit 0."""

    def handler(args: argparse.Namespace) -> int:
        parser.print_help()
        return 0

    return handler


def add_overwrite(p: argparse.ArgumentParser, what: str = "the output") -> None:
    """``--overwrite``: the one flag, on every command that writes a file or a directory,
    that lets it replace an existing one. Without it the command refuses, naming the path
    and the flag; an output that is one of its inputs stays refused even with it."""
    p.add_argument("--overwrite", action="store_true",
                   help=f"replace {what} if it exists (default: refuse; never an input)")


def positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def seed(text: str) -> int:
    """A NumPy seed: an integer >= 0 (``np.random.default_rng`` refuses negative ones)."""
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return value


#: Upper bound of every time argument: about 31 years, and far from overflowing the
#: integer-nanosecond deadlines the commands compute from it (2**63 ns is 292 years).
MAX_SECONDS = 1e9


def seconds(text: str) -> float:
    """A positive duration in seconds, at most :data:`MAX_SECONDS`."""
    value = float(text)
    if not 0 < value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds > 0 and <= {MAX_SECONDS:g}, got {text}")
    return value


def non_negative_seconds(text: str) -> float:
    """A duration in seconds that may be 0, at most :data:`MAX_SECONDS`."""
    value = float(text)
    if not 0 <= value <= MAX_SECONDS:
        raise argparse.ArgumentTypeError(
            f"must be a number of seconds >= 0 and <= {MAX_SECONDS:g}, got {text}")
    return value


def milliseconds(text: str) -> float:
    """A positive duration in milliseconds, at most :data:`MAX_SECONDS`."""
    value = float(text)
    if not 0 < value <= MAX_SECONDS * 1000:
        raise argparse.ArgumentTypeError(
            f"must be a number of milliseconds > 0 and <= {MAX_SECONDS * 1000:g}, got {text}")
    return value


def finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value




class Terminated(BaseException):
    """SIGTERM during a job, raised like Ctrl-C's KeyboardInterrupt so that every
    ``finally`` runs (temporary files removed, a partial dataset deleted) before the exit."""


@contextlib.contextmanager
def terminate_raises() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` in the block, instead of killing the process
    where it stands (Python's default leaves temporary files behind). A command that
    finishes cleanly on SIGTERM (:func:`stop_on_signals`, the daemon) replaces it."""

    def handler(signum: int, frame: object) -> None:
        raise Terminated

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


class _Stopped:
    """The signal that ended the last :func:`stop_on_signals` block, for :func:`exit_code`."""

    signum: int | None = None


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set, so that loops finish their files cleanly.

    Which one set it decides the exit code (:func:`exit_code`): a job ended by Ctrl-C
    exits 130 like any interrupted command, one that systemd stopped exits 0.
    """
    stop = threading.Event()
    _Stopped.signum = None

    def handler(signum: int, frame: object) -> None:
        if _Stopped.signum is None:
            _Stopped.signum = signum
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def exit_code(code: int) -> int:
    """``code``, or 130 (:data:`~robot_daemon.exits.EXIT_INTERRUPTED`) when SIGINT ended the last
    :func:`stop_on_signals` block (the work was finished cleanly all the same)."""
    return exits.after_clean_stop(_Stopped.signum, code)
