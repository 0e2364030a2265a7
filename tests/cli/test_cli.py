"""The robot-daemon entry points: console script, python -m, exit codes."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from robot_daemon import __version__
from robot_daemon.cli import main


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "robot_daemon", "flops", "--n", "200", "--json"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["answer"] == 30


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_the_bare_command_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    for argv, commands in (([], ("run", "sim", "train", "bag", "watch")),
                           (["bag"], ("record", "play", "info", "export")),
                           (["keys"], ("generate",))):
        assert main(argv) == 0
        out, err = capsys.readouterr()
        assert not err
        assert all(c in out for c in commands), out


def test_sim_train_eval_replay_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sim", "train.mcap", "--duration", "60", "--seed", "1"]) == 0
    assert main(["sim", "test.mcap", "--duration", "30", "--seed", "2"]) == 0
    capsys.readouterr()

    assert main(["train", "train.mcap", "--out", "m.npz", "--epochs", "2", "--h", "16"]) == 0
    out = capsys.readouterr().out
    assert "epoch   2/2" in out
    assert "examples/s" in out
    assert "wrote m.npz" in out

    assert main(["eval", "m.npz", "test.mcap", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"model", "mlp", "logistic_regression", "baseline_note"}
    assert report["baseline_note"] is None
    for name in ("mlp", "logistic_regression"):
        assert report[name]["n"] == 1500
        assert 0 <= report[name]["macro_f1"] <= 1
        assert set(report[name]["per_class"]["pedestrian"]) == {
            "precision", "recall", "f1", "average_precision", "support"}

    assert main(["eval", "m.npz", "test.mcap"]) == 0
    text = capsys.readouterr().out
    assert "macro F1" in text
    assert "logistic_regression" in text

    assert main(["replay", "m.npz", "test.mcap", "--out", "pred.mcap"]) == 0
    assert "frames in 1500, answered 1500" in capsys.readouterr().out
    assert (tmp_path / "pred.mcap").stat().st_size > 0


def test_eval_without_the_training_bags_skips_the_baseline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sim", "a.mcap", "--duration", "20", "--seed", "1"]) == 0
    assert main(["train", "a.mcap", "--out", "m.npz", "--epochs", "1", "--h", "8"]) == 0
    (tmp_path / "a.mcap").rename(tmp_path / "b.mcap")
    capsys.readouterr()
    assert main(["eval", "m.npz", "b.mcap"]) == 0
    assert "baseline skipped: the model's training bags are not here" in capsys.readouterr().out


def test_errors_are_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "junk.npz").write_bytes(b"not a model")
    assert main(["replay", str(tmp_path / "junk.npz"), "x.mcap", "--out", "y.mcap"]) == 2
    out, err = capsys.readouterr()
    assert not out
    assert err.startswith("robot-daemon replay: error: model file")
    assert "Traceback" not in err


@pytest.fixture
def small_bag(tmp_path: Path) -> Path:
    path = tmp_path / "run.mcap"
    assert main(["sim", str(path), "--duration", "4", "--seed", "3"]) == 0
    return path


def _one_line_error(capsys: pytest.CaptureFixture[str], command: str, text: str) -> None:
    out, err = capsys.readouterr()
    assert not out
    assert err.startswith(f"robot-daemon {command}: error:"), err
    assert text in err
    assert err.count("\n") == 1


def test_commands_refuse_to_overwrite_their_input(
    small_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = small_bag.read_bytes()
    link = tmp_path / "link.mcap"
    link.symlink_to(small_bag)
    model = str(Path(__file__).resolve().parents[2] / "models/default.npz")
    for argv in (
        ["train", str(small_bag), "--out", str(small_bag)],
        ["train", str(small_bag), "--out", str(link)],
        ["replay", model, str(small_bag), "--out", str(small_bag)],
        ["replay", model, str(small_bag), "--out", str(link)],
        ["bag", "export", str(small_bag), str(link), "--json"],
    ):
        capsys.readouterr()
        assert main([*argv, "--overwrite"]) == 2, argv  # refused even with the flag
        _one_line_error(capsys, " ".join(argv[:2]) if argv[0] == "bag" else argv[0],
                        "would destroy what is read")
    assert small_bag.read_bytes() == before


def test_train_checks_its_output_before_training(
    small_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for out, text in ((tmp_path, "is a directory"),
                      (tmp_path / "missing" / "m.npz", "there is no directory")):
        capsys.readouterr()
        assert main(["train", str(small_bag), "--out", str(out), "--epochs", "1"]) == 2
        _one_line_error(capsys, "train", text)  # and nothing on stdout: no epoch ran


def test_model_inputs_that_would_hang_or_never_end_are_refused(
    small_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for model in (fifo, Path("/dev/zero")):
        for argv in (["eval", str(model), str(small_bag)],
                     ["replay", str(model), str(small_bag), "--out", str(tmp_path / "p.mcap")]):
            capsys.readouterr()
            assert main(argv) == 2
            _one_line_error(capsys, argv[0], "is not a regular file")


@pytest.mark.parametrize("argv", [["flops", "--n", "200"], ["sim", "s.mcap", "--duration", "1"]])
def test_a_closed_pipe_is_a_quiet_exit_141(tmp_path: Path, argv: list[str]) -> None:
    """``robot-daemon ... | head``: the reader has gone before the command writes."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run(
            [sys.executable, "-m", "robot_daemon", *argv], stdout=write_end,
            stderr=subprocess.PIPE, text=True, cwd=tmp_path, timeout=60, check=False,
        )
    finally:
        os.close(write_end)
    assert (result.returncode, result.stderr) == (141, "")


