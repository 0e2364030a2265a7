"""``robot-daemon train | eval | compare | replay``: the offline jobs on recorded bags."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from robot_daemon.cli import fleet
from robot_daemon.cli.args import (
    Subparsers,
    add_overwrite,
    fraction,
    milliseconds,
    positive_float,
    positive_int,
    seed,
)
from robot_daemon.errors import ConfigError, RobotDaemonError
from robot_daemon.fleet import sources
from robot_daemon.paths import check_input, check_output, same_file

if TYPE_CHECKING:
    from robot_daemon.fleet.sources import Source
    from robot_daemon.offline.finetune import Init
    from robot_daemon.offline.train import TrainConfig


def add(sub: Subparsers) -> None:
    """Register train, eval, compare and replay."""
    _add_train(sub)
    _add_eval(sub)
    _add_compare(sub)
    _add_replay(sub)


def _add_train(sub: Subparsers) -> None:
    p = sub.add_parser(
        "train",
        help="train a model file from the labelled frames of bags",
        description=(
            "Reads every 'label' message of the bags, keeps the last --val-fraction of each "
            "bag for validation, fits the input normalisation, trains the MLP with the "
            "reference SGD step (docs/spec.md: batch 100, lr 0.1) on shuffled examples, "
            "keeps the epoch with the best validation macro-F1 and stops after --patience "
            "epochs without a "
            "better one (at most --epochs), tunes one threshold per class on the "
            "validation split and writes the model atomically. The same command and seed "
            "write the same bytes."
        ),
    )
    p.add_argument("bags", nargs="+", metavar="BAG", help="MCAP bags with 'label' messages"
                   " (or directories, globs, datasets: see docs/fleet.md)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")
    p.add_argument("--init", metavar="MODEL",
                   help="fine-tune MODEL instead of training from scratch: its weights,"
                   " layer sizes, dtype and input normalisation; the data must have its d,"
                   " c and class names (docs/getting-started.md)")
    p.add_argument("--renormalise", action="store_true",
                   help="with --init: fit the input normalisation on the new data instead"
                   " of keeping MODEL's")
    p.add_argument("--h", type=positive_int, help="hidden width (default 64; --init: MODEL's)")
    p.add_argument("--epochs", type=positive_int, default=40,
                   help="most passes over the data (default 40)")
    p.add_argument("--patience", type=int, default=5, metavar="N",
                   help="stop after N epochs without a better validation macro-F1"
                   " (default 5; 0: run every epoch)")
    p.add_argument("--keep-best", action=argparse.BooleanOptionalAction, default=True,
                   help="save the best epoch's weights, not the last one's (default on)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="default 100")
    p.add_argument("--lr", type=positive_float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--seed", type=seed, default=0,
                   help="initialisation and shuffling seed, >= 0 (default 0)")
    p.add_argument("--val-fraction", type=fraction, default=0.2,
                   help="tail of each bag kept for validation (default 0.2)")
    p.add_argument("--shuffle", action=argparse.BooleanOptionalAction, default=True,
                   help="new example order every epoch (default on; --no-shuffle: the"
                   " reference schedule, in order)")
    p.add_argument("--plot", metavar="PNG",
                   help="also write loss and validation macro-F1 per epoch (plot extra)")
    p.add_argument("--dtype", choices=["float64", "float32"],
                   help="default float64; --init: MODEL's")
    add_overwrite(p, "MODEL and PNG")
    fleet.add_options(p)
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from robot_daemon.offline import plots, train

    init = _init(args)
    config = _train_config(args, init)
    # Found out now, not after minutes of training: model files are renamed into place.
    config.check()
    # Every file the sources stand for (a directory's, a glob's), not only the files
    # named: `train runs --out runs/a.mcap` must not replace the bag a.mcap.
    found = sources.expand(args.bags, warn=fleet.warn)
    sources.check_output(args.out, found, overwrite=args.overwrite, atomic=True, what="--out")
    if args.plot:
        plots.require_matplotlib()
        sources.check_output(args.plot, found, overwrite=args.overwrite, atomic=True,
                             what="--plot")
        _check_not_the_model(args.plot, args.out)
    if init is not None:  # the model a fine-tune descends from is an input, kept
        for flag, out in (("--out", args.out), ("--plot", args.plot)):
            if out:
                check_output(out, [args.init], overwrite=args.overwrite, atomic=True, what=flag)
    if init is not None:
        init = _with_served(init, found)
    if fleet.wanted(args, args.bags):
        # Said with the first epoch's line: the first pass is what checks the data.
        model = fleet.run_train(args, config, found, init,
                                intro=None if init is None else lambda: _say_served(init))
    else:
        data = train.read_labelled(args.bags)
        if init is not None:  # refused before any line of output
            init.check_data(data.X.shape[1], data.Y.shape[1], data.class_names)
            _say_served(init)
        print(f"{data.n} labelled frames from {len(args.bags)} bag(s), d={data.X.shape[1]},"
              f" c={data.Y.shape[1]}; {data.rejected} rejected", flush=True)
        for warning in data.warnings:
            print(f"warning: {warning}", file=sys.stderr)
        model = train.train(data, config, lambda report: print(report.describe(), flush=True),
                            init)
    model.save(args.out)
    best = model.training["best_epoch"]
    kept = model.training.get("init", {}).get("thresholds") == "kept"  # as the model says
    if best == 0:
        tuned = "" if kept else " (thresholds tuned anew)"
        print(f"kept the --init model's weights: none of {model.training['epochs_run']}"
              f" epochs beat them on validation{tuned}")
    elif best is not None:
        print(f"kept epoch {best} of {model.training['epochs_run']} (best validation macro-F1)")
    validation = model.training["validation"]
    if validation["n"]:
        print(f"validation ({validation['n']} frames, {'kept' if kept else 'tuned'}"
              f" thresholds): macro-F1 {validation['macro_f1']:.3f}")
        for name, f1 in validation["f1"].items():
            print(f"  {name:<16} F1 {f1:.3f}")
    print(f"wrote {args.out}")
    if args.plot:
        plots.training_curves(Path(args.plot), model.training["history"],
                              f"training of {Path(args.out).name}")
        print(f"wrote {args.plot}")
    return 0


def _init(args: argparse.Namespace) -> Init | None:
    """The model ``--init`` names, loaded and validated; None without ``--init``."""
    from robot_daemon.offline.finetune import Init

    if args.init is None:
        if args.renormalise:
            raise ConfigError("--renormalise needs --init MODEL: a model trained from"
                              " scratch always fits its normalisation on its data")
        return None
    return Init.load(args.init, renormalise=args.renormalise)


def _with_served(init: Init, found: Sequence[Source]) -> Init:
    """``init`` with what the capture bags among ``found`` recorded of the stream the robot
    served (run --capture); :func:`_say_served` says it once the data is found fit."""
    import dataclasses

    from robot_daemon.capture import stream

    bags = [source.path for source in found if source.kind == "bag"]
    served = stream.of_bags(bags, init.model.d)
    served = dataclasses.replace(served, others=served.others + len(found) - len(bags))
    return dataclasses.replace(init, served=served)


def _say_served(init: Init) -> None:
    """What the capture bags change in the recipe, in a line each; after the data's checks,
    since a refusal is one line with nothing before it."""
    served = init.served
    if served is not None and served.refused:
        print(f"warning: {served.refused} stream record(s) of the capture bags refused",
              file=sys.stderr)
    if init.renormalise:
        print(f"normalisation {init.describe_normalisation()}", flush=True)
    if init.keeps_thresholds:
        print("thresholds kept from the --init model: capture bags hold the frames the"
              " triggers chose, not frames as served", flush=True)


def _train_config(args: argparse.Namespace, init: Init | None) -> TrainConfig:
    """The recipe's settings; a fine-tune takes its layer sizes and dtype from ``init``."""
    from robot_daemon.offline.train import TrainConfig

    h, dtype = args.h or TrainConfig.h, args.dtype or TrainConfig.dtype
    if init is not None:
        init.check_architecture(args.h, args.dtype)
        h, dtype = init.model.h, init.model.mlp.dtype.name
    return TrainConfig(
        h=h, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        val_fraction=args.val_fraction, shuffle=args.shuffle, dtype=dtype,
        keep_best=args.keep_best, patience=args.patience,
    )


