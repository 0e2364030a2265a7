"""Two models on the same labelled frames, and the verdict a deployment gates on.

``robot-daemon compare BASE CANDIDATE SOURCE...`` scores both models on the same frames
(:mod:`robot_daemon.fleet.compare` does the pass over the data), then, per class and
macro, gives each model's F1 and average precision (the figures of ``eval``, exact), the
paired difference candidate - base and its interval from a block bootstrap
(:mod:`robot_daemon.offline.bootstrap`), and a verdict:

* ``promote`` where macro F1 improves, the lower bound of its interval is above zero,
  and no class's F1 drops by more than ``max_class_drop``;
* ``hold`` otherwise, with every reason that applies in one line; also where there are
  fewer than :data:`MIN_BLOCKS` blocks, too few for an interval to mean anything.

The two models must agree on d, c and the class names (:func:`check_comparable`).

Design: docs/fleet.md, "Comparing two models".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from robot_daemon.errors import ModelError
from robot_daemon.model import Model
from robot_daemon.offline import bootstrap
from robot_daemon.offline.evaluate import Evaluation

#: Fewest blocks for a verdict of promote: below, the resamples hardly differ.
MIN_BLOCKS: Final = 10

BlockKind = Literal["bag", "minute"]


@dataclass(frozen=True)
class CompareConfig:
    """The bootstrap and the gate: ``level`` of the interval, ``resamples`` drawn with
    ``seed``, AP's score ``ap_bins``; the largest F1 drop a class may take."""

    resamples: int = 2000
    seed: int = 0
    level: float = 0.95
    max_class_drop: float = 0.02
    ap_bins: int = bootstrap.AP_BINS
    min_blocks: int = MIN_BLOCKS


def check_comparable(base: Model, candidate: Model) -> None:
    """Raise :class:`ModelError` unless the models have the same d, c and class names."""
    for what, b, c in (("d", base.d, candidate.d), ("c", base.c, candidate.c),
                       ("class names", base.class_names, candidate.class_names)):
        if b != c:
            raise ModelError(f"the models differ in {what}: BASE has {b}, CANDIDATE {c};"
                             " compare needs the same d, c and class names")


@dataclass(frozen=True, eq=False)
class Paired:
    """One figure of both models on the same frames; every array (c,) for a per-class
    figure, () for a macro one, float64. ``low`` and ``high`` bound the difference."""

    base: NDArray[np.float64]
    candidate: NDArray[np.float64]
    low: NDArray[np.float64]
    high: NDArray[np.float64]

    @property
    def difference(self) -> NDArray[np.float64]:
        """candidate - base."""
        return np.asarray(self.candidate - self.base, dtype=np.float64)

    def as_dict(self, j: int | None = None) -> dict[str, Any]:
        """The figure (of class ``j``, or the macro one) as plain floats."""
        figures = [self.base, self.candidate, self.difference, self.low, self.high]
        base, candidate, difference, low, high = (
            float(a if j is None else a[j]) for a in figures)
        return {"base": base, "candidate": candidate, "difference": difference,
                "interval": [low, high]}


@dataclass(frozen=True)
class Verdict:
    """``promote`` or ``hold``, and why, in one line."""

    decision: Literal["promote", "hold"]
    reason: str

    @property
    def exit_code(self) -> int:
        """0 to promote, 1 to hold: what a deployment pipeline gates on."""
        return 0 if self.decision == "promote" else 1

    def line(self) -> str:
        return f"{self.decision}: {self.reason}"


@dataclass(frozen=True, eq=False)
class Comparison:
    """Both models' figures, paired, on ``n`` labelled frames in ``blocks`` blocks."""

    class_names: list[str]
    n: int
    support: NDArray[np.int64]
    blocks: int
    block_kind: BlockKind
    config: CompareConfig
    f1: Paired
    macro_f1: Paired
    ap: Paired
    macro_ap: Paired
    verdict: Verdict


def compare(
    base: Evaluation, candidate: Evaluation, base_stats: bootstrap.BlockStats,
    candidate_stats: bootstrap.BlockStats, block_kind: BlockKind, config: CompareConfig,
) -> Comparison:
    """The comparison of two evaluations on the same frames, with the block statistics
    the bootstrap resamples (the same blocks, in the same order, for both)."""
    blocks = base_stats.blocks
    W = bootstrap.resample_weights(blocks, config.resamples, config.seed)
    f1s = [bootstrap.f1_resampled(W, s) for s in (base_stats, candidate_stats)]  # (R, c)
    f1 = _paired(base.f1, candidate.f1, f1s[1] - f1s[0], config.level)
    macro_f1 = _paired(np.float64(base.macro_f1), np.float64(candidate.macro_f1),
                       f1s[1].mean(axis=1) - f1s[0].mean(axis=1), config.level)
    # The resampled APs: the exact AP of all the frames moved by each resample's
    # deviation on binned scores (bootstrap module doc), (R, c) per model.
    aps = [e.average_precision + bootstrap.ap_deviations(W, s.ranked, config.ap_bins)
           for e, s in ((base, base_stats), (candidate, candidate_stats))]
    ap = _paired(base.average_precision, candidate.average_precision, aps[1] - aps[0],
                 config.level)
    macro_ap = _paired(base.average_precision.mean(), candidate.average_precision.mean(),
                       aps[1].mean(axis=1) - aps[0].mean(axis=1), config.level)
    return Comparison(
        class_names=list(base.class_names), n=base.n, support=base.support, blocks=blocks,
        block_kind=block_kind, config=config, f1=f1, macro_f1=macro_f1, ap=ap,
        macro_ap=macro_ap,
        verdict=judge(f1, macro_f1, base.class_names, blocks, block_kind, config))


