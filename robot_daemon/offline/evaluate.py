"""Judging a model by numbers engineers trust, beside a logistic-regression baseline.

``robot-daemon eval MODEL BAG...`` scores the model's thresholded predictions on the
labelled frames of the bags: per class precision, recall, F1, average precision and
support; micro and macro F1, hamming loss and subset accuracy. Beside it, a multi-label
logistic regression (:class:`~robot_daemon.offline.logreg.LogisticRegression`) trained on the
same data as the model (its recorded training bags, or ``--baseline-train``), with its
thresholds tuned the same way on the same kind of validation split, so that the two
columns differ only in the model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from robot_daemon.model import Model
from robot_daemon.offline import metrics
from robot_daemon.offline.logreg import LogisticRegression
from robot_daemon.offline.train import Dataset, split_tail


@dataclass(frozen=True, eq=False)
class Evaluation:
    """Scores of thresholded predictions against labels; per-class arrays have shape (c,)."""

    name: str
    class_names: list[str]
    n: int
    precision: npt.NDArray[np.float64]
    recall: npt.NDArray[np.float64]
    f1: npt.NDArray[np.float64]
    average_precision: npt.NDArray[np.float64]
    support: npt.NDArray[np.int64]
    micro_f1: float
    macro_f1: float
    hamming_loss: float
    subset_accuracy: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": self.n,
            "per_class": {
                name: {
                    "precision": float(self.precision[j]),
                    "recall": float(self.recall[j]),
                    "f1": float(self.f1[j]),
                    "average_precision": float(self.average_precision[j]),
                    "support": int(self.support[j]),
                }
                for j, name in enumerate(self.class_names)
            },
            "micro_f1": self.micro_f1,
            "macro_f1": self.macro_f1,
            "hamming_loss": self.hamming_loss,
            "subset_accuracy": self.subset_accuracy,
        }


def score(
    name: str,
    class_names: Sequence[str],
    Y_true: npt.ArrayLike,
    P: npt.ArrayLike,
    thresholds: npt.ArrayLike,
) -> Evaluation:
    """Evaluate probabilities P (n, c) thresholded per class against labels Y_true (n, c)."""
    T = np.asarray(Y_true).astype(bool)
    probs = np.asarray(P, dtype=np.float64)
    decided = probs >= np.asarray(thresholds, dtype=np.float64)
    per_class = metrics.per_class_scores(T, decided)
    return Evaluation(
        name=name,
        class_names=list(class_names),
        n=len(T),
        precision=per_class.precision,
        recall=per_class.recall,
        f1=per_class.f1,
        average_precision=metrics.average_precision(T, probs),
        support=per_class.support,
        micro_f1=metrics.micro_f1(T, decided),
        macro_f1=per_class.macro_f1,
        hamming_loss=metrics.hamming_loss(T, decided),
        subset_accuracy=metrics.subset_accuracy(T, decided),
    )


def evaluate_model(model: Model, data: Dataset) -> Evaluation:
    """Score ``model`` (its own thresholds) on every labelled frame of ``data``."""
    return score("mlp", data.class_names, data.Y, model.predict_proba(data.X), model.thresholds)


@dataclass
class Baseline:
    """A fitted logistic regression with per-class thresholds tuned on a validation tail."""

    regression: LogisticRegression
    thresholds: npt.NDArray[np.float64]

    def evaluate(self, data: Dataset) -> Evaluation:
        P = self.regression.predict_proba(data.X)
        return score("logistic_regression", data.class_names, data.Y, P, self.thresholds)


def fit_baseline(data: Dataset, *, val_fraction: float = 0.2, seed: int = 0) -> Baseline:
    """Logistic regression on the training rows of ``data``, thresholds on its tail rows.

    The split is :func:`~robot_daemon.offline.train.split_tail`, as for the MLP.
    """
    train_rows, val_rows = split_tail(data.bag, val_fraction)
    X, Y = data.subset(train_rows)
    regression = LogisticRegression(X.shape[1], Y.shape[1], rng=seed).fit(X, Y)
    if len(val_rows):
        X_val, Y_val = data.subset(val_rows)
        thresholds = metrics.tune_thresholds(Y_val, regression.predict_proba(X_val))
    else:
        thresholds = np.full(Y.shape[1], 0.5)
    return Baseline(regression, thresholds)


def baseline_sources(model: Model, explicit: Sequence[str] | None) -> list[Path] | str:
    """The bags to train the baseline on, or a sentence saying why there are none."""
    if explicit:
        return [Path(p) for p in explicit]
    recorded = model.training.get("data")
    if not isinstance(recorded, list) or not recorded:
        return "the model file records no training bags; pass --baseline-train BAG..."
    paths = [Path(str(p)) for p in recorded]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        return (
            f"the model's training bags are not here ({', '.join(missing)});"
            " pass --baseline-train BAG..."
        )
    return paths


def as_json(
    evaluations: Sequence[Evaluation], *, model: str, baseline_note: str | None
) -> dict[str, Any]:
    """``eval --json``'s object: ``model``, the model's identity
    (:func:`robot_daemon.model.identity`, what its ``pred`` messages carry), then one
    entry per evaluation under its name (:meth:`Evaluation.as_dict`) and
    ``baseline_note`` (why the baseline was skipped, or None)."""
    out: dict[str, Any] = {"model": model}
    out.update({e.name: e.as_dict() for e in evaluations})
    out["baseline_note"] = baseline_note
    return out


def describe(evaluations: Sequence[Evaluation]) -> str:
    """The per-class table and the summary lines, one column group per evaluation."""
    first = evaluations[0]
    width = max(12, *(len(name) for name in first.class_names))
    head = f"{'class':<{width}} {'support':>7}"
    for e in evaluations:
        head += f" | {e.name[:19]:^19} {'':>5} {'':>5} {'':>5}"
    sub = f"{'':<{width}} {'':>7}" + " | {:>5} {:>5} {:>5} {:>5}".format(
        "P", "R", "F1", "AP") * len(evaluations)
    lines = [f"{first.n} labelled frames", head, sub]
    for j, name in enumerate(first.class_names):
        row = f"{name:<{width}} {int(first.support[j]):>7}"
        for e in evaluations:
            row += (f" | {e.precision[j]:>5.3f} {e.recall[j]:>5.3f} {e.f1[j]:>5.3f}"
                    f" {e.average_precision[j]:>5.3f}")
        lines.append(row)
    lines.append("")
    for label, attr in [("macro F1", "macro_f1"), ("micro F1", "micro_f1"),
                        ("hamming loss", "hamming_loss"), ("subset accuracy", "subset_accuracy")]:
        lines.append(f"{label:<16}" + "".join(
            f"  {e.name}: {getattr(e, attr):.4f}" for e in evaluations))
    return "\n".join(lines)