@pytest.mark.parametrize("argv", [
    ["sim", "s.mcap", "--duration", "1", "--seed", "-1"],
    ["train", "s.mcap", "--out", "m.npz", "--seed", "-1"],
    ["demo", "--seed", "-1"],
])
def test_a_negative_seed_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert "argument --seed: must be an integer >= 0, got -1" in capsys.readouterr().err


def test_sim_refuses_a_run_too_long_to_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["sim", str(tmp_path / "s.mcap"), "--duration", "1e8"]) == 2
    _one_line_error(capsys, "sim", "a simulated bag holds at most 10,000,000")
    assert not (tmp_path / "s.mcap").exists()


@pytest.mark.parametrize("argv", [
    ["bag", "record", "r.mcap", "--connect", "ipc://x", "--duration", "1e300"],
    ["bag", "record", "r.mcap", "--connect", "ipc://x", "--flush-interval", "1e300"],
    ["bag", "play", "r.mcap", "--bind", "ipc://x", "--start-offset", "1e300"],
    ["bag", "play", "r.mcap", "--bind", "ipc://x", "--duration", "1e300"],
    ["bag", "play", "r.mcap", "--bind", "ipc://x", "--drain", "1e300"],
    ["replay", "m.npz", "r.mcap", "--out", "p.mcap", "--interval-ms", "1e300"],
    ["sim", "s.mcap", "--duration", "1e300"],
    ["demo", "--duration", "1e300"],
])
def test_times_that_overflow_nanoseconds_are_usage_errors(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Each ended in 'OverflowError: cannot convert float infinity to integer'."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    assert re.search(r"must be a number of (milli)?seconds >=? 0 and <= 1e\+(09|12)",
                     capsys.readouterr().err)


def test_train_refuses_a_network_too_big_before_reading_the_bags(
    small_bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    capsys.readouterr()
    assert main(["train", str(small_bag), "--out", str(tmp_path / "m.npz"), "--h", "100000"]) == 2
    _one_line_error(capsys, "train", "needs about 224 GiB, over the 4 GiB allowed")


def test_train_and_eval_draw_their_plots(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sim", "s.mcap", "--duration", "30", "--seed", "3"]) == 0
    assert main(["train", "s.mcap", "--out", "m.npz", "--epochs", "2", "--h", "8",
                 "--plot", "curves.png"]) == 0
    assert Path("curves.png").read_bytes().startswith(b"\x89PNG")
    assert main(["eval", "m.npz", "s.mcap", "--plot", "plots"]) == 0
    assert sorted(p.name for p in Path("plots").iterdir()) == [
        "cooccurrence.png", "f1_threshold.png", "precision_recall.png", "reliability.png"]
    capsys.readouterr()
    # A plot directory that is a file, or plots of a fleet run, are refused up front.
    assert main(["eval", "m.npz", "s.mcap", "--plot", "curves.png"]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["eval", "m.npz", "s.mcap", "--plot", "p2", "--workers", "2"]) == 2
    assert "--plot reads plain bag files" in capsys.readouterr().err


def test_a_full_disk_where_a_model_is_saved_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Once a traceback: the model file's writer has no message of its own."""
    import errno

    from robot_daemon.model import Model

    def full(self: Model, path: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Model, "save", full)
    monkeypatch.chdir(tmp_path)
    assert main(["sim", "s.mcap", "--duration", "2"]) == 0
    capsys.readouterr()
    assert main(["train", "s.mcap", "--out", "m.npz", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err == ("robot-daemon train: error: cannot write: No space left on device;"
                   " free some space and run again\n")
