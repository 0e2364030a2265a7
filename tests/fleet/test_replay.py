"""Fleet replay: one output bag per input bag, each identical to the one-process replay."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from robot_daemon.cli import main
from robot_daemon.errors import ConfigError
from robot_daemon.fleet.replay import ReplayJob, plan, replay_one
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
    (tmp_path / "run.mcap").write_bytes(b"bag")
    with pytest.raises(ConfigError, match="would destroy what is read"):
        plan([Source(str(tmp_path / "run.mcap"), "bag")], str(tmp_path))


def test_an_output_over_an_input_by_hard_link_or_over_the_model_is_refused(
    tmp_path: Path,
) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "out").mkdir()
    bag, other = tmp_path / "a" / "run.mcap", tmp_path / "a" / "other.mcap"
    bag.write_bytes(b"bag")
    other.write_bytes(b"other")
    os.link(other, tmp_path / "out" / "run.mcap")
    with pytest.raises(ConfigError, match=r"out/run\.mcap is the input .*other\.mcap"):
        plan([Source(str(bag), "bag"), Source(str(other), "bag")], str(tmp_path / "out"))
    model = tmp_path / "out" / "m.npz"
    model.write_bytes(b"model")
    (tmp_path / "a" / "m.npz").write_bytes(b"a file that happens to share its name")
    with pytest.raises(ConfigError, match=r"out/m\.npz is the input .*out/m\.npz"):
        plan([Source(str(tmp_path / "a" / "m.npz"), "bag")], str(tmp_path / "out"), str(model))


def test_a_skipped_bag_leaves_a_file_of_its_name_in_out_alone(
    bags: Bags, model_path: Path, tmp_path: Path,
) -> None:
    from robot_daemon import model

    notes = tmp_path / "notes.txt"
    notes.write_text("the operator's notes\n")
    done = replay_one(ReplayJob(str(bags.foreign), str(notes)), model.load(model_path),
                      "model.npz", 20.0, 256)
    assert done.skipped is not None
    assert notes.read_text() == "the operator's notes\n"


def test_a_full_disk_stops_the_replay_of_many_bags_in_one_line(
    bags: Bags, model_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Once, every bag was "skipped" for the disk's sake and the job exited 0."""
    import errno

    from robot_daemon.bag import BagWriter
    from robot_daemon.bag.writer import _write_error

    def full(self: BagWriter, *args: object, **kwargs: object) -> None:
        raise _write_error(self.path, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))

    monkeypatch.setattr(BagWriter, "write", full)
    out = tmp_path / "preds"
    capsys.readouterr()
    assert main(["replay", str(model_path), *map(str, bags.readable), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robot-daemon replay: error: cannot write bag "), err
    assert err.count("\n") == 1, err
    assert "No space left on device" in err
    assert list(out.iterdir()) == []  # no temporary file either


def test_an_out_that_is_a_file_is_one_line(
    bags: Bags, model_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "preds"
    out.write_text("")
    assert main(["replay", str(model_path), str(bags.root), "--out", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"robot-daemon replay: error: --out {out} is a file; a replay of several bags writes"
        " one bag per input into a directory: give a directory\n")
