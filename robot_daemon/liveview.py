"""A running daemon's answers in a terminal: shared by ``robot-daemon demo`` and ``watch``.

Everything here is presentation. :func:`class_rows` and the counter lines are pure
functions of plain values, so that tests read what a person would see. The terminal view
redraws in place with plain ANSI escape codes (no curses: nothing to install); a terminal
that does not understand them, or a pipe, gets :class:`PlainView` instead.

Lines never exceed the width they are given (a wrapped line would break the redraw),
and they are cut at a word boundary, never in the middle of a word (unless one word is
wider than the line).

A ``status`` map comes from the network: any msgpack map with string keys. Its values
are shown through :func:`shown_text`, :func:`shown_number` and :func:`shown_total`, which
show what a value of the expected type says, :data:`WRONG` for any other value, and
:data:`ABSENT` for a key that is not there; a string is shown :func:`printable` (no
control character reaches the terminal) and at most :data:`MAX_SHOWN` characters long.
"""

from __future__ import annotations

import math
import shutil
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Generic, TextIO, TypeVar

import numpy as np
import numpy.typing as npt

from robot_daemon.printable import printable

PLAIN_EVERY_S: Final = 2.0
#: Frames/s is measured over about this window.
RATE_WINDOW_NS: Final = 1_000_000_000
#: The narrowest view drawn; a narrower terminal wraps, which is better than nothing.
MIN_WIDTH: Final = 60
_HIDE_CURSOR: Final = "\x1b[?25l"
_SHOW_CURSOR: Final = "\x1b[?25h"
_GREEN: Final = "\x1b[32m"
_RED: Final = "\x1b[31m"
_YELLOW: Final = "\x1b[33m"
_RESET: Final = "\x1b[0m"
# A class row is name + bar + this many columns: " 0.90  ✗ present, missed".
_ROW_TAIL: Final = 26
#: Shown for a status value of another type than expected (a string for a count, a list
#: for a map): the daemon, or whatever publishes on its endpoint, sent something else.
WRONG: Final = "?"
#: Shown for a status key that is not there (a daemon of another version).
ABSENT: Final = "-"
#: Longest string shown from a status, in characters: a real one is far shorter, and a
#: 64 kB one would fill the screen. Longer ones are cut and end in "...".
MAX_SHOWN: Final = 256
#: Names shown in a list (stale sources, refusal reasons); the rest are counted.
NAMES_SHOWN: Final = 8
#: Numbers from this size on are shown in e notation, so that a line stays readable.
_BIG: Final = 1e15

View = TypeVar("View")


class RateMeter:
    """A growing count's rate per second over about the last :data:`RATE_WINDOW_NS`."""

    def __init__(self) -> None:
        self._samples: deque[tuple[int, int]] = deque()  # (time ns, count then)

    def rate(self, count: int, now_ns: int) -> float:
        """Per second, from the newest sample at least a window old to ``count`` now."""
        samples = self._samples
        samples.append((now_ns, count))
        # Keep the newest sample that is at least a window old, and everything after it.
        while len(samples) > 2 and now_ns - samples[1][0] >= RATE_WINDOW_NS:
            samples.popleft()
        t0, count0 = samples[0]
        return (count - count0) * 1e9 / (now_ns - t0) if now_ns > t0 else 0.0


def class_rows(class_names: Sequence[str], thresholds: npt.NDArray[np.float64],
               probs: npt.NDArray[np.float32] | None, truth: npt.NDArray[np.uint8] | None,
               *, width: int, color: bool, unicode: bool) -> list[str]:
    """A header and one row per class: the probability as a bar against its threshold.

    thresholds : (c,) float64; probs : (c,) float32 or None (nothing answered yet);
    truth : (c,) uint8 labels or None (no label for that frame). The bar takes whatever
    ``width`` leaves, so a wide terminal shows finer bars.
    """
    names = [printable(name) for name in class_names]  # a file's: shown, never run
    name_width = min(16, max(len(n) for n in names))
    bar_width = max(10, width - name_width - 3 - _ROW_TAIL)
    lines = [f"  {'class':<{name_width}} "
             f"{'probability (| threshold)':<{bar_width}} {'p':>5}  label"]
    for j, name in enumerate(names):
        p = None if probs is None else float(probs[j])
        known = None if truth is None else bool(truth[j])
        threshold = float(thresholds[j])
        bar = _bar(p, threshold, bar_width, unicode)
        value = "  -  " if p is None else f"{p:5.2f}"
        mark = _outcome(p, threshold, known, color, unicode)
        lines.append(f"  {name[:name_width]:<{name_width}} {bar} {value}  {mark}".rstrip())
    return lines


