"""How ``robot-daemon demo`` shows itself: the live terminal view and the timeline PNG.

Everything here is presentation, apart from the demo's processes and sockets
(:mod:`robot_daemon.demo.run`): :func:`render` is a pure function of a :class:`LiveView`
snapshot, so that tests can read what a person would see. The class rows, counters and
the terminal itself are :mod:`robot_daemon.liveview`'s, shared with ``robot-daemon watch``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np
import numpy.typing as npt

from robot_daemon.liveview import (
    MIN_WIDTH,
    PlainView,
    TerminalView,
    class_rows,
    daemon_counts,
    fit,
    health_lines,
)
from robot_daemon.model import write_atomically
from robot_daemon.offline import metrics


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
    """The live view as lines of at most ``max(width, MIN_WIDTH)`` visible characters.

    ANSI colours (``color``) take no width; ``unicode=False`` draws in ASCII only.
    """
    width = max(width, MIN_WIDTH)
    progress = view.sent / view.total if view.total else 0.0
    lines = fit(f"robot-daemon demo  {view.elapsed_s:5.1f} s / {view.playback_s:.1f} s  "
                f"sent {view.sent}/{view.total} ({progress:.0%})  x{view.rate:g}", width)
    lines.append("newest answered frame: " + ("none yet" if view.newest_seq is None
                                              else f"seq {view.newest_seq}"))
    lines += class_rows(view.class_names, view.thresholds, view.probs, view.truth,
                        width=width, color=color, unicode=unicode)
    lines += fit(_answers(view), width)
    lines += fit(f"daemon: {daemon_counts(view.status)}    Ctrl-C stops", width)
    return lines + health_lines(view.status, width=width, color=color)


def draw(view: LiveView, width: int, color: bool, unicode: bool) -> list[str]:
    """:func:`render` as :class:`~robot_daemon.liveview.TerminalView` calls it."""
    return render(view, width=width, color=color, unicode=unicode)


def _answers(view: LiveView) -> str:
    latency = ("latency -" if view.latency_ms is None else
               f"latency p50 {view.latency_ms[0]:.1f} ms p99 {view.latency_ms[1]:.1f} ms")
    return f"answered {view.answered}  {view.frames_per_s:5.1f} frames/s  {latency}"


def progress_line(view: LiveView) -> str:
    """The plain one-line progress report (no terminal, or ``--no-live``)."""
    progress = view.sent / view.total if view.total else 0.0
    return (f"[{view.elapsed_s:6.1f} s] sent {view.sent}/{view.total} ({progress:.0%}), "
            f"{_answers(view)}, {daemon_counts(view.status)}")


def terminal_view(out: TextIO) -> TerminalView[LiveView]:
    return TerminalView(out, draw)


def plain_view(out: TextIO) -> PlainView[LiveView]:
    return PlainView(out, progress_line, lambda view: view.elapsed_s)


def write_timeline(path: Path, t_s: npt.NDArray[np.float64], P: npt.NDArray[np.float32],
                   Y: npt.NDArray[np.uint8], labelled: npt.NDArray[np.bool_],
                   class_names: Sequence[str], thresholds: npt.NDArray[np.float64],
                   title: str) -> None:
    """One subplot per class: streamed probability against time, the truth shaded.

    t_s : ndarray (n,) float64, seconds from the first frame.
    P : ndarray (n, c) float32, streamed probabilities, NaN where unanswered (a gap).
    Y : ndarray (n, c) uint8 labels; labelled : ndarray (n,) bool.
    thresholds : ndarray (c,) float64, drawn as dashed lines.

    Each panel names its class with its F1 over the labelled, answered frames, and marks
    the frames where the model missed the class (present, below the threshold) along the
    bottom edge and its false alarms (absent, at or above it) along the top. Needs
    matplotlib (the ``plot`` extra); the file is replaced atomically.
    """
    # The object API with an explicit Agg canvas: no pyplot, no global state, no display.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    c = P.shape[1]
    fig = Figure(figsize=(11, 0.95 * c + 1.4), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(c, 1, sharex=True, squeeze=False)[:, 0]
    scored = labelled & ~np.isnan(P).any(axis=1)
    for j, ax in enumerate(axes):
        present = (Y[:, j] == 1) & labelled
        detected = P[:, j] >= thresholds[j]  # NaN (unanswered): False
        missed = scored & present & ~detected
        false_alarm = scored & ~present & detected
        ax.fill_between(t_s, 0, 1, where=present, step="mid", color="tab:green", alpha=0.25,
                        linewidth=0, label="present (label)")
        ax.plot(t_s, P[:, j], color="tab:blue", linewidth=0.8, label="p (streamed)")
        ax.axhline(float(thresholds[j]), color="tab:red", linestyle="--",
                   linewidth=0.7, label="threshold")
        ax.plot(t_s[missed], np.full(missed.sum(), -0.02), "|", color="tab:orange",
                markersize=5, label="missed")
        ax.plot(t_s[false_alarm], np.full(false_alarm.sum(), 1.02), "|", color="tab:red",
                markersize=5, label="false alarm")
        ax.set_ylim(-0.06, 1.06)
        ax.set_yticks([0, 1])
        f1 = _f1(present[scored], detected[scored])
        ax.set_ylabel(f"{class_names[j]}\nF1 {f1}", rotation=0, ha="right", va="center",
                      fontsize="small")
    axes[0].legend(loc="lower left", bbox_to_anchor=(0, 1.02), ncols=5, fontsize="small",
                   frameon=False)
    axes[-1].set_xlabel("time since the first frame (s)")
    fig.supylabel("probability of the class, per class", fontsize="small")
    fig.suptitle(title, x=0.99, ha="right")
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=100))


def _f1(truth: npt.NDArray[np.bool_], decided: npt.NDArray[np.bool_]) -> str:
    """F1 as two decimals, or "-" where the class never occurs and is never claimed.

    truth, decided : (n,) bool. For one class, micro-F1 is its F1.
    """
    if not (truth.any() or decided.any()):
        return "-"
    return f"{metrics.micro_f1(truth[:, None], decided[:, None]):.2f}"
