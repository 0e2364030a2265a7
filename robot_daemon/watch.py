"""``robot-daemon watch``: what a running daemon answers, live, for an operator.

Subscribes to a daemon's ``pred`` and ``status`` (its ``--pred`` endpoint) and shows the
newest answered frame's probability per class against its threshold, frames/s, the
daemon's latency, its drop/reject/loss counters, its health and stale sensors, and what
online learning is doing. Given ``--labels`` (a labeller's or a played bag's endpoint) it
also subscribes to ``label`` and marks each class present, missed or falsely alarmed for
frames whose label it has seen.

Class names and thresholds come from ``--model`` (the file the daemon serves); without
it the classes are numbered and the threshold is 0.5. Nothing here can disturb the
daemon: a SUB socket is invisible to a PUB, and a slow watcher only loses messages
(``RCVHWM``), never slows the daemon.

Nothing the endpoints send can disturb the watcher either: a message that does not
decode is counted, a ``status`` value of an unexpected type is shown as ``?`` (see
:mod:`robot_daemon.liveview`), and every string shown is :func:`printable`, so that a
name holding terminal escape codes is shown, not run.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import numpy as np
import numpy.typing as npt
import zmq

from robot_daemon import model, wire
from robot_daemon.config import DEFAULT_PRED
from robot_daemon.errors import RobotDaemonError, WireError
from robot_daemon.liveview import (
    ABSENT,
    MIN_WIDTH,
    PlainView,
    RateMeter,
    TerminalView,
    class_rows,
    daemon_counts,
    fit,
    health,
    health_lines,
    shown_field,
    shown_names,
    shown_number,
    shown_text,
    shown_total,
)
from robot_daemon.printable import printable
from robot_daemon.zmq_io import receive

REFRESH_S: Final = 0.2
#: Labels remembered by seq, to meet the pred that answers their frame (about 80 s at 50 Hz).
LABELS_KEPT: Final = 4096
#: What a watcher may queue before ZeroMQ drops for it: a slow terminal loses messages.
RCVHWM: Final = 1000
_DEFAULT_THRESHOLD: Final = 0.5


@dataclass(frozen=True)
class WatchOptions:
    """What ``robot-daemon watch`` was asked to do."""

    pred: str = DEFAULT_PRED
    labels: str | None = None
    class_names: Sequence[str] | None = None
    thresholds: npt.NDArray[np.float64] | None = None
    live: bool = True
    duration_s: float | None = None


@dataclass(frozen=True, eq=False)
class WatchView:
    """One refresh: everything :func:`render` shows.

    probs : (c,) float32, the newest answered frame's probabilities, or None.
    truth : (c,) uint8, that frame's label when ``--labels`` brought it, else None.
    """

    endpoint: str
    elapsed_s: float
    class_names: Sequence[str]
    thresholds: npt.NDArray[np.float64]
    answered: int
    frames_per_s: float
    newest_seq: int | None
    newest_src: str | None
    model: str | None
    probs: npt.NDArray[np.float32] | None
    truth: npt.NDArray[np.uint8] | None
    labels_seen: int | None
    status: Mapping[str, Any] | None
    #: Messages that did not decode (another protocol version, or not a daemon).
    refused: int = 0


class Watch:
    """What has arrived so far: the newest answer, the rate, labels by seq, the status."""

    def __init__(self, options: WatchOptions) -> None:
        self.options = options
        self.answered = 0
        self.newest: tuple[int, str | None, str, npt.NDArray[np.float32]] | None = None
        self.status: dict[str, Any] | None = None
        self.labels: OrderedDict[int, npt.NDArray[np.uint8]] = OrderedDict()
        self.labels_seen = 0
        self.rejected = 0
        self._rate = RateMeter()

    def on_message(self, parts: list[receive.Part], count: int) -> None:
        """One message from either socket, of ``count`` parts of which ``parts`` holds the
        first two (:class:`robot_daemon.zmq_io.receive.Receiver`): ``[topic, payload]`` is
        read, anything else counted."""
        if count != 2:
            self.rejected += 1
            return
        topic, payload = parts
        try:
            if topic == wire.TOPIC_PRED:
                self._on_pred(wire.decode_pred(payload))
            elif topic == wire.TOPIC_STATUS:
                self.status = wire.decode_status(payload)
            elif topic == wire.TOPIC_LABEL:
                self._on_label(wire.decode_label(payload))
        except WireError:
            self.rejected += 1

    def _on_pred(self, pred: wire.Pred) -> None:
        self.answered += len(pred.seq)
        src = pred.extra.get("src")
        last_src = src[-1] if isinstance(src, list) and src else None
        self.newest = (int(pred.seq[-1]), last_src if isinstance(last_src, str) else None,
                       pred.model, pred.p[-1])

    def _on_label(self, label: wire.Label) -> None:
        self.labels_seen += 1
        self.labels[label.seq] = label.y
        if len(self.labels) > LABELS_KEPT:
            self.labels.popitem(last=False)

    def frames_per_s(self, now_ns: int) -> float:
        """Frames answered per second over about the last second."""
        return self._rate.rate(self.answered, now_ns)

    def view(self, elapsed_s: float, now_ns: int) -> WatchView:
        seq, src, model, probs = self.newest if self.newest else (None, None, None, None)
        c = len(probs) if probs is not None else None
        names, thresholds = _classes(self.options, c)
        truth = None if seq is None else self.labels.get(seq)
        return WatchView(
            endpoint=self.options.pred, elapsed_s=elapsed_s, class_names=names,
            thresholds=thresholds, answered=self.answered,
            frames_per_s=self.frames_per_s(now_ns), newest_seq=seq, newest_src=src,
            model=model, probs=probs if probs is not None and len(probs) == len(names) else None,
            # A label of another c (another labeller, another model) is no label of these.
            truth=truth if truth is not None and len(truth) == len(names) else None,
            labels_seen=self.labels_seen if self.options.labels else None,
            refused=self.rejected,
            status=self.status,
        )


def _classes(options: WatchOptions,
             c: int | None) -> tuple[Sequence[str], npt.NDArray[np.float64]]:
    """Names and thresholds: the model's when given, else numbered classes at 0.5."""
    if options.class_names is not None and options.thresholds is not None:
        return options.class_names, options.thresholds
    count = c or 1
    return [f"class {j}" for j in range(count)], np.full(count, _DEFAULT_THRESHOLD)


