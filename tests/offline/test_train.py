"""Offline training from bags: reading labels, splitting, reproducible models."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from robot_daemon import sim, wire
from robot_daemon.bag import BagMeta, BagWriter
from robot_daemon.errors import BagError, ConfigError, RobotDaemonError
from robot_daemon.model import load
from robot_daemon.offline import train
from robot_daemon.offline.train import TrainConfig, read_labelled, split_tail


@pytest.fixture(scope="module")
def sim_bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bags") / "sim.mcap"
    sim.write_bag(path, sim.simulate(60.0, seed=3))
    return path


def _label_bag(path: Path, rows: list[tuple[np.ndarray, np.ndarray]], meta: BagMeta | None,
               junk: int = 0) -> None:
    with BagWriter(path, meta=meta) as w:
        for seq, (x, y) in enumerate(rows):
            w.write("label", wire.encode_label(seq, seq * 0.02, x, y), recv_ns=seq, sensor_ns=seq)
        for k in range(junk):
            w.write("label", b"\x93not a map", recv_ns=10_000 + k)


def test_reads_every_label_of_a_simulated_bag(sim_bag: Path) -> None:
    data = read_labelled([sim_bag])
    assert data.X.shape == (3000, 16)
    assert data.X.dtype == np.float32
    assert data.Y.shape == (3000, 8)
    assert data.Y.dtype == np.uint8
    assert data.feature_names == [f.name for f in sim.FEATURES]
    assert data.class_names == list(sim.CLASSES)
    assert data.rejected == 0
    assert not data.warnings


def test_plain_mcap_without_our_metadata_gets_default_names(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [(rng.standard_normal(5), rng.integers(0, 2, 3)) for _ in range(20)]
    _label_bag(tmp_path / "plain.mcap", rows, meta=None, junk=2)
    data = read_labelled([tmp_path / "plain.mcap"])
    assert data.X.shape == (20, 5)
    assert data.feature_names == [f"feature_{i}" for i in range(5)]
    assert data.class_names == ["class_0", "class_1", "class_2"]
    assert data.rejected == 2
    np.testing.assert_array_equal(data.Y[3], rows[3][1])


def test_labels_of_another_width_are_rejected(tmp_path: Path) -> None:
    rows = [(np.zeros(4), np.array([1, 0]))] * 3 + [(np.zeros(6), np.array([1, 0]))] * 2
    _label_bag(tmp_path / "mixed.mcap", rows, meta=None)
    data = read_labelled([tmp_path / "mixed.mcap"])
    assert (data.n, data.rejected) == (3, 2)


def test_bags_that_disagree_on_d_are_refused(tmp_path: Path) -> None:
    _label_bag(tmp_path / "a.mcap", [(np.zeros(4), np.ones(2, dtype=np.uint8))], BagMeta(d=4, c=2))
    _label_bag(tmp_path / "b.mcap", [(np.zeros(5), np.ones(2, dtype=np.uint8))], BagMeta(d=5, c=2))
    with pytest.raises(BagError, match="d = 5, the bags before it d = 4"):
        read_labelled([tmp_path / "a.mcap", tmp_path / "b.mcap"])


def test_a_bag_without_labels_is_an_error(tmp_path: Path) -> None:
    with BagWriter(tmp_path / "frames.mcap") as w:
        w.write("frame", wire.encode_frame(0, 0.0, np.zeros(3)), recv_ns=0)
    with pytest.raises(BagError, match="no valid labelled frames"):
        read_labelled([tmp_path / "frames.mcap"])


def test_split_keeps_the_tail_of_each_bag_for_validation() -> None:
    bag = np.array([0] * 10 + [1] * 5, dtype=np.int32)
    train_rows, val_rows = split_tail(bag, 0.2)
    np.testing.assert_array_equal(val_rows, [8, 9, 14])
    np.testing.assert_array_equal(train_rows, [*range(8), 10, 11, 12, 13])
    assert len(split_tail(bag, 0.0)[1]) == 0
    with pytest.raises(RobotDaemonError, match="val_fraction"):
        split_tail(bag, 1.0)


def test_training_is_reproducible_bit_for_bit(
    sim_bag: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    data = read_labelled([sim_bag])
    config = TrainConfig(h=16, epochs=2, seed=7, shuffle=True)
    for name in ("a.npz", "b.npz"):
        train.train(data, config).save(tmp_path / name)
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    other = train.train(data, TrainConfig(h=16, epochs=2, seed=8, shuffle=True))
    assert not np.array_equal(other.mlp.linears[0].W, load(tmp_path / "a.npz").mlp.linears[0].W)
    assert load(tmp_path / "a.npz").training["date"] == "2023-11-14T22:13:20Z"


def test_training_reports_every_epoch_and_records_how_it_was_made(sim_bag: Path) -> None:
    reports: list[train.EpochReport] = []
    data = read_labelled([sim_bag])
    model = train.train(data, TrainConfig(h=16, epochs=3, val_fraction=0.25), reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3]
    assert all(r.val_macro_f1 is not None and r.examples_per_s > 0 for r in reports)
    assert "loss" in reports[0].describe()
    meta = model.training
    assert meta["n_train"] == 2250
    assert meta["validation"]["n"] == 750
    assert meta["config"]["epochs"] == 3
    assert meta["data"] == [str(sim_bag)]
    assert set(meta["validation"]["f1"]) == set(sim.CLASSES)
    assert ((model.thresholds > 0) & (model.thresholds < 1)).all()


def test_bad_settings_are_refused(sim_bag: Path) -> None:
    data = read_labelled([sim_bag])
    with pytest.raises(RobotDaemonError, match="lr must be a positive number"):
        train.train(data, TrainConfig(lr=-1.0))
    with pytest.raises(RobotDaemonError, match="epochs must be at least 1"):
        train.train(data, TrainConfig(epochs=0))


def test_a_seed_or_a_network_too_big_for_memory_is_refused_before_allocating(
    sim_bag: Path,
) -> None:
    data = read_labelled([sim_bag])
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        train.train(data, TrainConfig(seed=-1))
    with pytest.raises(ConfigError, match="the weights of h=100000 in float64 needs about 224"):
        TrainConfig(h=100_000).check()
    many = train.Dataset(X=np.zeros((10**7, 16), np.float32), Y=np.zeros((10**7, 8), np.uint8),
                         bag=np.zeros(10**7, np.int32), feature_names=data.feature_names,
                         class_names=data.class_names, sources=["many"])
    with pytest.raises(ConfigError, match="h=1024 on 10000000 examples of d=16, c=8"):
        train.train(many, TrainConfig(h=1024))


@pytest.mark.parametrize(("h", "dtype"), [(64, "float64"), (512, "float64"), (128, "float32")])
def test_the_footprint_estimate_bounds_what_training_allocates(
    sim_bag: Path, h: int, dtype: str
) -> None:
    data = read_labelled([sim_bag])
    tracemalloc.start()
    try:
        train.train(data, TrainConfig(h=h, epochs=1, dtype=dtype, lr=0.01))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= train.footprint_bytes(data.n, 16, h, 8, dtype) <= 2 * peak


def test_divergence_is_reported_not_saved(sim_bag: Path) -> None:
    data = read_labelled([sim_bag])
    with pytest.raises(RobotDaemonError, match="training diverged"):
        train.train(data, TrainConfig(h=16, epochs=1, lr=1e30))


def test_a_cut_bag_still_trains_on_what_it_holds(sim_bag: Path, tmp_path: Path) -> None:
    data = sim_bag.read_bytes()
    cut = tmp_path / "cut.mcap"
    cut.write_bytes(data[: len(data) // 2])  # a recorder killed half-way
    partial = read_labelled([cut])
    assert 0 < partial.n < 3000
    assert partial.warnings
    assert "cut.mcap" in partial.warnings[0]
    full = read_labelled([sim_bag])
    np.testing.assert_array_equal(partial.X, full.X[: partial.n])  # a prefix, never garbage
    model = train.train(partial, TrainConfig(h=8, epochs=1))
    assert model.training["n_train"] > 0


def _scripted_validation(monkeypatch: pytest.MonkeyPatch, tuned: list[float]) -> None:
    """Make the tuned-threshold validation macro-F1 of successive epochs ``tuned``.

    Each epoch scores the validation split twice, at thresholds 0.5 and then tuned; only
    the second (which picks the best epoch) is scripted.
    """
    real = train.metrics.macro_f1
    values = iter(tuned)
    calls = 0

    def macro_f1(Y: np.ndarray, D: np.ndarray) -> float:
        nonlocal calls
        calls += 1
        return next(values) if calls % 2 == 0 else real(Y, D)

    monkeypatch.setattr(train.metrics, "macro_f1", macro_f1)


def test_the_best_epoch_is_kept_and_training_stops_when_it_stops_improving(
    sim_bag: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = read_labelled([sim_bag])
    _scripted_validation(monkeypatch, [0.5, 0.9, 0.6, 0.7, 0.95])
    reports: list[train.EpochReport] = []
    model = train.train(data, TrainConfig(h=8, epochs=10, patience=2), reports.append)
    assert [r.epoch for r in reports] == [1, 2, 3, 4]  # 2 epochs without a better one
    assert [r.best_epoch for r in reports] == [1, 2, 2, 2]
    assert model.training["best_epoch"] == 2
    assert model.training["epochs_run"] == 4
    assert "ETA" in reports[0].describe()
    assert "(best: epoch 2)" in reports[-1].describe()
    # The kept weights are epoch 2's: training the same way for exactly 2 epochs gives them.
    _scripted_validation(monkeypatch, [0.5, 0.9])
    two = train.train(data, TrainConfig(h=8, epochs=2, patience=0, keep_best=False))
    for ours, theirs in zip(model.mlp.linears, two.mlp.linears, strict=True):
        np.testing.assert_array_equal(ours.W, theirs.W)


def test_the_users_loop_is_one_flag_away(sim_bag: Path) -> None:
    # --no-shuffle --patience 0 --no-keep-best --epochs 10: the reference sgd, as specified.
    data = read_labelled([sim_bag])
    config = TrainConfig(h=8, epochs=2, shuffle=False, patience=0, keep_best=False)
    model = train.train(data, config)
    assert model.training["best_epoch"] is None
    assert model.training["epochs_run"] == 2
    with pytest.raises(ConfigError, match="patience must be >= 0"):
        train.train(data, TrainConfig(patience=-1))