def _check_not_the_model(plot: str, out: str) -> None:
    """The plot is written after the model: on the same path, it would replace it."""
    if os.path.realpath(plot) == os.path.realpath(out) or same_file(plot, out):
        raise ConfigError(f"--plot {plot} is the model file --out {out}: give the plot its"
                          " own path (a .png)")


def _add_eval(sub: Subparsers) -> None:
    p = sub.add_parser(
        "eval",
        help="score a model on labelled bags, beside logistic regression",
        description=(
            "Per-class precision, recall, F1, average precision and support; micro and macro "
            "F1, hamming loss and subset accuracy of the model's thresholded predictions on "
            "the labelled frames of the bags, beside a logistic regression trained on the "
            "model's training bags (or --baseline-train)."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="model file (.npz)")
    p.add_argument("bags", nargs="+", metavar="BAG", help="MCAP bags with 'label' messages"
                   " (or directories, globs, datasets: see docs/fleet.md)")
    p.add_argument("--baseline-train", nargs="+", metavar="BAG",
                   help="bags to train the baseline on (default: the model's training bags)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="DIR",
                   help="also write per-class precision-recall, F1-threshold and reliability"
                   " plots and the class co-occurrence matrix into DIR (plot extra; bag"
                   " files only)")
    add_overwrite(p, "the plots in DIR")
    fleet.add_options(p)
    p.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    from robot_daemon.offline import plots

    check_input(args.model, "model file")
    if args.plot:
        plots.require_matplotlib()
        _check_plot_directory(Path(args.plot), [args.model, *args.bags,
                                                *(args.baseline_train or [])],
                              plots.EVALUATION_PLOTS, overwrite=args.overwrite)
        if args.workers != 1 or args.scheduler or not _all_files(args.bags):
            raise RobotDaemonError("--plot reads plain bag files in this process: drop"
                                   " --workers/--scheduler, or give bag files")
    # Always the partitioned job (in this process, without Dask, at --workers 1): its
    # figures are the same bit for bit on one worker or many (cli/fleet.py).
    code = fleet.run_eval(args)
    if args.plot:
        _plot_evaluation(args)
    return code


def _all_files(sources: list[str]) -> bool:
    return all(Path(s).is_file() for s in sources)


def _plot_evaluation(args: argparse.Namespace) -> None:
    """The evaluation plots, from the bags read once more in this process."""
    from robot_daemon import model
    from robot_daemon.offline import plots, train

    loaded = model.load(args.model)
    data = train.read_labelled(args.bags)
    written = plots.evaluation_plots(
        Path(args.plot), loaded.class_names, data.Y, loaded.predict_proba(data.X),
        loaded.thresholds, f"{Path(args.model).name} on {len(args.bags)} bag(s),"
        f" {data.n} labelled frames")
    print(f"wrote {', '.join(str(w) for w in written)}",
          file=sys.stderr if args.json else sys.stdout)


def _check_plot_directory(directory: Path, inputs: list[str], names: Sequence[str], *,
                          overwrite: bool) -> None:
    """An existing directory without the plots ``names`` in it (unless ``overwrite``), or
    one that can be made in an existing one; never a file, and no plot that is one of
    ``inputs`` (a bag or the model linked under a plot's name)."""
    if directory.exists() and not directory.is_dir():
        raise RobotDaemonError(f"--plot {directory} is not a directory")
    if not directory.exists():
        check_output(directory, overwrite=False, what="--plot directory")
        return
    for name in names:
        check_output(directory / name, inputs, overwrite=overwrite, atomic=True, what="plot")


def _add_compare(sub: Subparsers) -> None:
    p = sub.add_parser(
        "compare",
        help="gate a candidate model against the base on labelled bags: promote or hold",
        description=(
            "Scores both models on the same labelled frames in one pass: per class and "
            "macro F1 and average precision of each, the difference CANDIDATE - BASE and "
            "its 95 % interval from a block bootstrap (blocks are whole bags, or whole "
            "minutes of sensor time when fewer than 20 bags hold labelled frames), and a "
            "verdict: promote where macro F1 improves with the interval above 0 and no "
            "class's F1 drops by more than --max-class-drop, else hold, with the reason. "
            "Exit 0 to promote, 1 to hold, 2 on an error. The models need the same d, c "
            "and class names. See docs/fleet.md."
        ),
    )
    p.add_argument("base", metavar="BASE", help="the model in service (.npz)")
    p.add_argument("candidate", metavar="CANDIDATE", help="the model that would replace it")
    p.add_argument("bags", nargs="+", metavar="SOURCE", help="MCAP bags with 'label'"
                   " messages, directories, globs, datasets (docs/fleet.md); held out from"
                   " both models' training")
    p.add_argument("--max-class-drop", type=fraction, default=0.02, metavar="DROP",
                   help="largest F1 loss of any class that still promotes, in [0, 1)"
                   " (default 0.02)")
    p.add_argument("--seed", type=seed, default=0,
                   help="the bootstrap's seed, >= 0 (default 0): the same seed draws the"
                   " same resamples, so the same intervals")
    p.add_argument("--resamples", type=_resamples, default=2000, metavar="N",
                   help="bootstrap resamples (default 2000, at most 100000)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", metavar="DIR",
                   help="also write compare_f1.png (both models' F1 per class, the"
                   " differences and their intervals) into DIR (plot extra)")
    add_overwrite(p, "the plot in DIR")
    fleet.add_options(p)
    p.set_defaults(handler=_run_compare)


def _resamples(text: str) -> int:
    from robot_daemon.offline.bootstrap import MAX_RESAMPLES

    value = positive_int(text)
    if value > MAX_RESAMPLES:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_RESAMPLES}, got {text}")
    return value