def render(view: WatchView, width: int = 80, color: bool = False,
           unicode: bool = True) -> list[str]:
    """The watch view as lines of at most ``max(width, MIN_WIDTH)`` characters."""
    width = max(width, MIN_WIDTH)
    status = view.status
    head = f"robot-daemon watch {printable(view.endpoint)}  {view.elapsed_s:6.1f} s"
    if status is not None:
        head += f"  model {_model(status, view)}  up {shown_field(status, 'uptime_s')} s"
    lines = fit(head, width)
    lines += health_lines(status, width=width, color=color)
    if view.newest_seq is None:
        lines.append(f"newest answered frame: none yet {NOTHING_YET}")
    else:
        src = f" from {shown_text(view.newest_src)}" if view.newest_src else ""
        lines += fit(f"newest answered frame: seq {view.newest_seq}{src}", width)
    lines += class_rows(view.class_names, view.thresholds, view.probs, view.truth,
                        width=width, color=color, unicode=unicode)
    lines += fit(_answers(view), width)
    ticks = tick_line(status)
    lines += fit(ticks, width) if ticks else []
    shadow = shadow_line(status)
    lines += fit(shadow, width) if shadow else []
    capture = capture_line(status)
    lines += fit(capture, width) if capture else []
    lines += fit(f"daemon: {daemon_counts(status)}", width)
    learning = online_line(status)
    lines += fit(learning, width) if learning else []
    if view.labels_seen is not None:
        lines.append(f"labels seen {view.labels_seen}" + (
            "" if view.truth is not None or view.newest_seq is None
            else " (none for the newest frame)"))
    lines.append("Ctrl-C stops")
    return lines


def _model(status: Mapping[str, Any], view: WatchView) -> str:
    """The model serving: the status's, or else the newest pred's."""
    if "model_version" in status:
        return shown_text(status["model_version"])
    return ABSENT if view.model is None else shown_text(view.model)


def _answers(view: WatchView) -> str:
    status = view.status
    latency = "latency -" if status is None else (
        f"latency p50 {shown_field(status, 'latency_ms_p50', _ms)} ms"
        f" p99 {shown_field(status, 'latency_ms_p99', _ms)} ms")
    refused = f"  (messages refused: {view.refused})" if view.refused else ""
    return f"answered {view.answered}  {view.frames_per_s:5.1f} frames/s  {latency}{refused}"


