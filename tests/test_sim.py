"""The sidewalk simulator: determinism, realism checks, the bag it writes, and the key
claim that an MLP clearly beats logistic regression on it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from robot_daemon import nn, sim, wire
from robot_daemon.cli import main
from robot_daemon.errors import ConfigError
from robot_daemon.offline import metrics
from robot_daemon.offline.logreg import LogisticRegression


@pytest.fixture(scope="module")
def hour() -> sim.SimData:
    """An hour of driving at 5 Hz: enough obstacles for statistics."""
    return sim.simulate(3600, rate_hz=5, seed=7)


def test_same_seed_same_run_other_seed_other_run() -> None:
    a = sim.simulate(20, rate_hz=50, seed=3)
    b = sim.simulate(20, rate_hz=50, seed=3)
    c = sim.simulate(20, rate_hz=50, seed=4)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.Y, b.Y)
    np.testing.assert_array_equal(a.t, b.t)
    assert not np.array_equal(a.X, c.X)


def test_shapes_dtypes_and_times() -> None:
    data = sim.simulate(10, rate_hz=20, seed=0)
    assert data.X.shape == (200, sim.D) == (200, 16)
    assert data.Y.shape == (200, sim.C) == (200, 8)
    assert (data.X.dtype, data.Y.dtype, data.t.dtype) == (np.float32, np.uint8, np.float64)
    assert data.t[0] == sim.SIM_EPOCH_S
    np.testing.assert_allclose(np.diff(data.t), 1 / 20, atol=1e-6)  # float64 epoch seconds
    assert len(set(sim.FEATURE_NAMES)) == 16
    assert all(f.unit for f in sim.FEATURES)
    assert len(set(sim.CLASSES)) == 8


def test_readings_are_finite_and_wire_valid(hour: sim.SimData) -> None:
    assert np.isfinite(hour.X).all()
    assert set(np.unique(hour.Y)) <= {0, 1}
    for i in range(0, hour.n, 997):  # the wire's own checks, on a sample
        label = wire.decode_label(wire.encode_label(i, hour.t[i], hour.X[i], hour.Y[i]), 16, 8)
        np.testing.assert_array_equal(label.x, hour.X[i])


def test_every_class_present_a_sensible_fraction_of_the_time(hour: sim.SimData) -> None:
    present = hour.Y.mean(axis=0)
    print(dict(zip(sim.CLASSES, present.round(3), strict=True)))
    assert (present > 0.03).all()
    assert (present < 0.4).all()
    assert 0.2 < (hour.Y.sum(axis=1) == 0).mean() < 0.7  # an empty sidewalk is common


def test_several_obstacles_at_once(hour: sim.SimData) -> None:
    counts = hour.Y.sum(axis=1)
    assert (counts >= 2).mean() > 0.1
    assert (counts >= 3).mean() > 0.01
    pedestrian, stroller = sim.CLASSES.index("pedestrian"), sim.CLASSES.index("stroller")
    # Strollers are pushed by someone: most stroller readings also show a pedestrian.
    with_pusher = hour.Y[hour.Y[:, stroller] == 1, pedestrian].mean()
    assert with_pusher > 0.5


def test_readings_and_labels_are_correlated_in_time(hour: sim.SimData) -> None:
    for name in ("range_center_m", "lidar_range_m", "thermal_peak_c", "sound_level_dba"):
        x = hour.X[:, sim.FEATURE_NAMES.index(name)].astype(np.float64)
        lag1 = np.corrcoef(x[:-1], x[1:])[0, 1]
        assert lag1 > 0.6, name
    # Obstacles persist for seconds: a present class is still present 0.2 s later.
    Y = hour.Y.astype(bool)
    stays = (Y[:-1] & Y[1:]).sum() / Y[:-1].sum()
    assert stays > 0.9
    # ... and come and go: every class appears in many separate episodes.
    onsets = (~Y[:-1] & Y[1:]).sum(axis=0)
    assert (onsets >= 20).all(), onsets


def test_dropouts_show_as_finite_no_return_values(hour: sim.SimData) -> None:
    center = hour.X[:, sim.FEATURE_NAMES.index("range_center_m")]
    assert (center == sim.MAX_RANGE_M).any()
    rcs = hour.X[:, sim.FEATURE_NAMES.index("radar_rcs_dbsm")]
    assert (rcs == np.float32(-25.0)).any()  # radar noise floor: no return or dropout


def test_calibration_drift_shifts_the_thermal_reading() -> None:
    base = sim.simulate(60, rate_hz=10, seed=5)
    drifted = sim.simulate(60, rate_hz=10, seed=5, calibration_drift=1.0)
    thermal = sim.FEATURE_NAMES.index("thermal_peak_c")
    shift = np.median(drifted.X[:, thermal] - base.X[:, thermal])
    assert shift == pytest.approx(2.5, abs=0.01)
    np.testing.assert_array_equal(base.Y, drifted.Y)  # same world, miscalibrated sensors


@pytest.mark.parametrize(("duration", "rate"), [(0, 50), (10, 0), (-1, 50), (float("inf"), 1)])
def test_bad_duration_or_rate(duration: float, rate: float) -> None:
    with pytest.raises(ValueError, match="must be positive"):
        sim.simulate(duration, rate)


def test_cli_writes_a_bag_with_matching_frames_and_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mcap")
    from robot_daemon.bag import BagReader

    out = tmp_path / "sim.mcap"
    assert main(["sim", str(out), "--duration", "2", "--rate", "25", "--seed", "9"]) == 0
    assert "readings:   50 at 25 Hz" in capsys.readouterr().out
    data = sim.simulate(2, rate_hz=25, seed=9)
    with BagReader(out) as bag:
        assert (bag.meta.d, bag.meta.c) == (16, 8)
        assert bag.meta.feature_names == list(sim.FEATURE_NAMES)
        assert bag.meta.class_names == list(sim.CLASSES)
        messages = list(bag.messages())
    frames = [wire.decode_frame(m.payload, 16) for m in messages if m.topic == "frame"]
    labels = [wire.decode_label(m.payload, 16, 8) for m in messages if m.topic == "label"]
    assert [f.seq for f in frames] == [lab.seq for lab in labels] == list(range(50))
    np.testing.assert_array_equal(np.stack([f.x for f in frames]), data.X)
    np.testing.assert_array_equal(np.stack([lab.y for lab in labels]), data.Y)
    assert all(m.sensor_ns == round(data.t[i // 2] * 1e9) for i, m in enumerate(messages))


def test_progress_is_reported_as_readings_are_simulated_and_written(tmp_path: Path) -> None:
    pytest.importorskip("mcap")
    simulated: list[tuple[int, int]] = []
    written: list[tuple[int, int]] = []
    data = sim.simulate(30, rate_hz=20, seed=3, progress=lambda *a: simulated.append(a))
    sim.write_bag(tmp_path / "sim.mcap", data, progress=lambda *a: written.append(a))
    n = 600
    for calls in (simulated, written):
        assert calls[-1] == (n, n)
        assert [done for done, _ in calls] == [*range(sim.PROGRESS_EVERY, n, sim.PROGRESS_EVERY), n]
        assert {total for _, total in calls} == {n}
    again = sim.simulate(30, rate_hz=20, seed=3)  # reporting changes nothing
    np.testing.assert_array_equal(again.X, data.X)
    np.testing.assert_array_equal(again.Y, data.Y)


def test_cli_progress_line_only_on_a_terminal_or_when_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("mcap")
    assert main(["sim", str(tmp_path / "a.mcap"), "--duration", "20", "--seed", "1"]) == 0
    assert capsys.readouterr().err == ""  # stderr is not a terminal here
    argv = ["sim", str(tmp_path / "b.mcap"), "--duration", "20", "--seed", "1", "--progress"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert lines[0].startswith("[ 5.1 s / 20.0 s simulated] ETA ")  # the first 256 readings
    assert any(line.startswith("[ 5.1 s / 20.0 s written] ETA ") for line in lines)
    assert captured.out.startswith(f"wrote {tmp_path / 'b.mcap'}")


def test_sim_progress_shows_simulated_seconds_and_an_eta() -> None:
    from robot_daemon.cli.sim import describe_progress

    line = describe_progress("simulated", 6000, 15000, 50.0, elapsed_s=2.0)
    assert line == "[120.0 s / 300.0 s simulated] ETA 3 s"
    line = describe_progress("written", 50, 15000, 50.0, elapsed_s=0.1)
    assert line == "[  1.0 s / 300.0 s written] ETA 30 s"


@pytest.mark.slow
def test_mlp_clearly_beats_logistic_regression() -> None:
    """The simulator's reason to exist: classes separable only through interactions.

    Same protocol as scripts/sim_baselines.py (train on one run, test on another), at
    the reference MLP defaults (h = 64, batch 100, lr 0.1) with 30 shuffled epochs.
    """
    train = sim.simulate(7200, rate_hz=5, seed=1)
    test = sim.simulate(1200, rate_hz=5, seed=2)
    mean, std = train.X.mean(axis=0), train.X.std(axis=0)
    X_train, X_test = (train.X - mean) / std, (test.X - mean) / std
    mlp = nn.MLP(sim.D, 64, sim.C, rng=0)
    mlp.sgd(X_train, train.Y, epochs=30, shuffle=True)
    logreg = LogisticRegression(sim.D, sim.C, rng=0, epochs=30).fit(train.X, train.Y)

    scores = {}
    for name, p_train, p_test in (
        ("mlp", mlp.predict_proba(X_train), mlp.predict_proba(X_test)),
        ("logreg", logreg.predict_proba(train.X), logreg.predict_proba(test.X)),
    ):
        th = metrics.tune_thresholds(train.Y, p_train)
        scores[name] = (
            metrics.per_class_scores(test.Y, p_test >= 0.5),
            metrics.per_class_scores(test.Y, p_test >= th),
        )
        print(f"{name}: macro-F1 {scores[name][0].macro_f1:.3f} at 0.5, "
              f"{scores[name][1].macro_f1:.3f} tuned; per class "
              f"{np.round(scores[name][1].f1, 3)}")
    mlp_half, mlp_tuned = scores["mlp"]
    lr_half, lr_tuned = scores["logreg"]
    assert mlp_half.macro_f1 > lr_half.macro_f1 + 0.1
    assert mlp_tuned.macro_f1 > lr_tuned.macro_f1 + 0.08
    assert mlp_tuned.macro_f1 > 0.7
    assert (mlp_tuned.f1 > 0.45).all()  # every class is learnable


def test_a_negative_seed_or_a_huge_run_is_refused_up_front() -> None:
    with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
        sim.simulate(1.0, seed=-1)
    for duration, rate in ((1e12, 50.0), (1e200, 1e200)):
        with pytest.raises(ConfigError, match="a simulated bag holds at most"):
            sim.simulate(duration, rate)
