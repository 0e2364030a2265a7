"""How ``robot-daemon demo`` shows itself: the live terminal view and the timeline PNG.

Everything here is presentation, apart from the demo's processes and sockets
(:mod:`robot_daemon.demo.run`): :func:`render` is a pure function of a :class:`LiveView`
snapshot, so that tests can read what a person would see. The terminal view redraws in
place with plain ANSI escape codes (no curses: nothing to install, and a terminal that
does not understand them gets :class:`PlainView` instead, via ``--no-live`` or a pipe).
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt

from robot_daemon.model import write_atomically

PLAIN_EVERY_S: Final = 2.0
_HIDE_CURSOR: Final = "\x1b[?25l"
_SHOW_CURSOR: Final = "\x1b[?25h"
_GREEN: Final = "\x1b[32m"
_RED: Final = "\x1b[31m"
_RESET: Final = "\x1b[0m"


@dataclass(frozen=True, eq=False)
class LiveView:
    """One refresh of the live view: everything :func:`render` shows.

    thresholds : ndarray (c,) float64, the model's decision thresholds.
    probs : ndarray (c,) float32, the newest answered frame's probabilities, or None.
    truth : ndarray (c,) uint8, that frame's labels, or None (no frame, or no label).
    latency_ms : (p50, p99) so far, or None before the first answer.
    status : the daemon's latest ``status`` map, or None before the first.
    """

    class_names: Sequence[str]
    thresholds: npt.NDArray[np.float64]
    rate: float
    elapsed_s: float
    playback_s: float
    total: int
    sent: int
    answered: int
    frames_per_s: float
    latency_ms: tuple[float, float] | None = None
    newest_seq: int | None = None
    probs: npt.NDArray[np.float32] | None = None
    truth: npt.NDArray[np.uint8] | None = None
    status: Mapping[str, Any] | None = None


def render(view: LiveView, *, width: int = 80, color: bool = False,
           unicode: bool = True) -> list[str]:
    """The live view as lines of at most ``max(width, 72)`` visible characters.

    ANSI colours (``color``) take no width; ``unicode=False`` draws in ASCII only.
    """
    name_width = min(16, max(len(n) for n in view.class_names))
    # A class row is name + bar + 30 columns (value, "✗ present, missed").
    bar_width = max(10, min(40, width - name_width - 30))
    progress = view.sent / view.total if view.total else 0.0
    lines = [
        f"robot-daemon demo  {view.elapsed_s:5.1f} s / {view.playback_s:.1f} s  "
        f"sent {view.sent}/{view.total} ({progress:.0%})  x{view.rate:g}",
        "newest answered frame: " + ("none yet" if view.newest_seq is None
                                     else f"seq {view.newest_seq}"),
        f"  {'class':<{name_width}} {'probability (| threshold)':<{bar_width}} {'p':>5}  label",
    ]
    for j, name in enumerate(view.class_names):
        p = None if view.probs is None else float(view.probs[j])
        truth = None if view.truth is None else bool(view.truth[j])
        threshold = float(view.thresholds[j])
        bar = _bar(p, threshold, bar_width, unicode)
        value = "  -  " if p is None else f"{p:5.2f}"
        mark = _outcome(p, threshold, truth, color, unicode)
        lines.append(f"  {name[:name_width]:<{name_width}} {bar} {value}  {mark}".rstrip())
    lines.append(_answers(view))
    lines.append(f"daemon: {daemon_counts(view.status)}    Ctrl-C stops")
    return lines


def _bar(p: float | None, threshold: float, width: int, unicode: bool) -> str:
    """``width`` cells filled in proportion to ``p``, the threshold marked with ``|``."""
    full, empty = ("█", "·") if unicode else ("#", ".")
    filled = 0 if p is None else round(p * width)
    cells = [full if i < filled else empty for i in range(width)]
    mark = min(width - 1, int(threshold * width))
    if mark >= filled:
        cells[mark] = "|"
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


def _answers(view: LiveView) -> str:
    latency = ("latency -" if view.latency_ms is None else
               f"latency p50 {view.latency_ms[0]:.1f} ms p99 {view.latency_ms[1]:.1f} ms")
    return f"answered {view.answered}  {view.frames_per_s:5.1f} frames/s  {latency}"


def daemon_counts(status: Mapping[str, Any] | None) -> str:
    """The daemon's dropped, rejected and lost frames from its ``status`` map."""
    if status is None:
        return "dropped - rejected - lost -"
    rejected = sum(status["frames_rejected"].values())
    return (f"dropped {status['frames_dropped']} rejected {rejected}"
            f" lost {status['frames_lost']}")


