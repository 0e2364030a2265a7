"""``robot-daemon watch``: a running daemon's answers, live."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from robot_daemon.cli.args import Subparsers, positive_float, stop_on_signals
from robot_daemon.config import DEFAULT_MODEL, DEFAULT_PRED
from robot_daemon.printable import printable


def add(sub: Subparsers) -> None:
    p = sub.add_parser(
        "watch",
        help="watch a running daemon: probabilities per class, rates, counters, health",
        description=(
            "Subscribes to a running daemon's pred and status and shows, live, the newest "
            "answered frame's probability per class against its threshold, frames/s, "
            "latency, dropped/rejected/lost frames, health and stale sensors, and online "
            "learning. With --labels it also shows each class's label for the frames it "
            "has seen labelled. Ctrl-C stops it; the daemon is never disturbed."
        ),
    )
    p.add_argument("--pred", default=DEFAULT_PRED, metavar="ENDPOINT",
                   help=f"the daemon's pred/status endpoint (default {DEFAULT_PRED})")
    p.add_argument("--labels", metavar="ENDPOINT",
                   help="a label publisher (a labeller, or bag play of a labelled bag)")
    p.add_argument("--model", metavar="PATH",
                   help="the model the daemon serves, for class names and thresholds"
                   f" (default {DEFAULT_MODEL} when it exists)")
    p.add_argument("--duration", type=positive_float, metavar="S", help="stop after S seconds")
    p.add_argument("--no-live", action="store_true",
                   help="a plain line every few seconds instead of the live view")
    p.set_defaults(handler=_run_watch)


def _run_watch(args: argparse.Namespace) -> int:
    from robot_daemon import watch

    model = Path(args.model) if args.model else DEFAULT_MODEL
    names = thresholds = None
    if args.model or model.is_file():
        names, thresholds = watch.model_classes(model)
    options = watch.WatchOptions(pred=args.pred, labels=args.labels, class_names=names,
                                 thresholds=thresholds, live=not args.no_live,
                                 duration_s=args.duration)
    with stop_on_signals() as stop:  # said once the handlers are set: a signal is safe
        print(f"watching {printable(args.pred)} (Ctrl-C to stop)", file=sys.stderr)
        return watch.run(options, sys.stdout, stop)
