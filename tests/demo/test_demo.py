"""``robot-daemon demo``: end to end with the real daemon, the live view, signals, errors.

The end-to-end runs are subprocesses, as a person runs them; the scores they print are
checked against ``robot-daemon eval``'s offline path on the same bag, an independent
route to the same numbers. matplotlib is in the ``test`` extra, so the PNG path runs here.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from robot_daemon import model as model_file
from robot_daemon.cli import main
from robot_daemon.demo import recording, stream, summary
from robot_daemon.demo import run as demo
from robot_daemon.demo.options import DemoOptions
from robot_daemon.demo.view import LiveView, progress_line, render, terminal_view
from robot_daemon.offline import evaluate, train

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = ROOT / "models" / "default.npz"
# Seed 3 has a pedestrian in its first 4 s, so the scores below are not all zero.
SHORT = ("--duration", "4", "--seed", "3", "--rate", "4")


def _command(workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "robot_daemon", "demo", "--model", str(DEFAULT_MODEL),
            "--workdir", str(workdir), "--no-live", *args]


def test_the_demo_answers_every_frame_and_scores_like_the_offline_model(
    workdir: Path,
) -> None:
    result = subprocess.run(_command(workdir, *SHORT), capture_output=True, text=True,
                            timeout=60, check=False, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    out = result.stdout
    assert "bag: simulating 4 s of sidewalk driving at 50 Hz (seed 3)" in out
    assert "frames sent 200 of 200, answered 200 of 200\n" in out
    assert re.search(r"latency, frame sent -> pred received: p50 \d+\.\d ms, p99 \d+\.\d ms", out)
    assert "daemon (its last status): dropped 0 rejected 0 lost 0" in out
    assert "and the stream agree" in out

    # The streamed scores are the offline evaluation's (eval's code path, not the demo's).
    bag = workdir / "demo-3-4s.mcap"
    offline = evaluate.evaluate_model(model_file.load(DEFAULT_MODEL), train.read_labelled([bag]))
    macro = re.search(r"^macro F1\s+streamed: (\d\.\d{4})$", out, re.MULTILINE)
    assert macro is not None, out
    assert float(macro.group(1)) == pytest.approx(offline.macro_f1, abs=1e-4)
    pedestrian = re.search(r"^pedestrian\s+(\d+) \| (\S+) (\S+) (\S+)", out, re.MULTILINE)
    assert pedestrian is not None
    assert int(pedestrian.group(1)) == offline.support[0] > 0
    assert float(pedestrian.group(4)) == pytest.approx(offline.f1[0], abs=1e-3)
    assert "macro F1 over the 1 class present" in out

    png = workdir / "demo.png"
    assert f"timeline: {png}" in out
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (workdir / "daemon.log").exists()


def _read_until(proc: subprocess.Popen[bytes], marker: bytes, timeout: float) -> bytes:
    """Read the child's stdout until the regex ``marker`` matches (fail after ``timeout``)."""
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    while not re.search(marker, seen):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stdout], [], [], max(0.0, remaining))
        chunk = os.read(proc.stdout.fileno(), 65536) if ready else b""
        if not chunk:
            raise AssertionError(f"no {marker!r} from the demo; it printed:\n{seen.decode()}")
        seen += chunk
    return seen


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains ``text`` (a /proc scan, no psutil)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
            if text.encode() in cmdline:
                found.append(int(entry.name))
    return found


