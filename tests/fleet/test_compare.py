"""compare: the verdicts and exit codes a deployment gates on, the same figures as eval,
and the same output on one worker and many."""

from __future__ import annotations

import copy
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robot_daemon import model, sim
from robot_daemon.cli import main
from robot_daemon.fleet import compare
from robot_daemon.fleet.evaluate import Scorer
from robot_daemon.fleet.sources import Source
from robot_daemon.nn import MLP

DEFAULT = Path(__file__).resolve().parents[2] / "models/default.npz"
#: Two held-out drives of six minutes at 5 Hz: 3,600 labelled frames in 12 minute blocks.
HELD_OUT_S, RATE_HZ = 360.0, 5.0


@dataclass(frozen=True)
class Setup:
    bags: list[Path]
    default: Path
    worse: Path  # the default model with noise on its output layer: worse everywhere
    no_cyclist: Path  # the default model that never sees a cyclist


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Setup:
    root = tmp_path_factory.mktemp("compare")
    bags = []
    for seed in (31, 32):
        path = root / f"held{seed}.mcap"
        sim.write_bag(path, sim.simulate(HELD_OUT_S, RATE_HZ, seed=seed))
        bags.append(path)
    served = model.load(DEFAULT)
    worse = copy.deepcopy(served)
    out = worse.mlp.linears[-1]
    out.W += np.random.default_rng(0).normal(0.0, out.W.std(), out.W.shape)
    worse.save(root / "worse.npz")
    no_cyclist = copy.deepcopy(served)
    cyclist = served.class_names.index("cyclist")
    no_cyclist.mlp.linears[-1].b[cyclist] -= 50.0  # its probability never near a threshold
    no_cyclist.save(root / "no_cyclist.npz")
    return Setup(bags, DEFAULT, root / "worse.npz", root / "no_cyclist.npz")


def _compare(capsys: pytest.CaptureFixture[str], base: Path, candidate: Path,
             sources: list[Path], *flags: str) -> tuple[int, dict[str, Any]]:
    code = main(["compare", str(base), str(candidate), *map(str, sources), "--json", *flags])
    return code, json.loads(capsys.readouterr().out)


