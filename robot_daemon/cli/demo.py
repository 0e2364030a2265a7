"""``robot-daemon demo``: the live demo."""

from __future__ import annotations

import argparse

from robot_daemon.cli.args import Subparsers, positive_float, seconds, seed


def add(sub: Subparsers) -> None:
    p = sub.add_parser(
        "demo",
        help="see it work: a simulated bag streamed through the real daemon, live",
        description=(
            "Simulates a sidewalk bag (or reuses one), starts the real daemon, plays the "
            "bag's frames through it in real time x --rate with a live view, then prints "
            "frames answered, latency, the daemon's counters and per-class scores against "
            "the bag's labels, and writes a timeline PNG (needs the plot extra). Needs the "
            "demo extra (mcap). Ctrl-C stops everything cleanly (exit 130)."
        ),
    )
    p.add_argument("--bag", metavar="PATH",
                   help="play this bag instead of the simulated one")
    p.add_argument("--duration", type=seconds, metavar="S",
                   help="seconds of driving to simulate (default 60); with --bag, the"
                   " seconds of the bag to play (default: all)")
    p.add_argument("--rate", type=positive_float, default=1.0, metavar="R",
                   help="playback speed: 2 = twice real time (default 1)")
    p.add_argument("--model", default="models/default.npz", metavar="PATH",
                   help="model file (default models/default.npz)")
    p.add_argument("--seed", type=seed, default=13, metavar="N",
                   help="simulator seed (default 13: obstacles from the first second;"
                   " not with --bag)")
    p.add_argument("--png", metavar="PATH", help="timeline to write (default WORKDIR/demo.png)")
    p.add_argument("--workdir", default="demo-out", metavar="DIR",
                   help="for the simulated bag, the daemon's log and the PNG"
                   " (default ./demo-out)")
    p.add_argument("--no-live", action="store_true",
                   help="a plain progress line every few seconds instead of the live view")
    p.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    from pathlib import Path

    from robot_daemon.demo.options import DemoOptions
    from robot_daemon.demo.run import run

    options = DemoOptions(
        model=Path(args.model), workdir=Path(args.workdir),
        bag=None if args.bag is None else Path(args.bag), duration_s=args.duration,
        rate=args.rate, seed=args.seed, png=None if args.png is None else Path(args.png),
        live=not args.no_live,
    )
    return run(options)
