"""Online learning with guard rails: labelled frames fine-tune a serving model, safely.

An :class:`OnlineLearner` owns the serving :class:`~robot_daemon.model.Model`; the daemon
feeds it labelled frames and, between ticks, asks for one step once ``batch_size`` new
frames wait. A step screens the new batch (outliers, a non-finite or jumping loss), trains
on a batch drawn from a replay ring, rolls back on an overflow and, optionally, undoes a
step that makes a held-out loss worse; every rejection and rollback is counted.

Design: docs/architecture.md, "The guarded online step".
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt

from robot_daemon import nn, wire
from robot_daemon.errors import ConfigError
from robot_daemon.model import Model

_L = TypeVar("_L")  # a loss: one float, or one per frame

#: Why a step did not change the model (keys of ``OnlineLearner.rejected``).
REJECTIONS: Final = ("outlier", "non_finite_loss", "loss_jump", "rollback", "holdout_worse")


@dataclass(frozen=True)
class OnlineConfig:
    """Online-learning settings; batch size and learning rate default to the reference
    schedule's (docs/spec.md).

    batch_size, lr: one step per ``batch_size`` new labelled frames.
    buffer_max: recent frames kept in the replay ring that steps draw from.
    loss_jump: reject a new batch whose loss exceeds this multiple of the running
        average (after ``warmup_steps`` accepted batches: the average needs a few).
        Measured on simulated runs with the default model: natural batches reach 3.5-4x
        the mean loss when the scene turns hard, batches of flipped labels 15-23x.
    ema: weight of the newest batch in the running average of the loss.
    holdout_size: frames kept aside to judge each step (0: no holdout check).
    holdout_every: every n-th labelled frame goes to the holdout instead of training.
    holdout_tolerance: undo a step that raises the holdout loss above this multiple.
    max_abs_z: refuse a batch with a normalised reading beyond this many standard
        deviations (the simulator's readings stay within about 10).
    seed: the generator that draws replay batches.
    """

    batch_size: int = 100
    lr: float = 0.1
    buffer_max: int = 5_000
    loss_jump: float = 8.0
    ema: float = 0.1
    warmup_steps: int = 3
    holdout_size: int = 200
    holdout_every: int = 10
    holdout_tolerance: float = 1.10
    max_abs_z: float = 100.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch_size < 1 or self.buffer_max < self.batch_size:
            raise ConfigError("online: need 1 <= batch_size <= buffer_max")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ConfigError(f"online: lr must be a positive number, got {self.lr}")
        if not self.loss_jump > 1 or not self.holdout_tolerance >= 1 or not 0 < self.ema <= 1:
            raise ConfigError("online: need loss_jump > 1, holdout_tolerance >= 1, 0 < ema <= 1")
        if not self.max_abs_z > 0:
            raise ConfigError(f"online: max_abs_z must be positive, got {self.max_abs_z}")
        if self.holdout_size < 0 or self.holdout_every < 2 or self.warmup_steps < 0:
            raise ConfigError("online: need holdout_size >= 0, holdout_every >= 2, warmup >= 0")


@dataclass
class StepResult:
    """What one call of :meth:`OnlineLearner.step` did."""

    accepted: bool
    reason: str | None  # one of REJECTIONS when not accepted
    loss: float  # the new batch's loss before the step
    duration_ns: int = 0
    # The holdout's mean loss before and after the step, when the holdout judged it.
    holdout_before: float | None = None
    holdout_after: float | None = None

    def as_dict(self) -> dict[str, object]:
        """For ``status``: what the last step did."""
        return {"accepted": self.accepted, "reason": self.reason, "loss": self.loss,
                "holdout_before": self.holdout_before, "holdout_after": self.holdout_after}


class _Ring:
    """The newest ``size`` frames: X (size, d) and Y (size, c), both in ``dtype``.

    Rows are overwritten oldest first; ``order()`` gives their positions oldest first.
    """

    def __init__(self, size: int, d: int, c: int, dtype: np.dtype[Any]) -> None:
        self.X = np.empty((size, d), dtype=dtype)
        self.Y = np.empty((size, c), dtype=dtype)
        self.count = 0  # frames ever added; the newest sit before count % size

    def __len__(self) -> int:
        return min(self.count, len(self.X))

    def extend(self, X: npt.NDArray[Any], Y: npt.NDArray[Any]) -> npt.NDArray[np.intp] | slice:
        """Append X (n, d) and Y (n, c), oldest first; returns the positions written."""
        size = len(self.X)
        skipped = max(0, len(X) - size)  # more rows than fit: only the newest stay
        rows = _positions((self.count + skipped) % size, len(X) - skipped, size)
        self.X[rows] = X[skipped:]
        self.Y[rows] = Y[skipped:]
        self.count += len(X)
        return rows

    def oldest_first(self) -> tuple[npt.NDArray[Any], npt.NDArray[Any]]:
        """The frames held, oldest first: X (len(self), d), Y (len(self), c); views of
        the ring (valid until the next extend) unless it wrapped."""
        n, size = len(self), len(self.X)
        rows = _positions((self.count - n) % size, n, size)
        return self.X[rows], self.Y[rows]

    def clear(self) -> None:
        self.count = 0


def _positions(start: int, n: int, size: int) -> npt.NDArray[np.intp] | slice:
    """The ring positions ``start, start + 1, ...`` (``n`` of them) modulo ``size``: a
    slice when they do not wrap (copying through it is 4x faster, reading is a view)."""
    if start + n <= size:
        return slice(start, start + n)
    return (start + np.arange(n)) % size


class OnlineLearner:
    """Fine-tunes ``model`` in place from labelled frames, behind the guards above."""

    def __init__(self, model: Model, config: OnlineConfig | None = None) -> None:
        self.model = model
        self.config = config or OnlineConfig()
        self.version = 0
        self.steps = 0
        self.rejected: Counter[str] = Counter()
        self.labels_in = 0
        self.labels_not_trained = 0
        self.loss_average: float | None = None
        self.step_ns_average = 0.0
        self.last: StepResult | None = None
        self._rng = np.random.default_rng(self.config.seed)
        dtype = model.mlp.dtype
        d, c = model.d, model.c
        self._staged = _Ring(self.config.batch_size, d, c, dtype)
        self._ring = _Ring(self.config.buffer_max, d, c, dtype)
        self._holdout = _Ring(max(1, self.config.holdout_size), d, c, dtype)
        # Each holdout frame's loss under the current weights; NaN: not evaluated yet.
        self._holdout_losses = np.full(len(self._holdout.X), np.nan)

    # ---- feeding -------------------------------------------------------------------------

    def add(self, label: wire.Label) -> None:
        """Take one labelled frame (d and c already checked by the wire decoder).

        At most ``batch_size`` frames wait for a step: beyond that (the daemon had no
        time to train) the oldest waiting frame is dropped, so memory stays bounded.
        """
        self.labels_in += 1
        x, y = self._normalized(label.x[None], label.y[None])
        if self.config.holdout_size and self.labels_in % self.config.holdout_every == 0:
            if not float(np.abs(x).max()) <= self.config.max_abs_z:
                # A sensor fault the outlier screen keeps out of training: as a judge it
                # would weigh on every step's holdout loss for as long as it stays.
                self.labels_not_trained += 1
                return
            rows = self._holdout.extend(x, y)
            self._holdout_losses[rows] = np.nan  # a new frame: evaluated before the next step
            return
        if len(self._staged) == self.config.batch_size:
            self.labels_not_trained += 1  # the oldest waiting frame is overwritten
        self._staged.extend(x, y)

    def ready(self) -> bool:
        """Whether ``batch_size`` new frames wait for a step."""
        return len(self._staged) >= self.config.batch_size

    # ---- stepping ------------------------------------------------------------------------

    def step(self) -> StepResult:
        """Screen the waiting batch and take one guarded step (call when ready())."""
        start = time.monotonic_ns()
        X_new, Y_new = self._staged.oldest_first()  # nothing is staged during the step
        try:
            result = self._guarded_step(X_new, Y_new)
        finally:  # a batch that made the step fail is not tried again
            self._staged.clear()
        result.duration_ns = time.monotonic_ns() - start
        # Running estimate of a step's cost: the daemon only starts one if it fits.
        self.step_ns_average = 0.8 * self.step_ns_average + 0.2 * result.duration_ns
        if result.accepted:
            self.version += 1
            self.steps += 1
        else:
            self.rejected[result.reason or "unknown"] += 1
        self.last = result
        return result

    def _guarded_step(
        self, X_new: npt.NDArray[np.floating], Y_new: npt.NDArray[np.floating]
    ) -> StepResult:
        """X_new (batch, d) normalised readings, Y_new (batch, c) labels, model dtype."""
        # Compared as Python floats: NaN and inf fail, and no float32 cast can overflow.
        if not float(np.abs(X_new).max()) <= self.config.max_abs_z:
            return StepResult(False, "outlier", math.nan)
        loss = self._loss(X_new, Y_new)
        if not math.isfinite(loss):
            return StepResult(False, "non_finite_loss", loss)
        average = self.loss_average
        if (average is not None and self.steps >= self.config.warmup_steps
                and loss > self.config.loss_jump * max(average, 1e-3)):
            return StepResult(False, "loss_jump", loss)
        e = self.config.ema
        self.loss_average = loss if average is None else (1 - e) * average + e * loss
        self._ring.extend(X_new, Y_new)
        rows = self._rng.choice(len(self._ring), self.config.batch_size, replace=False)
        X, Y = self._ring.X[rows], self._ring.Y[rows]
        holdout_before = self._holdout_before()
        snapshot = self.model.mlp.copy_params()
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                self.model.mlp.single_step_sgd(X, Y, lr=self.config.lr)
        except FloatingPointError:
            self._restore(snapshot)
            return StepResult(False, "rollback", loss)
        if not (self._weights_finite() and self._logits_within(X)):
            # Weights that blew up, or whose logits on the very batch they learned from
            # leave the sigmoid's range (nn.logits_within): what such weights answer
            # depends on the CPU, and no later step would bring them back.
            self._restore(snapshot)
            return StepResult(False, "rollback", loss)
        if holdout_before is not None:
            losses = self._holdout_frame_losses(slice(0, len(self._holdout)))
            after = float(losses.mean())
            if not after <= self.config.holdout_tolerance * holdout_before:
                self._restore(snapshot)  # the kept losses are right again
                return StepResult(False, "holdout_worse", loss, 0, holdout_before, after)
            self._holdout_losses[: len(losses)] = losses
            return StepResult(True, None, loss, 0, holdout_before, after)
        return StepResult(True, None, loss)

    # ---- helpers -------------------------------------------------------------------------

    def _normalized(
        self, X_raw: npt.NDArray[np.float32], Y: npt.NDArray[Any]
    ) -> tuple[npt.NDArray[np.floating], npt.NDArray[np.floating]]:
        """Normalised readings (n, d) and float labels (n, c), in the model's dtype."""
        with np.errstate(over="ignore", invalid="ignore"):
            # A reading of 3e38 passes the wire's finiteness check but overflows once
            # normalised: keep the inf, the guards reject the batch.
            X = self.model.normalize(X_raw)
        return X, Y.astype(self.model.mlp.dtype)

    def _loss(self, X: npt.NDArray[np.floating], Y: npt.NDArray[np.floating]) -> float:
        """Mean loss of a screened batch: normalised readings X (n, d) that passed the
        outlier screen (so they are finite) and labels Y (n, c) from the wire (0 or 1),
        so the finiteness checks are skipped; inf if the pass overflows."""
        loss = self._scored(X, Y, nn.log_loss, screened=True)
        return math.inf if loss is None else loss

    def _row_losses(self, X: npt.NDArray[np.floating],
                    Y: npt.NDArray[np.floating]) -> npt.NDArray[np.float64]:
        """Each frame's loss (n,), all inf when a reading is not finite or the pass fails,
        inf for a frame whose logits overflowed (its probabilities are NaN: nn.sigmoid)."""
        losses = self._scored(X, Y, nn.log_loss_rows)
        if losses is None:
            return np.full(len(X), math.inf)
        losses[np.isnan(losses)] = math.inf  # the worst loss, not one that fails comparisons
        return losses

    def _scored(self, X: npt.NDArray[np.floating], Y: npt.NDArray[np.floating],
                loss: Callable[[npt.NDArray[np.floating], npt.NDArray[np.floating]], _L],
                screened: bool = False) -> _L | None:
        """``loss(Y, P)`` of the model's P for X, with overflow raising; None when a
        reading or label is not finite (checked unless ``screened``) or the pass
        overflows (the caller's inf)."""
        if not screened and not (np.isfinite(X).all() and np.isfinite(Y).all()):
            return None
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                return loss(Y, self.model.mlp.predict_proba(X))
        except FloatingPointError:
            return None

    def _holdout_before(self) -> float | None:
        """The holdout's mean loss under the current weights; None while it is too small."""
        n = len(self._holdout)
        if n < max(1, self.config.holdout_size // 2):
            return None  # too few frames yet for a judgement worth its noise
        kept = self._holdout_losses[:n]
        fresh = np.flatnonzero(np.isnan(kept))  # frames that came since the last step
        if len(fresh):
            kept[fresh] = self._holdout_frame_losses(fresh)
        return float(kept.mean())

    def _holdout_frame_losses(
        self, rows: npt.NDArray[np.intp] | slice
    ) -> npt.NDArray[np.float64]:
        return self._row_losses(self._holdout.X[rows], self._holdout.Y[rows])

    def _restore(self, snapshot: list[npt.NDArray[np.floating]]) -> None:
        """Undo a bad step: the weights from before it (``MLP.copy_params``)."""
        self.model.mlp.set_params(snapshot)
        self.model.mlp.clear_caches()  # a step that failed half-way left them behind

    def _logits_within(self, X: npt.NDArray[np.floating]) -> bool:
        """Whether the model's logits on normalised readings X (n, d) are all finite and
        within the sigmoid's range."""
        with np.errstate(all="ignore"):  # an overflow is the answer, not an error
            return nn.logits_within(self.model.mlp.logits(X))

    def _weights_finite(self) -> bool:
        # A sum is finite only if every term is (or the weights are near the float's
        # range, which is a blow-up too): one pass, no boolean array per parameter.
        with np.errstate(over="ignore", invalid="ignore"):  # inf + -inf: NaN, no warning
            return all(math.isfinite(float(lin.W.sum())) and math.isfinite(float(lin.b.sum()))
                       for lin in self.model.mlp.linears)

    def counters(self) -> dict[str, object]:
        """The learner's counters and gauges, for the daemon's ``status`` message."""
        return {
            "online_version": self.version,
            "online_steps": self.steps,
            "online_rejected": {r: self.rejected.get(r, 0) for r in REJECTIONS},
            "labels_in": self.labels_in,
            "labels_not_trained": self.labels_not_trained,
            "labels_waiting": len(self._staged),
            "replay_size": len(self._ring),
            "holdout_size": len(self._holdout) if self.config.holdout_size else 0,
            "online_loss_avg": self.loss_average,
            "online_step_ms_avg": self.step_ns_average / 1e6,
            "online_last_step": None if self.last is None else self.last.as_dict(),
        }
