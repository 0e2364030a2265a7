"""``robot-daemon train | eval | replay``: the offline jobs on recorded bags."""

from __future__ import annotations

import argparse
import sys

from robot_daemon.cli import fleet
from robot_daemon.cli.args import Subparsers, fraction, positive_float, positive_int


def add(sub: Subparsers) -> None:
    """Register train, eval and replay."""
    _add_train(sub)
    _add_eval(sub)
    _add_replay(sub)


def _add_train(sub: Subparsers) -> None:
    p = sub.add_parser(
        "train",
        help="train a model file from the labelled frames of bags",
        description=(
            "Reads every 'label' message of the bags, keeps the last --val-fraction of each "
            "bag for validation, fits the input normalisation, trains the MLP with the "
            "user's SGD (defaults: 10 epochs, batch 100, lr 0.1), tunes one threshold per "
            "class on the validation split and writes the model atomically. The same "
            "command and seed write the same bytes."
        ),
    )
    p.add_argument("bags", nargs="+", metavar="BAG", help="MCAP bags with 'label' messages"
                   " (or directories, globs, datasets: see docs/fleet.md)")
    p.add_argument("--out", required=True, metavar="MODEL", help="model file to write (.npz)")
    p.add_argument("--h", type=positive_int, default=64, help="hidden width (default 64)")
    p.add_argument("--epochs", type=positive_int, default=10, help="passes (default 10)")
    p.add_argument("--batch-size", type=positive_int, default=100, help="default 100")
    p.add_argument("--lr", type=positive_float, default=0.1, help="learning rate (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="initialisation and shuffling seed")
    p.add_argument("--val-fraction", type=fraction, default=0.2,
                   help="tail of each bag kept for validation (default 0.2)")
    p.add_argument("--shuffle", action="store_true", help="new example order every epoch")
    p.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    fleet.add_options(p)
    p.set_defaults(handler=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from robot_daemon.offline import train

    if fleet.wanted(args, args.bags):
        return fleet.run_train(args)

    data = train.read_labelled(args.bags)
    print(f"{data.n} labelled frames from {len(args.bags)} bag(s), d={data.X.shape[1]},"
          f" c={data.Y.shape[1]}; {data.rejected} rejected", flush=True)
    for warning in data.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    config = train.TrainConfig(
        h=args.h, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
        val_fraction=args.val_fraction, shuffle=args.shuffle, dtype=args.dtype,
    )
    model = train.train(data, config, lambda report: print(report.describe(), flush=True))
    model.save(args.out)
    validation = model.training["validation"]
    if validation["n"]:
        print(f"validation ({validation['n']} frames, tuned thresholds): macro-F1"
              f" {validation['macro_f1']:.3f}")
        for name, f1 in validation["f1"].items():
            print(f"  {name:<16} F1 {f1:.3f}")
    print(f"wrote {args.out}")
    return 0


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
    fleet.add_options(p)
    p.set_defaults(handler=_run_eval)


def _run_eval(args: argparse.Namespace) -> int:
    # Always the partitioned job (in this process, without Dask, at --workers 1): its
    # figures are the same bit for bit on one worker or many (cli/fleet.py).
    return fleet.run_eval(args)


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
    p.add_argument("--out", required=True, metavar="PRED_BAG", help="bag to write")
    p.add_argument("--interval-ms", type=positive_float, default=20.0,
                   help="tick interval (default 20 ms)")
    p.add_argument("--max-batch", type=positive_int, default=256,
                   help="frames answered per tick; older ones are dropped (default 256)")
    fleet.add_options(p)
    p.set_defaults(handler=_run_replay)


def _run_replay(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robot_daemon import model
    from robot_daemon.offline import replay

    if args.more or fleet.wanted(args, [args.bag]):
        return fleet.run_replay(args)
    stats = replay.replay(
        model.load(args.model), args.bag, args.out, model_name=Path(args.model).name,
        interval_ms=args.interval_ms, max_batch=args.max_batch,
    )
    print(stats.describe())
    print(f"wrote {args.out}")
    return 0
