"""A tick's work in parts: the frames already waiting shortly before the deadline, those
that came in since just before it, then the few that arrive after them; at high rates
also the frames of each drain between ticks, as they come (passes ahead).

:class:`Passes` runs them for one daemon and keeps their packed rows for the tick, which
then computes only the last few frames, on warm caches, and starts on time: after 20 ms
asleep a whole tick's work ran several times slower than back to back. Nothing is
computed twice, and rows computed by weights that changed since are computed again.

Design: docs/architecture.md, "Early passes before a tick".
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from robot_daemon import wire
from robot_daemon.errors import WireError
from robot_daemon.model import Model
from robot_daemon.serve.batch import Batch, PendingFrames
from robot_daemon.serve.report import Counters

log = logging.getLogger("robot_daemon")

#: The early pass runs interval / EARLY_LEAD before the deadline (1.25 ms at 20 ms
#: ticks): late enough that most of a tick's frames are in, early enough that 20 frames'
#: pass and packing on cold caches (0.3-0.6 ms) ends before the deadline twice over.
EARLY_LEAD: Final = 16
#: The catch-up pass runs this long before the deadline, whatever the interval: its costs
#: do not grow with it (measured p50: the wake-up 0.11 ms late, the drain 0.07, the pass
#: over one frame 0.19, cold), and the wait awake after it would. Earlier, more frames
#: would fall to the tick and the wait would be longer: at 0.5 ms the CPU per 1,000
#: frames rose 8 %, the tick p50 fell 7 %.
CATCH_UP_NS: Final = 312_500
#: A catch-up pass only where the early pass is due this many catch-up leads before the
#: deadline (ticks of 15 ms and more): the early pass must be done before it.
CATCH_UP_ROOM: Final = 3
#: The rows the first early pass may take (:class:`RowBudget`): a cold pass and packing
#: over 32 rows at h = 64 take about 0.5 ms.
INITIAL_ROWS: Final = 32
#: A pass ahead (:meth:`Passes.run_ahead`: after a drain between ticks, before the early
#: pass) only over this many rows or more. At 1,000 frames/s a drain brings about 5 and the early
#: pass does them; at 80,000 it brings about 400, and a tick that computed all of its
#: 1,600 frames took 4-9 ms, which pushed the frames' latency past two intervals.
AHEAD_ROWS: Final = 128
#: The rows a pass ahead may take at first: passes ahead end before the early pass, a few
#: ms away, and a warm pass over 1,024 rows takes about 1 ms.
AHEAD_INITIAL_ROWS: Final = 1024

Probs = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Early:
    """The forward pass of a tick's first frames, done before its deadline.

    batch : the frames, oldest first (:meth:`PendingFrames.take`'s: they own their readings).
    P : ndarray (len(batch), c) float32, or None if a pass raised (the tick retries).
    rows : their rows of the ``pred``, packed, one part per pass; None if P is None or a
        row failed the checks.
    model, version : the weights that computed P.
    """

    batch: Batch
    P: Probs | None
    rows: tuple[wire.PredRows, ...] | None
    model: Model
    version: str


class RowBudget:
    """How many rows an early pass may take, learnt from how the recent ones ended.

    A pass that ends with more than ``spare`` of its time to the deadline to spare lets
    the next take twice its rows; one that ends later (or past the deadline) halves the
    budget. Of more rows than the budget, a pass takes the oldest the budget admits and
    leaves the newer rest to the next pass and the tick: a slow pass costs the next few
    passes some of their rows, not all of them (measured at 1,000 frames/s: refused whole,
    4 % of ticks computed their 20 frames cold, 0.5-1 ms). No cost model: it holds for
    any model size and any machine.
    """

    def __init__(self, spare: float = 0.5, rows: int = INITIAL_ROWS) -> None:
        self.rows = rows
        self.spare = spare

    def admit(self, rows: int) -> int:
        """How many of ``rows`` pending rows (the oldest) a pass may take now."""
        return min(rows, self.rows)

    def ended(self, rows: int, start_ns: int, end_ns: int, deadline_ns: int) -> None:
        """A pass over ``rows`` rows ran from ``start_ns`` to ``end_ns``."""
        if end_ns - start_ns < (deadline_ns - start_ns) * (1 - self.spare):
            self.rows = max(self.rows, 2 * rows)
        else:
            self.rows = max(1, rows // 2)


#: The model and the version of the weights serving now: ``serving() -> (model, version)``.
Serving = Callable[[], tuple[Model, str]]


class Passes:
    """The passes before the next tick of one daemon: the part of its work they computed
    (:attr:`early`), and how many rows each kind of pass may take (a :class:`RowBudget`
    each). The daemon's loop decides when each runs, around its drains; see the module.

    pending : the daemon's ring; a pass takes the oldest frames it admits from it.
    counters : ``tick_errors`` (a pass that raised) and ``ticks_caught_up`` go there.
    interval_ns : the tick interval; max_batch : the frames a tick serves at most.
    serving : the weights a pass computes with (:data:`Serving`).
    ahead : whether passes ahead run (not with online learning: a step between ticks
        would make their work void).
    """

    def __init__(
        self, pending: PendingFrames, counters: Counters, interval_ns: int, max_batch: int,
        serving: Serving, ahead: bool = True,
    ) -> None:
        self.early: Early | None = None  # the next tick's first frames, computed
        self._pending = pending
        self._counters = counters
        self._interval_ns = interval_ns
        self._max_batch = max_batch
        self._serving = serving
        self._ahead = ahead
        self.early_rows = RowBudget()
        # A catch-up has a quarter of its 0.31 ms to spare where the early pass has half of
        # its 1.25 ms: its frames are few, its time to the deadline short.
        self.catch_up_rows = RowBudget(spare=0.25)
        self.ahead_rows = RowBudget(rows=AHEAD_INITIAL_ROWS)
        room = interval_ns // EARLY_LEAD >= CATCH_UP_ROOM * CATCH_UP_NS
        #: How long before the deadline the catch-up runs; 0: no catch-up (short ticks).
        self.catch_up_lead = CATCH_UP_NS if room else 0

    def early_at(self, deadline_ns: int) -> int:
        """When the early pass of the tick due at ``deadline_ns`` is due."""
        return deadline_ns - self._interval_ns // EARLY_LEAD

    def early_latest(self, deadline_ns: int) -> int:
        """The latest the early pass of the tick due at ``deadline_ns`` may start (half
        its lead before the deadline); the drain before it ends there too."""
        return deadline_ns - self._interval_ns // (2 * EARLY_LEAD)

    def catching_up(self) -> bool:
        """Whether a catch-up follows the early pass: there is an early part to extend,
        and the ticks are long enough (:data:`CATCH_UP_ROOM`)."""
        return self.early is not None and self.catch_up_lead > 0

    def run_early(self, deadline_ns: int) -> None:
        """Shortly before the tick due at ``deadline_ns``: the early pass over the oldest
        pending frames its budget admits."""
        # Woken late (a status, a step that ran long): less than half the lead left is
        # too little to start; the tick does it all.
        if time.monotonic_ns() <= self.early_latest(deadline_ns):
            self._pass(self.early_rows, deadline_ns, "the early pass")

    def run_ahead(self, deadline_ns: int) -> None:
        """At high rates, after a drain between ticks: a pass over the oldest pending
        frames its budget admits, so that the early pass and the tick are left the frames
        of the last few ms. Only over :data:`AHEAD_ROWS` or more, before the early pass is
        due, and while the part computed would stay within ``max_batch`` frames (the early
        pass, the catch-up and the ring may each add up to as many again; the tick then
        serves the newest ``max_batch``: :func:`dropped`)."""
        rows = len(self._pending)
        if not self._ahead or rows < AHEAD_ROWS:
            return
        if rows + (len(self.early.batch) if self.early else 0) > self._max_batch:
            return
        # Where the early pass is due (a long drain ran up to it), it takes these rows.
        if time.monotonic_ns() < self.early_at(deadline_ns):
            self._pass(self.ahead_rows, deadline_ns, "a pass ahead")

    def run_catch_up(self, deadline_ns: int) -> None:
        """After the early pass, shortly before the tick: the same for the frames pending
        since (:func:`catch_up`), as many as its budget admits."""
        # Counted where it computed the frames since: not after other weights or a raise.
        if self.early is not None and self._pass(self.catch_up_rows, deadline_ns,
                                                  "the catch-up pass"):
            self._counters.ticks_caught_up += self.early.P is not None

    def take(self) -> Early | None:
        """The tick's: the part the passes computed, none left for the next tick."""
        first, self.early = self.early, None
        return first

    def _pass(self, budget: RowBudget, deadline_ns: int, name: str) -> bool:
        """Take the oldest pending frames that ``budget`` admits (all, within it) into a
        pass (``name`` for the log): the first of the tick (no :attr:`early` yet) or one
        extending it. Whether one ran."""
        first, t0 = self.early, time.monotonic_ns()
        rows = budget.admit(len(self._pending))
        if not rows:
            return False
        (model, version), batch = self._serving(), self._pending.take(rows)
        try:
            self.early = (start(model, version, batch) if first is None
                          else catch_up(first, model, version, batch))
        except Exception:  # as in a tick: the tick tries again, and answers these frames
            self._counters.tick_errors += 1
            log.exception("the forward pass of %d frame(s) in %s failed", len(batch), name)
            self.early = failed(model, version, join(first, batch, 0))
        budget.ended(rows, t0, time.monotonic_ns(), deadline_ns)
        return True


def forward(model: Model, X: npt.NDArray[np.float32]) -> Probs:
    """Probabilities (n, c) float32 of readings ``X`` (n, d); NaN where a frame's readings
    overflow the pass (the encoder then refuses the row and the daemon drops the frame)."""
    with np.errstate(all="ignore"):  # extreme readings: caught when the pred is encoded
        return model.predict_proba(X).astype(np.float32, copy=False)


def start(model: Model, version: str, batch: Batch) -> Early:
    """The early pass over ``batch`` (as :meth:`PendingFrames.take` gave it).

    Raises what the forward pass raises; :func:`failed` then keeps the frames.
    """
    P = forward(model, batch.X)
    rows = _rows(batch, P)
    return Early(batch, P, None if rows is None else (rows,), model, version)


def catch_up(first: Early, model: Model, version: str, batch: Batch) -> Early:
    """``first`` and the pass over ``batch`` (the frames pending since it), as one Early.

    Where ``first`` is not the weights serving now (or failed), nothing is computed: the
    tick computes all of them again. Raises what the forward pass raises;
    :func:`failed` of :func:`join` then keeps both parts' frames.
    """
    frames = join(first, batch, 0)
    if first.P is None or not reused(first, model, version):
        return failed(model, version, frames)
    P = forward(model, batch.X)
    more = _rows(batch, P)
    rows = None if first.rows is None or more is None else (*first.rows, more)
    return Early(frames, np.concatenate([first.P, P]), rows, model, version)


def _rows(batch: Batch, P: Probs) -> wire.PredRows | None:
    """``batch``'s rows of the ``pred`` with probabilities ``P``; None where a row fails
    the encoder's checks (a NaN out of the model: the tick's general way drops it)."""
    try:
        return wire.pred_rows(batch.seq, P, batch.t, batch.src)
    except WireError:
        return None


def failed(model: Model, version: str, batch: Batch) -> Early:
    """The early part of a pass that raised: kept, so that the tick still answers it."""
    return Early(batch, None, None, model, version)


def reused(early: Early, model: Model, version: str) -> bool:
    """Whether the tick takes ``early``'s probabilities: the pass succeeded, and the
    weights serving now are the ones it used."""
    return early.P is not None and not weights_changed(early, model, version)


def weights_changed(early: Early, model: Model, version: str) -> bool:
    """Whether the weights serving now (``model``, ``version``) are not the ones
    ``early``'s passes were started with: a reload or an online step since."""
    return early.model is not model or early.version != version


def dropped(early: Early | None, late: Batch, max_batch: int) -> int:
    """How many of ``early``'s frames the batch cap drops at the tick (the oldest)."""
    return 0 if early is None else max(0, len(early.batch) + len(late) - max_batch)


def fast_pred(
    early: Early | None, late: Batch, drop: int, model: Model, version: str, tick: int,
    wall: float,
) -> bytes | None:
    """The tick's ``pred`` from ``early``'s packed rows and ``late``'s (the frames pending
    at the tick, computed and packed now); None where the general way must serve: no
    early rows, other weights since, ``drop`` (:func:`dropped`) early frames dropped for
    the cap, a row failing a check."""
    if early is None or early.rows is None or drop or not reused(early, model, version):
        return None
    parts = list(early.rows)
    if len(late):
        more = _rows(late, forward(model, late.X))
        if more is None:
            return None
        parts.append(more)
    return wire.encode_pred_rows(tick, wall, version, parts)


def join(early: Early | None, late: Batch, drop: int) -> Batch:
    """A tick's frames, oldest first: the early ones but the ``drop`` oldest
    (:func:`dropped`: the newest ``max_batch`` are kept), then ``late`` (pending at the
    tick)."""
    if early is None:
        return late
    first = early.batch
    return Batch(
        np.concatenate([first.X[drop:], late.X]), first.seq[drop:] + late.seq,
        first.t[drop:] + late.t, first.src[drop:] + late.src,
        np.concatenate([first.arrival_ns[drop:], late.arrival_ns]),
    )


def probabilities(
    early: Early | None, frames: Batch, drop: int, model: Model, version: str
) -> Probs:
    """The probabilities (len(frames), c) of :func:`join`'s ``frames`` (which left out
    ``drop`` early frames): the early pass's where it is still valid (same model and
    version), the rest computed now."""
    P_early = early.P if early is not None and reused(early, model, version) else None
    if P_early is None:
        return forward(model, frames.X)  # no early pass, or other weights since then
    P_first = P_early[drop:]
    if len(P_first) == len(frames):
        return P_first
    return np.concatenate([P_first, forward(model, frames.X[len(P_first):])])
