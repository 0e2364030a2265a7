"""``robot-daemon dataset``, and the fleet side of ``train | eval | compare | replay``.

``dataset`` is registered here. ``train``, ``eval`` and ``replay`` keep their parsers in
:mod:`.offline`, which adds the options below with :func:`add_options` and hands a run to
the handlers here when it needs them (:func:`wanted`): more than one worker, a scheduler,
or a source that is not a plain bag file (a directory, a glob, a dataset). Otherwise the
one-process job runs exactly as before. ``compare`` (parser in :mod:`.offline` too)
always runs here, partition by partition, as ``eval`` does.

Nothing here imports Dask or pyarrow at import time: ``robot-daemon run`` on a robot
never loads them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from robot_daemon.cli.args import Subparsers, positive_int
from robot_daemon.errors import ConfigError, RobotDaemonError
from robot_daemon.paths import check_input
from robot_daemon.printable import printable_lines

if TYPE_CHECKING:
    from collections.abc import Callable

    from robot_daemon.fleet.sources import Source
    from robot_daemon.model import Model
    from robot_daemon.offline.compare import Comparison
    from robot_daemon.offline.finetune import Init
    from robot_daemon.offline.train import EpochReport, TrainConfig

WORKERS_HELP = ("Dask worker processes on this machine (default 1: one process, no Dask);"
                " BLAS runs one thread per worker")
SCHEDULER_HELP = ("a running Dask scheduler, tcp://HOST:PORT (started with `dask scheduler`,"
                  " workers with `dask worker`), given 10 s to answer; its workers read"
                  " the same paths")


def add(sub: Subparsers) -> None:
    """Register dataset."""
    p = sub.add_parser(
        "dataset",
        help="decode bags into a Parquet dataset (frames and labels tables)",
        description=(
            "Decodes the frame and label messages of bags (files, directories, globs) in "
            "parallel on Dask workers into DIR/frames/ and DIR/labels/, one Parquet file per "
            "bag and table, with the bag metadata in the Parquet schema metadata and a "
            "manifest DIR/dataset.json. A cut bag contributes its complete chunks and is "
            "reported; a file that is not a bag is reported and skipped. See docs/fleet.md."
        ),
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE", help="bags, directories or globs")
    p.add_argument("--out", required=True, metavar="DIR", help="dataset directory to create")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset already at --out (kept as it was if the job fails)")
    add_options(p)
    p.set_defaults(handler=_run_dataset)


def add_options(p: argparse.ArgumentParser) -> None:
    """--workers N | --scheduler ADDRESS."""
    group = p.add_mutually_exclusive_group()
    group.add_argument("--workers", type=positive_int, default=1, help=WORKERS_HELP)
    group.add_argument("--scheduler", metavar="ADDRESS", help=SCHEDULER_HELP)


def wanted(args: argparse.Namespace, sources: list[str]) -> bool:
    """Whether a train/eval/replay run needs the fleet handlers."""
    from robot_daemon.fleet.sources import all_plain_bags

    return args.workers != 1 or args.scheduler is not None or not all_plain_bags(sources)


def warn(line: str) -> None:
    """``warning: LINE`` on stderr: a cut bag, a skipped file, a directory left out."""
    print(f"warning: {printable_lines(line)}", file=sys.stderr, flush=True)


def _run_dataset(args: argparse.Namespace) -> int:
    from robot_daemon.fleet import dataset
    from robot_daemon.fleet.cluster import Progress, open_runner
    from robot_daemon.fleet.sources import expand

    try:
        import pyarrow  # noqa: F401
    except ModuleNotFoundError:
        from robot_daemon.fleet import INSTALL_HINT

        raise RobotDaemonError(INSTALL_HINT) from None
    dataset.check_out(args.out, args.overwrite)  # before the sources are walked
    sources = expand(args.sources, warn=warn)
    for source in sources:
        if source.kind == "dataset":
            raise RobotDaemonError(f"dataset reads bags; {source.path}{source.named_by()}"
                                   " is a dataset already: leave it out")
    dataset.check_not_among_sources(args.out, sources)
    progress = Progress("dataset", len(sources))
    # Whatever stops the job (a full disk, an unreachable scheduler, Ctrl-C) takes the
    # files written so far with it, and leaves an old dataset at --out as it was.
    with dataset.creating(args.out, overwrite=args.overwrite) as build:
        with open_runner(args.workers, args.scheduler, warn=warn) as runner:
            written = dataset.write_all(runner, [s.path for s in sources],
                                        str(build.staging), progress)
        summary = dataset.finish(build, written)
    print(summary.describe())
    print(f"wrote {args.out} ({progress.frames_per_s:,.0f} frames/s)")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    """``eval`` of every partition (a bag, a dataset file) on the runner, tallies merged.

    Each partition's probabilities are computed with BLAS on one thread, wherever it runs,
    so that one worker and many give the same figures bit for bit.
    """
    from robot_daemon import model
    from robot_daemon.fleet import evaluate as fleet_eval
    from robot_daemon.fleet.cluster import Progress, open_runner
    from robot_daemon.fleet.decode import names_of
    from robot_daemon.offline import evaluate, train

    loaded = model.load(args.model)
    parts = labelled_partitions(args.bags)
    scorers = [fleet_eval.Scorer("mlp", loaded, loaded.thresholds)]
    _, class_names = names_of(parts, loaded.d, loaded.c)
    progress = Progress("eval", len(parts))
    # Connected first: a wrong --scheduler is reported before the baseline is fitted.
    with open_runner(args.workers, args.scheduler, warn=warn) as runner:
        sources = evaluate.baseline_sources(loaded, args.baseline_train)
        note = None
        if isinstance(sources, str):
            note = f"baseline skipped: {sources}"
        else:
            baseline = evaluate.fit_baseline(train.read_labelled(sources))
            scorers.append(fleet_eval.Scorer("logistic_regression", baseline.regression,
                                             baseline.thresholds))
        result = fleet_eval.evaluate(runner, parts, scorers, loaded.d, loaded.c, class_names,
                                     progress)
    for line in [*result.warnings, *(f"skipped {s}" for s in result.skipped)]:
        warn(line)
    if args.json:
        out = evaluate.as_json(result.evaluations, model=model.identity(loaded, args.model),
                               baseline_note=note)
        print(json.dumps(out, indent=2))
    else:
        print(evaluate.describe(result.evaluations))
        if note:
            print(note)
    return 0


def labelled_partitions(specs: list[str]) -> list[Source]:
    """The partitions (bags, dataset files) of ``eval`` and ``compare``'s sources."""
    from robot_daemon.fleet.sources import expand, partitions

    parts = partitions(expand(specs, warn=warn))
    if not parts:
        raise RobotDaemonError("no bags in " + ", ".join(specs))
    return parts