def progress_line(view: LiveView) -> str:
    """The plain one-line progress report (no terminal, or ``--no-live``)."""
    progress = view.sent / view.total if view.total else 0.0
    return (f"[{view.elapsed_s:6.1f} s] sent {view.sent}/{view.total} ({progress:.0%}), "
            f"{_answers(view)}, {daemon_counts(view.status)}")


class TerminalView:
    """Redraws :func:`render`'s lines in place; hides the cursor until closed."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lines = 0
        encoding = (getattr(out, "encoding", None) or "").lower().replace("-", "")
        self._unicode = encoding == "utf8"

    def __enter__(self) -> TerminalView:
        self.out.write(_HIDE_CURSOR)
        self.out.flush()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.out.write(_SHOW_CURSOR)
        self.out.flush()

    def update(self, view: LiveView, *, final: bool = False) -> None:
        width = shutil.get_terminal_size((80, 24)).columns
        lines = render(view, width=width - 1, color=True, unicode=self._unicode)
        up = f"\x1b[{self._lines}F" if self._lines else ""  # to the first line of the last
        self.out.write(up + "".join(f"{line}\x1b[K\n" for line in lines) + "\x1b[J")
        self.out.flush()
        self._lines = len(lines)


class PlainView:
    """One :func:`progress_line` every :data:`PLAIN_EVERY_S` seconds, and a last one."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._next = 0.0

    def __enter__(self) -> PlainView:
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def update(self, view: LiveView, *, final: bool = False) -> None:
        if final or view.elapsed_s >= self._next:
            print(progress_line(view), file=self.out, flush=True)
            self._next = view.elapsed_s + PLAIN_EVERY_S




def write_timeline(path: Path, t_s: npt.NDArray[np.float64], P: npt.NDArray[np.float32],
                   Y: npt.NDArray[np.uint8], labelled: npt.NDArray[np.bool_],
                   class_names: Sequence[str], thresholds: npt.NDArray[np.float64],
                   title: str) -> None:
    """One subplot per class: streamed probability against time, the truth shaded.

    t_s : ndarray (n,) float64, seconds from the first frame.
    P : ndarray (n, c) float32, streamed probabilities, NaN where unanswered (a gap).
    Y : ndarray (n, c) uint8 labels; labelled : ndarray (n,) bool.
    thresholds : ndarray (c,) float64, drawn as dashed lines.

    Needs matplotlib (the ``plot`` extra); the file is replaced atomically.
    """
    # The object API with an explicit Agg canvas: no pyplot, no global state, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = P.shape[1]
    fig = Figure(figsize=(11, 0.9 * c + 1.2), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(c, 1, sharex=True, squeeze=False)[:, 0]
    for j, ax in enumerate(axes):
        present = (Y[:, j] == 1) & labelled
        ax.fill_between(t_s, 0, 1, where=present, step="mid", color="tab:green", alpha=0.25,
                        linewidth=0, label="present (label)")
        ax.plot(t_s, P[:, j], color="tab:blue", linewidth=0.8, label="p (streamed)")
        ax.axhline(float(thresholds[j]), color="tab:red", linestyle="--",
                   linewidth=0.7, label="threshold")
        ax.set_ylim(-0.05, 1.05)
        ax.set_yticks([0, 1])
        ax.set_ylabel(class_names[j], rotation=0, ha="right", va="center")
    axes[0].legend(loc="lower left", bbox_to_anchor=(0, 1.02), ncols=3, fontsize="small",
                   frameon=False)
    axes[-1].set_xlabel("time since the first frame (s)")
    fig.suptitle(title, x=0.99, ha="right")
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))
