"""The ``robot-daemon`` command line.

Subcommands are thin: each parses its arguments and calls into the module that owns the
work, where tests can reach it. One module per command group registers its parsers with
``add(sub)`` and holds their handlers, each of which returns a process exit code:
:mod:`.flops`, :mod:`.bag`, :mod:`.sim`, :mod:`.offline` (train, eval, replay),
:mod:`.fleet` (dataset; train, eval and replay on many bags), :mod:`.serve` (run, keys)
and :mod:`.demo`. A new command goes into the module of its
group (or a new one), and into :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from robot_daemon import __version__
from robot_daemon.cli import bag, demo, fleet, flops, offline, serve, sim
from robot_daemon.errors import RobotDaemonError

Handler = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robot-daemon",
        description="On-robot obstacle classifier: NumPy MLP, ZeroMQ daemon, sensor bags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for group in (flops, bag, sim, offline, fleet, serve, demo):
        group.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), run the subcommand, return its exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except RobotDaemonError as exc:
        print(f"robot-daemon {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
