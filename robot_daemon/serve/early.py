"""A tick's forward pass in two parts: the frames already waiting shortly before the
deadline, then the few that arrive after them.

Measured at 1,000 frames/s (20 frames per 20 ms tick): the forward pass of a tick took
about 150 us p50 inside the daemon, where back to back the same pass takes 35: after
20 ms asleep the caches and branch predictors belong to other work. So the daemon runs
the pass for the frames already pending ``interval / EARLY_LEAD`` before the deadline
(:func:`start`), and the tick runs it only for the frames of that last stretch (about
one at 1,000 frames/s), on warm caches (:func:`join`, :func:`probabilities`). Nothing is
computed twice: the CPU per frame stays what it was, and the time from the deadline to
the ``pred`` shrinks.

* **One set of weights per tick**: the early probabilities are kept with the model and
  version that computed them. If either changed before the tick (a reload swapped in, an
  online step), :func:`probabilities` computes them again, from readings copied out of the ring
  for that purpose.
* **The batch cap holds over both parts**: a tick serves the newest ``max_batch`` frames
  and the oldest early ones beyond that are dropped, as the ring drops them.
* **Never a late tick**: the early pass runs only when its expected time, twice over,
  ends before the deadline (:class:`PassCost`); otherwise the tick does it all.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from robot_daemon.model import Model
from robot_daemon.serve.batch import Batch

#: The early pass runs interval / EARLY_LEAD before the deadline (1.25 ms at 20 ms ticks):
#: late enough that most of a tick's frames are in, early enough that 20 frames' pass on
#: cold caches (0.15 ms, 1 ms on a busy VM) ends before the deadline.
EARLY_LEAD: Final = 16
#: Before any pass was timed, the expected cost of one row (a cold pass at h = 64 costs
#: 5-10 us a row for small batches): a 60-row batch still fits 1.25 ms twice over.
PRIOR_NS_PER_ROW: Final = 10_000.0
#: How fast the expected cost forgets a slow pass, per tick: a hiccup of the VM stops
#: early passes for a few dozen ticks (under a second), not for good.
COST_DECAY: Final = 0.8

Probs = npt.NDArray[np.float32]


@dataclass(frozen=True, eq=False)
class Early:
    """The forward pass of a tick's first frames, done before its deadline.

    batch : the frames, oldest first, their readings copied out of the ring.
    P : ndarray (len(batch), c) float32, or None if the pass raised (the tick retries).
    model, version : the weights that computed P.
    ns : how long the pass took (wall time).
    """

    batch: Batch
    P: Probs | None
    model: Model
    version: str
    ns: int = 0


class PassCost:
    """The expected time of a forward pass: ns per row, the slowest of recent ticks.

    Per tick (both parts together), not per pass: the tick's own pass of one or two rows
    costs its fixed overhead, which would make a per-row figure absurd. A slow tick counts
    at once; it is forgotten by :data:`COST_DECAY` per tick.
    """

    def __init__(self) -> None:
        self.ns_per_row = PRIOR_NS_PER_ROW

    def fits(self, rows: int, time_left_ns: int) -> bool:
        """Whether a pass over ``rows`` rows would end before ``time_left_ns``, twice over."""
        return 2 * rows * self.ns_per_row < time_left_ns

    def add(self, rows: int, ns: int) -> None:
        """One tick's forward passes: ``rows`` rows in ``ns`` ns of wall time."""
        if rows:
            self.ns_per_row = max(ns / rows, COST_DECAY * self.ns_per_row)


def forward(model: Model, X: npt.NDArray[np.float32]) -> Probs:
    """Probabilities (n, c) float32 of readings ``X`` (n, d); NaN where a frame's readings
    overflow the pass (the encoder then refuses the pred and the daemon drops the frame)."""
    with np.errstate(all="ignore"):  # extreme readings: caught when the pred is encoded
        return model.predict_proba(X).astype(np.float32, copy=False)


def start(model: Model, version: str, batch: Batch) -> Early:
    """The early pass over ``batch`` (a view into the ring: its readings are copied).

    Raises what the forward pass raises; :func:`failed` then keeps the frames.
    """
    t0 = time.monotonic_ns()
    kept = _copied(batch)
    P = forward(model, kept.X)
    return Early(kept, P, model, version, time.monotonic_ns() - t0)


def failed(model: Model, version: str, batch: Batch) -> Early:
    """The early part of a pass that raised: kept, so that the tick still answers it."""
    return Early(_copied(batch), None, model, version)


def join(early: Early | None, late: Batch, max_batch: int) -> tuple[Batch, int]:
    """A tick's frames, oldest first: the early ones, then ``late`` (pending at the tick),
    the newest ``max_batch`` of them; and how many early ones were dropped for that."""
    if early is None:
        return late, 0
    first = early.batch
    drop = max(0, len(first) + len(late) - max_batch)
    return Batch(
        np.concatenate([first.X[drop:], late.X]), first.seq[drop:] + late.seq,
        first.t[drop:] + late.t, first.src[drop:] + late.src,
        np.concatenate([first.arrival_ns[drop:], late.arrival_ns]),
    ), drop


def probabilities(
    early: Early | None, frames: Batch, dropped: int, model: Model, version: str
) -> Probs:
    """The probabilities (len(frames), c) of :func:`join`'s ``frames``: the early pass's
    where it is still valid (same model and version), the rest computed now."""
    P_early = early.P if early is not None and reused(early, model, version) else None
    if P_early is None:
        return forward(model, frames.X)  # no early pass, or other weights since then
    P_first = P_early[dropped:]
    if len(P_first) == len(frames):
        return P_first
    return np.concatenate([P_first, forward(model, frames.X[len(P_first):])])


def reused(early: Early, model: Model, version: str) -> bool:
    """Whether the tick takes ``early``'s probabilities: the pass succeeded, and the
    weights serving now are the ones it used."""
    return early.P is not None and early.model is model and early.version == version


def _copied(batch: Batch) -> Batch:
    return Batch(batch.X.copy(), batch.seq, batch.t, batch.src, batch.arrival_ns)
