"""The model that ships: it loads, matches the simulator and still classifies fresh data."""

from __future__ import annotations

import importlib.util
import json
from importlib.machinery import SourceFileLoader
from pathlib import Path
from types import ModuleType

import numpy as np

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


def _make_default_model() -> ModuleType:
    path = DEFAULT.parents[1] / "scripts" / "make_default_model.py"
    loader = SourceFileLoader("make_default_model", str(path))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def test_check_tolerates_rounding_of_another_cpu_and_names_real_differences(
    tmp_path: Path,
) -> None:
    script = _make_default_model()
    arrays = dict(np.load(DEFAULT, allow_pickle=False))
    arrays["W1"] = arrays["W1"] * (1 + 4.9e-15)  # what another CPU's BLAS gave
    np.savez(tmp_path / "near.npz", **arrays)
    assert script.compare(tmp_path / "near.npz", DEFAULT) == []
    arrays["W2"] = arrays["W2"] + 1e-6
    meta = json.loads(str(arrays["meta"]))
    meta["h"] = 65
    arrays["meta"] = np.array(json.dumps(meta))
    np.savez(tmp_path / "far.npz", **arrays)
    problems = script.compare(tmp_path / "far.npz", DEFAULT)
    assert [p.split(":")[0] for p in problems] == ["W2", "meta h"]
