"""The contract every command keeps (README, "Conventions"): outputs, exit codes, signals,
flags and errors, command by command."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from robot_daemon.cli import main

MODEL = str(Path(__file__).resolve().parents[2] / "models/default.npz")
WAIT_S = 60  # for a process to say it is ready, on a loaded CI machine


@pytest.fixture(scope="module")
def bag(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("contract") / "run.mcap"
    assert main(["sim", str(path), "--duration", "4", "--seed", "3"]) == 0
    return path


def _refused(capsys: pytest.CaptureFixture[str], argv: Sequence[str], named: Path) -> None:
    """``argv`` exits 2 with one line that names ``named`` and the flag."""
    capsys.readouterr()
    assert main(list(argv)) == 2, argv
    out, err = capsys.readouterr()
    assert not out
    assert err.count("\n") == 1, err
    assert str(named) in err, err
    assert "exists; pass --overwrite to replace it" in err, err


def test_every_command_that_writes_refuses_an_existing_output(
    bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old = tmp_path / "old"
    old.write_bytes(b"five minutes of driving")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "reliability.png").write_bytes(b"a plot")
    (plots / "compare_f1.png").write_bytes(b"a plot")
    replays = tmp_path / "replays"
    replays.mkdir()
    (replays / bag.name).write_bytes(b"an earlier replay")
    for argv, named in (
        (["sim", str(old), "--duration", "1"], old),
        (["train", str(bag), "--out", str(old), "--epochs", "1"], old),
        (["replay", MODEL, str(bag), "--out", str(old)], old),
        (["replay", MODEL, str(bag), str(bag), "--out", str(replays)], replays / bag.name),
        (["bag", "export", str(bag), str(old), "--json"], old),
        (["bag", "record", str(old), "--connect", "tcp://127.0.0.1:1"], old),
        (["eval", MODEL, str(bag), "--plot", str(plots)], plots / "reliability.png"),
        (["compare", MODEL, MODEL, str(bag), "--plot", str(plots)], plots / "compare_f1.png"),
    ):
        _refused(capsys, argv, named)
    assert old.read_bytes() == b"five minutes of driving"


def test_eval_plot_refuses_a_plot_that_is_an_input_even_with_overwrite(
    bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The plots are replaced by name in DIR: once, a bag linked there as
    reliability.png was taken for an old plot."""
    pytest.importorskip("matplotlib")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "reliability.png").hardlink_to(bag)
    capsys.readouterr()
    assert main(["eval", MODEL, str(bag), "--plot", str(plots), "--overwrite"]) == 2
    out, err = capsys.readouterr()
    assert not out
    assert f"plot {plots / 'reliability.png'} is the input {bag}" in err, err
    assert sorted(p.name for p in plots.iterdir()) == ["reliability.png"]