def _run_compare(args: argparse.Namespace) -> int:
    from robot_daemon.offline import plots

    for path, what in ((args.base, "BASE model file"), (args.candidate, "CANDIDATE model file")):
        check_input(path, what)
    if args.plot:
        plots.require_matplotlib()
        _check_plot_directory(Path(args.plot), [args.base, args.candidate, *args.bags],
                              [plots.COMPARE_PLOT], overwrite=args.overwrite)
    comparison = fleet.run_compare(args)
    if args.plot:
        written = plots.comparison_f1(
            Path(args.plot), comparison,
            f"{Path(args.candidate).name} against {Path(args.base).name}, {comparison.n}"
            " labelled frames")
        print(f"wrote {written}", file=sys.stderr if args.json else sys.stdout)
    return comparison.verdict.exit_code


def _add_replay(sub: Subparsers) -> None:
    p = sub.add_parser(
        "replay",
        help="run a bag's frames through a model offline, writing pred messages",
        description=(
            "Cuts the bag's frames into ticks on their sensor time with the daemon's "
            "batching rules, runs the model on every tick as fast as possible and writes "
            "one 'pred' message per tick to a new bag. Two runs write identical bytes."
        ),
    )
    p.add_argument("model", metavar="MODEL", help="model file (.npz)")
    p.add_argument("bag", metavar="BAG", help="MCAP bag with 'frame' messages")
    p.add_argument("more", nargs="*", metavar="SOURCE",
                   help="more bags, directories or globs: --out is then a directory that"
                   " gets one output bag per input bag (docs/fleet.md)")
    p.add_argument("--out", required=True, metavar="PRED_BAG",
                   help="bag to write (a directory for many bags)")
    p.add_argument("--interval-ms", type=milliseconds, default=20.0,
                   help="tick interval (default 20 ms)")
    p.add_argument("--max-batch", type=positive_int, default=256,
                   help="frames answered per tick; older ones are dropped (default 256)")
    add_overwrite(p, "PRED_BAG (or the bags in it)")
    fleet.add_options(p)
    p.set_defaults(handler=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from robot_daemon import model
    from robot_daemon.offline import replay

    if args.more or fleet.wanted(args, [args.bag]):
        return fleet.run_replay(args)
    check_output(args.out, [args.model, args.bag], overwrite=args.overwrite, atomic=True,
                 what="--out")
    check_input(args.model, "model file")
    loaded = model.load(args.model)
    stats = replay.replay(
        loaded, args.bag, args.out, model_name=model.identity(loaded, args.model),
        interval_ms=args.interval_ms, max_batch=args.max_batch,
    )
    print(stats.describe())
    print(f"wrote {args.out}")
    return 0
