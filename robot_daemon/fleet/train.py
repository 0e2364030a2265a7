"""``train`` over many partitions: decoded on the workers, streamed through SGD in the driver.

The driver holds the network and at most a few decoded partitions, never the archive: a
first pass sums the input normalisation, each epoch streams the partitions through the
reference SGD step in batches of ``batch_size`` (the very batches of one-process training
without ``--shuffle``), and a last pass counts what the thresholds are tuned from.

Design: docs/architecture.md, "Training on many partitions".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from robot_daemon import __version__
from robot_daemon.errors import RobotDaemonError
from robot_daemon.fleet.cluster import Progress, Runner
from robot_daemon.fleet.decode import load_labels, names_of
from robot_daemon.fleet.sources import Source
from robot_daemon.model import Model
from robot_daemon.moments import Moments, normalisation
from robot_daemon.nn import MLP, log_loss
from robot_daemon.offline import metrics
from robot_daemon.offline.finetune import Init
from robot_daemon.offline.train import (
    EpochLog,
    EpochReport,
    TrainConfig,
    build_date,
    lineage,
    split_tail,
)


@dataclass(eq=False)
class Part:
    """One partition split for training: X (n, d) float32, Y (n, c) uint8, head and tail."""

    source: str
    X_train: NDArray[np.float32]
    Y_train: NDArray[np.uint8]
    X_val: NDArray[np.float32]
    Y_val: NDArray[np.uint8]
    d: int | None
    c: int | None
    rejected: int = 0
    warning: str | None = None
    skipped: str | None = None


def load_part(part: Source, val_fraction: float) -> Part:
    """Decode a partition and split it into training head and validation tail (worker)."""
    read = load_labels(part)
    empty_x, empty_y = np.zeros((0, read.d or 0), np.float32), np.zeros((0, read.c or 0), np.uint8)
    if read.labels is None or read.labels.n == 0:
        return Part(part.path, empty_x, empty_y, empty_x, empty_y, read.d, read.c,
                    warning=read.warning, skipped=read.skipped or "no valid labelled frames")
    labels = read.labels
    train_rows, val_rows = split_tail(np.zeros(labels.n, dtype=np.int32), val_fraction)
    return Part(part.path, labels.X[train_rows], labels.Y[train_rows], labels.X[val_rows],
                labels.Y[val_rows], read.d, read.c, sum(labels.rejected.values()),
                read.warning)


@dataclass
class _Summary:
    """What the first pass needs of a partition: its training rows' moments and sizes."""

    source: str
    moments: Moments
    d: int | None
    c: int | None
    rejected: int
    warning: str | None
    skipped: str | None


def summarize_part(part: Source, val_fraction: float) -> _Summary:
    """The first pass over one partition (on a worker)."""
    loaded = load_part(part, val_fraction)
    X = loaded.X_train
    moments = Moments.of(X)
    return _Summary(loaded.source, moments, loaded.d, loaded.c, loaded.rejected,
                    loaded.warning, loaded.skipped)


@dataclass
class _Counts:
    """Per candidate threshold (k) and class (c): tp, fp, fn, int64 (k, c)."""

    tp: NDArray[np.int64]
    fp: NDArray[np.int64]
    fn: NDArray[np.int64]

    @classmethod
    def of(cls, Y: NDArray[np.uint8], P: NDArray[Any], candidates: NDArray[np.float64]) -> _Counts:
        T = Y.astype(bool)
        decided = P[None, :, :] >= candidates[:, None, None]  # (k, n, c)
        return cls((T & decided).sum(axis=1, dtype=np.int64),
                   (~T & decided).sum(axis=1, dtype=np.int64),
                   (T & ~decided).sum(axis=1, dtype=np.int64))

    def __add__(self, other: _Counts) -> _Counts:
        return _Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    def f1(self) -> NDArray[np.float64]:
        """(k, c): F1 per candidate and class, as metrics.per_class_scores computes it."""
        return np.stack([metrics.scores_from_counts(self.tp[k], self.fp[k], self.fn[k]).f1
                         for k in range(len(self.tp))])


