"""``compare`` over many partitions: both models on the same frames in one pass, the
frames cut into the blocks the bootstrap resamples.

Each partition (a bag, or a dataset's file of one bag) is read once on a worker and
scored by both models (:func:`~robot_daemon.fleet.evaluate.score_partition`, as
``eval``); its frames are then cut into minutes of sensor time (the label's ``t``, from
the partition's first labelled frame), and each minute gives one
:class:`~robot_daemon.fleet.evaluate.Tally` per model: per-class counts and rankings.
The driver puts the partitions back in their order and chooses the blocks:

* **whole bags** when at least :data:`MIN_BAGS` partitions hold labelled frames: bags
  are separate drives, the most independent blocks there are;
* otherwise **whole minutes of sensor time**, every partition's minutes in order: an
  obstacle stays in view for seconds, so frames a minute apart are nearly independent,
  while consecutive frames are not and must never be resampled one by one.

The figures are those of ``eval`` on the same frames, bit for bit (the tallies of all
blocks merged), and the bootstrap sees only the blocks' statistics in a fixed order, so
the whole comparison is identical on one worker and many.

Design: docs/fleet.md, "Comparing two models".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from robot_daemon.fleet.cluster import Progress, Runner
from robot_daemon.fleet.evaluate import PartitionResult, Scorer, Tally, gather, score_partition
from robot_daemon.fleet.sources import Source
from robot_daemon.offline import compare as offline_compare
from robot_daemon.offline.bootstrap import BlockStats

#: Fewest bags with labelled frames for the blocks to be whole bags.
MIN_BAGS: Final = 20
#: Length of a block of sensor time, in seconds.
MINUTE_S: Final = 60.0


@dataclass(eq=False)
class PartitionBlocks(PartitionResult):
    """One partition's minutes of sensor time, in order, each with one tally per scorer."""

    minutes: list[list[Tally]] = field(default_factory=list)


def minute_of(t: NDArray[np.float64]) -> NDArray[np.int64]:
    """Each frame's minute of sensor time ``t`` (n,) s, counted from the earliest: (n,)."""
    return np.asarray(np.floor((t - t.min()) / MINUTE_S), dtype=np.int64)


def compare_partition(
    part: Source, scorers: Sequence[Scorer], d: int, c: int
) -> PartitionBlocks:
    """Score one partition with every scorer and tally it minute by minute (on a worker)."""
    s = score_partition(part, scorers, d, c)
    out = PartitionBlocks(s.source, s.rows, s.rejected, s.warning, s.skipped)
    if not s.rows:
        return out
    minutes = minute_of(s.t)
    for minute in np.unique(minutes):  # sorted: the blocks' order is fixed
        rows = minutes == minute
        out.minutes.append([Tally.of(s.T[rows], P[rows], scorer.thresholds)
                            for scorer, P in zip(scorers, s.P, strict=True)])
    return out


def choose_blocks(
    results: Sequence[PartitionBlocks], min_bags: int = MIN_BAGS
) -> tuple[list[list[Tally]], offline_compare.BlockKind]:
    """The blocks (each one tally per scorer), in partition order, and their kind."""
    bags = [r.minutes for r in results if r.minutes]
    if len(bags) >= min_bags:
        return [[Tally.merge([m[k] for m in bag]) for k in range(len(bag[0]))]
                for bag in bags], "bag"
    return [minute for bag in bags for minute in bag], "minute"


def block_stats(blocks: Sequence[Sequence[Tally]], k: int) -> BlockStats:
    """Scorer ``k``'s statistics, block by block, for the bootstrap."""
    tallies = [b[k] for b in blocks]
    return BlockStats(
        tp=np.stack([t.tp for t in tallies]), fp=np.stack([t.fp for t in tallies]),
        fn=np.stack([t.fn for t in tallies]),
        ranked=[[t.ranked[j] for t in tallies] for j in range(len(tallies[0].tp))])


@dataclass(eq=False)
class FleetComparison:
    """The comparison and what the job met on its way."""

    comparison: offline_compare.Comparison
    rejected: int
    warnings: list[str]
    skipped: list[str]


def compare(
    runner: Runner, parts: Sequence[Source], base: Scorer, candidate: Scorer, d: int, c: int,
    class_names: Sequence[str], config: offline_compare.CompareConfig,
    progress: Progress | None = None,
) -> FleetComparison:
    """Both models on every partition on ``runner``, compared (module doc)."""
    got = gather(runner, compare_partition, parts, progress, scorers=[base, candidate],
                 d=d, c=c)
    got.require_rows()
    blocks, kind = choose_blocks(got.results)
    base_eval, candidate_eval = (
        Tally.merge([b[k] for b in blocks]).evaluation(s.name, class_names)
        for k, s in enumerate((base, candidate)))
    comparison = offline_compare.compare(base_eval, candidate_eval, block_stats(blocks, 0),
                                         block_stats(blocks, 1), kind, config)
    return FleetComparison(comparison, got.rejected, got.warnings, got.skipped)
