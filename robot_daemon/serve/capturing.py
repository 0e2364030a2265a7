"""``run --capture DIR``: each tick's served frames through the triggers into capture bags.

After a tick's ``pred`` (and the shadow's pass), :meth:`Capturer.tick` picks the frames
worth keeping (:mod:`robot_daemon.capture.triggers`: a served probability near its
threshold, the shadow deciding otherwise, the seconds around a health change) and hands
them to :class:`robot_daemon.capture.writer.Capture`, which never blocks: the bags are
written by a thread of their own, within a hard bound on disk. Every served frame, picked
or not, also goes into the statistics of the ``stream`` records
(:mod:`robot_daemon.capture.stream`). With labels (:meth:`Capturer.labels`), a captured
frame's label is kept, and a label that contradicts what the serving model decides for
its reading is captured with it. Everything here runs on the tick thread after the
``pred`` went out, and costs microseconds a frame.
Design: docs/daemon-reference.md, "Capture".
"""

from __future__ import annotations

import time
from collections import OrderedDict, deque
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from robot_daemon import wire
from robot_daemon.bag.format import BagMeta
from robot_daemon.capture import stream, triggers
from robot_daemon.capture.frames import CapturedFrame
from robot_daemon.capture.writer import Capture, CaptureConfig
from robot_daemon.model import Model
from robot_daemon.moments import Moments
from robot_daemon.serve.batch import Batch
from robot_daemon.serve.labelled import Labelled

#: Captured frames whose label is still written when it comes (about 17 minutes of the
#: default rate of 10 a second).
CAPTURED_KEYS: Final = 10_000
#: How long a label that came before its frame was captured waits for it, and how many
#: wait at most (a second of the capture-only label channel's 1,000 a second).
LABEL_WAIT_NS: Final = 1_000_000_000
EARLY_LABELS: Final = 1_024

#: The shadow's answers (n, c) to a tick's frames, its thresholds (c,) and its identity.
Shadow = tuple[npt.NDArray[Any], npt.NDArray[np.float64], str]


