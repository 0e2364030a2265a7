"""The paired block bootstrap of ``compare``: how much a figure could move by chance.

Consecutive frames are not independent (an obstacle stays in view for seconds), so the
bootstrap resamples *blocks* of frames (whole bags, or whole minutes of sensor time: the
caller decides, :mod:`robot_daemon.fleet.compare`), never single frames. Each resample
draws as many blocks as there are, with replacement, and weighs each block by how often
it was drawn; both models are scored on the same draw, so that the difference of their
figures is paired.

Everything here is a function of per-block sufficient statistics (:class:`BlockStats`),
in a fixed block order, and of the seed: the resampled counts are sums of whole numbers
(exact in float64 whatever the summation order), so the intervals are identical on one
worker and many.

* F1 comes from each block's per-class counts of true and false positives and false
  negatives: a resample's counts are ``W @ tp`` for the weights ``W`` of the draw.
* Average precision needs the ranking of the scores. Each class's scores are cut into at
  most :data:`AP_BINS` bins holding about the same number of frames (equal scores always
  share a bin); a block is the count of its positive and negative frames per bin, and a
  resample's AP is computed from the weighted counts, one threshold per bin. With no more
  frames than bins this is the exact AP; beyond, the bins round the ranking (by up to
  0.003 of AP at 3,600 and at 36,000 simulated frames). That rounding is taken out:
  :func:`ap_deviations` gives each resample's AP less the binned AP of all the blocks,
  which the caller adds to the exact figure. Bins of equal frame counts keep the cost at
  ``R x B x bins`` per class, whatever the number of frames.

Design: docs/fleet.md, "Comparing two models".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

from robot_daemon.offline.metrics import RankedScores

#: Score bins per class for the resampled average precision.
AP_BINS: Final = 1024
#: Resamples whose AP is computed together (a few MB of (rows, bins) arrays).
RESAMPLES_AT_ONCE: Final = 500
#: Most resamples a comparison may ask for: the weights alone are 8 bytes per resample
#: and block.
MAX_RESAMPLES: Final = 100_000


@dataclass(frozen=True, eq=False)
class BlockStats:
    """One model's sufficient statistics, block by block.

    tp, fp, fn : (B, c) int64, each block's per-class counts at the model's thresholds.
    ranked : per class, the B blocks' rankings (:class:`RankedScores`) of that class.
    """

    tp: NDArray[np.int64]
    fp: NDArray[np.int64]
    fn: NDArray[np.int64]
    ranked: list[list[RankedScores]]

    @property
    def blocks(self) -> int:
        return len(self.tp)


def resample_weights(blocks: int, resamples: int, seed: int) -> NDArray[np.float64]:
    """How often each block is drawn in each resample, (resamples, blocks) float64.

    Each row draws ``blocks`` blocks uniformly with replacement, so it sums to ``blocks``.
    """
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, blocks, size=(resamples, blocks))
    rows = np.arange(resamples)[:, None] * blocks
    counts = np.bincount((rows + draws).ravel(), minlength=resamples * blocks)
    return counts.reshape(resamples, blocks).astype(np.float64)


def f1_resampled(W: NDArray[np.float64], stats: BlockStats) -> NDArray[np.float64]:
    """Per-class F1 of each resample, (R, c), for weights ``W`` (R, B).

    ``2 TP / (2 TP + FP + FN)`` as :func:`robot_daemon.offline.metrics.scores_from_counts`
    computes it; 0 for a class neither present nor predicted in the resample.
    """
    tp, fp, fn = (W @ stats.tp.astype(np.float64), W @ stats.fp.astype(np.float64),
                  W @ stats.fn.astype(np.float64))
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den), where=den > 0)


@dataclass(frozen=True, eq=False)
class BinnedScores:
    """One class's scores cut into bins, block by block.

    pos, neg : (B, K) float64, each block's positive and negative frames per bin, bin 0
    holding the highest scores.
    """

    pos: NDArray[np.float64]
    neg: NDArray[np.float64]


def bin_scores(blocks: Sequence[RankedScores], bins: int = AP_BINS) -> BinnedScores:
    """Bins of about equal frame counts over the scores of all ``blocks`` of one class.

    A score's bin is ``(number of scores above it) * bins // n``: equal scores share a
    bin, and with ``n <= bins`` every distinct score has a bin of its own.
    """
    ascending = np.sort(np.concatenate([b.score for b in blocks]))
    n = len(ascending)
    pos = np.zeros((len(blocks), bins))
    neg = np.zeros((len(blocks), bins))
    for i, block in enumerate(blocks):
        above = n - np.searchsorted(ascending, block.score, side="right")
        k = above * bins // max(n, 1)
        pos[i] = np.bincount(k[block.truth], minlength=bins)
        neg[i] = np.bincount(k[~block.truth], minlength=bins)
    return BinnedScores(pos, neg)


def ap_resampled(W: NDArray[np.float64], binned: BinnedScores) -> NDArray[np.float64]:
    """Average precision of each resample, (R,), for weights ``W`` (R, B).

    :func:`robot_daemon.offline.metrics.ap_of_ranked` with one threshold per bin, in its
    other form: the mean over the positive frames of the precision at the threshold of
    their bin, ``sum_k pos_k * TP_k / (TP_k + FP_k) / sum_k pos_k``, with ``TP_k`` and
    ``FP_k`` counted at or above bin ``k``. A resample without positives has AP 0.
    """
    # Summed over the bins first, on (B, K), then weighted: the same whole numbers, R
    # times fewer cumulative sums.
    pos = W @ binned.pos  # (R, K)
    tp = W @ np.cumsum(binned.pos, axis=1)
    decided = W @ np.cumsum(binned.pos + binned.neg, axis=1)
    precision = np.divide(tp, decided, out=np.zeros_like(tp), where=decided > 0)
    positives = pos.sum(axis=1)
    total = np.sum(pos * precision, axis=1)
    ap = np.divide(total, positives, out=np.zeros_like(total), where=positives > 0)
    return np.asarray(ap, dtype=np.float64)


def interval(
    samples: NDArray[np.float64], level: float
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The central ``level`` percentile interval of ``samples`` (R, ...) along axis 0:
    ``(low, high)``, each of the shape of one sample."""
    tail = (1.0 - level) / 2
    low, high = np.quantile(samples, [tail, 1.0 - tail], axis=0)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def ap_deviations(
    W: NDArray[np.float64], ranked: Sequence[Sequence[RankedScores]], bins: int = AP_BINS
) -> NDArray[np.float64]:
    """Per class, each resample's AP less the AP of all the blocks, both on binned scores:
    (R, c) for weights ``W`` (R, B) and ``ranked``, per class the B blocks' rankings.

    Added to the exact AP, a deviation gives the resample's AP without the bins' rounding
    of the level (module doc).
    """
    everything = np.ones((1, W.shape[1]))
    columns = []
    for blocks in ranked:
        binned = bin_scores(blocks, bins)
        # A few resamples at a time: each takes (rows, bins) arrays of its own.
        resampled = np.concatenate([ap_resampled(W[i:i + RESAMPLES_AT_ONCE], binned)
                                    for i in range(0, len(W), RESAMPLES_AT_ONCE)])
        columns.append(resampled - ap_resampled(everything, binned)[0])
    return np.stack(columns, axis=1)
