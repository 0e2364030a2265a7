"""Fleet eval: the same figures, bit for bit, however and wherever it runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from robot_daemon.cli import main
from robot_daemon.fleet import evaluate
from robot_daemon.fleet.cluster import InProcess
from robot_daemon.fleet.sources import Source

from .conftest import Bags, label_count


def _eval(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    assert main(["eval", *args, "--json"]) == 0
    captured = capsys.readouterr()
    return captured.out, captured.err


def test_eval_is_identical_in_one_process_on_two_workers_and_on_a_scheduler(
    bags: Bags, model_path: Path, scheduler: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # In one process, the readable bags named one by one.
    today, _ = _eval(capsys, str(model_path), *map(str, bags.readable))
    one, err = _eval(capsys, str(model_path), str(bags.root))
    two, _ = _eval(capsys, str(model_path), str(bags.root), "--workers", "2")
    remote, _ = _eval(capsys, str(model_path), str(bags.root), "--scheduler", scheduler)
    assert main(["dataset", str(bags.root), "--out", str(tmp_path / "ds"),
                 "--scheduler", scheduler]) == 0
    capsys.readouterr()
    from_dataset, _ = _eval(capsys, str(model_path), str(tmp_path / "ds"), "--workers", "2")
    assert today == one == two == remote == from_dataset
    result = json.loads(today)
    assert set(result) == {"model", "mlp", "logistic_regression", "baseline_note"}
    assert result["mlp"]["n"] == 1000 + 800 + 600 + label_count(bags.cut)
    assert "cut.mcap is damaged" in err
    assert "skipped" in err
    assert "notes.txt" in err
    assert "is not an MCAP bag" in err
    assert "eval: 5/5 partitions" in err


def test_a_partition_that_is_not_a_bag_comes_back_skipped(bags: Bags, model_path: Path) -> None:
    from robot_daemon import model

    loaded = model.load(model_path)
    scorer = evaluate.Scorer("mlp", loaded, loaded.thresholds)
    part = evaluate.eval_partition(Source(str(bags.foreign), "bag"), [scorer], 16, 8)
    assert part.rows == 0
    assert part.skipped is not None
    assert "not an MCAP bag" in part.skipped


def test_no_labelled_frame_anywhere_is_an_error(bags: Bags, model_path: Path) -> None:
    from robot_daemon import model
    from robot_daemon.errors import RobotDaemonError

    loaded = model.load(model_path)
    scorer = evaluate.Scorer("mlp", loaded, loaded.thresholds)
    with pytest.raises(RobotDaemonError, match="no labelled frames"):
        evaluate.evaluate(InProcess(), [Source(str(bags.foreign), "bag")], [scorer], 16, 8,
                          ["c"] * 8)
