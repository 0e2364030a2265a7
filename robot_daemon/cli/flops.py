"""``robot-daemon flops``: the FLOP question of docs/spec.md, measured."""

from __future__ import annotations

import argparse
import json

from robot_daemon.cli.args import Subparsers, positive_int


def add(sub: Subparsers) -> None:
    p = sub.add_parser(
        "flops",
        help="count the matmul FLOPs of training vs inference (the question of docs/spec.md)",
        description=(
            "Runs inference on N examples and the reference MLP.sgd (10 epochs, batch 100) "
            "on "
            "the same N examples with every matrix multiplication instrumented, and prints "
            "both FLOP counts, their ratio and the rounded answer."
        ),
    )
    p.add_argument("--n", type=positive_int, default=10_000, help="examples (default 10000)")
    p.add_argument("--d", type=positive_int, default=16, help="input features (default 16)")
    p.add_argument("--h", type=positive_int, default=64, help="hidden width (default 64)")
    p.add_argument("--c", type=positive_int, default=8, help="classes (default 8)")
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
