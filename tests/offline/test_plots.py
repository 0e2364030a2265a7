"""Training and evaluation pictures: the numbers behind them, and the files themselves."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from robot_daemon.errors import RobotDaemonError
from robot_daemon.offline import metrics, plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_precision_recall_curve_by_hand() -> None:
    truth = np.array([1, 0, 1, 0, 1])
    scores = np.array([0.9, 0.8, 0.8, 0.3, 0.1])
    precision, recall, thresholds = metrics.precision_recall_curve(truth, scores)
    np.testing.assert_array_equal(thresholds, [0.9, 0.8, 0.3, 0.1])
    np.testing.assert_allclose(precision, [1, 2 / 3, 2 / 4, 3 / 5])
    np.testing.assert_allclose(recall, [1 / 3, 2 / 3, 2 / 3, 1])


def test_reliability_bins_by_hand() -> None:
    truth = np.array([0, 1, 1, 1], bool)
    scores = np.array([0.05, 0.15, 0.95, 1.0])
    mean_p, observed, count = plots.reliability(truth, scores, bins=10)
    assert count.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    np.testing.assert_allclose(mean_p[[0, 1, 9]], [0.05, 0.15, 0.975])
    np.testing.assert_allclose(observed[[0, 1, 9]], [0, 1, 1])
    assert np.isnan(observed[2])


def test_cooccurrence_rows_are_what_the_model_says_when_a_class_is_there() -> None:
    T = np.array([[1, 0], [1, 1], [0, 0]], bool)
    D = np.array([[1, 1], [0, 1], [1, 0]], bool)
    np.testing.assert_allclose(plots.cooccurrence(T, D), [[0.5, 1.0], [0.0, 1.0]])
    np.testing.assert_allclose(plots.cooccurrence(np.zeros((3, 2), bool), D), np.zeros((2, 2)))


def test_the_plots_are_written(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    Y = (rng.random((400, 3)) < 0.3).astype(np.uint8)
    P = np.clip(Y * 0.6 + rng.random((400, 3)) * 0.4, 0, 1)
    written = plots.evaluation_plots(tmp_path / "eval", ["a", "b", "c"], Y, P,
                                     np.array([0.5, 0.6, 0.7]), "test")
    assert sorted(p.name for p in written) == [
        "cooccurrence.png", "f1_threshold.png", "precision_recall.png", "reliability.png"]
    assert all(p.read_bytes().startswith(PNG) for p in written)
    history = [{"epoch": e, "train_loss": 1 / e, "val_macro_f1": 0.5 + e / 100}
               for e in range(1, 6)]
    plots.training_curves(tmp_path / "train.png", history, "test")
    assert (tmp_path / "train.png").read_bytes().startswith(PNG)


def test_without_matplotlib_the_error_says_how_to_get_it(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(RobotDaemonError, match=r"pip install 'robot-daemon\[plot\]'"):
        plots.require_matplotlib()
