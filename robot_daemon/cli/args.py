"""Argument types and signal handling shared by the subcommands."""

from __future__ import annotations

import argparse
import contextlib
import math
import signal
import threading
from collections.abc import Iterator
from typing import TypeAlias

# A string: argparse's class is generic only to the type checker.
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


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


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event that SIGINT and SIGTERM set, so that loops finish their files cleanly."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