def train(
    runner: Runner,
    parts: Sequence[Source],
    config: TrainConfig,
    sources: Sequence[str],
    report: Callable[[EpochReport], None] | None = None,
    progress: Progress | None = None,
    warn: Callable[[str], None] | None = None,
    init: Init | None = None,
) -> Model:
    """Train a model on the labelled frames of ``parts``, streaming them through SGD.

    ``report`` is called after every epoch, ``progress`` counts every partition of every
    pass (``len(parts) * (2 * epochs + 1)``, two more with ``init``), ``warn`` gets each
    cut or skipped source once. ``init`` as for one-process training
    (:func:`robot_daemon.offline.train.train`): epoch 0 is the starting model.
    """
    config.check()
    if init is not None:
        init.check_architecture(config.h, config.dtype)
    first = _first_pass(runner, parts, config, progress)
    for warning in first.warnings:
        if warn is not None:
            warn(warning)
    if first.moments.n == 0 or first.d is None or first.c is None:
        raise RobotDaemonError("no training examples in any source")
    if init is not None:
        init.check_data(first.d, first.c, first.class_names)
    chosen = None if init is None else init.normalisation()
    mean, scale = normalisation(first.moments) if chosen is None else chosen
    dtype = np.dtype(config.dtype)
    if init is None:
        mlp = MLP(first.d, config.h, first.c, rng=config.seed, dtype=dtype)
    else:
        mlp = init.network(config.seed)
    order_rng = np.random.default_rng(config.seed)
    # From capture bags only: the --init model's thresholds.
    kept = None if init is None else init.kept_thresholds()
    log = EpochLog(config, report)
    judged = _Judged(np.full(first.c, 0.5), {"n": 0})
    if init is not None:
        # Epoch 0, the starting model: what the fine-tune has to beat.
        judged = _tune(runner, parts, mlp, mean, scale, config, first.class_names, progress,
                       train_loss=True, kept=kept)
        log.close(EpochReport(epoch=0, epochs=config.epochs, train_loss=judged.train_loss,
                              val_macro_f1=judged.f1_at_half, examples_per_s=0.0,
                              val_macro_f1_tuned=judged.validation.get("macro_f1")),
                  mlp, (judged.thresholds, judged.validation))
    for epoch in range(1, config.epochs + 1):
        order = order_rng.permutation(len(parts)) if config.shuffle else np.arange(len(parts))
        done = _epoch(runner, [parts[i] for i in order], mlp, mean, scale, config, epoch,
                      progress)
        # Judged as one-process training judges an epoch: validation macro-F1 at
        # thresholds tuned on the validation tails (one more pass over them).
        judged = _tune(runner, parts, mlp, mean, scale, config, first.class_names, progress,
                       kept=kept)
        if log.close(replace(done, val_macro_f1_tuned=judged.validation.get("macro_f1")),
                     mlp, (judged.thresholds, judged.validation)):
            break
    thresholds, validation = judged.thresholds, judged.validation
    best = log.best
    if config.keep_best and best.epoch is not None:
        best.restore(mlp)
        thresholds, validation = best.extra
    if init is not None and not validation["n"]:
        thresholds = init.thresholds()  # nothing to tune new ones on
    return Model(
        mlp=mlp, mean=mean, scale=scale,
        feature_names=first.feature_names, class_names=first.class_names,
        thresholds=thresholds,
        training={
            "data": list(sources), "n_train": first.moments.n, "rejected_labels": first.rejected,
            "config": asdict(config), "history": log.history, "validation": validation,
            "epochs_run": log.run,
            "best_epoch": best.epoch if config.keep_best else None,
            "fleet": {"partitions": len(parts), "workers": runner.workers,
                      "sgd": "streamed in the driver"},
            **lineage(init),
            "date": build_date(), "robot_daemon": __version__,
        },
    )


@dataclass
class _First:
    moments: Moments
    d: int | None
    c: int | None
    rejected: int
    warnings: list[str]
    feature_names: list[str]
    class_names: list[str]


def _first_pass(
    runner: Runner, parts: Sequence[Source], config: TrainConfig, progress: Progress | None,
) -> _First:
    moments = Moments.empty()
    d = c = None
    rejected = 0
    warnings: list[str] = []
    for summary in runner.map_ordered(summarize_part, parts, val_fraction=config.val_fraction):
        if progress is not None:
            progress.add(summary.moments.n)
        if summary.warning:
            warnings.append(summary.warning)
        if summary.skipped is not None:
            warnings.append(f"skipped {summary.source}: {summary.skipped}")
            continue
        if summary.moments.n == 0:
            continue
        if d is not None and (summary.d, summary.c) != (d, c):
            raise RobotDaemonError(f"{summary.source} has d={summary.d}, c={summary.c}; the"
                                   f" sources before it d={d}, c={c}")
        d, c = summary.d, summary.c
        rejected += summary.rejected
        moments = moments.merge(summary.moments)
    names = names_of(parts, d, c)
    return _First(moments, d, c, rejected, warnings, *names)


