"""``replay`` over many bags: one output bag per input bag, each written by a worker.

Each task is :func:`robot_daemon.offline.replay.replay` on one bag, unchanged, so every
output bag is byte for byte what the one-process replay writes for that bag. Outputs go
to ``OUT/<name of the input bag>``; two inputs with the same name, an output that exists
(without ``--overwrite``) or that would overwrite an input, are refused before anything
runs.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from robot_daemon.bag.writer import BagWriteError
from robot_daemon.errors import BagError, ConfigError, RobotDaemonError
from robot_daemon.fleet.cluster import Progress, Runner, one_blas_thread
from robot_daemon.fleet.sources import InputFiles, Source
from robot_daemon.model import Model
from robot_daemon.offline.replay import ReplayStats, replay


@dataclass(frozen=True)
class ReplayJob:
    """One bag to replay into ``out``."""

    bag: str
    out: str


@dataclass
class ReplayDone:
    """A finished job: its stats, or why the bag was skipped."""

    job: ReplayJob
    stats: ReplayStats | None = None
    skipped: str | None = None
    failed: str | None = None
    """Why its output could not be written (a full disk): that stops the job."""


def plan(sources: Sequence[Source], out_dir: str, model: str | None = None, *,
         overwrite: bool = False) -> list[ReplayJob]:
    """The output path of every input bag; ConfigError on a clash or a dataset source.

    Refused: two inputs of one name, a dataset, an output that exists unless
    ``overwrite``, and one that is an input bag or the ``model`` file (also through a
    symlink or a hard link).
    """
    jobs: list[ReplayJob] = []
    inputs = InputFiles([*sources, *([Source(model, "bag", model)] if model else [])])
    taken: dict[str, str] = {}
    for source in sources:
        if source.kind != "bag":
            raise ConfigError(f"replay reads bags, not datasets: {source.path}")
        out = str(Path(out_dir) / Path(source.path).name)
        if out in taken:
            raise ConfigError(f"{source.path} and {taken[out]} would both be replayed to {out};"
                              " replay them into different --out directories")
        inputs.check(out)
        if not overwrite and os.path.lexists(out):
            raise ConfigError(f"{out} (the replay of {source.path}) exists; pass --overwrite"
                              " to replace it")
        taken[out] = source.path
        jobs.append(ReplayJob(source.path, out))
    return jobs


def replay_one(
    job: ReplayJob, model: Model, model_name: str, interval_ms: float, max_batch: int
) -> ReplayDone:
    """Replay one bag (on a worker); a file that is not a bag is skipped, not fatal.

    The replay writes beside ``job.out`` and renames at the end, so a skipped bag leaves
    ``job.out`` as it was (a file of that name from before is kept, not deleted).
    """
    try:
        with one_blas_thread():
            stats = replay(model, job.bag, job.out, model_name=model_name,
                           interval_ms=interval_ms, max_batch=max_batch)
    except BagWriteError as exc:
        # Returned, not raised: a task that raises has Dask log its traceback.
        return ReplayDone(job, failed=str(exc))
    except BagError as exc:
        return ReplayDone(job, skipped=str(exc))
    return ReplayDone(job, stats)


def replay_all(
    runner: Runner, jobs: Sequence[ReplayJob], model: Model, *, model_name: str,
    interval_ms: float, max_batch: int, progress: Progress | None = None,
) -> list[ReplayDone]:
    """Replay every job on ``runner``; the results in the order of ``jobs``.

    Raises:
        RobotDaemonError: the first output that could not be written (a full disk; the
            tasks not yet finished are cancelled): a bag that cannot be read is skipped,
            a disk that cannot take the replays is no reason to go on.
    """
    done: list[ReplayDone | None] = [None] * len(jobs)
    for i, result in runner.map_unordered(replay_one, jobs, model=model, model_name=model_name,
                                          interval_ms=interval_ms, max_batch=max_batch):
        if result.failed is not None:
            raise RobotDaemonError(result.failed)
        done[i] = result
        if progress is not None:
            progress.add(result.stats.frames_in if result.stats else 0)
    return [d for d in done if d is not None]
