"""Runners and the progress line."""

from __future__ import annotations

import io

import pytest

from robot_daemon.errors import ConfigError
from robot_daemon.fleet.cluster import InProcess, Progress, open_runner


def _square(x: int, plus: int = 0) -> int:
    return x * x + plus


def test_in_process_runs_in_order() -> None:
    runner = InProcess()
    assert list(runner.map_unordered(_square, [1, 2, 3], plus=1)) == [(0, 2), (1, 5), (2, 10)]
    assert list(runner.map_ordered(_square, [3, 4])) == [9, 16]


def test_a_dask_runner_keeps_the_order_where_asked(scheduler: str) -> None:
    # A builtin: the workers cannot import functions of the test modules.
    with open_runner(scheduler=scheduler) as runner:
        assert runner.workers == 2
        assert list(runner.map_ordered(pow, list(range(7)), exp=2)) == [i * i for i in range(7)]
        assert sorted(runner.map_unordered(pow, [5, 6], exp=2)) == [(0, 25), (1, 36)]


def test_progress_says_partitions_and_frames_per_second() -> None:
    stream = io.StringIO()
    progress = Progress("eval", 2, stream)
    progress.add(1000)
    progress.add(500)
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("eval: 2/2 partitions, 1,500 frames, ")
    assert lines[-1].endswith(" frames/s")


def test_workers_must_be_positive_and_a_dead_scheduler_is_named() -> None:
    with pytest.raises(ConfigError, match="at least 1"), open_runner(0):
        pass
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler"), \
            open_runner(scheduler="tcp://127.0.0.1:9", connect_timeout_s=0.5):
        pass