class Capturer:
    """The triggers over each tick, and the :class:`Capture` they feed."""

    def __init__(self, config: CaptureConfig, meta: BagMeta) -> None:
        self.config = config
        self.on = config.triggers
        self.capture = Capture(config, meta)
        # The frames of the last seconds that no trigger took, for a health change; a
        # frame is kept as the row of its tick it was (the tick's arrays are kept alive).
        self.recent: triggers.Recent[tuple[int, Batch, int, npt.NDArray[Any], str]] = (
            triggers.Recent(config.health_window_s))
        self._captured: OrderedDict[tuple[str | None, int], None] = OrderedDict()
        #: Labels that came before their frame was captured: (when, label), the oldest
        #: first, kept LABEL_WAIT_NS.
        self._early: deque[tuple[int, wire.Label]] = deque(maxlen=EARLY_LABELS)
        # Every served frame's statistics since the last stream record (capture.stream).
        self._stream = Moments.empty()
        self._stream_since = (time.monotonic_ns(), time.time())
        self._version = meta.extra.get("model", "")  # the serving model's, as each tick says

    def tick(self, tick: int, frames: Batch, P: npt.NDArray[Any], serving: Model,
             version: str, shadow: Shadow | None) -> None:
        """The frames (n) a tick answered with the serving model's ``P`` (n, c) (model
        ``version``), and the shadow's answers, thresholds and identity when it ran on
        them."""
        now = time.monotonic_ns()
        self._count_served(frames, version, now)
        reasons = self._reasons(P, serving.thresholds, shadow)
        picked = [i for i, why in enumerate(reasons) if why]
        wall = _wall_offset_ns(now)
        captured = [_captured(tick, frames, i, P, version, shadow, reasons[i], wall)
                    for i in picked]
        queued = self.capture.offer(captured, now)
        self._remember(captured[:queued], now)  # the others were not kept: nor their labels
        if triggers.HEALTH in self.on:
            left = [i for i, why in enumerate(reasons) if not why]
            keep = left[-self.recent.max_frames:]  # a flood keeps only what the ring holds
            self.recent.add(((tick, frames, i, P, version) for i in keep), now)

    def _reasons(self, P: npt.NDArray[Any], thresholds: npt.NDArray[np.float64],
                 shadow: Shadow | None) -> list[tuple[str, ...]]:
        """Per frame, the triggers that pick it (empty: none)."""
        masks: list[tuple[str, npt.NDArray[np.bool_]]] = []
        if triggers.UNCERTAIN in self.on:
            masks.append((triggers.UNCERTAIN,
                          triggers.uncertain(P, thresholds, self.config.margin)))
        if triggers.DISAGREE in self.on and shadow is not None:
            S, shadow_thresholds, _ = shadow  # each model decides at its own thresholds
            masks.append((triggers.DISAGREE,
                          triggers.disagree(P, S, thresholds, shadow_thresholds)))
        around = triggers.HEALTH in self.on and self.recent.in_window(time.monotonic_ns())
        picked = np.zeros(len(P), bool)
        for _, mask in masks:
            picked |= mask
        if not picked.any() and not around:  # the usual tick: nothing to keep
            return [()] * len(P)
        return [tuple(name for name, mask in masks if mask[i])
                + ((triggers.HEALTH,) if around else ()) for i in range(len(P))]

    def health_changed(self) -> None:
        """A source went stale or came back: the frames of the seconds before it."""
        if triggers.HEALTH not in self.on:
            return
        now = time.monotonic_ns()
        wall = _wall_offset_ns(now)
        captured = [_captured(tick, frames, i, P, version, None, (triggers.HEALTH,), wall)
                    for tick, frames, i, P, version in self.recent.health_changed(now)]
        queued = self.capture.offer(captured, now)
        self._remember(captured[:queued], now)  # the others were not kept: nor their labels

    @property
    def wants_answers(self) -> bool:
        """Whether :meth:`labels` needs the serving model's answers to the labels."""
        return triggers.CONTRADICT in self.on

    def labels(self, labelled: Labelled, version: str, thresholds: npt.NDArray[np.float64]
               ) -> None:
        """Labels from the label channel: those of frames captured before written, and
        those that contradict the serving model's decision (``labelled.P``, at
        ``thresholds``; model ``version``) captured."""
        now = time.monotonic_ns()
        labels = labelled.labels
        # Before the captured frames' labels are kept (and their keys forgotten): a frame
        # captured once is not captured again for its label.
        fresh = np.array([(label.src, label.seq) not in self._captured for label in labels])
        # A label often comes before its frame's tick: it waits for it, a while.
        self._early.extend((now, label) for label, new in zip(labels, fresh, strict=True)
                           if new)
        self._label_captured(labels, now)
        if not self.wants_answers or labelled.P is None:
            return
        P, Y = labelled.P, labelled.Y
        wrong = (triggers.contradicts(P, Y, thresholds) & np.isfinite(P).all(axis=1)
                 & fresh)
        wall = _wall_offset_ns(now)
        self.capture.offer([CapturedFrame(
            seq=labels[i].seq, t=labels[i].t, x=labelled.X[i], src=labels[i].src,
            recv_ns=now + wall, p=P[i], model=version, shadow_p=None, shadow_model=None,
            y=Y[i], reasons=(triggers.CONTRADICT,)) for i in np.flatnonzero(wrong)], now)

    def _label_captured(self, labels: list[wire.Label], now: int) -> None:
        """The labels of frames captured before (a labeller answers after the frame): one
        each, the first (a captured frame's key is forgotten once its label is kept, so a
        flood of labels writes no more than the frames captured)."""
        wall = _wall_offset_ns(now)
        kept = []
        for label in labels:
            if self._captured.pop((label.src, label.seq), False) is None:
                kept.append(CapturedFrame(
                    seq=label.seq, t=label.t, x=label.x, src=label.src, recv_ns=now + wall,
                    p=np.zeros(0, np.float32), model="", shadow_p=None, shadow_model=None,
                    y=np.asarray(label.y, np.uint8), reasons=(), label_only=True))
        self.capture.offer(kept, now, rate_limited=False)

    def _remember(self, frames: list[CapturedFrame], now: int) -> None:
        """The captured frames' (src, seq), for their labels: the newest CAPTURED_KEYS;
        the labels that came before them written now."""
        for frame in frames:
            self._captured[frame.src, frame.seq] = None
        while len(self._captured) > CAPTURED_KEYS:
            self._captured.popitem(last=False)
        while self._early and now - self._early[0][0] > LABEL_WAIT_NS:
            self._early.popleft()  # its frame was not captured
        if frames and self._early:
            matched = [label for _, label in self._early
                       if (label.src, label.seq) in self._captured]
            if matched:
                self._early = deque((item for item in self._early
                                     if (item[1].src, item[1].seq) not in self._captured),
                                    maxlen=self._early.maxlen)
                self._label_captured(matched, now)

    def _count_served(self, frames: Batch, version: str, now: int) -> None:
        """Every served frame into the stream's statistics; a record every PERIOD_NS."""
        self._version = version
        if len(frames):
            self._stream = self._stream.merge(stream.served(frames.X))
        if now - self._stream_since[0] >= stream.PERIOD_NS:
            self._record_stream(now)

    def _record_stream(self, now: int) -> None:
        """The statistics since the last record, to the writer; kept if it has no room."""
        if self._stream.n == 0:
            return
        record = stream.StreamRecord(self._stream, self._stream_since[1], time.time(),
                                     self._version)
        if self.capture.offer_stream(record):
            self._stream, self._stream_since = Moments.empty(), (now, record.t1)

    def status(self) -> dict[str, Any]:
        return self.capture.status()

    def close(self) -> None:
        """The last stream record, then the writer's close."""
        self._record_stream(time.monotonic_ns())
        self.capture.close()


def _wall_offset_ns(monotonic_ns: int) -> int:
    """Wall clock minus monotonic, in ns: a frame's arrival as a bag's log time."""
    return time.time_ns() - monotonic_ns


def _captured(tick: int, frames: Batch, i: int, P: npt.NDArray[Any], version: str,
              shadow: Shadow | None, reasons: tuple[str, ...],
              wall_offset_ns: int) -> CapturedFrame:
    """Frame ``i`` of a tick's ``frames`` as captured for ``reasons``."""
    return CapturedFrame(
        seq=frames.seq[i], t=frames.t[i], x=np.asarray(frames.X[i], np.float32),
        src=frames.src[i], recv_ns=int(frames.arrival_ns[i]) + wall_offset_ns,
        p=np.asarray(P[i], np.float32), model=version,
        shadow_p=None if shadow is None else np.asarray(shadow[0][i], np.float32),
        shadow_model=None if shadow is None else shadow[2], y=None, reasons=reasons,
        tick=tick)
