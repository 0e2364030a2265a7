"""The block bootstrap against an oracle: a resample's figures equal those of the drawn
blocks' frames put together and scored by the metrics module."""

from __future__ import annotations

import numpy as np
import pytest

from robot_daemon.offline import bootstrap, metrics
from robot_daemon.offline.metrics import RankedScores

B, C = 7, 3


@pytest.fixture
def blocks() -> list[tuple[np.ndarray, np.ndarray]]:
    """Seven blocks of labels (n_b, 3) bool and scores (n_b, 3), of unequal sizes, with
    tied scores (rounded to 0.05) as thresholded models give."""
    rng = np.random.default_rng(7)
    out = []
    for n in rng.integers(5, 40, size=B):
        T = rng.random((n, C)) < 0.3
        P = np.round(np.clip(0.35 * T + rng.random((n, C)) * 0.7, 0, 1) / 0.05) * 0.05
        out.append((T, P))
    return out


def _stats(blocks: list[tuple[np.ndarray, np.ndarray]], thresholds: np.ndarray
           ) -> bootstrap.BlockStats:
    decided = [(T, thresholds <= P) for T, P in blocks]
    return bootstrap.BlockStats(
        tp=np.stack([(T & D).sum(0) for T, D in decided]),
        fp=np.stack([(~T & D).sum(0) for T, D in decided]),
        fn=np.stack([(T & ~D).sum(0) for T, D in decided]),
        ranked=[[RankedScores.of(T[:, j], P[:, j]) for T, P in blocks] for j in range(C)])


def _drawn(blocks: list[tuple[np.ndarray, np.ndarray]], counts: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """The frames of a resample: each block repeated as often as it was drawn."""
    chosen = [blocks[b] for b in range(B) for _ in range(int(counts[b]))]
    return np.concatenate([T for T, _ in chosen]), np.concatenate([P for _, P in chosen])


def test_weights_draw_every_block_count_with_replacement_from_the_seed() -> None:
    W = bootstrap.resample_weights(B, 500, seed=3)
    assert W.shape == (500, B)
    assert (W.sum(axis=1) == B).all()
    assert (np.round(W) == W).all()
    assert W.min() >= 0
    assert (bootstrap.resample_weights(B, 500, seed=3) == W).all()
    assert (bootstrap.resample_weights(B, 500, seed=4) != W).any()
    assert W.mean() == pytest.approx(1.0, abs=0.05)  # every block equally likely


def test_resampled_f1_and_ap_are_those_of_the_drawn_frames(
    blocks: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    thresholds = np.array([0.3, 0.5, 0.7])
    stats = _stats(blocks, thresholds)
    W = bootstrap.resample_weights(B, 20, seed=0)
    f1 = bootstrap.f1_resampled(W, stats)
    ap = np.stack([bootstrap.ap_resampled(W, bootstrap.bin_scores(r)) for r in stats.ranked],
                  axis=1)
    for r in range(len(W)):
        T, P = _drawn(blocks, W[r])
        np.testing.assert_allclose(f1[r], metrics.per_class_scores(T, thresholds <= P).f1,
                                   rtol=0, atol=1e-15)
        # Fewer frames than bins: the binned AP is the exact one.
        np.testing.assert_allclose(ap[r], metrics.average_precision(T, P), rtol=0,
                                   atol=1e-12)


def test_coarse_bins_round_ap_and_the_deviations_take_the_rounding_out(
    blocks: list[tuple[np.ndarray, np.ndarray]]
) -> None:
    stats = _stats(blocks, np.full(C, 0.5))
    everything = np.ones((1, B))
    coarse = [bootstrap.ap_resampled(everything, bootstrap.bin_scores(r, bins=4))[0]
              for r in stats.ranked]
    exact = metrics.average_precision(*_drawn(blocks, everything[0]))
    assert not np.allclose(coarse, exact)  # four bins do round
    deviations = bootstrap.ap_deviations(everything, stats.ranked, bins=4)
    assert (deviations == 0).all()  # all the blocks once: the level itself, no deviation


def test_equal_scores_are_never_split_between_bins() -> None:
    """Ten frames of one score, three positive: one threshold, AP 0.3. Split between bins,
    the positives ranked first would raise it."""
    truth = np.array([True] * 3 + [False] * 7)
    ranked = [RankedScores.of(truth[:5], np.full(5, 0.5)),
              RankedScores.of(truth[5:], np.full(5, 0.5))]
    ap = bootstrap.ap_resampled(np.ones((1, 2)), bootstrap.bin_scores(ranked, bins=4))
    assert ap[0] == pytest.approx(0.3, abs=1e-15)
    assert metrics.average_precision(truth[:, None], np.full((10, 1), 0.5))[0] == \
        pytest.approx(0.3, abs=1e-15)


def test_interval_is_the_central_percentile_range() -> None:
    samples = np.arange(1001, dtype=np.float64)[:, None] * np.array([1.0, -1.0])
    low, high = bootstrap.interval(samples, 0.95)
    np.testing.assert_allclose(low, [25.0, -975.0])
    np.testing.assert_allclose(high, [975.0, -25.0])