def _bar(p: float | None, threshold: float, width: int, unicode: bool) -> str:
    """``width`` cells filled in proportion to ``p``, the threshold always marked ``|``.

    The mark replaces its cell even under the filled part, so it stays visible however
    high ``p`` is.
    """
    full, empty = ("█", "·") if unicode else ("#", ".")
    filled = 0 if p is None else round(p * width)
    cells = [full if i < filled else empty for i in range(width)]
    cells[min(width - 1, int(threshold * width))] = "|"
    return "".join(cells)


def _outcome(p: float | None, threshold: float, truth: bool | None, color: bool,
             unicode: bool) -> str:
    """The label of a class, judged: present and detected, missed, or a false alarm."""
    if p is None or truth is None:
        return ""
    detected = p >= threshold
    ok, bad = ("✓", "✗") if unicode else ("ok", "XX")
    if truth and detected:
        text, tint = f"{ok} present", _GREEN
    elif truth:
        text, tint = f"{bad} present, missed", _RED
    elif detected:
        text, tint = f"{bad} false alarm", _RED
    else:
        return ""
    return f"{tint}{text}{_RESET}" if color else text


def shown_text(value: object) -> str:
    """A string from a status as it may be shown (see the module); :data:`WRONG` for
    anything but a string."""
    if type(value) is not str:
        return WRONG
    if len(value) > MAX_SHOWN:
        return printable(value[:MAX_SHOWN]) + "..."
    return printable(value)


def shown_number(value: object, decimals: int = 0) -> str:
    """An int or a float from a status with ``decimals`` decimals (an int as it is when
    ``decimals`` is 0; from 1e15 on in e notation; NaN as ``nan``); :data:`WRONG` for
    anything else, ``true`` and ``false`` included."""
    if type(value) is int and decimals == 0 and abs(value) < _BIG:
        return str(value)
    if type(value) is not int and type(value) is not float:
        return WRONG
    number = float(value)  # a msgpack int (at most 2**64) is in float's range
    if math.isfinite(number) and abs(number) >= _BIG:
        return f"{number:.3g}"
    return f"{number:.{decimals}f}"


def shown_total(value: object) -> str:
    """The sum of a status map of counts (``frames_rejected``); :data:`WRONG` unless it is
    a map of numbers."""
    if type(value) is not dict or not all(
            type(n) is int or type(n) is float for n in value.values()):
        return WRONG
    return shown_number(sum(value.values()))


def shown_field(status: Mapping[str, Any], key: str,
                show: Callable[[object], str] = shown_number) -> str:
    """``show(status[key])``, or :data:`ABSENT` when ``status`` has no ``key``."""
    return show(status[key]) if key in status else ABSENT


def shown_names(names: Sequence[object]) -> str:
    """The first :data:`NAMES_SHOWN` of ``names`` (:func:`shown_text`), and how many more."""
    shown = ", ".join(map(shown_text, names[:NAMES_SHOWN]))
    more = len(names) - NAMES_SHOWN
    return shown + (f" and {more} more" if more > 0 else "")


def daemon_counts(status: Mapping[str, Any] | None) -> str:
    """The daemon's dropped, rejected and lost frames from its ``status`` map."""
    if status is None:
        return "dropped - rejected - lost -"
    return (f"dropped {shown_field(status, 'frames_dropped')}"
            f" rejected {shown_field(status, 'frames_rejected', shown_total)}"
            f" lost {shown_field(status, 'frames_lost')}")


