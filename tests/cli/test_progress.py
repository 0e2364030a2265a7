"""Tests of the progress line: drawn in place on a terminal, off in a pipe unless asked."""

from __future__ import annotations

import io

import pytest

from robot_daemon.cli import progress
from robot_daemon.cli.progress import ProgressLine

MS = 1_000_000


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


class _Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise BrokenPipeError


class _Clock:
    def __init__(self) -> None:
        self.ns = 0

    def __call__(self) -> int:
        return self.ns


def test_on_a_terminal_the_line_is_redrawn_a_few_times_a_second_and_erased() -> None:
    stream, clock = _Terminal(), _Clock()
    with ProgressLine(stream, clock=clock) as line:
        assert line.enabled
        line.update("first")  # within the first interval: a quick command draws nothing
        assert stream.getvalue() == ""
        for t_ms in range(250, 1250, 50):  # 20 updates in a second
            clock.ns = t_ms * MS
            line.update(f"at {t_ms}")
        drawn = stream.getvalue()
    assert drawn.count("\r\x1b[K") == 4  # at 250, 500, 750 and 1,000 ms
    assert "at 250" in drawn
    assert "at 300" not in drawn
    assert "\n" not in stream.getvalue()
    assert stream.getvalue().endswith("\r\x1b[K")  # erased before what follows


def test_on_a_terminal_the_line_is_cut_to_its_width(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "20")
    stream = _Terminal()
    line = ProgressLine(stream, clock=_Clock())
    line.update("x" * 50, force=True)
    assert stream.getvalue() == "\r\x1b[K" + "x" * 19


def test_a_pipe_gets_nothing_unless_asked_and_then_plain_lines() -> None:
    quiet = io.StringIO()
    line = ProgressLine(quiet)
    assert not line.enabled
    line.update("hidden", force=True)
    line.close()
    assert quiet.getvalue() == ""

    stream, clock = io.StringIO(), _Clock()
    with ProgressLine(stream, enabled=True, clock=clock) as line:
        line.update("one")
        clock.ns = 1000 * MS
        line.update("too soon")
        clock.ns = round(progress.LINE_INTERVAL_S * 1e9)
        line.update("two")
    assert stream.getvalue() == "one\ntwo\n"


def test_no_progress_turns_it_off_on_a_terminal() -> None:
    stream = _Terminal()
    line = ProgressLine(stream, enabled=False)
    line.update("hidden", force=True)
    line.close()
    assert stream.getvalue() == ""


def test_a_broken_stream_turns_the_line_off_instead_of_failing() -> None:
    line = ProgressLine(_Broken(), enabled=True)
    line.update("x")
    assert not line.enabled
    line.update("y", force=True)
    line.close()


@pytest.mark.parametrize(
    ("done", "total", "elapsed", "expected"),
    [
        (0, 100, 5.0, "ETA -"),
        (50, 100, 5.0, "ETA 5 s"),
        (10, 100, 10.0, "ETA 1 min 30 s"),
        (1, 100, 60.0, "ETA 1 h 39 min"),
        (100, 100, 7.0, "ETA 0 s"),
    ],
)
def test_eta_extrapolates_the_pace_so_far(
    done: int, total: int, elapsed: float, expected: str
) -> None:
    assert progress.eta(done, total, elapsed) == expected