def test_a_model_against_itself_holds_for_want_of_an_improvement(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _compare(capsys, setup.default, setup.default, setup.bags)
    assert code == 1
    assert out["verdict"] == "hold"
    assert out["reason"] == "no improvement in macro F1 (+0.0000)"
    assert out["macro_f1"]["difference"] == 0.0
    assert out["macro_f1"]["interval"] == [0.0, 0.0]
    assert out["blocks"] == {"kind": "minute", "count": 12}


def test_a_clearly_better_model_is_promoted(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["compare", str(setup.worse), str(setup.default), *map(str, setup.bags)])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "3600 labelled frames in 12 blocks (minutes of sensor time);" \
        " 2000 resamples, seed 0"
    assert lines[-1].startswith("promote: macro F1 +0.1"), lines[-1]
    code, out = _compare(capsys, setup.worse, setup.default, setup.bags)
    assert code == 0
    low, high = out["macro_f1"]["interval"]
    assert 0 < low < out["macro_f1"]["difference"] < high
    assert all(c["f1"]["difference"] > 0 for c in out["per_class"].values())
    # The other way round: worse, and every class drops.
    code, out = _compare(capsys, setup.default, setup.worse, setup.bags)
    assert code == 1
    assert out["reason"].startswith("no improvement in macro F1 (-0.1")


def test_better_on_average_but_much_worse_on_one_class_holds_and_names_it(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = _compare(capsys, setup.worse, setup.no_cyclist, setup.bags)
    assert code == 1
    assert out["macro_f1"]["interval"][0] > 0  # better on average, beyond chance
    assert out["per_class"]["cyclist"]["f1"]["candidate"] == 0.0
    assert re.fullmatch(r"cyclist F1 drops by 0\.\d{3} \(0\.\d{3} -> 0\.000\), more than"
                        r" --max-class-drop 0\.02", out["reason"]), out["reason"]
    # Allowed to lose a whole class, it is promoted.
    code, out = _compare(capsys, setup.worse, setup.no_cyclist, setup.bags,
                         "--max-class-drop", "0.99")
    assert code == 0
    assert out["verdict"] == "promote"


def test_identical_on_one_worker_and_two_and_the_figures_are_evals(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", str(setup.worse), str(setup.default), *map(str, setup.bags), "--json"]
    assert main(argv) == 0
    one = capsys.readouterr().out
    assert main([*argv, "--workers", "2"]) == 0
    two = capsys.readouterr().out
    assert one == two
    assert main(["eval", str(setup.default), *map(str, setup.bags), "--json"]) == 0
    eval_out = json.loads(capsys.readouterr().out)
    evaluated, compared = eval_out["mlp"], json.loads(one)
    assert compared["candidate"] == eval_out["model"]
    assert compared["macro_f1"]["candidate"] == evaluated["macro_f1"]
    for name, figures in compared["per_class"].items():
        assert figures["f1"]["candidate"] == evaluated["per_class"][name]["f1"]
        assert (figures["average_precision"]["candidate"]
                == evaluated["per_class"][name]["average_precision"])
    # Another seed draws other resamples: the same figures, other intervals.
    assert main([*argv, "--seed", "1"]) == 0
    reseeded = json.loads(capsys.readouterr().out)
    assert reseeded["macro_f1"]["difference"] == compared["macro_f1"]["difference"]
    assert reseeded["macro_f1"]["interval"] != compared["macro_f1"]["interval"]


def test_mismatched_models_are_refused_in_one_line(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    renamed = model.load(DEFAULT)
    renamed.class_names = [*renamed.class_names[:-1], "bollard"]
    renamed.save(tmp_path / "renamed.npz")
    fewer = model.from_mlp(MLP(16, 8, 7))
    fewer.save(tmp_path / "fewer.npz")
    for other, differ in ((tmp_path / "renamed.npz", "class names"),
                          (tmp_path / "fewer.npz", "c: BASE has 8, CANDIDATE 7")):
        assert main(["compare", str(DEFAULT), str(other), *map(str, setup.bags)]) == 2
        out, err = capsys.readouterr()
        assert not out
        assert err.count("\n") == 1, err
        assert err.startswith("robot-daemon compare: error: the models differ in "), err
        assert differ in err


def test_bad_paths_exit_2(setup: Setup, tmp_path: Path,
                          capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["compare", str(tmp_path / "nope.npz"), str(DEFAULT), str(setup.bags[0])],
                 ["compare", str(DEFAULT), str(DEFAULT), str(tmp_path / "nope.mcap")],
                 ["compare", str(DEFAULT), str(setup.bags[0]), str(setup.bags[0])]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("robot-daemon compare: error:"), err
        assert err.count("\n") == 1, err


def test_too_few_blocks_hold_whatever_the_difference(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short = tmp_path / "short.mcap"
    sim.write_bag(short, sim.simulate(150.0, RATE_HZ, seed=33))
    code, out = _compare(capsys, setup.worse, setup.default, [short])
    assert code == 1
    assert out["blocks"] == {"kind": "minute", "count": 3}
    assert out["reason"] == ("only 3 blocks (minutes of sensor time); an interval needs at"
                             " least 10: give more or longer bags")


def test_blocks_are_bags_once_there_are_enough_bags(setup: Setup) -> None:
    served = model.load(DEFAULT)
    scorer = Scorer("base", served, served.thresholds)
    results = [compare.compare_partition(Source(str(bag), "bag"), [scorer, scorer], 16, 8)
               for bag in setup.bags]
    minutes, kind = compare.choose_blocks(results)
    assert (kind, len(minutes)) == ("minute", 12)
    assert [m[0].n for m in minutes[:6]] == [300] * 6  # whole minutes at 5 Hz
    bags, kind = compare.choose_blocks(results, min_bags=2)
    assert (kind, [b[0].n for b in bags]) == ("bag", [1800, 1800])


def test_plot_writes_the_chart_and_keeps_the_contract(
    setup: Setup, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    plots = tmp_path / "plots"
    argv = ["compare", str(setup.worse), str(setup.default), *map(str, setup.bags),
            "--plot", str(plots)]
    assert main(argv) == 0
    assert (plots / "compare_f1.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {plots / 'compare_f1.png'}" in capsys.readouterr().out
    assert main(argv) == 2
    assert "exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main([*argv, "--overwrite"]) == 0