def health(status: Mapping[str, Any] | None) -> str:
    """``health ok``, or ``health degraded (stale: ...)``; empty for a daemon that has none."""
    if status is None or "health" not in status:
        return ""
    stale = [*_entries(status.get("stale_endpoints")), *_entries(status.get("stale_srcs"))]
    return (f"health {shown_text(status['health'])}"
            + (f" (stale: {shown_names(stale)})" if stale else ""))


def health_lines(status: Mapping[str, Any] | None, *, width: int, color: bool) -> list[str]:
    """:func:`health` as lines of at most ``width`` (:func:`fit`), each tinted yellow
    (degraded) or red (blind, or unknown) when ``color``; none for a daemon without it."""
    text = health(status)
    if not text:
        return []
    lines = fit(text, width)
    state = status.get("health") if status is not None else None
    if not color or state == "ok":
        return lines
    # Each line tinted on its own, after fitting: an escape code takes no column, and one
    # cut in two would print as text.
    tint = _YELLOW if state == "degraded" else _RED
    return [f"{tint}{line}{_RESET}" for line in lines]


def _entries(value: object) -> list[object]:
    """A status list's entries: none for nil (an older daemon), the value itself if it is
    no list (shown as :data:`WRONG`)."""
    if value is None:
        return []
    return value if type(value) is list else [value]


def fit(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``max(width, MIN_WIDTH)`` characters, broken between
    words, the lines after the first indented by two; a word longer than a line (a name
    from the network may be) is cut where the line ends."""
    width = max(width, MIN_WIDTH)
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if len(candidate) > width and line:
            lines.append(line)
            candidate = "  " + word
        while len(candidate) > width:
            lines.append(candidate[:width])
            candidate = "  " + candidate[width:]
        line = candidate
    return [*lines, line]


class TerminalView(Generic[View]):
    """Redraws ``render(view, width, color, unicode)``'s lines in place; hides the cursor.

    The width is the terminal's, read at every redraw, so resizing the window works.
    """

    def __init__(self, out: TextIO,
                 render: Callable[[View, int, bool, bool], list[str]]) -> None:
        self.out = out
        self.render = render
        self._lines = 0
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self._unicode = encoding == "utf8"

    def __enter__(self) -> TerminalView[View]:
        self.out.write(_HIDE_CURSOR)
        self.out.flush()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.out.write(_SHOW_CURSOR)
        self.out.flush()

    def update(self, view: View, *, final: bool = False) -> None:
        # One column spare: a line that fills the last column wraps on some terminals.
        width = max(MIN_WIDTH, shutil.get_terminal_size((80, 24)).columns - 1)
        lines = self.render(view, width, True, self._unicode)
        up = f"\x1b[{self._lines}F" if self._lines else ""  # to the first line of the last
        text = "".join(f"{_encodable(line, self.out)}\x1b[K\n" for line in lines)
        self.out.write(up + text + "\x1b[J")
        self.out.flush()
        self._lines = len(lines)


class PlainView(Generic[View]):
    """One ``line(view)`` every :data:`PLAIN_EVERY_S` seconds of ``elapsed(view)``, and a last."""

    def __init__(self, out: TextIO, line: Callable[[View], str],
                 elapsed: Callable[[View], float]) -> None:
        self.out = out
        self.line = line
        self.elapsed = elapsed
        self._next = 0.0

    def __enter__(self) -> PlainView[View]:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, view: View, *, final: bool = False) -> None:
        if final or self.elapsed(view) >= self._next:
            print(_encodable(self.line(view), self.out), file=self.out, flush=True)
            self._next = self.elapsed(view) + PLAIN_EVERY_S


def _encodable(text: str, out: TextIO) -> str:
    """``text`` as ``out`` can write it: a character its encoding lacks (a name in another
    script, on an ASCII terminal) as its escape, ``\\xe9``, rather than an error that ends
    the view."""
    encoding = getattr(out, "encoding", None)
    return text.encode(encoding, "backslashreplace").decode(encoding) if encoding else text
