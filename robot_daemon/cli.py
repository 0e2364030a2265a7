"""The ``robot-daemon`` command line.

Subcommands are thin: each parses its arguments and calls into the module that owns the
work, where tests can reach it. Every subcommand registers itself through one
``_add_<name>`` function below and returns a process exit code.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence

from robot_daemon import __version__
from robot_daemon.errors import RobotDaemonError

Handler = Callable[[argparse.Namespace], int]


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _add_flops(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "flops",
        help="count the matmul FLOPs of training vs inference (the user's question)",
        description=(
            "Runs inference on N examples and the user's MLP.sgd (10 epochs, batch 100) on "
            "the same N examples with every matrix multiplication instrumented, and prints "
            "both FLOP counts, their ratio and the rounded answer."
        ),
    )
    p.add_argument("--n", type=_positive_int, default=10_000, help="examples (default 10000)")
    p.add_argument("--d", type=_positive_int, default=16, help="input features (default 16)")
    p.add_argument("--h", type=_positive_int, default=64, help="hidden width (default 64)")
    p.add_argument("--c", type=_positive_int, default=8, help="classes (default 8)")
    p.add_argument(
        "--skip-input-grad",
        action="store_true",
        help="the first Linear skips its input gradient (nobody uses it)",
    )
    p.add_argument(
        "--recompute",
        action="store_true",
        help="recompute checkpointing: masks recomputed in backward instead of stored",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(handler=_run_flops)


def _run_flops(args: argparse.Namespace) -> int:
    from robot_daemon import flops

    report = flops.measure(
        n=args.n,
        d=args.d,
        h=args.h,
        c=args.c,
        skip_input_grad=args.skip_input_grad,
        recompute=args.recompute,
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print(report.describe())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robot-daemon",
        description="On-robot obstacle classifier: NumPy MLP, ZeroMQ daemon, sensor bags.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    _add_flops(sub)
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
