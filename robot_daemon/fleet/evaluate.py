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

:func:`score_partition` (a partition read and scored) and :func:`gather` (every
partition's result, in the partitions' order) are shared with ``compare``
(:mod:`robot_daemon.fleet.compare`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

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

    @classmethod
    def merge(cls, tallies: Sequence[Tally]) -> Tally:
        """The tally of all the rows of ``tallies`` (at least one): counts summed, the
        rankings merged in one sort per class."""
        return cls(
            n=sum(t.n for t in tallies),
            tp=np.sum([t.tp for t in tallies], axis=0, dtype=np.int64),
            fp=np.sum([t.fp for t in tallies], axis=0, dtype=np.int64),
            fn=np.sum([t.fn for t in tallies], axis=0, dtype=np.int64),
            errors=sum(t.errors for t in tallies),
            exact=sum(t.exact for t in tallies),
            ranked=[metrics.RankedScores.concat([t.ranked[j] for t in tallies])
                    for j in range(len(tallies[0].tp))],
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
class PartitionResult:
    """What a worker made of one partition: how many rows it scored, or why none."""

    source: str
    rows: int = 0
    rejected: int = 0
    warning: str | None = None
    skipped: str | None = None


@dataclass(eq=False)
class Scored(PartitionResult):
    """One partition's labelled rows scored by every scorer (on a worker; never shipped).

    T : (n, c) bool labels; t : (n,) float64 sensor times (s); P : one (n, c) float64
    array of probabilities per scorer.
    """

    T: NDArray[np.bool_] = field(default_factory=lambda: np.zeros((0, 0), bool))
    t: NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))
    P: list[NDArray[np.float64]] = field(default_factory=list)


def score_partition(part: Source, scorers: Sequence[Scorer], d: int, c: int) -> Scored:
    """Read one partition's labelled frames and score them with every scorer.

    The probabilities are computed with BLAS on one thread, so that they do not depend on
    where the partition ran (``one_blas_thread``): the job's figures are the same on one
    worker and many. ``eval`` and ``compare`` both start here.
    """
    read = load_labels(part, d, c)
    out = Scored(part.path, warning=read.warning, skipped=read.skipped)
    if read.skipped is not None or read.labels is None:
        return out
    labels = read.labels
    out.rejected = sum(labels.rejected.values())
    if labels.n == 0:
        return out
    if (read.d, read.c) != (d, c):
        out.skipped = f"holds d={read.d}, c={read.c}; the model expects d={d}, c={c}"
        return out
    out.T, out.t, out.rows = labels.Y.astype(bool), labels.t, labels.n
    for scorer in scorers:
        with one_blas_thread():
            out.P.append(np.asarray(scorer.classifier.predict_proba(labels.X),
                                    dtype=np.float64))
    return out


@dataclass(eq=False)
class PartitionEval(PartitionResult):
    """One partition's tallies (one per scorer), or why it gave none."""

    tallies: list[Tally] = field(default_factory=list)


def eval_partition(part: Source, scorers: Sequence[Scorer], d: int, c: int) -> PartitionEval:
    """Score one partition with every scorer (on a worker)."""
    s = score_partition(part, scorers, d, c)
    out = PartitionEval(s.source, s.rows, s.rejected, s.warning, s.skipped)
    if s.rows:
        out.tallies = [Tally.of(s.T, P, scorer.thresholds)
                       for scorer, P in zip(scorers, s.P, strict=True)]
    return out


ResultT = TypeVar("ResultT", bound=PartitionResult)


@dataclass(eq=False)
class Gathered(Generic[ResultT]):
    """Every partition's result in the order of the partitions (not the order they
    finished in), and what the job met on its way."""

    results: list[ResultT]
    rejected: int
    warnings: list[str]
    skipped: list[str]

    def require_rows(self) -> None:
        """Raise :class:`RobotDaemonError` unless some partition gave labelled rows."""
        if not any(r.rows for r in self.results):
            why = (f" ({len(self.skipped)} skipped, such as {self.skipped[0]})"
                   if self.skipped else "")
            raise RobotDaemonError(f"no labelled frames ('label' topic) in any source{why}")


def gather(
    runner: Runner, fn: Callable[..., ResultT], parts: Sequence[Source],
    progress: Progress | None = None, **kwargs: Any,
) -> Gathered[ResultT]:
    """``fn(part, **kwargs)`` for every partition on ``runner``, results put back in order."""
    results: list[ResultT | None] = [None] * len(parts)
    for i, result in runner.map_unordered(fn, parts, **kwargs):
        results[i] = result
        if progress is not None:
            progress.add(result.rows)
    done = [r for r in results if r is not None]
    return Gathered(
        done, rejected=sum(r.rejected for r in done),
        warnings=sorted(r.warning for r in done if r.warning),
        skipped=sorted(f"{r.source}: {r.skipped}" for r in done if r.skipped))


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
    """Score every partition on ``runner``; merge the tallies."""
    got = gather(runner, eval_partition, parts, progress, scorers=scorers, d=d, c=c)
    got.require_rows()
    evaluations = [
        Tally.merge([r.tallies[k] for r in got.results if r.tallies]).evaluation(s.name,
                                                                                  class_names)
        for k, s in enumerate(scorers)]
    return FleetEvaluation(evaluations, len(parts), got.rejected, got.warnings, got.skipped,
                           progress.frames_per_s if progress else 0.0)
