"""``train --init MODEL``: fine-tuning starts from the model, keeps or refits its
normalisation, refuses what does not fit it and records where the new model came from."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from robot_daemon import model, sim, wire
from robot_daemon.bag import BagMeta, BagWriter
from robot_daemon.cli import main
from robot_daemon.errors import ConfigError
from robot_daemon.model import fit_normalization
from robot_daemon.nn import MLP
from robot_daemon.offline import metrics, train
from robot_daemon.offline.finetune import Init
from robot_daemon.offline.train import Dataset, TrainConfig, split_tail

DEFAULT = Path(__file__).resolve().parents[2] / "models/default.npz"


@pytest.fixture(scope="module")
def drifted() -> sim.SimData:
    """Five simulated minutes at 10 Hz of a robot whose sensors drifted (3,000 frames)."""
    return sim.simulate(300.0, 10.0, seed=31, calibration_drift=8)


def _dataset(drive: sim.SimData, name: str = "drifted") -> Dataset:
    return Dataset(X=drive.X, Y=drive.Y, bag=np.zeros(drive.n, np.int32),
                   feature_names=list(sim.FEATURE_NAMES), class_names=list(sim.CLASSES),
                   sources=[name])


@pytest.fixture(scope="module")
def drifted_bag(drifted: sim.SimData, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("finetune") / "drifted.mcap"
    sim.write_bag(path, drifted)
    return path


def _params(m: model.Model) -> list[np.ndarray]:
    return m.mlp.copy_params()


def test_a_fine_tune_is_sgd_from_the_models_weights_on_its_normalisation(
    drifted: sim.SimData,
) -> None:
    init = Init.load(DEFAULT)
    data = _dataset(drifted)
    config = TrainConfig(epochs=1, seed=5, keep_best=False, patience=0)
    tuned = train.train(data, config, init=init)
    # The oracle: the reference network built from the init's weights by hand, one
    # shuffled epoch of the reference SGD on the head of the bag, normalised as the
    # init model normalises.
    rows = split_tail(data.bag, config.val_fraction)[0]
    X = (data.X[rows] - init.model.mean) / init.model.scale
    by_hand = MLP.from_params(*_params(init.model), rng=5)
    by_hand.sgd(X, data.Y[rows].astype(float), epochs=1, bs=100, lr=0.1, shuffle=True)
    for ours, theirs in zip(_params(tuned), by_hand.copy_params(), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    # Epoch 0 is the init model before any step: its loss on the training rows,
    # binary cross-entropy summed over classes and averaged over frames.
    P = np.clip(init.model.predict_proba(data.X[rows]), 1e-12, 1 - 1e-12)
    Y = data.Y[rows]
    bce = -np.mean(np.sum(Y * np.log(P) + (1 - Y) * np.log(1 - P), axis=1))
    history = tuned.training["history"]
    assert [h["epoch"] for h in history] == [0, 1]
    assert history[0]["train_loss"] == pytest.approx(bce, rel=1e-9)
    assert tuned.training["epochs_run"] == 1
    assert init.model.mlp.copy_params()[0] is not tuned.mlp.linears[0].W  # a copy, untouched
    np.testing.assert_array_equal(init.model.mlp.linears[0].W, model.load(DEFAULT).mlp.linears[0].W)


def test_the_init_model_is_kept_when_no_epoch_beats_it(drifted: sim.SimData) -> None:
    # At a learning rate of 1e-12 no epoch changes a decision: epoch 0 stays the best
    # (the earlier of equal epochs is kept), and keep-best hands back the init's weights.
    init = Init.load(DEFAULT)
    tuned = train.train(_dataset(drifted), TrainConfig(epochs=2, lr=1e-12), init=init)
    assert tuned.training["best_epoch"] == 0
    for ours, theirs in zip(_params(tuned), _params(init.model), strict=True):
        np.testing.assert_array_equal(ours, theirs)
    np.testing.assert_array_equal(tuned.mean, init.model.mean)


def test_the_normalisation_is_kept_unless_renormalise_is_asked(drifted: sim.SimData) -> None:
    data = _dataset(drifted)
    config = TrainConfig(epochs=1)
    kept = train.train(data, config, init=Init.load(DEFAULT))
    default = model.load(DEFAULT)
    np.testing.assert_array_equal(kept.mean, default.mean)
    np.testing.assert_array_equal(kept.scale, default.scale)
    refit = train.train(data, config, init=Init.load(DEFAULT, renormalise=True))
    mean, scale = fit_normalization(data.X[split_tail(data.bag, 0.2)[0]])
    np.testing.assert_array_equal(refit.mean, mean)
    np.testing.assert_array_equal(refit.scale, scale)
    assert not np.allclose(refit.mean, default.mean)  # drift moved the readings
    assert kept.training["init"]["normalisation"] == "kept"
    assert refit.training["init"]["normalisation"] == "refitted on the data"


def test_fine_tuning_on_a_drifted_robot_beats_the_model_it_starts_from(
    drifted: sim.SimData,
) -> None:
    held_out = sim.simulate(300.0, 10.0, seed=32, calibration_drift=8)
    init = Init.load(DEFAULT)
    tuned = train.train(_dataset(drifted), TrainConfig(epochs=5), init=init)

    def f1(m: model.Model) -> float:
        return metrics.macro_f1(held_out.Y, m.predict(held_out.X))

    # Measured: 0.46 before, 0.55 after.
    assert f1(tuned) > f1(init.model) + 0.05


def test_the_lineage_is_recorded_as_the_name_the_init_model_goes_by(
    drifted_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "tuned.npz"
    assert main(["train", str(drifted_bag), "--init", str(DEFAULT), "--out", str(out),
                 "--epochs", "1"]) == 0
    printed = capsys.readouterr().out
    assert "epoch   0/1" in printed
    assert "(the --init model, before training)" in printed
    tuned = model.load(out)
    parent = model.load(DEFAULT)
    # The daemon's model_version, replay's and eval --json's name of the parent.
    assert tuned.training["init"] == {"model": model.identity(parent, DEFAULT),
                                      "path": str(DEFAULT), "normalisation": "kept",
                                      "thresholds": "tuned"}
    assert (tuned.h, tuned.mlp.dtype) == (parent.h, parent.mlp.dtype)
    assert tuned.training["config"]["h"] == parent.h
    assert "init" not in parent.training


def _capture_bag(path: Path, drive: sim.SimData, every: int = 10) -> Path:
    """A capture bag of ``drive``: every ``every``-th frame's label (as if a trigger chose
    them) and one ``stream`` record of all of its frames (what the robot served)."""
    from robot_daemon.capture import stream
    from robot_daemon.moments import Moments

    meta = BagMeta(d=drive.X.shape[1], c=drive.Y.shape[1],
                   feature_names=list(sim.FEATURE_NAMES), class_names=list(sim.CLASSES),
                   extra={"source": stream.CAPTURE_SOURCE})
    with BagWriter(path, meta=meta) as bag:
        for seq in range(0, drive.n, every):
            t_ns = round(float(drive.t[seq]) * 1e9)
            bag.write("label", wire.encode_label(seq, float(drive.t[seq]), drive.X[seq],
                                                 drive.Y[seq], "sim"), t_ns, t_ns)
        record = stream.StreamRecord(Moments.of(drive.X), 0.0, float(drive.t[-1]), "m")
        bag.write(stream.TOPIC, stream.encode(record), t_ns)
    return path


def test_renormalise_on_captures_fits_the_stream_the_robot_served_and_keeps_thresholds(
    drifted: sim.SimData, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    (tmp_path / "captures").mkdir()
    bag = _capture_bag(tmp_path / "captures" / "capture-1.mcap", drifted)
    mean, scale = fit_normalization(drifted.X)  # every frame, not the 300 captured
    parent = model.load(DEFAULT)
    models = []
    # One bag file: one-process training; its directory: the fleet's, in this process.
    for i, source in enumerate((bag, tmp_path / "captures")):
        out = tmp_path / f"m{i}.npz"
        assert main(["train", str(source), "--init", str(DEFAULT), "--renormalise",
                     "--out", str(out), "--epochs", "2"]) == 0
        printed = capsys.readouterr().out
        assert (f"normalisation refitted on the {drifted.n:,} frames the robot served"
                in printed)
        assert "thresholds kept from the --init model" in printed
        models.append(model.load(out))
    for tuned in models:
        np.testing.assert_allclose(tuned.mean, mean, rtol=1e-9)
        np.testing.assert_allclose(tuned.scale, scale, rtol=1e-9)
        np.testing.assert_array_equal(tuned.thresholds, parent.thresholds)
        assert tuned.training["init"]["thresholds"] == "kept"
    assert models[0].training["validation"]["macro_f1"] == pytest.approx(
        models[1].training["validation"]["macro_f1"], abs=1e-9)


def test_kept_thresholds_also_judge_each_epoch_in_one_process_training(
    drifted: sim.SimData, tmp_path: Path,
) -> None:
    """The epoch kept is the best at the thresholds the model ships with, as in the
    fleet's training: one-process training judged each epoch at thresholds tuned on the
    validation split, then shipped the kept ones (its validation line said 0.658 where
    the epochs it picked from said 0.792, and it kept another epoch than the fleet)."""
    from robot_daemon.capture import stream

    bag = _capture_bag(tmp_path / "capture-1.mcap", drifted)
    init = Init.load(DEFAULT, renormalise=True)
    init = dataclasses.replace(init, served=stream.of_bags([bag], init.model.d))
    assert init.keeps_thresholds
    data = train.read_labelled([bag])
    tuned = train.train(data, TrainConfig(epochs=3, patience=0), init=init)
    history = tuned.training["history"]
    # Epoch 0 is the --init model, scored at its own thresholds on the validation rows.
    rows = split_tail(data.bag, 0.2)[1]
    fitted = init.normalisation()
    assert fitted is not None  # the stream's
    mean, scale = fitted
    X_val = ((data.X[rows] - mean) / scale).astype(init.model.mlp.dtype)
    probs = init.model.mlp.predict_proba(X_val)
    assert history[0]["val_macro_f1_tuned"] == pytest.approx(
        metrics.macro_f1(data.Y[rows], probs >= init.model.thresholds), abs=1e-12)
    best = tuned.training["best_epoch"]
    np.testing.assert_array_equal(tuned.thresholds, init.model.thresholds)
    assert tuned.training["validation"]["macro_f1"] == pytest.approx(
        history[best]["val_macro_f1_tuned"], abs=1e-12)


def test_captures_mixed_with_a_drive_tune_thresholds_on_the_rows_as_before(
    drifted: sim.SimData, drifted_bag: Path, tmp_path: Path,
) -> None:
    bag = _capture_bag(tmp_path / "capture-1.mcap", drifted)
    out = tmp_path / "m.npz"
    assert main(["train", str(bag), str(drifted_bag), "--init", str(DEFAULT),
                 "--renormalise", "--out", str(out), "--epochs", "1"]) == 0
    tuned = model.load(out)
    # The stream records stand for the capture only: fitted on the training rows.
    assert tuned.training["init"] == {"model": model.identity(model.load(DEFAULT), DEFAULT),
                                      "path": str(DEFAULT),
                                      "normalisation": "refitted on the data",
                                      "thresholds": "tuned"}


def _refused(capsys: pytest.CaptureFixture[str], argv: list[str], says: str,
             *, after_progress: bool = False) -> None:
    """Exit 2 and one line of error, alone (or after the progress line of the fleet's
    first pass, which is the one that finds d and c)."""
    capsys.readouterr()
    assert main(argv) == 2, argv
    out, err = capsys.readouterr()
    assert not out
    lines = err.splitlines()
    assert len(lines) == 1 or (after_progress and lines[0].startswith("train: ")), err
    assert lines[-1].startswith("robot-daemon train: error: "), err
    assert says in lines[-1], err


def test_an_architecture_other_than_the_models_is_refused(
    drifted_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = str(tmp_path / "m.npz")
    base = ["train", str(drifted_bag), "--init", str(DEFAULT), "--out", out]
    _refused(capsys, [*base, "--h", "32"],
             f"--h 32 conflicts with --init {DEFAULT} (h = 64): a fine-tune keeps")
    _refused(capsys, [*base, "--dtype", "float32"],
             "--dtype float32 conflicts with --init")
    _refused(capsys, ["train", str(drifted_bag), "--out", out, "--renormalise"],
             "--renormalise needs --init MODEL")
    _refused(capsys, [*base[:-1], str(DEFAULT), "--overwrite"],
             f"--out {DEFAULT} is the input")
    _refused(capsys, [*base[:3], str(tmp_path / "none.npz"), *base[4:]],
             "no such --init model file")
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(ConfigError, match="h 16 conflicts"):
        train.train(_dataset(sim.simulate(10.0, 10.0)), TrainConfig(h=16),
                    init=Init.load(DEFAULT))


def _label_bag(path: Path, d: int, c: int, class_names: list[str] | None,
               extra: dict[str, str] | None = None) -> None:
    meta = BagMeta(d=d, c=c, class_names=class_names, extra=extra or {})
    rng = np.random.default_rng(0)
    with BagWriter(path, meta=meta) as w:
        for seq in range(50):
            x, y = rng.standard_normal(d), rng.integers(0, 2, c)
            w.write("label", wire.encode_label(seq, seq * 0.02, x, y), recv_ns=seq)


@pytest.mark.parametrize("capture", [False, True], ids=["bag", "capture"])
@pytest.mark.parametrize(("d", "c", "classes", "says"), [
    (5, 8, list(sim.CLASSES), "takes d = 16 and predicts c = 8 classes; the data has d = 5"),
    (16, 3, None, "the data has d = 16, c = 3"),
    (16, 8, [*sim.CLASSES[:-1], "bollard"], "the data labels pedestrian, "),
])
def test_data_the_model_does_not_fit_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], d: int, c: int,
    classes: list[str] | None, says: str, capture: bool,
) -> None:
    """Also a capture bag with --renormalise: what it changes in the recipe was said
    before the data was checked, two lines on stdout before the error."""
    from robot_daemon.capture import stream

    bag = tmp_path / "other.mcap"
    _label_bag(bag, d, c, classes, {"source": stream.CAPTURE_SOURCE} if capture else None)
    out = tmp_path / "m.npz"
    flags = ["--init", str(DEFAULT), "--out", str(out), *(["--renormalise"] * capture)]
    _refused(capsys, ["train", str(bag), *flags], says)
    # The fleet path (a directory source) refuses the same data the same way.
    _refused(capsys, ["train", str(tmp_path), *flags], says, after_progress=True)
    assert not out.exists()