def test_compare_exits_1_to_hold_and_2_on_an_error(
    bag: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gate: 0 promote, 1 hold (tests/fleet/test_compare.py has the verdicts), 2 an
    error in one line, nothing on stdout."""
    assert main(["compare", MODEL, MODEL, str(bag)]) == 1
    assert capsys.readouterr().out.splitlines()[-1].startswith("hold: no improvement")
    assert main(["compare", MODEL, str(tmp_path / "nope.npz"), str(bag)]) == 2
    out, err = capsys.readouterr()
    assert not out
    assert err.startswith("robot-daemon compare: error:"), err
    assert err.count("\n") == 1, err


def test_overwrite_replaces_an_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run.mcap"
    out.write_bytes(b"old")
    assert main(["sim", str(out), "--duration", "1", "--overwrite"]) == 0
    assert out.read_bytes()[:8] == b"\x89MCAP0\r\n"
    assert [p.name for p in tmp_path.iterdir()] == ["run.mcap"]  # no temporary file left


def test_sim_refuses_dash(capsys: pytest.CaptureFixture[str], tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["sim", "-", "--duration", "1"]) == 2
    assert "not -" in capsys.readouterr().err
    assert not (tmp_path / "-").exists()


@pytest.mark.parametrize(("argv", "suggestion"), [
    (["run", "--frame", "tcp://127.0.0.1:5556"], "did you mean --frames?"),
    (["run", "--modle", "m.npz"], "did you mean --model?"),
    (["sim", "x.mcap", "--dur", "1", "--duration", "1"], "did you mean --duration?"),
    (["rnu"], "did you mean run?"),
    (["bag", "recrod"], "did you mean record?"),
])
def test_abbreviated_or_mistyped_flags_are_refused_with_a_suggestion(
    argv: list[str], suggestion: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one line: no usage before it
    assert err.startswith("robot-daemon"), err
    assert f"{suggestion} (see robot-daemon" in err, err


def test_an_error_comes_first_and_alone(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "robot_daemon", "run", "--model", str(tmp_path / "nope.npz")],
        capture_output=True, text=True, timeout=WAIT_S, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith("robot-daemon run: error:"), done.stderr
    assert done.stderr.count("\n") == 1, done.stderr  # no settings line before it


def _started(argv: Sequence[str], ready: str, cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    """``robot-daemon ARGV``, once it wrote ``ready`` on stderr (into ``log``)."""
    with log.open("wb") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "robot_daemon", *argv], cwd=cwd,
                                stdout=subprocess.DEVNULL, stderr=stderr,
                                preexec_fn=_ctrl_c_as_in_a_terminal)
    deadline = time.monotonic() + WAIT_S
    while ready not in log.read_text():
        assert proc.poll() is None, f"exited {proc.returncode}: {log.read_text()}"
        assert time.monotonic() < deadline, f"never said {ready!r}: {log.read_text()}"
        time.sleep(0.05)
    return proc


def _ctrl_c_as_in_a_terminal() -> None:
    """SIGINT's default action in the child: a test run in the background (``cmd &``, as
    CI may) ignores SIGINT, and Python then installs no KeyboardInterrupt for it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _exit_after(proc: subprocess.Popen[bytes], signum: int) -> int:
    proc.send_signal(signum)
    try:
        return proc.wait(timeout=WAIT_S)
    finally:
        proc.kill()
        proc.wait()


# What each long-running command says when it is ready for a signal.
STREAMING = {
    "run": (["run", "--model", MODEL, "--frames", "ipc://{tmp}/f", "--pred", "ipc://{tmp}/p"],
            "serving model"),
    "metrics": (["metrics", "--pred", "ipc://{tmp}/p", "--listen", "0"],
                "Prometheus metrics on"),
    "watch": (["watch", "--no-live", "--pred", "ipc://{tmp}/p"], "watching"),
    "bag play": (["bag", "play", "{bag}", "--loop", "--bind", "ipc://{tmp}/b"], "playing"),
    "bag record": (["bag", "record", "{tmp}/r.mcap", "--connect", "ipc://{tmp}/b"],
                   "recording"),
}


@pytest.mark.parametrize("command", list(STREAMING))
@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_sigint_exits_130_and_sigterm_0_after_a_clean_stop(
    command: str, signum: int, code: int, bag: Path, tmp_path: Path
) -> None:
    argv, ready = STREAMING[command]
    argv = [a.format(tmp=tmp_path, bag=bag) for a in argv]
    log = tmp_path.parent / f"{tmp_path.name}.log"
    proc = _started(argv, ready, tmp_path, log)
    assert _exit_after(proc, signum) == code
    assert "Traceback" not in log.read_text()
    if command == "bag record":
        assert (tmp_path / "r.mcap").read_bytes()[-8:] == b"\x89MCAP0\r\n"  # finished


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_job_stopped_by_a_signal_leaves_no_output(
    signum: int, code: int, tmp_path: Path
) -> None:
    proc = _started(["sim", "long.mcap", "--duration", "20000", "--progress"], "ETA",
                    tmp_path, tmp_path.parent / f"{tmp_path.name}.log")
    assert _exit_after(proc, signum) == code
    assert list(tmp_path.iterdir()) == []  # neither the bag nor a temporary file


def test_bag_play_says_what_an_endpoint_is_and_suggests_a_free_one(
    bag: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import zmq

    assert main(["bag", "play", str(bag), "--bind", "localhost:5590"]) == 2
    assert "is not a ZeroMQ endpoint; use tcp://HOST:PORT" in capsys.readouterr().err
    with zmq.Context() as ctx, ctx.socket(zmq.PUB) as taken:
        taken.bind("tcp://127.0.0.1:*")
        endpoint = taken.getsockopt_string(zmq.LAST_ENDPOINT)
        port = int(endpoint.rsplit(":", 1)[1])
        assert main(["bag", "play", str(bag), "--bind", endpoint]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert f"Give another endpoint, such as tcp://127.0.0.1:{port + 1}" in err, err
