"""``eval``'s JSON: the model's identity beside the scores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robot_daemon import sim
from robot_daemon.cli import main
from robot_daemon.model import from_mlp, identity, load
from robot_daemon.nn import MLP
from robot_daemon.offline import evaluate
from robot_daemon.serve.reload import load_model

DEFAULT_MODEL = Path(__file__).resolve().parents[2] / "models" / "default.npz"


def test_the_json_names_the_model_and_holds_every_evaluation() -> None:
    model = from_mlp(MLP(4, 8, 2, rng=0))
    Y = np.array([[1, 0], [0, 1], [1, 1]])
    P = np.array([[0.9, 0.2], [0.1, 0.8], [0.7, 0.4]])
    mlp = evaluate.score("mlp", ["dog", "pole"], Y, P, model.thresholds)
    out = evaluate.as_json([mlp], model=identity(model, "m.npz"), baseline_note="no bags")
    assert list(out) == ["model", "mlp", "baseline_note"]
    assert out["model"] == identity(model, "m.npz")
    # by hand: dogs on rows 1 and 3, both found; poles on rows 2 and 3, only row 2 found
    assert out["mlp"]["per_class"]["dog"] | {"average_precision": None} == {
        "precision": 1.0, "recall": 1.0, "f1": 1.0, "average_precision": None, "support": 2}
    assert out["mlp"]["per_class"]["pole"]["precision"] == 1.0
    assert out["mlp"]["per_class"]["pole"]["recall"] == 0.5
    assert out["baseline_note"] == "no bags"


def test_eval_json_names_the_model_as_the_daemon_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = tmp_path / "sim.mcap"
    sim.write_bag(bag, sim.simulate(2.0, seed=5))
    argv = ["eval", str(DEFAULT_MODEL), str(bag), "--json",
            "--baseline-train", str(bag)]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["model"] == load_model(DEFAULT_MODEL).version == identity(
        load(DEFAULT_MODEL), DEFAULT_MODEL)
    assert {"mlp", "logistic_regression"} <= set(out)
