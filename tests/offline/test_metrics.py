"""Metrics against cases worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from robot_daemon.errors import ShapeError
from robot_daemon.offline import metrics

# Four examples, three classes. Worked by hand:
#   class 0: true 1 1 0 0, pred 1 0 0 1 -> tp 1, fp 1, fn 1 -> P 1/2, R 1/2, F1 1/2
#   class 1: true 0 1 1 0, pred 1 1 1 0 -> tp 2, fp 1, fn 0 -> P 2/3, R 1,   F1 4/5
#   class 2: never true, never predicted -> every ratio 0/0, defined as 0
Y_TRUE = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=np.uint8)
Y_PRED = np.array([[1, 1, 0], [0, 1, 0], [0, 1, 0], [1, 0, 0]], dtype=bool)


def test_per_class_scores_hand_worked() -> None:
    s = metrics.per_class_scores(Y_TRUE, Y_PRED)
    np.testing.assert_allclose(s.precision, [1 / 2, 2 / 3, 0.0])
    np.testing.assert_allclose(s.recall, [1 / 2, 1.0, 0.0])
    np.testing.assert_allclose(s.f1, [1 / 2, 4 / 5, 0.0])
    np.testing.assert_array_equal(s.support, [2, 2, 0])
    assert s.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)


def test_f1_is_harmonic_mean_of_precision_and_recall() -> None:
    s = metrics.per_class_scores(Y_TRUE[:, :2], Y_PRED[:, :2])
    np.testing.assert_allclose(s.f1, 2 * s.precision * s.recall / (s.precision + s.recall))


def test_perfect_and_inverted_predictions() -> None:
    truth = np.array([[1, 0], [0, 1], [1, 1]])
    assert metrics.macro_f1(truth, truth) == 1.0
    assert metrics.macro_f1(truth, 1 - truth) == 0.0


def test_never_predicting_a_present_class_scores_zero() -> None:
    s = metrics.per_class_scores([[1], [1], [0]], [[0], [0], [0]])
    assert (s.precision[0], s.recall[0], s.f1[0]) == (0.0, 0.0, 0.0)


def test_tune_thresholds_prefers_the_threshold_nearest_one_half() -> None:
    truth = np.array([[1, 1], [1, 1], [0, 1], [0, 0]])
    probs = np.array([[0.9, 0.9], [0.6, 0.6], [0.4, 0.3], [0.1, 0.1]])
    # Class 0: any threshold in (0.4, 0.6] is perfect; 0.5 is nearest one half.
    # Class 1: only thresholds in (0.1, 0.3] are perfect; 0.3 is nearest one half.
    np.testing.assert_allclose(metrics.tune_thresholds(truth, probs), [0.5, 0.3])


@pytest.mark.parametrize(
    ("truth", "pred", "match"),
    [
        (np.zeros((3, 2)), np.zeros((3, 3)), "must both be"),
        (np.zeros(3), np.zeros(3), "must both be"),
        (np.full((2, 2), 2), np.zeros((2, 2)), "0/1"),
    ],
)
def test_bad_inputs_raise_shape_error(truth: np.ndarray, pred: np.ndarray, match: str) -> None:
    with pytest.raises(ShapeError, match=match):
        metrics.per_class_scores(truth, pred)


# ---- pooled scores and average precision (hand-computed) -----------------------------------


def test_micro_f1_hamming_and_subset_accuracy_by_hand() -> None:
    T = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 0]])
    P = np.array([[1, 0, 0], [0, 1, 0], [1, 0, 1], [0, 0, 0]])
    # TP = 3 (row0 c0, row1 c1, row2 c0); FP = 1 (row2 c2); FN = 2 (row0 c2, row2 c1)
    assert metrics.micro_f1(T, P) == pytest.approx(2 * 3 / (2 * 3 + 1 + 2))
    assert metrics.hamming_loss(T, P) == pytest.approx(3 / 12)
    assert metrics.subset_accuracy(T, P) == pytest.approx(2 / 4)  # rows 1 and 3 exactly right


def test_average_precision_by_hand() -> None:
    # Scores 0.9 (pos), 0.8 (neg), 0.7 (pos), 0.1 (pos):
    # P/R after each: 1/(1/3), 1/2/(1/3), 2/3/(2/3), 3/4/(1)
    # AP = 1/3 * 1 + 0 * 1/2 + 1/3 * 2/3 + 1/3 * 3/4 = 29/36
    T = np.array([[1], [0], [1], [1]])
    S = np.array([[0.9], [0.8], [0.7], [0.1]])
    assert metrics.average_precision(T, S)[0] == pytest.approx(29 / 36)


def test_average_precision_ties_and_empty_classes() -> None:
    T = np.array([[1, 0], [0, 0]])
    S = np.array([[0.5, 0.3], [0.5, 0.9]])
    # Class 0: one threshold (both scored 0.5): precision 1/2 at recall 1. Class 1: no
    # positives: 0.
    np.testing.assert_allclose(metrics.average_precision(T, S), [0.5, 0.0])
    perfect = metrics.average_precision(np.array([[1], [0], [1]]), np.array([[0.8], [0.1], [0.7]]))
    assert perfect[0] == 1.0


def test_rankings_merged_from_parts_give_the_same_average_precision_bit_for_bit() -> None:
    rng = np.random.default_rng(3)
    for trial in range(50):
        n = int(rng.integers(1, 3000))
        scores = rng.random(n)
        if trial % 2:
            scores = np.round(scores, 2)  # many ties
        truth = rng.random(n) < rng.random()
        whole = metrics.average_precision(truth[:, None], scores[:, None])[0]
        parts = [metrics.RankedScores.of(truth[rows], scores[rows])
                 for rows in np.array_split(rng.permutation(n), 4)]
        assert metrics.ap_of_ranked(metrics.RankedScores.concat(parts)) == whole


def test_ranked_scores_form_one_threshold_per_distinct_score() -> None:
    ranked = metrics.RankedScores.of(np.array([True, False, True, False]),
                                     np.array([0.5, 0.5, 0.9, 0.1]))
    np.testing.assert_array_equal(ranked.score, [0.9, 0.5, 0.5, 0.1])
    # Thresholds 0.9 (P 1, R 1/2) then 0.5 (P 2/3, R 1): AP = 1/2 * 1 + 1/2 * 2/3.
    assert metrics.ap_of_ranked(ranked) == pytest.approx(0.5 + 1 / 3)


def test_scores_from_counts_match_per_class_scores() -> None:
    T, P = Y_TRUE.astype(bool), Y_PRED
    tp = (T & P).sum(axis=0)
    fp = (~T & P).sum(axis=0)
    fn = (T & ~P).sum(axis=0)
    a, b = metrics.scores_from_counts(tp, fp, fn), metrics.per_class_scores(T, P)
    np.testing.assert_array_equal(a.f1, b.f1)
    np.testing.assert_array_equal(a.support, b.support)
