"""Fleet training: SGD streamed from the partitions gives the one-process model."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from robot_daemon import model
from robot_daemon.cli import main

from .conftest import Bags


def test_streamed_training_on_a_scheduler_matches_one_process_training(
    bags: Bags, scheduler: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    alone, fleet = tmp_path / "alone.npz", tmp_path / "fleet.npz"
    # In order, every epoch kept: the batches are the same, so the weights are too.
    args = ["--epochs", "2", "--h", "16", "--no-shuffle", "--patience", "0", "--no-keep-best"]
    assert main(["train", *map(str, bags.good), "--out", str(alone), *args]) == 0
    glob = str(bags.root / "run*.mcap")
    assert main(["train", glob, "--out", str(fleet), "--scheduler", scheduler, *args]) == 0
    assert "train: " in capsys.readouterr().err  # the progress line
    a, b = model.load(alone), model.load(fleet)
    # The same batches in the same order; only the normalisation is summed differently.
    for la, lb in zip(a.mlp.layers, b.mlp.layers, strict=True):
        if hasattr(la, "W"):
            np.testing.assert_allclose(la.W, lb.W, rtol=0, atol=1e-9)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    f1_a = a.training["validation"]["macro_f1"]
    assert abs(b.training["validation"]["macro_f1"] - f1_a) <= 0.01
    assert b.training["validation"]["n"] == a.training["validation"]["n"]
    assert b.training["n_train"] == a.training["n_train"]


def test_shuffled_streamed_training_stays_within_reach(bags: Bags, tmp_path: Path) -> None:
    out = tmp_path / "m.npz"
    glob = str(bags.root / "run*.mcap")
    assert main(["train", glob, "--out", str(out), "--epochs", "1", "--shuffle"]) == 0
    assert model.load(out).training["fleet"]["partitions"] == 3


def test_streamed_training_keeps_its_best_epoch_and_stops_early(
    bags: Bags, tmp_path: Path,
) -> None:
    out = tmp_path / "m.npz"
    glob = str(bags.root / "run*.mcap")
    assert main(["train", glob, "--out", str(out), "--epochs", "4", "--patience", "1",
                 "--h", "8"]) == 0
    training = model.load(out).training
    history = [h["val_macro_f1_tuned"] for h in training["history"]]
    best = training["best_epoch"]
    assert history[best - 1] == max(history)
    assert training["epochs_run"] in (best, best + 1)  # stopped one epoch after the best
    assert training["validation"]["macro_f1"] == max(history)


@pytest.fixture
def runs(bags: Bags, tmp_path: Path) -> Path:
    """A directory of two bags of this test's own (the commands below must not touch them)."""
    path = tmp_path / "runs"
    path.mkdir()
    for bag in bags.good[1:]:
        shutil.copyfile(bag, path / bag.name)
    return path


def test_an_output_that_a_directory_or_a_glob_names_is_refused_before_any_work(
    runs: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    before = {p: p.read_bytes() for p in runs.iterdir()}
    (tmp_path / "link.mcap").symlink_to(runs / "run1.mcap")
    os.link(runs / "run2.mcap", tmp_path / "hard.mcap")
    monkeypatch.chdir(tmp_path)
    cases = [("runs", "runs/run1.mcap"), ("runs/*.mcap", "runs/run2.mcap"),
             ("runs/", "./runs/../runs/run1.mcap"), (str(runs), "runs/run1.mcap"),
             ("runs/**", str(runs / "run2.mcap")), ("runs", "link.mcap"),
             ("runs/*", "hard.mcap")]
    for spec, out in cases:
        assert main(["train", spec, "--out", out, "--epochs", "1", "--h", "4"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"robot-daemon train: error: --out {out} is the input ")
        assert err.endswith(f" (named by {spec!r}): writing it would destroy what is read;"
                            " give another output path\n")
    assert {p: p.read_bytes() for p in runs.iterdir()} == before


def test_a_plot_on_the_model_path_is_refused(
    runs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "m.npz"
    assert main(["train", str(runs), "--out", str(out), "--plot", str(out), "--epochs", "1",
                 "--h", "4"]) == 2
    assert capsys.readouterr().err == (f"robot-daemon train: error: --plot {out} is the model"
                                       f" file --out {out}: give the plot its own path (a .png)\n")
    assert not out.exists()


def test_a_fine_tune_on_a_scheduler_matches_the_one_process_fine_tune(
    bags: Bags, model_path: Path, scheduler: str, tmp_path: Path,
) -> None:
    alone, fleet = tmp_path / "alone.npz", tmp_path / "fleet.npz"
    args = ["--init", str(model_path), "--epochs", "2", "--no-shuffle", "--patience", "0",
            "--no-keep-best"]
    assert main(["train", *map(str, bags.good), "--out", str(alone), *args]) == 0
    glob = str(bags.root / "run*.mcap")
    assert main(["train", glob, "--out", str(fleet), "--scheduler", scheduler, *args]) == 0
    a, b = model.load(alone), model.load(fleet)
    init = model.load(model_path)
    # The init's normalisation, kept as it is: no summing to round differently.
    np.testing.assert_array_equal(b.mean, init.mean)
    for la, lb in zip(a.mlp.linears, b.mlp.linears, strict=True):
        np.testing.assert_allclose(la.W, lb.W, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(a.thresholds, b.thresholds)
    for m in (a, b):
        assert m.training["init"]["model"] == model.identity(init, model_path)
        assert [h["epoch"] for h in m.training["history"]] == [0, 1, 2]
    # Epoch 0 is judged alike: the init's loss on the training heads, and its
    # validation macro-F1 at tuned thresholds.
    h_a, h_b = a.training["history"][0], b.training["history"][0]
    assert h_b["train_loss"] == pytest.approx(h_a["train_loss"], rel=1e-12)
    assert h_b["val_macro_f1_tuned"] == pytest.approx(h_a["val_macro_f1_tuned"], abs=0.01)


def test_a_streamed_fine_tune_keeps_the_init_model_when_no_epoch_beats_it(
    bags: Bags, model_path: Path, tmp_path: Path,
) -> None:
    out = tmp_path / "m.npz"
    glob = str(bags.root / "run*.mcap")
    assert main(["train", glob, "--init", str(model_path), "--out", str(out), "--epochs", "2",
                 "--lr", "1e-12", "--renormalise"]) == 0
    tuned, init = model.load(out), model.load(model_path)
    assert tuned.training["best_epoch"] == 0
    assert tuned.training["init"]["normalisation"] == "refitted on the data"
    assert not np.array_equal(tuned.mean, init.mean)
    for ours, theirs in zip(tuned.mlp.copy_params(), init.mlp.copy_params(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