def _paired(base: Any, candidate: Any, differences: NDArray[np.float64],
            level: float) -> Paired:
    """``differences`` (R, ...) of the resamples give the interval."""
    low, high = bootstrap.interval(differences, level)
    return Paired(np.asarray(base, dtype=np.float64), np.asarray(candidate, dtype=np.float64),
                  low, high)


def judge(
    f1: Paired, macro_f1: Paired, class_names: Sequence[str], blocks: int,
    block_kind: BlockKind, config: CompareConfig,
) -> Verdict:
    """The gate (module doc): ``hold`` with every reason that applies, else ``promote``."""
    gain = float(macro_f1.difference)
    low, high = float(macro_f1.low), float(macro_f1.high)
    pct = f"{config.level * 100:g} %"
    reasons = []
    if gain <= 0:
        reasons.append(f"no improvement in macro F1 ({gain:+.4f})")
    drops = [f"{name} F1 drops by {-d:.3f} ({b:.3f} -> {c:.3f})"
             for name, b, c, d in zip(class_names, f1.base, f1.candidate, f1.difference,
                                      strict=True)
             if d < -config.max_class_drop]
    if drops:
        reasons.append(f"{', '.join(drops)}, more than --max-class-drop"
                       f" {config.max_class_drop:g}")
    if blocks < config.min_blocks:
        reasons.append(f"only {_blocks(blocks, block_kind)}; an interval needs at least"
                       f" {config.min_blocks}: give more or longer bags")
    elif gain > 0 and low <= 0:
        reasons.append(f"macro F1 {gain:+.4f}, but its {pct} interval [{low:+.4f},"
                       f" {high:+.4f}] reaches 0")
    if reasons:
        return Verdict("hold", "; ".join(reasons))
    return Verdict("promote", f"macro F1 {gain:+.4f}, {pct} interval [{low:+.4f},"
                   f" {high:+.4f}] above 0; no class F1 drops more than"
                   f" {config.max_class_drop:g}")


def _blocks(count: int, kind: BlockKind) -> str:
    """``12 blocks (bags)``, ``3 blocks (minutes of sensor time)``."""
    what = "bags" if kind == "bag" else "minutes of sensor time"
    return f"{count} block{'s' if count != 1 else ''} ({what})"


def as_json(comparison: Comparison, *, base: str, candidate: str) -> dict[str, Any]:
    """``compare --json``'s object: the models' identities
    (:func:`robot_daemon.model.identity`), the frames and blocks, the bootstrap's
    settings, every figure of both models with its difference and interval, the verdict."""
    c, cfg = comparison, comparison.config
    return {
        "base": base,
        "candidate": candidate,
        "n": c.n,
        "blocks": {"kind": c.block_kind, "count": c.blocks},
        "bootstrap": {"resamples": cfg.resamples, "seed": cfg.seed, "level": cfg.level,
                      "ap_bins": cfg.ap_bins},
        "per_class": {
            name: {"support": int(c.support[j]), "f1": c.f1.as_dict(j),
                   "average_precision": c.ap.as_dict(j)}
            for j, name in enumerate(c.class_names)
        },
        "macro_f1": c.macro_f1.as_dict(),
        "macro_average_precision": c.macro_ap.as_dict(),
        "max_class_drop": cfg.max_class_drop,
        "verdict": c.verdict.decision,
        "reason": c.verdict.reason,
    }


def describe(comparison: Comparison) -> str:
    """The table of both models' figures and the differences, then the verdict line."""
    c = comparison
    width = max(12, *(len(name) for name in c.class_names))
    pct = f"{c.config.level * 100:g} %"
    group = f" | {'base':>5} {'cand':>5} {'diff':>7} {pct + ' interval':>18}"
    lines = [
        f"{c.n} labelled frames in {_blocks(c.blocks, c.block_kind)};"
        f" {c.config.resamples} resamples, seed {c.config.seed}",
        f"{'':<{width}} {'':>7} | {'F1':^38} | {'average precision':^38}",
        f"{'class':<{width}} {'support':>7}" + group * 2,
    ]
    rows = [(name, str(int(c.support[j])), c.f1.as_dict(j), c.ap.as_dict(j))
            for j, name in enumerate(c.class_names)]
    rows.append(("macro", "", c.macro_f1.as_dict(), c.macro_ap.as_dict()))
    for name, support, *figures in rows:
        lines.append(f"{name:<{width}} {support:>7}" + "".join(_cells(f) for f in figures))
    lines.append(c.verdict.line())
    return "\n".join(line.rstrip() for line in lines)


def _cells(figure: dict[str, Any]) -> str:
    low, high = figure["interval"]
    return (f" | {figure['base']:>5.3f} {figure['candidate']:>5.3f}"
            f" {figure['difference']:>+7.3f} {f'[{low:+.3f}, {high:+.3f}]':>18}")
