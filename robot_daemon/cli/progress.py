"""A progress line on stderr for long commands (``bag play``, ``sim``).

On a terminal the line is redrawn in place (carriage return, erase to the end of the
line) at most every :data:`TTY_INTERVAL_S`, cut to the terminal's width so that it never
wraps, and erased when the command ends, before its summary. Anywhere else (a pipe, a log
file) it is off unless asked for with ``--progress``; then each update is a line of its
own, at most every :data:`LINE_INTERVAL_S`. A stream that fails (a closed pipe) turns the
line off: progress never stops a command.
"""

from __future__ import annotations

import argparse
import shutil
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self, TextIO

TTY_INTERVAL_S = 0.25
LINE_INTERVAL_S = 5.0
_ERASE = "\r\x1b[K"


class ProgressLine:
    """One status line on ``stream``; a context manager that erases it on exit.

    ``enabled``: ``None`` (the default) draws only when ``stream`` is a terminal;
    ``True`` draws anyway (one line per update), ``False`` never draws.
    """

    def __init__(
        self,
        stream: TextIO,
        *,
        enabled: bool | None = None,
        clock: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        self._stream = stream
        self._tty = _isatty(stream)
        self.enabled = self._tty if enabled is None else enabled
        interval_s = TTY_INTERVAL_S if self._tty else LINE_INTERVAL_S
        self._interval_ns = round(interval_s * 1e9)
        self._clock = clock
        # On a terminal nothing is drawn in the first interval: a quick command does not
        # flash a line that is erased at once.
        self._next_ns = clock() + self._interval_ns if self._tty else None
        self._drawn = False  # a line is on the terminal now
        self.shown = False  # anything was ever shown

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def due(self) -> bool:
        """Whether :meth:`update` would draw now (so that callers can skip formatting)."""
        return self.enabled and (self._next_ns is None or self._clock() >= self._next_ns)

    def update(self, text: str, *, force: bool = False) -> None:
        """Show ``text`` if the last update is old enough (or ``force``)."""
        if not self.enabled or not (force or self.due()):
            return
        self._next_ns = self._clock() + self._interval_ns
        self.shown = True
        if self._tty:
            width = shutil.get_terminal_size().columns
            self._write(_ERASE + text[: max(width - 1, 0)])
            self._drawn = True
        else:
            self._write(text + "\n")

    def close(self) -> None:
        """Erase the line on a terminal, so that what is printed next starts clean."""
        if self._drawn:
            self._write(_ERASE)
            self._drawn = False

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):  # a closed or broken stream: progress is optional
            self.enabled = self._drawn = False


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # closed, or not a real file
        return False


def add_flag(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress``; the default draws only on a terminal."""
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a progress line on stderr (default: only when stderr is a terminal)",
    )


def eta(done: float, total: float, elapsed_s: float) -> str:
    """The time left at the pace so far, as ``ETA 1 min 05 s``; ``ETA -`` before any pace.

    ``done`` and ``total`` are in any one unit (readings, seconds), ``elapsed_s`` is wall
    time since the work started.
    """
    if done <= 0 or elapsed_s <= 0 or total < done:
        return "ETA -"
    left = round(elapsed_s * (total - done) / done)
    minutes, seconds = divmod(left, 60)
    if minutes >= 60:
        return f"ETA {minutes // 60} h {minutes % 60:02d} min"
    return f"ETA {minutes} min {seconds:02d} s" if minutes else f"ETA {seconds} s"
