"""Multi-label classification metrics: per-class precision, recall, F1 and average
precision; macro and micro F1, hamming loss, subset accuracy; threshold tuning.

Written by hand (scikit-learn is not a dependency) and checked against hand-computed
cases in ``tests/offline/test_metrics.py``. A ratio with a zero denominator is 0, as in
scikit-learn's ``zero_division=0``: a class that is never predicted has precision 0, a
class that never occurs has recall 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot_daemon.errors import ShapeError


@dataclass(frozen=True, slots=True, eq=False)
class ClassScores:
    """Per-class scores; every array has shape (c,).

    Attributes:
        precision, recall, f1: float64 in [0, 1].
        support: int64, the number of true positives plus false negatives (true labels).
    """

    precision: NDArray[np.float64]
    recall: NDArray[np.float64]
    f1: NDArray[np.float64]
    support: NDArray[np.int64]

    @property
    def macro_f1(self) -> float:
        """The unweighted mean of the per-class F1 scores."""
        return float(self.f1.mean())


def _as_bool_pair(Y_true: ArrayLike, Y_pred: ArrayLike) -> tuple[NDArray[np.bool_], ...]:
    T = np.asarray(Y_true)
    P = np.asarray(Y_pred)
    if T.ndim != 2 or T.shape != P.shape:
        raise ShapeError(f"Y_true and Y_pred must both be (n, c), got {T.shape} and {P.shape}")
    for name, A in (("Y_true", T), ("Y_pred", P)):
        if A.dtype != np.bool_ and not np.isin(A, (0, 1)).all():
            raise ShapeError(f"{name} must hold booleans or 0/1 values")
    return T.astype(bool, copy=False), P.astype(bool, copy=False)


def _ratio(num: NDArray[np.int64], den: NDArray[np.int64]) -> NDArray[np.float64]:
    out = np.zeros(num.shape, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def per_class_scores(Y_true: ArrayLike, Y_pred: ArrayLike) -> ClassScores:
    """Precision, recall and F1 of each class.

    Args:
        Y_true: true labels, shape (n, c), bool or 0/1.
        Y_pred: predicted labels, shape (n, c), bool or 0/1 (thresholded probabilities).

    Raises:
        ShapeError: shapes differ or are not 2-D, or values are not 0/1.
    """
    T, P = _as_bool_pair(Y_true, Y_pred)
    tp = (T & P).sum(axis=0, dtype=np.int64)
    fp = (~T & P).sum(axis=0, dtype=np.int64)
    fn = (T & ~P).sum(axis=0, dtype=np.int64)
    return scores_from_counts(tp, fp, fn)


def scores_from_counts(
    tp: NDArray[np.int64], fp: NDArray[np.int64], fn: NDArray[np.int64]
) -> ClassScores:
    """Per-class scores from the counts of true positives, false positives and false
    negatives, each (c,) int64: what :func:`per_class_scores` computes, so that counts
    summed over parts of the data give the scores of the whole."""
    return ClassScores(
        precision=_ratio(tp, tp + fp),
        recall=_ratio(tp, tp + fn),
        # 2PR/(P+R) written with counts: no division by a zero precision or recall.
        f1=_ratio(2 * tp, 2 * tp + fp + fn),
        support=tp + fn,
    )


def macro_f1(Y_true: ArrayLike, Y_pred: ArrayLike) -> float:
    """The mean over classes of the per-class F1; see :func:`per_class_scores`."""
    return per_class_scores(Y_true, Y_pred).macro_f1


def tune_thresholds(
    Y_true: ArrayLike, P: ArrayLike, grid: ArrayLike | None = None
) -> NDArray[np.float64]:
    """Per-class decision thresholds that maximise F1 on (training) data.

    Args:
        Y_true: true labels, shape (n, c), bool or 0/1.
        P: predicted probabilities, shape (n, c).
        grid: candidate thresholds, shape (k,); default 0.05, 0.10, ..., 0.95.

    Returns:
        Thresholds, shape (c,), float64; ties go to the threshold nearest 0.5.
    """
    T = np.asarray(Y_true).astype(bool)
    probs = np.asarray(P, dtype=np.float64)
    if T.ndim != 2 or T.shape != probs.shape:
        raise ShapeError(f"Y_true and P must both be (n, c), got {T.shape} and {probs.shape}")
    candidates = threshold_candidates(grid)
    f1 = np.stack([per_class_scores(T, probs >= th).f1 for th in candidates])  # (k, c)
    return pick_thresholds(candidates, f1)


def threshold_candidates(grid: ArrayLike | None = None) -> NDArray[np.float64]:
    """The thresholds :func:`tune_thresholds` tries, (k,), nearest 0.5 first."""
    candidates = np.arange(1, 20) / 20 if grid is None else np.asarray(grid, dtype=np.float64)
    return np.asarray(candidates[np.argsort(np.abs(candidates - 0.5), kind="stable")],
                      dtype=np.float64)


def pick_thresholds(
    candidates: NDArray[np.float64], f1: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Per class, the candidate (k,) with the highest F1 (k, c); ties to the first."""
    best = np.argmax(f1, axis=0)  # the first maximum: the tie nearest 0.5
    return np.asarray(candidates[best], dtype=np.float64)


