"""Pictures of training and evaluation: what ``--plot`` of ``train``, ``eval`` and ``compare``
writes.

* :func:`training_curves`: training loss and validation macro-F1 per epoch, from the
  history a model file keeps.
* :func:`evaluation_plots`: per class, the precision-recall curve with the model's
  threshold marked, F1 against the threshold, and a reliability (calibration) diagram;
  and the co-occurrence of true and predicted classes.
* :func:`comparison_f1`: what ``compare --plot`` writes, two models' F1 per class and
  the differences with their intervals.

matplotlib is the optional ``plot`` extra; it is used through its object API with an
explicit Agg canvas (no pyplot, no global state, no display), and every file is written
atomically. :func:`require_matplotlib` lets a command check before its long work.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from robot_daemon.errors import RobotDaemonError
from robot_daemon.model import write_atomically
from robot_daemon.offline import metrics

if TYPE_CHECKING:
    from robot_daemon.offline.compare import Comparison

INSTALL_HINT: Final = "plots need matplotlib: pip install 'robot-daemon[plot]'"
#: Probability bins of the reliability diagram.
RELIABILITY_BINS: Final = 10
#: The threshold grid of the F1 curve, as fine as the one thresholds are tuned on, and finer.
_F1_GRID: Final = np.linspace(0.01, 0.99, 99)
_DPI: Final = 100


def require_matplotlib() -> None:
    """Raise :class:`RobotDaemonError` with the install command if matplotlib is missing."""
    try:
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise RobotDaemonError(INSTALL_HINT) from None


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> None:
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=_DPI))


def training_curves(path: Path, history: Sequence[Mapping[str, Any]], title: str) -> None:
    """Loss and validation macro-F1 per epoch into the PNG ``path``.

    history : one map per epoch with ``epoch``, ``train_loss`` and ``val_macro_f1``
    (None without a validation split), as ``model.training["history"]`` holds them.
    """
    require_matplotlib()
    epochs = [int(h["epoch"]) for h in history]
    fig = _figure(8, 4.5)
    loss_ax = fig.subplots()
    loss_ax.plot(epochs, [h["train_loss"] for h in history], color="tab:blue", marker=".",
                 label="training loss (mean NLL)")
    loss_ax.set_xlabel("epoch")
    loss_ax.set_ylabel("training loss", color="tab:blue")
    f1 = [h.get("val_macro_f1") for h in history]
    if any(v is not None for v in f1):
        f1_ax = loss_ax.twinx()
        f1_ax.plot(epochs, [np.nan if v is None else v for v in f1], color="tab:orange",
                   marker=".", label="validation macro-F1 (threshold 0.5)")
        f1_ax.set_ylabel("validation macro-F1", color="tab:orange")
        f1_ax.set_ylim(0, 1)
        best = int(np.nanargmax([np.nan if v is None else v for v in f1]))
        f1_ax.axvline(epochs[best], color="tab:orange", linestyle=":", linewidth=1)
        f1_ax.annotate(f"best {f1[best]:.3f} (epoch {epochs[best]})",
                       (epochs[best], f1[best]), textcoords="offset points", xytext=(-4, 6),
                       ha="right", fontsize="small", color="tab:orange")
    from matplotlib.ticker import MaxNLocator

    loss_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.legend(loc="outside lower center", ncols=2, frameon=False, fontsize="small")
    fig.suptitle(title, fontsize="medium")
    _save(fig, path)


#: The files :func:`evaluation_plots` writes into its directory.
EVALUATION_PLOTS = ("precision_recall.png", "f1_threshold.png", "reliability.png",
                    "cooccurrence.png")


def evaluation_plots(directory: Path, class_names: Sequence[str],
                     Y: npt.NDArray[np.uint8], P: npt.NDArray[np.floating[Any]],
                     thresholds: npt.NDArray[np.float64], title: str) -> list[Path]:
    """Four PNGs into ``directory`` (created); returns their paths.

    Y : (n, c) 0/1 labels; P : (n, c) predicted probabilities; thresholds : (c,) the
    model's decision thresholds.
    """
    require_matplotlib()
    directory.mkdir(parents=True, exist_ok=True)
    T = np.asarray(Y).astype(bool)
    probs = np.asarray(P, dtype=np.float64)
    written = []
    drawers = (_precision_recall, _f1_threshold, _reliability, _cooccurrence)
    for name, draw in zip(EVALUATION_PLOTS, drawers, strict=True):
        fig = draw(class_names, T, probs, thresholds)
        fig.suptitle(title, fontsize="medium")
        _save(fig, directory / name)
        written.append(directory / name)
    return written


def _grid(c: int) -> tuple[Any, npt.NDArray[Any]]:
    cols = min(4, c)
    rows = -(-c // cols)
    fig = _figure(3.2 * cols, 2.9 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for ax in axes[c:]:
        ax.set_visible(False)
    return fig, axes


def _precision_recall(names: Sequence[str], T: npt.NDArray[np.bool_],
                      P: npt.NDArray[np.float64], thresholds: npt.NDArray[np.float64]) -> Any:
    fig, axes = _grid(len(names))
    for j, (ax, name) in enumerate(zip(axes, names, strict=False)):
        precision, recall, _ = metrics.precision_recall_curve(T[:, j], P[:, j])
        ax.step(recall, precision, where="post", color="tab:blue", linewidth=1)
        chosen = metrics.per_class_scores(T[:, [j]], P[:, [j]] >= thresholds[j])
        ax.plot(chosen.recall[0], chosen.precision[0], "o", color="tab:red",
                label=f"threshold {thresholds[j]:.2f}")
        ap = metrics.average_precision(T[:, [j]], P[:, [j]])[0]
        ax.set_title(f"{name}: AP {ap:.2f}, F1 {chosen.f1[0]:.2f}", fontsize="small")
        ax.set_xlim(0, 1.02)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall")
        ax.set_ylabel("precision")
        ax.legend(loc="lower left", fontsize="x-small", frameon=False)
    return fig


def _f1_threshold(names: Sequence[str], T: npt.NDArray[np.bool_],
                  P: npt.NDArray[np.float64], thresholds: npt.NDArray[np.float64]) -> Any:
    fig, axes = _grid(len(names))
    for j, (ax, name) in enumerate(zip(axes, names, strict=False)):
        f1 = [metrics.per_class_scores(T[:, [j]], P[:, [j]] >= th).f1[0] for th in _F1_GRID]
        ax.plot(_F1_GRID, f1, color="tab:blue", linewidth=1)
        ax.axvline(thresholds[j], color="tab:red", linestyle="--", linewidth=1,
                   label=f"model's threshold {thresholds[j]:.2f}")
        ax.set_title(name, fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("threshold")
        ax.set_ylabel("F1")
        ax.legend(loc="lower center", fontsize="x-small", frameon=False)
    return fig


def reliability(truth: npt.NDArray[np.bool_], scores: npt.NDArray[np.float64],
                bins: int = RELIABILITY_BINS) -> tuple[npt.NDArray[np.float64], ...]:
    """Per probability bin: mean predicted probability, observed frequency, count.

    truth, scores : (n,). Bins are ``[0, 1/bins), ..., [1 - 1/bins, 1]``; empty bins are NaN
    in the first two arrays. Returns three arrays of shape (bins,).
    """
    index = np.minimum((scores * bins).astype(np.int64), bins - 1)
    count = np.bincount(index, minlength=bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.bincount(index, weights=scores, minlength=bins) / count
        observed = np.bincount(index, weights=truth.astype(np.float64), minlength=bins) / count
    return mean_p, observed, count


def _reliability(names: Sequence[str], T: npt.NDArray[np.bool_],
                 P: npt.NDArray[np.float64], thresholds: npt.NDArray[np.float64]) -> Any:
    fig, axes = _grid(len(names))
    for j, (ax, name) in enumerate(zip(axes, names, strict=False)):
        mean_p, observed, count = reliability(T[:, j], P[:, j])
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1,
                label="perfectly calibrated")
        ax.plot(mean_p, observed, "o-", color="tab:blue", markersize=3, linewidth=1,
                label="observed")
        ax.set_title(f"{name} ({int(count.sum())} frames)", fontsize="small")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("predicted probability")
        ax.set_ylabel("observed frequency")
        ax.legend(loc="upper left", fontsize="x-small", frameon=False)
    return fig


def cooccurrence(T: npt.NDArray[np.bool_], D: npt.NDArray[np.bool_]) -> npt.NDArray[np.float64]:
    """``M[i, j]``: the share of frames with class ``i`` present where ``j`` was predicted.

    T : (n, c) labels, D : (n, c) decisions. The diagonal is each class's recall; off it,
    what the model says when class ``i`` is there (multi-label: a row need not sum to 1).
    A class that never occurs has a row of zeros.
    """
    present = T.sum(axis=0).astype(np.float64)
    both = T.T.astype(np.float64) @ D.astype(np.float64)  # (c, c)
    shares: npt.NDArray[np.float64] = np.divide(both, present[:, None], out=np.zeros_like(both),
                                                where=present[:, None] > 0)
    return shares


def _cooccurrence(names: Sequence[str], T: npt.NDArray[np.bool_],
                  P: npt.NDArray[np.float64], thresholds: npt.NDArray[np.float64]) -> Any:
    M = cooccurrence(T, thresholds <= P)
    c = len(names)
    fig = _figure(1.0 + 0.75 * c, 1.4 + 0.65 * c)
    ax = fig.subplots()
    image = ax.imshow(M, vmin=0, vmax=1, cmap="Blues")
    for i in range(c):
        for j in range(c):
            ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize="x-small",
                    color="white" if M[i, j] > 0.6 else "black")
    ax.set_xticks(range(c), names, rotation=45, ha="right")
    ax.set_yticks(range(c), names)
    ax.set_xlabel("predicted present")
    ax.set_ylabel("truly present")
    fig.colorbar(image, ax=ax, shrink=0.8, label="share of the row's frames")
    return fig


#: The file :func:`comparison_f1` writes into its directory (``compare --plot DIR``).
COMPARE_PLOT: Final = "compare_f1.png"


def comparison_f1(directory: Path, comparison: Comparison, title: str) -> Path:
    """``compare --plot``: both models' F1 per class as bars; below, the difference
    candidate - base with its interval, beside 0 and the largest drop allowed. Written to
    ``directory`` (created); returns the PNG's path."""
    require_matplotlib()
    directory.mkdir(parents=True, exist_ok=True)
    f1, names = comparison.f1, comparison.class_names
    x = np.arange(len(names))
    fig = _figure(max(6.0, 0.8 * len(names) + 2.0), 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    for offset, values, model, macro, color in (
            (-0.2, f1.base, "base", comparison.macro_f1.base, "tab:gray"),
            (0.2, f1.candidate, "candidate", comparison.macro_f1.candidate, "tab:blue")):
        top.bar(x + offset, values, 0.4, color=color, label=f"{model}: macro F1 {macro:.3f}")
    top.set_ylim(0, 1.2)  # room for the legend above the bars
    top.set_ylabel("F1")
    top.legend(loc="upper left", ncols=2, fontsize="small", frameon=False)
    diff = f1.difference
    # A percentile interval need not contain the point estimate: no negative bar.
    errors = np.maximum(0.0, [diff - f1.low, f1.high - diff])
    level = f"{comparison.config.level * 100:g} %"
    drop = comparison.config.max_class_drop
    bottom.errorbar(x, diff, yerr=errors, fmt="o", capsize=4, color="tab:blue",
                    label=f"candidate - base, {level} interval")
    held = diff < -drop
    if held.any():  # the classes that hold the candidate back, in the verdict's colour
        bottom.plot(x[held], diff[held], "o", color="tab:red", zorder=3,
                    label="drops more than allowed")
    bottom.axhline(0.0, color="black", linewidth=0.8)
    bottom.axhline(-drop, color="tab:red", linestyle="--", linewidth=1,
                   label=f"largest drop allowed ({drop:g})")
    bottom.set_ylabel("F1 difference")
    bottom.set_xticks(x, names, rotation=30, ha="right")
    bottom.legend(loc="lower right", fontsize="x-small")
    fig.suptitle(f"{title}: {comparison.verdict.decision}", fontsize="medium")
    path = directory / COMPARE_PLOT
    _save(fig, path)
    return path