def run_compare(args: argparse.Namespace) -> Comparison:
    """``compare`` of two models on every partition, in one pass; prints the table (or the
    JSON) and returns the comparison, whose verdict decides the exit code.

    As for ``eval``, each partition is scored with BLAS on one thread, and the bootstrap
    sees only the blocks' statistics in a fixed order: the same output on one worker or
    many.
    """
    from robot_daemon import model
    from robot_daemon.fleet import compare
    from robot_daemon.fleet.cluster import Progress, open_runner
    from robot_daemon.fleet.evaluate import Scorer
    from robot_daemon.offline import compare as offline_compare

    base, candidate = model.load(args.base), model.load(args.candidate)
    offline_compare.check_comparable(base, candidate)
    parts = labelled_partitions(args.bags)
    config = offline_compare.CompareConfig(resamples=args.resamples, seed=args.seed,
                                           max_class_drop=args.max_class_drop)
    progress = Progress("compare", len(parts))
    with open_runner(args.workers, args.scheduler, warn=warn) as runner:
        result = compare.compare(
            runner, parts, Scorer("base", base, base.thresholds),
            Scorer("candidate", candidate, candidate.thresholds), base.d, base.c,
            base.class_names, config, progress)
    for line in [*result.warnings, *(f"skipped {s}" for s in result.skipped)]:
        warn(line)
    if args.json:
        out = offline_compare.as_json(result.comparison,
                                      base=model.identity(base, args.base),
                                      candidate=model.identity(candidate, args.candidate))
        print(json.dumps(out, indent=2))
    else:
        print(offline_compare.describe(result.comparison))
    return result.comparison


def run_train(args: argparse.Namespace, config: TrainConfig, sources: list[Source],
              init: Init | None = None, intro: Callable[[], None] | None = None) -> Model:
    """``train`` on many sources: decoded on the workers, SGD streamed in this process.

    ``sources`` are ``args.bags`` expanded (and checked against ``--out``) by the caller;
    ``init`` the model a fine-tune starts from (``--init``); ``intro`` is called once
    before the first epoch's line (after the first pass has checked the data).
    Returns the trained model; the caller saves and reports it as for one process.
    """
    from robot_daemon.fleet import train as fleet_train
    from robot_daemon.fleet.cluster import Progress, open_runner
    from robot_daemon.fleet.sources import partitions

    parts = partitions(sources)
    # Each epoch is a training pass and a validation pass, after one pass for the
    # statistics (and, in a fine-tune, one judging the starting model).
    passes = 2 * config.epochs + 1 + (init is not None)
    progress = Progress("train", len(parts) * passes)
    before = [intro] if intro is not None else []

    def report(epoch: EpochReport) -> None:
        while before:
            before.pop()()
        print(epoch.describe(), flush=True)

    with open_runner(args.workers, args.scheduler, warn=warn) as runner:
        return fleet_train.train(runner, parts, config, args.bags, report=report,
                                 progress=progress, warn=warn, init=init)


def run_replay(args: argparse.Namespace) -> int:
    """``replay`` of many bags into the directory ``--out``, one output bag per input."""
    from robot_daemon import model
    from robot_daemon.fleet import replay as fleet_replay
    from robot_daemon.fleet.cluster import Progress, open_runner
    from robot_daemon.fleet.sources import expand

    check_input(args.model, "model file")
    loaded = model.load(args.model)
    jobs = fleet_replay.plan(expand([args.bag, *args.more], warn=warn), args.out, args.model,
                             overwrite=args.overwrite)
    _make_directory(args.out)
    progress = Progress("replay", len(jobs))
    with open_runner(args.workers, args.scheduler, warn=warn) as runner:
        done = fleet_replay.replay_all(
            runner, jobs, loaded, model_name=model.identity(loaded, args.model),
            interval_ms=args.interval_ms, max_batch=args.max_batch, progress=progress)
    for result in done:
        if result.stats is None:
            warn(f"skipped {result.job.bag}: {result.skipped}")
            continue
        print(f"{result.job.bag} -> {result.job.out}")
        print("  " + result.stats.describe().replace("\n", "\n  "))
    print(f"wrote {sum(r.stats is not None for r in done)} bag(s) to {args.out}")
    return 0


def _make_directory(out: str) -> None:
    """The ``--out`` directory of a replay of many bags, made if missing."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise ConfigError(f"--out {out} is a file; a replay of several bags writes one bag"
                          " per input into a directory: give a directory") from None
    except OSError as exc:
        raise ConfigError(f"cannot make the --out directory {out}:"
                          f" {exc.strerror or exc}") from None
