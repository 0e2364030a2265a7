"""``eval`` over many partitions: counts on the workers, the same metrics in the driver.

Every metric of :func:`robot_daemon.offline.evaluate.score` is a function of sums over
the examples, except average precision, which needs the ranking of every score:

* precision, recall, F1, support, micro F1, hamming loss and subset accuracy come from
  per-class counts of true positives, false positives and false negatives, the count
  of wrong decisions and of rows decided exactly right: integers, summed exactly;
* average precision comes from each class's ranking
  (:class:`~robot_daemon.offline.metrics.RankedScores`: every score, sorted, beside its
  label), the partitions' rankings merged into the ranking of all the examples.

Both feed the formulas the one-process evaluation uses, so the figures are identical,
bit for bit, not close. The price is the rankings: the driver holds 9 bytes per labelled
frame and class (a float64 score and a label) at the end; see docs/fleet.md for the
arithmetic.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
from numpy.typing import ArrayLike, NDArray

from robot_daemon.errors import RobotDaemonError
from robot_daemon.fleet.cluster import Progress, Runner, one_blas_thread
from robot_daemon.fleet.decode import load_labels
from robot_daemon.fleet.sources import Source
from robot_daemon.offline import metrics
from robot_daemon.offline.evaluate import Evaluation


class Classifier(Protocol):
    def predict_proba(self, X: ArrayLike) -> NDArray[Any]: ...


@dataclass(frozen=True)
class Scorer:
    """A classifier and its per-class thresholds (c,), scored under ``name``."""

    name: str
    classifier: Classifier
    thresholds: NDArray[np.float64]


@dataclass(eq=False)
class Tally:
    """The sums one scorer's metrics need, over some rows; per-class arrays (c,) int64."""

    n: int
    tp: NDArray[np.int64]
    fp: NDArray[np.int64]
    fn: NDArray[np.int64]
    errors: int
    exact: int
    ranked: list[metrics.RankedScores]

    @classmethod
    def of(cls, T: NDArray[np.bool_], P: NDArray[np.float64], thresholds: ArrayLike) -> Tally:
        """Labels ``T`` (n, c) bool, probabilities ``P`` (n, c) float64."""
        decided = np.asarray(thresholds, dtype=np.float64) <= P
        return cls(
            n=len(T),
            tp=(T & decided).sum(axis=0, dtype=np.int64),
            fp=(~T & decided).sum(axis=0, dtype=np.int64),
            fn=(T & ~decided).sum(axis=0, dtype=np.int64),
            errors=int((T ^ decided).sum()),
            exact=int((decided == T).all(axis=1).sum()),
            ranked=[metrics.RankedScores.of(T[:, j], P[:, j]) for j in range(T.shape[1])],
        )

    def evaluation(self, name: str, class_names: Sequence[str]) -> Evaluation:
        """The :class:`Evaluation` that ``offline.evaluate.score`` gives on the same rows."""
        per_class = metrics.scores_from_counts(self.tp, self.fp, self.fn)
        tp, cells = int(self.tp.sum()), self.n * len(self.tp)
        # As metrics.micro_f1, hamming_loss and subset_accuracy compute them.
        micro = 2 * tp / (2 * tp + self.errors) if tp + self.errors else 0.0
        return Evaluation(
            name=name,
            class_names=list(class_names),
            n=self.n,
            precision=per_class.precision,
            recall=per_class.recall,
            f1=per_class.f1,
            average_precision=np.array([metrics.ap_of_ranked(r) for r in self.ranked]),
            support=per_class.support,
            micro_f1=micro,
            macro_f1=per_class.macro_f1,
            hamming_loss=float(np.float64(self.errors) / cells) if cells else 0.0,
            subset_accuracy=float(np.float64(self.exact) / self.n) if self.n else 0.0,
        )


@dataclass(eq=False)
class PartitionEval:
    """One partition's tallies (one per scorer), or why it gave none."""

    source: str
    rows: int = 0
    tallies: list[Tally] = field(default_factory=list)
    rejected: int = 0
    warning: str | None = None
    skipped: str | None = None


def eval_partition(part: Source, scorers: Sequence[Scorer], d: int, c: int) -> PartitionEval:
    """Score one partition with every scorer (on a worker)."""
    read = load_labels(part, d, c)
    out = PartitionEval(part.path, warning=read.warning, skipped=read.skipped)
    if read.skipped is not None or read.labels is None:
        return out
    labels = read.labels
    out.rejected = sum(labels.rejected.values())
    if labels.n == 0:
        return out
    if (read.d, read.c) != (d, c):
        out.skipped = f"holds d={read.d}, c={read.c}; the model expects d={d}, c={c}"
        return out
    T = labels.Y.astype(bool)
    out.rows = labels.n
    for scorer in scorers:
        with one_blas_thread():
            P = np.asarray(scorer.classifier.predict_proba(labels.X), dtype=np.float64)
        out.tallies.append(Tally.of(T, P, scorer.thresholds))
    return out


class _Sums:
    """The tallies of one scorer, summed as they arrive; the rankings are kept apart and
    merged once, in one sort per class, at the end."""

    def __init__(self) -> None:
        self.tallies: list[Tally] = []

    def add(self, tally: Tally) -> None:
        self.tallies.append(tally)

    def total(self) -> Tally | None:
        if not self.tallies:
            return None
        first = self.tallies[0]
        c = len(first.tp)
        return Tally(
            n=sum(t.n for t in self.tallies),
            tp=np.sum([t.tp for t in self.tallies], axis=0, dtype=np.int64),
            fp=np.sum([t.fp for t in self.tallies], axis=0, dtype=np.int64),
            fn=np.sum([t.fn for t in self.tallies], axis=0, dtype=np.int64),
            errors=sum(t.errors for t in self.tallies),
            exact=sum(t.exact for t in self.tallies),
            ranked=[metrics.RankedScores.concat([t.ranked[j] for t in self.tallies])
                    for j in range(c)],
        )


@dataclass(eq=False)
class FleetEvaluation:
    """The evaluations (one per scorer) and what the job met on its way."""

    evaluations: list[Evaluation]
    partitions: int
    rejected: int
    warnings: list[str]
    skipped: list[str]
    frames_per_s: float


def evaluate(
    runner: Runner, parts: Sequence[Source], scorers: Sequence[Scorer], d: int, c: int,
    class_names: Sequence[str], progress: Progress | None = None,
) -> FleetEvaluation:
    """Score every partition on ``runner``; merge the tallies as they come in."""
    totals = [_Sums() for _ in scorers]
    rejected = 0
    warnings: list[str] = []
    skipped: list[str] = []
    for _, result in runner.map_unordered(eval_partition, parts, scorers=scorers, d=d, c=c):
        rejected += result.rejected
        if result.warning:
            warnings.append(result.warning)
        if result.skipped:
            skipped.append(f"{result.source}: {result.skipped}")
        for sums, tally in zip(totals, result.tallies, strict=False):
            sums.add(tally)
        if progress is not None:
            progress.add(result.rows)
    merged = [sums.total() for sums in totals]
    if merged[0] is None:
        why = f" ({len(skipped)} skipped, such as {skipped[0]})" if skipped else ""
        raise RobotDaemonError(f"no labelled frames ('label' topic) in any source{why}")
    evaluations = [t.evaluation(s.name, class_names)
                   for s, t in zip(scorers, merged, strict=True) if t is not None]
    return FleetEvaluation(evaluations, len(parts), rejected, sorted(warnings), sorted(skipped),
                           progress.frames_per_s if progress else 0.0)