def micro_f1(Y_true: ArrayLike, Y_pred: ArrayLike) -> float:
    """F1 of all (example, class) decisions pooled: ``2 TP / (2 TP + FP + FN)``."""
    T, P = _as_bool_pair(Y_true, Y_pred)
    tp = int((T & P).sum())
    errors = int((T ^ P).sum())
    return 2 * tp / (2 * tp + errors) if tp + errors else 0.0


def hamming_loss(Y_true: ArrayLike, Y_pred: ArrayLike) -> float:
    """The fraction of (example, class) decisions that are wrong."""
    T, P = _as_bool_pair(Y_true, Y_pred)
    return float((T ^ P).mean()) if T.size else 0.0


def subset_accuracy(Y_true: ArrayLike, Y_pred: ArrayLike) -> float:
    """The fraction of examples whose whole label set is predicted exactly."""
    T, P = _as_bool_pair(Y_true, Y_pred)
    return float((T == P).all(axis=1).mean()) if len(T) else 0.0


def average_precision(Y_true: ArrayLike, P: ArrayLike) -> NDArray[np.float64]:
    """Per-class average precision of scores ``P`` (n, c) against labels ``Y_true`` (n, c).

    ``AP = sum_k (R_k - R_{k-1}) P_k`` over the distinct scores taken as thresholds from
    the highest down (scikit-learn's definition, no interpolation); tied scores form one
    threshold. A class with no positive example has AP 0. Returns float64 (c,).
    """
    T = np.asarray(Y_true).astype(bool)
    scores = np.asarray(P, dtype=np.float64)
    if T.ndim != 2 or T.shape != scores.shape:
        raise ShapeError(f"Y_true and P must both be (n, c), got {T.shape} and {scores.shape}")
    return np.array([_class_ap(T[:, j], scores[:, j]) for j in range(T.shape[1])])


def _class_ap(truth: NDArray[np.bool_], scores: NDArray[np.float64]) -> float:
    return ap_of_ranked(RankedScores.of(truth, scores))


@dataclass(frozen=True, slots=True, eq=False)
class RankedScores:
    """One class's examples ranked: every score, highest first, beside its label.

    score : (n,) float64, non-increasing; truth : (n,) bool.

    Average precision depends on the examples only through the ranking, and the rankings
    of parts of the data merge (:meth:`concat`) into the ranking of the whole; the order
    among equal scores does not matter, since they form one threshold.
    """

    score: NDArray[np.float64]
    truth: NDArray[np.bool_]

    @classmethod
    def of(cls, truth: NDArray[np.bool_], scores: NDArray[np.float64]) -> RankedScores:
        """The ranking of labels ``truth`` (n,) bool by ``scores`` (n,) float64."""
        order = np.argsort(-scores)
        return cls(scores[order], truth[order])

    @classmethod
    def concat(cls, parts: Sequence[RankedScores]) -> RankedScores:
        """The ranking of all the parts' examples together, in one sort."""
        score = np.concatenate([p.score for p in parts])
        order = np.argsort(-score)
        return cls(score[order], np.concatenate([p.truth for p in parts])[order])

    def __len__(self) -> int:
        return len(self.score)


def ap_of_ranked(ranked: RankedScores) -> float:
    """Average precision of one class from its :class:`RankedScores`; see
    :func:`average_precision`."""
    s, t = ranked.score, ranked.truth
    positives = int(t.sum())
    if positives == 0:
        return 0.0
    tp = np.cumsum(t)
    fp = np.cumsum(~t)
    # The last position of each run of equal scores: one threshold per distinct score.
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True))
    precision = tp[last] / (tp[last] + fp[last])
    recall = tp[last] / positives
    return float(np.sum(np.diff(recall, prepend=0.0) * precision))


def precision_recall_curve(
    truth: ArrayLike, scores: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
    """Precision and recall of one class at every distinct score taken as the threshold.

    Args:
        truth: labels of one class, shape (n,), bool or 0/1.
        scores: its predicted probabilities, shape (n,).

    Returns:
        ``(precision, recall, thresholds)``, each shape (k,) for the k distinct scores
        from the highest down: predicting "present" where ``score >= thresholds[i]``
        gives ``precision[i]`` and ``recall[i]`` (recall 0 when the class never occurs).
    """
    t = np.asarray(truth).astype(bool)
    s = np.asarray(scores, dtype=np.float64)
    if t.ndim != 1 or t.shape != s.shape:
        raise ShapeError(f"truth and scores must both be (n,), got {t.shape} and {s.shape}")
    order = np.argsort(-s, kind="stable")
    s, t = s[order], t[order]
    tp = np.cumsum(t)
    fp = np.cumsum(~t)
    last = np.flatnonzero(np.append(s[1:] != s[:-1], True)) if len(s) else np.array([], int)
    positives = max(int(t.sum()), 1)
    precision = tp[last] / np.maximum(tp[last] + fp[last], 1)
    return precision.astype(np.float64), (tp[last] / positives).astype(np.float64), s[last]
