"""The model that ships: it loads, matches the simulator and still classifies fresh data."""

from __future__ import annotations

from pathlib import Path

from robot_daemon import sim
from robot_daemon.model import load
from robot_daemon.offline import evaluate, metrics

DEFAULT = Path(__file__).resolve().parent.parent / "models" / "default.npz"


def test_the_default_model_loads_and_matches_the_simulator() -> None:
    model = load(DEFAULT)
    assert (model.d, model.h, model.c) == (sim.D, 64, sim.C)
    assert model.feature_names == list(sim.FEATURE_NAMES)
    assert model.class_names == list(sim.CLASSES)
    assert model.training["config"]["epochs"] == 40


def test_the_default_model_classifies_a_run_it_never_saw() -> None:
    model = load(DEFAULT)
    run = sim.simulate(600.0, 10.0, seed=4242)
    scores = evaluate.score("mlp", model.class_names, run.Y, model.predict_proba(run.X),
                            model.thresholds)
    assert scores.macro_f1 > 0.6
    assert metrics.macro_f1(run.Y, model.predict(run.X)) == scores.macro_f1