@pytest.mark.timing  # every frame sent before the stop answered: a loaded CPU lags
def test_sigint_and_sigterm_mid_run_stop_everything_and_print_the_partial_summary(
    workdir: Path,
) -> None:
    # Two runs at once: each spends most of its time waiting for its daemon to start.
    procs: dict[signal.Signals, subprocess.Popen[bytes]] = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM):
            (workdir / signum.name).mkdir()
            (workdir / signum.name / "demo.png").write_bytes(b"an old run's timeline")
            procs[signum] = subprocess.Popen(
                _command(workdir / signum.name, "--duration", "20", "--rate", "1"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=workdir)
        # A progress line (every 2 s) with frames sent: the signal lands mid-stream.
        printed = {s: _read_until(p, rb"sent [1-9]", timeout=30) for s, p in procs.items()}
        for signum, proc in procs.items():
            proc.send_signal(signum)
        for signum, proc in procs.items():
            rest, err = proc.communicate(timeout=30)
            _check_stopped(proc, signum, (printed[signum] + rest).decode(), err.decode())
            # The timeline of what was streamed is written too (an old one would mislead).
            png = workdir / signum.name / "demo.png"
            assert png.read_bytes().startswith(b"\x89PNG"), (printed[signum] + rest).decode()
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def _check_stopped(proc: subprocess.Popen[bytes], signum: signal.Signals, out: str,
                   err: str) -> None:
    assert proc.returncode == 128 + signum, err  # 130 for SIGINT, 143 for SIGTERM
    assert f"partial summary (interrupted by {signum.name})" in out
    sent = re.search(r"frames sent (\d+) of 1000, answered (\d+) of (\d+)", out)
    assert sent is not None, out
    assert 0 < int(sent.group(1)) < 1000
    assert sent.group(2) == sent.group(3)  # what went out was answered before the stop
    assert "Traceback" not in err
    # Nothing left behind: the daemon (reaped: its pid is gone) and its ipc directory.
    pid = re.search(r"daemon: pid (\d+)", out)
    assert pid is not None
    assert not Path(f"/proc/{pid.group(1)}").exists()
    ipc_prefix = f"rd-demo-{proc.pid}-"
    assert _processes_mentioning(ipc_prefix) == []
    assert not list(Path("/tmp").glob(ipc_prefix + "*"))


def test_a_missing_model_is_one_line_and_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = workdir / "nope.npz"
    assert main(["demo", "--model", str(missing), "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err == (f"robot-daemon demo: error: model file {missing} does not exist; run from"
                   " the repository root (scripts/demo does) or pass --model PATH\n")


def test_a_bad_bag_is_one_line_and_exit_2(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    junk = workdir / "junk.mcap"
    junk.write_bytes(b"not a bag at all")
    assert main(["demo", "--bag", str(junk), "--model", str(DEFAULT_MODEL),
                 "--workdir", str(workdir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("robot-daemon demo: error: ")
    assert str(junk) in err
    assert err.count("\n") == 1


def test_a_png_path_that_cannot_be_written_is_refused_before_the_run(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = workdir / "no" / "such" / "dir" / "demo.png"
    assert main(["demo", "--png", str(png), "--model", str(DEFAULT_MODEL),
                 "--workdir", str(workdir)]) == 2
    assert capsys.readouterr().err == (f"robot-daemon demo: error: cannot write --png {png}:"
                                       f" there is no directory {png.parent}; create it first\n")
    assert list(workdir.iterdir()) == []  # nothing simulated


def test_a_png_that_is_the_bag_or_the_model_is_refused(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bag = workdir / "run.mcap"
    assert main(["sim", str(bag), "--duration", "1"]) == 0
    before = bag.read_bytes()
    for png in (bag, DEFAULT_MODEL):
        capsys.readouterr()
        assert main(["demo", "--bag", str(bag), "--png", str(png), "--model", str(DEFAULT_MODEL),
                     "--workdir", str(workdir)]) == 2
        assert "writing it would destroy what is read" in capsys.readouterr().err
    assert bag.read_bytes() == before


def test_duration_with_a_bag_plays_its_first_seconds(workdir: Path) -> None:
    bag = workdir / "run.mcap"
    assert main(["sim", str(bag), "--duration", "4", "--seed", "3"]) == 0
    result = subprocess.run(_command(workdir, "--bag", str(bag), "--duration", "1", "--rate", "4"),
                            capture_output=True, text=True, timeout=60, check=False, cwd=workdir)
    assert result.returncode == 0, result.stderr
    assert f"bag: {bag} (its first 1 s)" in result.stdout
    assert "frames sent 50 of 50, answered 50 of 50\n" in result.stdout


def test_a_daemon_that_dies_at_startup_is_one_line_with_its_log(
    workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def dying(model: Path, endpoints: demo.Endpoints) -> list[str]:
        return [sys.executable, "-c",
                "import sys; print('error: cannot bind the pred endpoint', file=sys.stderr);"
                " sys.exit(3)"]

    monkeypatch.setattr(demo, "daemon_command", dying)
    code = main(["demo", "--duration", "1", "--model", str(DEFAULT_MODEL),
                 "--workdir", str(workdir), "--no-live"])
    assert code == 2
    err = capsys.readouterr().err
    assert err == (
        "robot-daemon demo: error: the daemon exited with code 3 at startup; the last line"
        f" of its log {workdir / 'daemon.log'}: error: cannot bind the pred endpoint\n"
    )
    assert not list(Path("/tmp").glob(f"rd-demo-{os.getpid()}-*"))


def test_the_default_bag_is_reused_when_whole_and_simulated_again_when_not(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    options = DemoOptions(model=DEFAULT_MODEL, workdir=workdir, duration_s=1, seed=5)
    loaded = model_file.load(DEFAULT_MODEL)
    path = recording.prepare_bag(options, loaded, sys.stdout)
    assert path == workdir / "demo-5-1s.mcap"
    assert "simulating" in capsys.readouterr().out
    assert recording.prepare_bag(options, loaded, sys.stdout) == path
    assert capsys.readouterr().out == f"bag: reusing {path}\n"
    path.write_bytes(path.read_bytes()[:200])  # cut, as by a crash
    assert recording.prepare_bag(options, loaded, sys.stdout) == path
    assert "damaged" in capsys.readouterr().out
    assert recording.read_bag(path, loaded).n == 50
    assert sorted(p.name for p in workdir.iterdir()) == ["demo-5-1s.mcap"]  # no temp left


def test_without_matplotlib_the_summary_says_how_to_get_the_png(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    loaded = model_file.load(DEFAULT_MODEL)
    bag = workdir / "run.mcap"
    contents = recording.BagContents(
        path=bag, seq=np.arange(3), t=np.arange(3) / 50, X=np.zeros((3, 16), np.float32),
        Y=np.zeros((3, 8), np.uint8), labelled=np.ones(3, bool), messages=3, span_s=0.04,
    )
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    streamed = stream.Stream(contents, 8)
    streamed.answered = 3
    text = summary.timeline_or_hint(streamed, loaded, workdir / "demo.png")
    assert "matplotlib is not installed" in text
    assert f"bin/pip install -e '.[plot]'\nthen rerun with --bag {bag} to reuse" in text
    assert not (workdir / "demo.png").exists()
    # The last good picture is kept, and not passed off as this run's.
    (workdir / "demo.png").write_bytes(b"\x89PNG an earlier picture")
    for answered in (3, 0):
        streamed.answered = answered
        text = summary.timeline_or_hint(streamed, loaded, workdir / "demo.png")
        assert f"{workdir / 'demo.png'} is an earlier run's" in text
    assert (workdir / "demo.png").read_bytes() == b"\x89PNG an earlier picture"


_VIEW = LiveView(
    class_names=["pedestrian", "cyclist", "dog", "bench"],
    thresholds=np.array([0.5, 0.5, 0.3, 0.5]), rate=2.0, elapsed_s=3.0, playback_s=10.0,
    total=500, sent=150, answered=148, frames_per_s=100.0, latency_ms=(10.25, 19.5),
    newest_seq=147, probs=np.array([0.9, 0.1, 0.6, 0.2], np.float32),
    truth=np.array([1, 1, 0, 0], np.uint8),
    status={"frames_dropped": 1, "frames_rejected": {"wrong_d": 2, "bad_msgpack": 1},
            "frames_lost": 4},
)


def _view(**changes: Any) -> LiveView:
    return dataclasses.replace(_VIEW, **changes)


def test_render_shows_bars_the_truth_and_the_counters() -> None:
    lines = render(_view(), width=80)
    assert lines[0] == "robot-daemon demo    3.0 s / 10.0 s  sent 150/500 (30%)  x2"
    assert lines[1] == "newest answered frame: seq 147"
    rows = {line.split()[0]: line for line in lines[3:7]}
    assert rows["pedestrian"].endswith("0.90  ✓ present")
    assert rows["cyclist"].endswith("0.10  ✗ present, missed")
    assert rows["dog"].endswith("0.60  ✗ false alarm")
    assert rows["bench"].endswith("0.20")
    assert lines[7] == "answered 148  100.0 frames/s  latency p50 10.2 ms p99 19.5 ms"
    assert lines[8] == "daemon: dropped 1 rejected 3 lost 4    Ctrl-C stops"
    assert all(len(line) <= 80 for line in lines)
    assert not any("\x1b" in line for line in lines)


def test_render_bars_mark_the_threshold_and_fit_any_width() -> None:
    # At 80 columns the bar takes what the name and the value leave: 41 cells.
    bar = render(_view(), width=80)[3].split()[1]  # pedestrian: p 0.9, threshold 0.5
    assert bar == "█" * 20 + "|" + "█" * 16 + "·" * 4  # the mark shows through the bar
    bench = render(_view(), width=80)[6].split()[1]  # p 0.2, threshold 0.5
    assert bench == "█" * 8 + "·" * 12 + "|" + "·" * 20
    wide = render(_view(), width=200)[3].split()[1]
    assert len(wide) == 200 - 10 - 3 - 26  # a wide terminal gets finer bars
    for width in (60, 72, 80, 200):
        assert all(len(line) <= width for line in render(_view(), width=width))


def test_render_never_breaks_a_word_at_80_columns() -> None:
    status = {**(_VIEW.status or {}), "health": "degraded",
              "stale_endpoints": ["tcp://127.0.0.1:5556"],
              "stale_srcs": ["lidar-front", "radar-left"]}
    view = _view(status=status, total=123_456_789, sent=123_456_000)

    def words(lines: list[str]) -> set[str]:
        return {w for line in lines for w in line.split() if not set(w) & set("█·|")}

    narrow = render(view, width=80)
    assert all(len(line) <= 80 for line in narrow)
    assert words(narrow) == words(render(view, width=400))  # wrapped between words only
    assert narrow[-1] == "health degraded (stale: tcp://127.0.0.1:5556, lidar-front, radar-left)"
    assert render(view, width=60)[-2:] == [
        "health degraded (stale: tcp://127.0.0.1:5556, lidar-front,", "  radar-left)"]


def test_render_before_any_answer_in_ascii_with_colours() -> None:
    view = _view(newest_seq=None, probs=None, truth=None, latency_ms=None, status=None,
                 answered=0, sent=0)
    lines = render(view, width=80, color=True, unicode=False)
    assert lines[1] == "newest answered frame: none yet"
    assert lines[3] == "  pedestrian " + "." * 20 + "|" + "." * 20 + "   -"
    assert lines[7] == "answered 0  100.0 frames/s  latency -"
    assert lines[8] == "daemon: dropped - rejected - lost -    Ctrl-C stops"
    assert all(line.isascii() for line in lines)
    coloured = render(_view(), color=True)
    assert "\x1b[32m✓ present\x1b[0m" in coloured[3]
    assert "\x1b[31m✗ false alarm\x1b[0m" in coloured[5]


def test_a_status_of_wrong_types_and_hostile_names_is_shown_safely() -> None:
    """The demo's view shares watch's (robot_daemon/liveview.py): a status from another
    daemon version, or an impostor on the endpoint, is shown, never run, never a crash."""
    hostile = "\x1b]0;PWNED\x07\x1b[2J"
    status = {"frames_dropped": "3", "frames_rejected": [1], "frames_lost": math.nan,
              "health": "blind", "stale_srcs": [hostile] * 20, "stale_endpoints": {}}
    view = _view(status=status)
    for width in (0, 60, 80, 200):
        lines = render(view, width=width, color=True)
        plain = [re.sub(r"\x1b\[(?:31|32|33|0)m", "", line) for line in lines]
        assert all(len(line) <= max(width, 60) and line.isprintable() for line in plain)
    text = " ".join(line.strip() for line in render(view, width=80))
    assert "daemon: dropped ? rejected ? lost nan" in text
    assert "health blind (stale: ?, \\x1b]0;PWNED\\x07\\x1b[2J," in text
    assert text.endswith("and 13 more)")  # 8 names shown of 21
    assert render(view, color=True)[-1].startswith("\x1b[31m")  # blind: red, line by line
    assert progress_line(view).endswith("dropped ? rejected ? lost nan")


def test_progress_line_is_one_plain_line() -> None:
    line = progress_line(_view())
    assert line == ("[   3.0 s] sent 150/500 (30%), answered 148  100.0 frames/s  latency"
                    " p50 10.2 ms p99 19.5 ms, dropped 1 rejected 3 lost 4")


def test_the_terminal_view_redraws_in_place_and_always_gives_the_cursor_back() -> None:
    out = io.StringIO()

    def show_then_fail() -> None:
        with terminal_view(out) as view:
            view.update(_view())
            view.update(_view(sent=151))
            raise RuntimeError("a daemon died")

    with pytest.raises(RuntimeError, match="a daemon died"):
        show_then_fail()
    text = out.getvalue()
    lines = len(render(_view()))
    assert text.startswith("\x1b[?25l")  # cursor hidden while drawing
    assert text.count(f"\x1b[{lines}F") == 1  # the second frame overwrites the first
    assert "sent 151/500" in text.split(f"\x1b[{lines}F")[1]
    assert text.endswith("\x1b[?25h")  # and shown again, even on the way out of an error