def _epoch(
    runner: Runner, parts: Sequence[Source], mlp: MLP, mean: NDArray[np.float64],
    scale: NDArray[np.float64], config: TrainConfig, epoch: int, progress: Progress | None,
) -> EpochReport:
    dtype = np.dtype(config.dtype)
    start = time.perf_counter()
    carry_X = np.zeros((0, len(mean)), dtype)
    carry_Y = np.zeros((0, 0), dtype)
    loss_sum, seen = 0.0, 0
    val = None
    for part in runner.map_ordered(load_part, parts, val_fraction=config.val_fraction):
        if progress is not None:
            progress.add(len(part.X_train) + len(part.X_val))
        if part.skipped is not None or len(part.X_train) + len(part.X_val) == 0:
            continue
        if len(part.X_val):
            P = mlp.predict_proba(((part.X_val - mean) / scale).astype(dtype))
            counts = _Counts.of(part.Y_val, P, np.array([0.5]))
            val = counts if val is None else val + counts
        X = ((part.X_train - mean) / scale).astype(dtype)
        Y = part.Y_train.astype(dtype)
        if len(carry_X):
            X, Y = np.concatenate([carry_X, X]), np.concatenate([carry_Y, Y])
        if config.shuffle:
            rows = mlp.rng.permutation(len(X)) if mlp.rng is not None else np.arange(len(X))
            X, Y = X[rows], Y[rows]
        whole = len(X) - len(X) % config.batch_size
        try:
            with np.errstate(over="raise", invalid="raise", divide="raise"):
                for b in range(0, whole, config.batch_size):
                    mlp.single_step_sgd(X[b:b + config.batch_size], Y[b:b + config.batch_size],
                                        lr=config.lr)
                if whole:
                    loss_sum += log_loss(Y[:whole], mlp.predict_proba(X[:whole])) * whole
                    seen += whole
        except FloatingPointError as exc:
            raise RobotDaemonError(
                f"training diverged in epoch {epoch} ({exc}); try a smaller --lr") from None
        carry_X, carry_Y = X[whole:], Y[whole:]
    if len(carry_X):  # the last, short batch, as the reference sgd ends an epoch
        mlp.single_step_sgd(carry_X, carry_Y, lr=config.lr)
        loss_sum += log_loss(carry_Y, mlp.predict_proba(carry_X)) * len(carry_X)
        seen += len(carry_X)
    elapsed = time.perf_counter() - start
    val_f1 = None if val is None else float(val.f1()[0].mean())
    return EpochReport(epoch=epoch, epochs=config.epochs, train_loss=loss_sum / max(seen, 1),
                       val_macro_f1=val_f1, examples_per_s=seen / max(elapsed, 1e-9))


@dataclass
class _Judged:
    """A pass over the validation tails: thresholds (c,) tuned on them, the validation
    summary, macro-F1 at thresholds 0.5 and, when asked, the training rows' mean loss."""

    thresholds: NDArray[np.float64]
    validation: dict[str, Any]
    f1_at_half: float | None = None
    train_loss: float = 0.0


def _tune(
    runner: Runner, parts: Sequence[Source], mlp: MLP, mean: NDArray[np.float64],
    scale: NDArray[np.float64], config: TrainConfig, class_names: list[str],
    progress: Progress | None, *, train_loss: bool = False,
    kept: NDArray[np.float64] | None = None,
) -> _Judged:
    """Thresholds tuned on the validation tails (or ``kept`` (c,), as given), and the
    validation summary at them; with ``train_loss``, also the loss of the training heads
    (epoch 0 of a fine-tune, which has no SGD pass to measure it on)."""
    candidates = metrics.threshold_candidates()
    if kept is not None:  # counted at exactly the kept thresholds too
        candidates = np.unique(np.concatenate([candidates, kept]))
    dtype = np.dtype(config.dtype)
    total: _Counts | None = None
    n_val = 0
    loss_sum, seen = 0.0, 0
    for part in runner.map_ordered(load_part, parts, val_fraction=config.val_fraction):
        if progress is not None:
            progress.add(len(part.X_train) + len(part.X_val))
        if part.skipped is not None:
            continue
        if train_loss and len(part.X_train):
            X = ((part.X_train - mean) / scale).astype(dtype)
            loss_sum += log_loss(part.Y_train.astype(dtype), mlp.predict_proba(X)) * len(X)
            seen += len(X)
        if len(part.X_val) == 0:
            continue
        P = mlp.predict_proba(((part.X_val - mean) / scale).astype(dtype))
        counts = _Counts.of(part.Y_val, P, candidates)
        total = counts if total is None else total + counts
        n_val += len(part.X_val)
    loss = loss_sum / max(seen, 1)
    if total is None:
        return _Judged(np.full(len(class_names), 0.5), {"n": 0}, train_loss=loss)
    f1 = total.f1()
    thresholds = metrics.pick_thresholds(candidates, f1) if kept is None else kept
    picked = [int(np.flatnonzero(candidates == t)[0]) for t in thresholds]
    chosen = f1[picked, np.arange(len(thresholds))]  # each class at its own threshold
    at_half = int(np.argmin(np.abs(candidates - 0.5)))
    return _Judged(thresholds, {"n": n_val, "macro_f1": float(chosen.mean()),
                                "f1": dict(zip(class_names, chosen.tolist(), strict=True))},
                   float(f1[at_half].mean()), loss)