def _ms(value: object) -> str:
    return shown_number(value, 1)


def tick_line(status: Mapping[str, Any] | None) -> str:
    """Each source's latency p50/p99 (ms) and, once the grid moved (tick_phase auto),
    where it is: empty before a status says either."""
    if status is None:
        return ""
    parts = []
    by_src = status.get("src_latency_ms")
    if type(by_src) is dict and by_src:
        parts.append("latency by src: " + shown_names([
            f"{shown_text(src)} {_pair(pcts)} ms" for src, pcts in by_src.items()]))
    if status.get("tick_moves"):
        parts.append(f"grid moved {shown_field(status, 'tick_moves')}x, offset"
                     f" {shown_field(status, 'tick_offset_ms', _ms)} ms")
    return "; ".join(parts)


def shadow_line(status: Mapping[str, Any] | None) -> str:
    """The shadow model against the serving one (``run --shadow``): empty without one."""
    shadow = None if status is None else status.get("shadow")
    if type(shadow) is not dict:
        return ""
    parts = [f"shadow {shown_field(shadow, 'model', shown_text)}: compared"
             f" {shown_field(shadow, 'frames_compared')}, skipped"
             f" {shown_field(shadow, 'frames_skipped')}"]
    disagree = shadow.get("disagree")
    if type(disagree) is dict and disagree:
        most = sorted(disagree.items(), key=lambda item: -_number(item[1]))
        parts.append("decisions differ " + shown_names(
            [f"{shown_text(name)} {_percent(share)}" for name, share in most]))
    serving, candidate = shadow.get("f1_serving"), shadow.get("f1_shadow")
    if type(serving) is dict and type(candidate) is dict:
        parts.append(f"macro F1 serving {shown_number(serving.get('macro'), 3)} shadow"
                     f" {shown_number(candidate.get('macro'), 3)}"
                     f" ({shown_field(shadow, 'labelled')} labels)")
    return "; ".join(parts)


def capture_line(status: Mapping[str, Any] | None) -> str:
    """What ``run --capture`` kept: empty without it."""
    if status is None or "capture_frames" not in status:
        return ""
    reasons = status.get("capture_by_reason")
    why = ""
    if type(reasons) is dict:
        kept = [f"{shown_text(k)} {shown_number(v)}" for k, v in reasons.items() if v]
        why = f" ({shown_names(kept)})" if kept else ""
    return (f"capture: {shown_field(status, 'capture_frames')} frames{why}, dropped"
            f" {shown_field(status, 'capture_dropped', shown_total)}, errors"
            f" {shown_field(status, 'capture_errors')}; {shown_field(status, 'capture_bags')}"
            f" bags, {shown_field(status, 'capture_bytes')} bytes")


def _number(value: object) -> float:
    """A share from a status, 0.0 for anything but a number (sorting only)."""
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else 0.0


