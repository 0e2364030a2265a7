"""Fleet replay: one output bag per input bag, each identical to the one-process replay."""

from __future__ import annotations

from pathlib import Path

import pytest

from robot_daemon.cli import main
from robot_daemon.errors import ConfigError
from robot_daemon.fleet.replay import plan
from robot_daemon.fleet.sources import Source

from .conftest import Bags


def test_replay_on_a_scheduler_writes_what_one_process_writes(
    bags: Bags, model_path: Path, scheduler: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "preds"
    assert main(["replay", str(model_path), str(bags.root), "--out", str(out),
                 "--scheduler", scheduler]) == 0
    err = capsys.readouterr().err
    assert "skipped" in err
    assert "notes.txt" in err
    for bag in bags.readable:
        alone = tmp_path / f"alone-{bag.name}"
        assert main(["replay", str(model_path), str(bag), "--out", str(alone)]) == 0
        assert (out / bag.name).read_bytes() == alone.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(b.name for b in bags.readable)


def test_two_inputs_of_one_name_are_refused(tmp_path: Path) -> None:
    sources = [Source(str(tmp_path / "a" / "run.mcap"), "bag"),
               Source(str(tmp_path / "b" / "run.mcap"), "bag")]
    with pytest.raises(ConfigError, match="would both be replayed to"):
        plan(sources, str(tmp_path / "out"))


def test_an_output_over_an_input_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="would overwrite an input bag"):
        plan([Source(str(tmp_path / "run.mcap"), "bag")], str(tmp_path))
