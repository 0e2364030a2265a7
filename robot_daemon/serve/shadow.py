"""A candidate model run beside the serving one (``run --shadow MODEL``).

The shadow answers exactly the frames the serving model answered, after the tick's
``pred`` went out: it can never delay or change what the planner gets. Its answers go
out on the ``shadow`` topic (the ``pred`` format, its own model identity), so that a
subscriber of ``pred`` sees nothing new, and :meth:`Shadow.status` compares the two:
per class, the share of frames whose thresholded decisions differ and the mean
``|p_shadow - p_serving|``; with online learning, both models' F1 on the labelled frames
as they arrive (before a step learns from them).

Where the time left before the next tick's work cannot hold the shadow's forward pass
(estimated from a pass timed at load, corrected by the passes since), the tick's frames
are skipped and counted: a shadow too slow for the robot skips everything, and serving
goes on as without it.
Design: docs/architecture.md, "Shadow and capture".
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import zmq

from robot_daemon import wire
from robot_daemon.config import DaemonConfig
from robot_daemon.errors import ModelError
from robot_daemon.model import Model
from robot_daemon.offline.metrics import scores_from_counts
from robot_daemon.ratelimit import REJECT_LOG_PERIOD_NS, RateLimiter
from robot_daemon.serve.batch import Batch, encode_answers
from robot_daemon.serve.labelled import Labelled
from robot_daemon.serve.reload import Reloader, ServedModel, full_tick_ns

log = logging.getLogger("robot_daemon.serve.shadow")

#: Slack left before the next tick's work after the shadow's pass, and the factor on its
#: expected time (a pass varies with the cache and the collector).
MARGIN_NS: Final = 1_000_000
SAFETY: Final = 1.5
#: Recent ratios of a pass's time to its estimate kept for the correction (median).
RATIOS: Final = 9


def check_matches(shadow: Model, serving: Model, path: object) -> None:
    """Refuse a shadow that does not answer the same question: same ``d``, ``c`` and
    class names, in order.

    Raises:
        ModelError: one line naming what differs.
    """
    if (shadow.d, shadow.c) != (serving.d, serving.c):
        raise ModelError(f"shadow model file {path} has d={shadow.d}, c={shadow.c} but the"
                         f" serving model has d={serving.d}, c={serving.c}")
    if list(shadow.class_names) != list(serving.class_names):
        raise ModelError(f"shadow model file {path} has classes {shadow.class_names} but the"
                         f" serving model has {serving.class_names}: a comparison needs the"
                         " same classes in the same order")


@dataclass
class Cost:
    """A forward pass's expected time for ``n`` rows: ``fixed + per_row * n`` ns, timed
    at load, times the median ratio of recent passes to their estimate."""

    fixed_ns: float
    per_row_ns: float
    ratios: deque[float]

    @classmethod
    def timed(cls, model: Model, rows: int) -> Cost:
        """Passes over 1 and ``rows`` rows of ``model``, timed now (CPU time)."""
        rows = max(2, rows)
        return cls.fitted(full_tick_ns(model, 1), full_tick_ns(model, rows), rows)

    @classmethod
    def fitted(cls, one_ns: int, many_ns: int, rows: int) -> Cost:
        """The line through a pass of 1 row (``one_ns``) and one of ``rows`` rows."""
        per_row = max(0.0, (many_ns - one_ns) / (rows - 1))
        return cls(max(0.0, one_ns - per_row), per_row, deque(maxlen=RATIOS))

    def expected_ns(self, n: int) -> float:
        ratio = float(np.median(self.ratios)) if self.ratios else 1.0
        return (self.fixed_ns + self.per_row_ns * n) * ratio

    def add(self, n: int, took_ns: int) -> None:
        estimate = self.fixed_ns + self.per_row_ns * n
        if estimate > 0:
            self.ratios.append(took_ns / estimate)


class Tally:
    """Running per-class counts of the comparison, and of each model against labels."""

    def __init__(self, c: int) -> None:
        self.compared = 0
        self.skipped = 0
        self.differ = np.zeros(c, np.int64)  # frames whose decision differs, per class
        self.abs_diff = np.zeros(c, np.float64)  # sum of |p_shadow - p_serving|
        self.labelled = 0
        # True positives, false positives, false negatives per class: [serving, shadow].
        self.tp = np.zeros((2, c), np.int64)
        self.fp = np.zeros((2, c), np.int64)
        self.fn = np.zeros((2, c), np.int64)

    def compare(self, P: npt.NDArray[Any], S: npt.NDArray[Any],
                thresholds: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]) -> None:
        """Both models' answers (n, c) to the same frames, each decided at its own
        ``thresholds`` (serving, shadow); rows with a NaN are left out."""
        ok = np.isfinite(P).all(axis=1) & np.isfinite(S).all(axis=1)
        P, S = P[ok], S[ok]
        self.compared += len(P)
        self.differ += (np.greater_equal(P, thresholds[0])
                        != np.greater_equal(S, thresholds[1])).sum(axis=0)
        self.abs_diff += np.abs(S.astype(np.float64) - P).sum(axis=0)

    def score(self, which: int, P: npt.NDArray[Any], Y: npt.NDArray[Any],
              thresholds: npt.NDArray[np.float64]) -> None:
        """Model ``which`` (0 serving, 1 shadow) answered ``P`` (n, c) to frames labelled
        ``Y`` (n, c)."""
        decided, truth = np.greater_equal(P, thresholds), Y.astype(bool)
        self.tp[which] += (decided & truth).sum(axis=0)
        self.fp[which] += (decided & ~truth).sum(axis=0)
        self.fn[which] += (~decided & truth).sum(axis=0)

    def f1(self, which: int) -> npt.NDArray[np.float64]:
        """Per-class F1 of model ``which`` on the labelled frames (0 where undefined)."""
        return scores_from_counts(self.tp[which], self.fp[which], self.fn[which]).f1


class Shadow:
    """The shadow model beside ``serving`` (checked by :func:`check_matches`).

    ``rows``: the usual largest tick (``max_batch``), for the pass timed at load.
    """

    def __init__(self, shadow: ServedModel, serving: Model, rows: int) -> None:
        check_matches(shadow.model, serving, shadow.path)
        self.served = shadow
        # Timed where it was loaded (the reload thread); at start, here, before serving.
        self.cost = (Cost.fitted(*shadow.pass_ns) if shadow.pass_ns is not None
                     else Cost.timed(shadow.model, rows))
        self.tally = Tally(shadow.model.c)

    def run(self, pub: zmq.Socket[bytes], serving: Model, until_ns: int, tick: int,
            frames: Batch, P: npt.NDArray[Any]) -> npt.NDArray[Any] | None:
        """Answer the frames (n) tick ``tick`` answered with the serving model's ``P``
        (n, c) if it fits before ``until_ns`` (the next tick's work), else skip them. The
        shadow's answers (n, c), or None where it skipped them."""
        if not self._fits(len(frames), until_ns):
            self.tally.skipped += len(frames)
            return None
        return self._answer(pub, tick, frames, P, serving.thresholds)

    def score(self, labelled: Labelled, serving: Model, until_ns: int) -> None:
        """Both models on labelled frames the serving model answered (``labelled.P``), if
        the shadow's pass fits before ``until_ns``: scores are a sample, never a delay."""
        if labelled.P is None or not self._fits(len(labelled.labels), until_ns):
            return
        with np.errstate(all="ignore"):
            S = self.served.model.predict_proba(labelled.X)
        for which, (P, thresholds) in enumerate(zip(
                (labelled.P, S), (serving.thresholds, self.served.model.thresholds),
                strict=True)):
            ok = np.isfinite(P).all(axis=1)
            self.tally.score(which, P[ok], labelled.Y[ok], thresholds)
        self.tally.labelled += len(labelled.labels)

    def _fits(self, rows: int, until_ns: int) -> bool:
        left = until_ns - time.monotonic_ns()
        return left > self.cost.expected_ns(rows) * SAFETY + MARGIN_NS

    def _answer(self, pub: zmq.Socket[bytes], tick: int, frames: Batch, P: npt.NDArray[Any],
                thresholds: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
        """The shadow's pass on ``frames`` (the serving model answered ``P``, deciding at
        ``thresholds``): published, compared, timed."""
        model = self.served.model
        start = time.thread_time_ns()
        with np.errstate(all="ignore"):  # a NaN row is left out of the message
            S = model.predict_proba(frames.X)
        self.cost.add(len(frames), time.thread_time_ns() - start)
        self.tally.compare(P, S, (thresholds, model.thresholds))
        payload, _ = encode_answers(tick, time.time(), frames, S, self.served.version)
        if payload is not None:
            pub.send(wire.TOPIC_SHADOW, zmq.SNDMORE)
            pub.send(payload)
        return S

    def status(self) -> dict[str, Any]:
        """The ``shadow`` map of ``status`` (see docs/daemon-reference.md)."""
        t, names = self.tally, self.served.model.class_names
        n = max(t.compared, 1)
        out: dict[str, Any] = {
            "model": self.served.version,
            "frames_compared": t.compared,
            "frames_skipped": t.skipped,
            "disagree": dict(zip(names, (t.differ / n).tolist(), strict=True)),
            "mean_abs_diff": dict(zip(names, (t.abs_diff / n).tolist(), strict=True)),
            "labelled": t.labelled,
        }
        if t.labelled:
            for which, key in ((0, "f1_serving"), (1, "f1_shadow")):
                f1 = t.f1(which)
                out[key] = {**dict(zip(names, f1.tolist(), strict=True)),
                            "macro": float(f1.mean())}
        return out


class ShadowSlot:
    """The daemon's shadow: the :class:`Shadow` of the model at ``path`` (None while a
    serving model it does not match is in service), and its reloads on SIGHUP.

    Raises:
        ModelError: at start, the shadow model file is unusable or does not match.
    """

    def __init__(self, loaded: ServedModel, config: DaemonConfig, serving: Model) -> None:
        self.rows = config.max_batch
        self.current: Shadow | None = Shadow(loaded, serving, self.rows)
        self.loader = Reloader(loaded.path, serving.d, serving.c, config.max_batch,
                               config.interval_ns, shadow=True)
        # A storm of SIGHUPs with a bad file: one line per 10 s, not one per signal.
        self._refusals = RateLimiter(REJECT_LOG_PERIOD_NS)

    def request(self) -> None:
        """SIGHUP: load the shadow's file again (in the reload thread)."""
        self.loader.request()

    def reloaded(self, serving: Model) -> bool | None:
        """Between ticks: shadow what a finished reload loaded, if it matches ``serving``;
        True when it took effect, False when it was refused (logged; the shadow stays as
        it was), None when no reload ended."""
        outcome = self.loader.done()
        if outcome is None:
            return None
        was = "none" if self.current is None else self.current.served.version
        try:
            if isinstance(outcome, ModelError):
                raise outcome
            if self.current is not None and outcome.version == was:
                return True  # the same file: its comparison goes on
            shadow = Shadow(outcome, serving, self.rows)
        except ModelError as exc:
            suppressed = self._refusals.allow("refused", time.monotonic_ns())
            if suppressed is not None:
                more = f" ({suppressed} more since the last report)" if suppressed else ""
                log.error("shadow reload refused, still shadowing %s: %s%s", was, exc, more)
            return False
        self.current = shadow
        log.info("shadow reloaded: %s (was %s)", shadow.served.version, was)
        return True

    def serving_changed(self, serving: Model) -> None:
        """A new serving model: a shadow that no longer matches it stops (the serving
        model decides), until a reload brings one that does."""
        if self.current is None:
            return
        try:
            check_matches(self.current.served.model, serving, self.current.served.path)
        except ModelError as exc:
            log.error("shadow stopped: %s; a reload with a matching one starts it again", exc)
            self.current = None

    def close(self) -> None:
        self.loader.close()
