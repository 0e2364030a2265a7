"""What the demo prints at the end: frames answered, latency, the daemon's counters,
scores against the bag's labels and a check against the offline model.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

from robot_daemon.demo.stream import Stream
from robot_daemon.demo.view import write_timeline
from robot_daemon.errors import RobotDaemonError
from robot_daemon.liveview import daemon_counts
from robot_daemon.model import Model
from robot_daemon.offline import evaluate
from robot_daemon.serve.reload import ServedModel

#: Streamed and offline probabilities agree when no entry differs by more than this: a
#: few float32 ulps at 1.0 (BLAS may round a batch of 3 differently from one of 3,000).
AGREE_ATOL: Final = 1e-6


def summary_lines(stream: Stream, served: ServedModel, elapsed_s: float,
                  signum: int | None) -> list[str]:
    """The end-of-run report; partial when ``signum`` stopped the run."""
    c = stream.contents
    title = ("summary" if signum is None else
             f"partial summary (interrupted by {signal.Signals(signum).name})")
    lines = [
        "",
        f"{title}: {elapsed_s:.1f} s, bag {c.path}",
        f"frames sent {stream.sent} of {c.messages}, answered {stream.answered}"
        f" of {stream.sent_valid}" + _unanswered_note(stream),
    ]
    latencies = stream.latencies_ms()
    if latencies.size:
        p50, p99 = np.percentile(latencies, [50, 99])
        lines.append(f"latency, frame sent -> pred received: p50 {p50:.1f} ms, p99 {p99:.1f} ms")
    lines.append("daemon (its last status): " + daemon_counts(stream.status))
    rows = stream.answered_rows()
    scored = rows[c.labelled[rows]]
    if not c.labelled.any():
        lines.append("the bag holds no 'label' messages: nothing to score the answers against")
    if scored.size:
        evaluation = evaluate.score("streamed", served.model.class_names, c.Y[scored],
                                    stream.P[scored], served.model.thresholds)
        lines += ["", "streamed predictions against the bag's labels (model thresholds):"]
        lines += evaluate.describe([evaluation]).splitlines()
        lines += _absent_classes_note(evaluation)
    if rows.size:
        lines += ["", offline_check(stream, served, rows)]
    return lines


def _absent_classes_note(evaluation: evaluate.Evaluation) -> list[str]:
    """A short bag misses some classes, whose F1 is then 0 by convention (no true
    positive can exist): the macro F1 over the classes present says more."""
    present = evaluation.support > 0
    if present.all():
        return []
    absent = [name for name, p in zip(evaluation.class_names, present, strict=True) if not p]
    if not present.any():
        return ["no obstacle in these frames: F1 is 0 by convention for every class"]
    n = int(present.sum())
    over = "the 1 class" if n == 1 else f"the {n} classes"
    return [f"not in these frames: {', '.join(absent)} (F1 0 by convention); macro F1 over"
            f" {over} present: {evaluation.f1[present].mean():.4f}"]


def _unanswered_note(stream: Stream) -> str:
    notes = []
    if stream.unknown_answers:
        notes.append(f"{stream.unknown_answers} answers for frames not in the bag")
    missing = stream.sent_valid - stream.answered
    if missing > 0:
        notes.append(f"{missing} sent frames never answered")
    return f" ({'; '.join(notes)})" if notes else ""


def offline_check(stream: Stream, served: ServedModel, rows: npt.NDArray[np.intp]) -> str:
    """Whether the streamed probabilities are the offline ``predict_proba``'s, in float32."""
    offline = served.model.predict_proba(stream.contents.X[rows]).astype(np.float32)
    diff = float(np.abs(offline - stream.P[rows]).max())
    other = stream.model_versions - {served.version}
    if other:
        return (f"offline check: the daemon served model {', '.join(sorted(other))}, not"
                f" {served.version} (was the file replaced?)")
    verdict = "agree" if diff <= AGREE_ATOL else "DISAGREE"
    return (f"offline check: model.predict_proba on the same {rows.size} frames and the"
            f" stream {verdict} (max |difference| {diff:.1e})")


def timeline_or_hint(stream: Stream, model: Model, path: Path, *, stopped: bool = False) -> str:
    """Write the timeline PNG and return its line of the report, or say how to get it.

    ``stopped``: the run was interrupted; the timeline shows what was streamed, and says so.
    """
    # The last good picture is kept when this run has none to draw: said, so that it
    # does not pass for this run's.
    earlier = f"; {path} is an earlier run's" if path.exists() else ""
    if stream.answered == 0:
        return f"timeline PNG skipped: no frame was answered{earlier}"
    try:
        import matplotlib  # noqa: F401  - the "plot" and "demo" extras
    except ImportError:
        return (
            f"timeline PNG skipped: matplotlib is not installed{earlier}. Install it with\n"
            f"    {_pip()} install -e '.[plot]'\n"
            f"then rerun with --bag {stream.contents.path} to reuse the bag."
        )
    c = stream.contents
    versions = ", ".join(sorted(stream.model_versions)) or "none"
    try:
        write_timeline(path, c.t - c.t[0], stream.P, c.Y, c.labelled, model.class_names,
                       model.thresholds, title=f"{c.path.name} through the daemon, model"
                       f" {versions}" + (" (stopped early: frames after the stop unanswered)"
                                         if stopped else ""))
    except OSError as exc:
        raise RobotDaemonError(f"cannot write the timeline {path}: {exc.strerror}") from None
    return f"timeline: {path}"


def _pip() -> str:
    """This environment's pip, as a path relative to the working directory if inside it."""
    pip = Path(sys.executable).parent / "pip"
    if not pip.exists():
        return f"{sys.executable} -m pip"
    with contextlib.suppress(ValueError):
        return str(pip.relative_to(Path.cwd()))
    return str(pip)