def _percent(value: object) -> str:
    """``3.1%``; what shown_number shows for anything but a number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return shown_number(value)
    return f"{value:.1%}"


def _pair(pcts: object) -> str:
    """``0.6/1.4``: a [p50, p99] of a status."""
    if type(pcts) is not list or len(pcts) != 2:
        return shown_text(pcts)
    return "/".join(shown_number(v, 1) for v in pcts)


def online_line(status: Mapping[str, Any] | None) -> str:
    """What online learning did, from the ``status`` keys it adds; empty when it is off."""
    if status is None or "labels_received" not in status:
        return ""
    parts = [f"learning: labels {shown_field(status, 'labels_accepted')} used,"
             f" {shown_field(status, 'labels_rejected', shown_total)} rejected",
             f"steps {shown_field(status, 'online_steps')}"]
    refused = _refused(status.get("online_rejected"))
    parts += [refused] if refused else []
    last = status.get("online_last_step")
    if type(last) is dict and last.get("holdout_after") is not None:
        parts.append(f"holdout loss {shown_number(last.get('holdout_before'), 3)}"
                     f" -> {shown_number(last['holdout_after'], 3)}")
    parts.append(f"checkpoints {shown_field(status, 'checkpoints_saved')}")
    return ", ".join(parts)


def _refused(by_reason: object) -> str:
    """``refused 2 (loss_jump 2)``: the steps refused, by reason; empty when none were."""
    if by_reason is None:
        return ""
    if type(by_reason) is not dict:
        return f"refused {shown_text(by_reason)}"
    refused = {reason: n for reason, n in by_reason.items() if n != 0}
    if not refused:
        return ""
    reasons = sorted(refused.items(), key=lambda item: shown_text(item[0]))
    return (f"refused {shown_total(refused)} ("
            + shown_names([f"{shown_text(r)} {shown_number(n)}" for r, n in reasons]) + ")")


#: The hint while nothing was answered, live or plain.
NOTHING_YET = "(is the daemon running, and fed?)"


def progress_line(view: WatchView) -> str:
    """The plain one-line report (no terminal, or ``--no-live``): one line per report, so
    that a log keeps it whole; the tick, shadow and capture parts where the daemon has
    them, after `` | ``."""
    state = health(view.status)
    line = (f"[{view.elapsed_s:6.1f} s] {_answers(view)}, {daemon_counts(view.status)}"
            + (f", {state}" if state else "") + (f" {NOTHING_YET}" if not view.answered else ""))
    extra = [part(view.status) for part in (tick_line, shadow_line, capture_line)]
    return " | ".join([line, *(part for part in extra if part)])


def _draw(view: WatchView, width: int, color: bool, unicode: bool) -> list[str]:
    return render(view, width, color, unicode)


def run(options: WatchOptions, out: TextIO, stop: threading.Event | None = None) -> int:
    """Watch until ``stop`` is set or ``options.duration_s`` passes; returns 0.

    Raises:
        RobotDaemonError: an endpoint ZeroMQ cannot connect to.
    """
    stop = stop or threading.Event()
    watch = Watch(options)
    view: TerminalView[WatchView] | PlainView[WatchView] = (
        TerminalView(out, _draw) if options.live and out.isatty()
        else PlainView(out, progress_line, lambda v: v.elapsed_s))
    with zmq.Context() as ctx, _subscribe(ctx, options) as sockets, view:
        poller = zmq.Poller()
        for sock in sockets:
            poller.register(sock, zmq.POLLIN)
        start = time.monotonic_ns()
        end = None if options.duration_s is None else start + round(options.duration_s * 1e9)
        next_refresh = start
        while not stop.is_set():
            now = time.monotonic_ns()
            if end is not None and now >= end:
                break
            if now >= next_refresh:
                view.update(watch.view((now - start) / 1e9, now))
                next_refresh = now + round(REFRESH_S * 1e9)
            wait_ms = max(0, (next_refresh - time.monotonic_ns()) // 1_000_000)
            for sock, _ in poller.poll(wait_ms):
                receive.drain(sock, watch.on_message)
        now = time.monotonic_ns()
        view.update(watch.view((now - start) / 1e9, now), final=True)
    return 0


@contextlib.contextmanager
def _subscribe(ctx: zmq.Context[zmq.Socket[bytes]],
               options: WatchOptions) -> Iterator[list[zmq.Socket[bytes]]]:
    """SUB sockets on the daemon's pred/status and, if asked, the labels; closed on exit."""
    plan: list[tuple[str, tuple[bytes, ...]]] = [
        (options.pred, (wire.TOPIC_PRED, wire.TOPIC_STATUS))]
    if options.labels:
        plan.append((options.labels, (wire.TOPIC_LABEL,)))
    with contextlib.ExitStack() as stack:
        sockets = []
        for endpoint, topics in plan:
            sock = stack.enter_context(ctx.socket(zmq.SUB))
            sock.setsockopt(zmq.LINGER, 0)
            sock.setsockopt(zmq.RCVHWM, RCVHWM)
            sock.setsockopt(zmq.MAXMSGSIZE, wire.MAX_PRED_BYTES + 1024)
            for topic in topics:
                sock.setsockopt(zmq.SUBSCRIBE, topic)
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                raise RobotDaemonError(f"cannot connect to {endpoint}: {exc}") from None
            sockets.append(sock)
        yield sockets


def model_classes(path: Path) -> tuple[list[str], npt.NDArray[np.float64]]:
    """Class names and thresholds of a model file (:class:`ModelError` if unusable)."""
    loaded = model.load(path)
    return list(loaded.class_names), np.asarray(loaded.thresholds, dtype=np.float64)
