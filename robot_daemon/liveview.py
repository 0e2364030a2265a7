"""A running daemon's answers in a terminal: shared by ``robot-daemon demo`` and ``watch``.

Everything here is presentation. :func:`class_rows` and the counter lines are pure
functions of plain values, so that tests read what a person would see. The terminal view
redraws in place with plain ANSI escape codes (no curses: nothing to install); a terminal
that does not understand them, or a pipe, gets :class:`PlainView` instead.

Lines never exceed the width they are given (a wrapped line would break the redraw),
and they are cut at a word boundary, never in the middle of a word.
"""

from __future__ import annotations

import shutil
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, Final, Generic, TextIO, TypeVar

import numpy as np
import numpy.typing as npt

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
    name_width = min(16, max(len(n) for n in class_names))
    bar_width = max(10, width - name_width - 3 - _ROW_TAIL)
    lines = [f"  {'class':<{name_width}} "
             f"{'probability (| threshold)':<{bar_width}} {'p':>5}  label"]
    for j, name in enumerate(class_names):
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


def daemon_counts(status: Mapping[str, Any] | None) -> str:
    """The daemon's dropped, rejected and lost frames from its ``status`` map."""
    if status is None:
        return "dropped - rejected - lost -"
    rejected = sum(status.get("frames_rejected", {}).values())
    return (f"dropped {status.get('frames_dropped', 0)} rejected {rejected}"
            f" lost {status.get('frames_lost', 0)}")


def health(status: Mapping[str, Any] | None, *, color: bool = False) -> str:
    """``health ok``, or ``health degraded (stale: ...)``; empty for a daemon that has none."""
    if status is None or "health" not in status:
        return ""
    state = str(status["health"])
    stale = [*(status.get("stale_endpoints") or []), *(status.get("stale_srcs") or [])]
    text = f"health {state}" + (f" (stale: {', '.join(map(str, stale))})" if stale else "")
    if not color or state == "ok":
        return text
    return f"{_YELLOW if state == 'degraded' else _RED}{text}{_RESET}"


def fit(text: str, width: int) -> list[str]:
    """``text`` as lines of at most ``width`` characters, broken between words."""
    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if len(candidate) <= width or not line:
            line = candidate
        else:
            lines.append(line)
            line = "  " + word
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
        self.out.write(up + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
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
            print(self.line(view), file=self.out, flush=True)
            self._next = self.elapsed(view) + PLAIN_EVERY_S
